//! One run in flight: plan each output's write job, run it on Ballista (or in this
//! process), judge data quality, commit every output, and record each step.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ballista_core::JobId;
use ballista_core::serde::protobuf::PartitionLocation;
use ballista_scheduler::cluster::JobState;
use chrono::Utc;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use sluice_jobs::quality::{DqOutcome, DqReport, QualityStats};
use sluice_jobs::{
    CompiledJob, PreparedJob, SinkSpec, TaskReport, WriteMode, WriteSpec, WriteTask, WrittenFile,
    write_plan,
};
use tokio::sync::watch;

use super::accounting::with_accountable_leaves;
use super::ballista::{
    BallistaScheduler, JobStatistics, alive_executors, fetch_manifests, job_statistics,
    one_per_partition, wait_for_job,
};
use super::callback::report_task;
use super::profile::{PlanMetrics, elapsed_ms};
use super::{Engine, Runs};
use crate::commit;
use crate::error::{Result, SchedulerError};
use crate::lock::OutputLock;
use crate::record::{RunId, RunStatus};

/// How many times an output is computed again after a recovered job whose result
/// cannot be accounted for.
const MAX_RECOMPUTES: usize = 2;

/// One run in flight.
pub(super) struct Execution {
    pub(super) runs: Arc<Runs>,
    pub(super) ballista: BallistaScheduler,
    pub(super) job_state: Arc<dyn JobState>,
    pub(super) run_id: RunId,
    pub(super) job: PreparedJob,
    pub(super) ctx: Arc<SessionContext>,
    pub(super) compiled: CompiledJob,
    pub(super) cancel: watch::Receiver<bool>,
    pub(super) cancels: Arc<Mutex<HashMap<RunId, watch::Sender<bool>>>>,
    pub(super) writers: Arc<Mutex<HashMap<String, RunId>>>,
    /// The outputs' write specs, then the quarantine's.
    pub(super) specs: Vec<WriteSpec>,
    /// Each spec's writer lock, in the same order; held until the run ends.
    pub(super) locks: Vec<OutputLock>,
    /// Names the run's work for `append` outputs.
    pub(super) idempotency_key: Option<String>,
    pub(super) executor_timeout: Duration,
    pub(super) step_functions: Option<aws_sdk_sfn::Client>,
    pub(super) engine: Engine,
    /// Changes to the run's record from its commit on that the store refused (a full or
    /// failing disk). Once an output is committed the run has succeeded whatever the
    /// store says, so they never fail the run: they are written with the run's end,
    /// which is retried until the store takes it.
    pub(super) unrecorded: Mutex<Vec<RecordChange>>,
}

/// A change to a run's record, kept to be applied again (see [`Execution::unrecorded`]).
pub(super) type RecordChange = Arc<dyn Fn(&mut crate::record::RunRecord) + Send + Sync>;

/// A run's write specs: its outputs', then its quarantine's.
pub(super) fn write_specs(
    compiled: &CompiledJob,
    job: &PreparedJob,
    run_id: &RunId,
) -> Vec<WriteSpec> {
    compiled
        .outputs
        .iter()
        .chain(&compiled.quarantine)
        .map(|output| WriteSpec {
            output: output.name.clone(),
            location: output.location.clone(),
            run_id: run_id.to_string(),
            partition_by: output.partition_by.clone(),
            target_file_size: output.target_file_size,
            compression: job.settings.compression,
        })
        .collect()
}

/// What one output's job produced, waiting for commit.
struct Produced {
    spec: WriteSpec,
    mode: WriteMode,
    files: Vec<WrittenFile>,
}

impl Execution {
    /// Drives the run to a final status, then frees its outputs and reports its end.
    pub(super) async fn run(mut self) {
        let run_id = self.run_id.clone();
        let _ = self.runs.update(&run_id, |run| {
            run.status = RunStatus::Running;
            run.started_at = Some(Utc::now());
        });
        let specs = self.specs.clone();
        // A run past its timeout is cancelled like a user's cancel (the Ballista job is
        // stopped, nothing is committed) and then reported as timed out.
        let limit = self.job.settings.timeout;
        let cancels = Arc::clone(&self.cancels);
        let timed_out = std::sync::atomic::AtomicBool::new(false);
        let cancelled = self.cancel.clone();
        let timer = async {
            if let Some(limit) = limit {
                tokio::time::sleep(limit).await;
                if *cancelled.borrow() {
                    // Cancelled by a user before the limit: report that.
                    std::future::pending::<()>().await;
                }
                timed_out.store(true, std::sync::atomic::Ordering::SeqCst);
                if let Ok(cancels) = cancels.lock()
                    && let Some(cancel) = cancels.get(&run_id)
                {
                    let _ = cancel.send(true);
                }
            }
            std::future::pending::<()>().await;
        };
        let work = async {
            match self.execute(&specs).await {
                Ok(produced) => self.commit(produced).await,
                Err(err) => Err(err),
            }
        };
        // A panic anywhere in planning or committing fails the run; it never leaves the
        // run `running` with nobody driving it.
        let work = async {
            use futures::FutureExt;
            std::panic::AssertUnwindSafe(work)
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| {
                    let message = panic
                        .downcast_ref::<String>()
                        .map(String::as_str)
                        .or_else(|| panic.downcast_ref::<&str>().copied())
                        .unwrap_or("no message")
                        .to_owned();
                    Err(SchedulerError::Panicked { message })
                })
        };
        let result = tokio::select! {
            result = work => result,
            // The timer only cancels; it never ends, so the work always answers.
            () = timer => Err(SchedulerError::Cancelled),
        };
        let result = match (result, limit) {
            (Err(SchedulerError::Cancelled), Some(limit))
                if timed_out.load(std::sync::atomic::Ordering::SeqCst) =>
            {
                Err(SchedulerError::TimedOut { limit })
            }
            (result, _) => result,
        };
        if let Err(err) = &result {
            for spec in &specs {
                if let Ok(store) = self.store_for(spec) {
                    commit::discard_uncommitted(store, spec).await;
                }
            }
            tracing::warn!(%run_id, error = %err, "run did not commit");
        }
        // The outputs are free before the run is seen to end: a client that submits the
        // next run on them as soon as this one is final is not told they are busy.
        for lock in std::mem::take(&mut self.locks) {
            lock.release().await;
        }
        if let Ok(mut writers) = self.writers.lock() {
            writers.retain(|_, holder| *holder != run_id);
        }
        if let Ok(mut cancels) = self.cancels.lock() {
            cancels.remove(&run_id);
        }
        let (status, error, pending) = match &result {
            Ok(()) => {
                tracing::info!(%run_id, "run succeeded");
                (RunStatus::Succeeded, None, false)
            }
            Err(err) => {
                let status = if matches!(err, SchedulerError::Cancelled) {
                    RunStatus::Cancelled
                } else {
                    RunStatus::Failed
                };
                tracing::warn!(%run_id, error = %err, "run ended {}", status.as_str());
                let pending = matches!(err, SchedulerError::CommitIncomplete { .. });
                (status, Some(err.to_string()), pending)
            }
        };
        // The end must be recorded, or the run shows `running` and Step Functions is never
        // told: a failed write of the store is retried until it succeeds (the scheduler
        // reports itself not ready meanwhile); Step Functions hears once it is recorded.
        let mut attempt = 0u32;
        loop {
            let unrecorded: Vec<RecordChange> = self
                .unrecorded
                .lock()
                .map(|changes| changes.clone())
                .unwrap_or_default();
            let recorded = self.runs.update(&run_id, |run| {
                for change in &unrecorded {
                    change(run);
                }
                run.finish(status, error.clone());
                run.commit_pending = pending;
            });
            match recorded {
                Ok(_) => break,
                Err(SchedulerError::RunNotFound(_)) => {
                    tracing::error!(%run_id, "the run's record is gone; its end is not recorded");
                    break;
                }
                Err(err) => {
                    tracing::error!(%run_id, %err, attempt, "recording the run's end failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 << attempt.min(7))).await;
                    attempt += 1;
                }
            }
        }
        if let Some(client) = &self.step_functions {
            report_task(&self.runs, client, &run_id).await;
        }
    }

    /// The writer lock the run holds on an output.
    fn lock_of(&self, spec: &WriteSpec) -> Result<&OutputLock> {
        self.specs
            .iter()
            .position(|held| held.location == spec.location)
            .and_then(|index| self.locks.get(index))
            .ok_or_else(|| SchedulerError::Commit {
                output: spec.output.clone(),
                location: spec.location.clone(),
                message: "the run holds no lock on the output".into(),
            })
    }

    /// Brings the records of runs whose pending commits this run's commit completed up to
    /// date: a run whose every output is now committed has succeeded after all. Runs of
    /// another scheduler's store are not here; its next start settles them.
    fn settle_rolled_forward(&self, spec: &WriteSpec, completed: Vec<commit::RolledForward>) {
        for rolled in completed {
            let run_id = RunId::from(rolled.run_id);
            let by = self.run_id.clone();
            let settled = self.runs.update(&run_id, |run| {
                if !run.commit_pending {
                    return;
                }
                if !run.outputs.iter().any(|o| o.name == spec.output) {
                    run.outputs.push(rolled.record.unwrap_or_else(|| {
                        crate::record::OutputRecord {
                            name: spec.output.clone(),
                            location: spec.location.clone(),
                            ..Default::default()
                        }
                    }));
                }
                let all = run
                    .output_locations
                    .keys()
                    .all(|name| run.outputs.iter().any(|o| &o.name == name));
                if all {
                    let why = format!(
                        "this run's commit stopped part way ({}); run {by} completed it \
                         before its own commit",
                        run.error.as_deref().unwrap_or("store errors")
                    );
                    run.finish(RunStatus::Succeeded, None);
                    run.commit_pending = false;
                    run.warnings.push(why);
                }
            });
            match settled {
                Ok(run) if run.status == RunStatus::Succeeded => {
                    tracing::info!(run_id = %run_id, by = %self.run_id, "a run's pending commit was completed; it succeeded")
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::debug!(run_id = %run_id, %err, "a rolled-forward run is not in this store")
                }
            }
        }
    }

    /// Records a committed output (or one an earlier run with the key had committed).
    fn record_output(&self, record: crate::record::OutputRecord) {
        let warning = record.duplicate_of.as_ref().map(|earlier| {
            let key = self.idempotency_key.as_deref().unwrap_or_default();
            format!(
                "output `{}`: idempotency key `{key}` was committed by run {earlier}; \
                 nothing was appended again",
                record.name
            )
        });
        // Applied again with the run's end if the store refused it: a write that failed
        // but landed must not record the output twice.
        self.record_after_commit(Arc::new(move |run| {
            if run.outputs.iter().any(|o| o.name == record.name) {
                return;
            }
            run.warnings.extend(warning.clone());
            run.outputs.push(record.clone());
        }));
    }

    /// Writes a change made once outputs are committed; one the store refuses is kept
    /// for the run's end (see [`Execution::unrecorded`]).
    fn record_after_commit(&self, change: RecordChange) {
        if let Err(err) = self.runs.update(&self.run_id, |run| change(run)) {
            tracing::error!(run_id = %self.run_id, %err, "the run's record could not be written after its commit; kept for its end");
            if let Ok(mut unrecorded) = self.unrecorded.lock() {
                unrecorded.push(change);
            }
        }
    }

    fn store_for(&self, spec: &WriteSpec) -> Result<Arc<dyn object_store::ObjectStore>> {
        let fail = |message: String| SchedulerError::Commit {
            output: spec.output.clone(),
            location: spec.location.clone(),
            message,
        };
        let url = spec.store_url().map_err(|e| fail(e.to_string()))?;
        self.ctx
            .runtime_env()
            .object_store(url)
            .map_err(|e| fail(e.to_string()))
    }

    /// Ids of the executors alive now.
    async fn alive_executor_ids(&self) -> BTreeSet<String> {
        alive_executors(&self.ballista, self.executor_timeout)
            .await
            .into_iter()
            .map(|executor| executor.id)
            .collect()
    }

    /// The sinks of output `index`'s job: the output, and for the first output the
    /// quarantine too, so valid and quarantined rows come from one pass.
    fn sinks(&self, index: usize, specs: &[WriteSpec]) -> Vec<SinkSpec> {
        let mut sinks = Vec::new();
        if let (Some(output), Some(spec)) = (self.compiled.outputs.get(index), specs.get(index)) {
            sinks.push(SinkSpec {
                spec: spec.clone(),
                columns: output.columns.clone(),
                quarantine: false,
            });
        }
        if index == 0
            && let Some(quarantine) = &self.compiled.quarantine
            && let Some(spec) = specs.get(self.compiled.outputs.len())
        {
            sinks.push(SinkSpec {
                spec: spec.clone(),
                columns: quarantine.columns.clone(),
                quarantine: true,
            });
        }
        sinks
    }

    /// Judges the first job's quality counts; a failed report fails the run.
    async fn judge_quality(&self, stats: Option<QualityStats>, specs: &[WriteSpec]) -> Result<()> {
        let (Some(quality), Some(stats)) = (&self.compiled.quality, stats) else {
            return Ok(());
        };
        let report = quality.report(&stats);
        tracing::info!(
            run_id = %self.run_id,
            rows_checked = report.rows_checked,
            rows_quarantined = report.rows_quarantined,
            outcome = ?report.outcome,
            "data quality judged"
        );
        self.runs.update(&self.run_id, |run| {
            run.rows_quarantined = report.rows_quarantined;
            run.warnings.extend(report.warnings.iter().cloned());
            run.dq = Some(report.clone());
        })?;
        if report.outcome == DqOutcome::Failed {
            // The report is kept beside the outputs even though nothing is committed.
            self.write_reports(&report, specs).await;
            return Err(SchedulerError::DataQualityFailed {
                failures: report.failures.clone(),
            });
        }
        Ok(())
    }

    /// Writes the run's data-quality report as `_dq/<run_id>.json` below each output.
    async fn write_reports(&self, report: &DqReport, specs: &[WriteSpec]) {
        for spec in specs {
            let Ok(store) = self.store_for(spec) else {
                continue;
            };
            if let Err(err) = commit::write_dq_report(store, spec, report).await {
                tracing::warn!(run_id = %self.run_id, output = %spec.output, "data-quality report not written: {err}");
            }
        }
    }

    /// Runs every output's Ballista job; nothing is visible until [`Self::commit`].
    async fn execute(&mut self, specs: &[WriteSpec]) -> Result<Vec<Produced>> {
        let mut produced = Vec::new();
        let mut stages_before = 0u32;
        for (index, output) in self.compiled.outputs.clone().iter().enumerate() {
            let mut attempt = 0;
            let sinks = self.sinks(index, specs);
            let (reports, statistics) = loop {
                let executors_before = self.alive_executor_ids().await;
                let planning = std::time::Instant::now();
                let state = self.ctx.state();
                let physical = output.physical_plan(&state).await?;
                let tasks = state.config().target_partitions();
                let task = WriteTask {
                    run_id: self.run_id.to_string(),
                    sinks: sinks.clone(),
                    quality: self.compiled.quality.as_ref().map(|q| q.plan.clone()),
                };
                let write = write_plan(physical, task, tasks).map_err(|err| {
                    sluice_jobs::JobError::datafusion(
                        format!("planning output `{}`", output.name),
                        err,
                    )
                })?;
                let planning_ms = elapsed_ms(planning);
                self.runs
                    .update(&self.run_id, |run| run.profile.planning_ms += planning_ms)?;
                if self.engine == Engine::InProcess {
                    break self.execute_in_process(write, &output.name).await?;
                }
                let job_name = format!(
                    "{}/{}/{}",
                    self.job.definition.name, self.run_id, output.name
                );
                let write = with_accountable_leaves(write).map_err(|err| {
                    sluice_jobs::JobError::datafusion(
                        format!("planning output `{}`", output.name),
                        err,
                    )
                })?;
                let job_id = self
                    .ballista
                    .submit_physical_plan(&job_name, Arc::clone(&self.ctx), write, None)
                    .await
                    .map_err(|err| {
                        SchedulerError::ballista(
                            format!("submitting output `{}`", output.name),
                            err,
                        )
                    })?;
                tracing::info!(run_id = %self.run_id, output = %output.name, %job_id, "ballista job submitted");
                self.runs.update(&self.run_id, |run| {
                    run.ballista_jobs.push(job_id.to_string());
                    run.progress.current_output = output.name.clone();
                })?;
                let locations =
                    one_per_partition(self.wait(&job_id, &output.name, stages_before).await?);
                let statistics = job_statistics(self.job_state.as_ref(), &job_id).await;
                let executors_after = self.alive_executor_ids().await;
                let lost: Vec<&String> = executors_before.difference(&executors_after).collect();
                // A job that redid work after a lost executor is committed as it ran
                // when its graph shows every partition read from exactly one latest
                // attempt (`accounting::unaccounted`). One that cannot be accounted
                // for is computed again if it went through a recovery (the problem
                // lies in what the recovery left), and fails otherwise.
                if !statistics.unaccounted.is_empty() {
                    if statistics.recovered && attempt < MAX_RECOMPUTES {
                        attempt += 1;
                        let reason = format!(
                            "output `{}`: the job recovered from a lost executor ({}) but \
                             its result cannot be accounted for ({}); computing the \
                             output again",
                            output.name,
                            if lost.is_empty() {
                                "stages re-run".to_owned()
                            } else {
                                lost.iter()
                                    .map(|e| e.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            },
                            statistics.unaccounted.join("; ")
                        );
                        tracing::warn!(run_id = %self.run_id, "{reason}");
                        self.runs
                            .update(&self.run_id, |run| run.warnings.push(reason.clone()))?;
                        continue;
                    }
                    return Err(SchedulerError::Unaccounted {
                        output: output.name.clone(),
                        problems: statistics.unaccounted,
                    });
                }
                if statistics.recovered {
                    tracing::info!(
                        run_id = %self.run_id,
                        output = %output.name,
                        lost = ?lost,
                        "the job recovered from a lost executor; every partition accounted for"
                    );
                }
                let reports = fetch_manifests(&locations, &output.name).await?;
                let mut partitions: Vec<u32> = locations
                    .iter()
                    .filter_map(|l| l.partition_id.as_ref().map(|p| p.partition_id))
                    .collect();
                partitions.sort_unstable();
                partitions.dedup();
                if reports.len() != locations.len() || partitions.len() != locations.len() {
                    return Err(SchedulerError::Unaccounted {
                        output: output.name.clone(),
                        problems: vec![format!(
                            "{} write tasks reported {} manifests over {} distinct partitions",
                            locations.len(),
                            reports.len(),
                            partitions.len()
                        )],
                    });
                }
                break (reports, statistics);
            };
            stages_before += statistics.stages;
            self.runs.update(&self.run_id, |run| {
                run.rows_read += statistics.metrics.rows_read;
                statistics.metrics.add_to(&mut run.profile);
                if run.profile.first_task_ms.is_none()
                    && let Some(start) = statistics.first_task_start
                {
                    let waited = start - run.submitted_at.timestamp_millis();
                    run.profile.first_task_ms = Some(u64::try_from(waited).unwrap_or(0));
                }
                run.progress.stages_done = stages_before;
                run.progress.stages_total = stages_before;
                run.progress.rows_so_far = run.rows_read;
                for (executor, tasks) in &statistics.tasks_by_executor {
                    *run.tasks_by_executor.entry(executor.clone()).or_default() += tasks;
                }
            })?;
            let mut stats: Option<QualityStats> = None;
            let mut files: Vec<WrittenFile> = Vec::new();
            for report in reports {
                files.extend(report.files);
                if let (Some(task), Some(quality)) = (report.quality, &self.compiled.quality) {
                    stats
                        .get_or_insert_with(|| QualityStats::new(&quality.plan))
                        .merge(&task, quality.plan.samples);
                }
            }
            if index == 0 {
                let stats = match (&self.compiled.quality, stats) {
                    (Some(quality), None) => Some(QualityStats::new(&quality.plan)),
                    (_, stats) => stats,
                };
                self.judge_quality(stats, specs).await?;
            }
            for sink in &sinks {
                let mode = if sink.quarantine {
                    self.compiled
                        .quarantine
                        .as_ref()
                        .map_or(WriteMode::default(), |q| q.mode)
                } else {
                    output.mode
                };
                produced.push(Produced {
                    spec: sink.spec.clone(),
                    mode,
                    files: files
                        .iter()
                        .filter(|file| file.output == sink.spec.output)
                        .cloned()
                        .collect(),
                });
            }
        }
        Ok(produced)
    }

    /// Executes one output's write plan with DataFusion in this process.
    async fn execute_in_process(
        &self,
        write: Arc<dyn ExecutionPlan>,
        output: &str,
    ) -> Result<(Vec<TaskReport>, JobStatistics)> {
        self.runs.update(&self.run_id, |run| {
            run.progress.current_output = output.to_owned();
        })?;
        let fail = |message: String| SchedulerError::JobFailed {
            output: output.to_owned(),
            message,
        };
        let mut cancel = self.cancel.clone();
        let started = Utc::now().timestamp_millis();
        let batches = tokio::select! {
            result = datafusion::physical_plan::collect(Arc::clone(&write), self.ctx.task_ctx()) => {
                result.map_err(|err| fail(sluice_jobs::strip_context(&err)))?
            }
            _ = cancel.wait_for(|cancelled| *cancelled) => return Err(SchedulerError::Cancelled),
        };
        let mut reports = Vec::new();
        for batch in &batches {
            reports.extend(TaskReport::from_manifest(batch).map_err(|err| fail(err.to_string()))?);
        }
        let statistics = JobStatistics {
            stages: 1,
            metrics: PlanMetrics::of_plan(&write),
            first_task_start: Some(started),
            ..JobStatistics::default()
        };
        Ok((reports, statistics))
    }

    /// Waits for a Ballista job to end, recording its progress; cancels it on request.
    async fn wait(
        &mut self,
        job_id: &JobId,
        output: &str,
        stages_before: u32,
    ) -> Result<Vec<PartitionLocation>> {
        let runs = &self.runs;
        let run_id = &self.run_id;
        wait_for_job(
            &self.ballista,
            job_id,
            output,
            run_id,
            &mut self.cancel,
            self.job.settings.stall_timeout,
            |progress| {
                runs.update(run_id, |run| {
                    run.progress.stages_done = stages_before + progress.stages_done;
                    run.progress.stages_total = stages_before + progress.stages_total;
                    run.progress.rows_so_far = run.rows_read + progress.rows_read;
                })
                .map(|_| ())
            },
        )
        .await
    }

    /// Commits every output. Only now do the run's files become visible. A run with
    /// several outputs (the quarantine is one) commits them together: every output's
    /// plan is written, then the run's decision, then the plans are applied — a run
    /// stopped before the decision leaves none of its outputs changed, one stopped after
    /// it is rolled forward on all of them.
    async fn commit(&self, produced: Vec<Produced>) -> Result<()> {
        if *self.cancel.borrow() {
            return Err(SchedulerError::Cancelled);
        }
        let specs: Vec<WriteSpec> = produced.iter().map(|p| p.spec.clone()).collect();
        let committing = std::time::Instant::now();
        // A scheduler restored from the store's copy after dying mid-commit finds the run.
        self.runs.flush_backup().await;
        let ctx = Arc::clone(&self.ctx);
        let resolver = move |url: &url::Url| {
            let store = datafusion::execution::object_store::ObjectStoreUrl::parse(
                &url[..url::Position::BeforePath],
            )
            .ok()?;
            ctx.runtime_env().object_store(store).ok()
        };
        let decision = (produced.len() > 1)
            .then(|| commit::decision_url(&produced[0].spec.location, self.run_id.as_str()));
        let mut planned = Vec::new();
        for output in &produced {
            let store = self.store_for(&output.spec)?;
            let lock = self.lock_of(&output.spec)?;
            let (prepared, rolled_forward) = commit::prepare_output(
                store,
                &output.spec,
                output.mode,
                &output.files,
                lock,
                self.idempotency_key.as_deref(),
                decision.as_deref(),
                &resolver,
            )
            .await?;
            self.settle_rolled_forward(&output.spec, rolled_forward);
            match prepared {
                commit::Prepared::Planned(prepared) => planned.push((prepared, lock)),
                commit::Prepared::Done(record) => self.record_output(record),
            }
        }
        if let Some(decision) = &decision {
            commit::crash_point("before_decision");
            for (_, lock) in &planned {
                lock.check().await.map_err(|err| SchedulerError::Commit {
                    output: String::new(),
                    location: decision.clone(),
                    message: err.to_string(),
                })?;
            }
            let outputs: Vec<String> = specs.iter().map(|s| s.location.clone()).collect();
            commit::write_decision(&resolver, decision, &outputs)
                .await
                .map_err(|err| SchedulerError::Commit {
                    output: specs[0].output.clone(),
                    location: specs[0].location.clone(),
                    message: format!("writing the run's commit decision: {err}"),
                })?;
            commit::crash_point("after_plan");
        }
        for (index, (prepared, lock)) in planned.into_iter().enumerate() {
            if index == 1 {
                commit::crash_point("between_outputs");
            }
            let record = commit::apply_prepared(*prepared, lock).await?;
            self.record_output(record);
        }
        if let Some(decision) = &decision {
            commit::remove_decision(&resolver, decision).await;
        }
        let commit_ms = elapsed_ms(committing);
        self.record_after_commit(Arc::new(move |run| run.profile.commit_ms = commit_ms));
        if let Some(report) = self.runs.get(&self.run_id).ok().and_then(|run| run.dq) {
            self.write_reports(&report, &specs).await;
        }
        Ok(())
    }
}
