//! Step Functions drives Sluice: state machines executed by LocalStack (activity tasks)
//! whose Sluice task is served by `sluice sfn-worker` processes, against a real cluster
//! (scheduler + executor processes). Success hands the run's output to the next state;
//! failures carry the documented error names into Catch; a killed worker is noticed by
//! the heartbeat timeout.

use crate::common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::localstack::LocalStack;
use common::{Cluster, example};
use sluice_jobs::datagen::{ClaimsOptions, generate_claims};

const MASK_KEY: &str = "stepfunctions-test-key-0123456789";

/// A one-task state machine around a Sluice activity, catching Sluice's error names.
fn state_machine(activity_arn: &str, heartbeat_seconds: u32) -> String {
    serde_json::json!({
        "Comment": "cleanse with Sluice; branch on its error names",
        "StartAt": "Cleanse",
        "States": {
            "Cleanse": {
                "Type": "Task",
                "Resource": activity_arn,
                "HeartbeatSeconds": heartbeat_seconds,
                "TimeoutSeconds": 600,
                "ResultPath": "$.run",
                "Catch": [
                    {"ErrorEquals": ["Sluice.DataQualityFailed"], "ResultPath": "$.error", "Next": "QualityGateFailed"},
                    {"ErrorEquals": ["Sluice.InvalidDefinition"], "ResultPath": "$.error", "Next": "InvalidDefinition"}
                ],
                "End": true
            },
            "QualityGateFailed": {"Type": "Pass", "Result": "quality", "ResultPath": "$.branch", "End": true},
            "InvalidDefinition": {"Type": "Pass", "Result": "invalid", "ResultPath": "$.branch", "End": true}
        }
    })
    .to_string()
}

fn start_worker(cluster: &Cluster, stack: &LocalStack, activity_arn: &str, name: &str) -> Child {
    Command::new(common::sluice_bin())
        .args(["sfn-worker", "--activity-arn", activity_arn])
        .args(["--scheduler", &cluster.url()])
        .args(["--heartbeat-secs", "2", "--name", name])
        .envs(stack.env())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(cluster.log_path(name)).unwrap())
        .spawn()
        .unwrap()
}

/// Waits for an execution to end; returns (status, output, error, cause).
async fn finished(
    sfn: &aws_sdk_sfn::Client,
    execution_arn: &str,
    within: Duration,
) -> (String, serde_json::Value, String, String) {
    let deadline = Instant::now() + within;
    loop {
        let execution = sfn
            .describe_execution()
            .execution_arn(execution_arn)
            .send()
            .await
            .unwrap();
        let status = execution.status().as_str().to_owned();
        if status != "RUNNING" {
            let output = execution
                .output()
                .map(|o| serde_json::from_str(o).unwrap())
                .unwrap_or(serde_json::Value::Null);
            return (
                status,
                output,
                execution.error().unwrap_or_default().to_owned(),
                execution.cause().unwrap_or_default().to_owned(),
            );
        }
        assert!(
            Instant::now() < deadline,
            "execution {execution_arn} still running"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn start(sfn: &aws_sdk_sfn::Client, machine: &str, input: serde_json::Value) -> String {
    sfn.start_execution()
        .state_machine_arn(machine)
        .input(input.to_string())
        .send()
        .await
        .unwrap()
        .execution_arn()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_machine_runs_sluice_activity_tasks_with_their_error_names() {
    let _serial = common::one_cluster_at_a_time().await;
    let mut env = vec![("SLUICE_MASK_KEY".to_owned(), MASK_KEY.to_owned())];
    let cluster_dir = tempfile::tempdir().unwrap();
    let stack = LocalStack::start(cluster_dir.path().join("localstack.log"));
    env.extend(stack.env());
    let cluster = Cluster::start_with_env(2, env).await;
    let sfn = stack.client();

    let data = cluster.dir.path().join("lake");
    let truth = generate_claims(
        &data,
        &ClaimsOptions {
            rows: 20_000,
            seed: 5,
            months: vec![1, 2],
            ..Default::default()
        },
    )
    .unwrap();

    let activity = sfn
        .create_activity()
        .name("sluice-cleanse")
        .send()
        .await
        .unwrap()
        .activity_arn()
        .to_owned();
    let machine = sfn
        .create_state_machine()
        .name("cleanse")
        .definition(state_machine(&activity, 30))
        .role_arn("arn:aws:iam::000000000000:role/sfn")
        .send()
        .await
        .unwrap()
        .state_machine_arn()
        .to_owned();
    let mut worker = start_worker(&cluster, &stack, &activity, "worker-1");

    let params = serde_json::json!({
        "landing": data.join("landing").display().to_string(),
        "staging": data.join("staging").display().to_string(),
        "run_date": "2024-02-29",
    });
    // A registered job by name, run to SUCCEEDED with the run's output.
    let registered = Command::new(common::sluice_bin())
        .args(["jobs", "register"])
        .arg(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("jobs/examples/claims_quality.yaml"),
        )
        .args(["--scheduler", &cluster.url()])
        .output()
        .unwrap();
    assert!(registered.status.success(), "{registered:?}");
    assert_eq!(
        String::from_utf8_lossy(&registered.stdout).trim(),
        "registered claims_quality@1"
    );
    let ok = start(
        &sfn,
        &machine,
        serde_json::json!({"job": "claims_quality", "params": params}),
    )
    .await;
    let (status, output, error, cause) = finished(&sfn, &ok, Duration::from_secs(120)).await;
    assert_eq!(status, "SUCCEEDED", "{error}: {cause}\n{}", cluster.logs());
    let run = &output["run"];
    assert_eq!(run["status"], "succeeded");
    // The claims the tasks scanned (references this small are read once at planning and
    // broadcast, outside the tasks' counts).
    assert_eq!(run["rows_read"].as_u64().unwrap(), truth.rows, "{run}");
    assert_eq!(run["rows_quarantined"], truth.quarantined_rows);
    assert_eq!(run["rows_written"], truth.valid_rows);
    assert_eq!(run["data_quality"]["outcome"], "passed_with_issues");
    assert!(run["run_id"].as_str().unwrap().starts_with("r-"));

    // A definition inline that breaks its quality threshold: the Catch branch, by name.
    let strict = example("claims_quality.yaml")
        .replace("max_quarantined_percent: 10", "max_quarantined_percent: 1");
    let mut strict_params = params.clone();
    strict_params["staging"] = data.join("strict").display().to_string().into();
    let dq = start(
        &sfn,
        &machine,
        serde_json::json!({"definition": strict, "params": strict_params}),
    )
    .await;
    let (status, output, _, _) = finished(&sfn, &dq, Duration::from_secs(120)).await;
    assert_eq!(status, "SUCCEEDED");
    assert_eq!(output["branch"], "quality", "{output}");
    assert_eq!(output["error"]["Error"], "Sluice.DataQualityFailed");
    assert!(
        output["error"]["Cause"]
            .as_str()
            .unwrap()
            .contains("max_quarantined_percent")
    );

    // An invalid definition ends with its own name.
    let invalid = start(
        &sfn,
        &machine,
        serde_json::json!({"definition": "apiVersion: sluice/v1\nname: broken\n", "params": {}}),
    )
    .await;
    let (status, output, _, _) = finished(&sfn, &invalid, Duration::from_secs(60)).await;
    assert_eq!(status, "SUCCEEDED");
    assert_eq!(output["branch"], "invalid", "{output}");
    assert_eq!(output["error"]["Error"], "Sluice.InvalidDefinition");

    // The shipped state machines, rendered for this account, run their happy paths.
    let register = Command::new(common::sluice_bin())
        .args(["jobs", "register"])
        .arg(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("jobs/examples/claims_monthly.yaml"),
        )
        .args(["--scheduler", &cluster.url()])
        .output()
        .unwrap();
    assert!(register.status.success(), "{register:?}");
    let render = |file: &str| {
        let output = Command::new(common::sluice_bin())
            .args(["sfn", "render"])
            .arg(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("deploy/stepfunctions")
                    .join(file),
            )
            .args(["--activity-arn", &activity])
            .args([
                "--topic-arn",
                "arn:aws:sns:us-east-1:000000000000:sluice-failures",
            ])
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let mut shipped = Vec::new();
    for (file, name) in [
        ("backfill.asl.json", "backfill"),
        ("daily_pipeline.asl.json", "daily"),
    ] {
        let arn = sfn
            .create_state_machine()
            .name(name)
            .definition(render(file))
            .role_arn("arn:aws:iam::000000000000:role/sfn")
            .send()
            .await
            .unwrap_or_else(|err| {
                panic!("{file}: {}", aws_sdk_sfn::error::DisplayErrorContext(err))
            })
            .state_machine_arn()
            .to_owned();
        shipped.push(arn);
    }
    let backfill = start(
        &sfn,
        &shipped[0],
        serde_json::json!({
            "job": "claims_quality",
            "partitions": [{"run_date": "2024-01-31"}, {"run_date": "2024-02-29"}],
            "max_concurrent": 1,
            "params": {
                "landing": data.join("landing").display().to_string(),
                "staging": data.join("backfill").display().to_string(),
            },
        }),
    )
    .await;
    let (status, output, error, cause) = finished(&sfn, &backfill, Duration::from_secs(180)).await;
    assert_eq!(status, "SUCCEEDED", "{error}: {cause}\n{}", cluster.logs());
    assert_eq!(output["runs"].as_array().unwrap().len(), 2, "{output}");
    assert!(
        output["runs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|run| run["status"] == "succeeded")
    );
    let daily = start(
        &sfn,
        &shipped[1],
        serde_json::json!({
            "run_date": "2024-02-29",
            "landing": data.join("landing").display().to_string(),
            "staging": data.join("daily").display().to_string(),
            "curated": data.join("curated").display().to_string(),
            "review_percent": 50,
            "sources": [{"job": "claims_quality"}],
            "aggregation_job": "claims_monthly",
        }),
    )
    .await;
    let (status, output, error, cause) = finished(&sfn, &daily, Duration::from_secs(180)).await;
    assert_eq!(status, "SUCCEEDED", "{error}: {cause}\n{}", cluster.logs());
    assert_eq!(output["aggregate"]["job"], "claims_monthly", "{output}");
    assert!(common::data_files(&data.join("curated/claims_monthly")).len() >= 2);

    // A worker killed mid-task: the heartbeat timeout ends the execution.
    let short = sfn
        .create_state_machine()
        .name("cleanse-short-heartbeat")
        .definition(state_machine(&activity, 5))
        .role_arn("arn:aws:iam::000000000000:role/sfn")
        .send()
        .await
        .unwrap()
        .state_machine_arn()
        .to_owned();
    let mut big_params = params.clone();
    big_params["staging"] = data.join("killed").display().to_string().into();
    let killed = start(
        &sfn,
        &short,
        serde_json::json!({"job": "claims_quality", "params": big_params}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut client = cluster.client().await;
    loop {
        let runs = client
            .list_runs(sluice_proto::v1::ListRunsRequest {
                limit: 0,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .runs;
        if runs.len() >= 7 {
            break;
        }
        assert!(Instant::now() < deadline, "the worker never took the task");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    worker.kill().unwrap();
    worker.wait().unwrap();
    let (status, _, error, _) = finished(&sfn, &killed, Duration::from_secs(60)).await;
    assert_eq!(status, "FAILED");
    assert!(error.contains("Timeout"), "{error}");
}

/// The callback pattern: a `.waitForTaskToken` task (here an SQS message carrying the
/// token, as a Lambda or SQS relay would receive it) whose run the scheduler reports
/// when it ends — and, for a run the scheduler's restart interrupted, after the restart.
/// moto server executes the state machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_reports_task_tokens_also_across_a_restart() {
    let _serial = common::one_cluster_at_a_time().await;
    let scratch = tempfile::tempdir().unwrap();
    let moto = common::moto::Moto::start(scratch.path().join("moto.log"));
    let configured = moto
        .request(
            "POST",
            "/moto-api/config",
            r#"{"stepfunctions":{"execute_state_machine":true}}"#,
        )
        .unwrap();
    // moto answers 201 and echoes only its batch and lambda settings (a display gap).
    assert!(configured.starts_with("HTTP/1.1 20"), "{configured}");
    let endpoint = moto.endpoint();
    let env = vec![
        ("SLUICE_MASK_KEY".to_owned(), MASK_KEY.to_owned()),
        ("SLUICE_SFN__ENDPOINT".to_owned(), endpoint.clone()),
        ("AWS_REGION".to_owned(), "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID".to_owned(), "test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY".to_owned(), "test".to_owned()),
    ];
    let mut cluster = Cluster::start_with_env(2, env).await;
    let sfn = common::localstack::sfn_client(&endpoint);
    let sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::Config::builder()
            .behavior_version_latest()
            .region(aws_sdk_sqs::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "test", "test", None, None, "tests",
            ))
            .endpoint_url(&endpoint)
            .build(),
    );
    let queue = sqs
        .create_queue()
        .queue_name("sluice-runs")
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_owned();
    let definition = serde_json::json!({
        "StartAt": "Cleanse",
        "States": {
            "Cleanse": {
                "Type": "Task",
                "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
                "Parameters": {
                    "QueueUrl": queue,
                    "MessageBody": {"token.$": "$$.Task.Token", "params.$": "$.params"}
                },
                "End": true
            }
        }
    });
    let machine = sfn
        .create_state_machine()
        .name("cleanse-callback")
        .definition(definition.to_string())
        .role_arn("arn:aws:iam::123456789012:role/sfn")
        .send()
        .await
        .unwrap()
        .state_machine_arn()
        .to_owned();

    let data = cluster.dir.path().join("lake");
    let truth = generate_claims(
        &data,
        &ClaimsOptions {
            rows: 20_000,
            seed: 8,
            months: vec![1, 2],
            ..Default::default()
        },
    )
    .unwrap();
    let params = |staging: &str| {
        serde_json::json!({
            "landing": data.join("landing").display().to_string(),
            "staging": data.join(staging).display().to_string(),
            "run_date": "2024-02-29",
        })
    };

    // The relay: the token from the queue, submitted with the run.
    // Named executions: moto names unnamed ones `None`, so a second one would collide.
    let relay = |name: &'static str, execution_input: serde_json::Value| {
        let sfn = sfn.clone();
        let sqs = sqs.clone();
        let machine = machine.clone();
        let queue = queue.clone();
        async move {
            let execution = sfn
                .start_execution()
                .state_machine_arn(&machine)
                .name(name)
                .input(execution_input.to_string())
                .send()
                .await
                .unwrap()
                .execution_arn()
                .to_owned();
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let received = sqs
                    .receive_message()
                    .queue_url(&queue)
                    .wait_time_seconds(1)
                    .send()
                    .await
                    .unwrap();
                if let Some(message) = received.messages().first() {
                    let body: serde_json::Value =
                        serde_json::from_str(message.body().unwrap()).unwrap();
                    return (execution, body);
                }
                assert!(Instant::now() < deadline, "no task token arrived");
            }
        }
    };
    let submit = |body: serde_json::Value| {
        let cluster = &cluster;
        async move {
            let mut client = cluster.client().await;
            client
                .submit_run(sluice_proto::v1::SubmitRunRequest {
                    job: Some(sluice_proto::v1::submit_run_request::Job::DefinitionYaml(
                        example("claims_quality.yaml"),
                    )),
                    params: body["params"]
                        .as_object()
                        .unwrap()
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                        .collect(),
                    origin: "claims_quality.yaml".into(),
                    working_dir: String::new(),
                    task_token: body["token"].as_str().unwrap().to_owned(),
                    idempotency_key: String::new(),
                })
                .await
                .unwrap()
                .into_inner()
                .run_id
        }
    };

    let (execution, body) = relay("first", serde_json::json!({"params": params("staging")})).await;
    let token = body["token"].as_str().unwrap().to_owned();
    let run_id = submit(body).await;
    let (status, output, error, cause) = finished(&sfn, &execution, Duration::from_secs(120)).await;
    assert_eq!(status, "SUCCEEDED", "{error}: {cause}\n{}", cluster.logs());
    assert_eq!(output["run_id"], run_id.as_str());
    assert_eq!(output["rows_quarantined"], truth.quarantined_rows);
    let run = cluster.run(&run_id).await;
    assert!(
        !run.record_json.contains(&token),
        "the API shows the task token"
    );
    assert!(run.record_json.contains("<redacted>"));

    // Submitted, then the scheduler is killed mid-run: the restarted scheduler reports
    // the interrupted run to the waiting execution.
    let (execution, body) = relay(
        "restarted",
        serde_json::json!({"params": params("restarted")}),
    )
    .await;
    let run_id = submit(body).await;
    cluster.kill_scheduler();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let waiting = sfn
        .describe_execution()
        .execution_arn(&execution)
        .send()
        .await
        .unwrap();
    assert_eq!(
        waiting.status().as_str(),
        "RUNNING",
        "ended without the scheduler"
    );
    cluster.start_scheduler().await;
    let (status, _, error, cause) = finished(&sfn, &execution, Duration::from_secs(60)).await;
    assert_eq!(status, "FAILED", "{}", cluster.logs());
    let history = sfn
        .get_execution_history()
        .execution_arn(&execution)
        .send()
        .await
        .unwrap();
    // moto keeps the error name in the history (not in DescribeExecution) and drops the
    // cause: emulator gaps, so the run's side is checked on the scheduler.
    let failure = history
        .events()
        .iter()
        .find_map(|event| event.task_failed_event_details())
        .expect("a TaskFailed event");
    assert_eq!(
        failure.error(),
        Some("Sluice.Interrupted"),
        "{error} {cause}"
    );
    let run = cluster.run(&run_id).await;
    assert_eq!(
        common::status(&run),
        sluice_proto::v1::RunStatus::Interrupted
    );
    assert!(
        run.record_json.contains("\"task_reported\":true"),
        "{}",
        run.record_json
    );
}

/// The worker loop inside the scheduler (`sluice scheduler --sfn-activity-arn`), and a
/// worker stopped by SIGTERM: it ends the task it holds with `Sluice.WorkerStopped`
/// instead of leaving the execution to time out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_serves_activities_and_a_stopped_worker_fails_its_tasks() {
    let _serial = common::one_cluster_at_a_time().await;
    let scratch = tempfile::tempdir().unwrap();
    let stack = LocalStack::start(scratch.path().join("localstack.log"));
    let sfn = stack.client();
    let mut activities = Vec::new();
    for name in ["in-scheduler", "stopped-worker"] {
        activities.push(
            sfn.create_activity()
                .name(name)
                .send()
                .await
                .unwrap()
                .activity_arn()
                .to_owned(),
        );
    }
    let mut env = vec![("SLUICE_MASK_KEY".to_owned(), MASK_KEY.to_owned())];
    env.extend(stack.env());
    let cluster = Cluster::start_with(
        2,
        env,
        vec!["--sfn-activity-arn".into(), activities[0].clone()],
    )
    .await;
    let data = cluster.dir.path().join("lake");
    generate_claims(
        &data,
        &ClaimsOptions {
            rows: 20_000,
            seed: 3,
            months: vec![1],
            ..Default::default()
        },
    )
    .unwrap();
    let params = |staging: &str| {
        serde_json::json!({
            "landing": data.join("landing").display().to_string(),
            "staging": data.join(staging).display().to_string(),
            "run_date": "2024-01-31",
        })
    };
    let mut machines = Vec::new();
    for (index, activity) in activities.iter().enumerate() {
        machines.push(
            sfn.create_state_machine()
                .name(format!("machine-{index}"))
                .definition(state_machine(activity, 30))
                .role_arn("arn:aws:iam::000000000000:role/sfn")
                .send()
                .await
                .unwrap()
                .state_machine_arn()
                .to_owned(),
        );
    }

    let served = start(
        &sfn,
        &machines[0],
        serde_json::json!({"definition": example("claims_quality.yaml"), "params": params("served")}),
    )
    .await;
    let (status, output, error, cause) = finished(&sfn, &served, Duration::from_secs(120)).await;
    assert_eq!(status, "SUCCEEDED", "{error}: {cause}\n{}", cluster.logs());
    assert_eq!(output["run"]["status"], "succeeded");

    let mut worker = Command::new(common::sluice_bin())
        .args(["sfn-worker", "--activity-arn", &activities[1]])
        .args(["--scheduler", &cluster.url(), "--drain-secs", "0"])
        .envs(stack.env())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(cluster.log_path("stopped-worker")).unwrap())
        .spawn()
        .unwrap();
    let stopped = start(
        &sfn,
        &machines[1],
        serde_json::json!({"definition": example("claims_quality.yaml"), "params": params("stopped")}),
    )
    .await;
    let log = cluster.log_path("stopped-worker");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("activity task running")
    {
        assert!(Instant::now() < deadline, "the worker never took the task");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let signalled = Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status()
        .unwrap();
    assert!(signalled.success());
    let exit = worker.wait().unwrap();
    assert!(exit.success(), "the worker did not stop cleanly: {exit:?}");
    let (status, _, error, cause) = finished(&sfn, &stopped, Duration::from_secs(60)).await;
    assert_eq!(status, "FAILED");
    assert_eq!(error, "Sluice.WorkerStopped", "{cause}");
    assert!(cause.contains("goes on"), "{cause}");
}
