//! Claims identifiers and codes: NDC normalization, NPI check digits, ZIP codes and US
//! state names.

use std::collections::HashMap;
use std::sync::LazyLock;

use crate::functions::collapse_whitespace;

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

/// The first three digits of a US ZIP (HIPAA's safe-harbor generalization), or `None`
/// when the value is not a ZIP.
pub fn zip3(value: &str) -> Option<String> {
    zip5(value).map(|zip| zip[..3].to_owned())
}
