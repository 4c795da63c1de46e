//! Data-quality rules as written: row and dataset checks, their actions, thresholds and
//! the quarantine output.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use crate::definition::{Literal, WriteMode};

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
    /// The row is left out of every output (the quarantine too); the run records a
    /// warning with the count.
    Drop,
}

impl RuleAction {
    /// The action as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleAction::Fail => "fail",
            RuleAction::Quarantine => "quarantine",
            RuleAction::Warn => "warn",
            RuleAction::Drop => "drop",
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
    /// Columns that become Hive-style folders. By default the first output's, so that
    /// a run replaces the quarantined rows of exactly the partitions it wrote and keeps
    /// those of the others (a backfill keeps every month's); `[]` for one folder that
    /// each run replaces.
    #[serde(default)]
    pub partition_by: Option<Vec<String>>,
    /// What to do with data already there (`overwrite_partitions`: the partitions the
    /// run produced).
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
