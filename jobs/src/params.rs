//! Typed run parameters: bound from `name=value` text, used as typed SQL placeholders
//! (`$name`) and in path templates (`{{name}}`). A value is never pasted into SQL text.

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;
use datafusion::common::ParamValues;

use crate::definition::{JobDefinition, ParamType, ParamValue};
use crate::error::{JobError, Result};

/// All parameters of a run, typed and complete (defaults applied).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BoundParams {
    values: BTreeMap<String, ParamValue>,
    /// The params declared `type: path`: the only ones that may fill several segments.
    paths: BTreeSet<String>,
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
        let paths = definition
            .params
            .iter()
            .filter(|(_, spec)| spec.param_type == ParamType::Path)
            .map(|(name, _)| name.clone())
            .collect();
        Ok(Self { values, paths })
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

    /// Renders a mask step's key reference: values are pasted whole (a reference is
    /// `env:NAME` or `file:/path`, not a path template).
    pub fn render_text(&self, template: &str, field: &str) -> Result<String> {
        self.fill(template, field, false)
    }

    /// Replaces every `{{name}}` in `template` with the param's value. A value fills one
    /// path segment — no `/`, `\\`, `.` or `..` — unless its param is declared
    /// `type: path`, so `month=../../x` cannot move a registered job's output.
    pub fn render(&self, template: &str, field: &str) -> Result<String> {
        self.fill(template, field, true)
    }

    fn fill(&self, template: &str, field: &str, path: bool) -> Result<String> {
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
            let text = value.to_string();
            if path && !self.paths.contains(name) {
                check_segment(name, &text, field)?;
            }
            rendered.push_str(&text);
            rest = &after[end + 2..];
        }
        rendered.push_str(rest);
        Ok(rendered)
    }
}

/// Refuses a value that would fill more than one path segment, or climb out of one.
fn check_segment(name: &str, value: &str, field: &str) -> Result<()> {
    let several = value.contains(['/', '\\']) || matches!(value, "." | "..");
    if several || value.chars().any(char::is_control) {
        return Err(JobError::Param {
            name: name.to_owned(),
            message: format!(
                "`{value}` cannot fill a path segment of {field}: a segment \
                 holds no `/`, `\\`, `.`, `..` or control characters (declare the param \
                 `type: path` for a location)"
            ),
        });
    }
    Ok(())
}
