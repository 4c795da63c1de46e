//! The job-definition model (`apiVersion: sluice/v1`), read from YAML with positions.
//!
//! A definition names its typed `params`, its `sources`, an ordered list of `steps`
//! applied to the main source (`input`), its `outputs` and Spark `conf`. Unknown fields
//! are errors; every YAML error names the file, line and column.

use std::collections::{BTreeMap, BTreeSet};

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

/// File formats a source can be read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SourceFormat {
    /// Apache Parquet.
    Parquet,
    /// Delimited text.
    Csv,
    /// Newline-delimited JSON.
    Json,
}

/// A dataset the job reads.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// The file format.
    pub format: SourceFormat,
    /// A directory, file or glob; `{{param}}` is replaced by the param's value. Hive-style
    /// `key=value` folders below it become typed columns.
    pub path: String,
    /// Options for CSV sources.
    #[serde(default)]
    pub csv: Option<CsvOptions>,
    /// Types of Hive partition columns, where the inferred type (date, int, else
    /// string) is not the one wanted.
    #[serde(default)]
    pub partitions: BTreeMap<String, ColumnType>,
    /// Spark's `basePath`: when `path` points inside a partitioned dataset (say
    /// `…/claims/fill_month={{month}}`), the dataset's root (`…/claims`). The `key=value`
    /// folders between the two still become columns, and only `path` is listed and read.
    #[serde(default)]
    pub base_path: Option<String>,
}

/// How CSV files are read. Like Spark without `inferSchema`, every column is read as a
/// string unless `infer_schema` is set; cast them in a step.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CsvOptions {
    /// The first line holds column names.
    #[serde(default = "default_true")]
    pub header: bool,
    /// The field separator, one character.
    #[serde(default = "default_delimiter")]
    pub delimiter: String,
    /// The quote character, one character.
    #[serde(default = "default_quote")]
    pub quote: String,
    /// Values read as null (an empty field is always null).
    #[serde(default)]
    pub null_values: Vec<String>,
    /// Infer column types from the data instead of reading strings.
    #[serde(default)]
    pub infer_schema: bool,
}

impl Default for CsvOptions {
    fn default() -> Self {
        Self {
            header: true,
            delimiter: default_delimiter(),
            quote: default_quote(),
            null_values: Vec::new(),
            infer_schema: false,
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_delimiter() -> String {
    ",".to_owned()
}
fn default_quote() -> String {
    "\"".to_owned()
}

/// Column types, by their Spark SQL names.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct ColumnType(
    /// `string`, `int`, `bigint`, `smallint`, `tinyint`, `double`, `float`, `boolean`,
    /// `date`, `timestamp`, or `decimal(p,s)`.
    pub String,
);

/// One transformation. Written as a one-key map: `- filter: "quantity > 0"`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// Keep these columns, in this order.
    Select(Vec<String>),
    /// Rename columns: `{old: new}`.
    Rename(BTreeMap<String, String>),
    /// Remove these columns.
    Drop(Vec<String>),
    /// Add (or replace) a column computed by a Spark SQL expression.
    Derive(DeriveStep),
    /// Keep rows for which the Spark SQL expression is true. Params are `$name`.
    Filter(String),
    /// Cast columns to types: `{quantity: int, fill_date: date}`. Under Spark's ANSI
    /// rules a value that does not convert fails the run.
    Cast(BTreeMap<String, ColumnType>),
    /// Trim whitespace from these string columns (all string columns when empty).
    Trim(Vec<String>),
    /// Keep one row per key: the first by `order_by`.
    Dedupe(DedupeStep),
    /// A Spark SQL query over the previous result (`input`) and the sources by name.
    Sql(String),
}

impl Step {
    /// The step's kind, as written in YAML.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Select(_) => "select",
            Step::Rename(_) => "rename",
            Step::Drop(_) => "drop",
            Step::Derive(_) => "derive",
            Step::Filter(_) => "filter",
            Step::Cast(_) => "cast",
            Step::Trim(_) => "trim",
            Step::Dedupe(_) => "dedupe",
            Step::Sql(_) => "sql",
        }
    }
}

/// `derive: {column: fill_month, expr: "date_format(fill_date, 'yyyy-MM')"}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeriveStep {
    /// The new column's name.
    pub column: String,
    /// A Spark SQL expression over the current columns and `$params`.
    pub expr: String,
}

/// `dedupe: {keys: [claim_id], order_by: ["adjudicated_at desc"]}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DedupeStep {
    /// Columns that identify a row.
    pub keys: Vec<String>,
    /// The row kept is the first by this ordering: `column [asc|desc] [nulls first|last]`.
    /// Like Spark, nulls sort first in ascending order unless told otherwise.
    #[serde(default)]
    pub order_by: Vec<String>,
}

/// Output file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// Snappy-compressed Apache Parquet, as Spark writes it.
    #[default]
    Parquet,
}

/// How an output treats data already at its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WriteMode {
    /// Replace the partitions this run produces; leave the others.
    #[default]
    OverwritePartitions,
    /// Add files beside what is there.
    Append,
    /// Refuse to run when the output already holds data.
    ErrorIfExists,
}

/// Where and how a result is written.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// The output's name, unique within the job.
    pub name: String,
    /// The output directory; `{{param}}` templates allowed.
    pub path: String,
    /// The file format.
    #[serde(default)]
    pub format: OutputFormat,
    /// Columns that become Hive-style `key=value` folders.
    #[serde(default)]
    pub partition_by: Vec<String>,
    /// What to do with data already there.
    #[serde(default)]
    pub mode: WriteMode,
    /// Roll to a new file past this many bytes (`128MiB`, `1GiB`, or a number).
    #[serde(default)]
    pub target_file_size: Option<Literal>,
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

    /// Checks what can be checked without reading any data.
    fn check(&self, origin: &str) -> Result<()> {
        let top = |field: &str, message: String| JobError::Invalid {
            at: Position {
                origin: origin.to_owned(),
                line: 0,
                column: 0,
            },
            field: field.to_owned(),
            message,
        };
        if !is_name(&self.name) {
            return Err(top(
                "name",
                format!(
                    "`{}` is not a job name (letters, digits, `_` and `-`)",
                    self.name
                ),
            ));
        }
        for name in self.params.keys() {
            if !is_identifier(name) {
                return Err(top(
                    &format!("params.{name}"),
                    "param names are letters, digits and `_`, starting with a letter".into(),
                ));
            }
        }
        for (name, spec) in &self.params {
            if let Some(default) = &spec.default {
                crate::params::ParamValue::parse(name, spec.param_type, &default.to_string())?;
            }
        }
        if self.sources.is_empty() {
            return Err(top("sources", "a job needs at least one source".into()));
        }
        for (name, source) in &self.sources {
            let at = position(origin, &source.referenced);
            if !is_identifier(name) {
                return Err(JobError::Invalid {
                    at,
                    field: format!("sources.{name}"),
                    message: "source names are letters, digits and `_`, starting with a letter"
                        .into(),
                });
            }
            self.check_templates(&source.value.path, &format!("sources.{name}.path"), &at)?;
            if let Some(base) = &source.value.base_path {
                self.check_templates(base, &format!("sources.{name}.base_path"), &at)?;
            }
            if let Some(csv) = &source.value.csv {
                for (field, value) in [("delimiter", &csv.delimiter), ("quote", &csv.quote)] {
                    if value.len() != 1 {
                        return Err(JobError::Invalid {
                            at: at.clone(),
                            field: format!("sources.{name}.csv.{field}"),
                            message: format!("must be one ASCII character, not `{value}`"),
                        });
                    }
                }
            } else if source.value.format != SourceFormat::Csv {
                // fine: csv options only apply to csv
            }
        }
        match &self.input {
            Some(input) if !self.sources.contains_key(input) => {
                return Err(top(
                    "input",
                    format!(
                        "`{input}` is not one of the sources ({})",
                        self.source_names()
                    ),
                ));
            }
            None if self.sources.len() > 1 => {
                return Err(top(
                    "input",
                    format!(
                        "the job has several sources ({}); name the one the steps start from",
                        self.source_names()
                    ),
                ));
            }
            _ => {}
        }
        for (index, step) in self.steps.iter().enumerate() {
            let at = position(origin, &step.referenced);
            let field = format!("steps[{index}].{}", step.value.kind());
            let invalid = |message: String| JobError::Invalid {
                at: at.clone(),
                field: field.clone(),
                message,
            };
            match &step.value {
                Step::Select(columns) | Step::Drop(columns) if columns.is_empty() => {
                    return Err(invalid("names no columns".into()));
                }
                Step::Dedupe(dedupe) if dedupe.keys.is_empty() => {
                    return Err(invalid("`keys` must name at least one column".into()));
                }
                Step::Cast(columns) => {
                    for (column, ty) in columns {
                        crate::types::parse_column_type(&ty.0)
                            .map_err(|message| invalid(format!("column `{column}`: {message}")))?;
                    }
                }
                _ => {}
            }
        }
        if self.outputs.is_empty() {
            return Err(top("outputs", "a job needs at least one output".into()));
        }
        let mut names = BTreeSet::new();
        for (index, output) in self.outputs.iter().enumerate() {
            let at = position(origin, &output.referenced);
            let spec = &output.value;
            if !names.insert(spec.name.as_str()) {
                return Err(JobError::Invalid {
                    at,
                    field: format!("outputs[{index}].name"),
                    message: format!("output name `{}` is used twice", spec.name),
                });
            }
            self.check_templates(&spec.path, &format!("outputs[{index}].path"), &at)?;
            if let Some(size) = &spec.target_file_size {
                crate::types::parse_byte_size(size).map_err(|message| JobError::Invalid {
                    at: at.clone(),
                    field: format!("outputs[{index}].target_file_size"),
                    message,
                })?;
            }
        }
        Ok(())
    }

    fn check_templates(&self, template: &str, field: &str, at: &Position) -> Result<()> {
        for name in crate::params::template_names(template) {
            if !self.params.contains_key(&name) {
                return Err(JobError::Invalid {
                    at: at.clone(),
                    field: field.to_owned(),
                    message: format!("`{{{{{name}}}}}` names no declared param"),
                });
            }
        }
        Ok(())
    }

    fn source_names(&self) -> String {
        self.sources
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ")
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

fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

pub(crate) fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
