//! Sluice's SQL functions, registered on the scheduler, on every executor and in the
//! embedded cluster (plans carry them by name, so a plan that uses one runs anywhere):
//!
//! | function | result |
//! |---|---|
//! | `normalize_ndc(text)` | the NDC as 11 digits (5-4-2), from 4-4-2, 5-3-2, 5-4-1 or 11-digit forms; NULL when it is none of them |
//! | `npi_valid(text)` | whether a 10-digit NPI passes its check digit (Luhn over `80840` + the first 9 digits) |
//! | `zip5(text)` | the 5-digit US ZIP of `12345`, `12345-6789`, `123456789`, or a ZIP that lost its leading zeros |
//! | `zip3(text)` | the first 3 digits of the ZIP (HIPAA safe-harbor generalization) |
//! | `us_state(text)` | the 2-letter code of a US state, DC or territory, from its code or name, any case |
//! | `collapse_whitespace(text)` | trimmed, with every run of whitespace inside made one space |
//! | `parse_number(text)` | the number in `$1,234.50`, `(12.00)`, `1 234` as plain text (`1234.50`, `-12.00`, `1234`); NULL when it is not one |
//! | `parse_date(text, pattern, …)` | the date by the first Spark pattern (`yyyy-MM-dd`, `MM/dd/yyyy`, `dd-MMM-yyyy`) that reads all of it; NULL when none does |
//! | `parse_timestamp(text, pattern, …)` | the same for timestamps (`yyyy-MM-dd HH:mm:ss`) |
//! | `hmac_sha256(value, 'env:NAME' \| 'file:/path')` | HMAC-SHA256 of the value as hex, keyed by the secret the reference names |
//! | `tokenize(value, key_ref)` | a deterministic token (`tok_` + 24 hex digits) of the value under that key |
//! | `redact(value)` | `REDACTED`, or NULL for NULL |
//! | `generalize_date(date, 'month' \| 'year')` | the first day of the date's month or year |

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use chrono::{Datelike, NaiveDate};
use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Date32Array, Int64Array, StringArray, StringBuilder,
    TimestampMicrosecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, create_udf,
};

use crate::masking::{REDACTED, SecretRef, zip3};
use crate::parsing::{clean_number, parse_date, parse_timestamp, spark_pattern_to_chrono};

/// Every function Sluice adds.
pub fn sluice_scalar_functions() -> Vec<Arc<ScalarUDF>> {
    vec![
        text_function("normalize_ndc", DataType::Utf8, |v| {
            Value::Text(normalize_ndc(v).map(Cow::Owned))
        }),
        text_function("npi_valid", DataType::Boolean, |v| {
            Value::Flag(Some(npi_valid(v)))
        }),
        text_function("zip5", DataType::Utf8, |v| {
            Value::Text(zip5(v).map(Cow::Owned))
        }),
        text_function("zip3", DataType::Utf8, |v| {
            Value::Text(zip3(v).map(Cow::Owned))
        }),
        text_function("us_state", DataType::Utf8, |v| {
            Value::Text(us_state(v).map(Cow::Borrowed))
        }),
        text_function("collapse_whitespace", DataType::Utf8, |v| {
            Value::Text(Some(collapse_whitespace(v)))
        }),
        text_function("parse_number", DataType::Utf8, |v| {
            Value::Text(clean_number(v).map(Cow::Owned))
        }),
        text_function("redact", DataType::Utf8, |_| {
            Value::Text(Some(Cow::Borrowed(REDACTED)))
        }),
        key_bucket_udf(),
        Function::udf(
            "parse_date",
            Signature::variadic_any(Volatility::Immutable),
            DataType::Date32,
            parse_date_batch,
        ),
        Function::udf(
            "parse_timestamp",
            Signature::variadic_any(Volatility::Immutable),
            DataType::Timestamp(TimeUnit::Microsecond, None),
            parse_timestamp_batch,
        ),
        Function::udf(
            "hmac_sha256",
            Signature::any(2, Volatility::Immutable),
            DataType::Utf8,
            |args, rows| {
                keyed_batch("hmac_sha256", args, rows, |key, value| {
                    key.hmac_sha256(value)
                })
            },
        ),
        Function::udf(
            "tokenize",
            Signature::any(2, Volatility::Immutable),
            DataType::Utf8,
            |args, rows| keyed_batch("tokenize", args, rows, |key, value| key.tokenize(value)),
        ),
        Function::udf(
            "generalize_date",
            Signature::any(2, Volatility::Immutable),
            DataType::Date32,
            generalize_date_batch,
        ),
    ]
}

/// Trimmed, with inner whitespace runs made one space.
pub fn collapse_whitespace(value: &str) -> Cow<'_, str> {
    // Most values are already clean: check in one pass before allocating.
    let mut after_space = true;
    let clean = value.chars().all(|c| {
        let ok = !c.is_whitespace() || (c == ' ' && !after_space);
        after_space = c.is_whitespace();
        ok
    }) && !after_space;
    if clean || value.is_empty() {
        Cow::Borrowed(value)
    } else {
        Cow::Owned(value.split_whitespace().collect::<Vec<_>>().join(" "))
    }
}

/// The internal function that hashes key columns into [`KEY_BUCKETS`] buckets (see
/// `compile::mark_repeated_keys`).
pub const KEY_BUCKET: &str = "__sluice_key_bucket";

/// Buckets of [`KEY_BUCKET`]: enough to spread over any number of tasks.
pub const KEY_BUCKETS: u64 = 4096;

/// The [`KEY_BUCKET`] function.
pub fn key_bucket_udf() -> Arc<ScalarUDF> {
    Function::udf(
        KEY_BUCKET,
        Signature::variadic_any(Volatility::Immutable),
        DataType::Int64,
        key_bucket_batch,
    )
}

/// FNV-1a over each row's values as text, each value closed by a separator (NULL has its
/// own marker), modulo [`KEY_BUCKETS`]: the same keys give the same bucket in every
/// process.
fn key_bucket_batch(args: &[ColumnarValue], rows: usize) -> Result<ArrayRef> {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    let mut hashes = vec![OFFSET; rows];
    for arg in args {
        let text = cast(&arg.to_array(rows)?, &DataType::Utf8)?;
        let text = text
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| DataFusionError::Internal(format!("{KEY_BUCKET}: key is not text")))?;
        for (row, hash) in hashes.iter_mut().enumerate() {
            let (value, end): (&[u8], u8) = if text.is_null(row) {
                (&[], 0xfe)
            } else {
                (text.value(row).as_bytes(), 0xff)
            };
            for byte in value.iter().chain(std::iter::once(&end)) {
                *hash = (*hash ^ u64::from(*byte)).wrapping_mul(PRIME);
            }
        }
    }
    Ok(Arc::new(Int64Array::from_iter_values(
        hashes.into_iter().map(|hash| (hash % KEY_BUCKETS) as i64),
    )))
}

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

/// The first argument as text, one value per row.
fn text_argument(name: &str, args: &[ColumnarValue], rows: usize) -> Result<StringArray> {
    let Some(first) = args.first() else {
        return Err(DataFusionError::Plan(format!("{name} needs a value")));
    };
    let text = cast(&first.to_array(rows)?, &DataType::Utf8)?;
    text.as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .ok_or_else(|| DataFusionError::Internal(format!("{name}: value is not text")))
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

fn chrono_formats(name: &str, args: &[ColumnarValue]) -> Result<Vec<String>> {
    if args.len() < 2 {
        return Err(DataFusionError::Plan(format!(
            "{name}(text, pattern, ...) needs at least one pattern"
        )));
    }
    (1..args.len())
        .map(|index| {
            let pattern = literal_argument(name, args, index)?;
            spark_pattern_to_chrono(&pattern)
                .map_err(|message| DataFusionError::Plan(format!("{name}: {message}")))
        })
        .collect()
}

fn parse_date_batch(args: &[ColumnarValue], rows: usize) -> Result<ArrayRef> {
    let formats = chrono_formats("parse_date", args)?;
    let text = text_argument("parse_date", args, rows)?;
    Ok(Arc::new(
        text.iter()
            .map(|value| {
                value
                    .and_then(|v| parse_date(v, &formats))
                    .map(days_since_epoch)
            })
            .collect::<Date32Array>(),
    ))
}

fn parse_timestamp_batch(args: &[ColumnarValue], rows: usize) -> Result<ArrayRef> {
    let formats = chrono_formats("parse_timestamp", args)?;
    let text = text_argument("parse_timestamp", args, rows)?;
    Ok(Arc::new(
        text.iter()
            .map(|value| {
                value
                    .and_then(|v| parse_timestamp(v, &formats))
                    .map(|at| at.and_utc().timestamp_micros())
            })
            .collect::<TimestampMicrosecondArray>(),
    ))
}

fn keyed_batch(
    name: &str,
    args: &[ColumnarValue],
    rows: usize,
    apply: fn(&crate::masking::SecretKey, &str) -> String,
) -> Result<ArrayRef> {
    let reference = literal_argument(name, args, 1)?;
    let key = SecretRef::parse(&reference)
        .and_then(|reference| reference.resolve())
        .map_err(|message| DataFusionError::Execution(format!("{name}: {message}")))?;
    let text = text_argument(name, args, rows)?;
    Ok(Arc::new(
        text.iter()
            .map(|value| value.map(|v| apply(&key, v)))
            .collect::<StringArray>(),
    ))
}

fn generalize_date_batch(args: &[ColumnarValue], rows: usize) -> Result<ArrayRef> {
    let unit = literal_argument("generalize_date", args, 1)?.to_ascii_lowercase();
    let Some(first) = args.first() else {
        return Err(DataFusionError::Plan("generalize_date needs a date".into()));
    };
    let dates = cast(&first.to_array(rows)?, &DataType::Date32)?;
    let dates = dates
        .as_any()
        .downcast_ref::<Date32Array>()
        .ok_or_else(|| DataFusionError::Internal("generalize_date: not a date".into()))?;
    let truncate = |date: NaiveDate| match unit.as_str() {
        "month" => Ok(date.with_day(1).unwrap_or(date)),
        "year" => Ok(NaiveDate::from_ymd_opt(date.year(), 1, 1).unwrap_or(date)),
        other => Err(DataFusionError::Plan(format!(
            "generalize_date: unit `{other}` is not `month` or `year`"
        ))),
    };
    let mut out = Vec::with_capacity(dates.len());
    for value in dates.iter() {
        out.push(match value {
            Some(days) => Some(days_since_epoch(truncate(date_from_days(days))?)),
            None => None,
        });
    }
    Ok(Arc::new(Date32Array::from(out)))
}

fn epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default()
}

pub(crate) fn days_since_epoch(date: NaiveDate) -> i32 {
    (date - epoch()).num_days() as i32
}

pub(crate) fn date_from_days(days: i32) -> NaiveDate {
    epoch() + chrono::Duration::days(i64::from(days))
}

enum Value<'a> {
    Text(Option<Cow<'a, str>>),
    Flag(Option<bool>),
}

/// A one-argument function over text; NULL in, NULL out.
fn text_function(
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

/// The NDC as 11 digits, or `None` when it is not an NDC.
pub fn normalize_ndc(value: &str) -> Option<String> {
    let value = value.trim();
    let parts: Vec<&str> = value.split('-').collect();
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    if !parts.iter().all(|p| digits(p)) {
        return None;
    }
    let (labeler, product, package) = match parts.as_slice() {
        [whole] if whole.len() == 11 => return Some((*whole).to_owned()),
        [l, p, k] => (*l, *p, *k),
        _ => return None,
    };
    match (labeler.len(), product.len(), package.len()) {
        (5, 4, 2) => Some(format!("{labeler}{product}{package}")),
        (4, 4, 2) => Some(format!("0{labeler}{product}{package}")),
        (5, 3, 2) => Some(format!("{labeler}0{product}{package}")),
        (5, 4, 1) => Some(format!("{labeler}{product}0{package}")),
        _ => None,
    }
}

/// Whether a 10-digit NPI passes its check digit.
pub fn npi_valid(value: &str) -> bool {
    let value = value.trim();
    if value.len() != 10 || !value.chars().all(|c| c.is_ascii_digit()) {
        return false;
    }
    // Luhn over the card-issuer prefix 80840 and the first nine digits.
    let payload: Vec<u32> = "80840"
        .chars()
        .chain(value[..9].chars())
        .filter_map(|c| c.to_digit(10))
        .collect();
    let sum: u32 = payload
        .iter()
        .rev()
        .enumerate()
        .map(|(index, &digit)| {
            if index % 2 == 0 {
                let doubled = digit * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                digit
            }
        })
        .sum();
    let check = (10 - sum % 10) % 10;
    value[9..].chars().next().and_then(|c| c.to_digit(10)) == Some(check)
}

/// The 5-digit ZIP, or `None`.
pub fn zip5(value: &str) -> Option<String> {
    let value = value.trim();
    let (head, tail) = value.split_once('-').unwrap_or((value, ""));
    if value.contains('-') && tail.is_empty() {
        return None;
    }
    if !head.chars().all(|c| c.is_ascii_digit()) || !tail.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    match (head.len(), tail.len()) {
        (5, 0) | (5, 4) => Some(head.to_owned()),
        (9, 0) => Some(head[..5].to_owned()),
        // A ZIP stored as a number loses its leading zeros (02134 → 2134).
        (3 | 4, 0) => Some(format!("{head:0>5}")),
        _ => None,
    }
}

const STATES: &[(&str, &str)] = &[
    ("AL", "ALABAMA"),
    ("AK", "ALASKA"),
    ("AZ", "ARIZONA"),
    ("AR", "ARKANSAS"),
    ("CA", "CALIFORNIA"),
    ("CO", "COLORADO"),
    ("CT", "CONNECTICUT"),
    ("DE", "DELAWARE"),
    ("DC", "DISTRICT OF COLUMBIA"),
    ("FL", "FLORIDA"),
    ("GA", "GEORGIA"),
    ("HI", "HAWAII"),
    ("ID", "IDAHO"),
    ("IL", "ILLINOIS"),
    ("IN", "INDIANA"),
    ("IA", "IOWA"),
    ("KS", "KANSAS"),
    ("KY", "KENTUCKY"),
    ("LA", "LOUISIANA"),
    ("ME", "MAINE"),
    ("MD", "MARYLAND"),
    ("MA", "MASSACHUSETTS"),
    ("MI", "MICHIGAN"),
    ("MN", "MINNESOTA"),
    ("MS", "MISSISSIPPI"),
    ("MO", "MISSOURI"),
    ("MT", "MONTANA"),
    ("NE", "NEBRASKA"),
    ("NV", "NEVADA"),
    ("NH", "NEW HAMPSHIRE"),
    ("NJ", "NEW JERSEY"),
    ("NM", "NEW MEXICO"),
    ("NY", "NEW YORK"),
    ("NC", "NORTH CAROLINA"),
    ("ND", "NORTH DAKOTA"),
    ("OH", "OHIO"),
    ("OK", "OKLAHOMA"),
    ("OR", "OREGON"),
    ("PA", "PENNSYLVANIA"),
    ("RI", "RHODE ISLAND"),
    ("SC", "SOUTH CAROLINA"),
    ("SD", "SOUTH DAKOTA"),
    ("TN", "TENNESSEE"),
    ("TX", "TEXAS"),
    ("UT", "UTAH"),
    ("VT", "VERMONT"),
    ("VA", "VIRGINIA"),
    ("WA", "WASHINGTON"),
    ("WV", "WEST VIRGINIA"),
    ("WI", "WISCONSIN"),
    ("WY", "WYOMING"),
    ("PR", "PUERTO RICO"),
    ("GU", "GUAM"),
    ("VI", "VIRGIN ISLANDS"),
    ("AS", "AMERICAN SAMOA"),
    ("MP", "NORTHERN MARIANA ISLANDS"),
];

/// The 2-letter code of a state, DC or territory, or `None`.
pub fn us_state(value: &str) -> Option<&'static str> {
    // Most values are a code already: no allocation for those.
    let trimmed = value.trim().as_bytes();
    if let [a, b] = trimmed {
        let code = [a.to_ascii_uppercase(), b.to_ascii_uppercase()];
        if let Some((known, _)) = STATES.iter().find(|(c, _)| c.as_bytes() == code) {
            return Some(known);
        }
    }
    static BY_NAME: LazyLock<HashMap<&'static str, &'static str>> = LazyLock::new(|| {
        STATES
            .iter()
            .flat_map(|(code, name)| [(*code, *code), (*name, *code)])
            .collect()
    });
    let wanted = collapse_whitespace(value)
        .to_ascii_uppercase()
        .replace('.', "");
    BY_NAME.get(wanted.as_str()).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndcs_normalize_to_eleven_digits() {
        assert_eq!(
            normalize_ndc("0002-1433-80").as_deref(),
            Some("00002143380")
        );
        assert_eq!(
            normalize_ndc("00169-406-13").as_deref(),
            Some("00169040613")
        );
        assert_eq!(
            normalize_ndc("00024-5925-3").as_deref(),
            Some("00024592503")
        );
        assert_eq!(
            normalize_ndc("00002-1433-80").as_deref(),
            Some("00002143380")
        );
        assert_eq!(normalize_ndc("00002143380").as_deref(), Some("00002143380"));
        assert_eq!(normalize_ndc("0002143380"), None);
        assert_eq!(normalize_ndc("00002-14X3-80"), None);
    }

    #[test]
    fn npis_are_checked_with_luhn_over_the_80840_prefix() {
        // CMS's published example: 123456789 has check digit 3.
        assert!(npi_valid("1234567893"));
        assert!(!npi_valid("1234567890"));
        assert!(!npi_valid("123456789"));
        assert!(!npi_valid("12345678a3"));
    }

    #[test]
    fn zips_and_states_normalize() {
        assert_eq!(zip5("02134-1234").as_deref(), Some("02134"));
        assert_eq!(zip5("021341234").as_deref(), Some("02134"));
        assert_eq!(zip5("2134").as_deref(), Some("02134"));
        assert_eq!(zip5("2134-"), None);
        assert_eq!(zip5("ABCDE"), None);
        assert_eq!(us_state(" ca "), Some("CA"));
        assert_eq!(us_state("new  york"), Some("NY"));
        assert_eq!(us_state("D.C."), Some("DC"));
        assert_eq!(us_state("Narnia"), None);
    }
}
