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
    #[error("{}", rejection(.0))]
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
    /// A command-line argument is malformed, or arguments that go together are missing:
    /// the message names the flag and what to write instead.
    #[error("{0}")]
    Usage(String),
    /// A settings file (`SLUICE_CONFIG`, `SLUICE_STORAGE_CONFIG`) is not what it should
    /// be.
    #[error("{variable} {path}: {message}")]
    ConfigFile {
        /// The variable that names the file.
        variable: &'static str,
        /// The file.
        path: String,
        /// What is wrong (the parser's first line).
        message: String,
    },
    /// The `SLUICE_CONFIG` file holds a name the binary does not read.
    #[error("SLUICE_CONFIG {path}: `{name}` is not a setting (see `sluice settings`)")]
    UnknownSetting {
        /// The file.
        path: String,
        /// The name.
        name: String,
    },
    /// A `true`/`false` setting holds something else.
    #[error("{name}=`{value}`: write true or false")]
    NotABool {
        /// The setting.
        name: String,
        /// Its value.
        value: String,
    },
    /// A state machine template does not render.
    #[error("{origin}: {problem}")]
    StateMachine {
        /// The template file.
        origin: String,
        /// What is missing or malformed.
        problem: String,
    },
    /// The embedded cluster's executors did not register in time.
    #[error(
        "embedded executors did not register within {waited_secs}s ({registered} of {expected})"
    )]
    EmbeddedExecutors {
        /// Seconds waited.
        waited_secs: u64,
        /// Executors registered by then.
        registered: usize,
        /// Executors started.
        expected: usize,
    },
    /// An embedded executor stopped before it registered, on every start.
    #[error("embedded executor {index} could not start: {message}")]
    EmbeddedExecutorFailed {
        /// Which executor.
        index: usize,
        /// Its error.
        message: String,
    },
    /// A health endpoint answered, but not `SERVING`.
    #[error("{url} is {status}")]
    NotServing {
        /// The endpoint.
        url: String,
        /// Its status (`NOT_SERVING`, `SERVICE_UNKNOWN`…).
        status: String,
    },
    /// An AWS API refused a request.
    #[error("{operation} on {resource}: {message}")]
    Aws {
        /// The API operation (`AddJobFlowSteps`).
        operation: &'static str,
        /// What it was called on (the cluster).
        resource: String,
        /// The SDK's error with its context.
        message: String,
    },
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
            CliError::Usage(_)
            | CliError::ConfigFile { .. }
            | CliError::UnknownSetting { .. }
            | CliError::NotABool { .. }
            | CliError::StateMachine { .. }
            | CliError::EmbeddedExecutors { .. }
            | CliError::EmbeddedExecutorFailed { .. }
            | CliError::NotServing { .. }
            | CliError::Aws { .. } => 2,
            CliError::Rejected(status) if status.code() == tonic::Code::InvalidArgument => 2,
            CliError::Rejected(status) if status.code() == tonic::Code::NotFound => 2,
            CliError::Unreachable { .. } => 3,
            CliError::Rejected(status) if status.code() == tonic::Code::Unavailable => 3,
            _ => 1,
        }
    }
}

/// A refusal as the user reads it: who-you-are and may-you refusals say so.
fn rejection(status: &tonic::Status) -> String {
    match status.code() {
        tonic::Code::Unauthenticated => format!("unauthenticated: {}", status.message()),
        tonic::Code::PermissionDenied => format!("permission denied: {}", status.message()),
        _ => status.message().to_owned(),
    }
}

impl From<tonic::Status> for CliError {
    fn from(status: tonic::Status) -> Self {
        CliError::Rejected(status)
    }
}

/// The CLI's result type.
pub type Result<T, E = CliError> = std::result::Result<T, E>;
