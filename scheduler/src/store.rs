//! The durable run store: one redb file holding every run record, backfill record and
//! registered job definition (as JSON). It stores the types of [`crate::record`] and
//! knows nothing above them. It survives scheduler restarts; runs that were in flight
//! when the scheduler stopped are marked `interrupted` when it opens again.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::auth::AuditEvent;
use crate::error::{Result, SchedulerError};
use crate::record::{BackfillRecord, JobVersion, RunId, RunRecord, RunStatus};

const RUNS: TableDefinition<&str, &[u8]> = TableDefinition::new("runs");
const BACKFILLS: TableDefinition<&str, &[u8]> = TableDefinition::new("backfills");
/// Registered definitions: `name` + `\u{1f}` + zero-padded version → [`JobVersion`] JSON,
/// so one name's versions sort together and in order.
const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("job_versions");
/// The audit trail: a growing sequence number → [`AuditEvent`] JSON.
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
/// Audit events kept; older ones are dropped as new ones arrive.
const AUDIT_KEPT: u64 = 100_000;

fn job_key(name: &str, version: u32) -> String {
    format!("{name}\u{1f}{version:010}")
}

/// The run store.
#[derive(Debug)]
pub struct RunStore {
    path: PathBuf,
    db: Database,
    interrupted: Vec<RunRecord>,
}

impl RunStore {
    /// The folder that holds the store's file: no job may write there.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(&self.path)
    }

    /// Opens (or creates) the store at `path` and marks runs left in flight by a
    /// previous scheduler as interrupted.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|err| SchedulerError::store(path, err))?;
        }
        let db = Database::create(path).map_err(|err| SchedulerError::store(path, err))?;
        let mut store = Self {
            path: path.to_owned(),
            db,
            interrupted: Vec::new(),
        };
        store.init_tables()?;
        let mut interrupted = Vec::new();
        for mut run in store.list(0)? {
            if !run.status.is_final() {
                run.finish(
                    RunStatus::Interrupted,
                    Some(
                        "the scheduler stopped while this run was in flight; its outputs were \
                         not committed — submit it again to re-run"
                            .into(),
                    ),
                );
                store.put(&run)?;
                interrupted.push(run);
            } else if run.commit_pending {
                // A commit that stopped part way on store errors: settled like one a
                // stopped scheduler left.
                interrupted.push(run);
            }
        }
        store.interrupted = interrupted;
        Ok(store)
    }

    /// The runs this open found in flight (and marked interrupted), and the failed runs
    /// whose commit is pending: the runs whose outputs start-up settles.
    pub fn interrupted_on_open(&self) -> &[RunRecord] {
        &self.interrupted
    }

    fn init_tables(&self) -> Result<()> {
        let txn = self.db.begin_write().map_err(|e| self.fail(e))?;
        {
            txn.open_table(RUNS).map_err(|e| self.fail(e))?;
            txn.open_table(JOBS).map_err(|e| self.fail(e))?;
            txn.open_table(BACKFILLS).map_err(|e| self.fail(e))?;
            txn.open_table(AUDIT).map_err(|e| self.fail(e))?;
        }
        txn.commit().map_err(|e| self.fail(e))
    }

    fn fail(&self, err: impl std::fmt::Display) -> SchedulerError {
        SchedulerError::store(&self.path, err)
    }

    /// Writes a run record (insert or replace).
    pub fn put(&self, run: &RunRecord) -> Result<()> {
        let json = serde_json::to_vec(run).map_err(|e| self.fail(e))?;
        let txn = self.db.begin_write().map_err(|e| self.fail(e))?;
        {
            let mut table = txn.open_table(RUNS).map_err(|e| self.fail(e))?;
            table
                .insert(run.run_id.as_str(), json.as_slice())
                .map_err(|e| self.fail(e))?;
        }
        txn.commit().map_err(|e| self.fail(e))
    }

    /// Appends an audit event, dropping the oldest past [`AUDIT_KEPT`].
    pub fn append_audit(&self, event: &AuditEvent) -> Result<()> {
        let json = serde_json::to_vec(event).map_err(|e| self.fail(e))?;
        let txn = self.db.begin_write().map_err(|e| self.fail(e))?;
        {
            let mut table = txn.open_table(AUDIT).map_err(|e| self.fail(e))?;
            let next = match table.last().map_err(|e| self.fail(e))? {
                Some((key, _)) => key.value() + 1,
                None => 0,
            };
            table
                .insert(next, json.as_slice())
                .map_err(|e| self.fail(e))?;
            if next >= AUDIT_KEPT {
                table.remove(next - AUDIT_KEPT).map_err(|e| self.fail(e))?;
            }
        }
        txn.commit().map_err(|e| self.fail(e))
    }

    /// Audit events, newest first; at most `limit`.
    pub fn audit(&self, limit: usize) -> Result<Vec<AuditEvent>> {
        let txn = self.db.begin_read().map_err(|e| self.fail(e))?;
        let table = txn.open_table(AUDIT).map_err(|e| self.fail(e))?;
        let mut events = Vec::new();
        for entry in table.iter().map_err(|e| self.fail(e))?.rev().take(limit) {
            let (_, value) = entry.map_err(|e| self.fail(e))?;
            events.push(serde_json::from_slice(value.value()).map_err(|e| self.fail(e))?);
        }
        Ok(events)
    }

    /// Reads one run.
    pub fn get(&self, run_id: &RunId) -> Result<Option<RunRecord>> {
        let txn = self.db.begin_read().map_err(|e| self.fail(e))?;
        let table = txn.open_table(RUNS).map_err(|e| self.fail(e))?;
        match table.get(run_id.as_str()).map_err(|e| self.fail(e))? {
            Some(value) => Ok(Some(
                serde_json::from_slice(value.value()).map_err(|e| self.fail(e))?,
            )),
            None => Ok(None),
        }
    }

    /// Runs, newest first; `limit` 0 means all.
    pub fn list(&self, limit: usize) -> Result<Vec<RunRecord>> {
        let txn = self.db.begin_read().map_err(|e| self.fail(e))?;
        let table = txn.open_table(RUNS).map_err(|e| self.fail(e))?;
        let mut runs = Vec::new();
        for entry in table.iter().map_err(|e| self.fail(e))?.rev() {
            let (_, value) = entry.map_err(|e| self.fail(e))?;
            runs.push(
                serde_json::from_slice::<RunRecord>(value.value()).map_err(|e| self.fail(e))?,
            );
            if limit > 0 && runs.len() >= limit {
                break;
            }
        }
        Ok(runs)
    }

    /// A registered job: `name` is its latest version, `name@N` version N.
    pub fn registered_job(&self, reference: &str) -> Result<Option<JobVersion>> {
        let (name, version) = match reference.rsplit_once('@') {
            Some((name, version)) => match version.parse::<u32>() {
                Ok(version) => (name, Some(version)),
                Err(_) => return Ok(None),
            },
            None => (reference, None),
        };
        let versions = self.job_versions(name)?;
        Ok(match version {
            Some(version) => versions.into_iter().find(|v| v.version == version),
            None => versions.into_iter().last(),
        })
    }

    /// Every version of one job, oldest first.
    fn job_versions(&self, name: &str) -> Result<Vec<JobVersion>> {
        let txn = self.db.begin_read().map_err(|e| self.fail(e))?;
        let table = txn.open_table(JOBS).map_err(|e| self.fail(e))?;
        let start = job_key(name, 0);
        let end = job_key(name, u32::MAX);
        let mut versions = Vec::new();
        for entry in table
            .range(start.as_str()..=end.as_str())
            .map_err(|e| self.fail(e))?
        {
            let (_, value) = entry.map_err(|e| self.fail(e))?;
            versions.push(serde_json::from_slice(value.value()).map_err(|e| self.fail(e))?);
        }
        Ok(versions)
    }

    /// Stores a definition as the next version of its job; the same text as the latest
    /// version is not stored again (registering is idempotent).
    pub fn register_job(&self, name: &str, description: &str, yaml: &str) -> Result<JobVersion> {
        let latest = self.job_versions(name)?.into_iter().last();
        if let Some(latest) = &latest
            && latest.definition_yaml == yaml
        {
            return Ok(latest.clone());
        }
        let version = JobVersion {
            name: name.to_owned(),
            version: latest.map_or(1, |v| v.version + 1),
            description: description.to_owned(),
            registered_at: chrono::Utc::now(),
            definition_yaml: yaml.to_owned(),
        };
        let json = serde_json::to_vec(&version).map_err(|e| self.fail(e))?;
        let txn = self.db.begin_write().map_err(|e| self.fail(e))?;
        {
            let mut table = txn.open_table(JOBS).map_err(|e| self.fail(e))?;
            table
                .insert(job_key(name, version.version).as_str(), json.as_slice())
                .map_err(|e| self.fail(e))?;
        }
        txn.commit().map_err(|e| self.fail(e))?;
        Ok(version)
    }

    /// Writes a backfill record (insert or replace).
    pub fn put_backfill(&self, record: &BackfillRecord) -> Result<()> {
        let json = serde_json::to_vec(record).map_err(|e| self.fail(e))?;
        let txn = self.db.begin_write().map_err(|e| self.fail(e))?;
        {
            let mut table = txn.open_table(BACKFILLS).map_err(|e| self.fail(e))?;
            table
                .insert(record.backfill_id.as_str(), json.as_slice())
                .map_err(|e| self.fail(e))?;
        }
        txn.commit().map_err(|e| self.fail(e))
    }

    /// Every backfill record, oldest first.
    pub fn list_backfills(&self) -> Result<Vec<BackfillRecord>> {
        let txn = self.db.begin_read().map_err(|e| self.fail(e))?;
        let table = txn.open_table(BACKFILLS).map_err(|e| self.fail(e))?;
        let mut records = Vec::new();
        for entry in table.iter().map_err(|e| self.fail(e))? {
            let (_, value) = entry.map_err(|e| self.fail(e))?;
            records.push(serde_json::from_slice(value.value()).map_err(|e| self.fail(e))?);
        }
        Ok(records)
    }

    /// The latest version of every registered job, by name.
    pub fn list_jobs(&self) -> Result<Vec<JobVersion>> {
        let txn = self.db.begin_read().map_err(|e| self.fail(e))?;
        let table = txn.open_table(JOBS).map_err(|e| self.fail(e))?;
        let mut latest: std::collections::BTreeMap<String, JobVersion> = Default::default();
        for entry in table.iter().map_err(|e| self.fail(e))? {
            let (_, value) = entry.map_err(|e| self.fail(e))?;
            let version: JobVersion =
                serde_json::from_slice(value.value()).map_err(|e| self.fail(e))?;
            latest.insert(version.name.clone(), version);
        }
        Ok(latest.into_values().collect())
    }
}
