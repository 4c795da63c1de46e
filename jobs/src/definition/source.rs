//! Sources: a named dataset's format, location and reader options.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::definition::ColumnType;

/// File formats a source can be read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SourceFormat {
    /// Apache Parquet.
    Parquet,
    /// Delimited text.
    Csv,
    /// Newline-delimited JSON.
    Json,
}

/// A dataset the job reads.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// The file format.
    pub format: SourceFormat,
    /// A directory, file or glob; `{{param}}` is replaced by the param's value. Hive-style
    /// `key=value` folders below it become typed columns.
    pub path: String,
    /// Options for CSV sources.
    #[serde(default)]
    pub csv: Option<CsvOptions>,
    /// Types of Hive partition columns, where the inferred type (date, int, else
    /// string) is not the one wanted.
    #[serde(default)]
    pub partitions: BTreeMap<String, ColumnType>,
    /// Spark's `basePath`: when `path` points inside a partitioned dataset (say
    /// `…/claims/fill_month={{month}}`), the dataset's root (`…/claims`). The `key=value`
    /// folders between the two still become columns, and only `path` is listed and read.
    #[serde(default)]
    pub base_path: Option<String>,
}

/// How CSV files are read. Like Spark without `inferSchema`, every column is read as a
/// string unless `infer_schema` is set; cast them in a step.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CsvOptions {
    /// The first line holds column names.
    #[serde(default = "default_true")]
    pub header: bool,
    /// The field separator, one character.
    #[serde(default = "default_delimiter")]
    pub delimiter: String,
    /// The quote character, one character.
    #[serde(default = "default_quote")]
    pub quote: String,
    /// Values read as null (an empty field is always null).
    #[serde(default)]
    pub null_values: Vec<String>,
    /// Infer column types from the data instead of reading strings.
    #[serde(default)]
    pub infer_schema: bool,
}

impl Default for CsvOptions {
    fn default() -> Self {
        Self {
            header: true,
            delimiter: default_delimiter(),
            quote: default_quote(),
            null_values: Vec::new(),
            infer_schema: false,
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_delimiter() -> String {
    ",".to_owned()
}
fn default_quote() -> String {
    "\"".to_owned()
}
