//! Literal values and typed params as a definition declares them, and the parsing of a
//! param's text by its type.

use chrono::NaiveDate;
use datafusion::scalar::ScalarValue;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{JobError, Result};

/// A scalar written in YAML.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Literal {
    /// `true` / `false`.
    Bool(bool),
    /// A whole number.
    Int(i64),
    /// A number with a fraction.
    Float(f64),
    /// Anything else.
    Text(String),
}

impl std::fmt::Display for Literal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Literal::Bool(v) => write!(f, "{v}"),
            Literal::Int(v) => write!(f, "{v}"),
            Literal::Float(v) => write!(f, "{v}"),
            Literal::Text(v) => f.write_str(v),
        }
    }
}

/// The type of a parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    /// Any text.
    String,
    /// A 64-bit integer.
    Int,
    /// A calendar date, `YYYY-MM-DD`.
    Date,
    /// A location — a folder, a file or an `s3://` prefix — for path templates. Only a
    /// `path` param may fill more than one segment of a path: it may hold `/` and a
    /// scheme, never a `..` segment.
    Path,
}

/// A declared parameter.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParamSpec {
    /// The parameter's type.
    #[serde(rename = "type")]
    pub param_type: ParamType,
    /// A run without this parameter is rejected (unless it has a default).
    #[serde(default)]
    pub required: bool,
    /// The value used when a run does not give one.
    #[serde(default)]
    pub default: Option<Literal>,
    /// What the parameter means.
    #[serde(default)]
    pub description: Option<String>,
}

/// One bound parameter value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamValue {
    /// Text.
    String(String),
    /// A 64-bit integer.
    Int(i64),
    /// A calendar date.
    Date(NaiveDate),
}

impl ParamValue {
    /// Parses `text` as a value of `param_type`, naming the param when it does not fit.
    pub fn parse(name: &str, param_type: ParamType, text: &str) -> Result<Self> {
        let fail = |expected: &str| JobError::Param {
            name: name.to_owned(),
            message: format!("`{text}` is not {expected}"),
        };
        Ok(match param_type {
            ParamType::String => ParamValue::String(text.to_owned()),
            ParamType::Path => {
                let climbs = text.split(['/', '\\']).any(|segment| segment == "..");
                if climbs || text.chars().any(char::is_control) {
                    return Err(fail("a location (no `..` segments or control characters)"));
                }
                ParamValue::String(text.to_owned())
            }
            ParamType::Int => ParamValue::Int(text.trim().parse().map_err(|_| fail("an int"))?),
            ParamType::Date => ParamValue::Date(
                NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
                    .map_err(|_| fail("a date (YYYY-MM-DD)"))?,
            ),
        })
    }

    /// The value as a DataFusion scalar, for placeholders.
    pub fn to_scalar(&self) -> ScalarValue {
        match self {
            ParamValue::String(value) => ScalarValue::Utf8(Some(value.clone())),
            ParamValue::Int(value) => ScalarValue::Int64(Some(*value)),
            ParamValue::Date(value) => {
                let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
                ScalarValue::Date32(Some((*value - epoch).num_days() as i32))
            }
        }
    }
}

impl std::fmt::Display for ParamValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParamValue::String(value) => f.write_str(value),
            ParamValue::Int(value) => write!(f, "{value}"),
            ParamValue::Date(value) => write!(f, "{}", value.format("%Y-%m-%d")),
        }
    }
}

/// The param names a `{{name}}` template uses.
pub fn template_names(template: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => {
                names.push(after[..end].trim().to_owned());
                rest = &after[end + 2..];
            }
            None => break,
        }
    }
    names
}
