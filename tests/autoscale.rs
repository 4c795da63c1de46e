//! Executor scaling on a real scheduler process: a backfill of 12 months starting from
//! zero executors makes the `local` provider start executor processes, every partition
//! commits, and the executors go back to zero when the work is done. KEDA's external
//! scaler API on the scheduler says inactive when idle and follows the queue.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::Cluster;
use sluice_proto::externalscaler::external_scaler_client::ExternalScalerClient;
use sluice_proto::externalscaler::{GetMetricsRequest, ScaledObjectRef};
use sluice_proto::v1;

const MONTHLY: &str = r#"apiVersion: sluice/v1
name: claims_by_month
params:
  landing: {type: string, required: true}
  staging: {type: string, required: true}
  month: {type: string, required: true}
sources:
  claims: {format: csv, path: "{{landing}}/claims"}
steps:
  - filter: "substr(fill_date, 1, 7) = $month"
  - derive: {column: fill_month, expr: "substr(fill_date, 1, 7)"}
outputs:
  - name: claims
    path: "{{staging}}/claims"
    partition_by: [fill_month]
    mode: overwrite_partitions
"#;

/// `sluice executor` processes registered with the scheduler on `port`.
fn executor_processes(port: u16) -> usize {
    let wanted = format!("127.0.0.1:{port}");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .filter(|cmdline| {
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.iter().any(|a| *a == b"executor") && args.iter().any(|a| *a == wanted.as_bytes())
        })
        .count()
}

async fn keda(cluster: &Cluster) -> (bool, i64) {
    let mut client = ExternalScalerClient::connect(cluster.url()).await.unwrap();
    let object = ScaledObjectRef {
        name: "sluice-executor".into(),
        namespace: "sluice".into(),
        scaler_metadata: Default::default(),
    };
    let active = client
        .is_active(object.clone())
        .await
        .unwrap()
        .into_inner()
        .result;
    let metric = client
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(object),
            metric_name: "sluice_pending_tasks".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .metric_values[0]
        .metric_value;
    (active, metric)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_scales_executors_out_from_zero_and_back() {
    let _serial = common::one_cluster_at_a_time().await;
    let args = [
        "--autoscale",
        "local",
        "--min-executors",
        "0",
        "--max-executors",
        "3",
        "--scale-step",
        "2",
        "--cooldown-secs",
        "2",
        "--executor-slots",
        "2",
    ];
    let cluster =
        Cluster::start_with(0, Vec::new(), args.iter().map(|a| a.to_string()).collect()).await;
    assert_eq!(executor_processes(cluster.port), 0);
    assert_eq!(
        keda(&cluster).await,
        (false, 0),
        "idle: KEDA may scale to zero"
    );

    let data = cluster.dir.path().join("lake");
    sluice_jobs::datagen::write_claims(&data, 12_000, &(1..=12).collect::<Vec<_>>(), 23).unwrap();
    let job = cluster.dir.path().join("claims_by_month.yaml");
    std::fs::write(&job, MONTHLY).unwrap();
    let started = Command::new(common::sluice_bin())
        .arg("backfill")
        .arg(&job)
        .args([
            "--from",
            "2024-01-01",
            "--to",
            "2024-12-31",
            "--every",
            "month",
        ])
        .args(["--date-param", "month", "--max-concurrent", "4"])
        .args(["-p", &format!("landing={}", data.join("landing").display())])
        .args(["-p", &format!("staging={}", data.join("staging").display())])
        .args(["--scheduler", &cluster.url()])
        .output()
        .unwrap();
    assert!(started.status.success(), "{started:?}");
    let backfill_id = String::from_utf8_lossy(&started.stdout).trim().to_owned();

    let (mut most_executors, mut saw_active, mut most_tasks) = (0, false, 0);
    let deadline = Instant::now() + Duration::from_secs(240);
    let record = loop {
        most_executors = most_executors.max(executor_processes(cluster.port));
        let (active, tasks) = keda(&cluster).await;
        saw_active |= active;
        most_tasks = most_tasks.max(tasks);
        let record = cluster
            .client()
            .await
            .get_backfill(v1::GetBackfillRequest {
                backfill_id: backfill_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        if record.status != "running" {
            break record;
        }
        assert!(Instant::now() < deadline, "{record:?}{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(record.status, "succeeded", "{record:?}{}", cluster.logs());
    assert!(record.partitions.iter().all(|p| p.status == "succeeded"));
    assert!(
        most_executors >= 1 && most_executors <= 3,
        "{most_executors} executors"
    );
    assert!(saw_active && most_tasks > 0, "KEDA never saw the queue");
    assert_eq!(
        common::data_files(&data.join("staging/claims")).len(),
        12,
        "one file per month"
    );

    // Idle again: back to zero executors, and KEDA says inactive.
    let deadline = Instant::now() + Duration::from_secs(60);
    while executor_processes(cluster.port) > 0 {
        assert!(
            Instant::now() < deadline,
            "executors were not scaled in{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(keda(&cluster).await, (false, 0));
    let log = std::fs::read_to_string(cluster.log_path("scheduler-1")).unwrap();
    assert!(log.contains("autoscaler decision"), "decisions are logged");
    assert!(
        log.contains("need") && log.contains("has needed only 0 executors"),
        "{log}"
    );
}
