//! What a write task is told: the run, its sinks (outputs and quarantine) and how each
//! is written, shipped to executors inside the plan.

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreUrl;
use object_store::path::Path;
use serde::{Deserialize, Serialize};

use crate::conf::Compression;
use crate::layout::STAGING_DIR;
use crate::quality::QualityPlan;

/// What one output of one run writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteSpec {
    /// The output's name in the job.
    pub output: String,
    /// The output location as a URL (`file:///…`, `s3://bucket/prefix`), no trailing `/`.
    pub location: String,
    /// The run whose files these are.
    pub run_id: String,
    /// Columns that become `key=value` folders, in order.
    pub partition_by: Vec<String>,
    /// Roll to a new file past this many bytes.
    pub target_file_size: u64,
    /// Parquet compression.
    pub compression: Compression,
}

impl WriteSpec {
    /// The store URL (`file://`, `s3://bucket`) of the output.
    pub fn store_url(&self) -> Result<ObjectStoreUrl> {
        let url = url::Url::parse(&self.location)
            .map_err(|err| DataFusionError::Plan(format!("{}: {err}", self.location)))?;
        ObjectStoreUrl::parse(&url[..url::Position::BeforePath])
    }

    /// The output's root as an object store path.
    pub fn root(&self) -> Result<Path> {
        let url = url::Url::parse(&self.location)
            .map_err(|err| DataFusionError::Plan(format!("{}: {err}", self.location)))?;
        Path::from_url_path(url.path())
            .map_err(|err| DataFusionError::Plan(format!("{}: {err}", self.location)))
    }

    /// Where this run's files are staged.
    pub fn staging_root(&self) -> Result<Path> {
        Ok(self.root()?.join(STAGING_DIR).join(self.run_id.as_str()))
    }
}

/// One destination of a write task: an output (valid rows) or the quarantine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkSpec {
    /// Where and how the files are written.
    pub spec: WriteSpec,
    /// The plan columns written, in order; for the quarantine, followed by the
    /// `_dq_*` columns the write task adds.
    pub columns: Vec<String>,
    /// True for the quarantine: it receives the rows a rule quarantined.
    pub quarantine: bool,
}

/// What one Ballista job writes: its sinks, and the quality checks that route rows
/// between them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteTask {
    /// The run.
    pub run_id: String,
    /// The first is the output whose partitioning the rows are shuffled by.
    pub sinks: Vec<SinkSpec>,
    /// Rules to count and route by.
    pub quality: Option<QualityPlan>,
}
