//! The benchmark harness (`benches/run`) at a tiny scale with its parity checks on: every
//! job runs on Spark, Sluice distributed, Sluice embedded, DataFusion and DuckDB, and every
//! output must equal Spark's. The timings are not looked at here.

use std::path::Path;
use std::process::Command;

#[test]
fn benchmark_harness_runs_every_engine_with_equal_outputs() {
    let _serial = crate::common::one_cluster_at_a_time_blocking();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let work = tempfile::tempdir().expect("temp dir");
    let results = work.path().join("results");
    let status = Command::new(root.join("benches/run"))
        .args(["--scale", "0.01", "--runs", "1", "--work"])
        .arg(work.path())
        .arg("--results")
        .arg(&results)
        .env("SLUICE_BIN", env!("CARGO_BIN_EXE_sluice"))
        .status()
        .expect("benches/run started");
    assert!(
        status.success(),
        "the benchmark harness failed (its output is above)"
    );
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(results.join("results.json")).expect("results.json"),
    )
    .expect("results.json is JSON");
    assert_eq!(report["meta"]["parity"], "equal", "{:#}", report["meta"]);
    let summary = report["summary"].as_array().expect("a summary");
    let jobs = [
        "claims_cleanse",
        "rx_monthly",
        "tpch_q01",
        "tpch_q03",
        "tpch_q05",
        "tpch_q06",
        "tpch_q09",
        "tpch_q18",
        "csv_decode",
    ];
    for job in jobs {
        for engine in ["spark", "sluice", "sluice-embedded", "datafusion", "duckdb"] {
            let row = summary
                .iter()
                .find(|row| row["job"] == job && row["engine"] == engine)
                .unwrap_or_else(|| panic!("no result for {job} on {engine}"));
            assert!(row["wall_s"].as_f64().is_some_and(|s| s > 0.0), "{row}");
            assert!(
                row["peak_rss_mb"].as_f64().is_some_and(|m| m > 0.0),
                "{row}"
            );
        }
    }
    // The CSV read with FAILFAST runs on Sluice's engines only, its output equal to the
    // PERMISSIVE read's on Spark, and the report sets the two side by side.
    for engine in ["sluice", "sluice-embedded", "datafusion"] {
        let row = summary
            .iter()
            .find(|row| row["job"] == "csv_decode_failfast" && row["engine"] == engine)
            .unwrap_or_else(|| panic!("no result for csv_decode_failfast on {engine}"));
        assert!(row["input_mb"].as_f64().is_some_and(|mb| mb > 0.0), "{row}");
    }
    let markdown = std::fs::read_to_string(results.join("results.md")).expect("results.md");
    assert!(
        markdown.contains(
            "PERMISSIVE (malformed rows kept for the quarantine) against FAILFAST: sluice "
        ),
        "{markdown}"
    );
    // Sluice distributed reports where its time went.
    let profiled = summary
        .iter()
        .find(|row| row["job"] == "claims_cleanse" && row["engine"] == "sluice")
        .expect("claims_cleanse on sluice");
    assert!(profiled["profile"]["first_task_ms"].is_u64(), "{profiled}");
    for file in ["results.md", "chart.png"] {
        assert!(results.join(file).is_file(), "{file} not written");
    }
}
