//! Sluice's SQL functions for pharma commercial data, registered on the scheduler, on
//! every executor and in the embedded cluster (plans carry them by name):
//!
//! | function | result |
//! |---|---|
//! | `normalize_ndc(text)` | the NDC as 11 digits (5-4-2), from 4-4-2, 5-3-2, 5-4-1 or 11-digit forms; NULL when it is none of them |
//! | `npi_valid(text)` | whether a 10-digit NPI passes its check digit (Luhn over `80840` + the first 9 digits) |
//! | `zip5(text)` | the 5-digit US ZIP of `12345`, `12345-6789`, `123456789`, or a ZIP that lost its leading zeros |
//! | `us_state(text)` | the 2-letter code of a US state, DC or territory, from its code or name, any case |

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};

/// Every function Sluice adds.
pub fn sluice_scalar_functions() -> Vec<Arc<ScalarUDF>> {
    vec![
        text_function("normalize_ndc", DataType::Utf8, |v| {
            Value::Text(normalize_ndc(v))
        }),
        text_function("npi_valid", DataType::Boolean, |v| {
            Value::Flag(Some(npi_valid(v)))
        }),
        text_function("zip5", DataType::Utf8, |v| Value::Text(zip5(v))),
        text_function("us_state", DataType::Utf8, |v| Value::Text(us_state(v))),
    ]
}

enum Value {
    Text(Option<String>),
    Flag(Option<bool>),
}

/// A one-argument function over text; NULL in, NULL out.
fn text_function(
    name: &'static str,
    returns: DataType,
    apply: fn(&str) -> Value,
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
            _ => Arc::new(
                input
                    .iter()
                    .map(|value| match value.map(apply) {
                        Some(Value::Text(text)) => text,
                        _ => None,
                    })
                    .collect::<StringArray>(),
            ),
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
pub fn us_state(value: &str) -> Option<String> {
    let wanted = value
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_uppercase()
        .replace('.', "");
    STATES
        .iter()
        .find(|(code, name)| *code == wanted || *name == wanted)
        .map(|(code, _)| (*code).to_owned())
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
        assert_eq!(us_state(" ca ").as_deref(), Some("CA"));
        assert_eq!(us_state("new  york").as_deref(), Some("NY"));
        assert_eq!(us_state("D.C.").as_deref(), Some("DC"));
        assert_eq!(us_state("Narnia"), None);
    }
}
