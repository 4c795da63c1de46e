//! Every cleansing step, masking method and row rule over a small landed file whose
//! right answers are written out by hand, run in one process through the same write
//! operator the executors run: valid rows, quarantined rows with their rules, counts.

use std::collections::BTreeMap;
use std::path::Path;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::physical_plan::collect;
use sluice_jobs::quality::DqOutcome;
use sluice_jobs::{
    Compression, JobDefinition, PreparedJob, SinkSpec, TaskReport, WriteSpec, WriteTask, write_plan,
};

const LANDED: &str = r#"id,name,state,code,filled,amount,payer,born,zip,note
1,  ann   SMITH ,texas,AB-12,2024-01-05,"$1,234.50",Aetna Inc,1980-06-15,02134-1234,x
2,bob jones,CA,ab12,01/31/2024,(12.50),aetna,1975-02-01,90210,N/A
3,N/A,ny,XY-99,31-Jan-2024,7,UHC,1990-12-31,10001,
4,dan,tx,AB-12,2024-13-45,abc,Nobody,2000-01-01,73301,y
4,dan,tx,AB-12,2024-02-01,5,UHC,2000-01-01,73301,z
5,eve,ZZ,AB-12,2024-02-02,200,Cigna,1999-09-09,12345,UNKNOWN
"#;

const ALIASES: &str = "alias,payer_id\nAETNA INC,P1\nAetna,P1\nUHC,P2\nCigna,P3\n";

const JOB: &str = r#"apiVersion: sluice/v1
name: every_step
params:
  key: {type: string, required: true}
sources:
  claims: {format: csv, path: landing/claims.csv}
  aliases: {format: csv, path: landing/aliases.csv}
input: claims
steps:
  - nulls: {values: ["N/A", "unknown"]}
  - collapse_whitespace: [name]
  - case: {name: title, code: upper}
  - regex_replace: {column: code, pattern: "[^A-Z0-9]", replacement: ""}
  - derive: {column: state, expr: "us_state(state)"}
  - parse:
      filled: {type: date, formats: [yyyy-MM-dd, MM/dd/yyyy, dd-MMM-yyyy]}
      amount: {type: "decimal(10,2)", rule: amount_is_a_number}
      born: date
  - standardize: {column: payer, reference: aliases, key: alias, value: payer_id, into: payer_id}
  - mask:
      key: "{{key}}"
      columns: {name: hmac_sha256, note: redact, born: generalize_month, zip: zip3}
quality:
  row_key: [id]
  rules:
    - {name: one_per_id, unique: {columns: [id]}}
    - {name: known_state, accepted_values: {column: state, values: [TX, CA, NY]}}
    - {name: code_shape, regex: {column: code, pattern: "^AB12$"}, action: warn}
    - {name: amount_range, range: {column: amount, min: -100, max: 1000}}
    - {name: named, expr: "name IS NOT NULL"}
    - {name: payer_mapped, not_null: [payer_id]}
  quarantine: {path: quarantine}
outputs:
  - {name: claims, path: staging}
"#;

fn rows(dir: &Path) -> Vec<RecordBatch> {
    let mut batches = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(folder) = stack.pop() {
        for entry in std::fs::read_dir(&folder).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                let reader =
                    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                        std::fs::File::open(&path).unwrap(),
                    )
                    .unwrap()
                    .build()
                    .unwrap();
                batches.extend(reader.map(Result::unwrap));
            }
        }
    }
    batches
}

/// Rows by id, each a map of column to its text (lists joined with `|`).
fn by_id(batches: &[RecordBatch]) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut rows: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for batch in batches {
        let schema = batch.schema();
        for row in 0..batch.num_rows() {
            let mut values = BTreeMap::new();
            for (index, field) in schema.fields().iter().enumerate() {
                let column = batch.column(index);
                let text = match column.data_type() {
                    DataType::List(_) => {
                        let list = column.as_list::<i32>().value(row);
                        list.as_string::<i32>()
                            .iter()
                            .flatten()
                            .collect::<Vec<_>>()
                            .join("|")
                    }
                    _ => {
                        let text = cast(column, &DataType::Utf8).unwrap();
                        let text = text.as_string::<i32>();
                        if text.is_null(row) {
                            "null".into()
                        } else {
                            text.value(row).to_owned()
                        }
                    }
                };
                values.insert(field.name().clone(), text);
            }
            let id = values["id"].clone();
            let key = if rows.contains_key(&id) {
                format!("{id}b")
            } else {
                id
            };
            rows.insert(key, values);
        }
    }
    rows
}

#[tokio::test]
async fn every_cleansing_step_rule_and_mask_gives_the_answer_worked_out_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("landing")).unwrap();
    std::fs::write(dir.path().join("landing/claims.csv"), LANDED).unwrap();
    std::fs::write(dir.path().join("landing/aliases.csv"), ALIASES).unwrap();
    let key_file = dir.path().join("mask.key");
    std::fs::write(&key_file, "a-test-key-of-enough-bytes\n").unwrap();

    let definition = JobDefinition::from_yaml(JOB, "every_step.yaml").unwrap();
    let params = BTreeMap::from([("key".to_owned(), format!("file:{}", key_file.display()))]);
    let prepared = PreparedJob::prepare(definition, "every_step.yaml", &params).unwrap();
    let ctx = prepared
        .session_context(&sluice_jobs::ObjectStores::new(Default::default()))
        .unwrap();
    let compiled = prepared.compile(&ctx, dir.path()).await.unwrap();
    let quality = compiled.quality.clone().unwrap();
    let quarantine = compiled.quarantine.clone().unwrap();
    let output = &compiled.outputs[0];

    let spec = |name: &str, location: &str| WriteSpec {
        output: name.into(),
        location: location.into(),
        run_id: "r-test".into(),
        partition_by: Vec::new(),
        target_file_size: 1 << 20,
        compression: Compression::Snappy,
    };
    let task = WriteTask {
        run_id: "r-test".into(),
        sinks: vec![
            SinkSpec {
                spec: spec("claims", &output.location),
                columns: output.columns.clone(),
                quarantine: false,
            },
            SinkSpec {
                spec: spec("quarantine", &quarantine.location),
                columns: quarantine.columns.clone(),
                quarantine: true,
            },
        ],
        quality: Some(quality.plan.clone()),
    };
    let physical = ctx
        .state()
        .create_physical_plan(&output.plan)
        .await
        .unwrap();
    let manifests = collect(write_plan(physical, task, 2).unwrap(), ctx.task_ctx())
        .await
        .unwrap();
    let mut stats = sluice_jobs::quality::QualityStats::new(&quality.plan);
    for report in manifests
        .iter()
        .flat_map(|b| TaskReport::from_manifest(b).unwrap())
    {
        stats.merge(&report.quality.unwrap(), 5);
    }
    let report = quality.report(&stats);

    let failed: BTreeMap<&str, u64> = report
        .rules
        .iter()
        .map(|r| (r.name.as_str(), r.failed))
        .collect();
    assert_eq!(
        failed,
        BTreeMap::from([
            ("filled_parses", 1),      // 2024-13-45
            ("amount_is_a_number", 1), // abc
            ("born_parses", 0),
            ("one_per_id", 2),    // both rows of id 4
            ("known_state", 0),   // ZZ is no state: NULL, not checked
            ("code_shape", 1),    // XY99
            ("amount_range", 1),  // 1234.50
            ("named", 1),         // N/A became NULL
            ("payer_mapped", 1),  // Nobody
            ("malformed_row", 0), // every line has as many fields as the header
        ])
    );
    assert_eq!(report.outcome, DqOutcome::PassedWithIssues);
    assert_eq!((report.rows_checked, report.rows_quarantined), (6, 4));
    assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
    let filled = report
        .rules
        .iter()
        .find(|r| r.name == "filled_parses")
        .unwrap();
    assert_eq!(filled.samples, ["filled=2024-13-45, id=4"]);
    let named = report.rules.iter().find(|r| r.name == "named").unwrap();
    assert_eq!(named.samples, ["name=<masked>, id=3"]);

    let valid = by_id(&rows(&dir.path().join("staging/_temporary/r-test")));
    let quarantined = by_id(&rows(&dir.path().join("quarantine/_temporary/r-test")));
    assert_eq!(valid.keys().collect::<Vec<_>>(), ["2", "5"]);
    assert_eq!(
        quarantined.keys().collect::<Vec<_>>(),
        ["1", "3", "4", "4b"]
    );

    let bob = &valid["2"];
    assert_eq!(bob["state"], "CA");
    assert_eq!(bob["code"], "AB12");
    assert_eq!(bob["filled"], "2024-01-31");
    assert_eq!(bob["amount"], "-12.50");
    assert_eq!(bob["payer_id"], "P1");
    assert_eq!(bob["note"], "null", "N/A is null, and redact keeps null");
    assert_eq!(bob["born"], "1975-02-01");
    assert_eq!(bob["zip"], "902");
    // The name was title-cased before it was hashed; the hash is keyed and hex.
    assert_eq!(bob["name"].len(), 64);
    let eve = &valid["5"];
    assert_eq!(eve["state"], "null");
    assert_eq!(eve["note"], "null", "UNKNOWN matches `unknown` in any case");
    assert_eq!(eve["born"], "1999-09-01");

    let ann = &quarantined["1"];
    assert_eq!(ann["_dq_rules"], "amount_range");
    assert_eq!(ann["amount"], "1234.50");
    assert_eq!(ann["payer_id"], "P1");
    assert_eq!(ann["note"], "REDACTED");
    assert_eq!(ann["_dq_run_id"], "r-test");
    assert!(ann["_dq_source_file"].ends_with("landing/claims.csv"));
    assert_eq!(quarantined["3"]["_dq_rules"], "code_shape|named");
    let mut duplicates = [
        quarantined["4"]["_dq_rules"].as_str(),
        quarantined["4b"]["_dq_rules"].as_str(),
    ];
    duplicates.sort();
    assert_eq!(
        duplicates,
        [
            "amount_is_a_number|filled_parses|one_per_id|payer_mapped",
            "one_per_id"
        ]
    );
    // Same title-cased name, same key: the same hash, so masked columns still join.
    assert_eq!(quarantined["4"]["name"], quarantined["4b"]["name"]);
}
