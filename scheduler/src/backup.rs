//! The run store's copy in object storage (`--state-backup s3://bucket/prefix`), for
//! schedulers whose disk does not outlive them (an ECS task without EFS, a pod without a
//! volume, an EMR primary node that is replaced).
//!
//! ```text
//! start:   no local runs.redb  ─► download <prefix>/runs.redb (if there) ─► open the store
//! running: a committed write ─► (1 s to gather more) ─► snapshot ─► PUT <prefix>/runs.redb
//! commit:  before a run's commit starts, the copy is brought up to date (awaited)
//! ```
//!
//! A snapshot is a consistent copy of every table, taken in one read transaction while
//! the scheduler runs; the PUT replaces the object whole, so a reader never sees half a
//! store. A scheduler that dies loses at most the writes of its last second — never a
//! run that had reached its commit, which is what start-up recovery needs to finish.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::error::{Result, SchedulerError};
use crate::store::RunStore;

/// The store file's name below the backup prefix.
const STORE_OBJECT: &str = "runs.redb";

/// How long after a write the copy waits for more writes before it uploads.
const GATHER: Duration = Duration::from_secs(1);

/// Where the run store's copy lives, and what was last uploaded.
pub struct StateBackup {
    url: String,
    store: Arc<dyn ObjectStore>,
    object: ObjectPath,
    /// The store generation the copy holds; uploads are serialized by this lock.
    uploaded: tokio::sync::Mutex<Option<u64>>,
}

impl std::fmt::Debug for StateBackup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateBackup")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl StateBackup {
    /// A backup at `url` (an object-store prefix: `s3://bucket/prefix`, or `file://` for
    /// a folder), reached through the scheduler's storage settings.
    pub fn new(url: &str, stores: &sluice_jobs::ObjectStores) -> Result<Self> {
        use datafusion::execution::object_store::ObjectStoreRegistry;
        let fail = |message: String| SchedulerError::Backup {
            url: url.to_owned(),
            message,
        };
        let parsed = url::Url::parse(url)
            .map_err(|e| fail(format!("not a URL ({e}); give s3://bucket/prefix")))?;
        let store = stores
            .get_store(&parsed)
            .map_err(|e| fail(sluice_jobs::strip_context(&e)))?;
        let prefix = ObjectPath::from_url_path(parsed.path()).map_err(|e| fail(e.to_string()))?;
        Ok(Self {
            url: url.trim_end_matches('/').to_owned(),
            store,
            object: prefix.join(STORE_OBJECT),
            uploaded: tokio::sync::Mutex::new(None),
        })
    }

    /// The object the copy is kept in.
    pub fn location(&self) -> String {
        format!("{}/{STORE_OBJECT}", self.url)
    }

    /// Before the store opens: when there is no store file at `local`, restores it from
    /// the copy (returning `true`); a store file already there is newer and is kept.
    pub async fn restore_if_missing(&self, local: &Path) -> Result<bool> {
        let fail = |message: String| SchedulerError::Backup {
            url: self.location(),
            message,
        };
        if local.exists() {
            return Ok(false);
        }
        let found = match self.store.get(&self.object).await {
            Ok(found) => found,
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(fail(format!("reading the copy: {e}"))),
        };
        let bytes = found
            .bytes()
            .await
            .map_err(|e| fail(format!("reading the copy: {e}")))?;
        if let Some(parent) = local.parent() {
            std::fs::create_dir_all(parent).map_err(|e| SchedulerError::store(local, e))?;
        }
        // Whole or absent: written beside, then renamed into place.
        let partial = sibling(local, "restoring");
        std::fs::write(&partial, &bytes).map_err(|e| SchedulerError::store(&partial, e))?;
        std::fs::rename(&partial, local).map_err(|e| SchedulerError::store(local, e))?;
        tracing::warn!(from = %self.location(), to = %local.display(), bytes = bytes.len(), "restored the run store from its copy");
        Ok(true)
    }

    /// Uploads a snapshot of `store` unless the copy already holds its generation.
    pub async fn save(&self, store: &RunStore) -> Result<()> {
        let mut uploaded = self.uploaded.lock().await;
        let generation = *store.changes().borrow();
        if *uploaded == Some(generation) {
            return Ok(());
        }
        let fail = |message: String| SchedulerError::Backup {
            url: self.location(),
            message,
        };
        let bytes = store.snapshot()?;
        let size = bytes.len();
        self.store
            .put(&self.object, bytes.into())
            .await
            .map_err(|e| fail(format!("writing the copy: {e}")))?;
        *uploaded = Some(generation);
        tracing::debug!(to = %self.location(), bytes = size, generation, "run store copied");
        Ok(())
    }

    /// Keeps the copy of `store` current until the task is aborted: after each write
    /// (gathering a second's worth), a snapshot is uploaded; a failed upload is retried.
    pub async fn keep(&self, store: &RunStore) {
        let mut changes = store.changes();
        loop {
            if changes.changed().await.is_err() {
                return;
            }
            tokio::time::sleep(GATHER).await;
            changes.mark_unchanged();
            let mut wait = Duration::from_secs(1);
            while let Err(err) = self.save(store).await {
                tracing::error!(%err, "could not copy the run store; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(60));
            }
        }
    }
}

/// `sluice store restore`: puts a store file (a `sluice store backup`, or the S3 copy)
/// in place as the run store at `store`, with no scheduler running on it. The file is
/// checked to open as a store first (on a copy); the store it replaces is kept beside
/// it as `runs.redb.before-restore-<time>`, whose path is returned.
pub fn restore_file(file: &Path, store: &Path) -> Result<Option<PathBuf>> {
    let checked = sibling(store, "restoring");
    if let Some(parent) = store.parent() {
        std::fs::create_dir_all(parent).map_err(|e| SchedulerError::store(store, e))?;
    }
    std::fs::copy(file, &checked).map_err(|e| SchedulerError::store(file, e))?;
    // Opening checks the format (and marks what was in flight at the backup).
    let opened = RunStore::open(&checked).map(drop);
    if let Err(err) = opened {
        let _ = std::fs::remove_file(&checked);
        return Err(SchedulerError::store(
            file,
            format!("not a run store this release reads: {err}"),
        ));
    }
    let mut kept = None;
    if store.exists() {
        // A scheduler holding the store has it locked: refuse rather than pull it away.
        match redb::Database::open(store) {
            Ok(db) => drop(db),
            Err(err) => {
                let _ = std::fs::remove_file(&checked);
                return Err(SchedulerError::store(
                    store,
                    format!("cannot be replaced ({err}); stop the scheduler first"),
                ));
            }
        }
        let aside = sibling(
            store,
            &format!(
                "before-restore-{}",
                chrono::Utc::now().format("%Y%m%dT%H%M%S")
            ),
        );
        std::fs::rename(store, &aside).map_err(|e| SchedulerError::store(store, e))?;
        kept = Some(aside);
    }
    std::fs::rename(&checked, store).map_err(|e| SchedulerError::store(store, e))?;
    Ok(kept)
}

/// `runs.redb` → `runs.redb.<suffix>` in the same folder.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{suffix}"));
    path.with_file_name(name)
}
