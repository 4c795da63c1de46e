//! The one error type of the scheduler crate, and its mapping to gRPC statuses.

use crate::record::RunId;

/// Everything that can go wrong in the scheduler.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// The definition, its params or its sources are not usable; nothing was written.
    #[error(transparent)]
    Job(#[from] sluice_jobs::JobError),
    /// No run has this id.
    #[error("no run `{0}`")]
    RunNotFound(RunId),
    /// No backfill has this id.
    #[error("no backfill `{0}`")]
    BackfillNotFound(String),
    /// The run store's copy in object storage could not be read or written.
    #[error("the run store's copy at {url}: {message}")]
    Backup {
        /// The copy's location.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The run store could not be opened, read or written.
    #[error("run store {path}: {message}")]
    Store {
        /// The store file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// Ballista failed to plan, schedule or run a job.
    #[error("{context}: {source}")]
    Ballista {
        /// What the scheduler was doing.
        context: String,
        /// Ballista's error.
        #[source]
        source: Box<ballista_core::error::BallistaError>,
    },
    /// Driving a run panicked (a bug, or a reader library on a malformed file); the run
    /// failed and nothing was committed.
    #[error("the run failed on an internal error: {message}")]
    Panicked {
        /// The panic's message.
        message: String,
    },
    /// A run's Ballista job failed on the executors.
    #[error("output `{output}`: the job failed: {message}")]
    JobFailed {
        /// The output being written.
        output: String,
        /// Ballista's reason.
        message: String,
    },
    /// Another run is writing the same output; runs on one output never interleave.
    #[error(
        "output `{output}` ({location}) is being written by run {run_id} ({holder}); submit \
         again when it has ended"
    )]
    OutputBusy {
        /// The output.
        output: String,
        /// Its location.
        location: String,
        /// The run writing it (possibly of another scheduler or `sluice run`).
        run_id: String,
        /// Who holds the output's lock: this scheduler, or another process and its lease.
        holder: String,
    },
    /// The output's writer lock could not be taken (the store failed or cannot lock).
    #[error("output `{output}` ({location}): {source}")]
    OutputLock {
        /// The output.
        output: String,
        /// Its location.
        location: String,
        /// What went wrong.
        #[source]
        source: Box<crate::lock::LockError>,
    },
    /// A data-quality rule with `fail`, or a quarantine threshold, broke; nothing was
    /// committed.
    #[error("data quality failed: {}", failures.join("; "))]
    DataQualityFailed {
        /// What broke.
        failures: Vec<String>,
    },
    /// The run was cancelled.
    #[error("the run was cancelled")]
    Cancelled,
    /// The run passed its `sluice.run.timeout`; its Ballista job was cancelled.
    #[error("the run passed its timeout of {}s (sluice.run.timeout) and was stopped", limit.as_secs())]
    TimedOut {
        /// The definition's limit.
        limit: std::time::Duration,
    },
    /// A finished job could not account for every task of every stage: its result is
    /// not committed.
    #[error("output `{output}`: the distributed job cannot account for every task, so nothing is committed: {}", problems.join("; "))]
    Unaccounted {
        /// The output.
        output: String,
        /// What is missing.
        problems: Vec<String>,
    },
    /// A commit failed after its plan was written and retries did not finish it: the
    /// plan stays and is rolled forward by the next commit on the output or the next
    /// scheduler start.
    #[error(
        "output `{output}` ({location}): commit stopped part way: {message}; its plan is \
         kept and the next commit on this output, or the next scheduler start, completes it"
    )]
    CommitIncomplete {
        /// The output.
        output: String,
        /// Its location.
        location: String,
        /// What went wrong.
        message: String,
    },
    /// Committing staged files failed before anything was moved; the output keeps its
    /// previous data.
    #[error("output `{output}` ({location}): commit failed, nothing changed: {message}")]
    Commit {
        /// The output.
        output: String,
        /// Its location.
        location: String,
        /// What went wrong.
        message: String,
    },
    /// The scheduler's listener or server failed.
    /// The tokens file cannot be used.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    /// The port's certificates cannot be used.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// A scheduler bound where the network reaches it, without TLS or tokens.
    #[error(
        "refusing to serve {address} without {missing}: anything reachable from a network \
         needs TLS and credentials (--tls-cert/--tls-key and --tokens-file); pass --insecure \
         to serve it anyway"
    )]
    Insecure {
        /// The bound address.
        address: String,
        /// What is not configured.
        missing: String,
    },
    /// The principal may not submit runs of this job.
    #[error("`{principal}` may not submit runs of job `{job}`")]
    Forbidden {
        /// Who asked.
        principal: String,
        /// The job.
        job: String,
    },
    #[error("scheduler server on {address}: {message}")]
    Server {
        /// The address.
        address: String,
        /// What went wrong.
        message: String,
    },
}

impl SchedulerError {
    pub(crate) fn ballista(
        context: impl Into<String>,
        source: ballista_core::error::BallistaError,
    ) -> Self {
        Self::Ballista {
            context: context.into(),
            source: Box::new(source),
        }
    }

    pub(crate) fn store(path: &std::path::Path, message: impl std::fmt::Display) -> Self {
        Self::Store {
            path: path.display().to_string(),
            message: message.to_string(),
        }
    }
}

impl From<SchedulerError> for tonic::Status {
    fn from(err: SchedulerError) -> Self {
        let message = err.to_string();
        match err {
            SchedulerError::Job(job) if job.is_invalid_definition() => {
                tonic::Status::invalid_argument(message)
            }
            SchedulerError::RunNotFound(_) | SchedulerError::BackfillNotFound(_) => {
                tonic::Status::not_found(message)
            }
            SchedulerError::OutputBusy { .. } => tonic::Status::failed_precondition(message),
            SchedulerError::Cancelled => tonic::Status::cancelled(message),
            SchedulerError::Forbidden { .. } => tonic::Status::permission_denied(message),
            _ => tonic::Status::internal(message),
        }
    }
}

/// The scheduler crate's result type.
pub type Result<T, E = SchedulerError> = std::result::Result<T, E>;
