//! What a write task returns: the files it wrote and its quality counts, one JSON report
//! per task in a one-column batch.

use std::sync::Arc;

use datafusion::arrow::array::{Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::error::{DataFusionError, Result};
use serde::{Deserialize, Serialize};

use crate::quality::QualityStats;

/// The schema of what each write task returns: one row, its [`TaskReport`] as JSON.
pub fn manifest_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        "report",
        DataType::Utf8,
        false,
    )]))
}

/// One file a write task produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrittenFile {
    /// The sink (output name, or `quarantine`).
    #[serde(default)]
    pub output: String,
    /// The Hive folder below the output (`fill_month=2024-01`), empty when unpartitioned.
    pub partition: String,
    /// The file name.
    pub file: String,
    /// Rows in the file.
    pub rows: u64,
    /// Bytes in the file.
    pub bytes: u64,
}

/// What one write task did: its files and, when the job checks quality, its counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskReport {
    /// The files written, all sinks.
    pub files: Vec<WrittenFile>,
    /// Rule counts.
    pub quality: Option<QualityStats>,
}

impl TaskReport {
    /// Reads the reports in a manifest batch.
    pub fn from_manifest(batch: &RecordBatch) -> Result<Vec<TaskReport>> {
        let reports = batch
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| {
                DataFusionError::Internal("write manifest has an unexpected schema".into())
            })?;
        reports
            .iter()
            .flatten()
            .map(|json| {
                serde_json::from_str(json).map_err(|err| {
                    DataFusionError::Internal(format!("cannot read a write report: {err}"))
                })
            })
            .collect()
    }
}
