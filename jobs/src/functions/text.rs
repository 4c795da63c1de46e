//! Tolerant typing of landed text: dates in several Spark datetime patterns, numbers
//! with thousands separators, currency signs or accounting parentheses. A value that
//! does not parse gives `None`, which the `parse` step turns into a data-quality
//! violation of its row (never a crash, never a silent null).

use crate::functions::Cow;
use chrono::{NaiveDate, NaiveDateTime};

/// A Spark datetime pattern (`yyyy-MM-dd`, `MM/dd/yyyy`, `dd-MMM-yyyy`, `yyyyMMdd`,
/// `yyyy-MM-dd HH:mm:ss`) translated to a chrono format string.
pub fn spark_pattern_to_chrono(pattern: &str) -> Result<String, String> {
    translate(pattern, false)
}

/// A Spark datetime pattern as a chrono format for printing: as
/// [`spark_pattern_to_chrono`], except that one-letter fields (`M`, `d`, `H`) print
/// without padding and fractions print as many digits as the pattern has `S`s.
pub fn spark_pattern_to_chrono_format(pattern: &str) -> Result<String, String> {
    translate(pattern, true)
}

fn translate(pattern: &str, for_printing: bool) -> Result<String, String> {
    let mut out = String::new();
    let chars: Vec<char> = pattern.chars().collect();
    let mut index = 0;
    while index < chars.len() {
        let c = chars[index];
        if c == '\'' {
            // Quoted literal text; '' is a quote.
            index += 1;
            while index < chars.len() && chars[index] != '\'' {
                push_literal(&mut out, chars[index]);
                index += 1;
            }
            if index == chars.len() {
                return Err(format!("`{pattern}`: unclosed quote"));
            }
            if index + 1 == chars.len() || chars[index + 1] != '\'' {
                index += 1;
                continue;
            }
            push_literal(&mut out, '\'');
            index += 2;
            continue;
        }
        if !c.is_ascii_alphabetic() {
            push_literal(&mut out, c);
            index += 1;
            continue;
        }
        let mut run = 1;
        while index + run < chars.len() && chars[index + run] == c {
            run += 1;
        }
        let spec = match (c, run, for_printing) {
            ('M', 1, true) => "%-m",
            ('d', 1, true) => "%-d",
            ('H', 1, true) => "%-H",
            ('S', 1..=3, true) => "%3f",
            ('S', 4..=6, true) => "%6f",
            ('S', _, true) => "%9f",
            _ => "",
        };
        if !spec.is_empty() {
            out.push_str(spec);
            index += run;
            continue;
        }
        let spec = match (c, run) {
            ('y', 2) => "%y",
            ('y', _) => "%Y",
            ('M', 1 | 2) => "%m",
            ('M', 3) => "%b",
            ('M', _) => "%B",
            ('d', 1 | 2) => "%d",
            ('H', 1 | 2) => "%H",
            ('h', 1 | 2) => "%I",
            ('m', 1 | 2) => "%M",
            ('s', 1 | 2) => "%S",
            ('S', 1..=9) => "%f",
            ('a', 1) => "%p",
            ('E', 1..=3) => "%a",
            ('E', _) => "%A",
            _ => {
                return Err(format!(
                    "`{pattern}`: `{}` is not a supported Spark datetime field",
                    c.to_string().repeat(run)
                ));
            }
        };
        out.push_str(spec);
        index += run;
    }
    Ok(out)
}

fn push_literal(out: &mut String, c: char) {
    if c == '%' {
        out.push_str("%%");
    } else {
        out.push(c);
    }
}

/// The first of `formats` (chrono) that parses the whole of `text` as a date.
pub fn parse_date(text: &str, formats: &[String]) -> Option<NaiveDate> {
    let text = text.trim();
    formats
        .iter()
        .find_map(|format| NaiveDate::parse_from_str(text, format).ok())
}

/// The first of `formats` (chrono) that parses the whole of `text` as a date and time;
/// a date-only format gives midnight.
pub fn parse_timestamp(text: &str, formats: &[String]) -> Option<NaiveDateTime> {
    let text = text.trim();
    formats.iter().find_map(|format| {
        NaiveDateTime::parse_from_str(text, format)
            .ok()
            .or_else(|| {
                NaiveDate::parse_from_str(text, format)
                    .ok()
                    .and_then(|date| date.and_hms_opt(0, 0, 0))
            })
    })
}

/// A number as landed text, canonical: `$1,234.50` → `1234.50`, `(12.00)` → `-12.00`,
/// ` 1 234 ` → `1234`, `€7` → `7`. `None` when what is left is not a decimal number
/// (so `12.3.4`, `1,23`, `abc` and the empty string are rejected).
pub fn clean_number(text: &str) -> Option<String> {
    let mut text = text.trim();
    let mut negative = false;
    if let Some(inner) = text.strip_prefix('(').and_then(|t| t.strip_suffix(')')) {
        negative = true;
        text = inner.trim();
    }
    if let Some(rest) = text.strip_prefix('-') {
        negative = !negative;
        text = rest.trim_start();
    } else if let Some(rest) = text.strip_prefix('+') {
        text = rest.trim_start();
    }
    let text = text
        .trim_start_matches(['$', '€', '£'])
        .trim_end_matches(['$', '€', '£'])
        .trim();
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (text, None),
    };
    // Thousands separators must group by three: `1,234,567`, `1 234`.
    let groups: Vec<&str> = whole.split([',', ' ']).collect();
    let grouped_ok = groups.len() == 1
        || (groups.first().is_some_and(|g| (1..=3).contains(&g.len()))
            && groups[1..].iter().all(|g| g.len() == 3));
    let digits: String = groups.concat();
    let fraction_ok =
        fraction.is_none_or(|f| !f.is_empty() && f.chars().all(|c| c.is_ascii_digit()));
    if digits.is_empty()
        || !digits.chars().all(|c| c.is_ascii_digit())
        || !grouped_ok
        || !fraction_ok
    {
        return None;
    }
    let mut number = String::with_capacity(digits.len() + 4);
    if negative {
        number.push('-');
    }
    number.push_str(&digits);
    if let Some(fraction) = fraction {
        number.push('.');
        number.push_str(fraction);
    }
    Some(number)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn formats(patterns: &[&str]) -> Vec<String> {
        patterns
            .iter()
            .map(|p| spark_pattern_to_chrono(p).unwrap())
            .collect()
    }

    #[test]
    fn spark_patterns_parse_the_dates_they_describe() {
        let formats = formats(&["yyyy-MM-dd", "MM/dd/yyyy", "dd-MMM-yyyy", "yyyyMMdd"]);
        let expected = NaiveDate::from_ymd_opt(2024, 3, 7);
        for text in [
            "2024-03-07",
            "03/07/2024",
            "3/7/2024",
            "07-Mar-2024",
            "20240307",
            " 2024-03-07 ",
        ] {
            assert_eq!(parse_date(text, &formats), expected, "{text}");
        }
        for text in [
            "2024-13-07",
            "2024-02-30",
            "31/31/2024",
            "not a date",
            "",
            "2024-03-07x",
        ] {
            assert_eq!(parse_date(text, &formats), None, "{text}");
        }
        assert!(spark_pattern_to_chrono("yyyy-QQ").is_err());
        assert_eq!(spark_pattern_to_chrono_format("yyyy-MM").unwrap(), "%Y-%m");
        assert_eq!(
            spark_pattern_to_chrono_format("M/d/yy HH:mm:ss.SSS").unwrap(),
            "%-m/%-d/%y %H:%M:%S.%3f"
        );
        assert_eq!(
            spark_pattern_to_chrono("yyyy-MM-dd'T'HH:mm:ss").unwrap(),
            "%Y-%m-%dT%H:%M:%S"
        );
    }

    #[test]
    fn timestamps_parse_with_or_without_a_time() {
        let formats = formats(&["yyyy-MM-dd HH:mm:ss", "yyyy-MM-dd"]);
        let at = parse_timestamp("2024-03-07 10:11:12", &formats).unwrap();
        assert_eq!(at.to_string(), "2024-03-07 10:11:12");
        let midnight = parse_timestamp("2024-03-07", &formats).unwrap();
        assert_eq!(midnight.to_string(), "2024-03-07 00:00:00");
    }

    #[test]
    fn numbers_lose_their_decorations_not_their_value() {
        assert_eq!(clean_number("$1,234.50").as_deref(), Some("1234.50"));
        assert_eq!(clean_number("(12.00)").as_deref(), Some("-12.00"));
        assert_eq!(clean_number("-$5").as_deref(), Some("-5"));
        assert_eq!(clean_number(" 1 234 ").as_deref(), Some("1234"));
        assert_eq!(clean_number("€7").as_deref(), Some("7"));
        assert_eq!(clean_number("42").as_deref(), Some("42"));
        for bad in ["12.3.4", "1,23", "abc", "", "$", "1.", "12a"] {
            assert_eq!(clean_number(bad), None, "{bad}");
        }
    }
}
