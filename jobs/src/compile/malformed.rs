//! A CSV source's malformed rows joined to the steps' result: the steps never see them
//! (a filter or an aggregate would lose them), and they reach the write as rows that
//! only the `malformed_row` rule flags, with their file, line, raw text and fault, so
//! the quarantine and the report count them in the same pass as every other row.

use datafusion::logical_expr::{Expr, cast, lit, when};
use datafusion::prelude::{DataFrame, SessionContext};
use datafusion::scalar::ScalarValue;

use crate::compile::{MalformedRows, ResolvedSource};
use crate::frame::{column, strip_context};
use crate::layout::{
    HIVE_DEFAULT_PARTITION, MALFORMED_COLUMN, RAW_RECORD_COLUMN, RULE_FLAG_PREFIX,
    SOURCE_FILE_COLUMN, SOURCE_LINE_COLUMN,
};

/// The steps' rows with the columns malformed rows carry: the malformed rule's flag
/// (false), an empty raw text and fault, and their file and line when the steps did not
/// keep them.
pub(super) fn with_row_columns(frame: DataFrame, flag: &str) -> Result<DataFrame, String> {
    let fail = |err: datafusion::error::DataFusionError| strip_context(&err);
    let mut frame = frame.with_column(flag, lit(false)).map_err(fail)?;
    for (name, data_type) in [
        (
            SOURCE_FILE_COLUMN,
            datafusion::arrow::datatypes::DataType::Utf8,
        ),
        (
            SOURCE_LINE_COLUMN,
            datafusion::arrow::datatypes::DataType::Int64,
        ),
        (
            RAW_RECORD_COLUMN,
            datafusion::arrow::datatypes::DataType::Utf8,
        ),
        (
            MALFORMED_COLUMN,
            datafusion::arrow::datatypes::DataType::Utf8,
        ),
    ] {
        if frame.schema().field_with_unqualified_name(name).is_err() {
            frame = frame
                .with_column(name, cast(lit(ScalarValue::Null), data_type))
                .map_err(fail)?;
        }
    }
    Ok(frame)
}

/// `frame` (the checked rows) and the source's malformed rows, shaped like it: every
/// column NULL but the source's partition columns, file, line, raw text and fault; the
/// malformed rule's flag true and every other rule's false.
pub(super) async fn with_malformed_rows(
    ctx: &SessionContext,
    frame: DataFrame,
    rows: &MalformedRows,
    flag: &str,
    source: &ResolvedSource,
) -> Result<DataFrame, String> {
    let fail = |err: datafusion::error::DataFusionError| strip_context(&err);
    let malformed = ctx.table(rows.table.as_str()).await.map_err(fail)?;
    let exprs: Vec<Expr> = frame
        .schema()
        .fields()
        .iter()
        .map(|field| {
            let name = field.name().as_str();
            let data_type = field.data_type().clone();
            let value = if name == flag {
                lit(true)
            } else if name.starts_with(RULE_FLAG_PREFIX) {
                lit(false)
            } else if [
                SOURCE_FILE_COLUMN,
                SOURCE_LINE_COLUMN,
                RAW_RECORD_COLUMN,
                MALFORMED_COLUMN,
            ]
            .contains(&name)
            {
                cast(column(name), data_type)
            } else if source.partition_columns.iter().any(|(key, _)| key == name) {
                when(
                    column(name).eq(lit(HIVE_DEFAULT_PARTITION)),
                    cast(lit(ScalarValue::Null), data_type.clone()),
                )
                .otherwise(cast(column(name), data_type))
                .map_err(fail)?
            } else {
                cast(lit(ScalarValue::Null), data_type)
            };
            Ok(value.alias(name))
        })
        .collect::<Result<_, String>>()?;
    let malformed = malformed.select(exprs).map_err(fail)?;
    frame.union(malformed).map_err(fail)
}
