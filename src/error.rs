//! The CLI's error type and its exit codes, decided in one place.

/// Everything a `sluice` command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A definition, param or source problem found before anything ran.
    #[error(transparent)]
    Job(#[from] sluice_jobs::JobError),
    /// The scheduler failed to start or serve.
    #[error(transparent)]
    Scheduler(#[from] sluice_scheduler::SchedulerError),
    /// An executor failed to start or stopped with an error.
    #[error(transparent)]
    Executor(#[from] sluice_executor::ExecutorError),
    /// The scheduler could not be reached.
    #[error("cannot reach the scheduler at {url}: {message}")]
    Unreachable {
        /// The URL tried.
        url: String,
        /// Why.
        message: String,
    },
    /// The scheduler refused a request.
    #[error("{}", .0.message())]
    Rejected(tonic::Status),
    /// A run ended without succeeding.
    #[error("run {run_id} {status}: {error}")]
    RunFailed {
        /// The run.
        run_id: String,
        /// Its final status.
        status: String,
        /// Why.
        error: String,
    },
    /// A command-line argument is malformed.
    #[error("{0}")]
    Usage(String),
    /// Local I/O (sample data, reading a definition).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
    /// Reading back an output for display.
    #[error("{context}: {source}")]
    DataFusion {
        /// What was being done.
        context: String,
        /// The error.
        source: datafusion::error::DataFusionError,
    },
}

impl CliError {
    /// The process exit code: 2 bad input, 3 scheduler unreachable, 1 anything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Job(err) if err.is_invalid_definition() => 2,
            CliError::Usage(_) => 2,
            CliError::Rejected(status) if status.code() == tonic::Code::InvalidArgument => 2,
            CliError::Rejected(status) if status.code() == tonic::Code::NotFound => 2,
            CliError::Unreachable { .. } => 3,
            CliError::Rejected(status) if status.code() == tonic::Code::Unavailable => 3,
            _ => 1,
        }
    }
}

impl From<tonic::Status> for CliError {
    fn from(status: tonic::Status) -> Self {
        CliError::Rejected(status)
    }
}

/// The CLI's result type.
pub type Result<T, E = CliError> = std::result::Result<T, E>;
