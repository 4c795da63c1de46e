//! The CLI as users meet it: bad input gets a clear error naming what is wrong, a
//! non-zero exit code, and nothing written.

use crate::common;

use std::process::{Command, Output};

fn sluice(args: &[&str], cwd: &std::path::Path) -> Output {
    Command::new(common::sluice_bin())
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

#[test]
fn validate_accepts_the_examples_and_names_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs/examples/claims_cleanse.yaml");
    let ok = sluice(&["validate", example.to_str().unwrap()], dir.path());
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("is valid"));

    std::fs::write(dir.path().join("bad.yaml"), "apiVersion: sluice/v1\nname: x\nsources: {a: {format: csv, path: p, colour: red}}\noutputs: []\n").unwrap();
    let bad = sluice(&["validate", "bad.yaml"], dir.path());
    assert_eq!(bad.status.code(), Some(2));
    let message = stderr(&bad);
    assert!(message.starts_with("error: bad.yaml:3:"), "{message}");
    assert!(message.contains("colour"), "{message}");
}

#[test]
fn validate_with_params_reads_the_sources() {
    let dir = tempfile::tempdir().unwrap();
    sluice_jobs::datagen::write_claims(dir.path(), 100, &[1], 1).unwrap();
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs/examples/claims_cleanse.yaml");
    let ok = sluice(
        &[
            "validate",
            example.to_str().unwrap(),
            "--param",
            "landing=landing",
            "--param",
            "staging=staging",
        ],
        dir.path(),
    );
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(
        String::from_utf8_lossy(&ok.stdout)
            .contains("is valid against its sources (claims at file://")
    );

    let missing = sluice(
        &[
            "validate",
            example.to_str().unwrap(),
            "--param",
            "landing=nowhere",
            "--param",
            "staging=staging",
        ],
        dir.path(),
    );
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        stderr(&missing).contains("source `claims`"),
        "{}",
        stderr(&missing)
    );
    assert!(
        !dir.path().join("staging").exists(),
        "validate wrote something"
    );
}

#[test]
fn run_without_a_required_param_fails_before_writing() {
    let _serial = common::one_cluster_at_a_time_blocking();
    let dir = tempfile::tempdir().unwrap();
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs/examples/claims_cleanse.yaml");
    let output = sluice(
        &[
            "run",
            example.to_str().unwrap(),
            "--param",
            "landing=landing",
        ],
        dir.path(),
    );
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("param `staging`: is required and was not given"),
        "{}",
        stderr(&output)
    );
    assert!(!dir.path().join("staging").exists());
}

#[test]
fn an_unreachable_scheduler_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs/examples/claims_cleanse.yaml");
    let output = sluice(
        &[
            "submit",
            example.to_str().unwrap(),
            "--scheduler",
            &format!("127.0.0.1:{port}"),
        ],
        dir.path(),
    );
    assert_eq!(output.status.code(), Some(3));
    assert!(
        stderr(&output).contains(&format!(
            "cannot reach the scheduler at http://127.0.0.1:{port}"
        )),
        "{}",
        stderr(&output)
    );
}

#[test]
fn schema_prints_a_json_schema() {
    let dir = tempfile::tempdir().unwrap();
    let output = sluice(&["schema"], dir.path());
    assert!(output.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(schema["title"], "Sluice job definition");
}

/// A job whose output equals, contains or lies inside its source — or whose quarantine
/// lies inside its output — is refused by `validate` and by `run`, naming both
/// locations; the landing files stay byte for byte as they were.
#[test]
fn an_output_over_what_the_job_reads_is_refused_and_landing_is_untouched() {
    let dir = tempfile::tempdir().unwrap();
    sluice_jobs::datagen::write_claims(dir.path(), 50, &[1], 3).unwrap();
    let landing = dir.path().join("landing/claims");
    let before = landing_bytes(&landing);
    let job = dir.path().join("job.yaml");
    std::fs::write(
        &job,
        "apiVersion: sluice/v1\nname: overlap\nparams:\n  out: {type: path, required: true}\n  \
         rejects: {type: path, default: rejects}\n\
         sources:\n  claims: {format: csv, path: landing/claims}\n\
         quality:\n  quarantine: {path: \"{{rejects}}\"}\n  rules:\n    - {name: quantity_present, not_null: [quantity]}\n\
         outputs:\n  - {name: claims, path: \"{{out}}\"}\n",
    )
    .unwrap();
    let cases = [
        (
            "landing/claims",
            "rejects",
            "is the same location as source `claims`",
        ),
        // (A `..` segment never reaches this check: a path param refuses it.)
        (
            "./landing/./claims/",
            "rejects",
            "is the same location as source `claims`",
        ),
        ("landing", "rejects", "contains source `claims`"),
        (
            "landing/claims/cleansed",
            "rejects",
            "lies inside source `claims`",
        ),
        ("staging/claims", "staging/claims/rejects", "the quarantine"),
    ];
    for (out, rejects, expected) in cases {
        for command in ["validate", "run"] {
            let output = sluice(
                &[
                    command,
                    job.to_str().unwrap(),
                    "-p",
                    &format!("out={out}"),
                    "-p",
                    &format!("rejects={rejects}"),
                ],
                dir.path(),
            );
            assert!(!output.status.success(), "{command} out={out} was accepted");
            let message = stderr(&output);
            assert!(
                message.contains(expected) && message.contains("give each output a folder"),
                "{command} out={out}: {message}"
            );
        }
    }
    assert_eq!(landing_bytes(&landing), before, "the landing files changed");
    assert!(
        !dir.path().join("staging").exists(),
        "a refused job wrote something"
    );
}

/// Every file below `dir` with its bytes.
fn landing_bytes(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|entry| entry.path().is_file())
        .map(|entry| {
            (
                entry.file_name().to_string_lossy().into_owned(),
                std::fs::read(entry.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no landing files in {}", dir.display());
    files
}

/// A submission whose output is the scheduler's state directory, or holds it, is
/// refused; one below it (the image keeps its state in its working directory) is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_over_the_schedulers_state_directory_is_refused() {
    let _serial = common::one_cluster_at_a_time().await;
    let cluster = common::Cluster::start(0).await;
    // The landing lies outside the cluster's folder, so only the state directory is hit.
    let lake = tempfile::tempdir().unwrap();
    let data = lake.path().to_path_buf();
    sluice_jobs::datagen::write_claims(&data, 20, &[1], 4).unwrap();
    let state = cluster.dir.path().join("state");
    let job = "apiVersion: sluice/v1\nname: over_state\nparams:\n  landing: {type: path, required: true}\n  \
               out: {type: path, required: true}\n\
               sources:\n  claims: {format: csv, path: \"{{landing}}/claims\"}\n\
               outputs:\n  - {name: claims, path: \"{{out}}\"}\n";
    for out in [state.clone(), cluster.dir.path().to_path_buf()] {
        let err = cluster
            .submit(
                job,
                "over_state.yaml",
                &[
                    ("landing", data.join("landing").display().to_string()),
                    ("out", out.display().to_string()),
                ],
            )
            .await
            .unwrap_err();
        assert!(
            err.message().contains("the scheduler's state directory"),
            "out={}: {err:?}",
            out.display()
        );
    }
    assert!(
        state.join("runs.redb").exists(),
        "the run store is still there"
    );
    let below = cluster
        .submit(
            job,
            "over_state.yaml",
            &[
                ("landing", data.join("landing").display().to_string()),
                ("out", state.join("exports/claims").display().to_string()),
            ],
        )
        .await;
    assert!(
        below.is_ok(),
        "an output below the state directory: {below:?}"
    );
}

/// A long `sluice run` stopped with SIGTERM (as `timeout`, systemd or a container stop
/// sends it) cancels its run and exits non-zero at once, saying so; nothing of the run
/// becomes visible in its output.
#[test]
fn sigterm_cancels_a_sluice_run_and_ends_the_process() {
    let _serial = common::one_cluster_at_a_time_blocking();
    let dir = tempfile::tempdir().unwrap();
    sluice_jobs::datagen::write_claims(dir.path(), 10, &[1], 1).unwrap();
    std::fs::write(
        dir.path().join("long.yaml"),
        "apiVersion: sluice/v1\nname: long\n\
         sources:\n  claims: {format: csv, path: landing/claims}\n\
         steps:\n  - sql: \"SELECT value AS id, md5(CAST(value AS VARCHAR)) AS h FROM generate_series(1, 400000000)\"\n\
         outputs:\n  - {name: long, path: out}\n",
    )
    .unwrap();
    let log = dir.path().join("stderr.log");
    // Killed when the test ends, also when it fails.
    let mut guard = common::Killed(vec![
        Command::new(common::sluice_bin())
            .args(["run", "long.yaml"])
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    ]);
    let child = &mut guard.0[0];
    // Running: its progress says so.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("long: running")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the run never started: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "sluice run ended early"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("sluice run did not stop within 60 s of SIGTERM");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("stopped by a signal"), "{stderr}");
    let visible: Vec<_> = std::fs::read_dir(dir.path().join("out"))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with('_') && !name.starts_with('.'))
        .collect();
    assert!(visible.is_empty(), "visible files: {visible:?}");
}
