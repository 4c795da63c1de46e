//! Backfill records: a backfill's partition values and where each is, as the run store
//! keeps them (JSON in the `backfills` table).

use std::collections::BTreeMap;

use chrono::{NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::RunId;

/// How far apart a backfill's partition values are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Every {
    /// One run per day.
    Day,
    /// One run per month (a date param gets the month's first day; a string param
    /// `YYYY-MM`).
    Month,
}

/// Where a backfill is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackfillStatus {
    /// Child runs are being started or are in flight.
    Running,
    /// Every partition committed (now or by an earlier backfill).
    Succeeded,
    /// Some partition's run failed; the others ran.
    Failed,
    /// Cancelled: its runs in flight were cancelled, no more were started.
    Cancelled,
    /// The scheduler stopped while it ran; submit it again to resume.
    Interrupted,
}

impl BackfillStatus {
    /// True once it can change no more.
    pub fn is_final(self) -> bool {
        self != BackfillStatus::Running
    }
}

/// Where one partition value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartitionStatus {
    /// Not started yet.
    Pending,
    /// Its run is in flight.
    Running,
    /// Its run committed.
    Succeeded,
    /// Its run failed, or could not be submitted.
    Failed,
    /// Not run: the backfill was cancelled first, or its run was cancelled.
    Cancelled,
    /// An earlier backfill's run committed it.
    Skipped,
}

/// One partition value of a backfill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRecord {
    /// The param's value for this run.
    pub value: String,
    /// Where it is.
    pub status: PartitionStatus,
    /// The run that ran it (for `skipped`, the earlier run that committed it).
    pub run_id: Option<RunId>,
    /// Why it failed.
    pub error: Option<String>,
}

/// The durable record of a backfill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackfillRecord {
    /// `b-<UTC timestamp>-<random>`.
    pub backfill_id: String,
    /// The job's name.
    pub job: String,
    /// Where the definition came from.
    pub origin: String,
    /// Identifies "the same backfill": job, definition, params and range.
    pub key: String,
    /// The param each run gets its partition value in.
    pub date_param: String,
    /// First date of the range.
    pub from: NaiveDate,
    /// Last date of the range (inclusive).
    pub to: NaiveDate,
    /// Day or month.
    pub every: Every,
    /// Child runs in flight at most.
    pub max_concurrent: usize,
    /// The other params, the same for every run.
    pub params: BTreeMap<String, String>,
    /// Where it is.
    pub status: BackfillStatus,
    /// When it was accepted.
    pub submitted_at: chrono::DateTime<Utc>,
    /// When it ended.
    pub finished_at: Option<chrono::DateTime<Utc>>,
    /// One entry per partition value, in order.
    pub partitions: Vec<PartitionRecord>,
}

impl BackfillRecord {
    /// Partitions by status.
    pub fn counts(&self) -> BTreeMap<PartitionStatus, usize> {
        let mut counts = BTreeMap::new();
        for partition in &self.partitions {
            *counts.entry(partition.status).or_default() += 1;
        }
        counts
    }
}
