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
