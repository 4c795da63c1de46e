//! The run lifecycle: validate and compile a submission, run one Ballista job per output
//! on the executors, commit every output once all jobs succeeded, and record each change.
//!
//! ```text
//! SubmitRun ─► compile (errors return at once; nothing written) ─► queued
//!    ─► running: per output, physical plan + ParquetWriteExec ─► Ballista job
//!    ─► all jobs succeeded ─► commit outputs ─► succeeded
//!    └► a job failed / cancelled ─► staged files discarded ─► failed / cancelled
//! ```
//!
//! Run records change only through [`Runs::update`], which writes the store and wakes
//! watchers. Run tasks are owned by the manager's `JoinSet`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ballista_core::JobId;
use ballista_core::client::BallistaClient;
use ballista_core::serde::protobuf::{PartitionLocation, executor_status, job_status, task_status};
use ballista_core::serde::scheduler::PartitionId;
use ballista_scheduler::cluster::JobState;
use ballista_scheduler::scheduler_server::SchedulerServer;
use ballista_scheduler::state::execution_stage::ExecutionStage;
use chrono::Utc;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::metrics::MetricsSet;
use datafusion::prelude::SessionContext;
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};
use futures::TryStreamExt;
use sluice_jobs::quality::{DqOutcome, DqReport, QualityStats};
use sluice_jobs::{
    CompiledJob, JobDefinition, ObjectStores, PreparedJob, SinkSpec, TaskReport, WriteMode,
    WriteSpec, WriteTask, WrittenFile, write_plan,
};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::commit;
use crate::error::{Result, SchedulerError};
use crate::run::{RunId, RunProfile, RunRecord, RunStatus};
use crate::store::RunStore;

/// How many times an output is computed again after a job that lost an executor.
const MAX_RECOMPUTES: usize = 2;

/// How often a running job's status is read.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Ballista's scheduler, as Sluice embeds it.
pub type BallistaScheduler = SchedulerServer<LogicalPlanNode, PhysicalPlanNode>;

/// A submission, as the API receives it.
#[derive(Debug, Clone, Default)]
pub struct Submission {
    /// The definition's YAML text, or `None` to use `registered_job`.
    pub definition_yaml: Option<String>,
    /// The name of a registered job.
    pub registered_job: Option<String>,
    /// Raw `name=value` params.
    pub params: BTreeMap<String, String>,
    /// Where the definition came from, for messages.
    pub origin: String,
    /// What relative local paths resolve against.
    pub working_dir: Option<PathBuf>,
    /// A Step Functions task token to report the run's end to.
    pub task_token: Option<String>,
}

/// The run records and their watchers. The only place run state changes.
#[derive(Debug)]
pub struct Runs {
    pub(crate) store: RunStore,
    watchers: Mutex<HashMap<RunId, watch::Sender<RunRecord>>>,
}

impl Runs {
    /// Wraps an opened store.
    pub fn new(store: RunStore) -> Self {
        Self {
            store,
            watchers: Mutex::new(HashMap::new()),
        }
    }

    fn insert(&self, run: RunRecord) -> Result<()> {
        self.store.put(&run)?;
        let (sender, _) = watch::channel(run.clone());
        if let Ok(mut watchers) = self.watchers.lock() {
            watchers.insert(run.run_id.clone(), sender);
        }
        Ok(())
    }

    /// Changes a run, writes it to the store and tells its watchers.
    pub fn update(&self, run_id: &RunId, change: impl FnOnce(&mut RunRecord)) -> Result<RunRecord> {
        let mut run = self
            .store
            .get(run_id)?
            .ok_or_else(|| SchedulerError::RunNotFound(run_id.clone()))?;
        change(&mut run);
        self.store.put(&run)?;
        if let Ok(mut watchers) = self.watchers.lock() {
            if let Some(sender) = watchers.get(run_id) {
                sender.send_replace(run.clone());
            }
            if run.status.is_final() {
                watchers.remove(run_id);
            }
        }
        Ok(run)
    }

    /// One run.
    pub fn get(&self, run_id: &RunId) -> Result<RunRecord> {
        self.store
            .get(run_id)?
            .ok_or_else(|| SchedulerError::RunNotFound(run_id.clone()))
    }

    /// Runs, newest first.
    pub fn list(&self, limit: usize) -> Result<Vec<RunRecord>> {
        self.store.list(limit)
    }

    /// A receiver of the run's changes, or `None` once it is final.
    pub fn watch(&self, run_id: &RunId) -> Option<watch::Receiver<RunRecord>> {
        self.watchers
            .lock()
            .ok()
            .and_then(|watchers| watchers.get(run_id).map(watch::Sender::subscribe))
    }

    fn registered_job(&self, name: &str) -> Result<Option<crate::store::JobVersion>> {
        self.store.registered_job(name)
    }

    /// The latest version of every registered job.
    pub fn list_jobs(&self) -> Result<Vec<crate::store::JobVersion>> {
        self.store.list_jobs()
    }

    /// Ended runs with a task token whose result has not reached Step Functions.
    fn unreported(&self) -> Result<Vec<RunRecord>> {
        Ok(self
            .store
            .list(0)?
            .into_iter()
            .filter(|run| run.status.is_final() && run.task_token.is_some() && !run.task_reported)
            .collect())
    }
}

/// An executor as the scheduler knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutorInfo {
    /// Its id.
    pub id: String,
    /// The host it is reached at.
    pub host: String,
    /// Its Arrow Flight port.
    pub flight_port: u16,
    /// Its gRPC port.
    pub grpc_port: u16,
    /// Its task slots.
    pub task_slots: u32,
}

/// Accepts runs and drives them to a final status.
pub struct RunManager {
    runs: Arc<Runs>,
    ballista: BallistaScheduler,
    job_state: Arc<dyn JobState>,
    tasks: Mutex<JoinSet<()>>,
    cancels: Arc<Mutex<HashMap<RunId, watch::Sender<bool>>>>,
    /// Output locations being written, by the run writing them.
    writers: Arc<Mutex<HashMap<String, RunId>>>,
    stores: Arc<ObjectStores>,
    executor_timeout: Duration,
    step_functions: Option<aws_sdk_sfn::Client>,
    engine: Engine,
}

impl std::fmt::Debug for RunManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunManager").finish_non_exhaustive()
    }
}

impl RunManager {
    /// A manager over `runs` that runs jobs on `ballista`.
    pub fn new(
        runs: Arc<Runs>,
        ballista: BallistaScheduler,
        job_state: Arc<dyn JobState>,
        stores: Arc<ObjectStores>,
        executor_timeout: Duration,
    ) -> Self {
        Self {
            stores,
            executor_timeout,
            runs,
            ballista,
            job_state,
            tasks: Mutex::new(JoinSet::new()),
            cancels: Arc::new(Mutex::new(HashMap::new())),
            writers: Arc::new(Mutex::new(HashMap::new())),
            step_functions: None,
            engine: Engine::Ballista,
        }
    }

    /// Executes runs' plans with `engine`.
    pub fn with_engine(mut self, engine: Engine) -> Self {
        self.engine = engine;
        self
    }

    /// Reports runs submitted with a task token to Step Functions when they end.
    pub fn with_step_functions(mut self, client: aws_sdk_sfn::Client) -> Self {
        self.step_functions = Some(client);
        self
    }

    /// Reports the results that did not reach Step Functions yet: runs that ended while
    /// it was unreachable, and runs a restart found interrupted.
    pub async fn report_pending_tasks(&self) {
        let Some(client) = &self.step_functions else {
            return;
        };
        let Ok(runs) = self.runs.unreported() else {
            return;
        };
        for run in runs {
            report_task(&self.runs, client, &run.run_id).await;
        }
    }

    /// Validates a definition and stores it as the next version of its job.
    pub fn register_job(&self, yaml: &str, origin: &str) -> Result<crate::store::JobVersion> {
        let definition = JobDefinition::from_yaml(yaml, origin)?;
        let version = self.runs.store.register_job(
            &definition.name,
            definition.description.as_deref().unwrap_or_default(),
            yaml,
        )?;
        tracing::info!(job = %version.name, version = version.version, "job registered");
        Ok(version)
    }

    /// The run records.
    pub fn runs(&self) -> &Arc<Runs> {
        &self.runs
    }

    /// The definition text of a submission and where it came from (a registered job is
    /// looked up).
    pub fn resolve_definition(&self, submission: &Submission) -> Result<(String, String)> {
        let mut registered_origin = None;
        let yaml = match (&submission.definition_yaml, &submission.registered_job) {
            (Some(yaml), _) => yaml.clone(),
            (None, Some(name)) => {
                let version = self.runs.registered_job(name)?.ok_or_else(|| {
                    sluice_jobs::JobError::Param {
                        name: "job".into(),
                        message: format!(
                            "no job `{name}` is registered on this scheduler (`sluice jobs list`)"
                        ),
                    }
                })?;
                registered_origin = Some(format!("{}@{}", version.name, version.version));
                version.definition_yaml
            }
            (None, None) => {
                return Err(sluice_jobs::JobError::Param {
                    name: "job".into(),
                    message: "a submission needs a definition or a registered job name".into(),
                }
                .into());
            }
        };
        let origin = if let Some(origin) = registered_origin {
            origin
        } else if submission.origin.is_empty() {
            "<submitted definition>".to_owned()
        } else {
            submission.origin.clone()
        };
        Ok((yaml, origin))
    }

    /// Validates and compiles a submission, records the run and starts it. Bad input
    /// fails here, before anything is written.
    pub async fn submit(&self, submission: Submission) -> Result<RunRecord> {
        let (yaml, origin) = self.resolve_definition(&submission)?;
        let definition = JobDefinition::from_yaml(&yaml, &origin)?;
        let prepared = PreparedJob::prepare(definition, &origin, &submission.params)?;
        let ctx = prepared.session_context(&self.stores)?;
        let base_dir = submission
            .working_dir
            .clone()
            .unwrap_or_else(|| std::env::current_dir().unwrap_or_default());
        let compiling = std::time::Instant::now();
        let compiled = prepared.compile(&ctx, &base_dir).await?;
        let compile_ms = elapsed_ms(compiling);

        // One run at a time per output location: claim them all, or none.
        let run_id = RunId::generate();
        {
            let mut writers = self.writers.lock().map_err(|_| SchedulerError::Server {
                address: "run manager".into(),
                message: "output lock poisoned".into(),
            })?;
            for output in compiled.outputs.iter().chain(&compiled.quarantine) {
                if let Some(holder) = writers.get(&output.location) {
                    return Err(SchedulerError::OutputBusy {
                        output: output.name.clone(),
                        location: output.location.clone(),
                        run_id: holder.clone(),
                    });
                }
            }
            for output in compiled.outputs.iter().chain(&compiled.quarantine) {
                writers.insert(output.location.clone(), run_id.clone());
            }
        }
        let run = RunRecord::new(
            run_id,
            prepared.definition.name.clone(),
            origin,
            prepared.params.to_text_map(),
            prepared.settings.warnings.clone(),
        );
        let mut run = run;
        run.task_token = submission.task_token.clone();
        run.profile.planning_ms = compile_ms;
        run.output_locations = compiled
            .outputs
            .iter()
            .chain(&compiled.quarantine)
            .map(|output| (output.name.clone(), output.location.clone()))
            .collect();
        if let Err(err) = self.runs.insert(run.clone()) {
            if let Ok(mut writers) = self.writers.lock() {
                writers.retain(|_, holder| *holder != run.run_id);
            }
            return Err(err);
        }
        let (cancel_tx, cancel_rx) = watch::channel(false);
        if let Ok(mut cancels) = self.cancels.lock() {
            cancels.insert(run.run_id.clone(), cancel_tx);
        }
        let execution = Execution {
            runs: Arc::clone(&self.runs),
            ballista: self.ballista.clone(),
            job_state: Arc::clone(&self.job_state),
            run_id: run.run_id.clone(),
            job: prepared,
            ctx: Arc::new(ctx),
            compiled,
            cancel: cancel_rx,
            cancels: Arc::clone(&self.cancels),
            writers: Arc::clone(&self.writers),
            executor_timeout: self.executor_timeout,
            step_functions: self.step_functions.clone(),
            engine: self.engine,
        };
        tracing::info!(run_id = %run.run_id, job = %run.job, "run accepted");
        if let Ok(mut tasks) = self.tasks.lock() {
            // Reap finished runs so the set does not grow with history.
            while tasks.try_join_next().is_some() {}
            tasks.spawn(execution.run());
        }
        Ok(run)
    }

    /// Runs in flight whose Ballista job has not been submitted yet (they will need
    /// executors).
    pub fn runs_waiting_for_ballista(&self) -> usize {
        let in_flight: Vec<RunId> = self
            .cancels
            .lock()
            .map(|cancels| cancels.keys().cloned().collect())
            .unwrap_or_default();
        in_flight
            .iter()
            .filter_map(|run_id| self.runs.get(run_id).ok())
            .filter(|run| {
                run.status == RunStatus::Queued
                    || (run.status == RunStatus::Running && run.ballista_jobs.is_empty())
            })
            .count()
    }

    /// The registered executors whose last heartbeat is recent and says active.
    pub async fn executors(&self) -> Vec<ExecutorInfo> {
        alive_executors(&self.ballista, self.executor_timeout).await
    }

    /// Asks a run to stop: its Ballista jobs are cancelled on the executors and the run
    /// ends `cancelled` with nothing committed.
    pub fn cancel(&self, run_id: &RunId) -> Result<RunRecord> {
        let run = self.runs.get(run_id)?;
        if run.status.is_final() {
            return Ok(run);
        }
        if let Ok(cancels) = self.cancels.lock()
            && let Some(cancel) = cancels.get(run_id)
        {
            cancel.send_replace(true);
        }
        Ok(run)
    }
}

/// One run in flight.
struct Execution {
    runs: Arc<Runs>,
    ballista: BallistaScheduler,
    job_state: Arc<dyn JobState>,
    run_id: RunId,
    job: PreparedJob,
    ctx: Arc<SessionContext>,
    compiled: CompiledJob,
    cancel: watch::Receiver<bool>,
    cancels: Arc<Mutex<HashMap<RunId, watch::Sender<bool>>>>,
    writers: Arc<Mutex<HashMap<String, RunId>>>,
    executor_timeout: Duration,
    step_functions: Option<aws_sdk_sfn::Client>,
    engine: Engine,
}

/// Sends a run's result to its task token and records that it was sent. A failure is
/// logged and left for [`RunManager::report_pending_tasks`] at the next start.
async fn report_task(runs: &Runs, client: &aws_sdk_sfn::Client, run_id: &RunId) {
    let Ok(run) = runs.get(run_id) else {
        return;
    };
    let (Some(token), false) = (&run.task_token, run.task_reported) else {
        return;
    };
    let Some(result) = crate::sfn::run_result(&crate::service::to_proto(&run)) else {
        return;
    };
    match crate::sfn::send_result(client, token, &result).await {
        Ok(()) => {
            tracing::info!(%run_id, "run result sent to Step Functions");
            let _ = runs.update(run_id, |run| run.task_reported = true);
        }
        Err(err) => {
            tracing::warn!(%run_id, "run result not sent to Step Functions: {err}");
        }
    }
}

/// Where a run's plans execute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Engine {
    /// As Ballista stages on the registered executors.
    #[default]
    Ballista,
    /// The same physical plan executed by DataFusion inside the scheduler's process,
    /// with no stages, shuffle files or executors: the single-process limit that the
    /// benchmark measures distribution against (`sluice run --engine datafusion`).
    InProcess,
}

/// What one output's job produced, waiting for commit.
struct Produced {
    spec: WriteSpec,
    mode: WriteMode,
    files: Vec<WrittenFile>,
}

impl Execution {
    async fn run(mut self) {
        let run_id = self.run_id.clone();
        let _ = self.runs.update(&run_id, |run| {
            run.status = RunStatus::Running;
            run.started_at = Some(Utc::now());
        });
        let specs = self.write_specs();
        let outcome = self.execute(&specs).await;
        let result = match outcome {
            Ok(produced) => self.commit(produced).await,
            Err(err) => Err(err),
        };
        match result {
            Ok(()) => {
                tracing::info!(%run_id, "run succeeded");
                let _ = self
                    .runs
                    .update(&run_id, |run| run.finish(RunStatus::Succeeded, None));
            }
            Err(err) => {
                for spec in &specs {
                    if let Ok(store) = self.store_for(spec) {
                        commit::discard_staging(store, spec).await;
                    }
                }
                let status = if matches!(err, SchedulerError::Cancelled) {
                    RunStatus::Cancelled
                } else {
                    RunStatus::Failed
                };
                tracing::warn!(%run_id, error = %err, "run ended {}", status.as_str());
                let _ = self
                    .runs
                    .update(&run_id, |run| run.finish(status, Some(err.to_string())));
            }
        }
        if let Ok(mut cancels) = self.cancels.lock() {
            cancels.remove(&run_id);
        }
        if let Ok(mut writers) = self.writers.lock() {
            writers.retain(|_, holder| *holder != run_id);
        }
        if let Some(client) = &self.step_functions {
            report_task(&self.runs, client, &run_id).await;
        }
    }

    /// The outputs' write specs, then the quarantine's.
    fn write_specs(&self) -> Vec<WriteSpec> {
        self.compiled
            .outputs
            .iter()
            .chain(&self.compiled.quarantine)
            .map(|output| WriteSpec {
                output: output.name.clone(),
                location: output.location.clone(),
                run_id: self.run_id.to_string(),
                partition_by: output.partition_by.clone(),
                target_file_size: output.target_file_size,
                compression: self.job.settings.compression,
            })
            .collect()
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
    async fn alive_executor_ids(&self) -> std::collections::BTreeSet<String> {
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
                let locations = self.wait(&job_id, &output.name, stages_before).await?;
                let statistics = self.job_statistics(&job_id).await;
                let executors_after = self.alive_executor_ids().await;
                let lost: Vec<&String> = executors_before.difference(&executors_after).collect();
                // Ballista recovers from a lost executor by re-running stages, and its
                // recovered results have been seen to count rows twice. A result that
                // went through a recovery is not trusted: the output is computed again.
                if statistics.recovered || !lost.is_empty() {
                    attempt += 1;
                    let reason = format!(
                        "output `{}`: executor(s) lost during the job ({}); {}",
                        output.name,
                        if lost.is_empty() {
                            "stages re-run".to_owned()
                        } else {
                            lost.iter()
                                .map(|e| e.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        },
                        if attempt > MAX_RECOMPUTES {
                            "giving up"
                        } else {
                            "computing the output again"
                        }
                    );
                    tracing::warn!(run_id = %self.run_id, "{reason}");
                    if attempt > MAX_RECOMPUTES {
                        return Err(SchedulerError::JobFailed {
                            output: output.name.clone(),
                            message: reason,
                        });
                    }
                    self.runs
                        .update(&self.run_id, |run| run.warnings.push(reason.clone()))?;
                    continue;
                }
                let reports = fetch_manifests(&locations, &output.name).await?;
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

    /// Waits for a Ballista job to end, reporting progress; cancels it on request.
    async fn wait(
        &mut self,
        job_id: &JobId,
        output: &str,
        stages_before: u32,
    ) -> Result<Vec<PartitionLocation>> {
        let mut cancelled = false;
        let mut reported = None;
        loop {
            let status = self
                .ballista
                .state
                .task_manager
                .get_job_status(job_id)
                .await
                .map_err(|err| SchedulerError::ballista("reading job status", err))?;
            if let Some(progress) = self.job_progress(job_id).await
                && reported != Some(progress)
            {
                // Written only when it changes: every update is a durable commit.
                reported = Some(progress);
                let (done, total, rows) = progress;
                self.runs.update(&self.run_id, |run| {
                    run.progress.stages_done = stages_before + done;
                    run.progress.stages_total = stages_before + total;
                    run.progress.rows_so_far = run.rows_read + rows;
                })?;
            }
            match status.and_then(|s| s.status) {
                Some(job_status::Status::Successful(success)) => {
                    if cancelled {
                        return Err(SchedulerError::Cancelled);
                    }
                    return Ok(success.partition_location);
                }
                Some(job_status::Status::Failed(failed)) => {
                    if cancelled {
                        return Err(SchedulerError::Cancelled);
                    }
                    return Err(SchedulerError::JobFailed {
                        output: output.to_owned(),
                        message: failed.error,
                    });
                }
                _ => {}
            }
            if !cancelled && *self.cancel.borrow() {
                cancelled = true;
                tracing::info!(run_id = %self.run_id, %job_id, "cancelling ballista job");
                self.ballista
                    .cancel_job(job_id.clone())
                    .await
                    .map_err(|err| SchedulerError::ballista("cancelling job", err))?;
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
                _ = self.cancel.changed(), if !cancelled => {}
            }
        }
    }

    /// Stages done, stages planned and rows its scans read so far, for a running job.
    async fn job_progress(&self, job_id: &JobId) -> Option<(u32, u32, u64)> {
        let running = self.ballista.state.task_manager.get_running_job_cache();
        let job = running.get(job_id)?;
        let graph = job.execution_graph.read().await;
        Some((
            graph.completed_stages() as u32,
            graph.stage_count() as u32,
            PlanMetrics::of_stages(graph.stages().values()).rows_read,
        ))
    }

    /// Rows the job's source scans produced, from the metrics of its finished stages.
    /// The finished graph reaches the job state just after the status does.
    async fn job_statistics(&self, job_id: &JobId) -> JobStatistics {
        for _ in 0..25 {
            if let Ok(Some(graph)) = self.job_state.get_execution_graph(job_id).await {
                return JobStatistics {
                    recovered: graph.stages().values().any(|stage| {
                        matches!(stage, ExecutionStage::Successful(s) if s.stage_attempt_num > 0)
                    }),
                    stages: graph.stage_count() as u32,
                    metrics: PlanMetrics::of_stages(graph.stages().values()),
                    first_task_start: first_task_start(graph.stages().values()),
                    tasks_by_executor: tasks_by_executor(graph.stages().values()),
                };
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        JobStatistics::default()
    }

    /// Commits every output, in order. Only now do the run's files become visible.
    async fn commit(&self, produced: Vec<Produced>) -> Result<()> {
        if *self.cancel.borrow() {
            return Err(SchedulerError::Cancelled);
        }
        let specs: Vec<WriteSpec> = produced.iter().map(|p| p.spec.clone()).collect();
        let committing = std::time::Instant::now();
        for output in produced {
            let store = self.store_for(&output.spec)?;
            let record =
                commit::commit_output(store, &output.spec, output.mode, &output.files).await?;
            self.runs
                .update(&self.run_id, |run| run.outputs.push(record))?;
        }
        let commit_ms = elapsed_ms(committing);
        self.runs
            .update(&self.run_id, |run| run.profile.commit_ms = commit_ms)?;
        if let Some(report) = self.runs.get(&self.run_id)?.dq {
            self.write_reports(&report, &specs).await;
        }
        Ok(())
    }
}

/// Reads the manifests the write tasks returned, from the executors that hold them.
async fn fetch_manifests(locations: &[PartitionLocation], output: &str) -> Result<Vec<TaskReport>> {
    let fail = |message: String| SchedulerError::JobFailed {
        output: output.to_owned(),
        message,
    };
    let mut files = Vec::new();
    for location in locations {
        let (Some(executor), Some(partition)) = (&location.executor_meta, &location.partition_id)
        else {
            return Err(fail("a write task reported no location".into()));
        };
        let mut client = BallistaClient::try_new(
            &executor.host,
            executor.port as u16,
            16 * 1024 * 1024,
            false,
            None,
            3,
            200,
            0,
            0,
        )
        .await
        .map_err(|err| fail(format!("connecting to executor {}: {err}", executor.id)))?;
        let partition_id = PartitionId {
            job_id: JobId::new(partition.job_id.clone()),
            stage_id: partition.stage_id as usize,
            partition_id: partition.partition_id as usize,
        };
        let stream = client
            .fetch_partition(
                &executor.id,
                &partition_id,
                location.file_id,
                location.layout(),
                true,
            )
            .await
            .map_err(|err| {
                fail(format!(
                    "reading a write manifest from {}: {err}",
                    executor.id
                ))
            })?;
        let batches: Vec<_> = stream.try_collect().await.map_err(|err| {
            fail(format!(
                "reading a write manifest from {}: {err}",
                executor.id
            ))
        })?;
        for batch in &batches {
            files.extend(TaskReport::from_manifest(batch).map_err(|err| fail(err.to_string()))?);
        }
    }
    Ok(files)
}

/// The registered executors whose last heartbeat is recent and says active.
async fn alive_executors(
    ballista: &BallistaScheduler,
    executor_timeout: Duration,
) -> Vec<ExecutorInfo> {
    let Ok(states) = ballista.state.executor_manager.get_executors_state().await else {
        return Vec::new();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut executors: Vec<ExecutorInfo> = states
        .into_iter()
        .filter(|(meta, last_heartbeat, _)| {
            let recent =
                last_heartbeat.is_some_and(|at| now.saturating_sub(at) <= executor_timeout);
            let active = ballista
                .state
                .executor_manager
                .get_executor_hearbeat(&meta.id)
                .and_then(|heartbeat| heartbeat.status)
                .and_then(|status| status.status)
                .is_some_and(|status| matches!(status, executor_status::Status::Active(_)));
            recent && active
        })
        .map(|(meta, _, _)| ExecutorInfo {
            id: meta.id,
            host: meta.host,
            flight_port: meta.port,
            grpc_port: meta.grpc_port,
            task_slots: meta.specification.vcores,
        })
        .collect();
    executors.sort_by(|a, b| a.id.cmp(&b.id));
    executors
}

/// What a finished Ballista job did, from its execution graph.
#[derive(Debug, Default)]
struct JobStatistics {
    /// A stage ran more than once (a lost executor's work was redone).
    recovered: bool,
    stages: u32,
    metrics: PlanMetrics,
    /// When its first task started, in ms since the epoch.
    first_task_start: Option<i64>,
    tasks_by_executor: BTreeMap<String, u64>,
}

/// Successful tasks per executor over a job's stages.
fn tasks_by_executor<'a>(
    stages: impl Iterator<Item = &'a ExecutionStage>,
) -> BTreeMap<String, u64> {
    let mut tasks = BTreeMap::new();
    for stage in stages {
        let ExecutionStage::Successful(stage) = stage else {
            continue;
        };
        for info in &stage.task_infos {
            if let task_status::Status::Successful(success) = &info.task_status {
                *tasks.entry(success.executor_id.clone()).or_default() += 1;
            }
        }
    }
    tasks
}

/// What operators' metrics say: rows the source scans produced, and where task time
/// went (summed over tasks, in nanoseconds).
#[derive(Debug, Default, Clone, Copy)]
struct PlanMetrics {
    rows_read: u64,
    read_ns: u64,
    compute_ns: u64,
    shuffle_ns: u64,
    write_ns: u64,
}

impl PlanMetrics {
    /// Of a job's successful stages. Ballista keeps stage metrics in the pre-order of
    /// the operators that have metrics.
    fn of_stages<'a>(stages: impl Iterator<Item = &'a ExecutionStage>) -> Self {
        let mut totals = Self::default();
        for stage in stages {
            let ExecutionStage::Successful(stage) = stage else {
                continue;
            };
            let mut index = 0usize;
            let mut pending: Vec<Arc<dyn ExecutionPlan>> = vec![Arc::clone(&stage.plan)];
            while let Some(plan) = pending.pop() {
                if plan.metrics().is_some() {
                    if let Some(metrics) = stage.stage_metrics.get(index) {
                        totals.add(plan.as_ref(), metrics);
                    }
                    index += 1;
                }
                for child in plan.children().into_iter().rev() {
                    pending.push(Arc::clone(child));
                }
            }
        }
        totals
    }

    /// Of a plan executed in this process.
    fn of_plan(plan: &Arc<dyn ExecutionPlan>) -> Self {
        let mut totals = Self::default();
        let mut pending = vec![Arc::clone(plan)];
        while let Some(plan) = pending.pop() {
            if let Some(metrics) = plan.metrics() {
                totals.add(plan.as_ref(), &metrics);
            }
            pending.extend(plan.children().into_iter().cloned());
        }
        totals
    }

    fn add(&mut self, operator: &dyn ExecutionPlan, metrics: &MetricsSet) {
        let nanos = |name: &str| {
            metrics
                .sum_by_name(name)
                .map_or(0, |value| value.as_usize() as u64)
        };
        match operator.name() {
            "DataSourceExec" => {
                self.rows_read += metrics.output_rows().unwrap_or(0) as u64;
                self.read_ns += nanos("time_elapsed_opening") + nanos("time_elapsed_processing");
            }
            "ShuffleWriterExec" => self.shuffle_ns += nanos("write_time"),
            "ShuffleReaderExec" => {
                self.shuffle_ns += nanos("fetch_time") + nanos("local_read_time");
            }
            "ParquetWriteExec" => self.write_ns += nanos("write_time"),
            _ => self.compute_ns += metrics.elapsed_compute().unwrap_or(0) as u64,
        }
    }

    /// Adds these task times to a run's profile.
    fn add_to(&self, profile: &mut RunProfile) {
        const NANOS_PER_MS: u64 = 1_000_000;
        profile.read_ms += self.read_ns / NANOS_PER_MS;
        profile.compute_ms += self.compute_ns / NANOS_PER_MS;
        profile.shuffle_ms += self.shuffle_ns / NANOS_PER_MS;
        profile.write_ms += self.write_ns / NANOS_PER_MS;
    }
}

/// Milliseconds since `start`.
fn elapsed_ms(start: std::time::Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// When the first task of a job's stages started executing, in ms since the epoch.
fn first_task_start<'a>(stages: impl Iterator<Item = &'a ExecutionStage>) -> Option<i64> {
    stages
        .filter_map(|stage| match stage {
            ExecutionStage::Successful(stage) => stage
                .task_infos
                .iter()
                .map(|info| info.start_exec_time)
                .filter(|start| *start > 0)
                .min(),
            _ => None,
        })
        .min()
        .and_then(|start| i64::try_from(start).ok())
}
