//! The trust boundary of a scheduler with TLS, a fleet CA and a tokens file, probed by
//! hostile clients over real processes: without credentials, with an unknown token, with
//! a token of too small a role, over plain text, as Ballista clients and as a rogue
//! executor — and the fleet executor and a submitter that may run the job, which work.
//! Certificates are generated per test with rcgen; tokens with `sluice token new`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::common::{self, Killed, Pki, new_token, sluice_bin};

/// `sluice <args>` as a client holding `token` (none when empty) and trusting `ca`.
fn client(args: &[&str], token: &str, ca: &Path) -> Output {
    let mut command = Command::new(sluice_bin());
    command
        .args(args)
        .env("SLUICE_TLS__CA", ca)
        .env_remove("SLUICE_TOKEN");
    if !token.is_empty() {
        command.env("SLUICE_TOKEN", token);
    }
    command.output().unwrap()
}

fn refused(output: &Output, expected: &str, what: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{what} was allowed: {stderr}");
    assert!(stderr.contains(expected), "{what}: {stderr}");
}

async fn tls_channel(
    port: u16,
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca).unwrap()))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(cert).unwrap(),
            std::fs::read(key).unwrap(),
        ));
    }
    Endpoint::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_are_refused_and_the_fleet_and_a_permitted_submitter_run_a_job() {
    let _serial = common::one_cluster_at_a_time().await;
    let home = tempfile::tempdir().unwrap();
    let pki = Pki::generate(home.path(), "fleet", "executor");
    let rogue_dir = home.path().join("rogue");
    std::fs::create_dir_all(&rogue_dir).unwrap();
    let rogue = Pki::generate(&rogue_dir, "rogue", "intruder");

    let (admin, admin_entry) = new_token("platform-admin", "admin", &[]);
    let (reader, reader_entry) = new_token("analyst", "reader", &[]);
    let (pipeline, pipeline_entry) = new_token("claims-pipeline", "submitter", &["claims_*"]);
    let tokens = home.path().join("tokens.yaml");
    std::fs::write(
        &tokens,
        format!("tokens:\n{admin_entry}\n{reader_entry}\n{pipeline_entry}\n"),
    )
    .unwrap();

    let port = common::free_port();
    let scheduler_log = home.path().join("scheduler.log");
    let mut processes = Killed(vec![
        Command::new(sluice_bin())
            .args(["scheduler", "--port", &port.to_string()])
            .arg("--state-dir")
            .arg(home.path().join("state"))
            .arg("--tokens-file")
            .arg(&tokens)
            .arg("--tls-cert")
            .arg(pki.path("server.crt"))
            .arg("--tls-key")
            .arg(pki.path("server.key"))
            .arg("--tls-client-ca")
            .arg(pki.path("fleet.crt"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&scheduler_log).unwrap())
            .spawn()
            .unwrap(),
    ]);
    let url = format!("https://localhost:{port}");
    let ca = pki.path("fleet.crt");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !client(&["runs", "--scheduler", &url], &reader, &ca)
        .status
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "scheduler did not start: {}",
            std::fs::read_to_string(&scheduler_log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A plain-text client does not get a conversation with a TLS port.
    let plain = Command::new(sluice_bin())
        .args(["runs", "--scheduler", &format!("http://127.0.0.1:{port}")])
        .env("SLUICE_TOKEN", &admin)
        .env_remove("SLUICE_TLS__CA")
        .output()
        .unwrap();
    assert!(!plain.status.success(), "a plain-text client was served");

    // The JobService without a token, with an unknown one, and with too small a role.
    let data = home.path().join("lake");
    sluice_jobs::datagen::write_claims(&data, 2_000, &[1, 2], 4).unwrap();
    let job = home.path().join("claims_by_month.yaml");
    std::fs::write(&job, common::CLAIMS_BY_MONTH).unwrap();
    let other_job = home.path().join("payer_rollup.yaml");
    std::fs::write(
        &other_job,
        common::CLAIMS_BY_MONTH.replace("name: claims_by_month", "name: payer_rollup"),
    )
    .unwrap();
    let landing = format!("landing={}", data.join("landing").display());
    let staging = format!("staging={}", data.join("staging").display());
    let submit = |file: &Path| {
        vec![
            "submit".to_owned(),
            file.display().to_string(),
            "--wait".to_owned(),
            "--scheduler".to_owned(),
            url.clone(),
            "-p".to_owned(),
            landing.clone(),
            "-p".to_owned(),
            staging.clone(),
            "-p".to_owned(),
            "month=2024-02".to_owned(),
        ]
    };
    let submit_job = submit(&job);
    let submit_job: Vec<&str> = submit_job.iter().map(String::as_str).collect();
    let job_path = job.display().to_string();
    let calls: [(&str, Vec<&str>); 4] = [
        ("SubmitRun", submit_job.clone()),
        ("CancelRun", vec!["cancel", "r-0000", "--scheduler", &url]),
        (
            "RegisterJob",
            vec!["jobs", "register", &job_path, "--scheduler", &url],
        ),
        ("ListRuns", vec!["runs", "--scheduler", &url]),
    ];
    let unknown = "slt_not-a-token-this-scheduler-issued";
    for (name, args) in &calls {
        refused(
            &client(args, "", &ca),
            "unauthenticated: this scheduler needs a bearer token",
            name,
        );
        refused(
            &client(args, unknown, &ca),
            "unauthenticated: the bearer token is not one",
            name,
        );
    }
    for (name, args) in &calls[..3] {
        refused(
            &client(args, &reader, &ca),
            &format!("permission denied: `analyst` is a reader; {name} needs the"),
            name,
        );
    }
    assert!(
        !data.join("staging").exists(),
        "a refused submission wrote nothing"
    );

    // Ballista's client RPCs are closed even to an admin; its executor RPCs need the
    // fleet certificate, and a certificate of another CA fails the handshake.
    let channel = tls_channel(port, &ca, None).await.unwrap();
    let mut ballista = SchedulerGrpcClient::new(channel);
    let mut query =
        tonic::Request::new(ballista_core::serde::protobuf::ExecuteQueryParams::default());
    query
        .metadata_mut()
        .insert("authorization", format!("Bearer {admin}").parse().unwrap());
    let status = ballista.execute_query(query).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    let register = ballista_core::serde::protobuf::RegisterExecutorParams::default();
    let status = ballista
        .register_executor(register.clone())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    let intruder = tls_channel(
        port,
        &ca,
        Some((&rogue.path("intruder.crt"), &rogue.path("intruder.key"))),
    )
    .await;
    let rogue_registered = match intruder {
        Err(_) => false,
        Ok(channel) => SchedulerGrpcClient::new(channel)
            .register_executor(register)
            .await
            .is_ok(),
    };
    assert!(
        !rogue_registered,
        "an executor outside the fleet registered"
    );

    // The fleet executor registers over mutual TLS and runs the permitted submitter's
    // job; the submitter may not run another job.
    let work = home.path().join("executor");
    std::fs::create_dir_all(&work).unwrap();
    processes.0.push(
        Command::new(sluice_bin())
            .args(["executor", "--scheduler", &format!("localhost:{port}")])
            .args(["--port", &common::free_port().to_string()])
            .args(["--grpc-port", &common::free_port().to_string()])
            .args(["--vcores", "2"])
            .arg("--work-dir")
            .arg(&work)
            .arg("--tls-ca")
            .arg(&ca)
            .arg("--tls-cert")
            .arg(pki.path("executor.crt"))
            .arg("--tls-key")
            .arg(pki.path("executor.key"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(home.path().join("executor.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    refused(
        &client(
            &submit(&other_job)
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            &pipeline,
            &ca,
        ),
        "permission denied: `claims-pipeline` may not submit runs of job `payer_rollup`",
        "a job outside the submitter's patterns",
    );
    let run = client(&submit_job, &pipeline, &ca);
    assert!(
        run.status.success(),
        "{}\nscheduler: {}\nexecutor: {}",
        String::from_utf8_lossy(&run.stderr),
        std::fs::read_to_string(&scheduler_log).unwrap_or_default(),
        std::fs::read_to_string(home.path().join("executor.log")).unwrap_or_default()
    );
    let listed = client(
        &["runs", "--scheduler", &url, "--output", "json"],
        &reader,
        &ca,
    );
    assert!(listed.status.success());
    let runs: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let runs = runs.as_array().cloned().unwrap_or_default();
    assert_eq!(runs.len(), 1, "{runs:?}");
    let record = &runs[0];
    assert_eq!(record["submitted_by"], "claims-pipeline", "{record}");
    assert_eq!(record["status"], "succeeded", "{record}");

    // Every call was decided in the audit trail, with its principal.
    let log = std::fs::read_to_string(&scheduler_log).unwrap();
    let audit: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("sluice::audit"))
        .collect();
    assert!(
        audit
            .iter()
            .any(|l| l.contains("principal=\"claims-pipeline\"")
                && l.contains("SubmitRun")
                && l.contains("allowed")),
        "{audit:#?}"
    );
    assert!(
        audit
            .iter()
            .any(|l| l.contains("RegisterJob") && l.contains("Unauthenticated")),
        "{audit:#?}"
    );
    assert!(
        audit
            .iter()
            .any(|l| l.contains("ExecuteQuery") && l.contains("PermissionDenied")),
        "{audit:#?}"
    );

    // The trail is kept in the run store: `sluice audit`, for admins only.
    refused(
        &client(&["audit", "--scheduler", &url], &reader, &ca),
        "permission denied: `analyst` is a reader; ListAudit needs the admin role",
        "audit as a reader",
    );
    let trail = client(
        &[
            "audit",
            "--scheduler",
            &url,
            "--limit",
            "1000",
            "--output",
            "json",
        ],
        &admin,
        &ca,
    );
    assert!(
        trail.status.success(),
        "{}",
        String::from_utf8_lossy(&trail.stderr)
    );
    let events: Vec<serde_json::Value> = serde_json::from_slice(&trail.stdout).unwrap();
    let has = |principal: &str, method: &str, outcome: &str| {
        events.iter().any(|e| {
            e["principal"] == principal
                && e["action"].as_str().is_some_and(|a| a.ends_with(method))
                && e["outcome"] == outcome
        })
    };
    assert!(
        has("claims-pipeline", "/SubmitRun", "allowed"),
        "{events:#?}"
    );
    assert!(
        has("analyst", "/SubmitRun", "PermissionDenied"),
        "{events:#?}"
    );
    assert!(
        has("unverified", "/RegisterJob", "Unauthenticated"),
        "{events:#?}"
    );
    assert!(
        has("unverified", "/ExecuteQuery", "PermissionDenied"),
        "{events:#?}"
    );
    assert!(
        has("analyst", "/ListAudit", "PermissionDenied"),
        "{events:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_the_network_reaches_refuses_to_start_without_tls_and_tokens() {
    let home = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let started = |extra: &[&str]| {
        Command::new(sluice_bin())
            .args([
                "scheduler",
                "--bind",
                "0.0.0.0",
                "--port",
                &port.to_string(),
            ])
            .arg("--state-dir")
            .arg(home.path().join("state"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let refused = started(&[]).wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("refusing to serve 0.0.0.0:")
            && stderr.contains("without TLS, a tokens file, a client CA for the executors"),
        "{stderr}"
    );
    assert!(
        !home.path().join("state").join("runs.redb").exists(),
        "nothing was opened"
    );

    // Said explicitly, it serves, and says so.
    let mut insecure = Killed(vec![started(&["--insecure"])]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let address = format!("127.0.0.1:{port}");
    loop {
        let health = Command::new(sluice_bin())
            .args(["health", "--address", &address])
            .output()
            .unwrap();
        if health.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the --insecure scheduler did not serve"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let child = insecure.0.pop().unwrap();
    terminate(&child);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("INSECURE"), "{stderr}");
}

/// SIGTERM, as a container runtime stops a process.
fn terminate(child: &Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
}

/// A scheduler with declared zones reads only inside them and writes only inside its
/// writable ones: `/etc/passwd`, a folder beside the landing zone and an output into the
/// read-only landing zone are each refused naming the field, with nothing written; the
/// same job inside its zones runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_read_and_write_only_inside_the_deployments_zones() {
    let _serial = common::one_cluster_at_a_time().await;
    let lake = tempfile::tempdir().unwrap();
    sluice_jobs::datagen::write_claims(lake.path(), 1_000, &[2], 3).unwrap();
    let landing = lake.path().join("landing");
    let staging = lake.path().join("staging");
    let elsewhere = lake.path().join("elsewhere");
    std::fs::create_dir_all(elsewhere.join("claims")).unwrap();
    let first = common::data_files(&landing.join("claims"))
        .into_iter()
        .next()
        .expect("a landing file");
    std::fs::copy(
        landing.join("claims").join(first),
        elsewhere.join("claims/copy.csv"),
    )
    .unwrap();
    let cluster = common::Cluster::start_with(
        1,
        Vec::new(),
        vec![
            "--read-zone".into(),
            landing.display().to_string(),
            "--write-zone".into(),
            staging.display().to_string(),
        ],
    )
    .await;
    let submit = |definition: &str, landing_param: &Path, staging_param: &Path| {
        let job = cluster.dir.path().join("job.yaml");
        std::fs::write(&job, definition).unwrap();
        Command::new(sluice_bin())
            .arg("submit")
            .arg(&job)
            .args(["--wait", "--scheduler", &cluster.url()])
            .args(["-p", &format!("landing={}", landing_param.display())])
            .args(["-p", &format!("staging={}", staging_param.display())])
            .args(["-p", "month=2024-02"])
            .output()
            .unwrap()
    };
    let passwd = common::CLAIMS_BY_MONTH.replace(
        "claims: {format: csv, path: \"{{landing}}/claims\"}",
        "claims: {format: csv, path: /etc/passwd}",
    );
    let cases = [
        (
            passwd.as_str(),
            landing.clone(),
            staging.clone(),
            "sources.claims.path",
            "file:///etc/passwd lies outside the deployment's zones",
        ),
        (
            common::CLAIMS_BY_MONTH,
            elsewhere.clone(),
            staging.clone(),
            "sources.claims.path",
            "lies outside the deployment's zones",
        ),
        (
            common::CLAIMS_BY_MONTH,
            landing.clone(),
            landing.join("out"),
            "outputs[0].path",
            "lies outside the deployment's writable zones",
        ),
    ];
    for (definition, landing_param, staging_param, field, expected) in cases {
        let output = submit(definition, &landing_param, &staging_param);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{field}: {stderr}");
        assert!(
            stderr.contains(field) && stderr.contains(expected),
            "{field}: {stderr}"
        );
    }
    assert!(
        !staging.exists() && !landing.join("out").exists(),
        "a refused job wrote"
    );
    let output = submit(common::CLAIMS_BY_MONTH, &landing, &staging);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!common::data_files(&staging.join("claims")).is_empty());
}

/// Every file below `dir` that holds `needle`, to search for a canary.
fn contains_bytes(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if std::fs::read(&path)
                .unwrap_or_default()
                .windows(needle.len())
                .any(|window| window == needle)
            {
                found.push(path);
            }
        }
    }
    found
}

/// A canary value in a column the definition declares sensitive reaches neither the
/// error of a failed cast, nor the logs, nor the run record, nor the data-quality
/// report's samples — only the data (the quarantine keeps the row).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sensitive_columns_value_never_leaves_the_data() {
    let _serial = common::one_cluster_at_a_time().await;
    let dir = tempfile::tempdir().unwrap();
    let canary = "CANARY-987-65-4321";
    std::fs::create_dir_all(dir.path().join("landing/members")).unwrap();
    std::fs::write(
        dir.path().join("landing/members/part-0.csv"),
        format!("member_id,ssn,amount\nM1,123456789,10\nM2,{canary},12\n"),
    )
    .unwrap();
    let job = |steps: &str, quality: &str| {
        format!(
            "apiVersion: sluice/v1\nname: members\nsensitive: [ssn]\n\
             sources:\n  members: {{format: csv, path: landing/members}}\n\
             {steps}{quality}\
             outputs:\n  - {{name: members, path: staging/members}}\n"
        )
    };
    let state = dir.path().join("state");
    let run = |definition: String| {
        let file = dir.path().join("job.yaml");
        std::fs::write(&file, definition).unwrap();
        Command::new(sluice_bin())
            .args(["run"])
            .arg(&file)
            .arg("--state-dir")
            .arg(&state)
            .args(["--output", "json"])
            .env("RUST_LOG", "info")
            .current_dir(dir.path())
            .output()
            .unwrap()
    };

    // A strict cast fails the run, naming the file and the column, not the value.
    let failed = run(job("steps:\n  - cast: {ssn: int}\n", ""));
    let shown = String::from_utf8_lossy(&failed.stderr).to_string()
        + &String::from_utf8_lossy(&failed.stdout);
    assert!(!failed.status.success(), "{shown}");
    assert!(
        shown.contains("ssn") && shown.contains("part-0.csv"),
        "{shown}"
    );
    assert!(
        !shown.contains(canary),
        "the canary reached the error or the logs: {shown}"
    );

    // A rule on the column quarantines the row; its sample shows `<masked>`.
    let quarantined = run(job(
        "steps: []\n",
        "quality:\n  quarantine: {path: staging/rejects}\n  rules:\n    \
         - {name: ssn_digits, regex: {column: ssn, pattern: \"^[0-9]{9}$\"}}\n",
    ));
    let shown = String::from_utf8_lossy(&quarantined.stderr).to_string()
        + &String::from_utf8_lossy(&quarantined.stdout);
    assert!(quarantined.status.success(), "{shown}");
    assert!(shown.contains("ssn=<masked>"), "{shown}");
    assert!(
        !shown.contains(canary),
        "the canary reached the report or the logs: {shown}"
    );
    assert_eq!(
        contains_bytes(&state, canary.as_bytes()),
        Vec::<PathBuf>::new()
    );
    // The row itself is kept where data belongs.
    assert_eq!(
        common::data_files(&dir.path().join("staging/rejects")).len(),
        1,
        "the quarantined row is in the data"
    );
}
