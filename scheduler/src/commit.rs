//! Committing a run's staged files into its outputs, and cleaning up after runs that do
//! not commit.
//!
//! A write task stages its files below `<output>/_temporary/<run_id>/`, which readers
//! never list. Once every output's Ballista job has succeeded, the scheduler moves the
//! files that successful task attempts reported into place, removes what they replace
//! (`overwrite_partitions`: the previous files of exactly the partitions the run
//! produced), writes `_SUCCESS`, and deletes the staging folder with anything failed
//! attempts left there.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use sluice_jobs::{WriteMode, WriteSpec, WrittenFile};

use crate::error::{Result, SchedulerError};
use crate::run::OutputRecord;

/// Moves one output's staged files into place; returns what was committed.
pub async fn commit_output(
    store: Arc<dyn ObjectStore>,
    spec: &WriteSpec,
    mode: WriteMode,
    files: &[WrittenFile],
) -> Result<OutputRecord> {
    let fail = |message: String| SchedulerError::Commit {
        output: spec.output.clone(),
        location: spec.location.clone(),
        message,
    };
    let root = spec.root().map_err(|e| fail(e.to_string()))?;
    let staging = spec.staging_root().map_err(|e| fail(e.to_string()))?;

    // Sizes of what was staged, read once.
    let staged: HashMap<Path, u64> = store
        .list(Some(&staging))
        .map_ok(|meta| (meta.location, meta.size))
        .try_collect()
        .await
        .map_err(|e| fail(format!("listing staged files: {e}")))?;

    let partitions: BTreeSet<&str> = files.iter().map(|f| f.partition.as_str()).collect();
    // What the new files replace: the previous files of each partition produced.
    let mut replaced: Vec<Path> = Vec::new();
    if mode == WriteMode::OverwritePartitions {
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
    for file in files {
        let from = join(&join(&staging, &file.partition), &file.file);
        let to = join(&join(&root, &file.partition), &file.file);
        let size = staged.get(&from).copied().ok_or_else(|| {
            fail(format!(
                "task reported {from} but it is not in the staging folder"
            ))
        })?;
        store
            .rename(&from, &to)
            .await
            .map_err(|e| fail(format!("moving {from} to {to}: {e}")))?;
        record.rows_written += file.rows;
        record.bytes_written += size;
        record.files.push(if file.partition.is_empty() {
            file.file.clone()
        } else {
            format!("{}/{}", file.partition, file.file)
        });
    }
    for old in replaced {
        store
            .delete(&old)
            .await
            .map_err(|e| fail(format!("removing replaced file {old}: {e}")))?;
    }
    store
        .put(&root.clone().join("_SUCCESS"), Vec::<u8>::new().into())
        .await
        .map_err(|e| fail(format!("writing _SUCCESS: {e}")))?;
    discard_staging(Arc::clone(&store), spec).await;
    discard_stale_staging(store, spec).await;
    Ok(record)
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
