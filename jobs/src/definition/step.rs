//! Steps: the transformations and cleansing operations applied in order to the input.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::definition::{ColumnType, RuleAction};

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
