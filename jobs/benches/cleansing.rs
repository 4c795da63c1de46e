//! Micro-benchmarks of the hottest code Sluice owns, in rows per second: the cleansing
//! and masking functions over a column of generated landing claims (as DataFusion calls
//! them, one Arrow array at a time), and the write tasks' data-quality evaluation over a
//! batch of rule flags.
//!
//! `cargo bench -p sluice-jobs --bench cleansing` (Criterion; reports in
//! `$CARGO_TARGET_DIR/criterion`).

// A benchmark's setup fails loudly rather than measuring the wrong thing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use datafusion::arrow::array::{ArrayRef, BooleanArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::{ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF};
use datafusion::scalar::ScalarValue;
use sluice_jobs::RuleAction;
use sluice_jobs::datagen::{ClaimsOptions, LANDED_CLAIMS_HEADER, generate_claims};
use sluice_jobs::quality::{QualityPlan, QualityStats, RowRule, SampleColumn};

const ROWS: usize = 65_536;

/// The landed claims' columns as text, as the CSV scan hands them to the functions.
fn landed_columns() -> Vec<(String, ArrayRef)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = ClaimsOptions {
        rows: ROWS,
        months: vec![1],
        ..ClaimsOptions::default()
    };
    generate_claims(dir.path(), &options).expect("generated claims");
    let file = std::fs::read_dir(dir.path().join("landing/claims"))
        .expect("claims folder")
        .next()
        .expect("a claims file")
        .expect("a claims file")
        .path();
    let text = std::fs::read_to_string(file).expect("claims file");
    let names: Vec<&str> = LANDED_CLAIMS_HEADER.split(',').collect();
    let mut columns: Vec<Vec<String>> = vec![Vec::new(); names.len()];
    for line in text.lines().skip(1) {
        for (index, field) in csv_fields(line).into_iter().enumerate().take(names.len()) {
            columns[index].push(field);
        }
    }
    names
        .into_iter()
        .zip(columns)
        .map(|(name, values)| {
            (
                name.to_owned(),
                Arc::new(StringArray::from(values)) as ArrayRef,
            )
        })
        .collect()
}

/// One CSV line's fields (double quotes, `""` escapes).
fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                fields.last_mut().expect("a field").push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(String::new()),
            (c, _) => fields.last_mut().expect("a field").push(c),
        }
    }
    fields
}

fn column<'a>(columns: &'a [(String, ArrayRef)], name: &str) -> &'a ArrayRef {
    &columns
        .iter()
        .find(|(n, _)| n == name)
        .expect("a landed column")
        .1
}

fn function(name: &str) -> Arc<ScalarUDF> {
    let mut all = sluice_jobs::functions::sluice_scalar_functions();
    all.extend(sluice_jobs::functions::spark_compat_functions());
    all.into_iter()
        .find(|f| f.name() == name)
        .unwrap_or_else(|| panic!("no function `{name}`"))
}

/// Calls a function over an array, with literal arguments after it, as DataFusion does.
fn call(udf: &ScalarUDF, input: &ArrayRef, literals: &[ScalarValue]) -> ArrayRef {
    let mut args = vec![ColumnarValue::Array(Arc::clone(input))];
    let mut fields = vec![Arc::new(Field::new("v", DataType::Utf8, true))];
    for literal in literals {
        args.push(ColumnarValue::Scalar(literal.clone()));
        fields.push(Arc::new(Field::new("l", literal.data_type(), true)));
    }
    let mut scalars: Vec<Option<&ScalarValue>> = vec![None];
    scalars.extend(literals.iter().map(Some));
    let return_field = udf
        .return_field_from_args(ReturnFieldArgs {
            arg_fields: &fields,
            scalar_arguments: &scalars,
        })
        .expect("return field");
    let result = udf
        .invoke_with_args(ScalarFunctionArgs {
            args,
            arg_fields: fields,
            number_rows: input.len(),
            return_field,
            config_options: Arc::new(ConfigOptions::default()),
        })
        .expect("function result");
    match result {
        ColumnarValue::Array(array) => array,
        ColumnarValue::Scalar(value) => value.to_array_of_size(input.len()).expect("array"),
    }
}

fn functions(c: &mut Criterion) {
    let columns = landed_columns();
    let key_dir = tempfile::tempdir().expect("temp dir");
    let key_file = key_dir.path().join("mask.key");
    std::fs::write(&key_file, "bench-mask-key-0123456789abcdef").expect("key written");
    let key = ScalarValue::Utf8(Some(format!("file:{}", key_file.display())));
    let formats: Vec<ScalarValue> = ["yyyy-MM-dd", "MM/dd/yyyy", "dd-MMM-yyyy"]
        .into_iter()
        .map(|pattern| ScalarValue::Utf8(Some(pattern.into())))
        .collect();
    let cases: Vec<(&str, &str, Vec<ScalarValue>)> = vec![
        ("normalize_ndc", "ndc", vec![]),
        ("npi_valid", "prescriber_npi", vec![]),
        ("us_state", "state", vec![]),
        ("collapse_whitespace", "payer", vec![]),
        ("parse_number", "paid_amount", vec![]),
        ("parse_date", "fill_date", formats),
        ("tokenize", "patient_id", vec![key.clone()]),
        ("hmac_sha256", "patient_id", vec![key]),
        ("zip3", "patient_zip", vec![]),
    ];
    let mut group = c.benchmark_group("functions");
    group.throughput(Throughput::Elements(ROWS as u64));
    for (name, input, literals) in cases {
        let udf = function(name);
        let input = column(&columns, input);
        // Fail here, not inside the timing loop, when a case is set up wrong.
        call(&udf, input, &literals);
        group.bench_function(name, |b| b.iter(|| call(&udf, input, &literals)));
    }
    group.finish();
}

/// A quality plan of `rules` rules over flag columns where about 1 row in 25 fails
/// each rule, with a sample column each; the batch carries the flags and the samples.
fn flagged_batch(rules: usize) -> (QualityPlan, RecordBatch) {
    let mut fields = Vec::new();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    let mut plan = QualityPlan {
        samples: 5,
        ..QualityPlan::default()
    };
    for rule in 0..rules {
        let flag = format!("__sluice_dq_{rule}");
        let value = format!("value_{rule}");
        let flags: BooleanArray = (0..ROWS)
            .map(|row| Some((row * 7 + rule * 13) % 25 == 0))
            .collect();
        let values: StringArray = (0..ROWS).map(|row| Some(format!("v{row}"))).collect();
        fields.push(Field::new(&flag, DataType::Boolean, true));
        fields.push(Field::new(&value, DataType::Utf8, true));
        arrays.push(Arc::new(flags));
        arrays.push(Arc::new(values));
        plan.rules.push(RowRule {
            name: format!("rule_{rule}"),
            action: RuleAction::Quarantine,
            flag,
            samples: vec![SampleColumn {
                column: value.clone(),
                label: value,
                masked: false,
            }],
        });
    }
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).expect("batch");
    (plan, batch)
}

fn quality(c: &mut Criterion) {
    let mut group = c.benchmark_group("quality");
    group.throughput(Throughput::Elements(ROWS as u64));
    for rules in [4, 12] {
        let (plan, batch) = flagged_batch(rules);
        group.bench_function(format!("evaluate_{rules}_rules"), |b| {
            b.iter(|| {
                let mut stats = QualityStats::new(&plan);
                sluice_jobs::quality::evaluate_quality(&plan, &mut stats, &batch)
                    .expect("evaluated")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, functions, quality);
criterion_main!(benches);
