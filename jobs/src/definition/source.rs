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
    /// Fixed-width (positional) text: each line a record, each column a character range
    /// (see `fixed_width`).
    #[serde(rename = "fixed_width")]
    FixedWidth,
}

impl SourceFormat {
    /// The format as a definition names it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Parquet => "parquet",
            Self::Csv => "csv",
            Self::Json => "json",
            Self::FixedWidth => "fixed_width",
        }
    }
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
    /// The layout of a `fixed_width` source (required for that format).
    #[serde(default)]
    pub fixed_width: Option<FixedWidthOptions>,
    /// Options for JSON lines sources.
    #[serde(default)]
    pub json: Option<JsonOptions>,
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
    /// What a malformed row does (too few or too many fields, an unclosed quote, bytes
    /// the encoding cannot decode): Spark's names. The default is `PERMISSIVE` for
    /// string-read CSV and `FAILFAST` with `infer_schema`.
    #[serde(default)]
    pub mode: Option<MalformedMode>,
    /// The files' text encoding: `utf-8` (the default), `latin1` (ISO-8859-1),
    /// `windows-1252`, `utf-16` (byte order from the BOM, else little-endian),
    /// `utf-16le`, `utf-16be`.
    #[serde(default)]
    pub encoding: Option<String>,
    /// Compression of the files: `auto` (the default: by extension, `.gz`, `.bz2`,
    /// `.xz`, `.zst`), `none`, `gzip`, `bzip2`, `xz` or `zstd`.
    #[serde(default)]
    pub compression: Option<String>,
    /// What happens when files' headers disagree: `union_by_name` (the default:
    /// columns matched by name in any order, a column a file lacks is NULL),
    /// `fail` (the run fails naming the first file that differs and how), or
    /// `quarantine_file` (every row of such a file is a malformed row).
    #[serde(default)]
    pub schema_drift: Option<SchemaDrift>,
}

/// Spark's `mode` for malformed rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum MalformedMode {
    /// Malformed rows go to the quarantine with rule `malformed_row`, their raw text,
    /// file and line (dropped and counted as a warning when the job has no quarantine).
    #[serde(rename = "PERMISSIVE", alias = "permissive")]
    Permissive,
    /// Malformed rows are dropped; the run reports how many as a warning.
    #[serde(rename = "DROPMALFORMED", alias = "dropmalformed")]
    DropMalformed,
    /// The first malformed row fails the run, naming its file, line and fault.
    #[serde(rename = "FAILFAST", alias = "failfast")]
    FailFast,
}

/// What happens when CSV files' headers disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SchemaDrift {
    /// Columns matched by name; one a file lacks is NULL in its rows.
    #[default]
    UnionByName,
    /// The run fails, naming the file and how its columns differ.
    Fail,
    /// The file's rows are all malformed rows (quarantined under `PERMISSIVE`).
    QuarantineFile,
}

/// How fixed-width (positional) files are read: every line is a record and every
/// column a range of characters, read as a string (cast or `parse` it in a step).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FixedWidthOptions {
    /// The columns, in order: each its name, first character (1-based, as record
    /// layouts number them) and width in characters.
    pub columns: Vec<FixedWidthColumn>,
    /// For files that mix record types (header, detail, trailer lines): only lines whose
    /// characters at `start`/`width` are one of `values` are rows; the others are skipped.
    #[serde(default)]
    pub record_type: Option<RecordTypeFilter>,
    /// Remove spaces around each value (the default; an all-space value is NULL).
    #[serde(default = "default_true")]
    pub trim: bool,
    /// Lines at the start of each file that are not records.
    #[serde(default)]
    pub skip_lines: u64,
    /// Values read as null (an empty value is always null).
    #[serde(default)]
    pub null_values: Vec<String>,
    /// What a malformed line does (shorter than the layout, or bytes the encoding cannot
    /// decode): `PERMISSIVE` (the default), `DROPMALFORMED` or `FAILFAST`, as for CSV.
    #[serde(default)]
    pub mode: Option<MalformedMode>,
    /// The files' text encoding, as for CSV (`utf-8`, `latin1`, `windows-1252`, `utf-16`…).
    #[serde(default)]
    pub encoding: Option<String>,
    /// Compression of the files, as for CSV (`auto` by extension, `none`, `gzip`…).
    #[serde(default)]
    pub compression: Option<String>,
}

/// How JSON lines files are read: one JSON object per line, the columns and their types
/// inferred from the first files (up to 1000 lines of each), as Spark infers them.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonOptions {
    /// What a malformed line does (not a JSON object, a value that does not fit the
    /// column's type, bytes the encoding cannot decode): `PERMISSIVE` (the default),
    /// `DROPMALFORMED` or `FAILFAST`, as for CSV.
    #[serde(default)]
    pub mode: Option<MalformedMode>,
    /// The files' text encoding, as for CSV.
    #[serde(default)]
    pub encoding: Option<String>,
    /// Compression of the files, as for CSV (`auto` by extension, `none`, `gzip`…).
    #[serde(default)]
    pub compression: Option<String>,
}

/// A column of a fixed-width layout.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FixedWidthColumn {
    /// The column's name.
    pub name: String,
    /// Its first character, counting from 1.
    pub start: usize,
    /// Its width in characters.
    pub width: usize,
}

/// The record-type field of a multi-record fixed-width file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordTypeFilter {
    /// Its first character, counting from 1.
    pub start: usize,
    /// Its width in characters.
    pub width: usize,
    /// The record types that are rows (compared after trimming spaces).
    pub values: Vec<String>,
}

impl Default for CsvOptions {
    fn default() -> Self {
        Self {
            header: true,
            delimiter: default_delimiter(),
            quote: default_quote(),
            null_values: Vec::new(),
            infer_schema: false,
            mode: None,
            encoding: None,
            compression: None,
            schema_drift: None,
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
