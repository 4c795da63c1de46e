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
//! [`RunManager`] accepts runs (here); `runner/runs.rs` owns the records (changed only
//! through [`Runs::update`], which writes the store and wakes watchers);
//! `runner/execution.rs` drives one run; `runner/ballista.rs` submits and polls its
//! Ballista jobs; `runner/profile.rs` turns metrics into the run's profile;
//! `runner/callback.rs` reports a run's end to Step Functions. Run tasks are owned by
//! the manager's `JoinSet`.

mod accounting;
mod ballista;
mod callback;
mod execution;
mod profile;
mod runs;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ballista_scheduler::cluster::JobState;
use datafusion::prelude::SessionContext;
use sluice_jobs::{JobDefinition, ObjectStores, PreparedJob, WriteSpec, strip_context};
use tokio::sync::watch;
use tokio::task::JoinSet;

use self::ballista::alive_executors;
pub use self::ballista::{BallistaScheduler, ExecutorInfo};
use self::callback::report_task;
use self::execution::Execution;
use self::profile::elapsed_ms;
pub use self::runs::Runs;
use crate::error::{Result, SchedulerError};
use crate::lock::{LockError, LockOwner, OutputLock};
use crate::record::{JobVersion, RunId, RunRecord, RunStatus};

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
    /// Names the work for `append` outputs: a key that already committed to an output
    /// appends nothing there again.
    pub idempotency_key: Option<String>,
    /// Who submitted it, when the port authenticates: recorded on the run, and a
    /// submitter limited to some jobs may only run those.
    pub submitter: Option<crate::auth::Principal>,
}

/// A submission's definition text and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedDefinition {
    /// The definition's YAML text.
    pub yaml: String,
    /// Where it came from (`name@version` for a registered job), for messages.
    pub origin: String,
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

/// Accepts runs and drives them to a final status.
pub struct RunManager {
    runs: Arc<Runs>,
    ballista: BallistaScheduler,
    job_state: Arc<dyn JobState>,
    tasks: Mutex<JoinSet<()>>,
    cancels: Arc<Mutex<HashMap<RunId, watch::Sender<bool>>>>,
    /// Output locations being written, by the run writing them.
    writers: Arc<Mutex<HashMap<String, RunId>>>,
    /// Who this scheduler is in the outputs' locks.
    lock_owner: LockOwner,
    /// How long a lock on an object store lasts without a renewal.
    lock_lease: Duration,
    stores: Arc<ObjectStores>,
    executor_timeout: Duration,
    step_functions: Option<aws_sdk_sfn::Client>,
    engine: Engine,
    /// Where the deployment lets jobs read and write.
    zones: sluice_jobs::StorageZones,
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
        let lock_owner = LockOwner::current(runs.store.dir());
        Self {
            stores,
            executor_timeout,
            runs,
            ballista,
            job_state,
            tasks: Mutex::new(JoinSet::new()),
            cancels: Arc::new(Mutex::new(HashMap::new())),
            writers: Arc::new(Mutex::new(HashMap::new())),
            lock_owner,
            lock_lease: crate::lock::DEFAULT_LEASE,
            step_functions: None,
            engine: Engine::Ballista,
            zones: sluice_jobs::StorageZones::default(),
        }
    }

    /// Executes runs' plans with `engine`.
    pub fn with_engine(mut self, engine: Engine) -> Self {
        self.engine = engine;
        self
    }

    /// Locks outputs on object stores with leases of `lease`.
    pub fn with_output_lease(mut self, lease: Duration) -> Self {
        self.lock_lease = lease;
        self
    }

    /// Refuses jobs that read outside `zones` or write outside their writable ones.
    pub fn with_zones(mut self, zones: sluice_jobs::StorageZones) -> Self {
        self.zones = zones;
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
    pub fn register_job(&self, yaml: &str, origin: &str) -> Result<JobVersion> {
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
    pub fn resolve_definition(&self, submission: &Submission) -> Result<ResolvedDefinition> {
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
        Ok(ResolvedDefinition { yaml, origin })
    }

    /// Validates and compiles a submission, records the run and starts it. Bad input
    /// fails here, before anything is written.
    pub async fn submit(&self, submission: Submission) -> Result<RunRecord> {
        let ResolvedDefinition { yaml, origin } = self.resolve_definition(&submission)?;
        let definition = JobDefinition::from_yaml(&yaml, &origin)?;
        if let Some(principal) = &submission.submitter
            && !principal.may_run(&definition.name)
        {
            return Err(SchedulerError::Forbidden {
                principal: principal.name.clone(),
                job: definition.name.clone(),
            });
        }
        let prepared = PreparedJob::prepare(definition, &origin, &submission.params)?
            .with_zones(self.zones.clone());
        let ctx = prepared.session_context(&self.stores)?;
        let base_dir = submission
            .working_dir
            .clone()
            .unwrap_or_else(|| std::env::current_dir().unwrap_or_default());
        let compiling = std::time::Instant::now();
        let compiled = prepared.compile(&ctx, &base_dir).await?;
        compiled.check_overlaps(
            &origin,
            &[("the scheduler's state directory", self.runs.store.dir())],
        )?;
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
                        run_id: holder.to_string(),
                        holder: "this scheduler".into(),
                    });
                }
            }
            for output in compiled.outputs.iter().chain(&compiled.quarantine) {
                writers.insert(output.location.clone(), run_id.clone());
            }
        }
        // Then the outputs' locks, which other schedulers and `sluice run` see too.
        let specs = execution::write_specs(&compiled, &prepared, &run_id);
        let locks = match self.lock_outputs(&ctx, &specs, &run_id).await {
            Ok(locks) => locks,
            Err(err) => {
                if let Ok(mut writers) = self.writers.lock() {
                    writers.retain(|_, holder| *holder != run_id);
                }
                return Err(err);
            }
        };
        let run = RunRecord::new(
            run_id,
            prepared.definition.name.clone(),
            origin,
            prepared.params.to_text_map(),
            prepared
                .settings
                .warnings
                .iter()
                .cloned()
                .chain(compiled.warnings())
                .collect(),
        );
        let mut run = run;
        run.task_token = submission.task_token.clone();
        run.idempotency_key = submission.idempotency_key.clone();
        run.submitted_by = submission.submitter.as_ref().map(|p| p.name.clone());
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
            for lock in locks {
                lock.release().await;
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
            specs,
            locks,
            idempotency_key: submission.idempotency_key.clone(),
            unrecorded: Mutex::new(Vec::new()),
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

    /// Takes every output's writer lock for `run_id`, or none (those taken are given
    /// back when one is busy).
    async fn lock_outputs(
        &self,
        ctx: &SessionContext,
        specs: &[WriteSpec],
        run_id: &RunId,
    ) -> Result<Vec<OutputLock>> {
        let mut locks = Vec::new();
        for spec in specs {
            let taken = match (spec.store_url(), spec.root()) {
                (Ok(url), Ok(root)) => match ctx.runtime_env().object_store(url) {
                    Ok(store) => OutputLock::acquire(
                        store,
                        &spec.location,
                        &root,
                        run_id.as_str(),
                        &self.lock_owner,
                        self.lock_lease,
                    )
                    .await
                    .map_err(|source| match source {
                        LockError::Busy { run_id, holder } => SchedulerError::OutputBusy {
                            output: spec.output.clone(),
                            location: spec.location.clone(),
                            run_id,
                            holder,
                        },
                        source => SchedulerError::OutputLock {
                            output: spec.output.clone(),
                            location: spec.location.clone(),
                            source: Box::new(source),
                        },
                    }),
                    Err(err) => Err(SchedulerError::Commit {
                        output: spec.output.clone(),
                        location: spec.location.clone(),
                        message: strip_context(&err),
                    }),
                },
                (Err(err), _) | (_, Err(err)) => Err(SchedulerError::Commit {
                    output: spec.output.clone(),
                    location: spec.location.clone(),
                    message: strip_context(&err),
                }),
            };
            match taken {
                Ok(lock) => locks.push(lock),
                Err(err) => {
                    for lock in locks {
                        lock.release().await;
                    }
                    return Err(err);
                }
            }
        }
        Ok(locks)
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

    /// Executors holding the result (the write manifests) of a finished Ballista job whose
    /// run has not committed yet: the run still fetches the manifests from them.
    pub async fn executors_holding_results(&self) -> std::collections::BTreeSet<String> {
        let in_flight: Vec<RunId> = self
            .cancels
            .lock()
            .map(|cancels| cancels.keys().cloned().collect())
            .unwrap_or_default();
        let mut holding = std::collections::BTreeSet::new();
        for run in in_flight.iter().filter_map(|id| self.runs.get(id).ok()) {
            if run.status != RunStatus::Running {
                continue;
            }
            for job in &run.ballista_jobs {
                if let Ok(Some(graph)) = self
                    .job_state
                    .get_execution_graph(&ballista_core::JobId::new(job.clone()))
                    .await
                {
                    holding.extend(
                        graph
                            .output_locations()
                            .into_iter()
                            .map(|location| location.executor_meta.id),
                    );
                }
            }
        }
        holding
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
