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
    /// Data-quality rules, their thresholds and the quarantine output.
    #[serde(default)]
    pub quality: Option<QualitySpec>,
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
    /// Empty strings and sentinel values (`N/A`, `UNKNOWN`, `9999-12-31`) become NULL.
    Nulls(NullsStep),
    /// Case normalization: `{state: upper, payer: title}`.
    Case(BTreeMap<String, CaseStyle>),
    /// Trim and make every run of inner whitespace one space (all string columns when
    /// empty).
    CollapseWhitespace(Vec<String>),
    /// Replace what a regular expression matches (Spark's `regexp_replace`).
    RegexReplace(RegexReplaceStep),
    /// Tolerant typing: `{fill_date: {type: date, formats: [yyyy-MM-dd, MM/dd/yyyy]},
    /// paid_amount: decimal(12,2)}`. A non-NULL value that does not parse is a
    /// data-quality violation of its row (rule `<column>_parses`, quarantined unless the
    /// entry says otherwise), not an error and not a silent NULL.
    Parse(BTreeMap<String, ParseColumn>),
    /// Standardization through a mapping table: looks `column` up in a reference
    /// source's `key` column and writes its `value` into `into` (NULL when unmapped).
    Standardize(StandardizeStep),
    /// Masks PHI/PII: `{key: "{{mask_key}}", columns: {patient_id: tokenize}}`.
    Mask(MaskStep),
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
            Step::Nulls(_) => "nulls",
            Step::Case(_) => "case",
            Step::CollapseWhitespace(_) => "collapse_whitespace",
            Step::RegexReplace(_) => "regex_replace",
            Step::Parse(_) => "parse",
            Step::Standardize(_) => "standardize",
            Step::Mask(_) => "mask",
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

/// `nulls: {values: [N/A, UNKNOWN, "9999-12-31"], columns: [...]}`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NullsStep {
    /// String columns to normalize; all string columns when left out.
    #[serde(default)]
    pub columns: Vec<String>,
    /// Sentinels that mean "no value", compared after trimming and ignoring case. Empty
    /// and blank strings always become NULL.
    #[serde(default)]
    pub values: Vec<String>,
}

/// How `case` rewrites a string column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CaseStyle {
    /// `UPPER`.
    Upper,
    /// `lower`.
    Lower,
    /// `Title Case` (Spark's `initcap`).
    Title,
}

/// `regex_replace: {column: ndc, pattern: "[^0-9-]", replacement: ""}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegexReplaceStep {
    /// The string column.
    pub column: String,
    /// A regular expression (Rust `regex` syntax, which Spark's Java patterns mostly share).
    pub pattern: String,
    /// The replacement; `$1` refers to a group.
    #[serde(default)]
    pub replacement: String,
}

/// One column of a `parse` step: a type, or a type with options.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ParseColumn {
    /// `paid_amount: decimal(12,2)`.
    Type(ColumnType),
    /// `fill_date: {type: date, formats: [...]}`.
    Full(ParseSpec),
}

impl ParseColumn {
    /// The options, with defaults for the short form.
    pub fn spec(&self) -> ParseSpec {
        match self {
            ParseColumn::Type(ty) => ParseSpec {
                column_type: ty.clone(),
                formats: Vec::new(),
                rule: None,
                action: None,
            },
            ParseColumn::Full(spec) => spec.clone(),
        }
    }
}

/// How a column is parsed.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParseSpec {
    /// The type to parse into.
    #[serde(rename = "type")]
    pub column_type: ColumnType,
    /// Spark datetime patterns tried in order, for dates and timestamps (default
    /// `yyyy-MM-dd`, plus `yyyy-MM-dd HH:mm:ss` for timestamps).
    #[serde(default)]
    pub formats: Vec<String>,
    /// The rule name violations are reported under (default `<column>_parses`).
    #[serde(default)]
    pub rule: Option<String>,
    /// What a value that does not parse does to its row (default `quarantine`).
    #[serde(default)]
    pub action: Option<RuleAction>,
}

/// `standardize: {column: payer, reference: payer_aliases, key: alias, value: payer_id,
/// into: payer_id}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StandardizeStep {
    /// The column whose values are looked up.
    pub column: String,
    /// The source holding the mapping table.
    pub reference: String,
    /// The mapping table's column matched against `column`.
    pub key: String,
    /// The mapping table's column written into `into`.
    pub value: String,
    /// The column that receives the standard value (default: `column` itself).
    #[serde(default)]
    pub into: Option<String>,
}

/// `mask: {key: "{{mask_key}}", columns: {patient_id: tokenize, birth_date: generalize_year}}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MaskStep {
    /// The key of `hmac_sha256` and `tokenize`, by reference: `env:NAME` or
    /// `file:/path` (a `{{param}}` template may give it). Never the key itself.
    #[serde(default)]
    pub key: Option<String>,
    /// The masking of each column.
    pub columns: BTreeMap<String, MaskMethod>,
}

/// How a column is masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MaskMethod {
    /// HMAC-SHA256 under the key, as 64 hex digits.
    HmacSha256,
    /// A deterministic token under the key (`tok_…`): the same value gives the same
    /// token in every dataset, so joins still work.
    Tokenize,
    /// `REDACTED` (NULL stays NULL).
    Redact,
    /// A date generalized to the first day of its month.
    GeneralizeMonth,
    /// A date generalized to the first day of its year.
    GeneralizeYear,
    /// A US ZIP generalized to its first three digits.
    Zip3,
}

impl MaskMethod {
    /// True when the method needs the key.
    pub fn is_keyed(self) -> bool {
        matches!(self, MaskMethod::HmacSha256 | MaskMethod::Tokenize)
    }
}

/// What a broken rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuleAction {
    /// The run fails (nothing is committed).
    Fail,
    /// The row goes to the quarantine output instead of the outputs.
    Quarantine,
    /// The row stays; the run records a warning.
    Warn,
}

impl RuleAction {
    /// The action as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleAction::Fail => "fail",
            RuleAction::Quarantine => "quarantine",
            RuleAction::Warn => "warn",
        }
    }
}

/// `quality:` — rules checked in the same pass that writes the outputs.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QualitySpec {
    /// Columns that identify a row, shown beside failing values in the report.
    #[serde(default)]
    pub row_key: Vec<String>,
    /// The rules, evaluated on the rows the steps produce.
    #[serde(default)]
    #[schemars(with = "Vec<RuleSpec>")]
    pub rules: Vec<Spanned<RuleSpec>>,
    /// When quarantining too much fails the run.
    #[serde(default)]
    pub thresholds: Thresholds,
    /// Where quarantined rows are written (required when a rule quarantines).
    #[serde(default)]
    pub quarantine: Option<QuarantineSpec>,
    /// Failing values kept per rule in the report (default 5).
    #[serde(default)]
    pub samples: Option<usize>,
}

/// Limits on quarantined rows; past one the run fails with a data-quality error.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Fail when more rows than this are quarantined.
    #[serde(default)]
    pub max_quarantined_rows: Option<u64>,
    /// Fail when more than this percentage (0–100) of the rows checked is quarantined.
    #[serde(default)]
    pub max_quarantined_percent: Option<f64>,
}

/// The quarantine output. Its rows are the rows the steps produced (masked columns
/// masked), plus `_dq_rules` (the names of every rule the row broke), `_dq_run_id` and
/// `_dq_source_file`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QuarantineSpec {
    /// The directory; `{{param}}` templates allowed.
    pub path: String,
    /// Columns that become Hive-style folders.
    #[serde(default)]
    pub partition_by: Vec<String>,
    /// What to do with data already there.
    #[serde(default)]
    pub mode: WriteMode,
    /// Roll to a new file past this size.
    #[serde(default)]
    pub target_file_size: Option<Literal>,
}

/// One data-quality rule: a name, exactly one check, and an action.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// The rule's name, shown in reports and in quarantined rows' `_dq_rules`.
    pub name: String,
    /// What a broken rule does (row rules default to `quarantine`, `row_count` and
    /// `freshness` to `fail`).
    #[serde(default)]
    pub action: Option<RuleAction>,
    /// These columns are not NULL.
    #[serde(default)]
    pub not_null: Option<Vec<String>>,
    /// No two rows share these columns' values.
    #[serde(default)]
    pub unique: Option<UniqueCheck>,
    /// The column holds one of these values.
    #[serde(default)]
    pub accepted_values: Option<AcceptedValuesCheck>,
    /// The column is within bounds (inclusive).
    #[serde(default)]
    pub range: Option<RangeCheck>,
    /// The column matches a regular expression.
    #[serde(default)]
    pub regex: Option<RegexCheck>,
    /// The column's value exists in a reference source.
    #[serde(default)]
    pub referential: Option<ReferentialCheck>,
    /// The number of rows checked is within bounds.
    #[serde(default)]
    pub row_count: Option<RowCountCheck>,
    /// The newest date is recent enough.
    #[serde(default)]
    pub freshness: Option<FreshnessCheck>,
    /// A Spark SQL boolean expression that holds for every row (NULL counts as holding).
    #[serde(default)]
    pub expr: Option<String>,
}

impl RuleSpec {
    /// The checks the rule names, by kind.
    pub fn kinds(&self) -> Vec<&'static str> {
        let mut kinds = Vec::new();
        let present = [
            (self.not_null.is_some(), "not_null"),
            (self.unique.is_some(), "unique"),
            (self.accepted_values.is_some(), "accepted_values"),
            (self.range.is_some(), "range"),
            (self.regex.is_some(), "regex"),
            (self.referential.is_some(), "referential"),
            (self.row_count.is_some(), "row_count"),
            (self.freshness.is_some(), "freshness"),
            (self.expr.is_some(), "expr"),
        ];
        for (is_present, kind) in present {
            if is_present {
                kinds.push(kind);
            }
        }
        kinds
    }

    /// True for checks over the whole dataset rather than each row.
    pub fn is_dataset_check(&self) -> bool {
        self.row_count.is_some() || self.freshness.is_some()
    }

    /// The action, with the default for the kind of check.
    pub fn effective_action(&self) -> RuleAction {
        self.action.unwrap_or(if self.is_dataset_check() {
            RuleAction::Fail
        } else {
            RuleAction::Quarantine
        })
    }
}

/// `unique: {columns: [claim_id], keep: ["adjudicated_at desc"]}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UniqueCheck {
    /// The key columns. Rows with a NULL key column are not checked.
    pub columns: Vec<String>,
    /// With an ordering, the first row of each key passes and the others break the
    /// rule; without one, every row of a repeated key breaks it.
    #[serde(default)]
    pub keep: Vec<String>,
}

/// `accepted_values: {column: state, values: [CA, TX]}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptedValuesCheck {
    /// The column.
    pub column: String,
    /// The values allowed (NULL is not checked).
    pub values: Vec<Literal>,
}

/// `range: {column: paid_amount, min: 0, max: 50000}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RangeCheck {
    /// The column.
    pub column: String,
    /// The smallest value allowed.
    #[serde(default)]
    pub min: Option<Literal>,
    /// The largest value allowed.
    #[serde(default)]
    pub max: Option<Literal>,
}

/// `regex: {column: ndc, pattern: "^[0-9]{5}-[0-9]{4}-[0-9]{2}$"}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegexCheck {
    /// The column (read as text).
    pub column: String,
    /// The pattern a value must match somewhere (anchor it with `^…$` for all of it).
    pub pattern: String,
}

/// `referential: {column: ndc11, reference: products, key: ndc11}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReferentialCheck {
    /// The column checked.
    pub column: String,
    /// The source holding the valid values.
    pub reference: String,
    /// Its column of valid values.
    pub key: String,
}

/// `row_count: {min: 1000}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RowCountCheck {
    /// Fewest rows allowed.
    #[serde(default)]
    pub min: Option<u64>,
    /// Most rows allowed.
    #[serde(default)]
    pub max: Option<u64>,
}

/// `freshness: {column: fill_date, max_age_days: 45, as_of: "$run_date"}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FreshnessCheck {
    /// A date or timestamp column.
    pub column: String,
    /// The newest value may be at most this many days before `as_of`.
    pub max_age_days: u32,
    /// The run date: `$param` (a date param) or `YYYY-MM-DD`; today (UTC) when left out.
    #[serde(default)]
    pub as_of: Option<String>,
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
                Step::Parse(columns) => {
                    for (column, entry) in columns {
                        let spec = entry.spec();
                        crate::types::parse_column_type(&spec.column_type.0)
                            .map_err(|message| invalid(format!("column `{column}`: {message}")))?;
                        for format in &spec.formats {
                            crate::parsing::spark_pattern_to_chrono(format).map_err(|message| {
                                invalid(format!("column `{column}`: {message}"))
                            })?;
                        }
                        if let Some(rule) = &spec.rule
                            && !is_identifier(rule)
                        {
                            return Err(invalid(format!(
                                "column `{column}`: rule names are letters, digits and `_`"
                            )));
                        }
                    }
                }
                Step::RegexReplace(replace) => {
                    regex::Regex::new(&replace.pattern)
                        .map_err(|err| invalid(format!("pattern `{}`: {err}", replace.pattern)))?;
                }
                Step::Standardize(standardize)
                    if !self.sources.contains_key(&standardize.reference) =>
                {
                    return Err(invalid(format!(
                        "reference `{}` is not one of the sources ({})",
                        standardize.reference,
                        self.source_names()
                    )));
                }
                Step::Mask(mask) => {
                    if mask.columns.is_empty() {
                        return Err(invalid("names no columns".into()));
                    }
                    let keyed = mask.columns.values().any(|method| method.is_keyed());
                    match &mask.key {
                        None if keyed => {
                            return Err(invalid(
                                "hmac_sha256 and tokenize need `key` (`env:NAME` or `file:/path`)"
                                    .into(),
                            ));
                        }
                        Some(key) => {
                            self.check_templates(key, &format!("{field}.key"), &at)?;
                            if crate::params::template_names(key).is_empty() {
                                crate::masking::SecretRef::parse(key).map_err(&invalid)?;
                            }
                        }
                        None => {}
                    }
                }
                _ => {}
            }
        }
        self.check_quality(origin)?;
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

    /// Rule names, checks and actions; a quarantine output when anything quarantines.
    fn check_quality(&self, origin: &str) -> Result<()> {
        let top = |field: String, message: String| JobError::Invalid {
            at: Position {
                origin: origin.to_owned(),
                line: 0,
                column: 0,
            },
            field,
            message,
        };
        let mut names: BTreeSet<String> = BTreeSet::new();
        let mut quarantines = false;
        for (index, step) in self.steps.iter().enumerate() {
            if let Step::Parse(columns) = &step.value {
                for (column, entry) in columns {
                    let spec = entry.spec();
                    let name = spec
                        .rule
                        .clone()
                        .unwrap_or_else(|| format!("{column}_parses"));
                    if !names.insert(name.clone()) {
                        return Err(JobError::Invalid {
                            at: position(origin, &step.referenced),
                            field: format!("steps[{index}].parse.{column}"),
                            message: format!("rule name `{name}` is used twice"),
                        });
                    }
                    quarantines |=
                        spec.action.unwrap_or(RuleAction::Quarantine) == RuleAction::Quarantine;
                }
            }
        }
        let Some(quality) = &self.quality else {
            if quarantines {
                return Err(top(
                    "quality.quarantine".into(),
                    "a parse step quarantines rows that do not parse, but the job has no \
                     `quality.quarantine` output (add one, or give the parse entries \
                     `action: fail` or `warn`)"
                        .into(),
                ));
            }
            return Ok(());
        };
        for (index, rule) in quality.rules.iter().enumerate() {
            let at = position(origin, &rule.referenced);
            let rule = &rule.value;
            let invalid = |message: String| JobError::Invalid {
                at: at.clone(),
                field: format!("quality.rules[{index}]"),
                message,
            };
            if !is_identifier(&rule.name) {
                return Err(invalid(format!(
                    "`{}` is not a rule name (letters, digits and `_`, starting with a letter)",
                    rule.name
                )));
            }
            if !names.insert(rule.name.clone()) {
                return Err(invalid(format!("rule name `{}` is used twice", rule.name)));
            }
            match rule.kinds().as_slice() {
                [_] => {}
                [] => {
                    return Err(invalid(format!(
                        "rule `{}` names no check (not_null, unique, accepted_values, range, \
                         regex, referential, row_count, freshness or expr)",
                        rule.name
                    )));
                }
                several => {
                    return Err(invalid(format!(
                        "rule `{}` names several checks ({}); write one rule per check",
                        rule.name,
                        several.join(", ")
                    )));
                }
            }
            if rule.is_dataset_check() && rule.action == Some(RuleAction::Quarantine) {
                return Err(invalid(format!(
                    "rule `{}` checks the whole dataset, so it can fail or warn but not \
                     quarantine rows",
                    rule.name
                )));
            }
            quarantines |= rule.effective_action() == RuleAction::Quarantine;
            if let Some(regex) = &rule.regex {
                regex::Regex::new(&regex.pattern)
                    .map_err(|err| invalid(format!("pattern `{}`: {err}", regex.pattern)))?;
            }
            if let Some(referential) = &rule.referential
                && !self.sources.contains_key(&referential.reference)
            {
                return Err(invalid(format!(
                    "reference `{}` is not one of the sources ({})",
                    referential.reference,
                    self.source_names()
                )));
            }
            if let Some(columns) = &rule.not_null
                && columns.is_empty()
            {
                return Err(invalid("not_null names no columns".into()));
            }
            if let Some(unique) = &rule.unique
                && unique.columns.is_empty()
            {
                return Err(invalid("unique names no columns".into()));
            }
            if let Some(range) = &rule.range
                && range.min.is_none()
                && range.max.is_none()
            {
                return Err(invalid("range needs `min`, `max` or both".into()));
            }
            if let Some(freshness) = &rule.freshness
                && let Some(as_of) = &freshness.as_of
            {
                match as_of.strip_prefix('$') {
                    Some(param) => match self.params.get(param) {
                        Some(spec) if spec.param_type == ParamType::Date => {}
                        _ => {
                            return Err(invalid(format!(
                                "as_of `{as_of}` names no declared date param"
                            )));
                        }
                    },
                    None => {
                        chrono::NaiveDate::parse_from_str(as_of, "%Y-%m-%d").map_err(|_| {
                            invalid(format!("as_of `{as_of}` is not `$param` or YYYY-MM-DD"))
                        })?;
                    }
                }
            }
        }
        if let Some(percent) = quality.thresholds.max_quarantined_percent
            && !(0.0..=100.0).contains(&percent)
        {
            return Err(top(
                "quality.thresholds.max_quarantined_percent".into(),
                format!("{percent} is not a percentage (0 to 100)"),
            ));
        }
        match &quality.quarantine {
            None if quarantines => Err(top(
                "quality.quarantine".into(),
                "rules quarantine rows, but the job has no `quality.quarantine` output".into(),
            )),
            Some(quarantine) => {
                let at = Position {
                    origin: origin.to_owned(),
                    line: 0,
                    column: 0,
                };
                self.check_templates(&quarantine.path, "quality.quarantine.path", &at)?;
                if let Some(size) = &quarantine.target_file_size {
                    crate::types::parse_byte_size(size).map_err(|message| {
                        top("quality.quarantine.target_file_size".into(), message)
                    })?;
                }
                Ok(())
            }
            None => Ok(()),
        }
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
