//! Run records: one execution of a job definition with bound params, its id, status,
//! outputs and profile, and its durable record.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Identifies a run: `r-<UTC timestamp>-<random>`, so ids sort by submission time.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(String);

impl RunId {
    /// A fresh id.
    pub fn generate() -> Self {
        let random = uuid::Uuid::new_v4().simple().to_string();
        Self(format!(
            "r-{}-{}",
            Utc::now().format("%Y%m%dT%H%M%S%3f"),
            &random[..8]
        ))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<String> for RunId {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Accepted, not started.
    Queued,
    /// Its Ballista jobs are running or its outputs are being committed.
    Running,
    /// Every output committed.
    Succeeded,
    /// It failed; no output of it is visible.
    Failed,
    /// Cancelled by a user; no output of it is visible.
    Cancelled,
    /// The scheduler stopped while it was in flight; no output of it is visible.
    Interrupted,
}

impl RunStatus {
    /// True once the run can change no more.
    pub fn is_final(self) -> bool {
        !matches!(self, RunStatus::Queued | RunStatus::Running)
    }

    /// The status as users read it.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Interrupted => "interrupted",
        }
    }
}

/// What a run wrote to one output.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputRecord {
    /// The output's name.
    pub name: String,
    /// Its location.
    pub location: String,
    /// Rows written.
    pub rows_written: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// The committed files, relative to the location.
    pub files: Vec<String>,
    /// The Hive partitions written (`fill_month=2024-01`).
    pub partitions: Vec<String>,
    /// For an append whose idempotency key had committed already: the run that did (and
    /// this run appended nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate_of: Option<String>,
}

/// Where a run's time went. Task times are summed over tasks (several run at once), so
/// together they can exceed the run's wall time; they say which part dominates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunProfile {
    /// Compiling the definition and planning each output's job.
    pub planning_ms: u64,
    /// From submission to the first task executing.
    pub first_task_ms: Option<u64>,
    /// Tasks opening and decoding sources.
    pub read_ms: u64,
    /// Tasks computing (every other operator's `elapsed_compute`).
    pub compute_ms: u64,
    /// Tasks writing and fetching shuffle data.
    pub shuffle_ms: u64,
    /// Tasks routing rows (valid or quarantined), counting rules and writing Parquet.
    pub write_ms: u64,
    /// Making the outputs visible.
    pub commit_ms: u64,
}

/// How far a run has come.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Stages finished, over all outputs' Ballista jobs so far.
    pub stages_done: u32,
    /// Stages planned, over all outputs' Ballista jobs so far.
    pub stages_total: u32,
    /// Rows the sources' scans have read so far.
    pub rows_so_far: u64,
    /// The output being computed now.
    pub current_output: String,
}

/// The durable record of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run's id.
    pub run_id: RunId,
    /// The job's name.
    pub job: String,
    /// Where the definition came from.
    pub origin: String,
    /// The params, typed and with defaults applied, as text.
    pub params: BTreeMap<String, String>,
    /// Where the run is.
    pub status: RunStatus,
    /// When it was accepted.
    pub submitted_at: DateTime<Utc>,
    /// When its first Ballista job was submitted.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a final status.
    pub finished_at: Option<DateTime<Utc>>,
    /// Rows read from the sources.
    pub rows_read: u64,
    /// Per output, what was committed.
    pub outputs: Vec<OutputRecord>,
    /// Why it failed.
    pub error: Option<String>,
    /// Conf keys without effect, and similar notes.
    pub warnings: Vec<String>,
    /// How far it has come.
    pub progress: Progress,
    /// The Ballista job ids, one per output, in order.
    pub ballista_jobs: Vec<String>,
    /// Tasks each executor ran successfully for this run.
    #[serde(default)]
    pub tasks_by_executor: BTreeMap<String, u64>,
    /// The run's outputs by name, with their locations, known from submission.
    #[serde(default)]
    pub output_locations: BTreeMap<String, String>,
    /// Rows written to the quarantine output.
    #[serde(default)]
    pub rows_quarantined: u64,
    /// The data-quality report, once the rules were judged.
    #[serde(default)]
    pub dq: Option<sluice_jobs::quality::DqReport>,
    /// The Step Functions task token the run reports to when it ends.
    #[serde(default)]
    pub task_token: Option<String>,
    /// The key naming the run's work for `append` outputs (see `Submission`).
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// The principal whose token submitted the run; `None` on a port without tokens.
    #[serde(default)]
    pub submitted_by: Option<String>,
    /// The run's result reached Step Functions.
    #[serde(default)]
    pub task_reported: bool,
    /// Past the history retention, kept as a summary for its data-quality report (see
    /// [`RunRecord::compact`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub compacted: bool,
    /// Where the run's time went.
    #[serde(default)]
    pub profile: RunProfile,
    /// The run failed with its commit plan written but not wholly applied (store errors
    /// outlasted the retries): the next commit on the output, or the next scheduler
    /// start, completes it, and the run then becomes `succeeded`.
    #[serde(default)]
    pub commit_pending: bool,
}

impl RunRecord {
    /// A new queued run.
    pub fn new(
        run_id: RunId,
        job: String,
        origin: String,
        params: BTreeMap<String, String>,
        warnings: Vec<String>,
    ) -> Self {
        Self {
            run_id,
            job,
            origin,
            params,
            status: RunStatus::Queued,
            submitted_at: Utc::now(),
            started_at: None,
            finished_at: None,
            rows_read: 0,
            outputs: Vec::new(),
            error: None,
            warnings,
            progress: Progress::default(),
            ballista_jobs: Vec::new(),
            tasks_by_executor: BTreeMap::new(),
            output_locations: BTreeMap::new(),
            rows_quarantined: 0,
            dq: None,
            task_token: None,
            idempotency_key: None,
            submitted_by: None,
            task_reported: false,
            profile: RunProfile::default(),
            commit_pending: false,
            compacted: false,
        }
    }

    /// Reduces an ended run past the history retention to what quality history needs:
    /// its status, times, params, row counts and data-quality report stay; the outputs'
    /// file and partition lists, progress, tasks and profile go.
    pub fn compact(&mut self) {
        for output in &mut self.outputs {
            output.files = Vec::new();
            output.partitions = Vec::new();
        }
        self.progress = Progress::default();
        self.ballista_jobs = Vec::new();
        self.tasks_by_executor = BTreeMap::new();
        self.profile = RunProfile::default();
        self.warnings.push(
            "past the run history's retention: kept as a summary with its data-quality \
             report (files, progress and profile dropped)"
                .into(),
        );
        self.compacted = true;
    }

    /// Moves the run to a final status.
    pub fn finish(&mut self, status: RunStatus, error: Option<String>) {
        self.status = status;
        self.error = error;
        self.finished_at = Some(Utc::now());
    }
}
