//! The machinery of Sluice's scalar functions: a [`Function`] is a name, a signature and
//! a batch body; [`invoke`] runs a body over columnar arguments (literal in, literal out).

use std::borrow::Cow;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, StringArray, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, create_udf,
};

/// A function body: the arguments and the number of rows, to one array of results.
pub(crate) type Body = fn(&[ColumnarValue], usize) -> Result<ArrayRef>;

/// A Sluice function with its own signature (several arguments, literal options).
#[derive(Debug)]
pub(crate) struct Function {
    name: &'static str,
    signature: Signature,
    returns: DataType,
    body: Body,
}

impl PartialEq for Function {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for Function {}

impl std::hash::Hash for Function {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl Function {
    pub(crate) fn udf(
        name: &'static str,
        signature: Signature,
        returns: DataType,
        body: Body,
    ) -> Arc<ScalarUDF> {
        Arc::new(ScalarUDF::new_from_impl(Self {
            name,
            signature,
            returns,
            body,
        }))
    }
}

impl ScalarUDFImpl for Function {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(self.returns.clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        invoke(&args, self.body)
    }
}

/// Runs a body over the arguments; all-literal arguments give a literal.
pub(crate) fn invoke(args: &ScalarFunctionArgs, body: Body) -> Result<ColumnarValue> {
    let all_scalar = args
        .args
        .iter()
        .all(|arg| matches!(arg, ColumnarValue::Scalar(_)));
    let rows = if all_scalar { 1 } else { args.number_rows };
    let result = body(&args.args, rows)?;
    if all_scalar {
        Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
            &result, 0,
        )?))
    } else {
        Ok(ColumnarValue::Array(result))
    }
}

/// Any arguments, in one of these counts.
pub(crate) fn arguments(counts: &[usize]) -> Signature {
    Signature::one_of(
        counts
            .iter()
            .map(|&n| datafusion::logical_expr::TypeSignature::Any(n))
            .collect(),
        Volatility::Immutable,
    )
}

/// The first argument as text, one value per row.
pub(crate) fn text_argument(
    name: &str,
    args: &[ColumnarValue],
    rows: usize,
) -> Result<StringArray> {
    argument_as(name, args, 0, rows, &DataType::Utf8)
}

/// Argument `index` cast to `to`, one value per row, as its Arrow array type `A`.
pub(crate) fn argument_as<A: Array + Clone + 'static>(
    name: &str,
    args: &[ColumnarValue],
    index: usize,
    rows: usize,
    to: &DataType,
) -> Result<A> {
    let Some(arg) = args.get(index) else {
        return Err(DataFusionError::Plan(format!(
            "{name}: argument {} is missing",
            index + 1
        )));
    };
    let array = cast(&arg.to_array(rows)?, to)?;
    array.as_any().downcast_ref::<A>().cloned().ok_or_else(|| {
        DataFusionError::Internal(format!("{name}: argument {} is not {to}", index + 1))
    })
}

/// A literal text argument (a pattern, a key reference, a unit).
pub(crate) fn literal_argument(name: &str, args: &[ColumnarValue], index: usize) -> Result<String> {
    match args.get(index) {
        Some(ColumnarValue::Scalar(scalar)) => match scalar.cast_to(&DataType::Utf8)? {
            ScalarValue::Utf8(Some(text)) => Ok(text),
            _ => Err(DataFusionError::Plan(format!(
                "{name}: argument {} must not be NULL",
                index + 1
            ))),
        },
        Some(ColumnarValue::Array(_)) => Err(DataFusionError::Plan(format!(
            "{name}: argument {} must be a literal",
            index + 1
        ))),
        None => Err(DataFusionError::Plan(format!(
            "{name}: argument {} is missing",
            index + 1
        ))),
    }
}

pub(crate) enum Value<'a> {
    Text(Option<Cow<'a, str>>),
    Flag(Option<bool>),
}

/// A one-argument function over text; NULL in, NULL out.
pub(crate) fn text_function(
    name: &'static str,
    returns: DataType,
    apply: for<'a> fn(&'a str) -> Value<'a>,
) -> Arc<ScalarUDF> {
    let output = returns.clone();
    let implementation = Arc::new(move |args: &[ColumnarValue]| -> Result<ColumnarValue> {
        let [arg] = args else {
            return Err(DataFusionError::Execution(format!(
                "{name} takes one argument"
            )));
        };
        let rows = match arg {
            ColumnarValue::Array(array) => array.len(),
            ColumnarValue::Scalar(_) => 1,
        };
        let input = cast(&arg.to_array(rows)?, &DataType::Utf8)?;
        let input = input
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| DataFusionError::Internal(format!("{name}: input is not text")))?;
        let result: ArrayRef = match output {
            DataType::Boolean => Arc::new(
                input
                    .iter()
                    .map(|value| match value.map(apply) {
                        Some(Value::Flag(flag)) => flag,
                        _ => None,
                    })
                    .collect::<BooleanArray>(),
            ),
            _ => {
                // One builder for the batch: a clean value is copied, never allocated.
                let mut out = StringBuilder::with_capacity(input.len(), input.value_data().len());
                for value in input.iter() {
                    match value.map(apply) {
                        Some(Value::Text(Some(text))) => out.append_value(text),
                        _ => out.append_null(),
                    }
                }
                Arc::new(out.finish())
            }
        };
        Ok(match arg {
            ColumnarValue::Scalar(_) => {
                ColumnarValue::Scalar(datafusion::scalar::ScalarValue::try_from_array(&result, 0)?)
            }
            ColumnarValue::Array(_) => ColumnarValue::Array(result),
        })
    });
    Arc::new(create_udf(
        name,
        vec![DataType::Utf8],
        returns,
        Volatility::Immutable,
        implementation,
    ))
}
