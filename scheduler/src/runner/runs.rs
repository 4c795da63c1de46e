//! The run records and their watchers: the one owner of run state. Every change goes
//! through [`Runs::update`], which writes the store and wakes the run's watchers.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

use crate::error::{Result, SchedulerError};
use crate::record::{JobVersion, RunId, RunRecord};
use crate::store::RunStore;

/// The run records and their watchers. The only place run state changes.
#[derive(Debug)]
pub struct Runs {
    pub(crate) store: RunStore,
    watchers: Mutex<HashMap<RunId, watch::Sender<RunRecord>>>,
    /// The store's copy in object storage, when the scheduler keeps one.
    backup: Option<std::sync::Arc<crate::backup::StateBackup>>,
    /// Why the last write of a run failed, until a write succeeds: the scheduler is not
    /// ready meanwhile (`/readyz`).
    write_error: Mutex<Option<String>>,
}

impl Runs {
    /// Wraps an opened store.
    pub fn new(store: RunStore) -> Self {
        Self {
            store,
            watchers: Mutex::new(HashMap::new()),
            backup: None,
            write_error: Mutex::new(None),
        }
    }

    /// Keeps the store's copy at `backup` current.
    pub fn with_backup(
        mut self,
        backup: Option<std::sync::Arc<crate::backup::StateBackup>>,
    ) -> Self {
        self.backup = backup;
        self
    }

    /// Keeps the store's copy current until the task is aborted (see
    /// [`crate::backup::StateBackup::keep`]); returns at once without one.
    pub async fn keep_backup(self: std::sync::Arc<Self>) {
        if let Some(backup) = &self.backup {
            backup.keep(&self.store).await;
        }
    }

    /// Brings the store's copy up to date (before a commit: a scheduler that dies during
    /// it and comes back on an empty disk must find the run to finish its commit). A
    /// failure is logged; the commit goes on.
    pub async fn flush_backup(&self) {
        if let Some(backup) = &self.backup
            && let Err(err) = backup.save(&self.store).await
        {
            tracing::error!(%err, "the run store's copy is behind: a scheduler restored from it would not know this run");
        }
    }

    /// Keeps an audit event in the store (a failure is logged: the call goes on).
    pub fn record_audit(&self, event: crate::auth::AuditEvent) {
        if let Err(err) = self.store.append_audit(&event) {
            tracing::error!(%err, action = %event.action, "an audit event could not be stored");
        }
    }

    /// The audit trail, newest first.
    pub fn audit(&self, limit: usize) -> Result<Vec<crate::auth::AuditEvent>> {
        self.store.audit(limit)
    }

    /// Why runs cannot be recorded now, if they cannot.
    pub fn write_error(&self) -> Option<String> {
        self.write_error.lock().ok().and_then(|error| error.clone())
    }

    /// Writes a run, remembering whether the store took it.
    fn put(&self, run: &RunRecord) -> Result<()> {
        let written = self.store.put(run);
        if let Ok(mut error) = self.write_error.lock() {
            *error = written.as_ref().err().map(ToString::to_string);
        }
        written
    }

    pub(super) fn insert(&self, run: RunRecord) -> Result<()> {
        self.put(&run)?;
        let (sender, _) = watch::channel(run.clone());
        if let Ok(mut watchers) = self.watchers.lock() {
            watchers.insert(run.run_id.clone(), sender);
        }
        Ok(())
    }

    /// Changes a run, writes it to the store and tells its watchers.
    pub fn update(&self, run_id: &RunId, change: impl FnOnce(&mut RunRecord)) -> Result<RunRecord> {
        let mut run = self
            .store
            .get(run_id)?
            .ok_or_else(|| SchedulerError::RunNotFound(run_id.clone()))?;
        change(&mut run);
        self.put(&run)?;
        if let Ok(mut watchers) = self.watchers.lock() {
            if let Some(sender) = watchers.get(run_id) {
                sender.send_replace(run.clone());
            }
            if run.status.is_final() {
                watchers.remove(run_id);
            }
        }
        Ok(run)
    }

    /// One run.
    pub fn get(&self, run_id: &RunId) -> Result<RunRecord> {
        self.store
            .get(run_id)?
            .ok_or_else(|| SchedulerError::RunNotFound(run_id.clone()))
    }

    /// Runs, newest first.
    pub fn list(&self, limit: usize) -> Result<Vec<RunRecord>> {
        self.store.list(limit)
    }

    /// A page of runs submitted before `before`, newest first.
    pub fn list_before(&self, limit: usize, before: Option<&RunId>) -> Result<Vec<RunRecord>> {
        self.store.list_before(limit, before)
    }

    /// A receiver of the run's changes, or `None` once it is final.
    pub fn watch(&self, run_id: &RunId) -> Option<watch::Receiver<RunRecord>> {
        self.watchers
            .lock()
            .ok()
            .and_then(|watchers| watchers.get(run_id).map(watch::Sender::subscribe))
    }

    pub(super) fn registered_job(&self, name: &str) -> Result<Option<JobVersion>> {
        self.store.registered_job(name)
    }

    /// The latest version of every registered job.
    pub fn list_jobs(&self) -> Result<Vec<JobVersion>> {
        self.store.list_jobs()
    }

    /// Ended runs with a task token whose result has not reached Step Functions.
    pub(super) fn unreported(&self) -> Result<Vec<RunRecord>> {
        Ok(self
            .store
            .open_runs()?
            .into_iter()
            .filter(|run| run.status.is_final() && run.task_token.is_some() && !run.task_reported)
            .collect())
    }
}
