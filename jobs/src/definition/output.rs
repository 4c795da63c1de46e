//! Outputs: where the result is written, its format, partitioning and write mode.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::definition::Literal;

/// Output file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// Snappy-compressed Apache Parquet, as Spark writes it.
    #[default]
    Parquet,
}

/// How an output treats data already at its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WriteMode {
    /// Replace the partitions this run produces; leave the others.
    #[default]
    OverwritePartitions,
    /// Add files beside what is there.
    Append,
    /// Refuse to run when the output already holds data.
    ErrorIfExists,
}

/// Where and how a result is written.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// The output's name, unique within the job.
    pub name: String,
    /// The output directory; `{{param}}` templates allowed.
    pub path: String,
    /// The file format.
    #[serde(default)]
    pub format: OutputFormat,
    /// Columns that become Hive-style `key=value` folders.
    #[serde(default)]
    pub partition_by: Vec<String>,
    /// What to do with data already there.
    #[serde(default)]
    pub mode: WriteMode,
    /// Roll to a new file past this many bytes (`128MiB`, `1GiB`, or a number).
    #[serde(default)]
    pub target_file_size: Option<Literal>,
}
