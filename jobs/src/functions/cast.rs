//! The `cast` step's checked cast: Spark's ANSI cast (an invalid value fails the run),
//! whose error says what a user can act on — the step, the column, the value (unless the
//! column is masked later) and, for rows of Sluice's CSV reader, the file and line —
//! instead of Arrow's bare `Cannot cast string 'N/A' to value of Int32 type`.
//!
//! `__sluice_cast(value, CAST(NULL AS type), 'steps[1].cast', 'column', redact, [file, line])`:
//! the target type travels as a typed NULL, so the plan (and an executor decoding it)
//! knows the result's type without parsing anything.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Int64Type};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};

/// The checked cast's name (internal: only the `cast` step plans it).
pub const CHECKED_CAST: &str = "__sluice_cast";

/// What a redacted value shows as in an error.
const REDACTED_VALUE: &str = "<masked column: value withheld>";

/// The checked cast.
pub fn checked_cast_udf() -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::new_from_impl(CheckedCast {
        signature: Signature::variadic_any(Volatility::Immutable),
    }))
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct CheckedCast {
    signature: Signature,
}

impl ScalarUDFImpl for CheckedCast {
    fn name(&self) -> &str {
        CHECKED_CAST
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        arg_types
            .get(1)
            .cloned()
            .ok_or_else(|| usage_error("a target type"))
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let target = args
            .arg_fields
            .get(1)
            .ok_or_else(|| usage_error("a target type"))?;
        Ok(Arc::new(Field::new(
            self.name(),
            target.data_type().clone(),
            true,
        )))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let target = args.return_field.data_type().clone();
        let rows = args.number_rows;
        let Some(value) = args.args.first() else {
            return Err(usage_error("a value"));
        };
        let scalar = matches!(value, ColumnarValue::Scalar(_));
        let values = value.to_array(if scalar { 1 } else { rows })?;
        let strict = CastOptions {
            safe: false,
            format_options: FormatOptions::default(),
        };
        let cast = match cast_with_options(&values, &target, &strict) {
            Ok(cast) => cast,
            Err(err) => {
                return Err(DataFusionError::Execution(describe_failure(
                    &args, &values, &target, &err,
                )));
            }
        };
        Ok(if scalar {
            ColumnarValue::Scalar(ScalarValue::try_from_array(&cast, 0)?)
        } else {
            ColumnarValue::Array(cast)
        })
    }
}

fn usage_error(missing: &str) -> DataFusionError {
    DataFusionError::Plan(format!(
        "{CHECKED_CAST}(value, CAST(NULL AS type), step, column, redact, [file, line]) needs {missing}"
    ))
}

/// The error of a failed cast: where it happened and the first value that does not cast.
fn describe_failure(
    args: &ScalarFunctionArgs,
    values: &ArrayRef,
    target: &DataType,
    err: &datafusion::arrow::error::ArrowError,
) -> String {
    let literal_text = |index: usize| match args.args.get(index) {
        Some(ColumnarValue::Scalar(ScalarValue::Utf8(Some(text)))) => Some(text.clone()),
        _ => None,
    };
    let step = literal_text(2).unwrap_or_else(|| "cast".to_owned());
    let column = literal_text(3).unwrap_or_default();
    let redact = matches!(
        args.args.get(4),
        Some(ColumnarValue::Scalar(ScalarValue::Boolean(Some(true))))
    );
    // The first row that holds a value and does not cast: a lenient cast makes it NULL.
    let lenient = CastOptions {
        safe: true,
        format_options: FormatOptions::default(),
    };
    let row = cast_with_options(values, target, &lenient)
        .ok()
        .and_then(|cast| (0..values.len()).find(|&i| values.is_valid(i) && cast.is_null(i)));
    let Some(row) = row else {
        return format!("{step}: `{column}` does not cast to {target}: {err}");
    };
    let shown = if redact {
        REDACTED_VALUE.to_owned()
    } else {
        ArrayFormatter::try_new(values.as_ref(), &FormatOptions::default())
            .map(|format| format!("'{}'", format.value(row)))
            .unwrap_or_else(|_| "a value".to_owned())
    };
    let place = row_place(args, row)
        .map(|place| format!("{place}: "))
        .unwrap_or_default();
    format!(
        "{place}{step}: `{column}` value {shown} is not a valid {} (ANSI cast; clean or \
         `parse` the column first, or quarantine such rows with a rule)",
        type_name(target)
    )
}

/// `file: line N` of a row, when the plan passed its file and line columns.
fn row_place(args: &ScalarFunctionArgs, row: usize) -> Option<String> {
    let value_at = |index: usize| -> Option<ArrayRef> {
        match args.args.get(index)? {
            ColumnarValue::Array(array) => Some(Arc::clone(array)),
            ColumnarValue::Scalar(scalar) => scalar.to_array().ok(),
        }
    };
    let files = value_at(5)?;
    let files = datafusion::arrow::compute::cast(&files, &DataType::Utf8).ok()?;
    let files = files.as_string::<i32>();
    let file_row = if files.len() == 1 { 0 } else { row };
    if files.is_null(file_row) {
        return None;
    }
    let file = files.value(file_row).to_owned();
    let line = value_at(6)
        .and_then(|lines| datafusion::arrow::compute::cast(&lines, &DataType::Int64).ok())
        .and_then(|lines| {
            let lines = lines.as_primitive::<Int64Type>();
            let line_row = if lines.len() == 1 { 0 } else { row };
            lines.is_valid(line_row).then(|| lines.value(line_row))
        });
    Some(match line {
        Some(line) => format!("{file}: line {line}"),
        None => file,
    })
}

/// The type as a definition names it (`int`, `decimal(12,2)`, `date`).
fn type_name(data_type: &DataType) -> String {
    match data_type {
        DataType::Int8 => "tinyint".into(),
        DataType::Int16 => "smallint".into(),
        DataType::Int32 => "int".into(),
        DataType::Int64 => "bigint".into(),
        DataType::Float32 => "float".into(),
        DataType::Float64 => "double".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Date32 => "date".into(),
        DataType::Timestamp(..) => "timestamp".into(),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => format!("decimal({p},{s})"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::config::ConfigOptions;

    fn call(args: Vec<ColumnarValue>, target: DataType, rows: usize) -> Result<ColumnarValue> {
        let arg_fields = args
            .iter()
            .enumerate()
            .map(|(i, arg)| {
                let name = if i == 0 {
                    "quantity".to_owned()
                } else {
                    format!("a{i}")
                };
                Arc::new(Field::new(name, arg.data_type(), true))
            })
            .collect();
        CheckedCast {
            signature: Signature::variadic_any(Volatility::Immutable),
        }
        .invoke_with_args(ScalarFunctionArgs {
            args,
            arg_fields,
            number_rows: rows,
            return_field: Arc::new(Field::new("out", target, true)),
            config_options: Arc::new(ConfigOptions::default()),
        })
    }

    fn text(values: &[Option<&str>]) -> ColumnarValue {
        ColumnarValue::Array(Arc::new(StringArray::from(values.to_vec())))
    }

    fn step(redact: bool) -> [ColumnarValue; 4] {
        [
            ColumnarValue::Scalar(ScalarValue::Int32(None)),
            ColumnarValue::Scalar(ScalarValue::Utf8(Some("steps[1].cast".into()))),
            ColumnarValue::Scalar(ScalarValue::Utf8(Some("quantity".into()))),
            ColumnarValue::Scalar(ScalarValue::Boolean(Some(redact))),
        ]
    }

    #[test]
    fn valid_values_cast_as_the_native_cast_does() {
        let mut args = vec![text(&[Some("1"), None, Some("-7")])];
        args.extend(step(false));
        let ColumnarValue::Array(out) = call(args, DataType::Int32, 3).unwrap() else {
            panic!("an array");
        };
        let out = out.as_primitive::<datafusion::arrow::datatypes::Int32Type>();
        assert_eq!(
            out.iter().collect::<Vec<_>>(),
            vec![Some(1), None, Some(-7)]
        );
    }

    #[test]
    fn a_failure_names_the_step_column_value_file_and_line() {
        let mut args = vec![text(&[Some("1"), None, Some("N/A")])];
        args.extend(step(false));
        args.push(text(&[
            Some("lake/a.csv"),
            Some("lake/a.csv"),
            Some("lake/b.csv"),
        ]));
        args.push(ColumnarValue::Array(Arc::new(Int64Array::from(vec![
            2, 3, 9,
        ]))));
        let err = call(args, DataType::Int32, 3).unwrap_err().to_string();
        assert!(
            err.contains(
                "lake/b.csv: line 9: steps[1].cast: `quantity` value 'N/A' is not a valid int"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_masked_columns_value_is_withheld() {
        let mut args = vec![text(&[Some("123-45-6789")])];
        args.extend(step(true));
        let err = call(args, DataType::Int32, 1).unwrap_err().to_string();
        assert!(!err.contains("6789"), "{err}");
        assert!(err.contains("value withheld"), "{err}");
    }
}
