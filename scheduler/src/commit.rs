//! Committing a run's staged files into its outputs, and cleaning up after runs that do
//! not commit.
//!
//! A write task stages its files below `<output>/_temporary/<run_id>/`, which readers
//! never list. Once every output's Ballista job has succeeded, the scheduler moves the
//! files that successful task attempts reported into place, removes what they replace
//! (`overwrite_partitions`: the previous files of exactly the partitions the run
//! produced), writes `_SUCCESS`, and deletes the staging folder with anything failed
//! attempts left there.
//!
//! Before it moves anything the scheduler writes the commit's plan (every move and every
//! delete) into the staging folder. A scheduler stopped mid-commit leaves that plan; the
//! next scheduler start, or the next commit on the output, rolls it forward, so an
//! output never keeps both the old and the new files of a partition.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use sluice_jobs::{WriteMode, WriteSpec, WrittenFile};

use crate::error::{Result, SchedulerError};
use crate::lock::OutputLock;
use crate::record::OutputRecord;

/// A step of a commit, of its recovery or of writing a report that failed.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The output's location is not a usable URL.
    #[error(transparent)]
    Location(#[from] datafusion::error::DataFusionError),
    /// A report could not be encoded.
    #[error(transparent)]
    Encode(#[from] serde_json::Error),
    /// The store failed to read an object.
    #[error(transparent)]
    Store(#[from] object_store::Error),
    /// Writing an object failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The object.
        path: Path,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// Listing a folder failed.
    #[error("listing {path}: {source}")]
    List {
        /// The folder.
        path: Path,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// Moving a staged file into place failed.
    #[error("moving {from} to {to}: {source}")]
    Move {
        /// The staged file.
        from: Path,
        /// Its final location.
        to: Path,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// Removing a file the commit replaces failed.
    #[error("removing replaced file {path}: {source}")]
    Delete {
        /// The replaced file.
        path: Path,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// A stopped commit's plan could not be read.
    #[error("reading the commit plan of run {run_id}: {source}")]
    ReadPlan {
        /// The run whose commit stopped.
        run_id: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// A commit plan found in storage names a path outside its output: refused, not
    /// applied.
    #[error(
        "the commit plan of run {run_id} names {path}, outside its output or its staging \
         folder; refusing to apply it (remove the plan after checking what wrote it)"
    )]
    PlanOutsideOutput {
        /// The run the plan claims to be from.
        run_id: String,
        /// The first path outside.
        path: String,
    },
    /// A stopped commit's plan is not a plan.
    #[error("the commit plan of run {run_id} is unreadable: {source}")]
    BadPlan {
        /// The run whose commit stopped.
        run_id: String,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
}

/// Where a run's data-quality report is written below an output.
pub const DQ_REPORT_DIR: &str = "_dq";

/// Writes a run's data-quality report as `<output>/_dq/<run_id>.json` (hidden from
/// Spark's and Sluice's readers, like `_SUCCESS`).
pub async fn write_dq_report(
    store: Arc<dyn ObjectStore>,
    spec: &WriteSpec,
    report: &sluice_jobs::quality::DqReport,
) -> std::result::Result<(), CommitError> {
    let root = spec.root()?;
    let path = root
        .join(DQ_REPORT_DIR)
        .join(format!("{}.json", spec.run_id).as_str());
    let json = serde_json::to_vec_pretty(report)?;
    match store.put(&path, json.into()).await {
        Ok(_) => Ok(()),
        Err(source) => Err(CommitError::Write { path, source }),
    }
}

/// Finds the store of a location named in a commit plan (a run's decision may lie in
/// another output's bucket).
pub type StoreResolver<'a> = dyn Fn(&url::Url) -> Option<Arc<dyn ObjectStore>> + Send + Sync + 'a;

/// Moves one output's staged files into place (both phases, for one output alone);
/// returns what was committed. `lock` is the output's writer lock, checked (fencing)
/// before each step: a run whose lock was taken over stops before the step.
#[cfg(test)]
pub async fn commit_output(
    store: Arc<dyn ObjectStore>,
    spec: &WriteSpec,
    mode: WriteMode,
    files: &[WrittenFile],
    lock: &OutputLock,
    idempotency_key: Option<&str>,
    resolver: &StoreResolver<'_>,
) -> Result<OutputRecord> {
    match prepare_output(
        store,
        spec,
        mode,
        files,
        lock,
        idempotency_key,
        None,
        resolver,
    )
    .await?
    .0
    {
        Prepared::Planned(prepared) => apply_prepared(*prepared, lock).await,
        Prepared::Done(record) => Ok(record),
    }
}

/// One output's commit once its plan is written.
pub enum Prepared {
    /// The plan is in the output's staging folder, to be applied.
    Planned(Box<PreparedCommit>),
    /// Nothing to apply (an append whose idempotency key committed before).
    Done(OutputRecord),
}

/// A written commit plan and what it commits.
pub struct PreparedCommit {
    store: Arc<dyn ObjectStore>,
    spec: WriteSpec,
    plan: CommitPlan,
    record: OutputRecord,
}

/// The first phase of a commit: rolls forward what stopped runs left on the output,
/// decides what the run's files replace, and writes the plan (every move and delete)
/// into the run's staging folder. Nothing of this run is visible yet. With `decision`,
/// the plan is one of a run's several outputs and is applied only once that decision
/// exists. Returns, beside the prepared commit, the other runs' commits it completed.
#[allow(clippy::too_many_arguments)]
pub async fn prepare_output(
    store: Arc<dyn ObjectStore>,
    spec: &WriteSpec,
    mode: WriteMode,
    files: &[WrittenFile],
    lock: &OutputLock,
    idempotency_key: Option<&str>,
    decision: Option<&str>,
    resolver: &StoreResolver<'_>,
) -> Result<(Prepared, Vec<RolledForward>)> {
    let fail = |message: String| SchedulerError::Commit {
        output: spec.output.clone(),
        location: spec.location.clone(),
        message,
    };
    let fenced = |err: crate::lock::LockError| SchedulerError::Commit {
        output: spec.output.clone(),
        location: spec.location.clone(),
        message: err.to_string(),
    };
    lock.check().await.map_err(fenced)?;
    let root = spec.root().map_err(|e| fail(e.to_string()))?;
    let staging = spec.staging_root().map_err(|e| fail(e.to_string()))?;
    let rolled_forward = recover_interrupted_commits(Arc::clone(&store), spec, resolver)
        .await
        .map_err(|e| fail(e.to_string()))?;

    // Sizes of what was staged, read once.
    let staged: HashMap<Path, u64> = store
        .list(Some(&staging))
        .map_ok(|meta| (meta.location, meta.size))
        .try_collect()
        .await
        .map_err(|e| fail(format!("listing staged files: {e}")))?;

    let mut partitions: BTreeSet<&str> = files.iter().map(|f| f.partition.as_str()).collect();
    // An unpartitioned output is replaced as a whole, also by an empty result (a run
    // that quarantined nothing leaves no stale quarantine behind).
    if spec.partition_by.is_empty() && mode == WriteMode::OverwritePartitions {
        partitions.insert("");
    }
    // What the new files replace: the previous files of each partition produced.
    let mut replaced: Vec<Path> = Vec::new();
    if mode == WriteMode::OverwritePartitions && spec.partition_by.is_empty() {
        // The files directly in the folder, never what lies in folders below it: a
        // location given one level too high must not take other datasets with it.
        let objects = match store.list_with_delimiter(Some(&root)).await {
            Ok(listing) => listing.objects,
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(fail(format!("listing {root}: {e}"))),
        };
        replaced.extend(
            objects
                .into_iter()
                .map(|meta| meta.location)
                .filter(|location| is_visible_data(&root, location)),
        );
    } else if mode == WriteMode::OverwritePartitions {
        for partition in &partitions {
            let folder = join(&root, partition);
            let mut listing = store.list(Some(&folder));
            while let Some(meta) = listing.next().await {
                match meta {
                    Ok(meta) if is_visible_data(&root, &meta.location) => {
                        replaced.push(meta.location)
                    }
                    Ok(_) => {}
                    Err(object_store::Error::NotFound { .. }) => break,
                    Err(e) => return Err(fail(format!("listing {folder}: {e}"))),
                }
            }
        }
    }

    let mut record = OutputRecord {
        name: spec.output.clone(),
        location: spec.location.clone(),
        partitions: partitions.iter().map(|p| (*p).to_owned()).collect(),
        ..Default::default()
    };
    let mut plan = CommitPlan {
        moves: Vec::new(),
        deletes: replaced.iter().map(|path| path.to_string()).collect(),
        record: None,
        marker: None,
        decision: decision.map(str::to_owned),
    };
    // An append names its work: the same key committed before appends nothing again.
    if mode == WriteMode::Append
        && let Some(key) = idempotency_key
    {
        let marker = commit_marker(&root, key);
        match store.get(&marker).await {
            Ok(found) => {
                let bytes = found
                    .bytes()
                    .await
                    .map_err(|e| fail(format!("reading {marker}: {e}")))?;
                let earlier: CommitMarker = serde_json::from_slice(&bytes)
                    .map_err(|e| fail(format!("reading {marker}: {e}")))?;
                tracing::warn!(output = %spec.output, key, earlier_run = %earlier.run_id, "this key already appended to the output; appending nothing");
                discard_staging(Arc::clone(&store), spec).await;
                let done = Prepared::Done(OutputRecord {
                    name: spec.output.clone(),
                    location: spec.location.clone(),
                    duplicate_of: Some(earlier.run_id),
                    ..Default::default()
                });
                return Ok((done, rolled_forward));
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(fail(format!("reading {marker}: {e}"))),
        }
        let done = CommitMarker {
            key: key.to_owned(),
            run_id: spec.run_id.clone(),
            files: files.iter().map(|f| f.file.clone()).collect(),
        };
        let json = serde_json::to_string(&done).map_err(|e| fail(e.to_string()))?;
        plan.marker = Some((marker.to_string(), json));
    }
    for file in files {
        let from = join(&join(&staging, &file.partition), &file.file);
        let to = join(&join(&root, &file.partition), &file.file);
        let size = staged.get(&from).copied().ok_or_else(|| {
            fail(format!(
                "task reported {from} but it is not in the staging folder"
            ))
        })?;
        plan.moves.push((from.to_string(), to.to_string()));
        record.rows_written += file.rows;
        record.bytes_written += size;
        record.files.push(if file.partition.is_empty() {
            file.file.clone()
        } else {
            format!("{}/{}", file.partition, file.file)
        });
    }
    plan.record = Some(record.clone());
    crash_point("before_plan");
    // The point of no return: from here the commit completes, now or by recovery.
    lock.check().await.map_err(fenced)?;
    let plan_json = serde_json::to_vec(&plan).map_err(|e| fail(e.to_string()))?;
    let plan_path = staging.clone().join(COMMIT_PLAN);
    store
        .put(&plan_path, plan_json.into())
        .await
        .map_err(|e| fail(format!("writing the commit plan {plan_path}: {e}")))?;
    if decision.is_none() {
        crash_point("after_plan");
    }
    let planned = Prepared::Planned(Box::new(PreparedCommit {
        store,
        spec: spec.clone(),
        plan,
        record,
    }));
    Ok((planned, rolled_forward))
}

/// The second phase: applies a written plan (retrying it), with `_SUCCESS` removed
/// before the first move and written after the last, then removes the staging folder.
pub async fn apply_prepared(prepared: PreparedCommit, lock: &OutputLock) -> Result<OutputRecord> {
    let PreparedCommit {
        store,
        spec,
        plan,
        record,
    } = prepared;
    let spec = &spec;
    let fail = |message: String| SchedulerError::Commit {
        output: spec.output.clone(),
        location: spec.location.clone(),
        message,
    };
    let root = spec.root().map_err(|e| fail(e.to_string()))?;
    let success = root.clone().join("_SUCCESS");
    let mut attempt = 0;
    loop {
        // A lock lost now leaves the plan for whoever holds the output next to roll
        // forward; this run stops moving files.
        if let Err(err) = lock.check().await {
            return Err(SchedulerError::CommitIncomplete {
                output: spec.output.clone(),
                location: spec.location.clone(),
                message: err.to_string(),
            });
        }
        // Readers that wait for `_SUCCESS` never see a half-replaced output as
        // complete: it goes before the first move, or nothing moves.
        let unmarked = match store.delete(&success).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(CommitError::Delete {
                path: success.clone(),
                source,
            }),
        };
        let applied = match unmarked {
            Ok(()) => apply(store.as_ref(), &plan).await,
            Err(err) => Err(err),
        };
        let applied = match applied {
            Ok(()) => {
                crash_point("after_moves");
                store
                    .put(&success, Vec::<u8>::new().into())
                    .await
                    .map(|_| ())
                    .map_err(|source| CommitError::Write {
                        path: success.clone(),
                        source,
                    })
            }
            Err(err) => Err(err),
        };
        match applied {
            Ok(()) => break,
            Err(err) if attempt + 1 < APPLY_ATTEMPTS => {
                attempt += 1;
                tracing::warn!(output = %spec.output, %err, attempt, "commit step failed; retrying the plan");
                tokio::time::sleep(std::time::Duration::from_millis(200 << attempt)).await;
            }
            // The plan stays in the staging folder: the next commit on this output, or
            // the next scheduler start, rolls it forward.
            Err(err) => {
                return Err(SchedulerError::CommitIncomplete {
                    output: spec.output.clone(),
                    location: spec.location.clone(),
                    message: err.to_string(),
                });
            }
        }
    }
    crash_point("after_success");
    discard_staging(Arc::clone(&store), spec).await;
    discard_stale_staging(store, spec).await;
    Ok(record)
}

/// Fault injection for the crash tests (`tests/crash.rs`): with
/// `SLUICE_FAULT_KILL_AT=commit:<step>` in its environment the scheduler ends at that step
/// of a commit as a SIGKILL would end it — nothing after it runs, nothing is cleaned up.
/// Never set outside tests.
pub(crate) fn crash_point(step: &str) {
    if std::env::var("SLUICE_FAULT_KILL_AT")
        .is_ok_and(|at| at.strip_prefix("commit:") == Some(step))
    {
        eprintln!("SLUICE_FAULT_KILL_AT: the scheduler stops at commit:{step}");
        std::process::abort();
    }
}

/// Deletes what runs that never committed (killed, interrupted) left below the output's
/// `_temporary/`. Only one run writes an output at a time, so every other run's staging
/// folder there is stale.
async fn discard_stale_staging(store: Arc<dyn ObjectStore>, spec: &WriteSpec) {
    let Ok(root) = spec.root() else {
        return;
    };
    let temporary = root.join(sluice_jobs::STAGING_DIR);
    let Ok(listing) = store.list_with_delimiter(Some(&temporary)).await else {
        return;
    };
    for folder in listing.common_prefixes {
        let Some(run_id) = folder.filename() else {
            continue;
        };
        if run_id == spec.run_id {
            continue;
        }
        tracing::info!(output = %spec.output, stale_run = %run_id, "removing files a run left uncommitted");
        let stale = WriteSpec {
            run_id: run_id.to_owned(),
            ..spec.clone()
        };
        discard_staging(Arc::clone(&store), &stale).await;
    }
}

/// The moves and deletes of one commit, written before any is made.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct CommitPlan {
    /// Staged file → final location.
    moves: Vec<(String, String)>,
    /// Files the commit replaces.
    deletes: Vec<String>,
    /// What the run commits to the output, for its record when recovery completes it.
    #[serde(default)]
    record: Option<OutputRecord>,
    /// For an append with an idempotency key: the marker written with the files (its
    /// path and text), which later runs with the key find.
    #[serde(default)]
    marker: Option<(String, String)>,
    /// For one of a run's several outputs: the URL of the run's decision object. The
    /// plan is applied only when it exists (all the run's plans were written); without
    /// it the plan is discarded, so a run's outputs appear together or not at all.
    #[serde(default)]
    decision: Option<String>,
}

/// Where the decision of a run's commit over several outputs is written: below its first
/// output, hidden from readers, outside any staging folder (so removing an output's
/// staging never removes it).
pub fn decision_url(first_output_location: &str, run_id: &str) -> String {
    format!(
        "{}/{COMMITS_DIR}/{run_id}.decision.json",
        first_output_location.trim_end_matches('/')
    )
}

/// Writes a run's decision: from now on every output's plan is rolled forward.
pub async fn write_decision(
    resolver: &StoreResolver<'_>,
    url: &str,
    outputs: &[String],
) -> std::result::Result<(), CommitError> {
    let (store, path) = decision_location(resolver, url)?;
    let body = serde_json::to_vec(&serde_json::json!({ "outputs": outputs }))?;
    store
        .put(&path, body.into())
        .await
        .map(|_| ())
        .map_err(|source| CommitError::Write { path, source })
}

/// Removes a run's decision once every output's plan is applied.
pub async fn remove_decision(resolver: &StoreResolver<'_>, url: &str) {
    if let Ok((store, path)) = decision_location(resolver, url)
        && let Err(err) = store.delete(&path).await
        && !matches!(err, object_store::Error::NotFound { .. })
    {
        tracing::warn!(decision = %url, %err, "could not remove a run's commit decision");
    }
    // Local filesystems keep the emptied folder; remove it unless markers live there.
    if let Ok(parsed) = url::Url::parse(url)
        && parsed.scheme() == "file"
        && let Ok(file) = parsed.to_file_path()
        && let Some(folder) = file.parent()
    {
        let _ = tokio::fs::remove_dir(folder).await;
    }
}

/// Whether a plan may be applied: it names no decision, or its decision exists.
async fn decided(
    resolver: &StoreResolver<'_>,
    plan: &CommitPlan,
) -> std::result::Result<bool, CommitError> {
    let Some(url) = &plan.decision else {
        return Ok(true);
    };
    let (store, path) = decision_location(resolver, url)?;
    match store.head(&path).await {
        Ok(_) => Ok(true),
        Err(object_store::Error::NotFound { .. }) => Ok(false),
        Err(source) => Err(CommitError::Store(source)),
    }
}

fn decision_location(
    resolver: &StoreResolver<'_>,
    url: &str,
) -> std::result::Result<(Arc<dyn ObjectStore>, Path), CommitError> {
    let bad = |message: String| {
        CommitError::Location(datafusion::error::DataFusionError::Plan(format!(
            "commit decision {url}: {message}"
        )))
    };
    let parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
    let store = resolver(&parsed).ok_or_else(|| bad("no store serves it".into()))?;
    let path = Path::from_url_path(parsed.path()).map_err(|e| bad(e.to_string()))?;
    Ok((store, path))
}

/// Where an append's idempotency keys are recorded below its output (hidden from
/// readers).
pub const COMMITS_DIR: &str = "_sluice_commits";

/// What an append with an idempotency key left: which run committed it, and its files.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct CommitMarker {
    key: String,
    run_id: String,
    files: Vec<String>,
}

/// The marker of `key` below an output: named by the key's SHA-256, so any key (an
/// execution ARN, a partition value) is a safe object name.
fn commit_marker(root: &Path, key: &str) -> Path {
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(key.as_bytes()));
    root.clone()
        .join(COMMITS_DIR)
        .join(format!("{digest}.json").as_str())
}

impl CommitPlan {
    /// The first path of the plan that a commit of `root` may not touch: a move from
    /// outside the run's `staging` folder or to outside the output, or a delete outside
    /// the output or inside its staging area. A plan found in storage is only applied
    /// when this is `None`.
    fn outside(&self, root: &Path, staging: &Path) -> Option<String> {
        let temporary = root.clone().join(sluice_jobs::STAGING_DIR);
        let below = |base: &Path, path: &str| {
            let path = Path::from(path);
            path.prefix_match(base)
                .is_some_and(|mut rest| rest.next().is_some())
        };
        for (from, to) in &self.moves {
            if !below(staging, from) {
                return Some(from.clone());
            }
            if !below(root, to) || below(&temporary, to) {
                return Some(to.clone());
            }
        }
        if let Some((marker, _)) = &self.marker
            && !below(&root.clone().join(COMMITS_DIR), marker)
        {
            return Some(marker.clone());
        }
        self.deletes
            .iter()
            .find(|old| !below(root, old) || below(&temporary, old))
            .cloned()
    }
}

/// How many times a commit plan is applied before the run fails with it kept.
const APPLY_ATTEMPTS: u32 = 4;

/// The plan's name in a run's staging folder.
// Not `_`-prefixed: listings through the Spark layout would hide it from cleanup.
const COMMIT_PLAN: &str = "commit-plan.json";

/// Carries out a commit plan; safe to repeat after a partial run of it.
async fn apply(store: &dyn ObjectStore, plan: &CommitPlan) -> std::result::Result<(), CommitError> {
    for (index, (from, to)) in plan.moves.iter().enumerate() {
        if index == 1 {
            crash_point("mid_moves");
        }
        let (from, to) = (Path::from(from.as_str()), Path::from(to.as_str()));
        match store.rename(&from, &to).await {
            Ok(()) => {}
            // Moved before the interruption.
            Err(object_store::Error::NotFound { .. }) if store.head(&to).await.is_ok() => {}
            Err(source) => return Err(CommitError::Move { from, to, source }),
        }
    }
    for old in &plan.deletes {
        let old = Path::from(old.as_str());
        match store.delete(&old).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(source) => return Err(CommitError::Delete { path: old, source }),
        }
    }
    if let Some((marker, text)) = &plan.marker {
        let marker = Path::from(marker.as_str());
        if let Err(source) = store.put(&marker, text.clone().into_bytes().into()).await {
            return Err(CommitError::Write {
                path: marker,
                source,
            });
        }
    }
    Ok(())
}

/// A commit of another run that a commit on the same output completed.
#[derive(Debug, Clone)]
pub struct RolledForward {
    /// The run whose plan was applied.
    pub run_id: String,
    /// What it committed to the output, as its plan recorded it.
    pub record: Option<OutputRecord>,
}

/// Rolls forward the commits of other runs that a stopped scheduler, or a commit whose
/// store errors outlasted its retries, left half done below this output (their plans
/// are in their staging folders). Returns the commits it completed.
pub async fn recover_interrupted_commits(
    store: Arc<dyn ObjectStore>,
    spec: &WriteSpec,
    resolver: &StoreResolver<'_>,
) -> std::result::Result<Vec<RolledForward>, CommitError> {
    let mut completed = Vec::new();
    let root = spec.root()?;
    let temporary = root.clone().join(sluice_jobs::STAGING_DIR);
    let listing = match store.list_with_delimiter(Some(&temporary)).await {
        Ok(listing) => listing,
        Err(object_store::Error::NotFound { .. }) => return Ok(completed),
        Err(source) => {
            return Err(CommitError::List {
                path: temporary,
                source,
            });
        }
    };
    for folder in listing.common_prefixes {
        let Some(run_id) = folder.filename().map(str::to_owned) else {
            continue;
        };
        if run_id == spec.run_id {
            continue;
        }
        let plan = match store.get(&folder.clone().join(COMMIT_PLAN)).await {
            Ok(found) => found.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(source) => return Err(CommitError::ReadPlan { run_id, source }),
        };
        let plan: CommitPlan = match serde_json::from_slice(&plan) {
            Ok(plan) => plan,
            Err(source) => return Err(CommitError::BadPlan { run_id, source }),
        };
        if let Some(path) = plan.outside(&root, &folder) {
            return Err(CommitError::PlanOutsideOutput { run_id, path });
        }
        if !decided(resolver, &plan).await? {
            // One of several outputs' plans, written by a run that stopped before it
            // decided to commit: none of its outputs may appear.
            tracing::warn!(output = %spec.output, %run_id, "discarding the undecided commit plan of a stopped run");
            let undecided = WriteSpec {
                run_id,
                ..spec.clone()
            };
            discard_staging(Arc::clone(&store), &undecided).await;
            continue;
        }
        tracing::warn!(output = %spec.output, %run_id, "completing a commit another run left half done");
        apply(store.as_ref(), &plan).await?;
        let success = root.clone().join("_SUCCESS");
        if let Err(source) = store.put(&success, Vec::<u8>::new().into()).await {
            return Err(CommitError::Write {
                path: success,
                source,
            });
        }
        let finished = WriteSpec {
            run_id: run_id.clone(),
            ..spec.clone()
        };
        discard_staging(Arc::clone(&store), &finished).await;
        if let Some(decision) = &plan.decision {
            retire_decision(resolver, decision, &run_id).await;
        }
        completed.push(RolledForward {
            run_id,
            record: plan.record,
        });
    }
    Ok(completed)
}

/// Removes a run's decision once none of its outputs holds a plan of the run any more
/// (the last of them was just applied), so decisions do not pile up below outputs.
async fn retire_decision(resolver: &StoreResolver<'_>, url: &str, run_id: &str) {
    #[derive(serde::Deserialize)]
    struct Decision {
        outputs: Vec<String>,
    }
    let Ok((store, path)) = decision_location(resolver, url) else {
        return;
    };
    let Ok(found) = store.get(&path).await else {
        return;
    };
    let Ok(bytes) = found.bytes().await else {
        return;
    };
    let Ok(decision) = serde_json::from_slice::<Decision>(&bytes) else {
        return;
    };
    for output in &decision.outputs {
        let plan = format!(
            "{}/{}/{run_id}/{COMMIT_PLAN}",
            output.trim_end_matches('/'),
            sluice_jobs::STAGING_DIR
        );
        // Unknown (a store error) counts as pending: the decision stays.
        match decision_location(resolver, &plan) {
            Ok((store, path)) => match store.head(&path).await {
                Err(object_store::Error::NotFound { .. }) => {}
                _ => return,
            },
            Err(_) => return,
        }
    }
    remove_decision(resolver, url).await;
}

/// At scheduler start, for a run the previous process left in flight: completes its own
/// commit of this output when its plan is there (returning what it committed), or else
/// removes what it staged (returning `None`: the run did not commit here).
pub async fn recover_own_commit(
    store: Arc<dyn ObjectStore>,
    spec: &WriteSpec,
    resolver: &StoreResolver<'_>,
) -> std::result::Result<Option<OutputRecord>, CommitError> {
    let root = spec.root()?;
    let staging = spec.staging_root()?;
    let plan = match store.get(&staging.clone().join(COMMIT_PLAN)).await {
        Ok(found) => found.bytes().await?,
        Err(object_store::Error::NotFound { .. }) => {
            discard_staging(store, spec).await;
            return Ok(None);
        }
        Err(source) => {
            return Err(CommitError::ReadPlan {
                run_id: spec.run_id.clone(),
                source,
            });
        }
    };
    let plan: CommitPlan =
        serde_json::from_slice(&plan).map_err(|source| CommitError::BadPlan {
            run_id: spec.run_id.clone(),
            source,
        })?;
    if let Some(path) = plan.outside(&root, &staging) {
        return Err(CommitError::PlanOutsideOutput {
            run_id: spec.run_id.clone(),
            path,
        });
    }
    if !decided(resolver, &plan).await? {
        discard_staging(store, spec).await;
        return Ok(None);
    }
    tracing::warn!(output = %spec.output, run_id = %spec.run_id, "completing the commit the previous scheduler stopped in");
    apply(store.as_ref(), &plan).await?;
    let success = root.clone().join("_SUCCESS");
    if let Err(source) = store.put(&success, Vec::<u8>::new().into()).await {
        return Err(CommitError::Write {
            path: success,
            source,
        });
    }
    discard_staging(store, spec).await;
    Ok(Some(plan.record.unwrap_or_else(|| OutputRecord {
        name: spec.output.clone(),
        location: spec.location.clone(),
        ..Default::default()
    })))
}

/// Deletes a failed run's staging folder below an output unless it holds a commit
/// plan: a commit that got that far is rolled forward later, never half-applied.
pub async fn discard_uncommitted(store: Arc<dyn ObjectStore>, spec: &WriteSpec) {
    if let Ok(staging) = spec.staging_root()
        && store.head(&staging.clone().join(COMMIT_PLAN)).await.is_ok()
    {
        tracing::warn!(output = %spec.output, %staging, "keeping the commit plan of an incomplete commit for roll-forward");
        return;
    }
    discard_staging(store, spec).await;
}

/// Deletes a run's staging folder below an output. Failures are logged, not raised:
/// staged files are invisible to readers and the next run on the output retries.
pub async fn discard_staging(store: Arc<dyn ObjectStore>, spec: &WriteSpec) {
    let Ok(staging) = spec.staging_root() else {
        return;
    };
    let locations = store
        .list(Some(&staging))
        .map_ok(|meta| meta.location)
        .boxed();
    let mut deleted = store.delete_stream(locations);
    while let Some(result) = deleted.next().await {
        if let Err(err) = result
            && !matches!(err, object_store::Error::NotFound { .. })
        {
            tracing::warn!(output = %spec.output, %staging, %err, "could not delete staged file");
        }
    }
    // Local filesystems keep empty folders; remove them so `_temporary` disappears.
    if let Ok(url) = url::Url::parse(&spec.location)
        && url.scheme() == "file"
    {
        let base = std::path::PathBuf::from(url.path());
        let run_dir = base.join(sluice_jobs::STAGING_DIR).join(&spec.run_id);
        let _ = tokio::fs::remove_dir_all(&run_dir).await;
        let _ = tokio::fs::remove_dir(base.join(sluice_jobs::STAGING_DIR)).await;
    }
}

fn join(base: &Path, relative: &str) -> Path {
    relative
        .split('/')
        .filter(|segment| !segment.is_empty())
        .fold(base.clone(), |path, segment| path.join(segment))
}

/// A data file readers see: nothing below the root is hidden.
fn is_visible_data(root: &Path, location: &Path) -> bool {
    location
        .prefix_match(root)
        .is_some_and(|mut parts| parts.all(|part| !sluice_jobs::is_hidden_segment(part.as_ref())))
}

#[cfg(test)]
mod tests {
    use object_store::local::LocalFileSystem;

    use super::*;

    fn spec(root: &std::path::Path, run_id: &str) -> WriteSpec {
        WriteSpec {
            output: "claims".into(),
            location: format!("file://{}", root.display()),
            run_id: run_id.into(),
            partition_by: vec!["month".into()],
            target_file_size: 1 << 20,
            compression: sluice_jobs::Compression::Snappy,
        }
    }

    /// Writes a file below `root` holding its own relative path.
    fn write_file(root: &std::path::Path, relative: &str) {
        let path = root.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, relative.as_bytes()).unwrap();
    }

    fn files_below(dir: &std::path::Path) -> Vec<String> {
        let mut found = Vec::new();
        let mut pending = vec![dir.to_owned()];
        while let Some(current) = pending.pop() {
            for entry in std::fs::read_dir(&current).unwrap().flatten() {
                if entry.path().is_dir() {
                    pending.push(entry.path());
                } else {
                    found.push(
                        entry
                            .path()
                            .strip_prefix(dir)
                            .unwrap()
                            .display()
                            .to_string(),
                    );
                }
            }
        }
        found.sort();
        found
    }

    #[tokio::test]
    async fn a_commit_stopped_halfway_is_completed_by_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let write = |relative: &str| write_file(root, relative);
        write("month=01/part-old.parquet");
        write("month=02/part-keep.parquet");
        write("_temporary/r-dead/month=01/part-new-a.parquet");
        write("_temporary/r-dead/month=01/part-new-b.parquet");
        let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new());
        let base = Path::from_filesystem_path(root).unwrap();
        let plan = CommitPlan {
            moves: ["a", "b"]
                .iter()
                .map(|n| {
                    (
                        base.clone()
                            .join("_temporary")
                            .join("r-dead")
                            .join("month=01")
                            .join(format!("part-new-{n}.parquet"))
                            .to_string(),
                        base.clone()
                            .join("month=01")
                            .join(format!("part-new-{n}.parquet"))
                            .to_string(),
                    )
                })
                .collect(),
            deletes: vec![
                base.clone()
                    .join("month=01")
                    .join("part-old.parquet")
                    .to_string(),
            ],
            record: None,
            marker: None,
            decision: None,
        };
        std::fs::write(
            root.join("_temporary/r-dead").join(COMMIT_PLAN),
            serde_json::to_vec(&plan).unwrap(),
        )
        .unwrap();
        // The scheduler stopped after the first move: old and new files side by side.
        std::fs::rename(
            root.join("_temporary/r-dead/month=01/part-new-a.parquet"),
            root.join("month=01/part-new-a.parquet"),
        )
        .unwrap();

        let rolled =
            recover_interrupted_commits(Arc::clone(&store), &spec(root, "r-next"), &|_| None)
                .await
                .unwrap();
        assert_eq!(
            rolled.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>(),
            ["r-dead"]
        );
        assert_eq!(
            files_below(root),
            [
                "_SUCCESS",
                "month=01/part-new-a.parquet",
                "month=01/part-new-b.parquet",
                "month=02/part-keep.parquet"
            ]
        );
    }

    #[tokio::test]
    async fn a_planted_plan_reaching_outside_the_output_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("out");
        let landing = dir.path().join("landing/claims.csv");
        std::fs::create_dir_all(landing.parent().unwrap()).unwrap();
        std::fs::write(&landing, "claim_id\n1\n").unwrap();
        std::fs::create_dir_all(root.join("_temporary/r-planted")).unwrap();
        let plan = CommitPlan {
            moves: Vec::new(),
            deletes: vec![Path::from_filesystem_path(&landing).unwrap().to_string()],
            record: None,
            marker: None,
            decision: None,
        };
        std::fs::write(
            root.join("_temporary/r-planted").join(COMMIT_PLAN),
            serde_json::to_vec(&plan).unwrap(),
        )
        .unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new());
        let err = recover_interrupted_commits(store, &spec(&root, "r-next"), &|_| None)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, CommitError::PlanOutsideOutput { run_id, .. } if run_id == "r-planted"),
            "{err}"
        );
        assert!(err.to_string().contains("claims.csv"), "{err}");
        assert_eq!(std::fs::read_to_string(&landing).unwrap(), "claim_id\n1\n");
    }

    #[tokio::test]
    async fn a_run_whose_lock_was_replaced_commits_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write_file(root, "part-old.parquet");
        write_file(root, "_temporary/r-new/part-new.parquet");
        let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new());
        let spec = WriteSpec {
            partition_by: Vec::new(),
            ..spec(root, "r-new")
        };
        let lock = OutputLock::acquire(
            Arc::clone(&store),
            &spec.location,
            &spec.root().unwrap(),
            "r-new",
            &crate::lock::LockOwner::current(root),
            crate::lock::DEFAULT_LEASE,
        )
        .await
        .unwrap();
        // Someone removed the lock and another writer took the output.
        std::fs::remove_file(root.join(crate::lock::LOCK_FILE)).unwrap();
        std::fs::write(root.join(crate::lock::LOCK_FILE), "{}").unwrap();
        let before = files_below(root);
        let err = commit_output(
            store,
            &spec,
            WriteMode::OverwritePartitions,
            &[WrittenFile {
                output: "claims".into(),
                partition: String::new(),
                file: "part-new.parquet".into(),
                rows: 1,
                bytes: 16,
            }],
            &lock,
            None,
            &|_| None,
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("no longer this run's"), "{err}");
        assert_eq!(files_below(root), before);
    }

    #[tokio::test]
    async fn an_unpartitioned_overwrite_replaces_only_its_own_folders_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let write = |relative: &str| write_file(root, relative);
        write("part-old.parquet");
        write("other_dataset/part-0.parquet");
        write("_temporary/r-new/part-new.parquet");
        let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new());
        let spec = WriteSpec {
            partition_by: Vec::new(),
            ..spec(root, "r-new")
        };
        let lock = OutputLock::acquire(
            Arc::clone(&store),
            &spec.location,
            &spec.root().unwrap(),
            "r-new",
            &crate::lock::LockOwner::current(root),
            crate::lock::DEFAULT_LEASE,
        )
        .await
        .unwrap();
        let record = commit_output(
            store,
            &spec,
            WriteMode::OverwritePartitions,
            &[WrittenFile {
                output: "claims".into(),
                partition: String::new(),
                file: "part-new.parquet".into(),
                rows: 1,
                bytes: 16,
            }],
            &lock,
            None,
            &|_| None,
        )
        .await
        .unwrap();
        lock.release().await;
        assert_eq!(record.rows_written, 1);
        assert_eq!(
            files_below(root),
            [
                "_SUCCESS",
                "other_dataset/part-0.parquet",
                "part-new.parquet"
            ]
        );
    }
}
