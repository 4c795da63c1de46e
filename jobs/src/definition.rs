//! The job-definition model (`apiVersion: sluice/v1`), read from YAML with positions.
//!
//! A definition names its typed `params`, its `sources`, an ordered list of `steps`
//! applied to the main source (`input`), its `outputs` and Spark `conf`. Unknown fields
//! are errors; every YAML error names the file, line and column.

mod output;
mod quality;
mod source;
mod step;
mod types;
mod validate;
mod value;

pub use output::{OutputFormat, OutputSpec, WriteMode};
pub use quality::{QualitySpec, RuleAction, RuleSpec, Thresholds};
pub use source::{
    CsvOptions, FixedWidthOptions, MalformedMode, SchemaDrift, SourceFormat, SourceSpec,
};
pub use step::{
    CaseStyle, DedupeStep, DeriveStep, MaskMethod, MaskStep, NullsStep, ParseColumn,
    RegexReplaceStep, StandardizeStep, Step,
};
pub use types::{ColumnType, parse_byte_size, parse_column_type};
pub use value::{Literal, ParamSpec, ParamType, ParamValue, template_names};

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use crate::error::{JobError, Position, Result};

/// The only definition version this build reads.
pub const API_VERSION: &str = "sluice/v1";

/// A whole job definition.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Sluice job definition")]
pub struct JobDefinition {
    /// Always `sluice/v1`.
    #[serde(rename = "apiVersion")]
    pub api_version: ApiVersion,
    /// The job's name: letters, digits, `_` and `-`.
    pub name: String,
    /// What the job does, for people.
    #[serde(default)]
    pub description: Option<String>,
    /// Typed parameters, bound per run (`--param name=value`).
    #[serde(default)]
    pub params: BTreeMap<String, ParamSpec>,
    /// Named datasets the job reads.
    #[schemars(with = "BTreeMap<String, SourceSpec>")]
    pub sources: BTreeMap<String, Spanned<SourceSpec>>,
    /// The source the steps start from; may be left out when there is one source.
    #[serde(default)]
    pub input: Option<String>,
    /// Transformations applied in order to the input.
    #[serde(default)]
    #[schemars(with = "Vec<Step>")]
    pub steps: Vec<Spanned<Step>>,
    /// Where the result is written.
    #[schemars(with = "Vec<OutputSpec>")]
    pub outputs: Vec<Spanned<OutputSpec>>,
    /// Data-quality rules, their thresholds and the quarantine output.
    #[serde(default)]
    pub quality: Option<QualitySpec>,
    /// Columns holding PHI/PII whose values never leave the data: a failed cast names
    /// the row but withholds the value, and data-quality samples show `<masked>` (as for
    /// masked columns, which are sensitive too).
    #[serde(default)]
    pub sensitive: Vec<String>,
    /// Spark (`spark.*`), DataFusion (`datafusion.*`) and Ballista (`ballista.*`) settings.
    #[serde(default)]
    pub conf: BTreeMap<String, Literal>,
}

/// The definition format version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum ApiVersion {
    /// The first version.
    #[serde(rename = "sluice/v1")]
    V1,
}

impl JobDefinition {
    /// Reads a definition from YAML text. `origin` (a path or URI) is named in errors.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self> {
        let definition: JobDefinition =
            serde_saphyr::from_str(text).map_err(|err| syntax_error(&err, origin))?;
        definition.check(origin)?;
        Ok(definition)
    }

    /// Reads a definition from a file.
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| JobError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_yaml(&text, &path.display().to_string())
    }

    /// The source the steps start from.
    pub fn input_source(&self) -> Option<&str> {
        match &self.input {
            Some(name) => Some(name),
            None if self.sources.len() == 1 => self.sources.keys().next().map(String::as_str),
            None => None,
        }
    }
}

/// The JSON Schema of job definitions, for editors.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(JobDefinition)).unwrap_or_default()
}

pub(crate) fn position(origin: &str, location: &serde_saphyr::Location) -> Position {
    Position {
        origin: origin.to_owned(),
        line: location.line(),
        column: location.column(),
    }
}

fn syntax_error(err: &serde_saphyr::Error, origin: &str) -> JobError {
    let (line, column) = err
        .location()
        .map(|location| (location.line(), location.column()))
        .unwrap_or((0, 0));
    // The library's message carries a snippet of the file; the first line is the reason.
    let full = err.to_string();
    let message = full
        .lines()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("invalid YAML")
        .trim()
        .to_owned();
    JobError::Syntax {
        at: Position {
            origin: origin.to_owned(),
            line,
            column,
        },
        message,
    }
}
