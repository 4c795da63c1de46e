//! Executor scaling on a real scheduler process: a backfill of 12 months starting from
//! zero executors makes the `local` provider start executor processes, every partition
//! commits, and the executors go back to zero when the work is done. KEDA's external
//! scaler API on the scheduler says inactive when idle and follows the queue.

use crate::common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::Cluster;
use sluice_proto::externalscaler::external_scaler_client::ExternalScalerClient;
use sluice_proto::externalscaler::{GetMetricsRequest, ScaledObjectRef};
use sluice_proto::v1;

/// `sluice executor` processes registered with the scheduler on `port`.
fn executor_processes(port: u16) -> usize {
    let wanted = format!("127.0.0.1:{port}");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .filter(|cmdline| {
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.contains(&b"executor".as_slice()) && args.contains(&wanted.as_bytes())
        })
        .count()
}

async fn keda(cluster: &Cluster) -> (bool, i64) {
    let mut client = ExternalScalerClient::connect(cluster.url()).await.unwrap();
    let object = ScaledObjectRef {
        name: "sluice-executor".into(),
        namespace: "sluice".into(),
        scaler_metadata: Default::default(),
    };
    let active = client
        .is_active(object.clone())
        .await
        .unwrap()
        .into_inner()
        .result;
    let metric = client
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(object),
            metric_name: "sluice_pending_tasks".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .metric_values[0]
        .metric_value;
    (active, metric)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_scales_executors_out_from_zero_and_back() {
    let _serial = common::one_cluster_at_a_time().await;
    let args = [
        "--autoscale",
        "local",
        "--min-executors",
        "0",
        "--max-executors",
        "3",
        "--scale-step",
        "2",
        "--cooldown-secs",
        "2",
        "--executor-slots",
        "2",
    ];
    let cluster =
        Cluster::start_with(0, Vec::new(), args.iter().map(|a| a.to_string()).collect()).await;
    assert_eq!(executor_processes(cluster.port), 0);
    assert_eq!(
        keda(&cluster).await,
        (false, 0),
        "idle: KEDA may scale to zero"
    );

    let data = cluster.dir.path().join("lake");
    sluice_jobs::datagen::write_claims(&data, 12_000, &(1..=12).collect::<Vec<_>>(), 23).unwrap();
    let job = cluster.dir.path().join("claims_by_month.yaml");
    std::fs::write(&job, common::CLAIMS_BY_MONTH).unwrap();
    let started = Command::new(common::sluice_bin())
        .arg("backfill")
        .arg(&job)
        .args([
            "--from",
            "2024-01-01",
            "--to",
            "2024-12-31",
            "--every",
            "month",
        ])
        .args(["--date-param", "month", "--max-concurrent", "4"])
        .args(["-p", &format!("landing={}", data.join("landing").display())])
        .args(["-p", &format!("staging={}", data.join("staging").display())])
        .args(["--scheduler", &cluster.url()])
        .output()
        .unwrap();
    assert!(started.status.success(), "{started:?}");
    let backfill_id = String::from_utf8_lossy(&started.stdout).trim().to_owned();

    let (mut most_executors, mut saw_active, mut most_tasks) = (0, false, 0);
    let deadline = Instant::now() + Duration::from_secs(240);
    let record = loop {
        most_executors = most_executors.max(executor_processes(cluster.port));
        let (active, tasks) = keda(&cluster).await;
        saw_active |= active;
        most_tasks = most_tasks.max(tasks);
        let record = cluster
            .client()
            .await
            .get_backfill(v1::GetBackfillRequest {
                backfill_id: backfill_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        if record.status != "running" {
            break record;
        }
        assert!(Instant::now() < deadline, "{record:?}{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(record.status, "succeeded", "{record:?}{}", cluster.logs());
    assert!(record.partitions.iter().all(|p| p.status == "succeeded"));
    assert!(
        (1..=3).contains(&most_executors),
        "{most_executors} executors"
    );
    assert!(saw_active && most_tasks > 0, "KEDA never saw the queue");
    assert_eq!(
        common::data_files(&data.join("staging/claims")).len(),
        12,
        "one file per month"
    );

    // Idle again: back to zero executors, and KEDA says inactive.
    let deadline = Instant::now() + Duration::from_secs(60);
    while executor_processes(cluster.port) > 0 {
        assert!(
            Instant::now() < deadline,
            "executors were not scaled in{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(keda(&cluster).await, (false, 0));
    let status = cluster
        .client()
        .await
        .get_autoscaler(v1::GetAutoscalerRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(status.enabled && status.executors == 0, "{status:?}");
    assert!(
        status.scale_out_decisions >= 1 && status.scale_in_decisions >= 1,
        "{status:?}"
    );
    assert!(status.decisions.iter().all(|d| !d.reason.is_empty()));
    let log = std::fs::read_to_string(cluster.log_path("scheduler-1")).unwrap();
    assert!(log.contains("autoscaler decision"), "decisions are logged");
    assert!(
        log.contains("need") && log.contains("has needed only 0 executors"),
        "{log}"
    );
}

/// Reads a count from moto until `done` holds.
async fn wait_for<F, Fut>(what: &str, read: F, done: impl Fn(i32) -> bool) -> i32
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = i32>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let value = read().await;
        if done(value) {
            return value;
        }
        assert!(Instant::now() < deadline, "{what} stayed {value}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Submits a run that needs executors, and cancels it once `scaled_out` saw them asked for.
async fn demand_then_cancel<F, Fut>(cluster: &Cluster, scaled_out: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let data = cluster.dir.path().join("lake");
    sluice_jobs::datagen::write_claims(&data, 1_000, &[1], 2).unwrap();
    let run_id = cluster
        .submit(
            common::CLAIMS_BY_MONTH,
            "claims_by_month.yaml",
            &[
                ("landing", data.join("landing").display().to_string()),
                ("staging", data.join("staging").display().to_string()),
                ("month", "2024-01".into()),
            ],
        )
        .await
        .unwrap();
    scaled_out().await;
    cluster
        .client()
        .await
        .cancel_run(v1::CancelRunRequest {
            run_id: run_id.clone(),
        })
        .await
        .unwrap();
    let run = cluster.wait_final(&run_id).await;
    assert_eq!(common::status(&run), v1::RunStatus::Cancelled);
}

fn aws_env(endpoint: &str) -> Vec<(String, String)> {
    vec![
        ("SLUICE_AUTOSCALE__ENDPOINT".into(), endpoint.into()),
        ("SLUICE_AUTOSCALE__REGION".into(), "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID".into(), "test".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
    ]
}

/// The `ecs` and `emr` providers against moto server: the service's desiredCount and
/// the instance group's count follow the scheduler's decisions out and back in. (moto
/// starts no tasks or nodes, so the run waits for executors until it is cancelled.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecs_and_emr_providers_set_the_counts_they_decide() {
    let _serial = common::one_cluster_at_a_time().await;
    let scratch = tempfile::tempdir().unwrap();
    let moto = common::moto::Moto::start(scratch.path().join("moto.log"));
    let endpoint = moto.endpoint();
    let credentials = || aws_sdk_ecs::config::Credentials::new("test", "test", None, None, "tests");
    let ecs = aws_sdk_ecs::Client::from_conf(
        aws_sdk_ecs::Config::builder()
            .behavior_version_latest()
            .region(aws_sdk_ecs::config::Region::new("us-east-1"))
            .credentials_provider(credentials())
            .endpoint_url(&endpoint)
            .build(),
    );
    ecs.create_cluster()
        .cluster_name("sluice")
        .send()
        .await
        .unwrap();
    ecs.register_task_definition()
        .family("sluice-executor")
        .container_definitions(
            aws_sdk_ecs::types::ContainerDefinition::builder()
                .name("executor")
                .image("sluice:latest")
                .memory(2048)
                .build(),
        )
        .send()
        .await
        .unwrap();
    ecs.create_service()
        .cluster("sluice")
        .service_name("executors")
        .task_definition("sluice-executor")
        .desired_count(0)
        .send()
        .await
        .unwrap();
    let scaling = |provider: &[&str]| {
        let mut args: Vec<String> = vec!["--autoscale".into()];
        args.extend(provider.iter().map(|a| a.to_string()));
        args.extend(
            [
                "--min-executors",
                "0",
                "--max-executors",
                "3",
                "--cooldown-secs",
                "2",
                "--executor-slots",
                "2",
            ]
            .iter()
            .map(|a| a.to_string()),
        );
        args
    };
    let desired = || {
        let ecs = ecs.clone();
        async move {
            ecs.describe_services()
                .cluster("sluice")
                .services("executors")
                .send()
                .await
                .unwrap()
                .services()[0]
                .desired_count()
        }
    };
    {
        let cluster = Cluster::start_with(
            0,
            aws_env(&endpoint),
            scaling(&[
                "ecs",
                "--ecs-cluster",
                "sluice",
                "--ecs-service",
                "executors",
            ]),
        )
        .await;
        demand_then_cancel(&cluster, || async {
            wait_for("desiredCount", desired, |n| n >= 1).await;
        })
        .await;
        wait_for("desiredCount", desired, |n| n == 0).await;
    }

    let emr = aws_sdk_emr::Client::from_conf(
        aws_sdk_emr::Config::builder()
            .behavior_version_latest()
            .region(aws_sdk_emr::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_emr::config::Credentials::new(
                "test", "test", None, None, "tests",
            ))
            .endpoint_url(&endpoint)
            .build(),
    );
    let group = |role: aws_sdk_emr::types::InstanceRoleType, count: i32| {
        aws_sdk_emr::types::InstanceGroupConfig::builder()
            .instance_role(role)
            .instance_type("m5.xlarge")
            .instance_count(count)
            .build()
    };
    let cluster_id = emr
        .run_job_flow()
        .name("sluice")
        .release_label("emr-7.5.0")
        .job_flow_role("EMR_EC2_DefaultRole")
        .service_role("EMR_DefaultRole")
        .instances(
            aws_sdk_emr::types::JobFlowInstancesConfig::builder()
                .instance_groups(group(aws_sdk_emr::types::InstanceRoleType::Master, 1))
                .instance_groups(group(aws_sdk_emr::types::InstanceRoleType::Core, 1))
                .keep_job_flow_alive_when_no_steps(true)
                .build(),
        )
        .send()
        .await
        .unwrap()
        .job_flow_id()
        .unwrap()
        .to_owned();
    let groups = emr
        .list_instance_groups()
        .cluster_id(&cluster_id)
        .send()
        .await
        .unwrap();
    let core = groups
        .instance_groups()
        .iter()
        .find(|g| g.instance_group_type() == Some(&aws_sdk_emr::types::InstanceGroupType::Core))
        .unwrap()
        .id()
        .unwrap()
        .to_owned();
    let count = || {
        let emr = emr.clone();
        let cluster_id = cluster_id.clone();
        let core = core.clone();
        async move {
            emr.list_instance_groups()
                .cluster_id(&cluster_id)
                .send()
                .await
                .unwrap()
                .instance_groups()
                .iter()
                .find(|g| g.id() == Some(core.as_str()))
                .unwrap()
                .requested_instance_count()
                .unwrap()
        }
    };
    let cluster = Cluster::start_with(
        0,
        aws_env(&endpoint),
        scaling(&[
            "emr",
            "--emr-cluster-id",
            &cluster_id,
            "--emr-instance-group-id",
            &core,
        ]),
    )
    .await;
    // Idle: the one core node is scaled in after the cooldown.
    wait_for("the core group", count, |n| n == 0).await;
    demand_then_cancel(&cluster, || async {
        wait_for("the core group", count, |n| n >= 1).await;
    })
    .await;
    wait_for("the core group", count, |n| n == 0).await;
}

/// Scale-in while a job runs: once the job's last stage needs fewer executors than run,
/// the autoscaler wants fewer, but keeps every executor holding shuffle output the
/// running stage reads (or running its tasks); the run commits the exact answer with no
/// executor lost, and the executors go once the job is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_in_waits_for_the_shuffle_output_a_running_job_reads() {
    let _serial = common::one_cluster_at_a_time().await;
    let args = [
        "--autoscale",
        "local",
        "--min-executors",
        "0",
        "--max-executors",
        "3",
        "--scale-step",
        "3",
        "--cooldown-secs",
        "1",
        "--executor-slots",
        "2",
    ];
    let cluster =
        Cluster::start_with(0, Vec::new(), args.iter().map(|a| a.to_string()).collect()).await;
    let data = cluster.dir.path().join("lake");
    // Six monthly files: the CSV reader reads a file in one task, so the scans offer six
    // tasks — enough demand for three executors of two slots.
    sluice_jobs::datagen::write_claims(&data, 14_000, &[1, 2, 3, 4, 5, 6], 31).unwrap();
    let expected = crate::cluster::expected_pairs(&data.join("landing"));
    let out = data.join("pairs");
    let job = format!(
        "{}conf:\n  spark.sql.shuffle.partitions: 6\n",
        crate::cluster::SLOW_JOB
    );
    let run_id = cluster
        .submit(
            &job,
            "slow.yaml",
            &[
                ("landing", data.join("landing").display().to_string()),
                ("out", out.display().to_string()),
            ],
        )
        .await
        .unwrap();
    let scheduler_log = || std::fs::read_to_string(cluster.log_path("scheduler-1")).unwrap();
    let (mut most_executors, mut wanted_fewer) = (0, false);
    let mut log_while_running = String::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    let run = loop {
        let log = scheduler_log();
        let run = cluster.run(&run_id).await;
        if !matches!(
            common::status(&run),
            v1::RunStatus::Queued | v1::RunStatus::Running
        ) {
            break run;
        }
        log_while_running = log;
        let status = cluster
            .client()
            .await
            .get_autoscaler(v1::GetAutoscalerRequest {})
            .await
            .unwrap()
            .into_inner();
        let processes = executor_processes(cluster.port);
        most_executors = most_executors.max(processes);
        // The demand in executors of 2 slots, as the autoscaler computes it.
        let demand = (status.ready_tasks + status.running_tasks).div_ceil(2) as usize;
        wanted_fewer |= most_executors == 3 && demand < processes;
        assert!(Instant::now() < deadline, "{run:?}{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        common::status(&run),
        v1::RunStatus::Succeeded,
        "{run:?}{}",
        cluster.logs()
    );
    assert_eq!(most_executors, 3, "the job scaled out to 3 executors");
    assert!(
        wanted_fewer,
        "the job never needed fewer executors than ran, so scale-in was not exercised"
    );
    assert!(
        !log_while_running.contains("Removing executor"),
        "an executor was scaled in or lost while the job ran:\n{log_while_running}"
    );
    crate::cluster::assert_no_recompute(&run);
    assert_eq!(crate::cluster::read_pairs(&out), expected);
    // Idle: the executors go.
    let deadline = Instant::now() + Duration::from_secs(90);
    while executor_processes(cluster.port) > 0 {
        assert!(
            Instant::now() < deadline,
            "executors were not scaled in{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        scheduler_log().contains("scaled in by the autoscaler"),
        "the idle executors were not scaled in by the autoscaler"
    );
}
