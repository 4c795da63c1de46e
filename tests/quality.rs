//! Cleansing, data quality and masking end to end: `sluice datagen claims` data with
//! defects injected at known rates, the example cleansing job on a real cluster
//! (scheduler + two executor processes), and every count checked against the
//! generator's ground truth — not against numbers Sluice computed.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::{Cluster, example, read_partitioned, status};
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use sluice_jobs::datagen::{ClaimsOptions, GroundTruth, generate_claims};
use sluice_proto::v1::RunStatus;

const MASK_KEY: &str = "quality-test-key-0123456789abcdef";

fn params(dir: &Path, staging: &str) -> Vec<(&'static str, String)> {
    vec![
        ("landing", dir.join("landing").display().to_string()),
        ("staging", dir.join(staging).display().to_string()),
        ("run_date", "2024-03-31".into()),
    ]
}

/// What each rule of the example job must count, from the ground truth.
fn expected_failures(truth: &GroundTruth) -> BTreeMap<&'static str, u64> {
    let d = |name: &str| truth.defects[name];
    BTreeMap::from([
        ("fill_date_parses", d("unparseable_fill_date")),
        ("patient_birth_date_parses", 0),
        ("adjudicated_at_parses", 0),
        ("quantity_parses", 0),
        ("days_supply_parses", 0),
        ("paid_amount_parses", 0),
        ("patient_id_present", d("null_patient_id")),
        ("npi_check_digit", d("bad_npi_check_digit")),
        // An NPI with a bad check digit is not a known prescriber either.
        (
            "prescriber_known",
            d("bad_npi_check_digit") + d("unknown_prescriber"),
        ),
        ("ndc_valid", d("malformed_ndc")),
        ("paid_amount_in_range", d("out_of_range_paid_amount")),
        ("payer_known", d("unknown_payer")),
        ("quantity_present", d("missing_quantity")),
        ("one_row_per_claim", d("duplicate_claim")),
        ("state_code", 0),
        ("claim_id_format", 0),
        ("enough_rows", 0),
        ("recent_fills", 0),
        // The generator writes well-formed CSV: every line has the header's fields.
        ("malformed_row", 0),
    ])
}

/// Every text value of every column (lists flattened), for leak checks.
fn text_values(batches: &[RecordBatch]) -> Vec<String> {
    let mut values = Vec::new();
    for batch in batches {
        for column in batch.columns() {
            let column = match column.data_type() {
                DataType::List(_) => column.as_list::<i32>().values().clone(),
                _ => column.clone(),
            };
            let Ok(text) = cast(&column, &DataType::Utf8) else {
                continue;
            };
            values.extend(text.as_string::<i32>().iter().flatten().map(str::to_owned));
        }
    }
    values
}

fn column_strings(batches: &[RecordBatch], name: &str) -> Vec<Option<String>> {
    let mut values = Vec::new();
    for batch in batches {
        let column = batch.column_by_name(name).unwrap();
        let text = cast(column, &DataType::Utf8).unwrap();
        values.extend(text.as_string::<i32>().iter().map(|v| v.map(str::to_owned)));
    }
    values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cleansing_job_counts_every_defect_the_generator_injected() {
    let _serial = common::one_cluster_at_a_time().await;
    let cluster =
        Cluster::start_with_env(2, vec![("SLUICE_MASK_KEY".to_owned(), MASK_KEY.to_owned())]).await;
    let data = cluster.dir.path().join("lake");
    let truth = generate_claims(
        &data,
        &ClaimsOptions {
            rows: 30_000,
            seed: 21,
            months: vec![1, 2, 3],
            defect_rate: 0.05,
            duplicate_rate: 0.02,
        },
    )
    .unwrap();
    assert!(truth.defects.values().all(|&count| count > 20), "{truth:?}");

    let run_id = cluster
        .submit(
            &example("claims_quality.yaml"),
            "claims_quality.yaml",
            &params(&data, "staging"),
        )
        .await
        .unwrap();
    let run = cluster.wait_final(&run_id).await;
    assert_eq!(
        status(&run),
        RunStatus::Succeeded,
        "{run:?}{}",
        cluster.logs()
    );

    // The report: every count equals the ground truth.
    let dq = run.data_quality.clone().unwrap();
    assert_eq!(dq.outcome, "passed_with_issues");
    assert_eq!(dq.rows_checked, truth.rows);
    assert_eq!(dq.rows_quarantined, truth.quarantined_rows);
    assert_eq!(dq.rows_valid, truth.valid_rows);
    assert_eq!(run.rows_quarantined, truth.quarantined_rows);
    let counted: BTreeMap<&str, u64> = dq
        .rules
        .iter()
        .map(|rule| (rule.name.as_str(), rule.failed))
        .collect();
    assert_eq!(counted, expected_failures(&truth));
    let patient_rule = dq
        .rules
        .iter()
        .find(|r| r.name == "patient_id_present")
        .unwrap();
    assert!(!patient_rule.samples.is_empty());
    assert!(
        patient_rule
            .samples
            .iter()
            .all(|s| s.contains("patient_id=<masked>") && s.contains("claim_id=C")),
        "{:?}",
        patient_rule.samples
    );

    // Nothing lost, nothing doubled: valid + quarantined = the landed rows.
    let staging = data.join("staging");
    let valid: Vec<RecordBatch> = read_partitioned(&staging.join("claims"))
        .into_values()
        .flatten()
        .collect();
    let quarantined: Vec<RecordBatch> = read_partitioned(&staging.join("quarantine/claims"))
        .into_values()
        .flatten()
        .collect();
    let rows = |batches: &[RecordBatch]| batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
    assert_eq!(rows(&valid), truth.valid_rows);
    assert_eq!(rows(&quarantined), truth.quarantined_rows);
    assert_eq!(rows(&valid) + rows(&quarantined), truth.rows);
    let claim_ids: BTreeSet<String> = column_strings(&valid, "claim_id")
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(claim_ids.len() as u64, truth.valid_rows, "a claim id twice");

    // Quarantined rows name the rules they broke, the run and their file.
    let mut per_rule: BTreeMap<String, u64> = BTreeMap::new();
    for batch in &quarantined {
        let rules = batch.column_by_name("_dq_rules").unwrap().as_list::<i32>();
        for row in 0..batch.num_rows() {
            let broke = rules.value(row);
            let broke = broke.as_string::<i32>();
            assert!(!broke.is_empty(), "a quarantined row without a rule");
            for name in broke.iter().flatten() {
                *per_rule.entry(name.to_owned()).or_default() += 1;
            }
        }
    }
    for (rule, expected) in expected_failures(&truth) {
        if expected > 0 {
            assert_eq!(per_rule.get(rule).copied().unwrap_or(0), expected, "{rule}");
        }
    }
    assert!(
        column_strings(&quarantined, "_dq_run_id")
            .iter()
            .all(|id| id.as_deref() == Some(run_id.as_str()))
    );
    let files: BTreeSet<String> = column_strings(&quarantined, "_dq_source_file")
        .into_iter()
        .map(|file| file.unwrap())
        .collect();
    assert!(
        files
            .iter()
            .all(|f| f.contains("landing/claims/claims_2024_0")),
        "{files:?}"
    );
    assert_eq!(files.len(), 3, "{files:?}");

    // Cleansing absorbed the noise: states are codes, NDCs 5-4-2, payers standardized.
    let states: BTreeSet<String> = column_strings(&valid, "state")
        .into_iter()
        .flatten()
        .collect();
    let codes: BTreeSet<String> = ["CA", "TX", "NY", "FL", "PA", "IL", "OH", "GA", "NC", "MI"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    assert_eq!(states, codes);
    let payers: BTreeSet<String> = column_strings(&valid, "payer_id")
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(payers.len(), sluice_jobs::datagen::PAYER_ALIASES.len());
    let ndcs: BTreeSet<String> = column_strings(&valid, "ndc")
        .into_iter()
        .flatten()
        .collect();
    let products: BTreeSet<String> = sluice_jobs::datagen::PRODUCTS
        .iter()
        .map(|(ndc, _, _)| (*ndc).to_owned())
        .collect();
    assert_eq!(ndcs, products);

    // Masking: tokens, deterministic (one per patient), and no raw id anywhere.
    let tokens: BTreeSet<String> = column_strings(&valid, "patient_id")
        .into_iter()
        .chain(column_strings(&quarantined, "patient_id"))
        .flatten()
        .collect();
    assert!(
        tokens
            .iter()
            .all(|t| t.starts_with("tok_") && t.len() == 28)
    );
    assert_eq!(tokens.len() as u64, truth.patients);
    let raw_patient = regex::Regex::new(r"P\d{7}").unwrap();
    for value in text_values(&valid).iter().chain(&text_values(&quarantined)) {
        assert!(
            !raw_patient.is_match(value),
            "raw patient id in output: {value}"
        );
    }
    let years: BTreeSet<String> = column_strings(&valid, "patient_birth_date")
        .into_iter()
        .flatten()
        .collect();
    assert!(years.iter().all(|d| d.ends_with("-01-01")), "{years:?}");
    let zips: BTreeSet<String> = column_strings(&valid, "patient_zip")
        .into_iter()
        .flatten()
        .collect();
    assert!(zips.iter().all(|z| z.len() == 3), "{zips:?}");

    // The report beside the outputs, and nothing of a patient in it or in any log.
    let report_path = staging.join("claims/_dq").join(format!("{run_id}.json"));
    let report_text = std::fs::read_to_string(&report_path).unwrap();
    let report: serde_json::Value = serde_json::from_str(&report_text).unwrap();
    assert_eq!(report["rows_quarantined"], truth.quarantined_rows);
    let mut logs = String::new();
    for entry in std::fs::read_dir(cluster.dir.path()).unwrap().flatten() {
        if entry.path().extension().is_some_and(|e| e == "log") {
            logs.push_str(&std::fs::read_to_string(entry.path()).unwrap());
        }
    }
    assert!(logs.contains("data quality judged"), "{logs}");
    for text in [&report_text, &logs, &format!("{run:?}")] {
        assert!(
            raw_patient.find(text).is_none(),
            "raw patient id leaked: {:?}",
            raw_patient.find(text)
        );
    }
    assert!(!logs.contains(MASK_KEY), "the masking key was logged");

    // `sluice status` shows the report.
    let shown = std::process::Command::new(common::sluice_bin())
        .args(["status", "--scheduler", &cluster.url(), &run_id])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("quality    passed with issues"), "{shown}");
    assert!(shown.contains("one_row_per_claim"), "{shown}");

    // Past a threshold the run fails with the reason, and nothing is committed.
    let strict = example("claims_quality.yaml")
        .replace("max_quarantined_percent: 10", "max_quarantined_percent: 1");
    let run_id = cluster
        .submit(&strict, "strict.yaml", &params(&data, "strict"))
        .await
        .unwrap();
    let run = cluster.wait_final(&run_id).await;
    assert_eq!(status(&run), RunStatus::Failed, "{run:?}");
    assert!(
        run.error.starts_with("data quality failed"),
        "{}",
        run.error
    );
    assert!(
        run.error.contains("max_quarantined_percent 1%"),
        "{}",
        run.error
    );
    assert_eq!(run.data_quality.unwrap().outcome, "failed");
    assert!(common::data_files(&data.join("strict")).is_empty());
    assert!(
        data.join("strict/claims/_dq")
            .join(format!("{run_id}.json"))
            .exists()
    );

    // A key the processes cannot read is refused at submission, by reference only.
    let mut missing_key = params(&data, "nokey");
    missing_key.push(("mask_key", "env:SLUICE_NO_SUCH_KEY".into()));
    let err = cluster
        .submit(
            &example("claims_quality.yaml"),
            "claims_quality.yaml",
            &missing_key,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("env:SLUICE_NO_SUCH_KEY is not set"),
        "{}",
        err.message()
    );
}
