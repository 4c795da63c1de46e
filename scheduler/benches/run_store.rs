//! The run store at 100,000 runs of history: what a scheduler's user waits for — a page
//! of `ListRuns` (the newest, and one deep in the history), the status counts behind
//! `/metrics`, and opening the store at start-up. None of these may read the whole
//! history; the bar is 100 ms each.
//!
//! `cargo bench --workspace --bench run_store` (Criterion; reports in
//! `$CARGO_TARGET_DIR/criterion`). The history is written once per process, in one
//! transaction.

// A benchmark's setup fails loudly rather than measuring the wrong thing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use criterion::{Criterion, criterion_group, criterion_main};
use sluice_scheduler::{OutputRecord, RunId, RunRecord, RunStatus, RunStore};

const RUNS: usize = 100_000;
const PAGE: usize = 50;

/// A run as a daily partitioned cleansing job records it: params, two outputs with
/// their files and partitions, a warning.
fn history() -> Vec<RunRecord> {
    let start = chrono::DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z")
        .unwrap()
        .to_utc();
    (0..RUNS)
        .map(|index| {
            let at = start + chrono::Duration::minutes(index as i64);
            let id = format!("r-{}-{index:08x}", at.format("%Y%m%dT%H%M%S%3f"));
            let mut run = RunRecord::new(
                RunId::from(id),
                format!("claims_cleanse_{}", index % 7),
                "claims_cleanse.yaml".into(),
                BTreeMap::from([
                    ("month".to_owned(), at.format("%Y-%m").to_string()),
                    ("landing".to_owned(), "s3://lake/landing/claims".to_owned()),
                ]),
                vec!["source `claims`: 3 files were empty".into()],
            );
            run.submitted_at = at;
            for output in ["claims", "quarantine"] {
                let location = format!("s3://lake/staging/{output}");
                run.output_locations
                    .insert(output.to_owned(), location.clone());
                run.outputs.push(OutputRecord {
                    name: output.to_owned(),
                    location,
                    rows_written: 1_000_000,
                    bytes_written: 64 << 20,
                    files: (0..8)
                        .map(|file| format!("fill_month=2024-01/part-{file:05}-{index}.parquet"))
                        .collect(),
                    partitions: vec!["fill_month=2024-01".into()],
                    duplicate_of: None,
                });
            }
            let status = match index % 50 {
                0 => RunStatus::Failed,
                1 => RunStatus::Cancelled,
                _ => RunStatus::Succeeded,
            };
            run.finish(status, None);
            run
        })
        .collect()
}

fn run_store(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs.redb");
    let runs = history();
    let deep = runs[RUNS / 2].run_id.clone();
    {
        let store = RunStore::open(&path).unwrap();
        store.put_all(&runs).unwrap();
    }
    drop(runs);
    let store = RunStore::open(&path).unwrap();

    let mut group = c.benchmark_group("run_store_100k_runs");
    group.bench_function("list_runs_newest_page", |b| {
        b.iter(|| assert_eq!(store.list_before(PAGE, None).unwrap().len(), PAGE));
    });
    group.bench_function("list_runs_page_deep_in_history", |b| {
        b.iter(|| assert_eq!(store.list_before(PAGE, Some(&deep)).unwrap().len(), PAGE));
    });
    group.bench_function("status_counts_for_metrics", |b| {
        b.iter(|| {
            let counts = store.count_by_status().unwrap();
            assert_eq!(counts.values().sum::<u64>(), RUNS as u64);
        });
    });
    drop(store);
    group.sample_size(10);
    group.bench_function("open_at_start_up", |b| {
        b.iter(|| RunStore::open(&path).unwrap());
    });
    group.finish();
}

criterion_group!(benches, run_store);
criterion_main!(benches);
