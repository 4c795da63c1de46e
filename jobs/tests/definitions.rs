//! Reading and checking job definitions: the good examples, and every kind of bad
//! input naming the file, line and column (or field) that is wrong.

use std::collections::BTreeMap;

use sluice_jobs::{BoundParams, JobDefinition, JobError, ParamValue, Step};

const GOOD: &str = r#"apiVersion: sluice/v1
name: claims_cleanse
params:
  run_month: {type: string, required: true}
  min_quantity: {type: int, default: 1}
  as_of: {type: date, default: "2024-03-31"}
sources:
  claims:
    format: csv
    path: "{{landing}}/claims/{{run_month}}"
    csv: {header: true, delimiter: "|", null_values: ["N/A"]}
steps:
  - trim: [payer]
  - cast: {quantity: int, paid_amount: "decimal(12,2)"}
  - filter: "quantity >= $min_quantity"
  - dedupe: {keys: [claim_id], order_by: ["adjudicated_at desc"]}
outputs:
  - name: claims
    path: staging/claims
    partition_by: [fill_month]
"#;

fn parse(yaml: &str) -> Result<JobDefinition, JobError> {
    JobDefinition::from_yaml(yaml, "job.yaml")
}

fn error_of(yaml: &str) -> String {
    parse(yaml).unwrap_err().to_string()
}

#[test]
fn the_example_jobs_parse() {
    for path in [
        "examples/claims_cleanse.yaml",
        "examples/claims_monthly.yaml",
        "examples/claims_quality.yaml",
    ] {
        let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
        let definition = JobDefinition::from_file(&full).unwrap();
        assert!(!definition.outputs.is_empty(), "{path}");
    }
}

#[test]
fn a_template_naming_an_undeclared_param_is_an_error() {
    // GOOD uses {{landing}}, which it does not declare.
    let err = error_of(GOOD);
    assert!(
        err.starts_with("job.yaml:9:5: sources.claims.path"),
        "{err}"
    );
    assert!(
        err.contains("`{{landing}}` names no declared param"),
        "{err}"
    );
}

fn good() -> String {
    GOOD.replace(
        "params:\n",
        "params:\n  landing: {type: path, default: /data/landing}\n",
    )
}

#[test]
fn a_good_definition_reads_with_its_steps_in_order() {
    let definition = parse(&good()).unwrap();
    let kinds: Vec<&str> = definition.steps.iter().map(|s| s.value.kind()).collect();
    assert_eq!(kinds, ["trim", "cast", "filter", "dedupe"]);
    assert!(matches!(&definition.steps[2].value, Step::Filter(f) if f.contains("$min_quantity")));
    assert_eq!(definition.input_source(), Some("claims"));
}

#[test]
fn malformed_yaml_names_file_line_and_column() {
    let err = error_of("apiVersion: sluice/v1\nname: [unclosed\n");
    assert!(err.starts_with("job.yaml:"), "{err}");
    let position: Vec<&str> = err.splitn(4, ':').collect();
    assert!(position[1].parse::<u32>().unwrap() >= 2, "{err}");
}

#[test]
fn unknown_fields_are_errors_with_their_position() {
    let yaml = good().replace(
        "    partition_by: [fill_month]",
        "    partition_by: [fill_month]\n    partitoin_by: [x]",
    );
    let err = error_of(&yaml);
    assert!(err.starts_with("job.yaml:22:5"), "{err}");
    assert!(err.contains("partitoin_by"), "{err}");
}

#[test]
fn wrong_types_are_errors_with_their_position() {
    let yaml = good().replace("partition_by: [fill_month]", "partition_by: 12");
    let err = error_of(&yaml);
    assert!(err.starts_with("job.yaml:21:"), "{err}");
}

#[test]
fn an_unknown_step_is_an_error() {
    let yaml = good().replace("  - trim: [payer]", "  - scrub: [payer]");
    let err = error_of(&yaml);
    assert!(err.starts_with("job.yaml:14:"), "{err}");
    assert!(err.contains("scrub"), "{err}");
}

#[test]
fn a_wrong_api_version_is_an_error() {
    let err = error_of(&good().replace("sluice/v1", "sluice/v9"));
    assert!(err.starts_with("job.yaml:1:"), "{err}");
}

#[test]
fn a_bad_cast_type_names_the_step_and_column() {
    let err = error_of(&good().replace("quantity: int", "quantity: integr"));
    assert!(err.contains("steps[1].cast"), "{err}");
    assert!(err.contains("column `quantity`"), "{err}");
    assert!(err.starts_with("job.yaml:15:5"), "{err}");
}

#[test]
fn several_sources_need_an_input() {
    let yaml = good().replace(
        "sources:\n",
        "sources:\n  products: {format: csv, path: /data/products}\n",
    );
    let err = error_of(&yaml);
    assert!(err.contains("input"), "{err}");
    assert!(err.contains("claims, products"), "{err}");
}

#[test]
fn duplicate_output_names_are_errors() {
    let yaml = format!("{}  - name: claims\n    path: staging/other\n", good());
    let err = error_of(&yaml);
    assert!(err.contains("outputs[1].name"), "{err}");
}

fn bind(raw: &[(&str, &str)]) -> Result<BoundParams, JobError> {
    let definition = parse(&good()).unwrap();
    let raw: BTreeMap<String, String> = raw
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    BoundParams::bind(&definition, &raw)
}

#[test]
fn params_are_typed_and_defaulted() {
    let params = bind(&[("run_month", "2024-01")]).unwrap();
    assert_eq!(params.get("min_quantity"), Some(&ParamValue::Int(1)));
    assert_eq!(
        params.get("as_of"),
        Some(&ParamValue::Date(
            chrono::NaiveDate::from_ymd_opt(2024, 3, 31).unwrap()
        ))
    );
    assert_eq!(
        params
            .render("{{landing}}/claims/{{run_month}}", "path")
            .unwrap(),
        "/data/landing/claims/2024-01"
    );
}

#[test]
fn a_missing_required_param_is_an_error() {
    let err = bind(&[]).unwrap_err().to_string();
    assert_eq!(
        err,
        "param `run_month`: is required and was not given (--param name=value)"
    );
}

#[test]
fn a_param_of_the_wrong_type_is_an_error() {
    let err = bind(&[("run_month", "2024-01"), ("min_quantity", "lots")])
        .unwrap_err()
        .to_string();
    assert_eq!(err, "param `min_quantity`: `lots` is not an int");
}

#[test]
fn an_undeclared_param_is_an_error() {
    let err = bind(&[("run_month", "2024-01"), ("run_mnth", "x")])
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("param `run_mnth`: job `claims_cleanse` declares no such param"),
        "{err}"
    );
}

#[test]
fn the_json_schema_describes_definitions() {
    let schema = sluice_jobs::json_schema();
    let text = schema.to_string();
    assert!(text.contains("apiVersion"), "{text}");
    assert!(text.contains("partition_by"));
    assert!(text.contains("dedupe"));
}

const QUALITY: &str = r#"apiVersion: sluice/v1
name: checked
params:
  run_date: {type: date, default: "2024-03-31"}
sources:
  claims: {format: csv, path: landing/claims}
  payers: {format: csv, path: landing/payers}
input: claims
steps:
  - parse: {fill_date: {type: date, formats: [MM/dd/yyyy]}}
quality:
  rules:
    - name: known_payer
      referential: {column: payer, reference: payers, key: payer}
    - name: fresh
      freshness: {column: fill_date, max_age_days: 30, as_of: "$run_date"}
  quarantine: {path: quarantine}
outputs:
  - {name: claims, path: staging/claims}
"#;

#[test]
fn quality_rules_are_checked_before_anything_runs() {
    parse(QUALITY).unwrap();
    let cases = [
        (
            QUALITY.replace("      referential: {column: payer, reference: payers, key: payer}\n",
                "      referential: {column: payer, reference: payers, key: payer}\n      not_null: [payer]\n"),
            "quality.rules[0]: rule `known_payer` names several checks (not_null, referential)",
        ),
        (
            QUALITY.replace("reference: payers", "reference: payerz"),
            "quality.rules[0]: reference `payerz` is not one of the sources (claims, payers)",
        ),
        (
            QUALITY.replace("  quarantine: {path: quarantine}\n", ""),
            "rules quarantine rows, but the job has no `quality.quarantine` output",
        ),
        (
            QUALITY.replace("as_of: \"$run_date\"", "as_of: \"$tomorrow\""),
            "as_of `$tomorrow` names no declared date param",
        ),
        (
            QUALITY.replace("formats: [MM/dd/yyyy]", "formats: [MM/dd/yyyy QQ]"),
            "`QQ` is not a supported Spark datetime field",
        ),
        (
            QUALITY.replace("- name: fresh", "- name: fresh\n      action: quarantine"),
            "checks the whole dataset, so it can fail or warn but not quarantine rows",
        ),
        (
            QUALITY.replace("name: fresh", "name: known_payer"),
            "rule name `known_payer` is used twice",
        ),
        (
            QUALITY.replace(
                "  - parse: {fill_date: {type: date, formats: [MM/dd/yyyy]}}",
                "  - mask: {key: \"my-secret-key-in-yaml\", columns: {patient_id: tokenize}}",
            ),
            "a masking key is given by reference, `env:NAME` or `file:/path`, never by value",
        ),
    ];
    for (yaml, expected) in cases {
        let err = error_of(&yaml);
        assert!(err.contains(expected), "expected `{expected}` in: {err}");
        assert!(err.starts_with("job.yaml"), "{err}");
    }
}
