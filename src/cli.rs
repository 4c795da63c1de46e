//! The `sluice` command line: one binary, one subcommand per role or action.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Sluice: Spark-compatible batch jobs on Apache DataFusion Ballista.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
// Parsed once per process: the size of the scheduler's arguments costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Run a job on an embedded cluster (scheduler + executors in this process).
    Run(RunArgs),
    /// Generate sample pharmacy claims and run the example jobs on an embedded cluster.
    Demo(DemoArgs),
    /// Check a job definition without running it.
    Validate(ValidateArgs),
    /// Generate realistic landing data with known defects and its ground truth.
    #[command(subcommand)]
    Datagen(DatagenCommand),
    /// Print the JSON Schema of job definitions.
    Schema,
    /// Run the scheduler (Ballista scheduler + Sluice JobService).
    Scheduler(SchedulerArgs),
    /// Run an executor that registers with a scheduler.
    Executor(ExecutorArgs),
    /// Submit a run to a scheduler.
    Submit(SubmitArgs),
    /// List runs.
    Runs(RunsArgs),
    /// Show one run.
    Status(StatusArgs),
    /// Cancel a run.
    Cancel(CancelArgs),
    /// Register job definitions on the scheduler, or list them.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Run Step Functions activity tasks as Sluice runs.
    SfnWorker(SfnWorkerArgs),
    /// Run a job once per day or month of a date range (a backfill).
    Backfill(BackfillArgs),
    /// List backfills.
    Backfills(BackfillsArgs),
    /// Check a scheduler's or executor's grpc.health.v1 endpoint (exit 0 when serving).
    Health(HealthArgs),
    /// Amazon EMR.
    #[command(subcommand)]
    Emr(EmrCommand),
    /// Print every setting the binary reads (variables, flags, defaults) as a table.
    Settings,
    /// Step Functions state machines.
    #[command(subcommand)]
    Sfn(SfnCommand),
    /// Bearer tokens for the scheduler's tokens file.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The scheduler's audit trail: who called what, and what was refused (admins).
    Audit(AuditArgs),
    /// Back up a running scheduler's run store, or restore one.
    #[command(subcommand)]
    Store(StoreCommand),
}

/// `sluice store`.
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Write a consistent snapshot of a running scheduler's run store to FILE (admins).
    Backup(StoreBackupArgs),
    /// Put a backup in place as the run store of a state directory, with the scheduler
    /// stopped; the store it replaces is kept beside it.
    Restore(StoreRestoreArgs),
}

/// `sluice store backup`.
#[derive(Debug, Args)]
pub struct StoreBackupArgs {
    /// Where to write the snapshot (whole or not at all).
    pub file: PathBuf,
    /// Where the scheduler is.
    #[command(flatten)]
    pub scheduler: SchedulerAddress,
}

/// `sluice store restore`.
#[derive(Debug, Args)]
pub struct StoreRestoreArgs {
    /// A snapshot `sluice store backup` wrote (or a `--state-backup` copy).
    pub file: PathBuf,
    /// The scheduler's state directory.
    #[arg(long, env = "SLUICE_STATE_DIR", default_value = ".sluice")]
    pub state_dir: PathBuf,
}

/// `sluice audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Show at most this many events, newest first.
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// How to print them.
    #[arg(long, value_enum, default_value_t)]
    pub output: OutputFormat,
    /// Where the scheduler is.
    #[command(flatten)]
    pub scheduler: SchedulerAddress,
}

/// `sluice sfn`.
#[derive(Debug, Subcommand)]
pub enum SfnCommand {
    /// Print a state machine of `deploy/stepfunctions/` with the ARNs of an account
    /// filled in (`${SluiceActivityArn}`, `${FailureTopicArn}`).
    Render(SfnRenderArgs),
}

/// `sluice sfn render`.
#[derive(Debug, Args)]
pub struct SfnRenderArgs {
    /// The state machine template (`*.asl.json`).
    pub file: PathBuf,
    /// The Sluice activity's ARN.
    #[arg(long)]
    pub activity_arn: String,
    /// The SNS topic failures are published to.
    #[arg(long)]
    pub topic_arn: Option<String>,
}

/// `sluice backfill`.
#[derive(Debug, Args)]
pub struct BackfillArgs {
    /// The job definition (YAML); or name a registered job with `--job`.
    #[arg(required_unless_present = "job")]
    pub file: Option<PathBuf>,
    /// A job registered on the scheduler: `name` (latest) or `name@3`.
    #[arg(long, conflicts_with = "file")]
    pub job: Option<String>,
    /// First date, YYYY-MM-DD.
    #[arg(long)]
    pub from: String,
    /// Last date, YYYY-MM-DD (inclusive).
    #[arg(long)]
    pub to: String,
    /// One run per `day` or `month`.
    #[arg(long, default_value = "day")]
    pub every: String,
    /// The param that gets each partition value (default: the job's only date param).
    #[arg(long)]
    pub date_param: Option<String>,
    /// A param every run gets, `name=value`; repeat for more.
    #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// Runs in flight at most.
    #[arg(long, default_value_t = 2)]
    pub max_concurrent: u32,
    /// Wait for the backfill to end, showing progress; exit non-zero if it fails.
    #[arg(long)]
    pub wait: bool,
    /// Where the scheduler is.
    #[command(flatten)]
    pub scheduler: SchedulerAddress,
}

/// `sluice backfills`.
#[derive(Debug, Args)]
pub struct BackfillsArgs {
    /// Where the scheduler is.
    #[command(flatten)]
    pub scheduler: SchedulerAddress,
}

/// `sluice token`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a bearer token: prints the token (give it to the client, once) and the
    /// tokens-file entry holding only its SHA-256 (add it to the scheduler's file).
    New(TokenNewArgs),
}

/// `sluice token new`.
#[derive(Debug, Args)]
pub struct TokenNewArgs {
    /// Who the token belongs to (recorded on the runs it submits).
    #[arg(long)]
    pub principal: String,
    /// `reader`, `submitter`, `operator` or `admin` (each holds the ones before it).
    #[arg(long, value_parser = ["reader", "submitter", "operator", "admin"])]
    pub role: String,
    /// A job-name pattern it may submit (`*` matches any text; repeatable); every job
    /// when none.
    #[arg(long = "job")]
    pub jobs: Vec<String>,
}

/// `sluice jobs`.
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Store a definition on the scheduler as the next version of its job (unchanged
    /// text keeps its version).
    Register(JobsRegisterArgs),
    /// The registered jobs with their latest versions.
    List(JobsListArgs),
}

/// `sluice jobs register`.
#[derive(Debug, Args)]
pub struct JobsRegisterArgs {
    /// The job definition (YAML).
    pub file: PathBuf,
    /// Where the scheduler is.
    #[command(flatten)]
    pub scheduler: SchedulerAddress,
}

/// `sluice jobs list`.
#[derive(Debug, Args)]
pub struct JobsListArgs {
    /// How to print them.
    #[arg(long, value_enum, default_value_t)]
    pub output: OutputFormat,
    /// Where the scheduler is.
    #[command(flatten)]
    pub scheduler: SchedulerAddress,
}

/// `sluice sfn-worker`.
#[derive(Debug, Args)]
pub struct SfnWorkerArgs {
    /// An activity to poll; repeat for more.
    #[arg(long = "activity-arn", required = true)]
    pub activity_arns: Vec<String>,
    /// Tasks in flight at most.
    #[arg(long, default_value_t = 4)]
    pub max_concurrent: usize,
    /// Seconds between heartbeats (below the task state's HeartbeatSeconds).
    #[arg(long, default_value_t = 20)]
    pub heartbeat_secs: u64,
    /// After SIGTERM, seconds runs in flight may take before their tasks are failed
    /// with Sluice.WorkerStopped.
    #[arg(long, default_value_t = 60)]
    pub drain_secs: u64,
    /// The worker's name in execution histories (default: sluice-<host>-<pid>).
    #[arg(long)]
    pub name: Option<String>,
    /// Where the scheduler is.
    #[command(flatten)]
    pub scheduler: SchedulerAddress,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// A readable summary.
    #[default]
    Text,
    /// The run record as JSON.
    Json,
}

/// Where the scheduler is.
#[derive(Debug, Clone, Args)]
pub struct SchedulerAddress {
    /// The scheduler's URL (`http://host:port` or `host:port`).
    #[arg(
        long = "scheduler",
        env = "SLUICE_SCHEDULER",
        default_value = "http://127.0.0.1:50050"
    )]
    pub url: String,
}

/// `sluice run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The job definition (YAML).
    pub file: PathBuf,
    /// A parameter, `name=value`; repeat for more.
    #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// How to print the result.
    #[arg(long, value_enum, default_value_t)]
    pub output: OutputFormat,
    /// Executors to start.
    #[arg(long, default_value_t = 2)]
    pub executors: usize,
    /// What executes the plans: Ballista stages on the embedded executors, or the same
    /// plan by DataFusion in this process with no executors (the single-process limit
    /// the benchmark compares against).
    #[arg(long, value_enum, default_value_t)]
    pub engine: RunEngine,
    /// Where the embedded run store lives.
    #[arg(long, env = "SLUICE_STATE_DIR", default_value = ".sluice")]
    pub state_dir: PathBuf,
    /// For `append` outputs: a key naming this piece of work (a batch id, an execution
    /// and partition). If a run with the same key committed to an output already, this
    /// run appends nothing there, so retrying never appends twice.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
}

/// What executes an embedded run's plans.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum RunEngine {
    /// Ballista: a scheduler and executors, stages and shuffles, as in production.
    #[default]
    Ballista,
    /// DataFusion alone, in this process.
    Datafusion,
}

/// `sluice demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the sample data and outputs go.
    #[arg(long, default_value = "sluice-demo")]
    pub dir: PathBuf,
    /// Claim lines to generate.
    #[arg(long, default_value_t = 20_000)]
    pub rows: usize,
    /// Random seed of the sample.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

/// `sluice datagen`.
#[derive(Debug, Subcommand)]
pub enum DatagenCommand {
    /// Pharmacy claims (CSV, one file per month) with products, prescribers, payers and
    /// payer aliases, defects injected at known rates, and `ground_truth.json`.
    Claims(DatagenClaimsArgs),
}

/// `sluice datagen claims`.
#[derive(Debug, Args)]
pub struct DatagenClaimsArgs {
    /// Claim lines to write (resubmitted duplicates included).
    #[arg(long, default_value_t = 100_000)]
    pub rows: usize,
    /// Random seed: the same seed gives the same files.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// The directory to write `landing/` and `ground_truth.json` into.
    #[arg(long)]
    pub out: PathBuf,
    /// Months of 2024 to spread the claims over, e.g. `1,2,3`.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    pub months: Vec<u32>,
    /// Share of claims with one field defect (0 to 1).
    #[arg(long, default_value_t = 0.04)]
    pub defect_rate: f64,
    /// Share of claims resubmitted as a duplicate line (0 to 1).
    #[arg(long, default_value_t = 0.01)]
    pub duplicate_rate: f64,
}

/// `sluice validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The job definition (YAML).
    pub file: PathBuf,
    /// Params; when every required one is given, the sources are read and expressions
    /// are checked against their columns.
    #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// Also print each output's physical plan, as the scheduler plans it (with every
    /// param given).
    #[arg(long)]
    pub explain: bool,
}

/// `sluice scheduler`.
#[derive(Debug, Args)]
pub struct SchedulerArgs {
    /// The address to bind.
    #[arg(long, env = "SLUICE_SCHEDULER__BIND", default_value = "127.0.0.1")]
    pub bind: String,
    /// The port for Ballista's and Sluice's gRPC services.
    #[arg(long, env = "SLUICE_SCHEDULER__PORT", default_value_t = 50050)]
    pub port: u16,
    /// The host executors and clients reach this scheduler at.
    #[arg(long, env = "SLUICE_SCHEDULER__EXTERNAL_HOST")]
    pub external_host: Option<String>,
    /// Where the run store lives.
    #[arg(long, env = "SLUICE_STATE_DIR", default_value = ".sluice")]
    pub state_dir: PathBuf,
    /// An object-store prefix (`s3://bucket/prefix`) that keeps a copy of the run store:
    /// updated a second after each change and before every commit, and restored from at
    /// start when the state directory holds no store (a scheduler on ephemeral disk).
    #[arg(long, env = "SLUICE_STATE__BACKUP")]
    pub state_backup: Option<String>,
    /// Runs the run store keeps at most, the newest (0 keeps every one); applied at start
    /// and hourly. Runs in flight or still to be reported are kept beyond it.
    #[arg(long, env = "SLUICE_STATE__KEEP_RUNS", default_value_t = 0)]
    pub keep_runs: usize,
    /// Days an ended run is kept after it ended (0 keeps it forever).
    #[arg(long, env = "SLUICE_STATE__KEEP_DAYS", default_value_t = 0)]
    pub keep_days: u64,
    /// Days a run with a data-quality report is kept after it ended, as a summary with
    /// the report, when the retention above would remove it (0: no longer than the run).
    #[arg(long, env = "SLUICE_STATE__KEEP_DQ_DAYS", default_value_t = 0)]
    pub keep_dq_days: u64,
    /// A port for HTTP `/healthz`, `/readyz` and `/metrics` (Prometheus).
    #[arg(long, env = "SLUICE_SCHEDULER__HTTP_PORT")]
    pub http_port: Option<u16>,
    /// Seconds without a heartbeat after which an executor is lost.
    #[arg(long, env = "SLUICE_SCHEDULER__EXECUTOR_TIMEOUT", default_value_t = 30)]
    pub executor_timeout_secs: u64,
    /// Seconds an output's lock on an object store lasts without renewal (the holder
    /// renews it every third of that): how long the outputs of a scheduler that died stay
    /// busy, and how long a paused one may stall before another process takes its outputs
    /// over — after which its commit is refused.
    #[arg(long, env = "SLUICE_SCHEDULER__OUTPUT_LEASE", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(3..))]
    pub output_lease_secs: u64,
    /// The tokens file (YAML: principal, role, jobs and each token's SHA-256; `sluice
    /// token new` makes entries), re-read when it changes. Without it the port does not
    /// authenticate.
    #[arg(long, env = "SLUICE_AUTH__TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,
    /// A TLS certificate chain (PEM): the scheduler's server certificate, re-read when
    /// it changes; an executor's fleet identity.
    #[arg(long, env = "SLUICE_TLS__CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of that certificate (PEM).
    #[arg(long, env = "SLUICE_TLS__KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The CA that signs the executors' client certificates: only they may register,
    /// heartbeat and report tasks.
    #[arg(long, env = "SLUICE_TLS__CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Serve a non-loopback address without TLS, tokens or a client CA (logged as
    /// INSECURE); without it such a scheduler refuses to start.
    #[arg(long, env = "SLUICE_INSECURE")]
    pub insecure: bool,
    /// A zone jobs may read (an `s3://` prefix or a local root; repeatable). With any
    /// zone declared, a source outside every zone, or an output outside every writable
    /// one, is refused before anything is read.
    #[arg(long = "read-zone", env = "SLUICE_ZONES__READ", value_delimiter = ',')]
    pub read_zones: Vec<String>,
    /// A zone jobs may read and write (repeatable).
    #[arg(
        long = "write-zone",
        env = "SLUICE_ZONES__WRITE",
        value_delimiter = ','
    )]
    pub write_zones: Vec<String>,
    /// Also run the Step Functions activity worker for this activity (repeatable), as
    /// `sluice sfn-worker` would, against this scheduler.
    #[arg(long = "sfn-activity-arn")]
    pub sfn_activity_arns: Vec<String>,
    /// Scale executors: `local` starts and stops `sluice executor` processes here;
    /// `ecs` sets an ECS service's desiredCount; `emr` resizes an EMR instance group;
    /// `external` only decides (KEDA scales on the scheduler's external-scaler API,
    /// which is always served). `SLUICE_AUTOSCALE__ENDPOINT` / `__REGION` point the
    /// AWS SDK elsewhere.
    #[arg(long, env = "SLUICE_AUTOSCALE__PROVIDER")]
    pub autoscale: Option<String>,
    /// Executors kept when idle (0 scales to zero).
    #[arg(long, env = "SLUICE_AUTOSCALE__MIN", default_value_t = 0)]
    pub min_executors: usize,
    /// Executors at most.
    #[arg(long, env = "SLUICE_AUTOSCALE__MAX", default_value_t = 4)]
    pub max_executors: usize,
    /// Executors added per decision at most.
    #[arg(long, env = "SLUICE_AUTOSCALE__STEP", default_value_t = 2)]
    pub scale_step: usize,
    /// Seconds demand must stay lower before executors are removed.
    #[arg(long, env = "SLUICE_AUTOSCALE__COOLDOWN", default_value_t = 60)]
    pub cooldown_secs: u64,
    /// Task slots of each executor (the local provider starts them with this many).
    #[arg(long, env = "SLUICE_AUTOSCALE__EXECUTOR_SLOTS", default_value_t = 2)]
    pub executor_slots: usize,
    /// `ecs`: the cluster of the executor service.
    #[arg(long, env = "SLUICE_AUTOSCALE__ECS_CLUSTER")]
    pub ecs_cluster: Option<String>,
    /// `ecs`: the executor service.
    #[arg(long, env = "SLUICE_AUTOSCALE__ECS_SERVICE")]
    pub ecs_service: Option<String>,
    /// `emr`: the cluster id (`j-…`).
    #[arg(long, env = "SLUICE_AUTOSCALE__EMR_CLUSTER_ID")]
    pub emr_cluster_id: Option<String>,
    /// `emr`: the instance group of executor nodes (`ig-…`).
    #[arg(long, env = "SLUICE_AUTOSCALE__EMR_INSTANCE_GROUP_ID")]
    pub emr_instance_group_id: Option<String>,
}

/// `sluice executor`.
#[derive(Debug, Args)]
pub struct ExecutorArgs {
    /// The scheduler, `host:port`.
    #[arg(long, env = "SLUICE_SCHEDULER", default_value = "127.0.0.1:50050")]
    pub scheduler: String,
    /// The address to bind.
    #[arg(long, env = "SLUICE_EXECUTOR__BIND", default_value = "127.0.0.1")]
    pub bind: String,
    /// The host the scheduler and other executors reach this one at.
    #[arg(long, env = "SLUICE_EXECUTOR__EXTERNAL_HOST")]
    pub external_host: Option<String>,
    /// Arrow Flight port (shuffle).
    #[arg(long, env = "SLUICE_EXECUTOR__PORT", default_value_t = 50051)]
    pub port: u16,
    /// gRPC port (task launch).
    #[arg(long, env = "SLUICE_EXECUTOR__GRPC_PORT", default_value_t = 50052)]
    pub grpc_port: u16,
    /// Task slots; 0 means one per CPU.
    #[arg(long, env = "SLUICE_EXECUTOR__VCORES", default_value_t = 0)]
    pub vcores: usize,
    /// Memory for query execution, e.g. `4GiB` (spills past it).
    #[arg(long, env = "SLUICE_EXECUTOR__MEMORY")]
    pub memory: Option<String>,
    /// Where shuffle files and spills go.
    #[arg(long, env = "SLUICE_EXECUTOR__WORK_DIR")]
    pub work_dir: Option<PathBuf>,
    /// The executor's id (default: a random one).
    #[arg(long, env = "SLUICE_EXECUTOR__ID")]
    pub executor_id: Option<String>,
    /// Serve grpc.health.v1 on this port (liveness/readiness probes, `sluice health`).
    #[arg(long, env = "SLUICE_EXECUTOR__HEALTH_PORT")]
    pub health_port: Option<u16>,
    /// The executor's fleet certificate (PEM), presented to a scheduler with TLS; the
    /// scheduler's client CA must have signed it.
    #[arg(long, env = "SLUICE_TLS__CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of that certificate (PEM).
    #[arg(long, env = "SLUICE_TLS__KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The CA the scheduler's certificate is verified with; given, the executor (and a
    /// client: submit, runs, sfn-worker, …) reaches the scheduler over TLS.
    #[arg(long, env = "SLUICE_TLS__CA")]
    pub tls_ca: Option<PathBuf>,
}

/// `sluice emr`.
#[derive(Debug, Subcommand)]
pub enum EmrCommand {
    /// Add an EMR step (command-runner.jar running `sluice submit --wait` on the primary
    /// node, whose scheduler the bootstrap action started), so that Step Functions'
    /// `elasticmapreduce:addStep.sync` can drive Sluice runs.
    Submit(EmrSubmitArgs),
}

/// `sluice emr submit`.
#[derive(Debug, Args)]
pub struct EmrSubmitArgs {
    /// The cluster (`j-…`).
    #[arg(long)]
    pub cluster_id: String,
    /// The definition, as a path on the primary node (or `s3://…`, copied there first);
    /// or name a registered job with `--job`.
    #[arg(required_unless_present = "job")]
    pub file: Option<String>,
    /// A job registered on the scheduler.
    #[arg(long, conflicts_with = "file")]
    pub job: Option<String>,
    /// A parameter, `name=value`; repeat for more.
    #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// The step's name (default: `sluice <job or file>`).
    #[arg(long)]
    pub name: Option<String>,
    /// What EMR does when the step fails.
    #[arg(long, default_value = "CONTINUE")]
    pub action_on_failure: String,
}

/// `sluice health`.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// The gRPC address: the scheduler's port, or an executor's `--health-port`.
    #[arg(long, env = "SLUICE_HEALTH_ADDRESS", default_value = "127.0.0.1:50050")]
    pub address: String,
    /// The service to check; empty for the whole process.
    #[arg(long, default_value = "")]
    pub service: String,
}

/// `sluice submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The job definition (YAML); or name a registered job with `--job`.
    #[arg(required_unless_present = "job")]
    pub file: Option<PathBuf>,
    /// A job registered on the scheduler: `name` (latest) or `name@3`.
    #[arg(long, conflicts_with = "file")]
    pub job: Option<String>,
    /// A parameter, `name=value`; repeat for more.
    #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// Wait for the run to end, showing progress; exit non-zero if it fails.
    #[arg(long)]
    pub wait: bool,
    /// How to print the result.
    #[arg(long, value_enum, default_value_t)]
    pub output: OutputFormat,
    /// For `append` outputs: a key naming this piece of work (a batch id, an execution
    /// and partition). If a run with the same key committed to an output already, this
    /// run appends nothing there, so retrying never appends twice.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    /// Where the scheduler is.
    #[command(flatten)]
    pub scheduler: SchedulerAddress,
}

/// `sluice runs`.
#[derive(Debug, Args)]
pub struct RunsArgs {
    /// Show at most this many runs, newest first.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Only runs submitted before this run id (the next page: the id the previous page
    /// ended with, printed as `more: --before ID`).
    #[arg(long)]
    pub before: Option<String>,
    /// How to print the result.
    #[arg(long, value_enum, default_value_t)]
    pub output: OutputFormat,
    /// Where the scheduler is.
    #[command(flatten)]
    pub scheduler: SchedulerAddress,
}

/// `sluice status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The run's id, or a backfill's (`b-…`).
    pub run_id: String,
    /// How to print the result.
    #[arg(long, value_enum, default_value_t)]
    pub output: OutputFormat,
    /// Where the scheduler is.
    #[command(flatten)]
    pub scheduler: SchedulerAddress,
}

/// `sluice cancel`.
#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The run's id, or a backfill's (`b-…`).
    pub run_id: String,
    /// Where the scheduler is.
    #[command(flatten)]
    pub scheduler: SchedulerAddress,
}
