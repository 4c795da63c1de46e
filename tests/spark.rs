//! Interop with PySpark 4 on local files, both ways: Spark reads what Sluice wrote with
//! the same rows and types, and Sluice reads what Spark wrote (its `_SUCCESS`, `.crc`
//! files and partition folders) with the same answers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::Int64Type;

/// `sluice run` on the embedded cluster; returns the run record.
fn sluice_run(dir: &Path, job: &Path, params: &[(&str, String)]) -> serde_json::Value {
    let mut command = Command::new(common::sluice_bin());
    command
        .arg("run")
        .arg(job)
        .args(["--output", "json", "--state-dir"])
        .arg(dir.join(".sluice"));
    for (name, value) in params {
        command.args(["-p", &format!("{name}={value}")]);
    }
    let output = command.current_dir(dir).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spark_reads_what_sluice_wrote_with_the_same_rows_and_types() {
    let _serial = common::one_cluster_at_a_time().await;
    let dir = tempfile::tempdir().unwrap();
    sluice_jobs::datagen::write_claims(dir.path(), 3_000, &[1, 2], 4).unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs/examples/claims_cleanse.yaml");
    let record = sluice_run(
        dir.path(),
        &example,
        &[
            ("landing", dir.path().join("landing").display().to_string()),
            ("staging", dir.path().join("staging").display().to_string()),
        ],
    );
    assert_eq!(record["status"], "succeeded");
    let rows_written = record["outputs"][0]["rows_written"].as_u64().unwrap();
    let staging = dir.path().join("staging/claims");

    let spark = common::pyspark(&["read", staging.to_str().unwrap()]);
    assert_eq!(spark["count"].as_u64().unwrap(), rows_written);
    assert_eq!(spark["distinct_claims"].as_u64().unwrap(), rows_written);
    let types: BTreeMap<String, String> = serde_json::from_value(spark["types"].clone()).unwrap();
    let expected: BTreeMap<String, String> = [
        ("claim_id", "string"),
        ("patient_id", "string"),
        ("prescriber_npi", "string"),
        ("ndc", "string"),
        ("fill_date", "date"),
        ("quantity", "int"),
        ("days_supply", "int"),
        ("paid_amount", "decimal(12,2)"),
        ("payer", "string"),
        ("state", "string"),
        ("adjudicated_at", "timestamp"),
        ("fill_month", "string"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(types, expected);
    let by_month: BTreeMap<String, u64> =
        serde_json::from_value(spark["by_month"].clone()).unwrap();
    let written = common::read_partitioned(&staging);
    let ours: BTreeMap<String, u64> = written
        .iter()
        .map(|(folder, batches)| {
            (
                folder.trim_start_matches("fill_month=").to_owned(),
                batches.iter().map(|b| b.num_rows() as u64).sum(),
            )
        })
        .collect();
    assert_eq!(by_month, ours);
}

const MONTHLY_FROM_SPARK: &str = r#"apiVersion: sluice/v1
name: monthly_from_spark
params:
  input: {type: string, required: true}
  out: {type: string, required: true}
sources:
  claims: {format: parquet, path: "{{input}}"}
steps:
  - sql: |
      SELECT fill_month, count(*) AS n, CAST(sum(paid_amount) * 100 AS BIGINT) AS paid_cents
      FROM input GROUP BY fill_month
outputs:
  - {name: monthly, path: "{{out}}", mode: error_if_exists}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sluice_reads_what_spark_wrote_with_the_same_answers() {
    let _serial = common::one_cluster_at_a_time().await;
    let dir = tempfile::tempdir().unwrap();
    sluice_jobs::datagen::write_claims(dir.path(), 3_000, &[1, 2, 3], 6).unwrap();
    let spark_out = dir.path().join("spark_out");
    let spark = common::pyspark(&[
        "write",
        dir.path().join("landing/claims").to_str().unwrap(),
        spark_out.to_str().unwrap(),
    ]);
    assert!(spark_out.join("_SUCCESS").exists());

    let job = dir.path().join("monthly.yaml");
    std::fs::write(&job, MONTHLY_FROM_SPARK).unwrap();
    let out = dir.path().join("monthly");
    let record = sluice_run(
        dir.path(),
        &job,
        &[
            ("input", spark_out.display().to_string()),
            ("out", out.display().to_string()),
        ],
    );
    assert_eq!(record["status"], "succeeded");

    let mut ours = BTreeMap::new();
    for batches in common::read_partitioned(&out).values() {
        for batch in batches {
            let month = batch
                .column_by_name("fill_month")
                .unwrap()
                .as_string::<i32>()
                .clone();
            let n = batch
                .column_by_name("n")
                .unwrap()
                .as_primitive::<Int64Type>()
                .clone();
            let paid = batch
                .column_by_name("paid_cents")
                .unwrap()
                .as_primitive::<Int64Type>()
                .clone();
            for row in 0..batch.num_rows() {
                ours.insert(
                    month.value(row).to_owned(),
                    serde_json::json!({"n": n.value(row), "paid_cents": paid.value(row)}),
                );
            }
        }
    }
    let theirs: BTreeMap<String, serde_json::Value> =
        serde_json::from_value(spark["by_month"].clone()).unwrap();
    assert_eq!(ours, theirs);
}
