//! Backfills on a real cluster: one run per month of a year, at most N at once, every
//! partition committed once; submitting again skips what committed; a scheduler killed
//! mid-backfill is resumed by submitting the backfill again, with no duplicate rows.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Cluster;
use sluice_proto::v1;

/// Landed claim lines per month, counted from the CSV files.
fn landed_per_month(landing: &Path) -> BTreeMap<String, usize> {
    let mut months = BTreeMap::new();
    for entry in std::fs::read_dir(landing.join("claims")).unwrap().flatten() {
        for line in std::fs::read_to_string(entry.path())
            .unwrap()
            .lines()
            .skip(1)
        {
            let fill_date = line.split(',').nth(4).unwrap();
            *months.entry(fill_date[..7].to_owned()).or_default() += 1;
        }
    }
    months
}

fn written_per_month(root: &Path) -> BTreeMap<String, usize> {
    common::read_partitioned(root)
        .into_iter()
        .map(|(folder, batches)| {
            (
                folder.trim_start_matches("fill_month=").to_owned(),
                batches.iter().map(|b| b.num_rows()).sum(),
            )
        })
        .collect()
}

fn backfill(
    cluster: &Cluster,
    job: &Path,
    data: &Path,
    staging: &str,
    max: u32,
    wait: bool,
) -> std::process::Output {
    let mut command = Command::new(common::sluice_bin());
    command
        .arg("backfill")
        .arg(job)
        .args([
            "--from",
            "2024-01-01",
            "--to",
            "2024-12-31",
            "--every",
            "month",
        ])
        .args([
            "--date-param",
            "month",
            "--max-concurrent",
            &max.to_string(),
        ])
        .args(["-p", &format!("landing={}", data.join("landing").display())])
        .args(["-p", &format!("staging={}", data.join(staging).display())])
        .args(["--scheduler", &cluster.url()]);
    if wait {
        command.arg("--wait");
    }
    command.output().unwrap()
}

async fn backfills(cluster: &Cluster) -> Vec<v1::Backfill> {
    cluster
        .client()
        .await
        .list_backfills(v1::ListBackfillsRequest {})
        .await
        .unwrap()
        .into_inner()
        .backfills
}

async fn runs(cluster: &Cluster) -> Vec<v1::Run> {
    cluster
        .client()
        .await
        .list_runs(v1::ListRunsRequest {
            limit: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .runs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_year_backfills_month_by_month_and_resumes_after_a_restart() {
    let _serial = common::one_cluster_at_a_time().await;
    let mut cluster = Cluster::start(2).await;
    let data = cluster.dir.path().join("lake");
    let months: Vec<u32> = (1..=12).collect();
    sluice_jobs::datagen::write_claims(&data, 12_000, &months, 17).unwrap();
    let expected = landed_per_month(&data.join("landing"));
    assert_eq!(expected.len(), 12);
    let job = cluster.dir.path().join("claims_by_month.yaml");
    std::fs::write(&job, common::CLAIMS_BY_MONTH).unwrap();

    // Twelve runs, three at a time.
    let output = backfill(&cluster, &job, &data, "staging", 3, true);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}{}",
        String::from_utf8_lossy(&output.stderr),
        cluster.logs()
    );
    assert!(stdout.contains("[12 succeeded]"), "{stdout}");
    assert_eq!(written_per_month(&data.join("staging/claims")), expected);
    let all = runs(&cluster).await;
    assert_eq!(all.len(), 12);
    assert!(
        all.iter()
            .all(|run| common::status(run) == v1::RunStatus::Succeeded)
    );
    // Never more than three in flight: count overlapping start/finish intervals.
    let mut edges: Vec<(String, i32)> = Vec::new();
    for run in &all {
        edges.push((run.started_at.clone(), 1));
        edges.push((run.finished_at.clone(), -1));
    }
    edges.sort();
    let (mut open, mut most) = (0, 0);
    for (_, delta) in edges {
        open += delta;
        most = most.max(open);
    }
    assert!(most <= 3, "{most} runs at once");

    // The same backfill again: everything committed is skipped, nothing runs.
    let again = backfill(&cluster, &job, &data, "staging", 3, true);
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{stdout}");
    assert!(stdout.contains("[12 skipped]"), "{stdout}");
    assert_eq!(runs(&cluster).await.len(), 12);

    // One at a time into a new staging zone; the scheduler dies part way.
    let started = backfill(&cluster, &job, &data, "resumed", 1, false);
    assert!(started.status.success());
    let backfill_id = String::from_utf8_lossy(&started.stdout).trim().to_owned();
    assert!(backfill_id.starts_with("b-"), "{backfill_id}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let record = backfills(&cluster)
            .await
            .into_iter()
            .find(|b| b.backfill_id == backfill_id)
            .unwrap();
        let done = record
            .partitions
            .iter()
            .filter(|p| p.status == "succeeded")
            .count();
        if done >= 3 {
            assert!(
                done < 12,
                "the backfill ended before the scheduler could be killed"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{record:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.kill_scheduler();
    cluster.start_scheduler().await;
    let interrupted = backfills(&cluster)
        .await
        .into_iter()
        .find(|b| b.backfill_id == backfill_id)
        .unwrap();
    assert_eq!(interrupted.status, "interrupted");
    let committed = interrupted
        .partitions
        .iter()
        .filter(|p| p.status == "succeeded")
        .count();

    let resumed = backfill(&cluster, &job, &data, "resumed", 2, true);
    let stdout = String::from_utf8_lossy(&resumed.stdout);
    assert!(resumed.status.success(), "{stdout}{}", cluster.logs());
    assert!(stdout.contains(&format!("{committed} skipped")), "{stdout}");
    assert_eq!(
        written_per_month(&data.join("resumed/claims")),
        expected,
        "duplicates or gaps"
    );

    // Cancelling a backfill cancels its run in flight and starts no more.
    let started = backfill(&cluster, &job, &data, "cancelled", 1, false);
    let cancelled_id = String::from_utf8_lossy(&started.stdout).trim().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let record = backfills(&cluster)
            .await
            .into_iter()
            .find(|b| b.backfill_id == cancelled_id)
            .unwrap();
        if record.partitions.iter().any(|p| p.status == "succeeded") {
            break;
        }
        assert!(Instant::now() < deadline, "{record:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cancel = Command::new(common::sluice_bin())
        .args(["cancel", &cancelled_id, "--scheduler", &cluster.url()])
        .output()
        .unwrap();
    assert!(cancel.status.success(), "{cancel:?}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let record = loop {
        let record = backfills(&cluster)
            .await
            .into_iter()
            .find(|b| b.backfill_id == cancelled_id)
            .unwrap();
        if record.status != "running" {
            break record;
        }
        assert!(Instant::now() < deadline, "{record:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(record.status, "cancelled");
    assert!(
        record
            .partitions
            .iter()
            .all(|p| p.status != "running" && p.status != "pending")
    );
    assert!(
        record
            .partitions
            .iter()
            .filter(|p| p.status == "cancelled")
            .count()
            >= 9,
        "{record:?}"
    );
    let in_flight = runs(&cluster)
        .await
        .into_iter()
        .filter(|run| {
            matches!(
                common::status(run),
                v1::RunStatus::Queued | v1::RunStatus::Running
            )
        })
        .count();
    assert_eq!(in_flight, 0);

    // `sluice status` shows a backfill with its partitions.
    let shown = Command::new(common::sluice_bin())
        .args(["status", &backfill_id, "--scheduler", &cluster.url()])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains("interrupted") && shown.contains("month=2024-01"),
        "{shown}"
    );
}

/// A backfill of three months with a quarantine: each month's run replaces the
/// quarantined rows of its own month only (the quarantine is partitioned like the
/// output by default), so every month's rejects are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_keeps_every_months_quarantined_rows() {
    let _serial = common::one_cluster_at_a_time().await;
    let cluster = Cluster::start(2).await;
    let data = cluster.dir.path().join("lake");
    sluice_jobs::datagen::write_claims(&data, 3_000, &[1, 2, 3], 5).unwrap();
    // Claims without a quantity, per month, counted from the landed lines.
    let mut expected: BTreeMap<String, usize> = BTreeMap::new();
    for entry in std::fs::read_dir(data.join("landing/claims"))
        .unwrap()
        .flatten()
    {
        for line in std::fs::read_to_string(entry.path())
            .unwrap()
            .lines()
            .skip(1)
        {
            let fields: Vec<&str> = line.split(',').collect();
            if fields[5].is_empty() {
                *expected.entry(fields[4][..7].to_owned()).or_default() += 1;
            }
        }
    }
    assert_eq!(
        expected.len(),
        3,
        "every month has claims without a quantity"
    );
    let job = cluster.dir.path().join("claims_checked.yaml");
    std::fs::write(
        &job,
        common::CLAIMS_BY_MONTH.replace(
            "outputs:",
            "quality:\n  rules:\n    - {name: has_quantity, not_null: [quantity]}\n  \
             quarantine: {path: \"{{staging}}/quarantine\"}\noutputs:",
        ),
    )
    .unwrap();
    let output = Command::new(common::sluice_bin())
        .arg("backfill")
        .arg(&job)
        .args([
            "--from",
            "2024-01-01",
            "--to",
            "2024-03-31",
            "--every",
            "month",
        ])
        .args(["--date-param", "month", "--max-concurrent", "1", "--wait"])
        .args(["-p", &format!("landing={}", data.join("landing").display())])
        .args(["-p", &format!("staging={}", data.join("staging").display())])
        .args(["--scheduler", &cluster.url()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("[3 succeeded]"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        written_per_month(&data.join("staging/quarantine")),
        expected
    );
}
