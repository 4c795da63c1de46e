//! Interop with PySpark 4 on local files, both ways: Spark reads what Sluice wrote with
//! the same rows and types, and Sluice reads what Spark wrote (its `_SUCCESS`, `.crc`
//! files and partition folders) with the same answers.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use datafusion::arrow::array::{Array, AsArray};
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
  input: {type: path, required: true}
  out: {type: path, required: true}
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

const TIMESTAMPS_FROM_SPARK: &str = r#"
apiVersion: sluice/v1
name: spark_timestamps
params:
  input: {type: path, required: true}
  out: {type: path, required: true}
sources:
  int96: {format: parquet, path: "{{input}}/int96"}
  micros: {format: parquet, path: "{{input}}/micros"}
input: int96
steps:
  - sql: "SELECT 'int96' AS kind, id, ts, arrow_typeof(ts) AS read_as FROM int96 UNION ALL SELECT 'micros' AS kind, id, ts, arrow_typeof(ts) AS read_as FROM micros"
outputs:
  - {name: both, path: "{{out}}", mode: error_if_exists}
"#;

/// Spark's INT96 and INT64 (micros) timestamps read back as one type, Timestamp(us, UTC),
/// with the instants Spark reads from them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spark_int96_and_micros_timestamps_read_as_one_type_with_sparks_instants() {
    use datafusion::arrow::datatypes::{DataType, TimeUnit, TimestampMicrosecondType};
    let _serial = common::one_cluster_at_a_time().await;
    let dir = tempfile::tempdir().unwrap();
    let written = dir.path().join("spark_ts");
    let spark = common::pyspark(&["timestamps", written.to_str().unwrap()]);
    let job = dir.path().join("timestamps.yaml");
    std::fs::write(&job, TIMESTAMPS_FROM_SPARK).unwrap();
    let out = dir.path().join("both");
    let record = sluice_run(
        dir.path(),
        &job,
        &[
            ("input", written.display().to_string()),
            ("out", out.display().to_string()),
        ],
    );
    assert_eq!(record["status"], "succeeded");
    let mut ours: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    // How each file's column was read, before the union made them one type.
    let mut read_as: BTreeMap<String, String> = BTreeMap::new();
    for batches in common::read_partitioned(&out).values() {
        for batch in batches {
            let ts = batch.column_by_name("ts").unwrap();
            assert_eq!(
                ts.data_type(),
                &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
            );
            let ts = ts.as_primitive::<TimestampMicrosecondType>();
            let kind = batch.column_by_name("kind").unwrap().as_string::<i32>();
            let id = batch
                .column_by_name("id")
                .unwrap()
                .as_primitive::<Int64Type>();
            let types = batch.column_by_name("read_as").unwrap().as_string::<i32>();
            for row in 0..batch.num_rows() {
                read_as.insert(kind.value(row).to_owned(), types.value(row).to_owned());
                ours.entry(kind.value(row).to_owned())
                    .or_default()
                    .insert(id.value(row).to_string(), ts.value(row));
            }
        }
    }
    let theirs: BTreeMap<String, BTreeMap<String, i64>> =
        serde_json::from_value(spark["micros"].clone()).unwrap();
    assert_eq!(theirs.len(), 2, "{spark}");
    assert_eq!(read_as["int96"], read_as["micros"], "{read_as:?}");
    assert_eq!(ours, theirs);
}

/// Spark SQL expressions of the kinds cleansing and aggregation jobs use.
const EXPRESSIONS: &[&str] = &[
    "initcap('hello wORLD  foo')",
    "upper('abc')",
    "trim('  x  ')",
    "regexp_replace('a-b-c', '-', '')",
    "regexp_extract('abc123', '([0-9]+)', 1)",
    "'abc' rlike '^a'",
    "substr('2024-03-07', 1, 7)",
    "substr('2024-03-07', -2)",
    "substring('2024-03-07', -2)",
    "concat('a', NULL, 'b')",
    "concat_ws('-', 'a', NULL, 'b')",
    "lpad('7', 3, '0')",
    "length('abc')",
    "instr('abc', 'b')",
    "cast(date'2024-03-07' as string)",
    "date_format(date'2024-03-07', 'yyyy-MM')",
    "to_date('03/07/2024', 'MM/dd/yyyy')",
    "datediff(date'2024-03-07', date'2024-01-01')",
    "date_add(date'2024-01-31', 1)",
    "last_day(date'2024-02-10')",
    "trunc(date'2024-02-10', 'MM')",
    "year(date'2024-02-10')",
    "round(2.5)",
    "round(-2.5)",
    "bround(2.5)",
    "cast('1.55' as decimal(10,1))",
    "cast(' 12 ' as int)",
    "try_cast('abc' as int)",
    "7 div 2",
    "7 / 2",
    "5 % 3",
    "nvl(NULL, 'x')",
    "coalesce(NULL, 1)",
    "md5('a')",
    "sha2('a', 256)",
    "hash('a')",
    "xxhash64('a')",
    "split('a,b,c', ',')[1]",
    "format_number(1234.5, 2)",
    "cast(true as string)",
    "regexp_extract('abc', '([0-9]+)', 1)",
    "regexp_extract('2024-03-07', '([0-9]+)-([0-9]+)', 2)",
    "format_number(1234567.891, 2)",
    "format_number(0.125, 2)",
    "format_number(999.995, 2)",
    "format_number(-1234.5, 0)",
    "format_number(-0.001, 2)",
    "hash(1)",
    "hash('hello world')",
    "hash('a', 1)",
    "hash(NULL)",
    "hash(true)",
    "hash(date'2024-03-07')",
    "hash(cast(7 as bigint))",
    "hash(cast(1 as int))",
    "try_divide(7, 2)",
    "try_divide(1, 0)",
    "startswith('abc', 'ab')",
    "endswith('abc', 'x')",
    "dayofweek(date'2024-03-07')",
    "weekofyear(date'2024-01-01')",
    "try_to_date('2024-13-01')",
    "try_to_date('03/07/2024', 'MM/dd/yyyy')",
    "7 div 2 + 1",
    "-7 div 2",
    "cast(17 as bigint) div 5 * 2",
    "'abc' rlike 'b'",
    "'abc' not rlike '^b'",
    "'2024-03' regexp '^[0-9]{4}-[0-9]{2}$'",
    "NULL rlike 'a'",
    "7.9 div 2.5",
    "div(-9, 4)",
];

/// Where Sluice's answer differs from PySpark's today, measured by the test below and
/// kept exact, so that a fix or a new difference is noticed. The example jobs use none
/// of these. (`regexp_replace`, `date_format`, `to_date`, `date_add`, `year` and integer
/// `/` were on this list until `sluice_jobs::spark_compat` fixed them; `regexp_extract`,
/// `format_number` and `hash` until `spark_added` added them.)
const KNOWN_GAPS: &[&str] = &[
    // Missing functions.
    "bround(2.5)",
    // Spark syntax DataFusion reads differently: `SUBSTR`/`SUBSTRING` are SQL syntax
    // planned by DataFusion's own planner (a negative position does not count from the
    // end); arrays index from 1. (`RLIKE` and `DIV` were here until `sluice_jobs::sql`.)
    "substr('2024-03-07', -2)",
    "substring('2024-03-07', -2)",
    "split('a,b,c', ',')[1]",
    // `2.5` is a double literal here and a decimal in Spark, so `round` prints `3.0`;
    // `1` is a BIGINT literal here and an INT in Spark, so `hash` hashes 8 bytes, not 4
    // (`hash(cast(1 as int))` agrees).
    "round(2.5)",
    "round(-2.5)",
    "hash(1)",
    "hash('a', 1)",
];

/// Each expression in a Sluice session, as text (`ERROR` when refused).
async fn sluice_values(expressions: &[&str]) -> Vec<Option<String>> {
    let stores = sluice_jobs::ObjectStores::new(Default::default());
    let state = sluice_jobs::session::session_state(
        sluice_jobs::session::default_session_config(),
        &stores,
    )
    .unwrap();
    let ctx = datafusion::prelude::SessionContext::new_with_state(state);
    let mut values = Vec::new();
    for expression in expressions {
        let query = format!("SELECT CAST(({expression}) AS STRING) AS v");
        let value = match sluice_jobs::sql::query(&ctx, &query, Default::default()).await {
            Ok(frame) => match frame.collect().await {
                Ok(batches) => {
                    let column = datafusion::arrow::compute::cast(
                        batches[0].column(0),
                        &datafusion::arrow::datatypes::DataType::Utf8,
                    )
                    .unwrap();
                    let text = column.as_string::<i32>();
                    (!text.is_null(0)).then(|| text.value(0).to_owned())
                }
                Err(_) => Some("ERROR".to_owned()),
            },
            Err(_) => Some("ERROR".to_owned()),
        };
        values.push(value);
    }
    values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spark_functions_give_pysparks_answers_except_the_known_gaps() {
    let _serial = common::one_cluster_at_a_time().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("expressions.json");
    std::fs::write(&file, serde_json::to_vec(EXPRESSIONS).unwrap()).unwrap();
    let spark = common::pyspark(&["eval", file.to_str().unwrap()]);
    let theirs: Vec<Option<String>> = serde_json::from_value(spark["results"].clone()).unwrap();
    let ours = sluice_values(EXPRESSIONS).await;
    let mut gaps = Vec::new();
    let mut report = String::new();
    for ((expression, spark), sluice) in EXPRESSIONS.iter().zip(&theirs).zip(&ours) {
        if spark != sluice {
            gaps.push(*expression);
            report.push_str(&format!(
                "\n  {expression}: spark {spark:?}, sluice {sluice:?}"
            ));
        }
    }
    let mut known = KNOWN_GAPS.to_vec();
    known.sort();
    gaps.sort();
    assert_eq!(gaps, known, "measured differences:{report}");
}
