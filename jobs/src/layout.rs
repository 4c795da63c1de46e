//! Spark's and Hive's layout, and Sluice's own column names: what a written dataset
//! looks like on storage (partition folders, the staging folder, escaped names, the
//! types Spark reads) and the names of the columns Sluice adds (quarantine columns,
//! hidden columns carried through the steps). Shared by the compiler on the scheduler
//! and the write operator on executors, so it sits below both.

use datafusion::arrow::datatypes::{DataType, TimeUnit};

/// The folder name Spark gives a null partition value.
pub const HIVE_DEFAULT_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// Where a run's files wait, below an output, until the run commits.
pub const STAGING_DIR: &str = "_temporary";

/// The quarantine output's name in run records and write manifests.
pub const QUARANTINE_OUTPUT: &str = "quarantine";

/// Columns the quarantine output adds to the rows: the rules each row broke, the run,
/// and the file the row came from.
pub const QUARANTINE_COLUMNS: [&str; 3] = ["_dq_rules", "_dq_run_id", "_dq_source_file"];

/// Columns Sluice carries through the steps for its own use (source file, parse
/// failures, rule flags); never written to an output.
pub(crate) const HIDDEN_PREFIX: &str = "__sluice_";

/// True for a column Sluice carries for itself.
pub(crate) fn is_hidden(name: &str) -> bool {
    name.starts_with(HIDDEN_PREFIX)
}

/// Prefix of the flag column of the row rule at an index.
pub(crate) const RULE_FLAG_PREFIX: &str = "__sluice_rule_";
/// The hidden column holding each row's source file.
pub(crate) const SOURCE_FILE_COLUMN: &str = "__sluice_source_file";
/// The hidden column holding each row's line in its (CSV) source file.
pub(crate) const SOURCE_LINE_COLUMN: &str = "__sluice_source_line";
/// The hidden column holding a malformed row's raw text.
pub(crate) const RAW_RECORD_COLUMN: &str = "__sluice_raw_record";
/// The hidden column saying what is wrong with a malformed row.
pub(crate) const MALFORMED_COLUMN: &str = "__sluice_malformed";
/// Quarantine columns written when the rows come from a CSV source read by Sluice's
/// reader: each row's line, and a malformed row's raw text and fault. They are read
/// from the hidden columns above.
pub const QUARANTINE_LINE_COLUMNS: [(&str, &str); 3] = [
    ("_dq_source_line", SOURCE_LINE_COLUMN),
    ("_dq_raw_record", RAW_RECORD_COLUMN),
    ("_dq_malformed", MALFORMED_COLUMN),
];
/// The hidden column a quarantine column of [`QUARANTINE_LINE_COLUMNS`] is read from.
pub(crate) fn quarantine_line_source(written: &str) -> Option<&'static str> {
    QUARANTINE_LINE_COLUMNS
        .iter()
        .find(|(name, _)| *name == written)
        .map(|(_, hidden)| *hidden)
}

/// The rule malformed rows of a CSV source break.
pub const MALFORMED_RULE: &str = "malformed_row";
/// Prefix of the hidden column holding the raw text of a value that did not parse.
pub(crate) const PARSE_FAILURE_PREFIX: &str = "__sluice_parse_";
/// What a masked value shows in samples.
pub const MASKED_SAMPLE: &str = "<masked>";

/// The type a column is written as so that Spark, Athena and Glue read it: microsecond
/// timestamps, no unsigned integers, no dictionaries or string views.
pub fn spark_type(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        DataType::Timestamp(_, tz) => DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
        DataType::UInt8 => DataType::Int16,
        DataType::UInt16 => DataType::Int32,
        DataType::UInt32 => DataType::Int64,
        DataType::UInt64 => DataType::Decimal128(20, 0),
        DataType::Float16 => DataType::Float32,
        DataType::Dictionary(_, value) => spark_type(value),
        other => other.clone(),
    }
}

/// Escapes a partition folder name or value the way Spark's `escapePathName` does.
pub fn escape_path_name(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        let needs_escape = matches!(
            c,
            '"' | '#'
                | '%'
                | '\''
                | '*'
                | '/'
                | ':'
                | '='
                | '?'
                | '\\'
                | '\u{7f}'
                | '{'
                | '['
                | ']'
                | '^'
        ) || (c as u32) < 0x20;
        if needs_escape {
            escaped.push_str(&format!("%{:02X}", c as u32));
        } else {
            escaped.push(c);
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_values_are_escaped_like_spark() {
        assert_eq!(escape_path_name("2024-01"), "2024-01");
        assert_eq!(escape_path_name("a/b:c"), "a%2Fb%3Ac");
    }
}
