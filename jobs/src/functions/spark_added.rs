//! Spark SQL functions DataFusion (with datafusion-spark) does not have, as Spark answers
//! them — each checked against PySpark by `tests/spark.rs`:
//!
//! | function | Spark's answer |
//! |---|---|
//! | `regexp_extract(s, p[, i])` | group `i` (default 1) of the first match; `''` when nothing matches |
//! | `format_number(x, d)` | `x` rounded half-even to `d` places, grouped by thousands: `1,234.50` |
//! | `hash(a, …)` | Murmur3 x86-32 with seed 42, each argument seeding the next; NULLs skipped (an integer literal is a BIGINT here and an INT in Spark, so `hash(1)` differs: a known gap) |
//! | `try_divide(a, b)` | `a / b` as a double, NULL when `b` is 0 |
//! | `startswith(s, p)`, `endswith(s, p)` | booleans; NULL when either is NULL |
//! | `dayofweek(d)` | 1 (Sunday) … 7 (Saturday) |
//! | `weekofyear(d)` | the ISO 8601 week |
//! | `try_to_date(s[, fmt])` | like `to_date`, NULL instead of an error |
//! | `div(a, b)`, `a DIV b` | the quotient truncated toward zero, a BIGINT; a zero divisor is an error (Spark's ANSI mode) |

use std::sync::Arc;

use chrono::{Datelike, NaiveDate};
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Float64Array, Int32Array, Int64Array, StringArray,
};
use datafusion::arrow::datatypes::DataType;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Signature, Volatility};

use crate::functions::{
    Function, argument_as, arguments, date_from_days, days_since_epoch, literal_argument,
    spark_pattern_to_chrono,
};

/// The functions above.
pub fn spark_added_functions() -> Vec<Arc<ScalarUDF>> {
    let any = |n: usize| Signature::any(n, Volatility::Immutable);
    vec![
        Function::udf(
            "regexp_extract",
            arguments(&[2, 3]),
            DataType::Utf8,
            regexp_extract,
        ),
        Function::udf("format_number", any(2), DataType::Utf8, format_number),
        Function::udf(
            "hash",
            Signature::variadic_any(Volatility::Immutable),
            DataType::Int32,
            hash,
        ),
        Function::udf("try_divide", any(2), DataType::Float64, try_divide),
        Function::udf("div", any(2), DataType::Int64, integral_divide),
        Function::udf("startswith", any(2), DataType::Boolean, |a, r| {
            affix(a, r, |s, p| s.starts_with(p))
        }),
        Function::udf("endswith", any(2), DataType::Boolean, |a, r| {
            affix(a, r, |s, p| s.ends_with(p))
        }),
        Function::udf("dayofweek", any(1), DataType::Int32, |a, r| {
            date_number(a, r, |d| d.weekday().number_from_sunday() as i32)
        }),
        Function::udf("weekofyear", any(1), DataType::Int32, |a, r| {
            date_number(a, r, |d| d.iso_week().week() as i32)
        }),
        Function::udf(
            "try_to_date",
            arguments(&[1, 2]),
            DataType::Date32,
            try_to_date,
        ),
    ]
}

/// An argument as text, one value per row.
fn text(name: &str, args: &[ColumnarValue], index: usize, rows: usize) -> Result<StringArray> {
    argument_as(name, args, index, rows, &DataType::Utf8)
}

fn regexp_extract(args: &[ColumnarValue], rows: usize) -> Result<ArrayRef> {
    let pattern = literal_argument("regexp_extract", args, 1)?;
    let regex = regex::Regex::new(&pattern).map_err(|e| {
        DataFusionError::Plan(format!("regexp_extract: `{pattern}` is not a pattern: {e}"))
    })?;
    let group = match args.get(2) {
        Some(_) => literal_argument("regexp_extract", args, 2)?
            .parse::<usize>()
            .map_err(|_| {
                DataFusionError::Plan("regexp_extract: the group must be a whole number".into())
            })?,
        None => 1,
    };
    if group > regex.captures_len() - 1 {
        return Err(DataFusionError::Plan(format!(
            "regexp_extract: `{pattern}` has {} groups, not {group}",
            regex.captures_len() - 1
        )));
    }
    let values = text("regexp_extract", args, 0, rows)?;
    Ok(Arc::new(
        values
            .iter()
            .map(|value| {
                value.map(|value| {
                    regex
                        .captures(value)
                        .and_then(|found| found.get(group))
                        .map_or(String::new(), |m| m.as_str().to_owned())
                })
            })
            .collect::<StringArray>(),
    ))
}

fn format_number(args: &[ColumnarValue], rows: usize) -> Result<ArrayRef> {
    let places = literal_argument("format_number", args, 1)?
        .parse::<i32>()
        .map_err(|_| {
            DataFusionError::Plan("format_number: the places must be a whole number".into())
        })?;
    // Decimals keep their digits exactly: rounded as text, not through a double.
    let values = text("format_number", args, 0, rows)?;
    Ok(Arc::new(
        values
            .iter()
            .map(|value| {
                // Spark: a negative number of places gives NULL.
                value
                    .and_then(|v| (places >= 0).then(|| group_thousands(v, places as usize)))
                    .flatten()
            })
            .collect::<StringArray>(),
    ))
}

/// `1234.5` → `1,234.50` (half-even, as Java's `DecimalFormat`); `None` for text that is
/// not a plain decimal number.
fn group_thousands(number: &str, places: usize) -> Option<String> {
    let number = number.trim();
    let (negative, digits) = match number.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, number),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // All digits as one integer string scaled by 10^places, rounded half-even.
    let mut kept: Vec<u8> = whole.bytes().collect();
    let fraction = fraction.as_bytes();
    kept.extend((0..places).map(|i| fraction.get(i).copied().unwrap_or(b'0')));
    let rest = fraction.get(places..).unwrap_or(&[]);
    let round_up = match rest.first() {
        Some(b'6'..=b'9') => true,
        Some(b'5') => {
            rest[1..].iter().any(|&b| b != b'0')
                || kept.last().is_some_and(|&last| (last - b'0') % 2 == 1)
        }
        _ => false,
    };
    if round_up {
        let mut index = kept.len();
        loop {
            if index == 0 {
                kept.insert(0, b'1');
                break;
            }
            index -= 1;
            if kept[index] == b'9' {
                kept[index] = b'0';
            } else {
                kept[index] += 1;
                break;
            }
        }
    }
    let split = kept.len() - places;
    let (whole, fraction) = kept.split_at(split);
    let whole = std::str::from_utf8(whole).ok()?.trim_start_matches('0');
    let whole = if whole.is_empty() { "0" } else { whole };
    let mut grouped = String::new();
    for (i, digit) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    // Java's DecimalFormat keeps the sign of a negative number rounded to zero: `-0.00`.
    let mut out = String::new();
    if negative {
        out.push('-');
    }
    out.push_str(&grouped);
    if places > 0 {
        out.push('.');
        out.push_str(std::str::from_utf8(fraction).ok()?);
    }
    Some(out)
}

/// Spark's `hash`: Murmur3 x86-32, seed 42, over each argument in turn (its hash seeds
/// the next); a NULL argument leaves the hash as it was.
fn hash(args: &[ColumnarValue], rows: usize) -> Result<ArrayRef> {
    let mut hashes = vec![42u32; rows];
    // Mixes each row's value into its hash; a NULL leaves it.
    fn mix<T>(hashes: &mut [u32], values: impl Iterator<Item = Option<T>>, f: fn(T, u32) -> u32) {
        for (hash, value) in hashes.iter_mut().zip(values) {
            if let Some(value) = value {
                *hash = f(value, *hash);
            }
        }
    }
    for (index, arg) in args.iter().enumerate() {
        match arg.data_type() {
            DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Date32 => {
                let ints: Int32Array = argument_as("hash", args, index, rows, &DataType::Int32)?;
                mix(&mut hashes, ints.iter(), |v, h| murmur3_int(v as u32, h));
            }
            DataType::Int64 => {
                let longs: Int64Array = argument_as("hash", args, index, rows, &DataType::Int64)?;
                mix(&mut hashes, longs.iter(), |v, h| murmur3_long(v as u64, h));
            }
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                let texts = text("hash", args, index, rows)?;
                mix(&mut hashes, texts.iter(), |v, h| {
                    murmur3_bytes(v.as_bytes(), h)
                });
            }
            DataType::Boolean => {
                let flags: BooleanArray =
                    argument_as("hash", args, index, rows, &DataType::Boolean)?;
                mix(&mut hashes, flags.iter(), |v, h| {
                    murmur3_int(u32::from(v), h)
                });
            }
            DataType::Null => {}
            other => {
                return Err(DataFusionError::Plan(format!(
                    "hash of {other} is not supported yet (strings, booleans, integers \
                     and dates are)"
                )));
            }
        }
    }
    Ok(Arc::new(
        hashes
            .into_iter()
            .map(|h| Some(h as i32))
            .collect::<Int32Array>(),
    ))
}

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

fn mix_k1(k1: u32) -> u32 {
    k1.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2)
}

fn mix_h1(h1: u32, k1: u32) -> u32 {
    (h1 ^ k1)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

fn finish(mut h1: u32, length: u32) -> u32 {
    h1 ^= length;
    h1 ^= h1 >> 16;
    h1 = h1.wrapping_mul(0x85eb_ca6b);
    h1 ^= h1 >> 13;
    h1 = h1.wrapping_mul(0xc2b2_ae35);
    h1 ^ (h1 >> 16)
}

fn murmur3_int(value: u32, seed: u32) -> u32 {
    finish(mix_h1(seed, mix_k1(value)), 4)
}

fn murmur3_long(value: u64, seed: u32) -> u32 {
    let low = value as u32;
    let high = (value >> 32) as u32;
    let h1 = mix_h1(seed, mix_k1(low));
    finish(mix_h1(h1, mix_k1(high)), 8)
}

/// Spark's `hashUnsafeBytes`: little-endian 4-byte blocks, then each remaining byte
/// (sign-extended) mixed in as a block of its own — not the reference tail.
fn murmur3_bytes(bytes: &[u8], seed: u32) -> u32 {
    let mut h1 = seed;
    let blocks = bytes.len() / 4 * 4;
    for block in bytes[..blocks].chunks_exact(4) {
        let k1 = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        h1 = mix_h1(h1, mix_k1(k1));
    }
    for &byte in &bytes[blocks..] {
        h1 = mix_h1(h1, mix_k1(byte as i8 as i32 as u32));
    }
    finish(h1, bytes.len() as u32)
}

fn try_divide(args: &[ColumnarValue], rows: usize) -> Result<ArrayRef> {
    let number =
        |index| argument_as::<Float64Array>("try_divide", args, index, rows, &DataType::Float64);
    let (dividend, divisor) = (number(0)?, number(1)?);
    Ok(Arc::new(
        dividend
            .iter()
            .zip(divisor.iter())
            .map(|(a, b)| match (a, b) {
                (Some(a), Some(b)) if b != 0.0 => Some(a / b),
                _ => None,
            })
            .collect::<Float64Array>(),
    ))
}

/// Spark's `IntegralDivide`: integers divide exactly, other numbers as doubles, and the
/// quotient is truncated toward zero.
fn integral_divide(args: &[ColumnarValue], rows: usize) -> Result<ArrayRef> {
    let zero = || DataFusionError::Execution("div: division by zero".into());
    if args.iter().all(|arg| arg.data_type().is_integer()) {
        let number = |index| argument_as::<Int64Array>("div", args, index, rows, &DataType::Int64);
        let (dividend, divisor) = (number(0)?, number(1)?);
        let quotients = dividend
            .iter()
            .zip(divisor.iter())
            .map(|pair| match pair {
                (Some(_), Some(0)) => Err(zero()),
                // i64::MIN div -1 overflows a BIGINT, as in Spark.
                (Some(a), Some(b)) => a.checked_div(b).map(Some).ok_or_else(|| {
                    DataFusionError::Execution(format!("div: {a} div {b} overflows a BIGINT"))
                }),
                _ => Ok(None),
            })
            .collect::<Result<Int64Array>>()?;
        return Ok(Arc::new(quotients));
    }
    let number = |index| argument_as::<Float64Array>("div", args, index, rows, &DataType::Float64);
    let (dividend, divisor) = (number(0)?, number(1)?);
    let quotients = dividend
        .iter()
        .zip(divisor.iter())
        .map(|pair| match pair {
            (Some(_), Some(0.0)) => Err(zero()),
            (Some(a), Some(b)) => Ok(Some((a / b).trunc() as i64)),
            _ => Ok(None),
        })
        .collect::<Result<Int64Array>>()?;
    Ok(Arc::new(quotients))
}

fn affix(args: &[ColumnarValue], rows: usize, test: fn(&str, &str) -> bool) -> Result<ArrayRef> {
    let values = text("startswith/endswith", args, 0, rows)?;
    let affixes = text("startswith/endswith", args, 1, rows)?;
    Ok(Arc::new(
        values
            .iter()
            .zip(affixes.iter())
            .map(|(value, affix)| Some(test(value?, affix?)))
            .collect::<BooleanArray>(),
    ))
}

fn date_number(
    args: &[ColumnarValue],
    rows: usize,
    part: fn(NaiveDate) -> i32,
) -> Result<ArrayRef> {
    let dates: Date32Array = argument_as("a date function", args, 0, rows, &DataType::Date32)?;
    Ok(Arc::new(
        dates
            .iter()
            .map(|days| days.map(|days| part(date_from_days(days))))
            .collect::<Int32Array>(),
    ))
}

fn try_to_date(args: &[ColumnarValue], rows: usize) -> Result<ArrayRef> {
    let pattern = if args.len() > 1 {
        literal_argument("try_to_date", args, 1)?
    } else {
        "yyyy-MM-dd".to_owned()
    };
    let format = spark_pattern_to_chrono(&pattern)
        .map_err(|m| DataFusionError::Plan(format!("try_to_date: {m}")))?;
    let values = text("try_to_date", args, 0, rows)?;
    Ok(Arc::new(
        values
            .iter()
            .map(|value| {
                NaiveDate::parse_from_str(value?, &format)
                    .ok()
                    .map(days_since_epoch)
            })
            .collect::<Date32Array>(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Java's `DecimalFormat("#,##0.00")` answers, rounding half-even (the last one as
    /// PySpark printed it in `tests/spark.rs`).
    #[test]
    fn numbers_are_grouped_and_rounded_half_even() {
        for (number, places, expected) in [
            ("1234.5", 2, "1,234.50"),
            ("1234567.891", 2, "1,234,567.89"),
            ("0.125", 2, "0.12"),
            ("0.135", 2, "0.14"),
            ("999.995", 2, "1,000.00"),
            ("-1234.5", 0, "-1,234"),
            ("-0.001", 2, "-0.00"),
            ("12", 0, "12"),
        ] {
            assert_eq!(
                group_thousands(number, places).as_deref(),
                Some(expected),
                "{number}"
            );
        }
    }
}
