//! Sluice's CSV reader, for landing files as vendors send them: a malformed row (too few
//! or too many fields, an unclosed quote, bytes its encoding cannot decode) becomes a
//! row of its own with its file, line, raw text and fault, instead of failing the run;
//! files are decoded from Latin-1, Windows-1252 or UTF-16 and decompressed by
//! extension; headers are matched to the source's columns by name.
//!
//! ```text
//!  compile (scheduler): sample files' headers ──► the source's columns
//!  CsvTable (a source)  ──► lists and prunes partitions ──► a file scan whose source
//!                           is LandingCsvSource (file groups, restricted per task)
//!  LandingCsvSource (executors): bytes ─► decompress ─► decode ─► records (quote-aware,
//!      line numbers) ─► fields by header name ─► string columns + file + line
//!      `RowKind::Valid`: the well-formed rows; `RowKind::Malformed`: the others
//! ```
//!
//! JSON lines go through it too (`json`): lines that are not JSON objects, or whose
//! values do not fit the source's inferred types, are malformed rows.
//!
//! Fixed-width (positional) files go through the same reader: their records are lines,
//! their fields character ranges of a layout, and a line shorter than the layout is a
//! malformed row like a CSV row with too few fields.
//!
//! The steps start from the valid rows; the malformed ones join the steps' result as
//! rows that only the `malformed_row` rule flags, so they reach the quarantine (or are
//! dropped and counted) in the same write as every other row. A source is parsed once
//! per kind of row it feeds.

mod bytes;
mod exec;
mod json;
mod records;
mod table;

pub use exec::{as_csv_scan, csv_scan};
pub use json::JsonColumns;
pub(crate) use json::infer_columns as infer_json_columns;
pub(crate) use table::{CsvTable, read_columns};
pub use table::{HeaderGroup, SourceFiles};

use serde::{Deserialize, Serialize};

use crate::definition::{MalformedMode, SchemaDrift};

/// A file as a user names it: its store's URL (`file:///`, `s3://bucket/`) and its
/// path in the store.
pub(crate) fn file_url(store_url: &str, path: &object_store::path::Path) -> String {
    let store_url = store_url.strip_suffix('/').unwrap_or(store_url);
    format!("{store_url}/{}", path.as_ref().trim_start_matches('/'))
}

/// Which rows of a CSV source a scan yields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RowKind {
    /// Well-formed rows: the source's columns, partition columns, file and line.
    Valid,
    /// Malformed rows: partition columns, file, line, raw text and what is wrong.
    Malformed,
}

/// A text encoding of landing files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TextEncoding {
    /// UTF-8 (a BOM is skipped); invalid bytes make a row malformed.
    Utf8,
    /// ISO-8859-1: every byte is the code point of the same value.
    Latin1,
    /// Windows-1252.
    Windows1252,
    /// UTF-16 little-endian (or as a BOM says).
    Utf16Le,
    /// UTF-16 big-endian (or as a BOM says).
    Utf16Be,
}

impl TextEncoding {
    /// The encoding a source's `encoding` names.
    pub fn parse(name: &str) -> Result<Self, String> {
        match name.to_ascii_lowercase().replace('_', "-").as_str() {
            "utf-8" | "utf8" => Ok(Self::Utf8),
            "latin1" | "latin-1" | "iso-8859-1" | "iso8859-1" => Ok(Self::Latin1),
            "windows-1252" | "cp1252" => Ok(Self::Windows1252),
            "utf-16" | "utf16" | "utf-16le" => Ok(Self::Utf16Le),
            "utf-16be" => Ok(Self::Utf16Be),
            other => Err(format!(
                "unknown encoding `{other}` (utf-8, latin1, windows-1252, utf-16, utf-16le, \
                 utf-16be)"
            )),
        }
    }
}

/// How a CSV source's files are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileCompression {
    /// By each file's extension: `.gz`, `.bz2`, `.xz`, `.zst`, else none.
    Auto,
    /// Not compressed.
    None,
    /// gzip (several members are read as one stream).
    Gzip,
    /// bzip2.
    Bzip2,
    /// xz.
    Xz,
    /// Zstandard.
    Zstd,
}

impl FileCompression {
    /// The compression a source's `compression` names.
    pub fn parse(name: &str) -> Result<Self, String> {
        match name.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "none" | "uncompressed" => Ok(Self::None),
            "gzip" | "gz" => Ok(Self::Gzip),
            "bzip2" | "bz2" => Ok(Self::Bzip2),
            "xz" => Ok(Self::Xz),
            "zstd" | "zst" => Ok(Self::Zstd),
            other => Err(format!(
                "unknown compression `{other}` (auto, none, gzip, bzip2, xz, zstd)"
            )),
        }
    }

    /// The compression of one file: as declared, or by its extension.
    pub(crate) fn of_file(self, path: &str) -> Self {
        if self != Self::Auto {
            return self;
        }
        let lower = path.to_ascii_lowercase();
        if lower.ends_with(".gz") || lower.ends_with(".gzip") {
            Self::Gzip
        } else if lower.ends_with(".bz2") {
            Self::Bzip2
        } else if lower.ends_with(".xz") {
            Self::Xz
        } else if lower.ends_with(".zst") || lower.ends_with(".zstd") {
            Self::Zstd
        } else {
            Self::None
        }
    }
}

/// How a CSV source is read: what the scan on an executor needs, serialized with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CsvReadOptions {
    /// The source's name, for messages.
    pub source: String,
    /// The first record of each file holds column names.
    pub header: bool,
    /// The field separator.
    pub delimiter: u8,
    /// The quote character.
    pub quote: u8,
    /// Values read as NULL, beside the empty field.
    pub null_values: Vec<String>,
    /// The files' encoding.
    pub encoding: TextEncoding,
    /// The files' compression.
    pub compression: FileCompression,
    /// What a malformed row does.
    pub mode: MalformedMode,
    /// What files whose headers differ from the source's columns do.
    pub schema_drift: SchemaDrift,
    /// The source's columns, in order (all read as strings).
    pub columns: Vec<String>,
    /// Hive partition columns, read from the folders (as strings).
    pub partition_columns: Vec<String>,
    /// For a fixed-width source: where each column is in a line (the records are lines,
    /// without quotes or delimiters).
    pub fixed_width: Option<FixedLayout>,
    /// For a JSON lines source: its columns' types (the records are lines, decoded by
    /// arrow-json; `columns` holds the same names).
    pub json: Option<JsonColumns>,
}

/// The layout of a fixed-width (positional) file's lines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FixedLayout {
    /// Each column's first character (0-based) and width, in the source's column order.
    pub columns: Vec<(usize, usize)>,
    /// Only lines whose characters at (start, width) are one of these values are rows;
    /// the others (headers, trailers, other record types) are skipped.
    pub record_type: Option<(usize, usize, Vec<String>)>,
    /// Spaces around a value are removed.
    pub trim: bool,
    /// Lines at the start of each file that are not records.
    pub skip_lines: u64,
}

impl FixedLayout {
    /// The characters a line must have: the end of the column that ends last.
    pub fn record_length(&self) -> usize {
        self.columns
            .iter()
            .map(|(start, width)| start + width)
            .max()
            .unwrap_or(0)
    }
}
