//! End to end on a real cluster: `sluice scheduler` and two `sluice executor` processes on
//! loopback, the example jobs submitted over gRPC, outputs checked against values the
//! test computes from the landing files itself; cancellation; a scheduler restart.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::{Cluster, example, read_partitioned, status};
use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{Decimal128Type, Int32Type, Int64Type};
use sluice_proto::v1::{self, RunStatus};

/// One claim as the test reads it from landing CSV, independently of Sluice.
#[derive(Debug, Clone)]
struct Claim {
    claim_id: String,
    patient_id: String,
    ndc: String,
    fill_month: String,
    quantity: i64,
    paid_cents: i64,
    state: String,
    adjudicated_at: String,
}

/// The cleansed claims the example job should write: trimmed, quantity present and
/// >= 1, the latest adjudication of each claim id.
fn expected_claims(landing: &Path) -> BTreeMap<String, Claim> {
    let mut latest: BTreeMap<String, Claim> = BTreeMap::new();
    let dir = landing.join("claims");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(file).unwrap();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            if f[5].is_empty() {
                continue;
            }
            let quantity: i64 = f[5].parse().unwrap();
            if quantity < 1 {
                continue;
            }
            let (units, cents) = f[7].split_once('.').unwrap();
            let claim = Claim {
                claim_id: f[0].to_owned(),
                patient_id: f[1].to_owned(),
                ndc: f[3].to_owned(),
                fill_month: f[4][..7].to_owned(),
                quantity,
                paid_cents: units.parse::<i64>().unwrap() * 100 + cents.parse::<i64>().unwrap(),
                state: f[9].to_owned(),
                adjudicated_at: f[10].to_owned(),
            };
            match latest.get(&claim.claim_id) {
                Some(existing) if existing.adjudicated_at >= claim.adjudicated_at => {}
                _ => {
                    latest.insert(claim.claim_id.clone(), claim);
                }
            }
        }
    }
    latest
}

fn params(dir: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("landing", dir.join("landing").display().to_string()),
        ("staging", dir.join("staging").display().to_string()),
        ("curated", dir.join("curated").display().to_string()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_jobs_run_distributed_and_write_what_the_input_implies() {
    let _serial = common::one_cluster_at_a_time().await;
    let cluster = Cluster::start(2).await;
    let data = cluster.dir.path().join("lake");
    let sample = sluice_jobs::datagen::write_claims(&data, 6_000, &[1, 2, 3], 11).unwrap();
    assert!(sample.claim_rows >= 6_000);
    let all = params(&data);

    // Cleanse: landing CSV → staging Parquet partitioned by fill month.
    let cleanse_params: Vec<_> = all
        .iter()
        .filter(|(k, _)| *k != "curated")
        .cloned()
        .collect();
    let run_id = cluster
        .submit(
            &example("claims_cleanse.yaml"),
            "claims_cleanse.yaml",
            &cleanse_params,
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

    let expected = expected_claims(&data.join("landing"));
    let staging = data.join("staging").join("claims");
    let written = read_partitioned(&staging);
    let mut by_month: BTreeMap<String, usize> = BTreeMap::new();
    for claim in expected.values() {
        *by_month
            .entry(format!("fill_month={}", claim.fill_month))
            .or_default() += 1;
    }
    let written_by_month: BTreeMap<String, usize> = written
        .iter()
        .map(|(folder, batches)| (folder.clone(), batches.iter().map(|b| b.num_rows()).sum()))
        .collect();
    assert_eq!(written_by_month, by_month);
    // Rows are shuffled by the partition columns before the write: one task, one file
    // per month at this size, not one small file per task and month.
    let mut files_per_month: BTreeMap<String, usize> = BTreeMap::new();
    for file in common::data_files(&staging) {
        *files_per_month
            .entry(file.split('/').next().unwrap().to_owned())
            .or_default() += 1;
    }
    assert!(
        files_per_month.values().all(|files| *files == 1),
        "{files_per_month:?}"
    );

    // Each claim once, with the latest adjudication's amount and trimmed text.
    let mut seen = BTreeSet::new();
    for batches in written.values() {
        for batch in batches {
            assert!(
                batch.schema().index_of("fill_month").is_err(),
                "partition column stays in folder names"
            );
            let ids = batch
                .column_by_name("claim_id")
                .unwrap()
                .as_string::<i32>()
                .clone();
            let paid = batch
                .column_by_name("paid_amount")
                .unwrap()
                .as_primitive::<Decimal128Type>()
                .clone();
            let quantity = batch
                .column_by_name("quantity")
                .unwrap()
                .as_primitive::<Int32Type>()
                .clone();
            let state = batch
                .column_by_name("state")
                .unwrap()
                .as_string::<i32>()
                .clone();
            for row in 0..batch.num_rows() {
                let id = ids.value(row).to_owned();
                let claim = &expected[&id];
                assert_eq!(paid.value(row) as i64, claim.paid_cents, "claim {id}");
                assert_eq!(i64::from(quantity.value(row)), claim.quantity, "claim {id}");
                assert_eq!(state.value(row), claim.state, "claim {id}");
                assert!(seen.insert(id.clone()), "claim {id} written twice");
            }
        }
    }
    assert_eq!(seen.len(), expected.len());

    // Spark's layout: part files with a task number and uuid, _SUCCESS, no staging left.
    for file in common::data_files(&staging) {
        let name = Path::new(&file)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string();
        assert!(
            name.starts_with("part-") && name.ends_with(".snappy.parquet"),
            "{name}"
        );
        assert_eq!(
            name.len(),
            "part-00000-".len() + 36 + "-c000.snappy.parquet".len(),
            "{name}"
        );
    }
    assert!(staging.join("_SUCCESS").exists());
    assert!(!staging.join("_temporary").exists());

    // The run record: rows, files, and both executors did work.
    let output = &run.outputs[0];
    assert_eq!(output.rows_written, expected.len() as u64);
    assert_eq!(output.files.len(), common::data_files(&staging).len());
    assert_eq!(run.rows_read, sample.claim_rows as u64);
    assert_eq!(
        run.tasks_by_executor.len(),
        2,
        "tasks by executor: {:?}",
        run.tasks_by_executor
    );
    assert!(run.tasks_by_executor.values().all(|tasks| *tasks > 0));

    // Aggregate: staging Parquet joined to the product reference.
    let run_id = cluster
        .submit(&example("claims_monthly.yaml"), "claims_monthly.yaml", &all)
        .await
        .unwrap();
    let run = cluster.wait_final(&run_id).await;
    assert_eq!(
        status(&run),
        RunStatus::Succeeded,
        "{run:?}{}",
        cluster.logs()
    );

    type Group = (String, String, String);
    let mut expected_groups: BTreeMap<Group, (i64, BTreeSet<String>, i64, i64)> = BTreeMap::new();
    let names: BTreeMap<&str, &str> = sluice_jobs::datagen::PRODUCTS
        .iter()
        .map(|(ndc, name, _)| (*ndc, *name))
        .collect();
    for claim in expected.values() {
        let key = (
            claim.fill_month.clone(),
            names[claim.ndc.as_str()].to_owned(),
            claim.state.clone(),
        );
        let entry = expected_groups.entry(key).or_default();
        entry.0 += 1;
        entry.1.insert(claim.patient_id.clone());
        entry.2 += claim.quantity;
        entry.3 += claim.paid_cents;
    }
    let mut actual_groups = BTreeMap::new();
    for (folder, batches) in read_partitioned(&data.join("curated").join("claims_monthly")) {
        let month = folder.trim_start_matches("fill_month=").to_owned();
        for batch in batches {
            let product = batch
                .column_by_name("product_name")
                .unwrap()
                .as_string::<i32>()
                .clone();
            let state = batch
                .column_by_name("state")
                .unwrap()
                .as_string::<i32>()
                .clone();
            let prescriptions = batch
                .column_by_name("prescriptions")
                .unwrap()
                .as_primitive::<Int64Type>()
                .clone();
            let patients = batch
                .column_by_name("patients")
                .unwrap()
                .as_primitive::<Int64Type>()
                .clone();
            let units = batch
                .column_by_name("units")
                .unwrap()
                .as_primitive::<Int64Type>()
                .clone();
            let paid = batch
                .column_by_name("paid_amount")
                .unwrap()
                .as_primitive::<Decimal128Type>()
                .clone();
            for row in 0..batch.num_rows() {
                actual_groups.insert(
                    (
                        month.clone(),
                        product.value(row).to_owned(),
                        state.value(row).to_owned(),
                    ),
                    (
                        prescriptions.value(row),
                        patients.value(row),
                        units.value(row),
                        paid.value(row) as i64,
                    ),
                );
            }
        }
    }
    let expected_groups: BTreeMap<_, _> = expected_groups
        .into_iter()
        .map(|(key, (n, patients, units, paid))| (key, (n, patients.len() as i64, units, paid)))
        .collect();
    assert_eq!(actual_groups, expected_groups);

    // Sluice's own SQL functions run on the remote executors too.
    let run_id = cluster
        .submit(
            DOMAIN_FUNCTIONS,
            "domain_functions.yaml",
            &all[..1]
                .iter()
                .cloned()
                .chain([("curated", all[2].1.clone())])
                .collect::<Vec<_>>(),
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
    let mut by_ndc = BTreeMap::new();
    for batches in read_partitioned(&data.join("curated").join("by_ndc")).values() {
        for batch in batches {
            let ndc = batch
                .column_by_name("ndc11")
                .unwrap()
                .as_string::<i32>()
                .clone();
            let n = batch
                .column_by_name("n")
                .unwrap()
                .as_primitive::<Int64Type>()
                .clone();
            for row in 0..batch.num_rows() {
                by_ndc.insert(ndc.value(row).to_owned(), n.value(row));
            }
        }
    }
    let mut expected_by_ndc: BTreeMap<String, i64> = BTreeMap::new();
    for text in std::fs::read_dir(data.join("landing/claims"))
        .unwrap()
        .flatten()
    {
        for line in std::fs::read_to_string(text.path())
            .unwrap()
            .lines()
            .skip(1)
        {
            let ndc = line.split(',').nth(3).unwrap().replace('-', "");
            *expected_by_ndc.entry(ndc).or_default() += 1;
        }
    }
    assert_eq!(by_ndc, expected_by_ndc);
}

/// Landing claims counted by their NDC in 11-digit form, with Sluice's functions.
const DOMAIN_FUNCTIONS: &str = r#"apiVersion: sluice/v1
name: domain_functions
params:
  landing: {type: path, required: true}
  curated: {type: path, required: true}
sources:
  claims: {format: csv, path: "{{landing}}/claims"}
steps:
  - sql: |
      SELECT normalize_ndc(ndc) AS ndc11, count(*) AS n,
             sum(CASE WHEN us_state(state) IS NULL THEN 1 ELSE 0 END) AS unknown_states
      FROM input GROUP BY normalize_ndc(ndc)
outputs:
  - {name: by_ndc, path: "{{curated}}/by_ndc"}
"#;

/// A job that computes for minutes unless stopped: a cross join of the claims with
/// themselves, aggregated to a handful of rows.
/// A cross join of the claims with themselves, counted per state: slow enough to lose
/// executors in the middle of.
pub(crate) const SLOW_JOB: &str = r#"apiVersion: sluice/v1
name: slow_cross_join
params:
  landing: {type: path, required: true}
  out: {type: path, required: true}
sources:
  # FAILFAST: no malformed-rows branch (`permissive_slow_job` has one).
  claims: {format: csv, path: "{{landing}}/claims", csv: {mode: FAILFAST}}
steps:
  - sql: |
      SELECT a.state, count(*) AS pairs, sum(length(a.claim_id) + length(b.patient_id)) AS weight
      FROM input a CROSS JOIN input b
      WHERE a.payer <> b.payer OR a.ndc <> b.ndc
      GROUP BY a.state
outputs:
  - {name: pairs, path: "{{out}}", mode: error_if_exists}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_the_job_on_the_executors_and_writes_nothing() {
    let _serial = common::one_cluster_at_a_time().await;
    let cluster = Cluster::start(2).await;
    let data = cluster.dir.path().join("lake");
    sluice_jobs::datagen::write_claims(&data, 60_000, &[1, 2], 5).unwrap();
    let out = data.join("pairs");
    let run_id = cluster
        .submit(
            SLOW_JOB,
            "slow.yaml",
            &[
                ("landing", data.join("landing").display().to_string()),
                ("out", out.display().to_string()),
            ],
        )
        .await
        .unwrap();
    cluster
        .wait_until(&run_id, "running with stages", |run| {
            status(run) == RunStatus::Running
                && run.progress.as_ref().is_some_and(|p| p.stages_total > 0)
        })
        .await;
    // A second run on the same output is refused while the first one writes it.
    let second = cluster
        .submit(
            SLOW_JOB,
            "slow.yaml",
            &[
                ("landing", data.join("landing").display().to_string()),
                ("out", out.display().to_string()),
            ],
        )
        .await
        .unwrap_err();
    assert_eq!(second.code(), tonic::Code::FailedPrecondition);
    assert!(
        second
            .message()
            .contains(&format!("is being written by run {run_id}")),
        "{}",
        second.message()
    );

    // Let tasks reach the executors before cancelling.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let mut client = cluster.client().await;
    client
        .cancel_run(v1::CancelRunRequest {
            run_id: run_id.clone(),
        })
        .await
        .unwrap();
    let run = cluster.wait_final(&run_id).await;
    assert_eq!(status(&run), RunStatus::Cancelled, "{run:?}");
    assert!(
        common::data_files(&out).is_empty(),
        "a cancelled run left data"
    );
    assert!(!out.join("_SUCCESS").exists());

    // The executors were told to stop the tasks, and are free for the next run.
    let cancelled_on_executors =
        (0..2).any(|i| cluster.executor_log(i).contains("Cancelling tasks"));
    assert!(
        cancelled_on_executors,
        "no executor cancelled tasks:{}",
        cluster.logs()
    );
    let quick = cluster
        .submit(
            &example("claims_cleanse.yaml"),
            "claims_cleanse.yaml",
            &[
                ("landing", data.join("landing").display().to_string()),
                ("staging", data.join("staging").display().to_string()),
            ],
        )
        .await
        .unwrap();
    let run = cluster.wait_final(&quick).await;
    assert_eq!(status(&run), RunStatus::Succeeded, "{run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_scheduler_keeps_history_and_marks_in_flight_runs_interrupted() {
    let _serial = common::one_cluster_at_a_time().await;
    let mut cluster = Cluster::start(2).await;
    let data = cluster.dir.path().join("lake");
    sluice_jobs::datagen::write_claims(&data, 60_000, &[1], 3).unwrap();
    let landing = data.join("landing").display().to_string();
    let finished = cluster
        .submit(
            &example("claims_cleanse.yaml"),
            "claims_cleanse.yaml",
            &[
                ("landing", landing.clone()),
                ("staging", data.join("staging").display().to_string()),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        status(&cluster.wait_final(&finished).await),
        RunStatus::Succeeded
    );

    let in_flight = cluster
        .submit(
            SLOW_JOB,
            "slow.yaml",
            &[
                ("landing", landing),
                ("out", data.join("pairs").display().to_string()),
            ],
        )
        .await
        .unwrap();
    cluster
        .wait_until(&in_flight, "running", |run| {
            status(run) == RunStatus::Running
        })
        .await;
    cluster.kill_scheduler();
    cluster.start_scheduler().await;

    let runs = cluster
        .client()
        .await
        .list_runs(v1::ListRunsRequest {
            limit: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .runs;
    let by_id: BTreeMap<&str, &v1::Run> =
        runs.iter().map(|run| (run.run_id.as_str(), run)).collect();
    assert_eq!(by_id.len(), 2);
    assert_eq!(status(by_id[finished.as_str()]), RunStatus::Succeeded);
    assert_eq!(by_id[finished.as_str()].outputs.len(), 1);
    let interrupted = by_id[in_flight.as_str()];
    assert_eq!(status(interrupted), RunStatus::Interrupted);
    assert!(
        interrupted.error.contains("scheduler stopped"),
        "{}",
        interrupted.error
    );
    assert!(common::data_files(&data.join("pairs")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_submits_waits_lists_and_reports_failures() {
    let _serial = common::one_cluster_at_a_time().await;
    let cluster = Cluster::start(2).await;
    let data = cluster.dir.path().join("lake");
    sluice_jobs::datagen::write_claims(&data, 2_000, &[1], 9).unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs/examples/claims_cleanse.yaml");
    let sluice = |args: &[&str]| {
        std::process::Command::new(common::sluice_bin())
            .args(args)
            .args(["--scheduler", &cluster.url()])
            .current_dir(&data)
            .output()
            .unwrap()
    };

    // Relative paths resolve against the submitter's working directory.
    let submitted = sluice(&[
        "submit",
        example.to_str().unwrap(),
        "-p",
        "landing=landing",
        "-p",
        "staging=staging",
        "--wait",
        "--output",
        "json",
    ]);
    assert!(
        submitted.status.success(),
        "{}",
        String::from_utf8_lossy(&submitted.stderr)
    );
    let record: serde_json::Value = serde_json::from_slice(&submitted.stdout).unwrap();
    assert_eq!(record["status"], "succeeded");
    assert_eq!(record["job"], "claims_cleanse");
    assert_eq!(record["params"]["staging"], "staging");
    let run_id = record["run_id"].as_str().unwrap().to_owned();
    let files = record["outputs"][0]["files"].as_array().unwrap();
    assert!(!files.is_empty());
    for file in files {
        assert!(
            data.join("staging/claims")
                .join(file.as_str().unwrap())
                .exists(),
            "{file}"
        );
    }

    let listed = sluice(&["runs"]);
    assert!(listed.status.success());
    let listing = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listing.contains(&run_id) && listing.contains("succeeded"),
        "{listing}"
    );

    let shown = sluice(&["status", &run_id]);
    let summary = String::from_utf8_lossy(&shown.stdout);
    assert!(summary.contains("output claims"), "{summary}");
    assert!(
        summary.contains("partitions fill_month=2024-01"),
        "{summary}"
    );

    // A value that does not convert fails the run (ANSI), exit code 1, nothing written.
    let bad = data.join("bad_cast.yaml");
    std::fs::write(
        &bad,
        example_text_with_bad_cast(&std::fs::read_to_string(&example).unwrap()),
    )
    .unwrap();
    let failed = sluice(&[
        "submit",
        bad.to_str().unwrap(),
        "-p",
        "landing=landing",
        "-p",
        "staging=staging_bad",
        "--wait",
    ]);
    assert_eq!(failed.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("failed"), "{stderr}");
    assert!(stderr.to_lowercase().contains("cast"), "{stderr}");
    assert!(common::data_files(&data.join("staging_bad")).is_empty());
}

/// The cleansing example with a cast that cannot succeed: payer names to integers.
fn example_text_with_bad_cast(yaml: &str) -> String {
    yaml.replace(
        "      quantity: int\n",
        "      quantity: int\n      payer: int\n",
    )
}

/// One of three executors SIGKILLed while the job's first stages run: Ballista re-runs
/// the lost stages (the survivors keep their slots: see patches/README.md) and the run
/// commits exactly the answer computed from the landing files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_lost_mid_job_costs_a_retry_not_the_job() {
    lose_executors_mid_job(&[0], 0).await;
}

/// A run past its `sluice.run.timeout` is stopped: its Ballista job cancelled, the run
/// failed with the limit named, nothing written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_past_its_timeout_fails_and_writes_nothing() {
    let _serial = common::one_cluster_at_a_time().await;
    let cluster = Cluster::start(2).await;
    let data = cluster.dir.path().join("lake");
    sluice_jobs::datagen::write_claims(&data, 60_000, &[1], 7).unwrap();
    let out = data.join("pairs");
    let job = format!("{SLOW_JOB}conf:\n  sluice.run.timeout: 3s\n");
    let started = std::time::Instant::now();
    let run_id = cluster
        .submit(
            &job,
            "slow.yaml",
            &[
                ("landing", data.join("landing").display().to_string()),
                ("out", out.display().to_string()),
            ],
        )
        .await
        .unwrap();
    let run = cluster.wait_final(&run_id).await;
    assert_eq!(status(&run), RunStatus::Failed, "{run:?}");
    assert!(run.error.contains("timeout of 3s"), "{}", run.error);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "the run was not stopped at its limit"
    );
    assert!(
        common::data_files(&out).is_empty(),
        "a timed-out run left data"
    );
    let cancelled_on_executors =
        (0..2).any(|i| cluster.executor_log(i).contains("Cancelling tasks"));
    assert!(
        cancelled_on_executors,
        "no executor cancelled tasks:{}",
        cluster.logs()
    );
}

/// Two of three executors SIGKILLed at once: the last one finishes the job alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_three_executors_lost_cost_a_retry_not_the_job() {
    lose_executors_mid_job(&[0, 1], 0).await;
}

/// An executor SIGKILLed once a stage has finished, so its shuffle output is lost
/// while a later stage reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_lost_while_its_shuffle_output_is_read_costs_a_retry() {
    lose_executors_mid_job(&[1], 1).await;
}

/// An executor told to stop (SIGTERM) mid-job drains: the run still succeeds with the
/// exact answer, and the executor exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_stopped_mid_job_drains_and_loses_nothing() {
    lose_executors(&[0], 0, Stop::Terminate).await;
}

/// An executor SIGKILLed and restarted at once under the same id (a pod's container
/// restarted): the scheduler treats the old process as lost when the new one registers,
/// rather than waiting for tasks the new process never heard of.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_restarted_under_its_id_costs_a_retry() {
    lose_executors(&[0], 0, Stop::Restart).await;
}

/// How an executor is taken away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Kill,
    Terminate,
    Restart,
}

async fn lose_executors_mid_job(kill: &[usize], stages_done: u32) {
    lose_executors(kill, stages_done, Stop::Kill).await;
}

/// Runs the slow cross join on three executors, SIGKILLs `kill` once `stages_done`
/// stages have finished (and the job still runs), and checks the committed answer.
async fn lose_executors(kill: &[usize], stages_done: u32, stop: Stop) {
    lose_executors_running(SLOW_JOB, kill, stages_done, stop).await;
}

/// [`SLOW_JOB`] with the CSV reader's default `PERMISSIVE` mode: its malformed rows
/// join the result in a union before the write.
fn permissive_slow_job() -> String {
    SLOW_JOB.replace(", csv: {mode: FAILFAST}", "")
}

/// A job whose CSV source keeps its malformed rows (a union of the steps' result and a
/// scan of the malformed rows before the write) recovers from a lost executor with the
/// right answer. (A scan that restricted to no file group reported one empty partition,
/// which shifted the union's partitions: a distributed run lost an aggregate partition.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_keeping_malformed_rows_gives_the_right_answer_after_a_lost_executor() {
    let job = permissive_slow_job();
    assert!(!job.contains("mode: FAILFAST"));
    lose_executors_running(&job, &[1], 1, Stop::Kill).await;
}

async fn lose_executors_running(job: &str, kill: &[usize], stages_done: u32, stop: Stop) {
    let _serial = common::one_cluster_at_a_time().await;
    let mut cluster = Cluster::start(3).await;
    let data = cluster.dir.path().join("lake");
    // Three monthly files: the CSV reader reads a file in one task, so the cross join's
    // probe side runs as three tasks spread over the executors.
    sluice_jobs::datagen::write_claims(&data, 14_000, &[1, 2, 3], 19).unwrap();

    let expected = expected_pairs(&data.join("landing"));

    let out = data.join("pairs");
    let run_id = cluster
        .submit(
            job,
            "slow.yaml",
            &[
                ("landing", data.join("landing").display().to_string()),
                ("out", out.display().to_string()),
            ],
        )
        .await
        .unwrap();
    cluster
        .wait_until(&run_id, "running with stages", |run| {
            status(run) == RunStatus::Running
                && run
                    .progress
                    .as_ref()
                    .is_some_and(|p| p.stages_total > 0 && p.stages_done >= stages_done)
        })
        .await;
    if stages_done == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    }
    let before_kill = cluster.run(&run_id).await;
    assert_eq!(
        status(&before_kill),
        RunStatus::Running,
        "the job ended before the kill: {before_kill:?}"
    );
    for &executor in kill {
        match stop {
            Stop::Kill => cluster.kill_executor(executor),
            Stop::Terminate => cluster.terminate_executor(executor),
            Stop::Restart => cluster.restart_executor(executor),
        }
    }
    let killed_at = std::time::Instant::now();

    let run = cluster.wait_final(&run_id).await;
    assert_eq!(
        status(&run),
        RunStatus::Succeeded,
        "{run:?}{}",
        cluster.logs()
    );
    eprintln!(
        "{stop:?} {kill:?} after {stages_done} stage(s): run succeeded {:.1}s after the kill",
        killed_at.elapsed().as_secs_f64()
    );
    if stop == Stop::Restart {
        let log = std::fs::read_to_string(cluster.log_path("scheduler-1")).unwrap();
        assert!(
            log.contains("registered again: its previous process is lost"),
            "the restarted executor was not recognised as a new process{}",
            cluster.logs()
        );
    }
    if stop == Stop::Terminate {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while !kill.iter().all(|&i| cluster.executor_exited(i)) {
            assert!(
                std::time::Instant::now() < deadline,
                "a stopped executor did not exit{}",
                cluster.logs()
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    assert_no_recompute(&run);
    let pairs = read_pairs(&out);
    assert_eq!(pairs, expected);
}

/// A recovered job is committed as it ran: its graph accounts for every partition, so
/// nothing is computed twice.
pub(crate) fn assert_no_recompute(run: &v1::Run) {
    assert!(
        !run.warnings
            .iter()
            .any(|w| w.contains("computing the output again")),
        "the output was computed again: {:?}",
        run.warnings
    );
}

/// What [`SLOW_JOB`] must give, computed from the landing lines in linear time: per
/// state of `a`, all pairs minus those sharing both payer and NDC.
pub(crate) fn expected_pairs(landing: &Path) -> BTreeMap<String, i64> {
    let mut lines: Vec<Vec<String>> = Vec::new();
    for file in std::fs::read_dir(landing.join("claims")).unwrap().flatten() {
        for line in std::fs::read_to_string(file.path())
            .unwrap()
            .lines()
            .skip(1)
        {
            lines.push(line.split(',').map(str::to_owned).collect());
        }
    }
    let total = lines.len() as i64;
    let mut same: BTreeMap<(String, String), i64> = BTreeMap::new();
    for f in &lines {
        *same.entry((f[8].clone(), f[3].clone())).or_default() += 1;
    }
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    for f in &lines {
        *expected.entry(f[9].clone()).or_default() += total - same[&(f[8].clone(), f[3].clone())];
    }
    expected
}

/// The pairs per state that [`SLOW_JOB`] wrote below `out`.
pub(crate) fn read_pairs(out: &Path) -> BTreeMap<String, i64> {
    let mut pairs = BTreeMap::new();
    for batches in read_partitioned(out).values() {
        for batch in batches {
            let state = batch
                .column_by_name("state")
                .unwrap()
                .as_string::<i32>()
                .clone();
            let n = batch
                .column_by_name("pairs")
                .unwrap()
                .as_primitive::<Int64Type>()
                .clone();
            for row in 0..batch.num_rows() {
                pairs.insert(state.value(row).to_owned(), n.value(row));
            }
        }
    }
    pairs
}

/// Pairs of claims of one patient, as a nested-loop join (the equality is written as a
/// LIKE without wildcards, so no hash join takes it): the join runs in the job's last
/// stage, the one that writes.
const SLOW_WRITE_JOB: &str = r#"apiVersion: sluice/v1
name: slow_write
params:
  landing: {type: path, required: true}
  out: {type: path, required: true}
sources:
  claims: {format: csv, path: "{{landing}}/claims", csv: {mode: FAILFAST}}
steps:
  - sql: |
      SELECT a.claim_id, b.claim_id AS later_claim_id
      FROM input a JOIN input b
        ON a.patient_id LIKE b.patient_id AND a.claim_id < b.claim_id
outputs:
  - {name: pairs, path: "{{out}}", mode: error_if_exists}
"#;

/// An executor SIGKILLed while the write stage runs: the write tasks it ran are run
/// again, their first attempts' files are never committed, and the output holds each
/// pair exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_lost_during_the_write_costs_a_retry_and_writes_once() {
    let _serial = common::one_cluster_at_a_time().await;
    let mut cluster = Cluster::start(3).await;
    let data = cluster.dir.path().join("lake");
    sluice_jobs::datagen::write_claims(&data, 16_000, &[1, 2, 3], 23).unwrap();

    // Every pair of one patient's claims, from the landing lines.
    let mut by_patient: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in std::fs::read_dir(data.join("landing/claims"))
        .unwrap()
        .flatten()
    {
        for line in std::fs::read_to_string(file.path())
            .unwrap()
            .lines()
            .skip(1)
        {
            let f: Vec<&str> = line.split(',').collect();
            by_patient
                .entry(f[1].to_owned())
                .or_default()
                .push(f[0].to_owned());
        }
    }
    let mut expected: Vec<(String, String)> = Vec::new();
    for claims in by_patient.values() {
        for a in claims {
            for b in claims {
                if a < b {
                    expected.push((a.clone(), b.clone()));
                }
            }
        }
    }
    expected.sort();
    assert!(
        !expected.is_empty(),
        "the data has no patient with two claims"
    );

    let out = data.join("pairs");
    let run_id = cluster
        .submit(
            SLOW_WRITE_JOB,
            "slow_write.yaml",
            &[
                ("landing", data.join("landing").display().to_string()),
                ("out", out.display().to_string()),
            ],
        )
        .await
        .unwrap();
    cluster
        .wait_until(&run_id, "running its write stage", |run| {
            status(run) != RunStatus::Running && status(run) != RunStatus::Queued
                || run
                    .progress
                    .as_ref()
                    .is_some_and(|p| p.stages_total > 1 && p.stages_done + 1 >= p.stages_total)
        })
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    let before_kill = cluster.run(&run_id).await;
    assert_eq!(
        status(&before_kill),
        RunStatus::Running,
        "the job ended before the kill: {before_kill:?}"
    );
    cluster.kill_executor(0);
    let killed_at = std::time::Instant::now();
    let run = cluster.wait_final(&run_id).await;
    assert_eq!(
        status(&run),
        RunStatus::Succeeded,
        "{run:?}{}",
        cluster.logs()
    );
    eprintln!(
        "Kill [0] in the write stage: run succeeded {:.1}s after the kill",
        killed_at.elapsed().as_secs_f64()
    );
    assert_no_recompute(&run);
    let mut pairs: Vec<(String, String)> = Vec::new();
    for batches in read_partitioned(&out).values() {
        for batch in batches {
            let a = batch.column_by_name("claim_id").unwrap().as_string::<i32>();
            let b = batch
                .column_by_name("later_claim_id")
                .unwrap()
                .as_string::<i32>();
            for row in 0..batch.num_rows() {
                pairs.push((a.value(row).to_owned(), b.value(row).to_owned()));
            }
        }
    }
    pairs.sort();
    assert_eq!(pairs.len(), expected.len(), "rows written");
    assert_eq!(pairs, expected);
    assert!(
        !out.join("_temporary").exists(),
        "the superseded attempts' files were left in staging"
    );
}
