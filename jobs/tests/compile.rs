//! Compilation of definitions into DataFusion plans over real sample files: golden
//! plans of the example jobs (refresh with `SLUICE_UPDATE_GOLDEN=1`), typed params that
//! cannot inject SQL, and errors found from the sources' schemas.

use std::collections::BTreeMap;
use std::path::Path;

use datafusion::prelude::SessionContext;
use sluice_jobs::{CompiledJob, JobDefinition, PreparedJob};

fn sample(dir: &Path) {
    sluice_jobs::datagen::write_claims(dir, 400, &[1, 2], 1).unwrap();
}

fn params(dir: &Path, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut params = BTreeMap::from([
        (
            "landing".to_owned(),
            dir.join("landing").display().to_string(),
        ),
        (
            "staging".to_owned(),
            dir.join("staging").display().to_string(),
        ),
        (
            "curated".to_owned(),
            dir.join("curated").display().to_string(),
        ),
    ]);
    for (k, v) in extra {
        params.insert(k.to_string(), v.to_string());
    }
    params
}

async fn compile(
    yaml: &str,
    params: BTreeMap<String, String>,
) -> Result<(CompiledJob, SessionContext), sluice_jobs::JobError> {
    let definition = JobDefinition::from_yaml(yaml, "job.yaml")?;
    let params: BTreeMap<_, _> = params
        .into_iter()
        .filter(|(k, _)| definition.params.contains_key(k))
        .collect();
    let prepared = PreparedJob::prepare(definition, "job.yaml", &params)?;
    let ctx = prepared.session_context(&sluice_jobs::ObjectStores::new(Default::default()))?;
    let compiled = prepared.compile(&ctx, Path::new("/")).await?;
    Ok((compiled, ctx))
}

fn example(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(name),
    )
    .unwrap()
}

/// Compares a plan with its golden file, or rewrites the file when asked to.
fn assert_golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("SLUICE_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "{} is missing; run with SLUICE_UPDATE_GOLDEN=1",
            path.display()
        )
    });
    assert_eq!(
        actual, expected,
        "the compiled plan changed; review and refresh with SLUICE_UPDATE_GOLDEN=1"
    );
}

#[tokio::test]
async fn example_plans_match_their_golden_files() {
    let dir = tempfile::tempdir().unwrap();
    sample(dir.path());
    // The monthly job reads what the cleansing job writes: stand in a parquet file.
    let staging = dir.path().join("staging/claims/fill_month=2024-01");
    std::fs::create_dir_all(&staging).unwrap();
    let ctx = SessionContext::new();
    let frame = ctx
        .sql(
            "SELECT 'C1' AS claim_id, 'P1' AS patient_id, '1003000000' AS prescriber_npi, \
             '00002-1433-80' AS ndc, DATE '2024-01-05' AS fill_date, 30 AS quantity, \
             30 AS days_supply, CAST(12.5 AS DECIMAL(12,2)) AS paid_amount, 'Aetna' AS payer, \
             'CA' AS state",
        )
        .await
        .unwrap();
    frame
        .write_parquet(
            staging.join("part-0.parquet").to_str().unwrap(),
            datafusion::dataframe::DataFrameWriteOptions::new(),
            None,
        )
        .await
        .unwrap();

    for (file, golden) in [
        ("claims_cleanse.yaml", "claims_cleanse.plan"),
        ("claims_monthly.yaml", "claims_monthly.plan"),
    ] {
        let (compiled, _) = compile(&example(file), params(dir.path(), &[]))
            .await
            .unwrap();
        let plans: Vec<String> = compiled
            .outputs
            .iter()
            .map(|output| {
                format!(
                    "output {}:\n{}\n",
                    output.name,
                    output.plan.display_indent()
                )
            })
            .collect();
        assert_golden(golden, &plans.concat());
    }
}

const BY_MONTH: &str = r#"apiVersion: sluice/v1
name: by_month
params:
  landing: {type: path, required: true}
  staging: {type: path, required: true}
  month: {type: string, required: true}
sources:
  claims: {format: csv, path: "{{landing}}/claims"}
steps:
  - filter: "substr(fill_date, 1, 7) = $month"
outputs:
  - {name: claims, path: "{{staging}}/by_month"}
"#;

async fn count_rows(month: &str) -> usize {
    let dir = tempfile::tempdir().unwrap();
    sample(dir.path());
    let (compiled, ctx) = compile(BY_MONTH, params(dir.path(), &[("month", month)]))
        .await
        .unwrap();
    let batches = ctx
        .execute_logical_plan(compiled.outputs[0].plan.clone())
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    batches.iter().map(|b| b.num_rows()).sum()
}

#[tokio::test]
async fn params_are_bound_as_values_never_pasted_into_sql() {
    assert!(count_rows("2024-01").await > 0);
    assert_eq!(count_rows("2024-01' OR '1'='1").await, 0);
}

#[tokio::test]
async fn an_unknown_column_in_an_expression_names_the_step() {
    let dir = tempfile::tempdir().unwrap();
    sample(dir.path());
    let yaml = BY_MONTH.replace("substr(fill_date, 1, 7)", "substr(fill_dat, 1, 7)");
    let err = compile(&yaml, params(dir.path(), &[("month", "2024-01")]))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.starts_with("job.yaml:10:5: steps[0].filter"), "{err}");
    assert!(err.contains("fill_dat"), "{err}");
}

#[tokio::test]
async fn a_type_error_in_an_expression_names_the_step() {
    let dir = tempfile::tempdir().unwrap();
    sample(dir.path());
    let yaml = BY_MONTH.replace(
        "  - filter: \"substr(fill_date, 1, 7) = $month\"",
        "  - derive: {column: x, expr: \"abs(payer)\"}",
    );
    let err = compile(&yaml, params(dir.path(), &[("month", "2024-01")]))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("steps[0].derive"), "{err}");
    assert!(err.contains("abs"), "{err}");
}

#[tokio::test]
async fn a_source_matching_nothing_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("landing/claims")).unwrap();
    let err = compile(BY_MONTH, params(dir.path(), &[("month", "2024-01")]))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.starts_with("source `claims`: file://"), "{err}");
    assert!(err.ends_with("matches no files"), "{err}");
}

#[tokio::test]
async fn error_if_exists_refuses_an_output_holding_data() {
    let dir = tempfile::tempdir().unwrap();
    sample(dir.path());
    let existing = dir.path().join("staging/by_month");
    std::fs::create_dir_all(&existing).unwrap();
    let yaml = BY_MONTH.replace(
        "path: \"{{staging}}/by_month\"}",
        "path: \"{{staging}}/by_month\", mode: error_if_exists}",
    );
    // An empty folder, or one holding only hidden files, holds no data.
    std::fs::write(existing.join("_SUCCESS"), b"").unwrap();
    compile(&yaml, params(dir.path(), &[("month", "2024-01")]))
        .await
        .unwrap();
    std::fs::write(existing.join("part-00000.parquet"), b"x").unwrap();
    let err = compile(&yaml, params(dir.path(), &[("month", "2024-01")]))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.starts_with("output `claims` (file://"), "{err}");
    assert!(
        err.ends_with("already holds data and the mode is error_if_exists"),
        "{err}"
    );
}

#[tokio::test]
async fn spark_null_partition_folders_read_as_null_and_partition_values_are_typed() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = SessionContext::new();
    for (folder, n) in [("day=2024-01-05", 3), ("day=__HIVE_DEFAULT_PARTITION__", 2)] {
        let path = dir.path().join("events").join(folder);
        std::fs::create_dir_all(&path).unwrap();
        ctx.sql(&format!("SELECT value AS id FROM generate_series(1, {n})"))
            .await
            .unwrap()
            .write_parquet(
                path.join("part-00000.snappy.parquet").to_str().unwrap(),
                datafusion::dataframe::DataFrameWriteOptions::new(),
                None,
            )
            .await
            .unwrap();
    }
    std::fs::write(dir.path().join("events/_SUCCESS"), b"").unwrap();
    let yaml = r#"apiVersion: sluice/v1
name: events
params:
  root: {type: path, required: true}
sources:
  events: {format: parquet, path: "{{root}}/events"}
steps:
  - sql: "SELECT day, count(*) AS n FROM input GROUP BY day ORDER BY day NULLS FIRST"
outputs:
  - {name: counts, path: "{{root}}/counts"}
"#;
    let params = BTreeMap::from([("root".to_owned(), dir.path().display().to_string())]);
    let (compiled, ctx) = compile(yaml, params).await.unwrap();
    assert_eq!(
        compiled.sources[0].partition_columns,
        [(
            "day".to_owned(),
            datafusion::arrow::datatypes::DataType::Date32
        )]
    );
    let batches = ctx
        .execute_logical_plan(compiled.outputs[0].plan.clone())
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string();
    let expected = "+------------+---+\n| day        | n |\n+------------+---+\n|            | 2 |\n| 2024-01-05 | 3 |\n+------------+---+";
    assert_eq!(text, expected);
}

/// Every file below `dir`, for "nothing was written" checks.
fn files_below(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[tokio::test]
async fn a_sql_step_is_a_query_and_ddl_dml_copy_and_set_are_refused_naming_the_step() {
    let dir = tempfile::tempdir().unwrap();
    sample(dir.path());
    let secret = dir.path().join("secret");
    std::fs::create_dir_all(&secret).unwrap();
    std::fs::write(secret.join("passwd.csv"), "user,hash\nroot,x\n").unwrap();
    let copied = dir.path().join("copied");
    let before = files_below(dir.path());
    let statements = [
        format!(
            "COPY (SELECT * FROM input) TO '{}' STORED AS CSV",
            copied.display()
        ),
        format!(
            "CREATE EXTERNAL TABLE leaked STORED AS CSV LOCATION '{}'",
            secret.display()
        ),
        "INSERT INTO input SELECT * FROM input".to_owned(),
        "SET datafusion.execution.batch_size = 1".to_owned(),
        "DROP TABLE input".to_owned(),
    ];
    for statement in statements {
        let yaml = BY_MONTH.replace(
            "  - filter: \"substr(fill_date, 1, 7) = $month\"",
            &format!("  - sql: \"{statement}\""),
        );
        let err = compile(&yaml, params(dir.path(), &[("month", "2024-01")]))
            .await
            .err()
            .unwrap_or_else(|| panic!("`{statement}` compiled"))
            .to_string();
        assert!(
            err.starts_with("job.yaml:10:5: steps[0].sql"),
            "{statement}: {err}"
        );
        assert!(
            err.contains("a sql step is one query"),
            "{statement}: {err}"
        );
        assert_eq!(files_below(dir.path()), before, "{statement} wrote a file");
    }
    // A query still runs.
    let yaml = BY_MONTH.replace(
        "  - filter: \"substr(fill_date, 1, 7) = $month\"",
        "  - sql: \"WITH m AS (SELECT * FROM input) SELECT * FROM m WHERE payer IS NOT NULL\"",
    );
    compile(&yaml, params(dir.path(), &[("month", "2024-01")]))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_param_fills_one_path_segment_unless_it_is_declared_a_path() {
    let dir = tempfile::tempdir().unwrap();
    sample(dir.path());
    let yaml = BY_MONTH.replace(
        "path: \"{{staging}}/by_month\"}",
        "path: \"{{staging}}/by_month/month={{month}}\"}",
    );
    for month in ["../../escaped", "a/b", "..", "a\\b"] {
        let err = compile(&yaml, params(dir.path(), &[("month", month)]))
            .await
            .err()
            .unwrap_or_else(|| panic!("month={month} compiled"))
            .to_string();
        assert!(err.contains("param `month`"), "{month}: {err}");
        assert!(
            err.contains("cannot fill a path segment of outputs[0].path"),
            "{month}: {err}"
        );
    }
    compile(&yaml, params(dir.path(), &[("month", "2024-01")]))
        .await
        .unwrap();
    // A `path` param holds a location, but never climbs out of one.
    let mut climbing = params(dir.path(), &[("month", "2024-01")]);
    climbing.insert(
        "staging".into(),
        format!("{}/../elsewhere", dir.path().display()),
    );
    let err = compile(&yaml, climbing).await.err().unwrap().to_string();
    assert!(err.contains("param `staging`"), "{err}");
    assert!(err.contains("no `..` segments"), "{err}");
    assert!(!dir.path().join("staging").exists());
}

#[tokio::test]
async fn keyed_functions_run_only_in_mask_steps() {
    let dir = tempfile::tempdir().unwrap();
    sample(dir.path());
    let key = dir.path().join("mask.key");
    std::fs::write(&key, "0123456789abcdef0123456789abcdef").unwrap();
    let key = format!("file:{}", key.display());
    let steps = [
        format!("  - derive: {{column: t, expr: \"tokenize(payer, '{key}')\"}}"),
        format!("  - filter: \"hmac_sha256(payer, '{key}') <> ''\""),
        format!(
            "  - sql: \"SELECT * FROM input WHERE payer IN (SELECT payer FROM input WHERE tokenize(payer, '{key}') = 'tok_0')\""
        ),
    ];
    for step in steps {
        let yaml = BY_MONTH.replace("  - filter: \"substr(fill_date, 1, 7) = $month\"", &step);
        let err = compile(&yaml, params(dir.path(), &[("month", "2024-01")]))
            .await
            .err()
            .unwrap_or_else(|| panic!("{step} compiled"))
            .to_string();
        assert!(err.starts_with("job.yaml:10:5: steps[0]."), "{step}: {err}");
        assert!(err.contains("runs only in a mask step"), "{step}: {err}");
    }
    // The mask step itself tokenizes.
    let masked = BY_MONTH.replace(
        "  - filter: \"substr(fill_date, 1, 7) = $month\"",
        &format!("  - mask: {{key: \"{key}\", columns: {{payer: tokenize}}}}"),
    );
    compile(&masked, params(dir.path(), &[("month", "2024-01")]))
        .await
        .unwrap();
}
