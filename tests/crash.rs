//! The scheduler killed at each step of a commit (fault injection:
//! `SLUICE_FAULT_KILL_AT=commit:<step>` ends the process there as SIGKILL would), then
//! started again: before the commit plan the run is `interrupted` and the output holds
//! exactly its previous rows; from the plan on, the restart completes the commit, the run
//! is `succeeded` with its outputs, and the output holds exactly the rows a run without
//! a crash writes. Nothing is left in staging, no lock outlives the run, and readers
//! that wait for `_SUCCESS` never see a half-replaced output as complete.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{Cluster, status};
use datafusion::arrow::util::display::array_value_to_string;
use sluice_proto::v1::RunStatus;

const JOB: &str = "apiVersion: sluice/v1\nname: claims_by_state\n\
    params:\n  landing: {type: path, required: true}\n  out: {type: path, required: true}\n\
    sources:\n  claims: {format: csv, path: \"{{landing}}/claims\"}\n\
    outputs:\n  - {name: claims, path: \"{{out}}\", partition_by: [state]}\n";

/// Each partition's rows, as sorted text.
fn rows(root: &Path) -> BTreeMap<String, Vec<String>> {
    common::read_partitioned(root)
        .into_iter()
        .map(|(partition, batches)| {
            let mut rows: Vec<String> = batches
                .iter()
                .flat_map(|batch| {
                    (0..batch.num_rows()).map(move |row| {
                        batch
                            .columns()
                            .iter()
                            .map(|column| array_value_to_string(column, row).unwrap())
                            .collect::<Vec<_>>()
                            .join("|")
                    })
                })
                .collect();
            rows.sort();
            (partition, rows)
        })
        .collect()
}

/// Equal partition by partition; a difference is shown by its first partition only.
fn assert_same(
    got: &BTreeMap<String, Vec<String>>,
    want: &BTreeMap<String, Vec<String>>,
    what: &str,
) {
    let keys: std::collections::BTreeSet<&String> = got.keys().chain(want.keys()).collect();
    for key in keys {
        assert_eq!(
            got.get(key),
            want.get(key),
            "{what}: partition {key} differs"
        );
    }
}

async fn submit(cluster: &Cluster, landing: &Path, out: &Path) -> String {
    cluster
        .submit(
            JOB,
            "claims_by_state.yaml",
            &[
                ("landing", landing.display().to_string()),
                ("out", out.display().to_string()),
            ],
        )
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_killed_at_any_commit_step_leaves_the_old_or_the_new_rows_and_says_which() {
    let _serial = common::one_cluster_at_a_time().await;
    let lake = tempfile::tempdir().unwrap();
    let (old, new) = (lake.path().join("old"), lake.path().join("new"));
    sluice_jobs::datagen::write_claims(&old, 300, &[1], 1).unwrap();
    sluice_jobs::datagen::write_claims(&new, 300, &[1], 2).unwrap();
    let (old, new) = (old.join("landing"), new.join("landing"));

    // What a run of the new data writes when nothing goes wrong.
    let mut cluster = Cluster::start(1).await;
    let reference = lake.path().join("reference");
    let run = submit(&cluster, &new, &reference).await;
    assert_eq!(
        status(&cluster.wait_final(&run).await),
        RunStatus::Succeeded
    );
    let expected_new = rows(&reference);
    assert!(
        expected_new.len() > 2,
        "too few partitions to move several files"
    );

    for step in [
        "before_plan",
        "after_plan",
        "mid_moves",
        "after_moves",
        "after_success",
    ] {
        let out = lake.path().join(format!("out-{step}"));
        let first = submit(&cluster, &old, &out).await;
        assert_eq!(
            status(&cluster.wait_final(&first).await),
            RunStatus::Succeeded
        );
        let expected_old = rows(&out);
        assert_ne!(expected_old, expected_new);
        // The new run replaces the partitions it produces and keeps the others.
        let mut replaced = expected_old.clone();
        replaced.extend(expected_new.clone());

        // The next run's scheduler dies at `step` of its commit.
        cluster.kill_scheduler();
        cluster.scheduler_env = vec![("SLUICE_FAULT_KILL_AT".into(), format!("commit:{step}"))];
        cluster.start_scheduler().await;
        cluster.wait_for_executors(1).await;
        let doomed = submit(&cluster, &new, &out).await;
        let exit = cluster.wait_scheduler_exit().await;
        assert!(!exit.success(), "{step}: the scheduler did not stop");
        assert!(
            cluster.logs().contains(&format!("stops at commit:{step}")),
            "{step}: stopped elsewhere: {}",
            cluster.logs()
        );
        // A reader waiting for `_SUCCESS` is never told a half-replaced output is done.
        match step {
            // Nothing moved yet: the previous rows, complete.
            "before_plan" | "after_plan" => assert_same(
                &rows(&out),
                &expected_old,
                &format!("{step}: before recovery"),
            ),
            // Files moving: `_SUCCESS` is gone until the last one is in place.
            "mid_moves" | "after_moves" => {
                assert!(
                    !out.join("_SUCCESS").exists(),
                    "{step}: _SUCCESS during the moves"
                )
            }
            _ => assert!(out.join("_SUCCESS").exists()),
        }

        cluster.scheduler_env.clear();
        cluster.start_scheduler().await;
        cluster.wait_for_executors(1).await;
        let run = cluster.run(&doomed).await;
        if step == "before_plan" {
            assert_eq!(status(&run), RunStatus::Interrupted, "{step}: {run:?}");
            assert!(run.outputs.is_empty(), "{step}: {run:?}");
            assert_same(&rows(&out), &expected_old, &format!("{step}: the old rows"));
        } else {
            assert_eq!(status(&run), RunStatus::Succeeded, "{step}: {run:?}");
            assert_same(&rows(&out), &replaced, &format!("{step}: the new rows"));
            assert_eq!(run.outputs.len(), 1, "{step}: {run:?}");
            let written: usize = expected_new.values().map(Vec::len).sum();
            assert_eq!(run.outputs[0].rows_written as usize, written, "{step}");
        }
        assert!(out.join("_SUCCESS").exists(), "{step}: no _SUCCESS");
        assert!(
            !out.join("_temporary").exists(),
            "{step}: staging left behind"
        );
        assert!(
            !out.join("_sluice_lock").exists(),
            "{step}: a lock outlived its run"
        );

        // The output takes the next run as usual.
        let next = submit(&cluster, &new, &out).await;
        assert_eq!(
            status(&cluster.wait_final(&next).await),
            RunStatus::Succeeded,
            "{step}"
        );
        assert_same(&rows(&out), &replaced, &format!("{step}: the next run"));
    }
}

const TWO_OUTPUTS: &str = "apiVersion: sluice/v1\nname: claims_twice\n\
    params:\n  landing: {type: path, required: true}\n  out: {type: path, required: true}\n\
    sources:\n  claims: {format: csv, path: \"{{landing}}/claims\"}\n\
    outputs:\n  - {name: by_state, path: \"{{out}}/by_state\", partition_by: [state]}\n  \
    - {name: flat, path: \"{{out}}/flat\"}\n";

async fn submit_two(cluster: &Cluster, landing: &Path, out: &Path) -> String {
    let params = [
        ("landing", landing.display().to_string()),
        ("out", out.display().to_string()),
    ];
    cluster
        .submit(TWO_OUTPUTS, "claims_twice.yaml", &params)
        .await
        .unwrap()
}

/// A run with two outputs commits them together: killed after both plans but before
/// its decision, neither output changes and the run is `interrupted`; killed after the
/// first output is in place, the restart puts the second in place too and the run is
/// `succeeded`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_with_two_outputs_commits_both_or_neither() {
    let _serial = common::one_cluster_at_a_time().await;
    let lake = tempfile::tempdir().unwrap();
    let (old, new) = (lake.path().join("old"), lake.path().join("new"));
    sluice_jobs::datagen::write_claims(&old, 200, &[1], 1).unwrap();
    sluice_jobs::datagen::write_claims(&new, 200, &[1], 2).unwrap();
    let (old, new) = (old.join("landing"), new.join("landing"));
    let mut cluster = Cluster::start(1).await;
    let reference = lake.path().join("reference");
    let run = submit_two(&cluster, &new, &reference).await;
    assert_eq!(
        status(&cluster.wait_final(&run).await),
        RunStatus::Succeeded
    );
    for (step, commits) in [("before_decision", false), ("between_outputs", true)] {
        let out = lake.path().join(format!("out-{step}"));
        let first = submit_two(&cluster, &old, &out).await;
        assert_eq!(
            status(&cluster.wait_final(&first).await),
            RunStatus::Succeeded
        );
        let before = (rows(&out.join("by_state")), rows(&out.join("flat")));
        let mut after = before.clone();
        after.0.extend(rows(&reference.join("by_state")));
        after.1 = rows(&reference.join("flat"));

        cluster.kill_scheduler();
        cluster.scheduler_env = vec![("SLUICE_FAULT_KILL_AT".into(), format!("commit:{step}"))];
        cluster.start_scheduler().await;
        cluster.wait_for_executors(1).await;
        let doomed = submit_two(&cluster, &new, &out).await;
        assert!(!cluster.wait_scheduler_exit().await.success(), "{step}");
        cluster.scheduler_env.clear();
        cluster.start_scheduler().await;
        cluster.wait_for_executors(1).await;
        let run = cluster.run(&doomed).await;
        let (want, status_wanted) = if commits {
            (&after, RunStatus::Succeeded)
        } else {
            (&before, RunStatus::Interrupted)
        };
        assert_eq!(status(&run), status_wanted, "{step}: {run:?}");
        assert_same(
            &rows(&out.join("by_state")),
            &want.0,
            &format!("{step}: by_state"),
        );
        assert_same(&rows(&out.join("flat")), &want.1, &format!("{step}: flat"));
        for output in ["by_state", "flat"] {
            assert!(
                !out.join(output).join("_temporary").exists(),
                "{step}: {output} staging"
            );
            assert!(
                !out.join(output).join("_sluice_commits").exists(),
                "{step}: {output}: the run's decision was left behind"
            );
        }
    }
}

/// A scheduler whose disk does not outlive it keeps a copy of its run store in S3
/// (`--state-backup`). Killed in the middle of a commit and replaced by one with an empty
/// state directory, the new one restores the store from S3 — the earlier run is there —
/// and finishes the commit the old one died in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_replaced_on_an_empty_disk_restores_its_runs_from_s3_and_finishes_the_commit() {
    let _serial = common::one_cluster_at_a_time().await;
    let lake = tempfile::tempdir().unwrap();
    let moto = common::moto::Moto::start(lake.path().join("moto.log"));
    moto.create_bucket("state");
    let (old, new) = (lake.path().join("old"), lake.path().join("new"));
    sluice_jobs::datagen::write_claims(&old, 300, &[1], 1).unwrap();
    sluice_jobs::datagen::write_claims(&new, 300, &[1], 2).unwrap();
    let (old, new) = (old.join("landing"), new.join("landing"));
    let backup = vec!["--state-backup".to_owned(), "s3://state/sluice".to_owned()];
    let mut cluster = Cluster::start_with(1, moto.env(), backup).await;

    // What the new data gives when nothing goes wrong, and the old data in place.
    let reference = lake.path().join("reference");
    let run = submit(&cluster, &new, &reference).await;
    assert_eq!(
        status(&cluster.wait_final(&run).await),
        RunStatus::Succeeded
    );
    let expected_new = rows(&reference);
    let out = lake.path().join("out");
    let earlier = submit(&cluster, &old, &out).await;
    assert_eq!(
        status(&cluster.wait_final(&earlier).await),
        RunStatus::Succeeded
    );
    let mut replaced = rows(&out);
    replaced.extend(expected_new.clone());

    // The next run's scheduler dies once its commit plan is written …
    cluster.kill_scheduler();
    cluster.scheduler_env = vec![("SLUICE_FAULT_KILL_AT".into(), "commit:after_plan".into())];
    cluster.start_scheduler().await;
    cluster.wait_for_executors(1).await;
    let doomed = submit(&cluster, &new, &out).await;
    let exit = cluster.wait_scheduler_exit().await;
    assert!(!exit.success(), "the scheduler did not stop");
    // … and its disk is gone with it.
    std::fs::remove_dir_all(cluster.state_dir()).unwrap();

    cluster.scheduler_env.clear();
    cluster.start_scheduler().await;
    cluster.wait_for_executors(1).await;
    assert!(
        cluster
            .logs()
            .contains("restored the run store from its copy"),
        "{}",
        cluster.logs()
    );
    assert_eq!(
        status(&cluster.run(&earlier).await),
        RunStatus::Succeeded,
        "the earlier run was lost"
    );
    let finished = cluster.run(&doomed).await;
    assert_eq!(status(&finished), RunStatus::Succeeded, "{finished:?}");
    assert_same(&rows(&out), &replaced, "after the restore");
    assert!(!out.join("_temporary").exists(), "staging left behind");
}

/// `sluice store backup` takes a consistent snapshot while the scheduler runs, and
/// `sluice store restore` puts it in place for a scheduler that lost its state
/// directory: the new one knows the earlier run. A file that is not a run store is
/// refused, and a store a restore replaces is kept beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_backed_up_while_running_restores_into_an_empty_state_directory() {
    let _serial = common::one_cluster_at_a_time().await;
    let lake = tempfile::tempdir().unwrap();
    sluice_jobs::datagen::write_claims(lake.path(), 200, &[1], 5).unwrap();
    let landing = lake.path().join("landing");
    let mut cluster = Cluster::start(1).await;
    let run = submit(&cluster, &landing, &lake.path().join("out")).await;
    assert_eq!(
        status(&cluster.wait_final(&run).await),
        RunStatus::Succeeded
    );

    let sluice = |args: &[&str]| {
        std::process::Command::new(common::sluice_bin())
            .args(args)
            .output()
            .unwrap()
    };
    let backup = lake.path().join("runs-backup.redb");
    let backed_up = sluice(&[
        "store",
        "backup",
        backup.to_str().unwrap(),
        "--scheduler",
        &cluster.url(),
    ]);
    assert!(backed_up.status.success(), "{backed_up:?}");
    cluster.kill_scheduler();

    let state = cluster.state_dir();
    let restore = |file: &std::path::Path| {
        sluice(&[
            "store",
            "restore",
            file.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ])
    };
    let not_a_store = lake.path().join("notes.txt");
    std::fs::write(&not_a_store, "these are not runs").unwrap();
    let refused = restore(&not_a_store);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not a run store this release reads"),
        "{refused:?}"
    );

    std::fs::remove_dir_all(cluster.state_dir()).unwrap();
    let restored = restore(&backup);
    assert!(restored.status.success(), "{restored:?}");
    cluster.start_scheduler().await;
    cluster.wait_for_executors(1).await;
    let known = cluster.run(&run).await;
    assert_eq!(status(&known), RunStatus::Succeeded, "{known:?}");
    cluster.kill_scheduler();

    // Over an existing store: that one is kept beside the restored one.
    let again = restore(&backup);
    assert!(again.status.success(), "{again:?}");
    let kept: Vec<_> = std::fs::read_dir(cluster.state_dir())
        .unwrap()
        .filter_map(|entry| entry.ok())
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .starts_with("runs.redb.before-restore-")
        })
        .collect();
    assert_eq!(kept.len(), 1, "{again:?}");
}

/// One partition per claim: a run whose record grows by hundreds of kilobytes when it
/// commits (every file and partition is listed), so its end needs new space in the store.
const BY_CLAIM: &str = "apiVersion: sluice/v1\nname: claims_by_id\n\
    params:\n  landing: {type: path, required: true}\n  out: {type: path, required: true}\n\
    sources:\n  claims: {format: csv, path: \"{{landing}}/claims\"}\n\
    outputs:\n  - {name: claims, path: \"{{out}}\", partition_by: [claim_id]}\n";

/// The run store's disk fills up while a run is in flight (the state directory is a
/// small tmpfs that another file fills): the run's outputs are committed, but its record
/// cannot be written, so the scheduler reports itself not ready and keeps retrying
/// instead of leaving the run `running` or calling it failed; once space returns, the
/// run is recorded `succeeded` with every file it committed, and the scheduler is ready
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_store_whose_disk_fills_mid_run_records_the_run_once_space_returns() {
    let _serial = common::one_cluster_at_a_time().await;
    let lake = tempfile::tempdir().unwrap();
    let claims = 600;
    sluice_jobs::datagen::write_claims(lake.path(), claims, &[1], 7).unwrap();
    let landing = lake.path().join("landing");
    let out = lake.path().join("out");
    let http = common::free_port();
    let http_args = vec!["--http-port".to_owned(), http.to_string()];
    let mut cluster = Cluster::start_with(1, Vec::new(), http_args).await;
    cluster.kill_scheduler();
    let disk = common::SmallDisk::mount(&cluster.state_dir(), "8m");
    cluster.start_scheduler().await;
    cluster.wait_for_executors(1).await;
    let ready = || common::http_get(http, "/readyz");
    assert!(ready().starts_with("HTTP/1.1 200"), "{}", ready());

    // The executor is paused so that the run is in flight when the disk fills.
    cluster.signal_executor(0, "STOP");
    let params = [
        ("landing", landing.display().to_string()),
        ("out", out.display().to_string()),
    ];
    let run = cluster
        .submit(BY_CLAIM, "claims_by_id.yaml", &params)
        .await
        .unwrap();
    cluster
        .wait_until(&run, "running", |run| status(run) == RunStatus::Running)
        .await;
    let filler = disk.fill("filler");
    cluster.signal_executor(0, "CONT");

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let unready = loop {
        let answer = ready();
        if answer.starts_with("HTTP/1.1 503") {
            break answer;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the scheduler stayed ready with a full store: {answer}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert!(unready.contains("runs.redb"), "{unready}");
    // The outputs are committed; the record does not say the run ended yet.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !out.join("_SUCCESS").exists() {
        assert!(std::time::Instant::now() < deadline, "{}", cluster.logs());
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(ready().starts_with("HTTP/1.1 503"), "{}", ready());

    std::fs::remove_file(&filler).unwrap();
    let finished = cluster.wait_final(&run).await;
    assert_eq!(status(&finished), RunStatus::Succeeded, "{finished:?}");
    // Every landed claim, in the partition of its id.
    let landed = std::fs::read_to_string(landing.join("claims/claims_2024_01.csv")).unwrap();
    let ids: std::collections::BTreeSet<&str> = landed
        .lines()
        .skip(1)
        .filter_map(|line| line.split(',').next())
        .collect();
    let written = rows(&out);
    assert_eq!(written.len(), ids.len(), "one partition per claim id");
    assert_eq!(written.values().map(Vec::len).sum::<usize>(), claims);
    let output = &finished.outputs[0];
    assert_eq!(output.partitions.len(), ids.len(), "{output:?}");
    assert_eq!(output.files.len(), common::data_files(&out).len());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !ready().starts_with("HTTP/1.1 200") {
        assert!(std::time::Instant::now() < deadline, "{}", ready());
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(
        cluster.logs().contains("the run store is writable again"),
        "{}",
        cluster.logs()
    );
}
