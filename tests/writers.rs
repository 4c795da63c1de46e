//! One writer per output across processes: a run holds its outputs' locks from submission
//! to its end, so a second scheduler's run or an embedded `sluice run` on the same output
//! — through another spelling of its path, or `s3a://` for `s3://` — is refused with
//! `OutputBusy` naming the holder, and writes nothing. A lease left by a dead owner on S3
//! is taken over once it expires.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};

use common::moto::{Moto, upload_dir};
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use sluice_proto::v1;

const JOB: &str = "apiVersion: sluice/v1\nname: claims_copy\n\
    params:\n  landing: {type: path, required: true}\n  out: {type: path, required: true}\n\
    sources:\n  claims: {format: csv, path: \"{{landing}}/claims\"}\n\
    outputs:\n  - {name: claims, path: \"{{out}}\"}\n";

fn sluice_run(dir: &Path, params: &[(&str, String)], env: &[(String, String)]) -> Output {
    std::fs::write(dir.join("claims_copy.yaml"), JOB).unwrap();
    let mut command = Command::new(common::sluice_bin());
    command.arg("run").arg("claims_copy.yaml").current_dir(dir);
    for (name, value) in params {
        command.arg("-p").arg(format!("{name}={value}"));
    }
    command.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    command.output().unwrap()
}

/// Every file below `dir` with its bytes, for "the landing is unchanged".
fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = walk(dir)
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            (path.display().to_string(), bytes)
        })
        .collect();
    files.sort();
    files
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}

/// A scheduler (with no executors, so its run waits holding its output) and an embedded
/// `sluice run` through a symlink to the same folder: the second is refused naming the
/// first run and its scheduler, and succeeds once that run is cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_the_same_local_output_is_refused_naming_the_holder() {
    let _serial = common::one_cluster_at_a_time().await;
    let cluster = common::Cluster::start(0).await;
    let lake = tempfile::tempdir().unwrap();
    sluice_jobs::datagen::write_claims(lake.path(), 50, &[1], 7).unwrap();
    let landing = lake.path().join("landing");
    let before = tree(&landing);
    let out = lake.path().join("staging/claims");
    let run_id = cluster
        .submit(
            JOB,
            "claims_copy.yaml",
            &[
                ("landing", landing.display().to_string()),
                ("out", out.display().to_string()),
            ],
        )
        .await
        .unwrap();
    assert!(out.join("_sluice_lock").exists(), "the run holds no lock");

    // The same folder through a symlink, run by another process.
    std::os::unix::fs::symlink(lake.path().join("staging"), lake.path().join("alias")).unwrap();
    let other = tempfile::tempdir().unwrap();
    let params = [
        ("landing", landing.display().to_string()),
        (
            "out",
            lake.path().join("alias/./claims").display().to_string(),
        ),
    ];
    let refused = sluice_run(other.path(), &params, &[]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(&format!("is being written by run {run_id} (scheduler pid")),
        "{stderr}"
    );
    assert!(
        common::data_files(&out).is_empty(),
        "the refused run wrote data"
    );

    cluster
        .client()
        .await
        .cancel_run(v1::CancelRunRequest {
            run_id: run_id.clone(),
        })
        .await
        .unwrap();
    let run = cluster.wait_final(&run_id).await;
    assert_eq!(common::status(&run), v1::RunStatus::Cancelled, "{run:?}");
    assert!(
        !out.join("_sluice_lock").exists(),
        "the lock outlived its run"
    );

    let ran = sluice_run(other.path(), &params, &[]);
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    assert!(!common::data_files(&out).is_empty());
    assert!(!out.join("_sluice_lock").exists());
    assert_eq!(tree(&landing), before);
}

/// On S3 the lock is an object: one another scheduler holds with a live lease makes a
/// run on `s3a://` of the same place fail naming that holder; once the lease has expired
/// (the holder died) the run takes it over, commits and gives it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_output_locked_elsewhere_is_busy_until_the_lease_expires() {
    let _serial = common::one_cluster_at_a_time().await;
    let scratch = tempfile::tempdir().unwrap();
    let moto = Moto::start(scratch.path().join("moto.log"));
    moto.create_bucket("lake");
    let store = moto.store("lake");
    let local = scratch.path().join("generated");
    sluice_jobs::datagen::write_claims(&local, 50, &[1], 7).unwrap();
    upload_dir(&store, &local.join("landing"), "landing").await;
    let lock = ObjectPath::from("staging/claims/_sluice_lock");
    let now = chrono::Utc::now().timestamp_millis();
    let planted = |renewed_at_ms: i64| {
        serde_json::json!({
            "run_id": "r-elsewhere",
            "owner": {"host": "scheduler-b", "pid": 4242, "state_dir": "/var/lib/sluice"},
            "renewed_at_ms": renewed_at_ms,
            "lease_ms": 60_000,
        })
        .to_string()
    };
    store
        .put(&lock, planted(now).into_bytes().into())
        .await
        .unwrap();
    let params = [
        ("landing", "s3://lake/landing".to_owned()),
        ("out", "s3a://lake/staging/claims".to_owned()),
    ];
    let refused = sluice_run(scratch.path(), &params, &moto.env());
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("is being written by run r-elsewhere (scheduler pid 4242 on scheduler-b"),
        "{stderr}"
    );

    // The holder stopped renewing two minutes ago: its lease has run out.
    store
        .put(&lock, planted(now - 120_000).into_bytes().into())
        .await
        .unwrap();
    let ran = sluice_run(scratch.path(), &params, &moto.env());
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    assert!(
        matches!(
            store.head(&lock).await,
            Err(object_store::Error::NotFound { .. })
        ),
        "the lock outlived the run"
    );
    assert!(
        store
            .head(&ObjectPath::from("staging/claims/_SUCCESS"))
            .await
            .is_ok()
    );
}

const APPEND_JOB: &str = "apiVersion: sluice/v1\nname: claims_append\n\
    params:\n  landing: {type: path, required: true}\n  out: {type: path, required: true}\n\
    sources:\n  claims: {format: csv, path: \"{{landing}}/claims\"}\n\
    outputs:\n  - {name: claims, path: \"{{out}}\", mode: append}\n";

/// Submits [`APPEND_JOB`] with the key a Step Functions state would give it.
async fn submit_append(cluster: &common::Cluster, landing: &Path, out: &Path) -> String {
    let request = v1::SubmitRunRequest {
        job: Some(v1::submit_run_request::Job::DefinitionYaml(
            APPEND_JOB.to_owned(),
        )),
        params: [
            ("landing".to_owned(), landing.display().to_string()),
            ("out".to_owned(), out.display().to_string()),
        ]
        .into_iter()
        .collect(),
        origin: "claims_append.yaml".into(),
        working_dir: String::new(),
        task_token: String::new(),
        idempotency_key: "arn:aws:states:us-east-1:1:execution:daily:2024-03".into(),
    };
    cluster
        .client()
        .await
        .submit_run(request)
        .await
        .unwrap()
        .into_inner()
        .run_id
}

fn rows_below(root: &Path) -> usize {
    common::read_partitioned(root)
        .values()
        .flatten()
        .map(|batch| batch.num_rows())
        .sum()
}

/// An `append` run names its work with an idempotency key: the same key again appends
/// nothing (and says which run committed it), another key appends; and a run whose
/// scheduler died after writing its commit plan is completed at the restart, so the
/// retry with its key (as Step Functions retries a state) appends nothing either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_retried_with_its_idempotency_key_appends_once() {
    let _serial = common::one_cluster_at_a_time().await;
    let lake = tempfile::tempdir().unwrap();
    sluice_jobs::datagen::write_claims(lake.path(), 120, &[1], 3).unwrap();
    let landing = lake.path().join("landing");
    let landed = std::fs::read_to_string(
        std::fs::read_dir(landing.join("claims"))
            .unwrap()
            .flatten()
            .next()
            .unwrap()
            .path(),
    )
    .unwrap()
    .lines()
    .count()
        - 1;
    let out = lake.path().join("staging/appended");
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("claims_append.yaml"), APPEND_JOB).unwrap();
    let append = |key: &str| {
        Command::new(common::sluice_bin())
            .args(["run", "claims_append.yaml", "--idempotency-key", key])
            .arg("-p")
            .arg(format!("landing={}", landing.display()))
            .arg("-p")
            .arg(format!("out={}", out.display()))
            .current_dir(work.path())
            .output()
            .unwrap()
    };
    assert!(append("batch-2024-01").status.success());
    assert_eq!(rows_below(&out), landed);
    let again = append("batch-2024-01");
    assert!(again.status.success());
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(
        stdout.contains("idempotency key `batch-2024-01` was committed by run r-"),
        "{stdout}"
    );
    assert_eq!(rows_below(&out), landed, "the same key appended twice");
    assert!(append("batch-2024-02").status.success());
    assert_eq!(rows_below(&out), 2 * landed);

    // The scheduler dies once the commit plan is written; the restart completes it.
    let mut cluster = common::Cluster::start(1).await;
    cluster.kill_scheduler();
    cluster.scheduler_env = vec![("SLUICE_FAULT_KILL_AT".into(), "commit:after_plan".into())];
    cluster.start_scheduler().await;
    cluster.wait_for_executors(1).await;
    let crashed = submit_append(&cluster, &landing, &out).await;
    assert!(!cluster.wait_scheduler_exit().await.success());
    cluster.scheduler_env.clear();
    cluster.start_scheduler().await;
    cluster.wait_for_executors(1).await;
    let run = cluster.run(&crashed).await;
    assert_eq!(common::status(&run), v1::RunStatus::Succeeded, "{run:?}");
    assert_eq!(rows_below(&out), 3 * landed);
    let retry = submit_append(&cluster, &landing, &out).await;
    let retry = cluster.wait_final(&retry).await;
    assert_eq!(
        common::status(&retry),
        v1::RunStatus::Succeeded,
        "{retry:?}"
    );
    assert!(
        retry
            .warnings
            .iter()
            .any(|w| w.contains(&format!("was committed by run {crashed}"))),
        "{retry:?}"
    );
    assert_eq!(rows_below(&out), 3 * landed, "the retry appended again");
}

/// Two scheduler processes (each with its own executor and run store) and an embedded
/// `sluice run` on one S3 output, spelled `s3://` by the first and `s3a://` by the
/// others: while the first scheduler's run holds it, the second scheduler refuses its
/// submission and `sluice run` exits non-zero, both naming the holding run; once that run
/// has committed, the second scheduler's run replaces its rows, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_and_an_embedded_run_on_one_s3_output_take_turns() {
    let _serial = common::one_cluster_at_a_time().await;
    let scratch = tempfile::tempdir().unwrap();
    let moto = Moto::start(scratch.path().join("moto.log"));
    moto.create_bucket("lake");
    let store = moto.store("lake");
    let local = scratch.path().join("generated");
    let sample = sluice_jobs::datagen::write_claims(&local, 2_000, &[1, 2], 11).unwrap();
    upload_dir(&store, &local.join("landing"), "landing").await;
    let first = common::Cluster::start_with_env(1, moto.env()).await;
    let second = common::Cluster::start_with_env(1, moto.env()).await;
    let params = |scheme: &str| {
        [
            ("landing", "s3://lake/landing".to_owned()),
            ("out", format!("{scheme}://lake/staging/claims")),
        ]
    };

    let holder = first
        .submit(JOB, "claims_copy.yaml", &params("s3"))
        .await
        .unwrap();
    let refused = second
        .submit(JOB, "claims_copy.yaml", &params("s3a"))
        .await
        .expect_err("the second scheduler accepted a run on a held output");
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(
        refused
            .message()
            .contains(&format!("is being written by run {holder}")),
        "{refused:?}"
    );
    let embedded = sluice_run(scratch.path(), &params("s3a"), &moto.env());
    let stderr = String::from_utf8_lossy(&embedded.stderr);
    assert!(!embedded.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("is being written by run {holder}")),
        "{stderr}"
    );
    let held = first.wait_final(&holder).await;
    assert_eq!(common::status(&held), v1::RunStatus::Succeeded, "{held:?}");

    // Free again: the second scheduler's run takes it and replaces the rows.
    let next = second
        .submit(JOB, "claims_copy.yaml", &params("s3a"))
        .await
        .unwrap();
    let next = second.wait_final(&next).await;
    assert_eq!(
        common::status(&next),
        v1::RunStatus::Succeeded,
        "{next:?}{}",
        second.logs()
    );
    let visible = common::moto::visible_files(&store, "staging/claims").await;
    let mut committed = next.outputs[0].files.clone();
    committed.sort();
    assert_eq!(
        visible.keys().cloned().collect::<Vec<_>>(),
        committed,
        "files of the first run left beside the second's"
    );
    assert_eq!(visible.values().sum::<usize>(), sample.claim_rows);
}

/// A scheduler paused mid-run (SIGSTOP, as a long GC pause or a frozen VM would pause
/// it) stops renewing its output's lease; once the lease has run out a second
/// scheduler takes the output over and commits. When the first resumes, its commit is
/// refused by the lock's fencing: the output holds exactly the second run's files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_schedulers_commit_is_refused_once_another_took_its_output_over() {
    let _serial = common::one_cluster_at_a_time().await;
    let scratch = tempfile::tempdir().unwrap();
    let moto = Moto::start(scratch.path().join("moto.log"));
    moto.create_bucket("lake");
    let store = moto.store("lake");
    let local = scratch.path().join("generated");
    sluice_jobs::datagen::write_claims(&local, 80_000, &[1, 2], 19).unwrap();
    upload_dir(&store, &local.join("landing"), "landing").await;
    // Small files, so that the first run is still writing when it is paused.
    let job = common::example("claims_cleanse.yaml").replace(
        "    mode: overwrite_partitions\n",
        "    mode: overwrite_partitions\n    target_file_size: 24KiB\n",
    );
    let lease = vec!["--output-lease-secs".to_owned(), "3".to_owned()];
    let first = common::Cluster::start_with(1, moto.env(), lease.clone()).await;
    let second = common::Cluster::start_with(1, moto.env(), lease).await;
    let params = |scheme: &str| {
        [
            ("landing", "s3://lake/landing".to_owned()),
            ("staging", format!("{scheme}://lake/staging")),
        ]
    };

    let paused = first
        .submit(&job, "cleanse.yaml", &params("s3"))
        .await
        .unwrap();
    let staging = ObjectPath::from(format!("staging/claims/_temporary/{paused}"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let staged: Vec<_> = futures::TryStreamExt::try_collect(store.list(Some(&staging)))
            .await
            .unwrap();
        if !staged.is_empty() {
            break;
        }
        let run = first.run(&paused).await;
        assert_eq!(common::status(&run), v1::RunStatus::Running, "{run:?}");
        assert!(
            std::time::Instant::now() < deadline,
            "the run never staged a file"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    first.signal_scheduler("STOP");
    // Past the lease: the lock is the second scheduler's to take.
    tokio::time::sleep(std::time::Duration::from_millis(4_500)).await;
    let taker = second.submit(&job, "cleanse.yaml", &params("s3a")).await;
    let taker = match taker {
        Ok(taker) => taker,
        Err(err) => {
            first.signal_scheduler("CONT");
            panic!("the expired lease was not taken over: {err:?}");
        }
    };
    let taker = second.wait_final(&taker).await;
    first.signal_scheduler("CONT");
    assert_eq!(
        common::status(&taker),
        v1::RunStatus::Succeeded,
        "{taker:?}{}",
        second.logs()
    );

    let resumed = first.wait_final(&paused).await;
    assert_ne!(
        common::status(&resumed),
        v1::RunStatus::Succeeded,
        "the paused run committed: {resumed:?}"
    );
    assert!(
        resumed.error.contains("is no longer this run's"),
        "{resumed:?}{}",
        first.logs()
    );
    let files: Vec<String> = common::moto::visible_files(&store, "staging/claims")
        .await
        .into_keys()
        .collect();
    let mut committed = taker.outputs[0].files.clone();
    committed.sort();
    assert_eq!(
        files, committed,
        "the paused run's files reached the output"
    );
}
