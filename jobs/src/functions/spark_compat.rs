//! Spark semantics where DataFusion (with datafusion-spark) answers differently, measured
//! against PySpark by `tests/spark.rs`:
//!
//! | Spark | DataFusion without this | here |
//! |---|---|---|
//! | `7 / 2` is `3.5`: `/` never divides integers | `3` | integer operands are divided as doubles |
//! | `date_format(d, 'yyyy-MM')` takes Spark's patterns | prints the pattern (chrono's `%` formats) | Spark patterns |
//! | `to_date(text, 'MM/dd/yyyy')` takes Spark's patterns | chrono formats | Spark patterns; a value that does not match is an error (ANSI) |
//! | `year`, `month`, `day`, `dayofmonth`, `quarter` | missing | added |
//! | `date_add(d, n)`, `date_sub(d, n)` | missing | added |
//! | `regexp_replace(s, p, r)` replaces every match | the first match only | every match |
//! | `substr(s, -2)` counts a negative position from the end | the whole string | from the end, through the DataFrame API and steps (SQL text's `SUBSTR` is planned by DataFusion: a known gap) |
//!
//! The functions are registered like Sluice's own, on every process, so a plan that uses
//! them runs the same on the scheduler, the executors and the embedded cluster.

use std::sync::Arc;

use chrono::{Datelike, NaiveDate};
use datafusion::arrow::array::{Array, ArrayRef, Date32Array, Int32Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, TimeUnit};
use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::config::ConfigOptions;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::expr::BinaryExpr;
use datafusion::logical_expr::expr_rewriter::FunctionRewrite;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ExprSchemable, Operator, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, Volatility, cast as cast_expr,
};

use crate::functions::{
    Body, Function, arguments, days_since_epoch, invoke, literal_argument, spark_pattern_to_chrono,
    spark_pattern_to_chrono_format,
};

/// Spark's `/`: integer operands are divided as doubles.
#[derive(Debug, Default)]
pub struct SparkDivision;

impl FunctionRewrite for SparkDivision {
    fn name(&self) -> &str {
        "spark_division"
    }

    fn rewrite(
        &self,
        expr: Expr,
        schema: &DFSchema,
        _config: &ConfigOptions,
    ) -> Result<Transformed<Expr>> {
        let Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Divide,
            right,
        }) = &expr
        else {
            return Ok(Transformed::no(expr));
        };
        let integer = |side: &Expr| side.get_type(schema).is_ok_and(|t| t.is_integer());
        if !(integer(left) && integer(right)) {
            return Ok(Transformed::no(expr));
        }
        Ok(Transformed::yes(Expr::BinaryExpr(BinaryExpr {
            left: Box::new(cast_expr(left.as_ref().clone(), DataType::Float64)),
            op: Operator::Divide,
            right: Box::new(cast_expr(right.as_ref().clone(), DataType::Float64)),
        })))
    }
}

/// The functions above, to register after DataFusion's and Spark's so they win.
pub fn spark_compat_functions() -> Vec<Arc<ScalarUDF>> {
    let any = |n: usize| Signature::any(n, Volatility::Immutable);
    let mut functions = vec![
        Function::udf("date_format", any(2), DataType::Utf8, date_format),
        Function::udf("to_date", arguments(&[1, 2]), DataType::Date32, to_date),
        Function::udf("substr", arguments(&[2, 3]), DataType::Utf8, substr),
        Function::udf("substring", arguments(&[2, 3]), DataType::Utf8, substr),
        Function::udf("date_add", any(2), DataType::Date32, |args, rows| {
            shift_days(args, rows, 1)
        }),
        Function::udf("date_sub", any(2), DataType::Date32, |args, rows| {
            shift_days(args, rows, -1)
        }),
    ];
    for (name, part) in [
        ("year", DatePart::Year),
        ("month", DatePart::Month),
        ("day", DatePart::Day),
        ("dayofmonth", DatePart::Day),
        ("quarter", DatePart::Quarter),
    ] {
        functions.push(Arc::new(ScalarUDF::new_from_impl(DatePartFunction {
            name,
            part,
            signature: any(1),
        })));
    }
    functions.push(Arc::new(ScalarUDF::new_from_impl(ReplaceAll::new())));
    functions.extend(super::spark_added::spark_added_functions());
    functions
}

/// Microseconds since the epoch of a date or timestamp argument.
fn timestamps(arg: &ColumnarValue, rows: usize) -> Result<Vec<Option<chrono::NaiveDateTime>>> {
    let array = arg.to_array(rows)?;
    let array = match array.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => cast(
            &cast(&array, &DataType::Date32)?,
            &DataType::Timestamp(TimeUnit::Microsecond, None),
        )?,
        _ => cast(&array, &DataType::Timestamp(TimeUnit::Microsecond, None))?,
    };
    let micros = array
        .as_any()
        .downcast_ref::<datafusion::arrow::array::TimestampMicrosecondArray>()
        .ok_or_else(|| DataFusionError::Internal("not a timestamp".into()))?;
    Ok(micros
        .iter()
        .map(|v| {
            v.and_then(chrono::DateTime::from_timestamp_micros)
                .map(|t| t.naive_utc())
        })
        .collect())
}

fn date_format(args: &[ColumnarValue], rows: usize) -> Result<ArrayRef> {
    let pattern = literal_argument("date_format", args, 1)?;
    let format = spark_pattern_to_chrono_format(&pattern)
        .map_err(|m| DataFusionError::Plan(format!("date_format: {m}")))?;
    let Some(value) = args.first() else {
        return Err(DataFusionError::Plan("date_format needs a date".into()));
    };
    Ok(Arc::new(
        timestamps(value, rows)?
            .into_iter()
            .map(|t| t.map(|t| t.format(&format).to_string()))
            .collect::<StringArray>(),
    ))
}

fn to_date(args: &[ColumnarValue], rows: usize) -> Result<ArrayRef> {
    let Some(value) = args.first() else {
        return Err(DataFusionError::Plan("to_date needs a value".into()));
    };
    if args.len() == 1
        && !matches!(
            value.data_type(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        )
    {
        return Ok(cast(&value.to_array(rows)?, &DataType::Date32)?);
    }
    let pattern = if args.len() > 1 {
        literal_argument("to_date", args, 1)?
    } else {
        "yyyy-MM-dd".to_owned()
    };
    let format = spark_pattern_to_chrono(&pattern)
        .map_err(|m| DataFusionError::Plan(format!("to_date: {m}")))?;
    let text = cast(&value.to_array(rows)?, &DataType::Utf8)?;
    let text = text
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| DataFusionError::Internal("to_date: not text".into()))?;
    let mut out = Vec::with_capacity(text.len());
    for value in text.iter() {
        out.push(match value {
            None => None,
            Some(v) => Some(days_since_epoch(
                NaiveDate::parse_from_str(v.trim(), &format).map_err(|_| {
                    // Spark's ANSI error; `try_cast` or the `parse` step give NULL instead.
                    DataFusionError::Execution(format!(
                        "to_date: a value does not match the pattern `{pattern}`"
                    ))
                })?,
            )),
        });
    }
    Ok(Arc::new(Date32Array::from(out)))
}

/// Spark's `substr(str, pos[, len])`: 1-based, 0 is 1, a negative position counts from
/// the end, a length below 1 gives the empty string. Characters, not bytes.
fn substr(args: &[ColumnarValue], rows: usize) -> Result<ArrayRef> {
    let int_column = |index: usize| -> Result<Option<Int32Array>> {
        match args.get(index) {
            None => Ok(None),
            Some(arg) => {
                let values = cast(&arg.to_array(rows)?, &DataType::Int32)?;
                Ok(values.as_any().downcast_ref::<Int32Array>().cloned())
            }
        }
    };
    let Some(value) = args.first() else {
        return Err(DataFusionError::Plan("substr needs a string".into()));
    };
    let text = cast(&value.to_array(rows)?, &DataType::Utf8)?;
    let text = text
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| DataFusionError::Internal("substr: not text".into()))?;
    let positions =
        int_column(1)?.ok_or_else(|| DataFusionError::Plan("substr needs a position".into()))?;
    let lengths = int_column(2)?;
    let mut out = Vec::with_capacity(text.len());
    for row in 0..text.len() {
        if text.is_null(row)
            || positions.is_null(row)
            || lengths.as_ref().is_some_and(|l| l.is_null(row))
        {
            out.push(None);
            continue;
        }
        let chars: Vec<char> = text.value(row).chars().collect();
        let count = chars.len() as i64;
        let position = i64::from(positions.value(row));
        let start = if position > 0 {
            position - 1
        } else if position < 0 {
            count + position
        } else {
            0
        };
        let length = lengths
            .as_ref()
            .map_or(i64::MAX / 2, |l| i64::from(l.value(row)));
        let end = start.saturating_add(length.max(0)).min(count);
        let start = start.max(0);
        out.push(Some(if start >= end {
            String::new()
        } else {
            chars[start as usize..end as usize].iter().collect()
        }));
    }
    Ok(Arc::new(StringArray::from(out)))
}

fn shift_days(args: &[ColumnarValue], rows: usize, sign: i32) -> Result<ArrayRef> {
    let (Some(date), Some(days)) = (args.first(), args.get(1)) else {
        return Err(DataFusionError::Plan("date_add(date, days)".into()));
    };
    let dates = cast(&date.to_array(rows)?, &DataType::Date32)?;
    let days = cast(&days.to_array(rows)?, &DataType::Int32)?;
    let (Some(dates), Some(days)) = (
        dates.as_any().downcast_ref::<Date32Array>(),
        days.as_any().downcast_ref::<Int32Array>(),
    ) else {
        return Err(DataFusionError::Internal("date_add: bad arguments".into()));
    };
    Ok(Arc::new(
        dates
            .iter()
            .zip(days.iter())
            .map(|(d, n)| Some(d? + sign * n?))
            .collect::<Date32Array>(),
    ))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum DatePart {
    Year,
    Month,
    Day,
    Quarter,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct DatePartFunction {
    name: &'static str,
    part: DatePart,
    signature: Signature,
}

impl ScalarUDFImpl for DatePartFunction {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int32)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let part = self.part;
        let body: Body = match part {
            DatePart::Year => |a, r| date_part(a, r, |d| d.year()),
            DatePart::Month => |a, r| date_part(a, r, |d| d.month() as i32),
            DatePart::Day => |a, r| date_part(a, r, |d| d.day() as i32),
            DatePart::Quarter => |a, r| date_part(a, r, |d| d.month0() as i32 / 3 + 1),
        };
        invoke(&args, body)
    }
}

fn date_part(args: &[ColumnarValue], rows: usize, part: fn(NaiveDate) -> i32) -> Result<ArrayRef> {
    let Some(value) = args.first() else {
        return Err(DataFusionError::Plan("a date is needed".into()));
    };
    Ok(Arc::new(
        timestamps(value, rows)?
            .into_iter()
            .map(|t| t.map(|t| part(t.date())))
            .collect::<Int32Array>(),
    ))
}

/// `regexp_replace` replacing every match, as Spark does: DataFusion's with the `g` flag.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ReplaceAll {
    inner: Arc<ScalarUDF>,
}

impl ReplaceAll {
    fn new() -> Self {
        Self {
            inner: datafusion::functions::regex::regexp_replace(),
        }
    }
}

impl ScalarUDFImpl for ReplaceAll {
    fn name(&self) -> &str {
        "regexp_replace"
    }
    fn signature(&self) -> &Signature {
        self.inner.signature()
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }
    fn invoke_with_args(&self, mut args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if args.args.len() == 3 {
            args.args
                .push(ColumnarValue::Scalar(ScalarValue::Utf8(Some("g".into()))));
            args.arg_fields
                .push(Arc::new(Field::new("flags", DataType::Utf8, true)));
        }
        self.inner.invoke_with_args(args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::functions::date_from_days;

    #[test]
    fn dates_shift_and_split_into_parts() {
        let date = ColumnarValue::Scalar(ScalarValue::Date32(Some(days_since_epoch(
            NaiveDate::from_ymd_opt(2024, 1, 31).unwrap(),
        ))));
        let next = shift_days(
            &[
                date.clone(),
                ColumnarValue::Scalar(ScalarValue::Int32(Some(1))),
            ],
            1,
            1,
        )
        .unwrap();
        let next = next
            .as_any()
            .downcast_ref::<Date32Array>()
            .unwrap()
            .value(0);
        assert_eq!(date_from_days(next).to_string(), "2024-02-01");
        let quarter = date_part(&[date], 1, |d| d.month0() as i32 / 3 + 1).unwrap();
        assert_eq!(
            quarter
                .as_any()
                .downcast_ref::<Int32Array>()
                .unwrap()
                .value(0),
            1
        );
    }
}
