//! One writer per output across processes: a lock beside the output's data, taken when a
//! run is submitted and held until it ends, so that a second scheduler, an embedded
//! `sluice run` or a retry through another path to the same place (`s3a://` for
//! `s3://`, `/a/./b` for `/a/b`, a symlink) gets `OutputBusy` naming the holder instead
//! of interleaving its commit with the first.
//!
//! ```text
//!  object stores (S3):  <output>/_sluice_lock  created with a conditional put
//!                       (If-None-Match: *), holding {run, owner, lease}; the owner renews
//!                       it every lease/3 with If-Match on its version. An expired lease
//!                       (or one left by this scheduler's previous process) is taken over
//!                       with If-Match on the version read, so two takers cannot both win.
//!                       Fencing: before every commit step the owner checks that the lock
//!                       is still the version it wrote; a paused owner whose lease was
//!                       taken over stops before it moves anything.
//!  local files:         the same file, locked with flock(2): the kernel releases it when
//!                       the owner dies, so no lease is needed and a paused owner still
//!                       holds it (nobody can take it over).
//! ```
//!
//! The lock's name starts with `_`, so Spark, Sluice and the commit's overwrite never
//! treat it as data.

use std::io::{Read, Seek, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, UpdateVersion};
use serde::{Deserialize, Serialize};

/// The lock's name in an output's folder.
pub const LOCK_FILE: &str = "_sluice_lock";

/// How long a lock on an object store stays valid without a renewal.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);

/// Why an output's lock could not be taken or is no longer held.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another run holds the lock.
    #[error("being written by run {run_id} ({holder})")]
    Busy {
        /// The run holding it.
        run_id: String,
        /// Who holds it and until when.
        holder: String,
    },
    /// The lock was taken over or removed after this run took it: its commit is refused.
    #[error(
        "the output's lock at {path} is no longer this run's ({why}); nothing more is \
         committed by it"
    )]
    Lost {
        /// The lock.
        path: String,
        /// What was found instead.
        why: String,
    },
    /// The store cannot create an object only if it is absent.
    #[error(
        "the store of {path} does not support conditional writes, which the output's lock \
         needs ({source})"
    )]
    Unsupported {
        /// The lock.
        path: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// The store failed.
    #[error("the output's lock at {path}: {source}")]
    Store {
        /// The lock.
        path: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// The local file system failed.
    #[error("the output's lock at {path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Who holds a lock: a scheduler process and its state directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockOwner {
    /// The machine.
    pub host: String,
    /// The scheduler's process.
    pub pid: u32,
    /// Its state directory (one scheduler process opens a state directory at a time).
    pub state_dir: String,
}

impl LockOwner {
    /// This process, with the scheduler's state directory.
    pub fn current(state_dir: &std::path::Path) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_owned())
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "unknown-host".into());
        Self {
            host,
            pid: std::process::id(),
            state_dir: state_dir.display().to_string(),
        }
    }

    /// The same scheduler (machine and state directory) in another process: a previous
    /// run of it, which cannot still be alive while this one holds the state directory.
    fn is_previous_of(&self, other: &LockOwner) -> bool {
        self.host == other.host && self.state_dir == other.state_dir && self.pid != other.pid
    }
}

/// What the lock holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LockRecord {
    run_id: String,
    owner: LockOwner,
    /// Milliseconds since the Unix epoch of the last renewal.
    renewed_at_ms: i64,
    /// The lease, in milliseconds (0: a local lock, held while its process lives).
    lease_ms: u64,
}

impl LockRecord {
    fn expired(&self, now_ms: i64) -> bool {
        self.lease_ms > 0 && now_ms > self.renewed_at_ms + self.lease_ms as i64
    }

    fn describe(&self) -> String {
        let mut text = format!(
            "scheduler pid {} on {}, state {}",
            self.owner.pid, self.owner.host, self.owner.state_dir
        );
        if self.lease_ms > 0 {
            let until =
                chrono::DateTime::from_timestamp_millis(self.renewed_at_ms + self.lease_ms as i64)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_default();
            text.push_str(&format!(", lease until {until}"));
        }
        text
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A held lock on one output; released by [`OutputLock::release`] (or, for a local
/// lock, when the process ends).
#[derive(Debug)]
pub struct OutputLock {
    held: Held,
}

#[derive(Debug)]
enum Held {
    File {
        file: std::fs::File,
        path: PathBuf,
        /// The output folder, when taking the lock created it.
        created: Option<PathBuf>,
    },
    Object {
        store: Arc<dyn ObjectStore>,
        path: Path,
        shown: String,
        /// The version this owner last wrote.
        version: Arc<Mutex<UpdateVersion>>,
        lost: Arc<AtomicBool>,
        /// The renewal loop, owned by the lock: stopped when it is released or dropped.
        renewer: tokio::task::JoinSet<()>,
    },
}

impl OutputLock {
    /// Takes the lock of the output at `location` (a URL; `root` its path in `store`)
    /// for `run_id`, or says who holds it.
    pub async fn acquire(
        store: Arc<dyn ObjectStore>,
        location: &str,
        root: &Path,
        run_id: &str,
        owner: &LockOwner,
        lease: Duration,
    ) -> Result<Self, LockError> {
        match url::Url::parse(location) {
            Ok(url) if url.scheme() == "file" => {
                let dir = url
                    .to_file_path()
                    .unwrap_or_else(|()| PathBuf::from(url.path()));
                let run_id = run_id.to_owned();
                let owner = owner.clone();
                tokio::task::spawn_blocking(move || acquire_file(&dir, &run_id, &owner))
                    .await
                    .map_err(|err| LockError::Io {
                        path: PathBuf::from(location),
                        source: std::io::Error::other(err),
                    })?
            }
            _ => acquire_object(store, location, root, run_id, owner, lease).await,
        }
    }

    /// Fencing: an error unless this run still holds the lock. Checked before every
    /// step of a commit.
    pub async fn check(&self) -> Result<(), LockError> {
        match &self.held {
            Held::File { file, path, .. } => {
                let same = std::fs::metadata(path).and_then(|now| {
                    let mine = file.metadata()?;
                    Ok(same_file(&now, &mine))
                });
                match same {
                    Ok(true) => Ok(()),
                    Ok(false) | Err(_) => Err(LockError::Lost {
                        path: path.display().to_string(),
                        why: "the lock file was removed or replaced".into(),
                    }),
                }
            }
            Held::Object {
                store,
                path,
                shown,
                version,
                lost,
                ..
            } => {
                if lost.load(Ordering::SeqCst) {
                    return Err(LockError::Lost {
                        path: shown.clone(),
                        why: "its lease could not be renewed".into(),
                    });
                }
                let mine = version.lock().map(|v| v.e_tag.clone()).unwrap_or_default();
                match store.head(path).await {
                    Ok(meta) if meta.e_tag.is_some() && meta.e_tag == mine => Ok(()),
                    Ok(_) => {
                        lost.store(true, Ordering::SeqCst);
                        Err(LockError::Lost {
                            path: shown.clone(),
                            why: "another run took it over".into(),
                        })
                    }
                    Err(object_store::Error::NotFound { .. }) => {
                        lost.store(true, Ordering::SeqCst);
                        Err(LockError::Lost {
                            path: shown.clone(),
                            why: "it was removed".into(),
                        })
                    }
                    Err(source) => Err(LockError::Store {
                        path: shown.clone(),
                        source,
                    }),
                }
            }
        }
    }

    /// Gives the lock up (a lock already taken over is left to its new holder).
    pub async fn release(self) {
        match self.held {
            Held::File {
                file,
                path,
                created,
            } => {
                // Removed while still locked, so that a process waiting on the old file
                // sees it replaced and opens the path again.
                let _ = std::fs::remove_file(&path);
                drop(file);
                if let Some(dir) = created {
                    let _ = std::fs::remove_dir(dir);
                }
            }
            Held::Object {
                store,
                path,
                version,
                mut renewer,
                lost,
                ..
            } => {
                renewer.abort_all();
                if lost.load(Ordering::SeqCst) {
                    return;
                }
                let mine = version.lock().map(|v| v.e_tag.clone()).unwrap_or_default();
                if let Ok(meta) = store.head(&path).await
                    && meta.e_tag == mine
                    && let Err(err) = store.delete(&path).await
                {
                    tracing::warn!(lock = %path, %err, "could not remove an output's lock; it expires with its lease");
                }
            }
        }
    }
}

#[cfg(unix)]
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_file(_: &std::fs::Metadata, _: &std::fs::Metadata) -> bool {
    true
}

/// The local lock: `flock` on `<dir>/_sluice_lock`, checked to still be the file at that
/// path once locked (a holder removes it before unlocking).
fn acquire_file(
    dir: &std::path::Path,
    run_id: &str,
    owner: &LockOwner,
) -> Result<OutputLock, LockError> {
    let path = dir.join(LOCK_FILE);
    let io = |source| LockError::Io {
        path: path.clone(),
        source,
    };
    let created = if dir.exists() {
        None
    } else {
        std::fs::create_dir_all(dir).map_err(io)?;
        Some(dir.to_owned())
    };
    loop {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let holder: Option<LockRecord> = serde_json::from_str(&text).ok();
                return Err(match holder {
                    Some(record) => LockError::Busy {
                        holder: record.describe(),
                        run_id: record.run_id,
                    },
                    None => LockError::Busy {
                        run_id: "unknown".into(),
                        holder: format!("a process holding {}", path.display()),
                    },
                });
            }
            Err(std::fs::TryLockError::Error(source)) => return Err(io(source)),
        }
        // Locked, but perhaps a file its holder removed before unlocking: try again.
        let current = std::fs::metadata(&path);
        let mine = file.metadata().map_err(io)?;
        if !current.is_ok_and(|current| same_file(&current, &mine)) {
            continue;
        }
        let record = LockRecord {
            run_id: run_id.to_owned(),
            owner: owner.clone(),
            renewed_at_ms: now_ms(),
            lease_ms: 0,
        };
        let json = serde_json::to_vec(&record).unwrap_or_default();
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        file.write_all(&json).map_err(io)?;
        return Ok(OutputLock {
            held: Held::File {
                file,
                path,
                created,
            },
        });
    }
}

/// The object store lock: created if absent, or taken over from an expired lease (or
/// this scheduler's previous process) with a conditional update of the version read.
async fn acquire_object(
    store: Arc<dyn ObjectStore>,
    location: &str,
    root: &Path,
    run_id: &str,
    owner: &LockOwner,
    lease: Duration,
) -> Result<OutputLock, LockError> {
    let path = root.clone().join(LOCK_FILE);
    let shown = format!("{}/{LOCK_FILE}", location.trim_end_matches('/'));
    let store_error = |source| LockError::Store {
        path: shown.clone(),
        source,
    };
    let record = |renewed_at_ms| LockRecord {
        run_id: run_id.to_owned(),
        owner: owner.clone(),
        renewed_at_ms,
        lease_ms: lease.as_millis() as u64,
    };
    let json = |record: &LockRecord| serde_json::to_vec(record).unwrap_or_default();
    // A few rounds: a lock removed or taken over between our reads starts over.
    for _ in 0..5 {
        let create = PutOptions::from(PutMode::Create);
        let written = match store
            .put_opts(&path, json(&record(now_ms())).into(), create)
            .await
        {
            Ok(result) => result,
            Err(object_store::Error::AlreadyExists { .. }) => {
                let found = match store.get(&path).await {
                    Ok(found) => found,
                    Err(object_store::Error::NotFound { .. }) => continue,
                    Err(source) => return Err(store_error(source)),
                };
                let seen = UpdateVersion {
                    e_tag: found.meta.e_tag.clone(),
                    version: found.meta.version.clone(),
                };
                let bytes = found.bytes().await.map_err(store_error)?;
                let holder: LockRecord = match serde_json::from_slice(&bytes) {
                    Ok(holder) => holder,
                    Err(_) => {
                        return Err(LockError::Busy {
                            run_id: "unknown".into(),
                            holder: format!(
                                "an unreadable lock object {shown}; remove it if no run is \
                                 writing the output"
                            ),
                        });
                    }
                };
                if !holder.expired(now_ms()) && !owner.is_previous_of(&holder.owner) {
                    return Err(LockError::Busy {
                        holder: holder.describe(),
                        run_id: holder.run_id,
                    });
                }
                tracing::warn!(lock = %shown, stale_run = %holder.run_id, holder = %holder.describe(), "taking over an output lock whose holder is gone");
                let update = PutOptions::from(PutMode::Update(seen));
                match store
                    .put_opts(&path, json(&record(now_ms())).into(), update)
                    .await
                {
                    Ok(result) => result,
                    // Someone else took it over (or it was removed) first.
                    Err(object_store::Error::Precondition { .. })
                    | Err(object_store::Error::NotFound { .. })
                    | Err(object_store::Error::AlreadyExists { .. }) => continue,
                    Err(source @ object_store::Error::NotImplemented { .. }) => {
                        return Err(LockError::Unsupported {
                            path: shown,
                            source,
                        });
                    }
                    Err(source) => return Err(store_error(source)),
                }
            }
            Err(source @ object_store::Error::NotImplemented { .. }) => {
                return Err(LockError::Unsupported {
                    path: shown,
                    source,
                });
            }
            Err(source) => return Err(store_error(source)),
        };
        let version = Arc::new(Mutex::new(UpdateVersion {
            e_tag: written.e_tag,
            version: written.version,
        }));
        let lost = Arc::new(AtomicBool::new(false));
        let mut renewer = tokio::task::JoinSet::new();
        renewer.spawn(renew(
            Arc::clone(&store),
            path.clone(),
            record(0),
            lease,
            Arc::clone(&version),
            Arc::clone(&lost),
        ));
        return Ok(OutputLock {
            held: Held::Object {
                store,
                path,
                shown,
                version,
                lost,
                renewer,
            },
        });
    }
    Err(LockError::Busy {
        run_id: "unknown".into(),
        holder: format!("other writers contending for {shown}"),
    })
}

/// Renews a held lease every third of it; marks the lock lost when another writer has
/// replaced it or the lease ran out without a renewal.
async fn renew(
    store: Arc<dyn ObjectStore>,
    path: Path,
    mut record: LockRecord,
    lease: Duration,
    version: Arc<Mutex<UpdateVersion>>,
    lost: Arc<AtomicBool>,
) {
    let mut renewed = std::time::Instant::now();
    loop {
        tokio::time::sleep(lease / 3).await;
        record.renewed_at_ms = now_ms();
        let current = match version.lock() {
            Ok(current) => current.clone(),
            Err(_) => return,
        };
        let body = serde_json::to_vec(&record).unwrap_or_default();
        let update = PutOptions::from(PutMode::Update(current));
        match store.put_opts(&path, body.into(), update).await {
            Ok(result) => {
                renewed = std::time::Instant::now();
                if let Ok(mut mine) = version.lock() {
                    *mine = UpdateVersion {
                        e_tag: result.e_tag,
                        version: result.version,
                    };
                }
            }
            Err(object_store::Error::Precondition { .. })
            | Err(object_store::Error::NotFound { .. }) => {
                tracing::error!(lock = %path, run_id = %record.run_id, "an output's lock was taken over; this run will not commit");
                lost.store(true, Ordering::SeqCst);
                return;
            }
            Err(err) => {
                tracing::warn!(lock = %path, %err, "could not renew an output's lock; retrying");
                if renewed.elapsed() > lease {
                    lost.store(true, Ordering::SeqCst);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;

    use super::*;

    fn owner(pid: u32) -> LockOwner {
        LockOwner {
            host: "host-a".into(),
            pid,
            state_dir: "/state".into(),
        }
    }

    async fn take(
        store: &Arc<dyn ObjectStore>,
        run_id: &str,
        who: &LockOwner,
        lease: Duration,
    ) -> Result<OutputLock, LockError> {
        OutputLock::acquire(
            Arc::clone(store),
            "s3://lake/out",
            &Path::from("out"),
            run_id,
            who,
            lease,
        )
        .await
    }

    #[tokio::test]
    async fn a_second_writer_on_an_object_store_is_told_who_holds_the_output() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let first = take(&store, "r-1", &owner(1), DEFAULT_LEASE).await.unwrap();
        let other = LockOwner {
            host: "host-b".into(),
            ..owner(2)
        };
        let err = take(&store, "r-2", &other, DEFAULT_LEASE)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, LockError::Busy { run_id, holder }
                if run_id == "r-1" && holder.contains("pid 1 on host-a")),
            "{err}"
        );
        first.check().await.unwrap();
        first.release().await;
        let second = take(&store, "r-2", &other, DEFAULT_LEASE).await.unwrap();
        second.check().await.unwrap();
    }

    #[tokio::test]
    async fn an_expired_lease_is_taken_over_and_the_paused_owner_is_fenced() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let lease = Duration::from_millis(300);
        let mut paused = take(&store, "r-old", &owner(1), lease).await.unwrap();
        // The owner stops renewing (a long GC pause, a frozen VM).
        if let Held::Object { renewer, .. } = &mut paused.held {
            renewer.abort_all();
        }
        let other = LockOwner {
            host: "host-b".into(),
            ..owner(2)
        };
        // Within the lease it is still busy.
        assert!(matches!(
            take(&store, "r-new", &other, lease).await,
            Err(LockError::Busy { .. })
        ));
        tokio::time::sleep(lease + Duration::from_millis(100)).await;
        let taker = take(&store, "r-new", &other, lease).await.unwrap();
        taker.check().await.unwrap();
        let err = paused.check().await.unwrap_err();
        assert!(matches!(err, LockError::Lost { .. }), "{err}");
        // Releasing the lost lock leaves the new holder's alone.
        paused.release().await;
        taker.check().await.unwrap();
    }

    #[tokio::test]
    async fn a_held_lease_is_renewed_past_its_length() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let lease = Duration::from_millis(300);
        let held = take(&store, "r-1", &owner(1), lease).await.unwrap();
        tokio::time::sleep(lease * 3).await;
        held.check().await.unwrap();
        let other = LockOwner {
            host: "host-b".into(),
            ..owner(2)
        };
        assert!(matches!(
            take(&store, "r-2", &other, lease).await,
            Err(LockError::Busy { .. })
        ));
    }

    #[tokio::test]
    async fn a_lock_left_by_this_schedulers_previous_process_is_taken_over_at_once() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let before_restart = take(&store, "r-1", &owner(1), DEFAULT_LEASE).await.unwrap();
        // Killed: nothing released (dropping stops the renewals), the lease still runs.
        drop(before_restart);
        let after_restart = take(&store, "r-2", &owner(2), DEFAULT_LEASE).await.unwrap();
        after_restart.check().await.unwrap();
    }

    #[tokio::test]
    async fn a_local_output_is_locked_through_every_spelling_of_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let alias = dir.path().join("alias");
        std::fs::create_dir_all(&out).unwrap();
        std::os::unix::fs::symlink(&out, &alias).unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::local::LocalFileSystem::new());
        let local = |path: &std::path::Path| format!("file://{}", path.display());
        let held = OutputLock::acquire(
            Arc::clone(&store),
            &local(&out),
            &Path::from("unused"),
            "r-1",
            &owner(1),
            DEFAULT_LEASE,
        )
        .await
        .unwrap();
        for spelling in [alias.clone(), dir.path().join("out/../out")] {
            let err = OutputLock::acquire(
                Arc::clone(&store),
                &local(&spelling),
                &Path::from("unused"),
                "r-2",
                &owner(2),
                DEFAULT_LEASE,
            )
            .await
            .unwrap_err();
            assert!(
                matches!(&err, LockError::Busy { run_id, .. } if run_id == "r-1"),
                "{}: {err}",
                spelling.display()
            );
        }
        held.check().await.unwrap();
        held.release().await;
        assert!(!out.join(LOCK_FILE).exists());
        let next = OutputLock::acquire(
            store,
            &local(&alias),
            &Path::from("unused"),
            "r-2",
            &owner(2),
            DEFAULT_LEASE,
        )
        .await
        .unwrap();
        next.release().await;
    }
}
