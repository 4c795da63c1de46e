//! The durable run store: one redb file holding every run record, backfill record and
//! registered job definition (as JSON). It stores the types of [`crate::record`] and
//! knows nothing above them. It survives scheduler restarts; runs that were in flight
//! when the scheduler stopped are marked `interrupted` when it opens again.
//!
//! The file carries its format version (table `meta`): a store written by an earlier
//! release opens (records gain fields with serde defaults), one written by a later
//! release is refused rather than misread. Every committed write bumps a generation that
//! [`crate::backup`] watches to keep a copy in object storage; [`RunStore::snapshot_to`]
//! writes a consistent copy of every table while the scheduler runs.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

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
/// The runs a starting scheduler must look at — in flight, with a commit pending, or
/// with a Step Functions result not yet sent — so start-up reads them, not the history.
const OPEN: TableDefinition<&str, u8> = TableDefinition::new("open_runs");
/// Each run's status (run id → status), to keep [`COUNTS`] as runs change.
const STATUS: TableDefinition<&str, &str> = TableDefinition::new("run_status");
/// Runs by status, kept with every write: `/metrics` reads this, not the history.
const COUNTS: TableDefinition<&str, u64> = TableDefinition::new("status_counts");
/// The store's format: its version, and what opened it last.
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
/// The format this release writes. Raise it when a change to a table or a record could
/// not be read by the release before, and teach [`RunStore::open`] the migration.
pub const FORMAT_VERSION: u32 = 1;
/// Audit events kept; older ones are dropped as new ones arrive.
const AUDIT_KEPT: u64 = 100_000;

/// The indexes of runs in one write transaction, kept with every change of a run.
struct Indexes<'txn> {
    open: redb::Table<'txn, &'static str, u8>,
    status: redb::Table<'txn, &'static str, &'static str>,
    counts: redb::Table<'txn, &'static str, u64>,
}

impl<'txn> Indexes<'txn> {
    fn open(txn: &'txn redb::WriteTransaction) -> std::result::Result<Self, redb::TableError> {
        Ok(Self {
            open: txn.open_table(OPEN)?,
            status: txn.open_table(STATUS)?,
            counts: txn.open_table(COUNTS)?,
        })
    }

    /// Records a run's new state (inserted or replaced).
    fn add(&mut self, run: &RunRecord) -> std::result::Result<(), redb::StorageError> {
        let id = run.run_id.as_str();
        if is_open(run) {
            self.open.insert(id, 0)?;
        } else {
            self.open.remove(id)?;
        }
        let status = run.status.as_str();
        let previous = self
            .status
            .insert(id, status)?
            .map(|p| p.value().to_owned());
        if previous.as_deref() != Some(status) {
            if let Some(previous) = previous {
                self.count(&previous, -1)?;
            }
            self.count(status, 1)?;
        }
        Ok(())
    }

    /// Forgets a removed run.
    fn remove(&mut self, id: &str) -> std::result::Result<(), redb::StorageError> {
        self.open.remove(id)?;
        let previous = self.status.remove(id)?.map(|p| p.value().to_owned());
        if let Some(previous) = previous {
            self.count(&previous, -1)?;
        }
        Ok(())
    }

    fn count(&mut self, status: &str, change: i64) -> std::result::Result<(), redb::StorageError> {
        let now = self.counts.get(status)?.map_or(0, |c| c.value());
        self.counts
            .insert(status, now.saturating_add_signed(change))?;
        Ok(())
    }
}

/// Whether start-up must look at a run (see [`OPEN`]).
fn is_open(run: &RunRecord) -> bool {
    !run.status.is_final() || run.commit_pending || (run.task_token.is_some() && !run.task_reported)
}

fn job_key(name: &str, version: u32) -> String {
    format!("{name}\u{1f}{version:010}")
}

/// How long the run store keeps history (see [`RunStore::prune`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Retention {
    /// Ended runs kept at most, the newest.
    pub keep_runs: Option<usize>,
    /// Ended runs that ended before this are removed.
    pub keep_since: Option<chrono::DateTime<chrono::Utc>>,
    /// A run past the retention with a data-quality report that ended after this is
    /// compacted instead of removed: quality history outlives run history.
    pub keep_dq_since: Option<chrono::DateTime<chrono::Utc>>,
}

/// What one application of the retention did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Runs removed.
    pub removed: usize,
    /// Runs compacted to their summary and data-quality report.
    pub compacted: usize,
}

/// The run store.
#[derive(Debug)]
pub struct RunStore {
    path: PathBuf,
    /// The open database; `None` after a write failed, until it is opened again (see
    /// [`RunStore::database`]).
    db: std::sync::RwLock<Option<std::sync::Arc<Database>>>,
    interrupted: Vec<RunRecord>,
    /// Bumped by every committed write.
    generation: tokio::sync::watch::Sender<u64>,
}

impl RunStore {
    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

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
            db: std::sync::RwLock::new(Some(std::sync::Arc::new(db))),
            interrupted: Vec::new(),
            generation: tokio::sync::watch::Sender::new(0),
        };
        store.init_tables()?;
        store.check_format()?;
        store.index_runs()?;
        let mut interrupted = Vec::new();
        for mut run in store.open_runs()? {
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
        let txn = self.begin_write()?;
        {
            txn.open_table(RUNS).map_err(|e| self.fail(e))?;
            txn.open_table(JOBS).map_err(|e| self.fail(e))?;
            txn.open_table(BACKFILLS).map_err(|e| self.fail(e))?;
            txn.open_table(AUDIT).map_err(|e| self.fail(e))?;
            txn.open_table(META).map_err(|e| self.fail(e))?;
            txn.open_table(OPEN).map_err(|e| self.fail(e))?;
            txn.open_table(STATUS).map_err(|e| self.fail(e))?;
            txn.open_table(COUNTS).map_err(|e| self.fail(e))?;
        }
        self.commit(txn)
    }

    /// Builds the indexes of runs (open runs, statuses and their counts) once, for a
    /// store from before they existed.
    fn index_runs(&self) -> Result<()> {
        let txn = self.begin_write()?;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.fail(e))?;
            if meta.get("run_indexes").map_err(|e| self.fail(e))?.is_some() {
                return Ok(());
            }
            let runs = txn.open_table(RUNS).map_err(|e| self.fail(e))?;
            let mut indexes = Indexes::open(&txn).map_err(|e| self.fail(e))?;
            for entry in runs.iter().map_err(|e| self.fail(e))? {
                let (_, value) = entry.map_err(|e| self.fail(e))?;
                let run: RunRecord =
                    serde_json::from_slice(value.value()).map_err(|e| self.fail(e))?;
                indexes.add(&run).map_err(|e| self.fail(e))?;
            }
            meta.insert("run_indexes", "1").map_err(|e| self.fail(e))?;
        }
        self.commit(txn)
    }

    /// How many runs the store holds, by status (`queued`, `running`, …).
    pub fn count_by_status(&self) -> Result<std::collections::BTreeMap<String, u64>> {
        let txn = self.begin_read()?;
        let counts = txn.open_table(COUNTS).map_err(|e| self.fail(e))?;
        let mut found = std::collections::BTreeMap::new();
        for entry in counts.iter().map_err(|e| self.fail(e))? {
            let (status, count) = entry.map_err(|e| self.fail(e))?;
            found.insert(status.value().to_owned(), count.value());
        }
        Ok(found)
    }

    /// The runs of the open index, oldest first.
    pub fn open_runs(&self) -> Result<Vec<RunRecord>> {
        let txn = self.begin_read()?;
        let open = txn.open_table(OPEN).map_err(|e| self.fail(e))?;
        let runs = txn.open_table(RUNS).map_err(|e| self.fail(e))?;
        let mut found = Vec::new();
        for entry in open.iter().map_err(|e| self.fail(e))? {
            let (key, _) = entry.map_err(|e| self.fail(e))?;
            if let Some(value) = runs.get(key.value()).map_err(|e| self.fail(e))? {
                found.push(serde_json::from_slice(value.value()).map_err(|e| self.fail(e))?);
            }
        }
        Ok(found)
    }

    /// Applies the history retention: ended runs past it are removed, the oldest while
    /// more than `keep_runs` runs are stored and those that ended before `keep_since`;
    /// one with a data-quality report that ended after `keep_dq_since` is compacted
    /// instead (see [`RunRecord::compact`]) and removed when that passes. Open runs are
    /// always kept.
    pub fn prune(&self, retention: &Retention) -> Result<Pruned> {
        let Retention {
            keep_runs,
            keep_since,
            keep_dq_since,
        } = *retention;
        if keep_runs.is_none() && keep_since.is_none() {
            return Ok(Pruned::default());
        }
        // A report past its own retention (none: it goes with its run).
        let dq_expired = |run: &RunRecord| {
            run.dq.is_none()
                || keep_dq_since
                    .is_none_or(|since| run.finished_at.is_none_or(|ended| ended < since))
        };
        let txn = self.begin_write()?;
        let pruned;
        {
            let mut runs = txn.open_table(RUNS).map_err(|e| self.fail(e))?;
            let mut indexes = Indexes::open(&txn).map_err(|e| self.fail(e))?;
            let mut remaining = runs.len().map_err(|e| self.fail(e))? as usize;
            let mut doomed = Vec::new();
            let mut compacted = Vec::new();
            // Oldest first (ids sort by submission time): stop at the first run kept
            // for both reasons.
            for entry in runs.iter().map_err(|e| self.fail(e))? {
                let (key, value) = entry.map_err(|e| self.fail(e))?;
                let mut run: RunRecord =
                    serde_json::from_slice(value.value()).map_err(|e| self.fail(e))?;
                if run.compacted {
                    // Kept for its report, not counted as a run kept.
                    remaining -= 1;
                    if dq_expired(&run) {
                        doomed.push(key.value().to_owned());
                    }
                    continue;
                }
                let over_count = keep_runs.is_some_and(|keep| remaining > keep);
                let too_old = keep_since
                    .is_some_and(|since| run.finished_at.is_some_and(|ended| ended < since));
                if !over_count && !too_old {
                    // Submitted after the cut-off: it and every later run ended after it.
                    if keep_since.is_none_or(|since| run.submitted_at >= since) {
                        break;
                    }
                    continue;
                }
                if is_open(&run) {
                    continue;
                }
                remaining -= 1;
                if dq_expired(&run) {
                    doomed.push(key.value().to_owned());
                } else {
                    run.compact();
                    compacted.push(run);
                }
            }
            for key in &doomed {
                runs.remove(key.as_str()).map_err(|e| self.fail(e))?;
                indexes.remove(key).map_err(|e| self.fail(e))?;
            }
            for run in &compacted {
                let json = serde_json::to_vec(run).map_err(|e| self.fail(e))?;
                runs.insert(run.run_id.as_str(), json.as_slice())
                    .map_err(|e| self.fail(e))?;
            }
            pruned = Pruned {
                removed: doomed.len(),
                compacted: compacted.len(),
            };
        }
        if pruned != Pruned::default() {
            self.commit(txn)?;
        }
        Ok(pruned)
    }

    /// Refuses a store a later release wrote; records this release's format in one
    /// that has none yet (a new store, or one from before formats were recorded).
    fn check_format(&self) -> Result<()> {
        let txn = self.begin_write()?;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.fail(e))?;
            let found = meta
                .get("format_version")
                .map_err(|e| self.fail(e))?
                .map(|v| v.value().to_owned());
            match found {
                Some(text) => {
                    let version: u32 = text.parse().map_err(|_| {
                        self.fail(format!("its format version `{text}` is not a number"))
                    })?;
                    if version > FORMAT_VERSION {
                        return Err(self.fail(format!(
                            "it was written by a later Sluice release (store format \
                             {version}; this release reads formats up to {FORMAT_VERSION}); \
                             run that release, or restore a backup this release wrote"
                        )));
                    }
                }
                None => {
                    meta.insert("format_version", FORMAT_VERSION.to_string().as_str())
                        .map_err(|e| self.fail(e))?;
                }
            }
            meta.insert("opened_by", env!("CARGO_PKG_VERSION"))
                .map_err(|e| self.fail(e))?;
        }
        self.commit(txn)
    }

    /// The generation of the store's contents: it changes with every committed write.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Commits a write and bumps the generation.
    fn commit(&self, txn: redb::WriteTransaction) -> Result<()> {
        if let Err(err) = txn.commit() {
            self.close_after_failed_write();
            return Err(self.fail(err));
        }
        self.generation.send_modify(|generation| *generation += 1);
        Ok(())
    }

    /// The open database, opened again if a write failed since. redb refuses every
    /// transaction of a database after one of its writes failed (`PreviousIo`), so a
    /// store whose disk filled up or went read-only would stay unusable after the disk
    /// recovers; opening the file again recovers it at its last commit.
    fn database(&self) -> Result<std::sync::Arc<Database>> {
        if let Some(db) = self.db.read().ok().and_then(|db| db.clone()) {
            return Ok(db);
        }
        let mut slot = self
            .db
            .write()
            .map_err(|_| self.fail("the store's lock was poisoned"))?;
        if let Some(db) = slot.as_ref() {
            return Ok(db.clone());
        }
        // Fails while a transaction of the old database is still alive (redb holds the
        // file's lock until then); the next call tries again.
        let db = std::sync::Arc::new(Database::create(&self.path).map_err(|e| self.fail(e))?);
        tracing::info!(path = %self.path.display(), "the run store is writable again");
        *slot = Some(db.clone());
        Ok(db)
    }

    /// Drops the database after a failed write (see [`RunStore::database`]).
    fn close_after_failed_write(&self) {
        if let Ok(mut slot) = self.db.write() {
            *slot = None;
        }
    }

    fn begin_write(&self) -> Result<redb::WriteTransaction> {
        let begun = self.database()?.begin_write();
        begun.map_err(|err| {
            if matches!(
                err,
                redb::TransactionError::Storage(redb::StorageError::PreviousIo)
            ) {
                self.close_after_failed_write();
            }
            self.fail(err)
        })
    }

    fn begin_read(&self) -> Result<redb::ReadTransaction> {
        self.database()?.begin_read().map_err(|e| self.fail(e))
    }

    /// A consistent copy of the store file's contents (see [`RunStore::snapshot_to`]),
    /// made beside the store and read back.
    pub fn snapshot(&self) -> Result<Vec<u8>> {
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(format!(
            ".snapshot-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        let target = self.path.with_file_name(name);
        let written = self.snapshot_to(&target);
        let bytes = written
            .and_then(|()| std::fs::read(&target).map_err(|e| SchedulerError::store(&target, e)));
        let _ = std::fs::remove_file(&target);
        bytes
    }

    /// Writes a consistent copy of every table (one read transaction) into a new store
    /// file at `target`, which must not exist.
    pub fn snapshot_to(&self, target: &Path) -> Result<()> {
        let fail = |err: &dyn std::fmt::Display| SchedulerError::store(target, err);
        let copy = Database::create(target).map_err(|e| fail(&e))?;
        let read = self.begin_read()?;
        let write = copy.begin_write().map_err(|e| fail(&e))?;
        // Every table, entry by entry (their key and value types differ).
        macro_rules! copy {
            ($($table:expr),+) => {$({
                let from = read.open_table($table).map_err(|e| self.fail(e))?;
                let mut to = write.open_table($table).map_err(|e| fail(&e))?;
                for entry in from.iter().map_err(|e| self.fail(e))? {
                    let (key, value) = entry.map_err(|e| self.fail(e))?;
                    to.insert(key.value(), value.value()).map_err(|e| fail(&e))?;
                }
            })+};
        }
        copy!(RUNS, BACKFILLS, JOBS, AUDIT, META, OPEN, STATUS, COUNTS);
        write.commit().map_err(|e| fail(&e))
    }

    fn fail(&self, err: impl std::fmt::Display) -> SchedulerError {
        SchedulerError::store(&self.path, err)
    }

    /// Writes a run record (insert or replace).
    pub fn put(&self, run: &RunRecord) -> Result<()> {
        self.put_all(std::slice::from_ref(run))
    }

    /// Writes run records in one transaction (a bulk load: an import, or the history
    /// the run store's benchmark starts from).
    pub fn put_all(&self, runs: &[RunRecord]) -> Result<()> {
        let txn = self.begin_write()?;
        {
            let mut table = txn.open_table(RUNS).map_err(|e| self.fail(e))?;
            let mut indexes = Indexes::open(&txn).map_err(|e| self.fail(e))?;
            for run in runs {
                let json = serde_json::to_vec(run).map_err(|e| self.fail(e))?;
                table
                    .insert(run.run_id.as_str(), json.as_slice())
                    .map_err(|e| self.fail(e))?;
                indexes.add(run).map_err(|e| self.fail(e))?;
            }
        }
        self.commit(txn)
    }

    /// Appends an audit event, dropping the oldest past [`AUDIT_KEPT`].
    pub fn append_audit(&self, event: &AuditEvent) -> Result<()> {
        let json = serde_json::to_vec(event).map_err(|e| self.fail(e))?;
        let txn = self.begin_write()?;
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
        self.commit(txn)
    }

    /// Audit events, newest first; at most `limit`.
    pub fn audit(&self, limit: usize) -> Result<Vec<AuditEvent>> {
        let txn = self.begin_read()?;
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
        let txn = self.begin_read()?;
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
        self.list_before(limit, None)
    }

    /// Like [`RunStore::list`], for the runs submitted before `before` (a page of
    /// history: pass the last run id of the previous page).
    pub fn list_before(&self, limit: usize, before: Option<&RunId>) -> Result<Vec<RunRecord>> {
        let txn = self.begin_read()?;
        let table = txn.open_table(RUNS).map_err(|e| self.fail(e))?;
        let mut runs = Vec::new();
        let entries = match before {
            Some(before) => table.range(..before.as_str()),
            None => table.iter(),
        };
        for entry in entries.map_err(|e| self.fail(e))?.rev() {
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
        let txn = self.begin_read()?;
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
        let txn = self.begin_write()?;
        {
            let mut table = txn.open_table(JOBS).map_err(|e| self.fail(e))?;
            table
                .insert(job_key(name, version.version).as_str(), json.as_slice())
                .map_err(|e| self.fail(e))?;
        }
        self.commit(txn)?;
        Ok(version)
    }

    /// Writes a backfill record (insert or replace).
    pub fn put_backfill(&self, record: &BackfillRecord) -> Result<()> {
        let json = serde_json::to_vec(record).map_err(|e| self.fail(e))?;
        let txn = self.begin_write()?;
        {
            let mut table = txn.open_table(BACKFILLS).map_err(|e| self.fail(e))?;
            table
                .insert(record.backfill_id.as_str(), json.as_slice())
                .map_err(|e| self.fail(e))?;
        }
        self.commit(txn)
    }

    /// Every backfill record, oldest first.
    pub fn list_backfills(&self) -> Result<Vec<BackfillRecord>> {
        let txn = self.begin_read()?;
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
        let txn = self.begin_read()?;
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::record::{BackfillStatus, Every, PartitionRecord, PartitionStatus};

    /// The fixture of this release's store format, kept in the repository.
    fn fixture() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("tests/fixtures/runs-format-{FORMAT_VERSION}.redb"))
    }

    /// Writes one record of every kind, as a scheduler of this release would.
    fn fill(store: &RunStore) {
        let mut run = RunRecord::new(
            RunId::from("r-20260101T000000000-fixture1".to_owned()),
            "claims_cleanse".into(),
            "claims_cleanse.yaml".into(),
            [("month".to_owned(), "2024-03".to_owned())].into(),
            vec!["a warning".into()],
        );
        run.rows_read = 1_234;
        run.output_locations
            .insert("claims".into(), "s3://lake/staging/claims".into());
        run.finish(RunStatus::Succeeded, None);
        store.put(&run).unwrap();
        store
            .register_job("claims_cleanse", "the fixture", "apiVersion: sluice/v1\n")
            .unwrap();
        store
            .append_audit(&AuditEvent {
                at: chrono::Utc::now(),
                principal: "etl-bot".into(),
                action: "/sluice.v1.JobService/SubmitRun".into(),
                outcome: "allowed".into(),
                reason: String::new(),
            })
            .unwrap();
        let date = |s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        store
            .put_backfill(&BackfillRecord {
                backfill_id: "b-fixture".into(),
                job: "claims_cleanse".into(),
                origin: "claims_cleanse.yaml".into(),
                key: "claims_cleanse:sha256:0".into(),
                date_param: "month".into(),
                from: date("2024-01-01"),
                to: date("2024-01-31"),
                every: Every::Month,
                max_concurrent: 1,
                params: BTreeMap::new(),
                status: BackfillStatus::Succeeded,
                submitted_at: chrono::Utc::now(),
                finished_at: Some(chrono::Utc::now()),
                partitions: vec![PartitionRecord {
                    value: "2024-01".into(),
                    status: PartitionStatus::Succeeded,
                    run_id: Some(RunId::from("r-20260101T000000000-fixture1".to_owned())),
                    error: None,
                }],
            })
            .unwrap();
    }

    /// A store file written by this release's format opens after every change, with
    /// every record readable. `SLUICE_UPDATE_FIXTURES=1` writes the fixture when a new
    /// format has none yet; an existing fixture is never rewritten.
    #[test]
    fn a_store_written_by_an_earlier_build_opens_with_every_record() {
        let fixture = fixture();
        if !fixture.exists() && std::env::var_os("SLUICE_UPDATE_FIXTURES").is_some() {
            std::fs::create_dir_all(fixture.parent().unwrap()).unwrap();
            let store = RunStore::open(&fixture).unwrap();
            fill(&store);
        }
        assert!(
            fixture.exists(),
            "no fixture for store format {FORMAT_VERSION}: run with SLUICE_UPDATE_FIXTURES=1"
        );
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("runs.redb");
        std::fs::copy(&fixture, &copy).unwrap();
        let store = RunStore::open(&copy).unwrap();
        let run = store
            .get(&RunId::from("r-20260101T000000000-fixture1".to_owned()))
            .unwrap()
            .expect("the fixture's run");
        assert_eq!(run.status, RunStatus::Succeeded);
        assert_eq!(run.rows_read, 1_234);
        assert_eq!(run.params["month"], "2024-03");
        assert_eq!(
            store
                .registered_job("claims_cleanse")
                .unwrap()
                .unwrap()
                .version,
            1
        );
        assert_eq!(store.audit(10).unwrap()[0].principal, "etl-bot");
        assert_eq!(store.list_backfills().unwrap()[0].partitions.len(), 1);
        assert_eq!(store.count_by_status().unwrap()["succeeded"], 1);
    }

    /// A store from before the run indexes existed (no `meta`, no index tables, as the
    /// releases before format versions wrote them) gets them built when it opens.
    #[test]
    fn a_store_from_before_the_indexes_gets_them_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.redb");
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut runs = txn.open_table(RUNS).unwrap();
                for (id, status) in [("r-1", RunStatus::Succeeded), ("r-2", RunStatus::Running)] {
                    let json = serde_json::to_vec(&run(id, status, 1)).unwrap();
                    runs.insert(id, json.as_slice()).unwrap();
                }
            }
            txn.commit().unwrap();
        }
        let store = RunStore::open(&path).unwrap();
        assert_eq!(ids(store.interrupted_on_open()), ["r-2"]);
        let counts = store.count_by_status().unwrap();
        assert_eq!((counts["succeeded"], counts["interrupted"]), (1, 1));
    }

    /// A store a later release wrote is refused, naming both formats, and left as it was.
    #[test]
    fn a_store_from_a_later_release_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.redb");
        drop(RunStore::open(&path).unwrap());
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert("format_version", "99")
                .unwrap();
            txn.commit().unwrap();
        }
        let err = RunStore::open(&path).unwrap_err().to_string();
        assert!(
            err.contains("written by a later Sluice release (store format 99; this release reads formats up to 1)"),
            "{err}"
        );
    }

    /// A run submitted `days` ago, ended a day later unless it is in flight.
    fn run(id: &str, status: RunStatus, days: i64) -> RunRecord {
        let mut run = RunRecord::new(
            RunId::from(id.to_owned()),
            "job".into(),
            "job.yaml".into(),
            BTreeMap::new(),
            Vec::new(),
        );
        run.status = status;
        run.submitted_at = chrono::Utc::now() - chrono::Duration::days(days);
        if status.is_final() {
            run.finished_at = Some(chrono::Utc::now() - chrono::Duration::days(days - 1));
        }
        run
    }

    /// Runs past the retention with a data-quality report are compacted while the
    /// report's longer retention lasts, not counted as kept runs, and removed after it.
    #[test]
    fn quality_history_outlives_run_history() {
        let dir = tempfile::tempdir().unwrap();
        let store = RunStore::open(&dir.path().join("runs.redb")).unwrap();
        let report = || sluice_jobs::quality::DqReport {
            outcome: sluice_jobs::quality::DqOutcome::Passed,
            rows_checked: 10,
            rows_valid: 7,
            rows_quarantined: 3,
            rules: Vec::new(),
            failures: Vec::new(),
            warnings: Vec::new(),
            sources: Vec::new(),
        };
        // r-1 (40 days) and r-2 (20 days) have reports; r-3 (10 days) has none.
        for (id, days, dq) in [("r-1", 41, true), ("r-2", 21, true), ("r-3", 11, false)] {
            let mut run = run(id, RunStatus::Succeeded, days);
            run.dq = dq.then(report);
            run.outputs.push(crate::record::OutputRecord {
                name: "claims".into(),
                files: vec!["part-0.parquet".into()],
                partitions: vec!["month=1".into()],
                ..Default::default()
            });
            store.put(&run).unwrap();
        }
        store.put(&run("r-4", RunStatus::Succeeded, 2)).unwrap();
        let days = |n| Some(chrono::Utc::now() - chrono::Duration::days(n));
        // Runs for a week, reports for a month: r-1's report is past it, r-2's is not.
        let retention = Retention {
            keep_runs: None,
            keep_since: days(7),
            keep_dq_since: days(30),
        };
        let pruned = store.prune(&retention).unwrap();
        assert_eq!((pruned.removed, pruned.compacted), (2, 1));
        assert_eq!(ids(&store.list(0).unwrap()), ["r-4", "r-2"]);
        let kept = store.get(&RunId::from("r-2".to_owned())).unwrap().unwrap();
        assert!(kept.compacted);
        assert_eq!(kept.dq, Some(report()));
        assert!(kept.outputs[0].files.is_empty(), "{kept:?}");
        assert_eq!(kept.status, RunStatus::Succeeded);
        // Applied again, nothing changes; a compacted run does not count as a kept run.
        assert_eq!(store.prune(&retention).unwrap(), Pruned::default());
        let one = Retention {
            keep_runs: Some(1),
            ..retention
        };
        assert_eq!(store.prune(&one).unwrap(), Pruned::default());
        // Once the report's retention passes too, the summary goes.
        let shorter = Retention {
            keep_dq_since: days(10),
            ..retention
        };
        let pruned = store.prune(&shorter).unwrap();
        assert_eq!((pruned.removed, pruned.compacted), (1, 0));
        assert_eq!(ids(&store.list(0).unwrap()), ["r-4"]);
    }

    fn ids(runs: &[RunRecord]) -> Vec<String> {
        runs.iter().map(|r| r.run_id.to_string()).collect()
    }

    /// History is paged newest first; retention removes the oldest ended runs past a
    /// count or an age and never a run in flight; the open-run index follows each write.
    #[test]
    fn history_pages_and_retention_keep_open_runs() {
        let dir = tempfile::tempdir().unwrap();
        let store = RunStore::open(&dir.path().join("runs.redb")).unwrap();
        // Ids sort as the runs were submitted; the first is still in flight.
        store.put(&run("r-1", RunStatus::Running, 50)).unwrap();
        for (id, days) in [("r-2", 41), ("r-3", 31), ("r-4", 3), ("r-5", 2)] {
            store.put(&run(id, RunStatus::Succeeded, days)).unwrap();
        }
        assert_eq!(ids(&store.list_before(2, None).unwrap()), ["r-5", "r-4"]);
        let next = RunId::from("r-4".to_owned());
        assert_eq!(
            ids(&store.list_before(2, Some(&next)).unwrap()),
            ["r-3", "r-2"]
        );
        assert_eq!(ids(&store.open_runs().unwrap()), ["r-1"]);

        // Ended more than a week ago: r-2 and r-3 (r-1 is in flight).
        let week = chrono::Utc::now() - chrono::Duration::days(7);
        let retention = |keep_runs, keep_since| Retention {
            keep_runs,
            keep_since,
            keep_dq_since: None,
        };
        let pruned = store.prune(&retention(None, Some(week))).unwrap();
        assert_eq!((pruned.removed, pruned.compacted), (2, 0));
        assert_eq!(ids(&store.list(0).unwrap()), ["r-5", "r-4", "r-1"]);
        // Two runs at most: the oldest ended one goes, the one in flight stays.
        let pruned = store.prune(&retention(Some(2), None)).unwrap();
        assert_eq!((pruned.removed, pruned.compacted), (1, 0));
        assert_eq!(ids(&store.list(0).unwrap()), ["r-5", "r-1"]);

        store.put(&run("r-1", RunStatus::Succeeded, 50)).unwrap();
        assert!(store.open_runs().unwrap().is_empty());
        // The counts by status follow every write and removal, as a scan would count.
        let mut scanned = BTreeMap::new();
        for run in store.list(0).unwrap() {
            *scanned
                .entry(run.status.as_str().to_owned())
                .or_insert(0u64) += 1;
        }
        let counts: BTreeMap<String, u64> = store
            .count_by_status()
            .unwrap()
            .into_iter()
            .filter(|(_, count)| *count > 0)
            .collect();
        assert_eq!(counts, scanned);
        assert_eq!(counts["succeeded"], 2);
    }

    /// A snapshot taken while the store is open holds every record.
    #[test]
    fn a_snapshot_holds_every_table() {
        let dir = tempfile::tempdir().unwrap();
        let store = RunStore::open(&dir.path().join("runs.redb")).unwrap();
        fill(&store);
        store.put(&run("r-9", RunStatus::Running, 0)).unwrap();
        let copy = dir.path().join("copy.redb");
        store.snapshot_to(&copy).unwrap();
        let restored = RunStore::open(&copy).unwrap();
        assert_eq!(
            ids(&restored.list(0).unwrap()),
            ids(&store.list(0).unwrap())
        );
        assert_eq!(restored.list_jobs().unwrap().len(), 1);
        assert_eq!(restored.audit(10).unwrap().len(), 1);
        assert_eq!(restored.list_backfills().unwrap().len(), 1);
        // A restored store still knows which runs were in flight (and marks them).
        assert_eq!(ids(restored.interrupted_on_open()), ["r-9"]);
    }
}
