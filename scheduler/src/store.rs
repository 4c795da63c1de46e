//! The durable run store: one redb file holding every run record (as JSON) and the
//! registered job definitions. It survives scheduler restarts; runs that were in flight
//! when the scheduler stopped are marked `interrupted` when it opens again.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::error::{Result, SchedulerError};
use crate::run::{RunId, RunRecord, RunStatus};

const RUNS: TableDefinition<&str, &[u8]> = TableDefinition::new("runs");
const JOBS: TableDefinition<&str, &str> = TableDefinition::new("jobs");

/// The run store.
#[derive(Debug)]
pub struct RunStore {
    path: PathBuf,
    db: Database,
    interrupted: Vec<RunRecord>,
}

impl RunStore {
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
            }
        }
        store.interrupted = interrupted;
        Ok(store)
    }

    /// The runs this open found in flight and marked interrupted.
    pub fn interrupted_on_open(&self) -> &[RunRecord] {
        &self.interrupted
    }

    fn init_tables(&self) -> Result<()> {
        let txn = self.db.begin_write().map_err(|e| self.fail(e))?;
        {
            txn.open_table(RUNS).map_err(|e| self.fail(e))?;
            txn.open_table(JOBS).map_err(|e| self.fail(e))?;
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

    /// The YAML of a registered job.
    pub fn registered_job(&self, name: &str) -> Result<Option<String>> {
        let txn = self.db.begin_read().map_err(|e| self.fail(e))?;
        let table = txn.open_table(JOBS).map_err(|e| self.fail(e))?;
        Ok(table
            .get(name)
            .map_err(|e| self.fail(e))?
            .map(|value| value.value().to_owned()))
    }
}
