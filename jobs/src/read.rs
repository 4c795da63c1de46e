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
//! The steps start from the valid rows; the malformed ones join the steps' result as
//! rows that only the `malformed_row` rule flags, so they reach the quarantine (or are
//! dropped and counted) in the same write as every other row. A source is parsed once
//! per kind of row it feeds.

mod exec;
mod records;
mod table;

pub use exec::{as_csv_scan, csv_scan};
pub(crate) use table::{CsvTable, read_columns};

use serde::{Deserialize, Serialize};

use crate::definition::{MalformedMode, SchemaDrift};

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
}
