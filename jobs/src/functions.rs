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
//!
//! `hmac_sha256` and `tokenize` are keyed: only `mask` steps call them (an expression that
//! does is refused at compile time, see `frame::refuse_keyed`).

mod cast;
mod claims;
mod masking;
mod spark_added;
mod spark_compat;
mod text;
mod udf;

pub use cast::{CHECKED_CAST, checked_cast_udf};
pub use claims::{normalize_ndc, npi_valid, us_state, zip3, zip5};
pub use masking::{MIN_KEY_BYTES, REDACTED, SecretKey, SecretRef};
pub use spark_compat::{SparkDivision, spark_compat_functions};
pub use text::{
    clean_number, collapse_whitespace, parse_date, parse_timestamp, spark_pattern_to_chrono,
    spark_pattern_to_chrono_format,
};
pub(crate) use udf::{
    Body, Function, Value, argument_as, arguments, invoke, literal_argument, text_argument,
    text_function,
};

use std::borrow::Cow;
use std::sync::Arc;

use chrono::{Datelike, NaiveDate};
use datafusion::arrow::array::{
    Array, ArrayRef, Date32Array, Int64Array, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Signature, Volatility};

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
        checked_cast_udf(),
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
    apply: fn(&crate::functions::SecretKey, &str) -> String,
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

/// Every scalar function the planning session registers, in registration order (a later
/// one takes over an earlier one's names): DataFusion's and Spark's (what Ballista
/// registers), Sluice's, then Sluice's Spark-compatible replacements.
pub fn planning_scalar_functions() -> Vec<Arc<datafusion::logical_expr::ScalarUDF>> {
    let mut functions = ballista_core::extension::ballista_scalar_functions();
    functions.extend(sluice_scalar_functions());
    functions.extend(spark_compat_functions());
    functions
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

    #[test]
    fn zips_generalize_to_three_digits() {
        assert_eq!(zip3("02134-1234").as_deref(), Some("021"));
        assert_eq!(zip3("bad"), None);
    }
}
