//! Runs over S3: a real S3-compatible server (moto) on loopback, a scheduler and two
//! executor processes reaching it with SigV4, the example jobs reading landing CSV from
//! a bucket and writing partitioned Parquet back to it.

use crate::common;

use std::collections::BTreeMap;

use common::moto::{Moto, keys, upload_dir, visible_files};
use common::{Cluster, example, status};
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use sluice_proto::v1::RunStatus;

/// A bucket `lake` on a fresh moto server, holding generated landing claims.
struct Lake {
    moto: Moto,
    store: std::sync::Arc<dyn object_store::ObjectStore>,
    claim_rows: usize,
    _scratch: tempfile::TempDir,
}

async fn lake(rows: usize, months: &[u32], seed: u64) -> Lake {
    let scratch = tempfile::tempdir().unwrap();
    let moto = Moto::start(scratch.path().join("moto.log"));
    moto.create_bucket("lake");
    let store = moto.store("lake");
    let local = scratch.path().join("generated");
    let sample = sluice_jobs::datagen::write_claims(&local, rows, months, seed).unwrap();
    upload_dir(&store, &local.join("landing"), "landing").await;
    Lake {
        moto,
        store,
        claim_rows: sample.claim_rows,
        _scratch: scratch,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_jobs_run_over_s3_on_two_executors() {
    let _serial = common::one_cluster_at_a_time().await;
    let Lake {
        moto,
        store,
        claim_rows,
        _scratch,
    } = lake(4_000, &[1, 2], 21).await;

    let cluster = Cluster::start_with_env(2, moto.env()).await;
    let cleanse = cluster
        .submit(
            &example("claims_cleanse.yaml"),
            "claims_cleanse.yaml",
            &[
                ("landing", "s3://lake/landing".into()),
                ("staging", "s3://lake/staging".into()),
            ],
        )
        .await
        .unwrap();
    let run = cluster.wait_final(&cleanse).await;
    assert_eq!(
        status(&run),
        RunStatus::Succeeded,
        "{run:?}{}",
        cluster.logs()
    );
    assert_eq!(run.rows_read, claim_rows as u64);
    assert_eq!(
        run.tasks_by_executor.len(),
        2,
        "{:?}",
        run.tasks_by_executor
    );

    // Spark's layout in the bucket: partition folders, part files, _SUCCESS, no staging.
    let written = keys(&store, "staging/claims").await;
    assert!(written.contains(&"_SUCCESS".to_owned()), "{written:?}");
    assert!(
        written.iter().all(|key| !key.starts_with("_temporary")),
        "{written:?}"
    );
    let parts: Vec<&String> = written
        .iter()
        .filter(|k| k.ends_with(".snappy.parquet"))
        .collect();
    assert_eq!(parts.len(), run.outputs[0].files.len());
    let months: std::collections::BTreeSet<&str> = parts
        .iter()
        .map(|key| key.split('/').next().unwrap())
        .collect();
    assert_eq!(
        months.into_iter().collect::<Vec<_>>(),
        ["fill_month=2024-01", "fill_month=2024-02"]
    );

    // The rows in the bucket are the rows the run reports, read back independently.
    let mut rows_in_bucket = 0usize;
    for key in &parts {
        let bytes = store
            .get(&ObjectPath::from(format!("staging/claims/{key}")))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            rows_in_bucket += batch.unwrap().num_rows();
        }
    }
    assert_eq!(rows_in_bucket as u64, run.outputs[0].rows_written);

    // The aggregation reads the staged Parquet from S3 and writes to S3.
    let monthly = cluster
        .submit(
            &example("claims_monthly.yaml"),
            "claims_monthly.yaml",
            &[
                ("landing", "s3://lake/landing".into()),
                ("staging", "s3://lake/staging".into()),
                ("curated", "s3://lake/curated".into()),
            ],
        )
        .await
        .unwrap();
    let run = cluster.wait_final(&monthly).await;
    assert_eq!(
        status(&run),
        RunStatus::Succeeded,
        "{run:?}{}",
        cluster.logs()
    );
    let aggregate = keys(&store, "curated/claims_monthly").await;
    assert!(aggregate.contains(&"_SUCCESS".to_owned()), "{aggregate:?}");

    // Credentials never appear in what the processes logged.
    let logs = cluster.logs();
    assert!(!logs.contains("sluice-test-secret-never-logged"));

    // Re-running the same month replaces its partitions: same rows, no duplicates.
    let again = cluster
        .submit(
            &example("claims_cleanse.yaml"),
            "claims_cleanse.yaml",
            &[
                ("landing", "s3://lake/landing".into()),
                ("staging", "s3://lake/staging".into()),
            ],
        )
        .await
        .unwrap();
    let rerun = cluster.wait_final(&again).await;
    assert_eq!(status(&rerun), RunStatus::Succeeded, "{rerun:?}");
    let after: BTreeMap<String, usize> = keys(&store, "staging/claims")
        .await
        .into_iter()
        .filter(|k| k.ends_with(".parquet"))
        .map(|k| (k.split('/').next().unwrap().to_owned(), 1))
        .fold(BTreeMap::new(), |mut acc, (month, n)| {
            *acc.entry(month).or_insert(0) += n;
            acc
        });
    assert_eq!(after.values().sum::<usize>(), rerun.outputs[0].files.len());
}

/// One month of the staged claims: `path` inside the dataset, `base_path` at its root.
const ONE_MONTH: &str = r#"apiVersion: sluice/v1
name: one_month
params:
  staging: {type: path, required: true}
  out: {type: path, required: true}
  month: {type: string, required: true}
sources:
  claims:
    format: parquet
    path: "{{staging}}/claims/fill_month={{month}}"
    base_path: "{{staging}}/claims"
steps:
  - sql: "SELECT fill_month, state, count(*) AS claims FROM input GROUP BY fill_month, state"
outputs:
  - {name: by_state, path: "{{out}}", partition_by: [fill_month]}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_for_one_month_lists_and_reads_only_that_month() {
    let _serial = common::one_cluster_at_a_time().await;
    let Lake {
        moto,
        store,
        claim_rows: _,
        _scratch,
    } = lake(3_000, &[1, 2, 3], 8).await;

    let cluster = Cluster::start_with_env(2, moto.env()).await;
    let cleanse = cluster
        .submit(
            &example("claims_cleanse.yaml"),
            "claims_cleanse.yaml",
            &[
                ("landing", "s3://lake/landing".into()),
                ("staging", "s3://lake/staging".into()),
            ],
        )
        .await
        .unwrap();
    let staged = cluster.wait_final(&cleanse).await;
    assert_eq!(status(&staged), RunStatus::Succeeded, "{staged:?}");
    let february_rows = visible_files(&store, "staging/claims/fill_month=2024-02")
        .await
        .values()
        .sum::<usize>() as u64;

    let before = moto.requests().lines().count();
    let run_id = cluster
        .submit(
            ONE_MONTH,
            "one_month.yaml",
            &[
                ("staging", "s3://lake/staging".into()),
                ("out", "s3://lake/curated/by_state".into()),
                ("month", "2024-02".into()),
            ],
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
    assert_eq!(run.rows_read, february_rows);
    assert_eq!(run.outputs[0].partitions, ["fill_month=2024-02"]);

    // What the server was asked while the run planned and ran: only February's prefix.
    let requests: Vec<String> = moto
        .requests()
        .lines()
        .skip(before)
        .map(str::to_owned)
        .collect();
    let staging_requests: Vec<&String> = requests
        .iter()
        .filter(|line| line.contains("staging"))
        .collect();
    assert!(
        !staging_requests.is_empty(),
        "moto logged no requests: {requests:?}"
    );
    for month in ["2024-01", "2024-03"] {
        let touched: Vec<&&String> = staging_requests
            .iter()
            .filter(|l| l.contains(month))
            .collect();
        assert!(touched.is_empty(), "the run touched {month}: {touched:?}");
    }
    assert!(staging_requests.iter().any(|l| l.contains("2024-02")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_mid_write_leaves_the_previous_data_and_a_rerun_repairs_it() {
    let _serial = common::one_cluster_at_a_time().await;
    let Lake {
        moto,
        store,
        claim_rows: _,
        _scratch,
    } = lake(80_000, &[1, 2], 13).await;
    // Small files, so the write takes long enough to be interrupted.
    let job = example("claims_cleanse.yaml").replace(
        "    mode: overwrite_partitions\n",
        "    mode: overwrite_partitions\n    target_file_size: 24KiB\n",
    );
    let params = [
        ("landing", "s3://lake/landing".to_owned()),
        ("staging", "s3://lake/staging".to_owned()),
    ];

    let mut cluster = Cluster::start_with_env(2, moto.env()).await;
    let first = cluster.submit(&job, "cleanse.yaml", &params).await.unwrap();
    let first = cluster.wait_final(&first).await;
    assert_eq!(status(&first), RunStatus::Succeeded, "{first:?}");
    let before = visible_files(&store, "staging/claims").await;
    let rows_before: usize = before.values().sum();
    assert_eq!(rows_before as u64, first.outputs[0].rows_written);

    // The same run again, killed (SIGKILL of the scheduler) once its files are staging.
    let doomed = cluster.submit(&job, "cleanse.yaml", &params).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let staged = keys(&store, &format!("staging/claims/_temporary/{doomed}")).await;
        if !staged.is_empty() {
            break;
        }
        let run = cluster.run(&doomed).await;
        assert_eq!(
            status(&run),
            RunStatus::Running,
            "the run ended before it was killed: {run:?}"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the run never staged a file"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    cluster.kill_scheduler();

    // Readers see exactly the previous data.
    assert_eq!(visible_files(&store, "staging/claims").await, before);

    // After a restart the run is interrupted; a re-run commits, cleans what the killed
    // run left, and holds every claim once.
    cluster.start_scheduler().await;
    cluster.start_executor(2);
    cluster.start_executor(3);
    cluster.wait_for_executors(2).await;
    assert_eq!(status(&cluster.run(&doomed).await), RunStatus::Interrupted);
    let rerun = cluster.submit(&job, "cleanse.yaml", &params).await.unwrap();
    let rerun = cluster.wait_final(&rerun).await;
    assert_eq!(
        status(&rerun),
        RunStatus::Succeeded,
        "{rerun:?}{}",
        cluster.logs()
    );
    let after = visible_files(&store, "staging/claims").await;
    assert_eq!(
        after.values().sum::<usize>(),
        rows_before,
        "rows duplicated or lost"
    );
    assert!(
        after.keys().all(|file| !before.contains_key(file)),
        "old files left beside new ones"
    );
    assert!(
        keys(&store, "staging/claims/_temporary").await.is_empty(),
        "staged files of the killed run were not cleaned up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_survives_s3_slow_down_errors() {
    let _serial = common::one_cluster_at_a_time().await;
    let Lake {
        moto,
        store,
        claim_rows,
        _scratch,
    } = lake(5_000, &[1, 2], 17).await;

    let proxy = common::faults::SlowDownProxy::start(moto.port, 3, 6).await;
    let cluster =
        Cluster::start_with_env(2, moto.env_via(&format!("http://127.0.0.1:{}", proxy.port))).await;
    let run_id = cluster
        .submit(
            &example("claims_cleanse.yaml"),
            "claims_cleanse.yaml",
            &[
                ("landing", "s3://lake/landing".into()),
                ("staging", "s3://lake/staging".into()),
            ],
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
    assert!(proxy.injected() > 0, "no 503 was injected");
    assert_eq!(run.rows_read, claim_rows as u64);
    let rows: usize = visible_files(&store, "staging/claims").await.values().sum();
    assert_eq!(rows as u64, run.outputs[0].rows_written);
}

/// A month of staged claims copied to a monthly output, partitioned by month.
const COPY_MONTH: &str = r#"apiVersion: sluice/v1
name: copy_month
params:
  staging: {type: path, required: true}
  out: {type: path, required: true}
  month: {type: string, required: true}
sources:
  claims:
    format: parquet
    path: "{{staging}}/claims/fill_month={{month}}"
    base_path: "{{staging}}/claims"
steps:
  - select: [claim_id, state, paid_amount, fill_month]
outputs:
  - {name: copy, path: "{{out}}", partition_by: [fill_month], mode: overwrite_partitions}
"#;

/// One big file: more rows of incompressible text than one multipart part holds.
const BIG_FILE: &str = r#"apiVersion: sluice/v1
name: big_file
params:
  landing: {type: path, required: true}
  out: {type: path, required: true}
sources:
  products: {format: csv, path: "{{landing}}/products"}
steps:
  - sql: |
      SELECT value AS id,
             md5(CAST(value AS VARCHAR)) || md5(CAST(value * 7 AS VARCHAR)) || md5(CAST(value * 13 AS VARCHAR)) AS payload
      FROM generate_series(1, 250000)
outputs:
  - {name: big, path: "{{out}}", target_file_size: 1GiB}
conf:
  spark.sql.shuffle.partitions: 1
  datafusion.execution.target_partitions: 1
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwrite_replaces_exactly_the_partitions_a_run_produced_and_big_files_go_multipart() {
    let _serial = common::one_cluster_at_a_time().await;
    let Lake {
        moto,
        store,
        claim_rows: _,
        _scratch,
    } = lake(3_000, &[1, 2], 31).await;
    let cluster = Cluster::start_with_env(2, moto.env()).await;
    let staged = cluster
        .submit(
            &example("claims_cleanse.yaml"),
            "claims_cleanse.yaml",
            &[
                ("landing", "s3://lake/landing".into()),
                ("staging", "s3://lake/staging".into()),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        status(&cluster.wait_final(&staged).await),
        RunStatus::Succeeded
    );

    let copy = |month: &'static str| {
        let cluster = &cluster;
        async move {
            let id = cluster
                .submit(
                    COPY_MONTH,
                    "copy_month.yaml",
                    &[
                        ("staging", "s3://lake/staging".into()),
                        ("out", "s3://lake/monthly".into()),
                        ("month", month.into()),
                    ],
                )
                .await
                .unwrap();
            let run = cluster.wait_final(&id).await;
            assert_eq!(status(&run), RunStatus::Succeeded, "{run:?}");
            run
        }
    };
    copy("2024-01").await;
    copy("2024-02").await;
    let before = visible_files(&store, "monthly").await;
    copy("2024-01").await;
    let after = visible_files(&store, "monthly").await;
    let in_month = |files: &BTreeMap<String, usize>, month: &str| -> BTreeMap<String, usize> {
        files
            .iter()
            .filter(|(key, _)| key.starts_with(&format!("fill_month={month}/")))
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    };
    // February untouched, file for file; January replaced by as many rows, not added to.
    assert_eq!(in_month(&after, "2024-02"), in_month(&before, "2024-02"));
    let (jan_before, jan_after) = (in_month(&before, "2024-01"), in_month(&after, "2024-01"));
    assert!(jan_after.keys().all(|k| !jan_before.contains_key(k)));
    assert_eq!(
        jan_after.values().sum::<usize>(),
        jan_before.values().sum::<usize>()
    );

    // A file past the multipart threshold is uploaded in parts.
    let requests_before = moto.requests().lines().count();
    let big = cluster
        .submit(
            BIG_FILE,
            "big_file.yaml",
            &[
                ("landing", "s3://lake/landing".into()),
                ("out", "s3://lake/big".into()),
            ],
        )
        .await
        .unwrap();
    let run = cluster.wait_final(&big).await;
    assert_eq!(
        status(&run),
        RunStatus::Succeeded,
        "{run:?}{}",
        cluster.logs()
    );
    assert_eq!(run.outputs[0].files.len(), 1);
    assert!(
        run.outputs[0].bytes_written > 10 * 1024 * 1024,
        "{}",
        run.outputs[0].bytes_written
    );
    let requests: Vec<String> = moto
        .requests()
        .lines()
        .skip(requests_before)
        .map(str::to_owned)
        .collect();
    assert!(
        requests
            .iter()
            .any(|line| line.contains("uploads") && line.contains("big/_temporary")),
        "no multipart upload in: {requests:?}"
    );
    assert_eq!(
        visible_files(&store, "big").await.values().sum::<usize>(),
        250_000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_come_from_the_shared_credentials_file_when_the_environment_has_none() {
    let _serial = common::one_cluster_at_a_time().await;
    let Lake {
        moto,
        store,
        claim_rows: _,
        _scratch,
    } = lake(1_000, &[1], 2).await;
    let credentials = _scratch.path().join("credentials");
    std::fs::write(
        &credentials,
        "[default]\naws_access_key_id = AKIAPROFILEKEY\naws_secret_access_key = profile-secret-never-logged\n",
    )
    .unwrap();
    let mut env: Vec<(String, String)> = moto
        .env()
        .into_iter()
        .filter(|(key, _)| !key.starts_with("AWS_"))
        .collect();
    env.extend([
        ("AWS_ACCESS_KEY_ID".to_owned(), String::new()),
        (
            "AWS_SHARED_CREDENTIALS_FILE".to_owned(),
            credentials.display().to_string(),
        ),
        // Instance metadata, the chain's last resort, answers nothing here.
        (
            "AWS_METADATA_ENDPOINT".to_owned(),
            "http://127.0.0.1:1".to_owned(),
        ),
    ]);
    let cluster = Cluster::start_with_env(2, env).await;
    let run_id = cluster
        .submit(
            &example("claims_cleanse.yaml"),
            "claims_cleanse.yaml",
            &[
                ("landing", "s3://lake/landing".into()),
                ("staging", "s3://lake/staging".into()),
            ],
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
    assert!(!keys(&store, "staging/claims").await.is_empty());
    let logs = cluster.logs();
    assert!(
        logs.contains("S3 credentials from the shared credentials file"),
        "{logs}"
    );
    assert!(!logs.contains("profile-secret-never-logged"));
}

/// Runs the cleansing example over a delivery (`landing-<version>`) into a staging prefix.
async fn cleanse(cluster: &Cluster, version: &str, staging: &str) -> sluice_proto::v1::Run {
    let params = [
        ("landing", format!("s3://lake/landing-{version}")),
        ("staging", format!("s3://lake/{staging}")),
    ];
    let job = example("claims_cleanse.yaml");
    let run_id = cluster.submit(&job, "cleanse.yaml", &params).await.unwrap();
    cluster.wait_final(&run_id).await
}

/// In a fresh `case` prefix, the first delivery committed without faults, then the
/// second cleansed while `rule` fails S3 calls: that run, and the calls the proxy failed.
async fn second_delivery_under(
    cluster: &Cluster,
    proxy: &common::faults::S3FaultProxy,
    case: &str,
    rule: common::faults::FaultRule,
) -> (sluice_proto::v1::Run, Vec<String>) {
    let first = cleanse(cluster, "v1", case).await;
    assert_eq!(
        status(&first),
        RunStatus::Succeeded,
        "{first:?}{}",
        cluster.logs()
    );
    proxy.arm(rule);
    let second = cleanse(cluster, "v2", case).await;
    proxy.disarm();
    (second, proxy.failed())
}

/// Claims (`id=paid`) per `fill_month` partition below a prefix: what a reader of the
/// output sees.
async fn claims_by_month(
    store: &std::sync::Arc<dyn object_store::ObjectStore>,
    prefix: &str,
) -> BTreeMap<String, std::collections::BTreeSet<String>> {
    use arrow::array::AsArray;
    let mut months: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for file in visible_files(store, prefix).await.keys() {
        let month = file.split('/').next().unwrap().to_owned();
        let bytes = store
            .get(&ObjectPath::from(format!("{prefix}/{file}")))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let text = |column: &str| {
                arrow::compute::cast(
                    batch.column_by_name(column).unwrap(),
                    &arrow::datatypes::DataType::Utf8,
                )
                .unwrap()
            };
            let (ids, paid) = (text("claim_id"), text("paid_amount"));
            let entry = months.entry(month.clone()).or_default();
            // The deliveries share claim ids; what was paid tells them apart.
            for (id, paid) in ids.as_string::<i32>().iter().zip(paid.as_string::<i32>()) {
                let claim = format!("{}={}", id.unwrap(), paid.unwrap_or("null"));
                assert!(
                    entry.insert(claim.clone()),
                    "claim {claim} twice in {month}"
                );
            }
        }
    }
    months
}

/// S3 calls of a commit fail — the k-th copy, delete or put, once or from then on — in a
/// proxy in front of moto: a run whose commit could not finish fails naming the object,
/// and every partition ends with exactly the old or exactly the new claims once the
/// commit is rolled forward (by the next scheduler start, or by the next commit on the
/// output, either of which also marks the run succeeded). A plan that could not be
/// written changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_calls_failing_mid_commit_leave_old_or_new_claims_and_roll_forward() {
    use common::faults::{FaultRule, S3Call, S3FaultProxy};
    let _serial = common::one_cluster_at_a_time().await;
    let scratch = tempfile::tempdir().unwrap();
    let moto = Moto::start(scratch.path().join("moto.log"));
    moto.create_bucket("lake");
    let store = moto.store("lake");
    // Three deliveries: two of the same months with different claims, one of a later month.
    let deliveries: [(&str, &[u32], u64); 3] =
        [("v1", &[1, 2], 31), ("v2", &[1, 2], 32), ("v3", &[3], 33)];
    for (version, months, seed) in deliveries {
        let local = scratch.path().join(version);
        sluice_jobs::datagen::write_claims(&local, 3_000, months, seed).unwrap();
        upload_dir(
            &store,
            &local.join("landing"),
            &format!("landing-{version}"),
        )
        .await;
    }
    let proxy = S3FaultProxy::start(moto.port).await;
    let mut cluster =
        Cluster::start_with_env(2, moto.env_via(&format!("http://127.0.0.1:{}", proxy.port))).await;
    let succeeded = |run: &sluice_proto::v1::Run, logs: String| {
        assert_eq!(status(run), RunStatus::Succeeded, "{run:?}{logs}");
    };
    // What each delivery gives without faults, and the two in sequence.
    let first = cleanse(&cluster, "v1", "control-v1").await;
    succeeded(&first, cluster.logs());
    let old = claims_by_month(&store, "control-v1/claims").await;
    let second = cleanse(&cluster, "v2", "control").await;
    succeeded(&second, cluster.logs());
    let new = claims_by_month(&store, "control/claims").await;
    assert_ne!(old, new, "the deliveries must differ");
    let third = cleanse(&cluster, "v3", "control").await;
    succeeded(&third, cluster.logs());
    let new_then_later = claims_by_month(&store, "control/claims").await;
    assert_eq!(new_then_later.len(), new.len() + 1);

    let exists = |key: String| {
        let store = std::sync::Arc::clone(&store);
        async move { store.head(&ObjectPath::from(key)).await.is_ok() }
    };
    // The object of the last call failed: the one the run's last attempt stopped at.
    let last_key = |failed: &[String]| {
        let last = failed.last().expect("the proxy failed no call");
        last.trim_start_matches("/lake/").to_owned()
    };
    // A run whose commit stopped part way: it failed naming that object, and readers are
    // told the output is incomplete.
    let stopped_part_way = |stuck: &sluice_proto::v1::Run, failed: &[String]| {
        assert_eq!(status(stuck), RunStatus::Failed, "{stuck:?}");
        assert!(
            stuck.error.contains("commit stopped part way")
                && stuck.error.contains(&last_key(failed)),
            "{}",
            stuck.error
        );
    };
    // The case's output is whole: exactly `expected`, marked complete, nothing staged.
    let whole = |case: &str, expected: &BTreeMap<String, std::collections::BTreeSet<String>>| {
        let (store, case, expected) = (
            std::sync::Arc::clone(&store),
            case.to_owned(),
            expected.clone(),
        );
        async move {
            assert_eq!(
                claims_by_month(&store, &format!("{case}/claims")).await,
                expected
            );
            let success = ObjectPath::from(format!("{case}/claims/_SUCCESS"));
            assert!(store.head(&success).await.is_ok(), "{case}: no _SUCCESS");
            let staged = keys(&store, &format!("{case}/claims/_temporary")).await;
            assert!(staged.is_empty(), "{case}: left in staging: {staged:?}");
        }
    };

    // A copy (the first half of a move) fails once: the plan is retried and commits.
    let case = "copy-once";
    let (once, failed) = second_delivery_under(
        &cluster,
        &proxy,
        case,
        FaultRule {
            call: S3Call::Copy,
            key_contains: format!("{case}/claims/fill_month="),
            nth: 2,
            persistent: false,
        },
    )
    .await;
    succeeded(&once, cluster.logs());
    assert_eq!(failed.len(), 1);
    whole(case, &new).await;

    // The `_SUCCESS` marker cannot be written once: retried, the run commits.
    let case = "success-once";
    let (replaced, failed) = second_delivery_under(
        &cluster,
        &proxy,
        case,
        FaultRule {
            call: S3Call::Put,
            key_contains: format!("{case}/claims/_SUCCESS"),
            nth: 1,
            persistent: false,
        },
    )
    .await;
    succeeded(&replaced, cluster.logs());
    assert_eq!(failed.len(), 1);
    assert_eq!(
        claims_by_month(&store, &format!("{case}/claims")).await,
        new
    );
    assert!(exists(format!("{case}/claims/_SUCCESS")).await);

    // The commit plan cannot be written: nothing changes, and nothing is left behind.
    let case = "plan-refused";
    // Only the plan's write fails: the tasks' staged files are written.
    let (refused, failed) = second_delivery_under(
        &cluster,
        &proxy,
        case,
        FaultRule {
            call: S3Call::Put,
            key_contains: "/commit-plan.json".into(),
            nth: 1,
            persistent: true,
        },
    )
    .await;
    assert_eq!(status(&refused), RunStatus::Failed, "{refused:?}");
    assert!(
        refused.error.contains("commit failed, nothing changed")
            && refused.error.contains(&last_key(&failed)),
        "{}",
        refused.error
    );
    whole(case, &old).await;

    // Every copy from the second on fails: the run fails naming the object, `_SUCCESS`
    // is gone (readers are told the output is incomplete), and the next scheduler start
    // completes the commit and marks the run succeeded.
    let case = "copy-down";
    let (stuck, failed) = second_delivery_under(
        &cluster,
        &proxy,
        case,
        FaultRule {
            call: S3Call::Copy,
            key_contains: format!("{case}/claims/fill_month="),
            nth: 2,
            persistent: true,
        },
    )
    .await;
    stopped_part_way(&stuck, &failed);
    assert!(!exists(format!("{case}/claims/_SUCCESS")).await);
    cluster.kill_scheduler();
    cluster.start_scheduler().await;
    cluster.start_executor(2);
    cluster.start_executor(3);
    cluster.wait_for_executors(2).await;
    let recovered = cluster.run(&stuck.run_id).await;
    assert_eq!(status(&recovered), RunStatus::Succeeded, "{recovered:?}");
    assert!(
        recovered
            .warnings
            .iter()
            .any(|w| w.contains("completed when the scheduler started again")),
        "{recovered:?}"
    );
    whole(case, &new).await;

    // Every delete of a replaced file fails: the new files are in place beside the old
    // ones without `_SUCCESS`; the next run on the output (a later month) completes the
    // stopped commit before its own, and the stopped run becomes succeeded.
    let case = "delete-down";
    let (stuck, failed) = second_delivery_under(
        &cluster,
        &proxy,
        case,
        FaultRule {
            call: S3Call::Delete,
            key_contains: format!("{case}/claims/fill_month="),
            nth: 1,
            persistent: true,
        },
    )
    .await;
    stopped_part_way(&stuck, &failed);
    assert!(!exists(format!("{case}/claims/_SUCCESS")).await);
    let later = cleanse(&cluster, "v3", case).await;
    succeeded(&later, cluster.logs());
    assert_eq!(
        claims_by_month(&store, &format!("{case}/claims")).await,
        new_then_later
    );
    let settled = cluster.run(&stuck.run_id).await;
    assert_eq!(status(&settled), RunStatus::Succeeded, "{settled:?}");
    assert!(
        settled.warnings.iter().any(|w| w.contains(&later.run_id)),
        "{settled:?}"
    );
    assert!(
        keys(&store, &format!("{case}/claims/_temporary"))
            .await
            .is_empty()
    );
}
