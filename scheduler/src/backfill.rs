//! Backfills: one ordinary run per partition value over a date range, at most
//! `max_concurrent` at once, recorded with their child runs.
//!
//! ```text
//! SubmitBackfill ─► plan: the date param's values from..=to, every day or month
//!     ─► skip values an earlier backfill of the same job, params and range committed
//!     ─► driver: keep ≤ max_concurrent child runs in flight; record each run's end
//!     ─► succeeded (every value committed or skipped) | failed | cancelled
//! ```
//!
//! Each child run is an ordinary run (same commit and idempotency rules), so submitting
//! the same backfill again skips the values that committed and retries the others; a
//! backfill the scheduler's restart interrupted is resumed that way.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{Datelike, NaiveDate, Utc};
use sluice_jobs::{JobDefinition, ParamType};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::error::{Result, SchedulerError};
pub use crate::record::{BackfillRecord, BackfillStatus, Every, PartitionRecord, PartitionStatus};
use crate::record::{RunId, RunStatus};
use crate::runner::{ResolvedDefinition, RunManager, Submission};

/// A backfill as the API receives it.
#[derive(Debug, Clone)]
pub struct BackfillRequest {
    /// The run submission every child run starts from (its params are the shared ones).
    pub submission: Submission,
    /// The param that gets each partition value; the definition's only date param when
    /// left out.
    pub date_param: Option<String>,
    /// First date.
    pub from: NaiveDate,
    /// Last date (inclusive).
    pub to: NaiveDate,
    /// Day or month.
    pub every: Every,
    /// Child runs in flight at most (at least 1).
    pub max_concurrent: usize,
}

/// Partitions a backfill has at most.
const MAX_PARTITIONS: usize = 10_000;

/// Why a date range does not give a backfill's partition values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// The range ends before it starts.
    #[error("--to {to} is before --from {from}")]
    Reversed {
        /// First date.
        from: NaiveDate,
        /// Last date.
        to: NaiveDate,
    },
    /// The param takes ints, not dates.
    #[error(
        "param `{param}` is not a date or string param; a backfill ranges over dates or months"
    )]
    IntParam {
        /// The param.
        param: String,
    },
    /// The range runs past the last date chrono knows.
    #[error("the range runs past the calendar")]
    PastCalendar,
    /// More than 10,000 values.
    #[error("a backfill has at most 10,000 partitions")]
    TooManyPartitions,
}

/// The partition values of a range for a param of `param_type`.
pub fn plan_values(
    param: &str,
    param_type: ParamType,
    from: NaiveDate,
    to: NaiveDate,
    every: Every,
) -> std::result::Result<Vec<String>, RangeError> {
    if to < from {
        return Err(RangeError::Reversed { from, to });
    }
    let mut values = Vec::new();
    let mut date = match every {
        Every::Day => from,
        Every::Month => from.with_day(1).unwrap_or(from),
    };
    while date <= to {
        values.push(match (param_type, every) {
            (ParamType::Date, _) | (ParamType::String, Every::Day) => {
                date.format("%Y-%m-%d").to_string()
            }
            (ParamType::String, Every::Month) => date.format("%Y-%m").to_string(),
            (ParamType::Int | ParamType::Path, _) => {
                return Err(RangeError::IntParam {
                    param: param.to_owned(),
                });
            }
        });
        date = match every {
            Every::Day => date.succ_opt().ok_or(RangeError::PastCalendar)?,
            Every::Month => date
                .checked_add_months(chrono::Months::new(1))
                .ok_or(RangeError::PastCalendar)?,
        };
        if values.len() > MAX_PARTITIONS {
            return Err(RangeError::TooManyPartitions);
        }
    }
    Ok(values)
}

/// Accepts backfills and drives their child runs.
pub struct BackfillManager {
    runs: Arc<RunManager>,
    store: Arc<Mutex<BTreeMap<String, BackfillRecord>>>,
    tasks: Mutex<JoinSet<()>>,
    cancels: Arc<Mutex<BTreeMap<String, watch::Sender<bool>>>>,
}

impl std::fmt::Debug for BackfillManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackfillManager").finish_non_exhaustive()
    }
}

impl BackfillManager {
    /// A manager over the run manager; the run store keeps its records.
    pub fn new(runs: Arc<RunManager>) -> Result<Self> {
        let existing = runs.runs().store.list_backfills()?;
        let mut records = BTreeMap::new();
        for mut record in existing {
            if !record.status.is_final() {
                // Its driver died with the previous scheduler.
                record.status = BackfillStatus::Interrupted;
                record.finished_at = Some(Utc::now());
                runs.runs().store.put_backfill(&record)?;
            }
            records.insert(record.backfill_id.clone(), record);
        }
        Ok(Self {
            runs,
            store: Arc::new(Mutex::new(records)),
            tasks: Mutex::new(JoinSet::new()),
            cancels: Arc::new(Mutex::new(BTreeMap::new())),
        })
    }

    /// One backfill.
    pub fn get(&self, backfill_id: &str) -> Result<BackfillRecord> {
        self.store
            .lock()
            .ok()
            .and_then(|records| records.get(backfill_id).cloned())
            .ok_or_else(|| SchedulerError::BackfillNotFound(backfill_id.to_owned()))
    }

    /// Backfills, newest first.
    pub fn list(&self) -> Vec<BackfillRecord> {
        self.store
            .lock()
            .map(|records| records.values().rev().cloned().collect())
            .unwrap_or_default()
    }

    /// Stops a backfill: no more runs start and its runs in flight are cancelled.
    pub fn cancel(&self, backfill_id: &str) -> Result<BackfillRecord> {
        let record = self.get(backfill_id)?;
        if let Ok(cancels) = self.cancels.lock()
            && let Some(cancel) = cancels.get(backfill_id)
        {
            cancel.send_replace(true);
        }
        Ok(record)
    }

    /// Validates and plans a backfill, records it and starts its driver.
    pub async fn submit(&self, request: BackfillRequest) -> Result<BackfillRecord> {
        let invalid = |message: String| {
            SchedulerError::Job(sluice_jobs::JobError::Param {
                name: "backfill".into(),
                message,
            })
        };
        let ResolvedDefinition { yaml, origin } =
            self.runs.resolve_definition(&request.submission)?;
        let definition = JobDefinition::from_yaml(&yaml, &origin)?;
        let date_param = match &request.date_param {
            Some(name) => name.clone(),
            None => {
                let dates: Vec<&String> = definition
                    .params
                    .iter()
                    .filter(|(_, spec)| spec.param_type == ParamType::Date)
                    .map(|(name, _)| name)
                    .collect();
                match dates.as_slice() {
                    [only] => (*only).clone(),
                    _ => {
                        return Err(invalid(format!(
                            "name the param that gets each partition value (--date-param); \
                             the job has {} date params",
                            dates.len()
                        )));
                    }
                }
            }
        };
        let spec = definition
            .params
            .get(&date_param)
            .ok_or_else(|| invalid(format!("the job declares no param `{date_param}`")))?;
        if request.submission.params.contains_key(&date_param) {
            return Err(invalid(format!(
                "`{date_param}` gets each partition's value; do not give it with --param"
            )));
        }
        let values = plan_values(
            &date_param,
            spec.param_type,
            request.from,
            request.to,
            request.every,
        )
        .map_err(|err| invalid(err.to_string()))?;
        // Every run must be valid: the first value is compiled now, as its run would be.
        let mut first_params = request.submission.params.clone();
        if let Some(first) = values.first() {
            first_params.insert(date_param.clone(), first.clone());
        }
        sluice_jobs::PreparedJob::prepare(definition.clone(), &origin, &first_params)?;

        let key = backfill_key(&definition.name, &yaml, &request, &date_param);
        let mut committed = self.committed_values(&legacy_backfill_key(
            &definition.name,
            &yaml,
            &request,
            &date_param,
        ));
        committed.extend(self.committed_values(&key));
        let partitions = values
            .into_iter()
            .map(|value| match committed.get(&value) {
                Some(run_id) => PartitionRecord {
                    value,
                    status: PartitionStatus::Skipped,
                    run_id: Some(run_id.clone()),
                    error: None,
                },
                None => PartitionRecord {
                    value,
                    status: PartitionStatus::Pending,
                    run_id: None,
                    error: None,
                },
            })
            .collect();
        let random = uuid::Uuid::new_v4().simple().to_string();
        let record = BackfillRecord {
            backfill_id: format!(
                "b-{}-{}",
                Utc::now().format("%Y%m%dT%H%M%S%3f"),
                &random[..8]
            ),
            job: definition.name.clone(),
            origin: origin.clone(),
            key,
            date_param: date_param.clone(),
            from: request.from,
            to: request.to,
            every: request.every,
            max_concurrent: request.max_concurrent.max(1),
            params: request.submission.params.clone(),
            status: BackfillStatus::Running,
            submitted_at: Utc::now(),
            finished_at: None,
            partitions,
        };
        self.save(&record)?;
        let (cancel_tx, cancel_rx) = watch::channel(false);
        if let Ok(mut cancels) = self.cancels.lock() {
            cancels.insert(record.backfill_id.clone(), cancel_tx);
        }
        let driver = Driver {
            runs: Arc::clone(&self.runs),
            store: Arc::clone(&self.store),
            cancels: Arc::clone(&self.cancels),
            submission: Submission {
                definition_yaml: Some(yaml),
                registered_job: None,
                origin,
                ..request.submission
            },
            backfill_id: record.backfill_id.clone(),
            cancel: cancel_rx,
        };
        tracing::info!(backfill_id = %record.backfill_id, job = %record.job, partitions = record.partitions.len(), "backfill accepted");
        if let Ok(mut tasks) = self.tasks.lock() {
            while tasks.try_join_next().is_some() {}
            tasks.spawn(driver.run());
        }
        Ok(record)
    }

    fn save(&self, record: &BackfillRecord) -> Result<()> {
        self.runs.runs().store.put_backfill(record)?;
        if let Ok(mut records) = self.store.lock() {
            records.insert(record.backfill_id.clone(), record.clone());
        }
        Ok(())
    }

    /// Values earlier backfills with this key committed, with the run that did.
    fn committed_values(&self, key: &str) -> BTreeMap<String, RunId> {
        let mut committed = BTreeMap::new();
        let Ok(records) = self.store.lock() else {
            return committed;
        };
        for record in records.values().filter(|r| r.key == key) {
            for partition in &record.partitions {
                if matches!(
                    partition.status,
                    PartitionStatus::Succeeded | PartitionStatus::Skipped
                ) && let Some(run_id) = &partition.run_id
                {
                    committed.insert(partition.value.clone(), run_id.clone());
                }
            }
        }
        // Runs the previous scheduler did not get to record as done.
        for record in records.values().filter(|r| r.key == key) {
            for partition in &record.partitions {
                if let (PartitionStatus::Running, Some(run_id)) =
                    (partition.status, &partition.run_id)
                    && self
                        .runs
                        .runs()
                        .get(run_id)
                        .is_ok_and(|run| run.status == RunStatus::Succeeded)
                {
                    committed.insert(partition.value.clone(), run_id.clone());
                }
            }
        }
        committed
    }
}

/// What makes two backfills the same work: the job, its definition text, the shared
/// params, the range and the date param. SHA-256 over a length-prefixed encoding, so
/// the key is the same in every Sluice release (Rust's `DefaultHasher` is not).
fn backfill_key(job: &str, yaml: &str, request: &BackfillRequest, date_param: &str) -> String {
    use sha2::Digest;
    let mut digest = sha2::Sha256::new();
    let mut field = |bytes: &[u8]| {
        digest.update((bytes.len() as u64).to_be_bytes());
        digest.update(bytes);
    };
    field(yaml.as_bytes());
    for (name, value) in &request.submission.params {
        field(name.as_bytes());
        field(value.as_bytes());
    }
    field(b"--");
    field(request.from.to_string().as_bytes());
    field(request.to.to_string().as_bytes());
    field(match request.every {
        Every::Day => b"day",
        Every::Month => b"month",
    });
    field(date_param.as_bytes());
    let hash = hex::encode(&digest.finalize()[..16]);
    format!("{job}:sha256:{hash}")
}

/// The key backfills recorded before keys were SHA-256 (`DefaultHasher`, stable only
/// within one Rust release): looked up too, so a backfill resubmitted after the upgrade
/// still skips what those committed.
fn legacy_backfill_key(
    job: &str,
    yaml: &str,
    request: &BackfillRequest,
    date_param: &str,
) -> String {
    let mut hasher = std::hash::DefaultHasher::new();
    yaml.hash(&mut hasher);
    request.submission.params.hash(&mut hasher);
    (request.from, request.to, request.every, date_param).hash(&mut hasher);
    format!("{job}:{:016x}", hasher.finish())
}

/// Drives one backfill's child runs.
struct Driver {
    runs: Arc<RunManager>,
    store: Arc<Mutex<BTreeMap<String, BackfillRecord>>>,
    cancels: Arc<Mutex<BTreeMap<String, watch::Sender<bool>>>>,
    submission: Submission,
    backfill_id: String,
    cancel: watch::Receiver<bool>,
}

/// A child run that ended since the driver's last tick.
struct Ended {
    /// Its partition's index.
    index: usize,
    /// What its end means for the partition.
    status: PartitionStatus,
    /// Why it failed.
    error: Option<String>,
}

const DRIVER_TICK: Duration = Duration::from_millis(300);

impl Driver {
    fn update(&self, change: impl FnOnce(&mut BackfillRecord)) -> Option<BackfillRecord> {
        let record = {
            let mut records = self.store.lock().ok()?;
            let record = records.get_mut(&self.backfill_id)?;
            change(record);
            record.clone()
        };
        if let Err(err) = self.runs.runs().store.put_backfill(&record) {
            tracing::warn!(backfill_id = %self.backfill_id, "backfill not saved: {err}");
        }
        Some(record)
    }

    async fn run(mut self) {
        loop {
            let Some(record) = self.update(|_| {}) else {
                return;
            };
            let cancelled = *self.cancel.borrow();
            // Record the ends of runs in flight.
            let mut ended: Vec<Ended> = Vec::new();
            for (index, partition) in record.partitions.iter().enumerate() {
                if let (PartitionStatus::Running, Some(run_id)) =
                    (partition.status, &partition.run_id)
                    && let Ok(run) = self.runs.runs().get(run_id)
                {
                    let status = match run.status {
                        RunStatus::Succeeded => PartitionStatus::Succeeded,
                        RunStatus::Cancelled => PartitionStatus::Cancelled,
                        RunStatus::Failed | RunStatus::Interrupted => PartitionStatus::Failed,
                        RunStatus::Queued | RunStatus::Running => {
                            if cancelled {
                                let _ = self.runs.cancel(run_id);
                            }
                            continue;
                        }
                    };
                    ended.push(Ended {
                        index,
                        status,
                        error: run.error.clone(),
                    });
                }
            }
            let record = self
                .update(|record| {
                    for Ended {
                        index,
                        status,
                        error,
                    } in ended
                    {
                        record.partitions[index].status = status;
                        record.partitions[index].error = error;
                    }
                    if cancelled {
                        for partition in &mut record.partitions {
                            if partition.status == PartitionStatus::Pending {
                                partition.status = PartitionStatus::Cancelled;
                            }
                        }
                    }
                })
                .unwrap_or(record);
            let in_flight = record
                .partitions
                .iter()
                .filter(|p| p.status == PartitionStatus::Running)
                .count();
            let pending: Vec<usize> = record
                .partitions
                .iter()
                .enumerate()
                .filter(|(_, p)| p.status == PartitionStatus::Pending)
                .map(|(index, _)| index)
                .collect();
            if in_flight == 0 && pending.is_empty() {
                let statuses: BTreeSet<PartitionStatus> =
                    record.partitions.iter().map(|p| p.status).collect();
                let status = if cancelled {
                    BackfillStatus::Cancelled
                } else if statuses
                    .iter()
                    .all(|s| matches!(s, PartitionStatus::Succeeded | PartitionStatus::Skipped))
                {
                    BackfillStatus::Succeeded
                } else {
                    BackfillStatus::Failed
                };
                self.update(|record| {
                    record.status = status;
                    record.finished_at = Some(Utc::now());
                });
                tracing::info!(backfill_id = %self.backfill_id, status = ?status, "backfill ended");
                break;
            }
            for index in pending
                .into_iter()
                .take(record.max_concurrent.saturating_sub(in_flight))
            {
                let value = record.partitions[index].value.clone();
                let mut submission = self.submission.clone();
                submission
                    .params
                    .insert(record.date_param.clone(), value.clone());
                match self.runs.submit(submission).await {
                    Ok(run) => {
                        self.update(|record| {
                            record.partitions[index].status = PartitionStatus::Running;
                            record.partitions[index].run_id = Some(run.run_id.clone());
                        });
                    }
                    // Another run holds an output: try again on a later tick.
                    Err(SchedulerError::OutputBusy { .. }) => break,
                    Err(err) => {
                        self.update(|record| {
                            record.partitions[index].status = PartitionStatus::Failed;
                            record.partitions[index].error = Some(err.to_string());
                        });
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(DRIVER_TICK) => {}
                _ = self.cancel.changed() => {}
            }
        }
        if let Ok(mut cancels) = self.cancels.lock() {
            cancels.remove(&self.backfill_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key is pinned: the expected value is Python's `hashlib.sha256` over the same
    /// length-prefixed fields, so a change to the encoding, or to the hash, fails here
    /// instead of making resubmitted backfills redo committed partitions.
    #[test]
    fn the_backfill_key_is_the_same_in_every_release() {
        let date = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        let request = BackfillRequest {
            submission: Submission {
                params: [("out", "s3://lake/x"), ("region", "EU")]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
                ..Submission::default()
            },
            date_param: None,
            from: date("2024-01-01"),
            to: date("2024-03-31"),
            every: Every::Month,
            max_concurrent: 2,
        };
        assert_eq!(
            backfill_key("rx", "name: rx\n", &request, "month_start"),
            "rx:sha256:eb315d3b121df551236d987e2f6015a9"
        );
    }

    #[test]
    fn ranges_become_partition_values() {
        let date = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        let months = plan_values(
            "m",
            ParamType::String,
            date("2024-01-15"),
            date("2024-12-31"),
            Every::Month,
        )
        .unwrap();
        assert_eq!(months.len(), 12);
        assert_eq!(
            (months[0].as_str(), months[11].as_str()),
            ("2024-01", "2024-12")
        );
        let days = plan_values(
            "d",
            ParamType::Date,
            date("2024-02-27"),
            date("2024-03-01"),
            Every::Day,
        )
        .unwrap();
        assert_eq!(
            days,
            ["2024-02-27", "2024-02-28", "2024-02-29", "2024-03-01"]
        );
        assert!(
            plan_values(
                "d",
                ParamType::Int,
                date("2024-01-01"),
                date("2024-01-02"),
                Every::Day
            )
            .is_err()
        );
        assert!(
            plan_values(
                "d",
                ParamType::Date,
                date("2024-02-01"),
                date("2024-01-01"),
                Every::Day
            )
            .is_err()
        );
    }
}
