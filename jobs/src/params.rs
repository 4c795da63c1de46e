//! Typed run parameters: bound from `name=value` text, used as typed SQL placeholders
//! (`$name`) and in path templates (`{{name}}`). A value is never pasted into SQL text.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use datafusion::common::ParamValues;
use datafusion::scalar::ScalarValue;

use crate::definition::{JobDefinition, ParamType};
use crate::error::{JobError, Result};

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

/// All parameters of a run, typed and complete (defaults applied).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BoundParams {
    values: BTreeMap<String, ParamValue>,
}

impl BoundParams {
    /// Binds raw `name=value` text to the definition's declared params: unknown names,
    /// missing required params and values of the wrong type are errors.
    pub fn bind(definition: &JobDefinition, raw: &BTreeMap<String, String>) -> Result<Self> {
        for name in raw.keys() {
            if !definition.params.contains_key(name) {
                let declared = definition
                    .params
                    .keys()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(JobError::Param {
                    name: name.clone(),
                    message: format!(
                        "job `{}` declares no such param (it has: {})",
                        definition.name,
                        if declared.is_empty() {
                            "none"
                        } else {
                            &declared
                        }
                    ),
                });
            }
        }
        let mut values = BTreeMap::new();
        for (name, spec) in &definition.params {
            let text = match (raw.get(name), &spec.default) {
                (Some(text), _) => text.clone(),
                (None, Some(default)) => default.to_string(),
                (None, None) if spec.required => {
                    return Err(JobError::Param {
                        name: name.clone(),
                        message: "is required and was not given (--param name=value)".into(),
                    });
                }
                (None, None) => continue,
            };
            values.insert(
                name.clone(),
                ParamValue::parse(name, spec.param_type, &text)?,
            );
        }
        Ok(Self { values })
    }

    /// The value of one param.
    pub fn get(&self, name: &str) -> Option<&ParamValue> {
        self.values.get(name)
    }

    /// The date params, by name.
    pub fn date_values(&self) -> BTreeMap<String, NaiveDate> {
        self.values
            .iter()
            .filter_map(|(name, value)| match value {
                ParamValue::Date(date) => Some((name.clone(), *date)),
                _ => None,
            })
            .collect()
    }

    /// The params as text, for run records.
    pub fn to_text_map(&self) -> BTreeMap<String, String> {
        self.values
            .iter()
            .map(|(name, value)| (name.clone(), value.to_string()))
            .collect()
    }

    /// The params as named placeholder values (`$name`).
    pub fn placeholder_values(&self) -> ParamValues {
        ParamValues::Map(
            self.values
                .iter()
                .map(|(name, value)| (name.clone(), value.to_scalar().into()))
                .collect(),
        )
    }

    /// Replaces every `{{name}}` in `template` with the param's value.
    pub fn render(&self, template: &str, field: &str) -> Result<String> {
        let mut rendered = String::with_capacity(template.len());
        let mut rest = template;
        while let Some(start) = rest.find("{{") {
            rendered.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after.find("}}").ok_or_else(|| JobError::Param {
                name: field.to_owned(),
                message: format!("unclosed `{{{{` in `{template}`"),
            })?;
            let name = after[..end].trim();
            let value = self.values.get(name).ok_or_else(|| JobError::Param {
                name: name.to_owned(),
                message: format!("{field} uses `{{{{{name}}}}}` but the run has no value for it"),
            })?;
            rendered.push_str(&value.to_string());
            rest = &after[end + 2..];
        }
        rendered.push_str(rest);
        Ok(rendered)
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
