//! Data-quality rules: compiled into flag columns of the plan, counted by the write
//! tasks in the same pass that writes the outputs, and judged by the scheduler.
//!
//! ```text
//! steps' rows ──► + one boolean flag column per row rule (true = broken)
//!             ──► write task: valid rows → outputs, quarantined rows → quarantine,
//!                 per rule: rows failed + a few failing values; newest dates
//!             ──► scheduler: merges the tasks' counts ──► DqReport (thresholds,
//!                 row_count, freshness) ──► run fails, warns or commits
//! ```
//!
//! The source is read once: rules are columns of the one plan, not queries of their own.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Not;

use chrono::NaiveDate;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Expr, JoinType, cast, col, lit};
use datafusion::prelude::{DataFrame, SessionContext};
use serde::{Deserialize, Serialize};

use crate::compile::{check_expr, column, parse_ordering, require_columns, strip_context};
use crate::definition::{Literal, QualitySpec, RuleAction, RuleSpec, Thresholds};

/// Prefix of the flag column of the row rule at an index.
pub(crate) const RULE_FLAG_PREFIX: &str = "__sluice_rule_";
/// The hidden column holding each row's source file.
pub(crate) const SOURCE_FILE_COLUMN: &str = "__sluice_source_file";
/// Prefix of the hidden column holding the raw text of a value that did not parse.
pub(crate) const PARSE_FAILURE_PREFIX: &str = "__sluice_parse_";
/// What a masked value shows in samples.
pub const MASKED_SAMPLE: &str = "<masked>";
/// Failing values kept per rule when the definition does not say.
pub const DEFAULT_SAMPLES: usize = 5;

/// What the write tasks need to check rows: shipped to executors inside the plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QualityPlan {
    /// Row rules, in report order.
    pub rules: Vec<RowRule>,
    /// The hidden column with each row's source file, when the plan carries it.
    pub source_file: Option<String>,
    /// Date or timestamp columns whose newest value is collected (freshness).
    pub maxima: Vec<String>,
    /// Failing values kept per rule.
    pub samples: usize,
}

/// A rule checked on every row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowRule {
    /// The rule's name.
    pub name: String,
    /// What a broken rule does.
    pub action: RuleAction,
    /// The boolean column that is true where the rule is broken.
    pub flag: String,
    /// Columns shown for a failing row.
    pub samples: Vec<SampleColumn>,
}

/// A column shown in a failing row's sample.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampleColumn {
    /// The plan column.
    pub column: String,
    /// The name shown.
    pub label: String,
    /// The column is masked: its value is never shown.
    pub masked: bool,
}

/// What the write tasks counted, merged over tasks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QualityStats {
    /// Rows checked.
    pub rows: u64,
    /// Rows routed to the quarantine output.
    pub quarantined: u64,
    /// Per row rule, rows that broke it.
    pub failures: Vec<u64>,
    /// Per row rule, a few failing rows as `column=value` text.
    pub samples: Vec<Vec<String>>,
    /// Per `maxima` column, the newest value as days since 1970-01-01.
    pub maxima: Vec<Option<i32>>,
}

impl QualityStats {
    /// Empty counts for a plan.
    pub fn new(plan: &QualityPlan) -> Self {
        Self {
            rows: 0,
            quarantined: 0,
            failures: vec![0; plan.rules.len()],
            samples: vec![Vec::new(); plan.rules.len()],
            maxima: vec![None; plan.maxima.len()],
        }
    }

    /// Adds another task's counts. Samples are kept sorted and distinct, so the report
    /// does not depend on which task finished first.
    pub fn merge(&mut self, other: &QualityStats, samples: usize) {
        self.rows += other.rows;
        self.quarantined += other.quarantined;
        for (mine, theirs) in self.failures.iter_mut().zip(&other.failures) {
            *mine += theirs;
        }
        for (mine, theirs) in self.samples.iter_mut().zip(&other.samples) {
            let mut all: BTreeSet<String> = mine.drain(..).collect();
            all.extend(theirs.iter().cloned());
            mine.extend(all.into_iter().take(samples));
        }
        for (mine, theirs) in self.maxima.iter_mut().zip(&other.maxima) {
            *mine = match (*mine, *theirs) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        }
    }
}

/// A check over the whole dataset, judged by the scheduler from the merged counts.
#[derive(Debug, Clone, PartialEq)]
pub enum DatasetCheck {
    /// The number of rows checked is within bounds.
    RowCount {
        /// Fewest rows allowed.
        min: Option<u64>,
        /// Most rows allowed.
        max: Option<u64>,
    },
    /// The newest value of a column is recent enough.
    Freshness {
        /// The column.
        column: String,
        /// Its index in [`QualityPlan::maxima`].
        maxima_index: usize,
        /// Largest age allowed.
        max_age_days: u32,
        /// The run date.
        as_of: NaiveDate,
    },
}

/// A rule of the report, in order: row rules first (parse rules, then declared ones in
/// definition order), then dataset rules.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleInfo {
    /// The rule's name.
    pub name: String,
    /// The check's kind (`not_null`, `parse`, …).
    pub kind: String,
    /// What a broken rule does.
    pub action: RuleAction,
    /// For row rules, the index in [`QualityPlan::rules`].
    pub row_rule: Option<usize>,
    /// For dataset rules, the check.
    pub dataset: Option<DatasetCheck>,
}

/// A job's compiled quality checks.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledQuality {
    /// What the write tasks evaluate.
    pub plan: QualityPlan,
    /// Every rule, in report order.
    pub rules: Vec<RuleInfo>,
    /// Limits on quarantined rows.
    pub max_quarantined_rows: Option<u64>,
    /// Limit on the quarantined share, in percent.
    pub max_quarantined_percent: Option<f64>,
}

/// How a run's data quality came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DqOutcome {
    /// Every rule held.
    Passed,
    /// Rows were quarantined or warned about, within the thresholds.
    PassedWithIssues,
    /// A `fail` rule broke or a threshold was passed: the run fails.
    Failed,
}

/// One rule's line in the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleReport {
    /// The rule's name.
    pub name: String,
    /// The check's kind.
    pub kind: String,
    /// `fail`, `quarantine` or `warn`.
    pub action: RuleAction,
    /// Rows checked.
    pub checked: u64,
    /// Rows that broke the rule (for dataset checks: 1 when it broke, else 0).
    pub failed: u64,
    /// A few failing rows, `column=value`; masked columns show `<masked>`.
    pub samples: Vec<String>,
    /// For dataset checks, what was measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A run's data-quality report: stored with the run, returned by the API, shown by
/// `sluice status` and written as JSON beside the outputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DqReport {
    /// Passed, passed with issues, or failed.
    pub outcome: DqOutcome,
    /// Rows the rules checked.
    pub rows_checked: u64,
    /// Rows written to the outputs.
    pub rows_valid: u64,
    /// Rows written to the quarantine output.
    pub rows_quarantined: u64,
    /// Per rule.
    pub rules: Vec<RuleReport>,
    /// Why the run fails, when it does.
    pub failures: Vec<String>,
    /// Rules with `warn` that broke.
    pub warnings: Vec<String>,
}

impl CompiledQuality {
    /// Judges merged counts: rules with `fail`, thresholds, row count and freshness.
    pub fn report(&self, stats: &QualityStats) -> DqReport {
        let mut rules = Vec::new();
        let mut failures = Vec::new();
        let mut warnings = Vec::new();
        for info in &self.rules {
            let (failed, samples, detail) = match (&info.row_rule, &info.dataset) {
                (Some(index), _) => (
                    stats.failures.get(*index).copied().unwrap_or(0),
                    stats.samples.get(*index).cloned().unwrap_or_default(),
                    None,
                ),
                (None, Some(check)) => {
                    let (broken, detail) = judge_dataset(check, stats);
                    (u64::from(broken), Vec::new(), Some(detail))
                }
                (None, None) => (0, Vec::new(), None),
            };
            if failed > 0 {
                let what = match &detail {
                    Some(detail) => detail.clone(),
                    None => format!(
                        "{failed} of {} rows{}",
                        stats.rows,
                        if samples.is_empty() {
                            String::new()
                        } else {
                            format!(" (e.g. {})", samples.join("; "))
                        }
                    ),
                };
                let line = format!("rule `{}` ({}) broke: {what}", info.name, info.kind);
                match info.action {
                    RuleAction::Fail => failures.push(line),
                    RuleAction::Warn => warnings.push(line),
                    RuleAction::Quarantine => {}
                }
            }
            rules.push(RuleReport {
                name: info.name.clone(),
                kind: info.kind.clone(),
                action: info.action,
                checked: stats.rows,
                failed,
                samples,
                detail,
            });
        }
        if let Some(limit) = self.max_quarantined_rows
            && stats.quarantined > limit
        {
            failures.push(format!(
                "{} rows quarantined, more than max_quarantined_rows {limit}",
                stats.quarantined
            ));
        }
        if let Some(limit) = self.max_quarantined_percent
            && stats.rows > 0
        {
            let percent = stats.quarantined as f64 * 100.0 / stats.rows as f64;
            if percent > limit {
                failures.push(format!(
                    "{percent:.2}% of rows quarantined ({} of {}), more than \
                     max_quarantined_percent {limit}%",
                    stats.quarantined, stats.rows
                ));
            }
        }
        let issues = stats.quarantined > 0 || !warnings.is_empty();
        DqReport {
            outcome: if !failures.is_empty() {
                DqOutcome::Failed
            } else if issues {
                DqOutcome::PassedWithIssues
            } else {
                DqOutcome::Passed
            },
            rows_checked: stats.rows,
            rows_valid: stats.rows - stats.quarantined,
            rows_quarantined: stats.quarantined,
            rules,
            failures,
            warnings,
        }
    }
}

fn judge_dataset(check: &DatasetCheck, stats: &QualityStats) -> (bool, String) {
    match check {
        DatasetCheck::RowCount { min, max } => {
            let rows = stats.rows;
            let too_few = min.is_some_and(|min| rows < min);
            let too_many = max.is_some_and(|max| rows > max);
            let bounds = match (min, max) {
                (Some(min), Some(max)) => format!("{min} to {max}"),
                (Some(min), None) => format!("at least {min}"),
                (None, Some(max)) => format!("at most {max}"),
                (None, None) => "any number".into(),
            };
            (
                too_few || too_many,
                format!("{rows} rows; {bounds} expected"),
            )
        }
        DatasetCheck::Freshness {
            column,
            maxima_index,
            max_age_days,
            as_of,
        } => match stats.maxima.get(*maxima_index).copied().flatten() {
            None => (true, format!("`{column}` has no values")),
            Some(days) => {
                let newest = crate::functions::date_from_days(days);
                let age = (*as_of - newest).num_days();
                (
                    age > i64::from(*max_age_days),
                    format!(
                        "newest `{column}` is {newest}, {age} days before {as_of}; at most \
                         {max_age_days} allowed"
                    ),
                )
            }
        },
    }
}

/// A rule check compiled against the steps' result.
pub(crate) struct QualityBuilder<'a> {
    ctx: &'a SessionContext,
    spec: &'a QualitySpec,
    masked: &'a BTreeSet<String>,
    row_rules: Vec<RowRule>,
    rules: Vec<RuleInfo>,
    maxima: Vec<String>,
}

impl<'a> QualityBuilder<'a> {
    pub(crate) fn new(
        ctx: &'a SessionContext,
        spec: &'a QualitySpec,
        masked: &'a BTreeSet<String>,
    ) -> Self {
        Self {
            ctx,
            spec,
            masked,
            row_rules: Vec::new(),
            rules: Vec::new(),
            maxima: Vec::new(),
        }
    }

    fn sample_columns(&self, columns: &[String]) -> Vec<SampleColumn> {
        let mut shown: Vec<SampleColumn> = Vec::new();
        for name in columns.iter().chain(&self.spec.row_key) {
            if shown.iter().any(|s| &s.column == name) {
                continue;
            }
            shown.push(SampleColumn {
                column: name.clone(),
                label: name.clone(),
                masked: self.masked.contains(name),
            });
        }
        shown
    }

    /// Adds a parse step's violations as a row rule.
    pub(crate) fn add_parse_rule(&mut self, name: String, column: &str, action: RuleAction) {
        let hidden = format!("{PARSE_FAILURE_PREFIX}{column}");
        let mut samples = vec![SampleColumn {
            column: hidden,
            label: column.to_owned(),
            masked: false,
        }];
        samples.extend(
            self.sample_columns(&[])
                .into_iter()
                .filter(|s| s.column != column),
        );
        self.push_row_rule(name, "parse", action, samples);
    }

    fn push_row_rule(
        &mut self,
        name: String,
        kind: &str,
        action: RuleAction,
        samples: Vec<SampleColumn>,
    ) -> String {
        let flag = format!("{RULE_FLAG_PREFIX}{}", self.row_rules.len());
        self.rules.push(RuleInfo {
            name: name.clone(),
            kind: kind.to_owned(),
            action,
            row_rule: Some(self.row_rules.len()),
            dataset: None,
        });
        self.row_rules.push(RowRule {
            name,
            action,
            flag: flag.clone(),
            samples,
        });
        flag
    }

    /// Adds the flag columns of parse rules (registered while the steps ran).
    fn add_parse_flags(&self, mut frame: DataFrame) -> Result<DataFrame, String> {
        for rule in &self.row_rules {
            if let Some(failure) = rule.samples.first().map(|s| s.column.clone())
                && failure.starts_with(PARSE_FAILURE_PREFIX)
            {
                if frame
                    .schema()
                    .field_with_unqualified_name(&failure)
                    .is_err()
                {
                    return Err(format!(
                        "a `sql` step after the parse step dropped `{failure}`, which carries \
                         the parse check of `{}`; select `*` in the sql step or parse after it",
                        rule.samples[0].label
                    ));
                }
                frame = frame
                    .with_column(&rule.flag, column(&failure).is_not_null())
                    .map_err(|e| strip_context(&e))?;
            }
        }
        Ok(frame)
    }

    /// Adds one flag column per declared row rule, and collects the dataset rules.
    /// Errors are `(rule index, message)`.
    pub(crate) async fn build(
        mut self,
        frame: DataFrame,
        as_of_params: &BTreeMap<String, NaiveDate>,
        today: NaiveDate,
    ) -> Result<(DataFrame, CompiledQuality), (Option<usize>, String)> {
        let mut frame = self.add_parse_flags(frame).map_err(|m| (None, m))?;
        let spec = self.spec;
        require_columns(&frame, &spec.row_key).map_err(|m| (None, format!("row_key: {m}")))?;
        for (index, rule) in spec.rules.iter().enumerate() {
            let rule = &rule.value;
            frame = self
                .add_rule(frame, index, rule, as_of_params, today)
                .await
                .map_err(|message| (Some(index), message))?;
        }
        let source_file = frame
            .schema()
            .field_with_unqualified_name(SOURCE_FILE_COLUMN)
            .ok()
            .map(|_| SOURCE_FILE_COLUMN.to_owned());
        let Thresholds {
            max_quarantined_rows,
            max_quarantined_percent,
        } = spec.thresholds.clone();
        Ok((
            frame,
            CompiledQuality {
                plan: QualityPlan {
                    rules: self.row_rules,
                    source_file,
                    maxima: self.maxima,
                    samples: spec.samples.unwrap_or(DEFAULT_SAMPLES),
                },
                rules: self.rules,
                max_quarantined_rows,
                max_quarantined_percent,
            },
        ))
    }

    async fn add_rule(
        &mut self,
        frame: DataFrame,
        index: usize,
        rule: &RuleSpec,
        as_of_params: &BTreeMap<String, NaiveDate>,
        today: NaiveDate,
    ) -> Result<DataFrame, String> {
        let fail = |e: datafusion::error::DataFusionError| strip_context(&e);
        let action = rule.effective_action();
        let name = rule.name.clone();
        if let Some(check) = &rule.row_count {
            self.rules.push(RuleInfo {
                name,
                kind: "row_count".into(),
                action,
                row_rule: None,
                dataset: Some(DatasetCheck::RowCount {
                    min: check.min,
                    max: check.max,
                }),
            });
            return Ok(frame);
        }
        if let Some(check) = &rule.freshness {
            require_columns(&frame, std::slice::from_ref(&check.column))?;
            let as_of = match &check.as_of {
                None => today,
                Some(text) => match text.strip_prefix('$') {
                    Some(param) => *as_of_params
                        .get(param)
                        .ok_or_else(|| format!("as_of `{text}` names no date param"))?,
                    None => NaiveDate::parse_from_str(text, "%Y-%m-%d")
                        .map_err(|_| format!("as_of `{text}` is not YYYY-MM-DD"))?,
                },
            };
            let maxima_index = self.maxima.len();
            self.maxima.push(check.column.clone());
            self.rules.push(RuleInfo {
                name,
                kind: "freshness".into(),
                action,
                row_rule: None,
                dataset: Some(DatasetCheck::Freshness {
                    column: check.column.clone(),
                    maxima_index,
                    max_age_days: check.max_age_days,
                    as_of,
                }),
            });
            return Ok(frame);
        }
        let schema = frame.schema().clone();
        let typed_literal = |name: &str, value: &Literal| -> Result<Expr, String> {
            let field = schema
                .field_with_unqualified_name(name)
                .map_err(|e| strip_context(&e))?;
            Ok(cast(lit(literal_scalar(value)), field.data_type().clone()))
        };
        // Window and join rules add helper columns the flag reads; they are dropped after.
        let mut helpers: Vec<String> = Vec::new();
        let (kind, broken, sample_columns, frame) = if let Some(columns) = &rule.not_null {
            require_columns(&frame, columns)?;
            let broken = columns
                .iter()
                .map(|c| column(c).is_null())
                .reduce(Expr::or)
                .unwrap_or(lit(false));
            ("not_null", broken, columns.clone(), frame)
        } else if let Some(check) = &rule.accepted_values {
            require_columns(&frame, std::slice::from_ref(&check.column))?;
            let values = check
                .values
                .iter()
                .map(|v| typed_literal(&check.column, v))
                .collect::<Result<Vec<_>, _>>()?;
            let broken = column(&check.column)
                .is_not_null()
                .and(column(&check.column).in_list(values, true));
            ("accepted_values", broken, vec![check.column.clone()], frame)
        } else if let Some(check) = &rule.range {
            require_columns(&frame, std::slice::from_ref(&check.column))?;
            let mut broken = lit(false);
            if let Some(min) = &check.min {
                broken = broken.or(column(&check.column).lt(typed_literal(&check.column, min)?));
            }
            if let Some(max) = &check.max {
                broken = broken.or(column(&check.column).gt(typed_literal(&check.column, max)?));
            }
            ("range", broken, vec![check.column.clone()], frame)
        } else if let Some(check) = &rule.regex {
            require_columns(&frame, std::slice::from_ref(&check.column))?;
            let text = cast(
                column(&check.column),
                datafusion::arrow::datatypes::DataType::Utf8,
            );
            let matches = datafusion::functions::regex::expr_fn::regexp_like(
                text.clone(),
                lit(check.pattern.clone()),
                None,
            );
            let broken = text.is_not_null().and(matches.not());
            ("regex", broken, vec![check.column.clone()], frame)
        } else if let Some(check) = &rule.expr {
            let expr = frame
                .parse_sql_expr(check)
                .map_err(|err| format!("`{check}`: {}", strip_context(&err)))?;
            check_expr(&frame, &expr, check)?;
            let mut referenced: Vec<String> = expr
                .column_refs()
                .into_iter()
                .map(|c| c.name.clone())
                .collect();
            referenced.sort();
            referenced.dedup();
            let broken =
                datafusion::functions::core::expr_fn::coalesce(vec![expr, lit(true)]).not();
            ("expr", broken, referenced, frame)
        } else if let Some(check) = &rule.unique {
            require_columns(&frame, &check.columns)?;
            let ordering = check
                .keep
                .iter()
                .map(|entry| parse_ordering(&frame, entry))
                .collect::<Result<Vec<_>, _>>()?;
            // With `keep`, the first row of a key holds the rule and the rest break it;
            // without, every row of a repeated key breaks it.
            let every_row = check.keep.is_empty();
            let (frame, marks) = crate::compile::mark_repeated_keys(
                self.ctx,
                frame,
                &check.columns,
                ordering,
                &format!("__sluice_unique_{index}"),
                every_row,
            )?;
            let keys_present = check
                .columns
                .iter()
                .map(|c| column(c).is_not_null())
                .reduce(Expr::and)
                .unwrap_or(lit(true));
            let mut repeated = col(marks.after.as_str());
            helpers.push(marks.after);
            if let Some(before) = marks.before {
                repeated = repeated.or(col(before.as_str()));
                helpers.push(before);
            }
            (
                "unique",
                keys_present.and(repeated),
                check.columns.clone(),
                frame,
            )
        } else if let Some(check) = &rule.referential {
            require_columns(&frame, std::slice::from_ref(&check.column))?;
            let key_column = format!("__sluice_ref_{index}");
            let reference = self
                .ctx
                .table(check.reference.as_str())
                .await
                .map_err(fail)?;
            require_columns(&reference, std::slice::from_ref(&check.key))
                .map_err(|m| format!("reference `{}`: {m}", check.reference))?;
            let field = frame
                .schema()
                .field_with_unqualified_name(&check.column)
                .map_err(|e| strip_context(&e))?
                .clone();
            let keys = reference
                .select(vec![
                    cast(column(&check.key), field.data_type().clone()).alias(&key_column),
                ])
                .and_then(|r| r.filter(col(key_column.as_str()).is_not_null()))
                .and_then(|r| r.distinct())
                .map_err(fail)?;
            let keys = crate::cleanse::broadcast_if_small(self.ctx, keys).await?;
            let joined = frame
                .join(
                    keys,
                    JoinType::Left,
                    &[check.column.as_str()],
                    &[key_column.as_str()],
                    None,
                )
                .map_err(fail)?;
            let broken = column(&check.column)
                .is_not_null()
                .and(col(key_column.as_str()).is_null());
            helpers.push(key_column);
            ("referential", broken, vec![check.column.clone()], joined)
        } else {
            return Err(format!("rule `{}` names no check", rule.name));
        };
        let samples = self.sample_columns(&sample_columns);
        let flag = self.push_row_rule(name, kind, action, samples);
        let broken = datafusion::functions::core::expr_fn::coalesce(vec![broken, lit(false)]);
        let mut frame = frame.with_column(&flag, broken).map_err(fail)?;
        if !helpers.is_empty() {
            let helpers: Vec<&str> = helpers.iter().map(String::as_str).collect();
            frame = frame.drop_columns(&helpers).map_err(fail)?;
        }
        Ok(frame)
    }
}

fn literal_scalar(value: &Literal) -> ScalarValue {
    match value {
        Literal::Bool(v) => ScalarValue::Boolean(Some(*v)),
        Literal::Int(v) => ScalarValue::Int64(Some(*v)),
        Literal::Float(v) => ScalarValue::Float64(Some(*v)),
        Literal::Text(v) => ScalarValue::Utf8(Some(v.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quality() -> CompiledQuality {
        CompiledQuality {
            plan: QualityPlan {
                rules: vec![RowRule {
                    name: "npi".into(),
                    action: RuleAction::Quarantine,
                    flag: "__sluice_rule_0".into(),
                    samples: Vec::new(),
                }],
                source_file: None,
                maxima: vec!["fill_date".into()],
                samples: 2,
            },
            rules: vec![
                RuleInfo {
                    name: "npi".into(),
                    kind: "expr".into(),
                    action: RuleAction::Quarantine,
                    row_rule: Some(0),
                    dataset: None,
                },
                RuleInfo {
                    name: "fresh".into(),
                    kind: "freshness".into(),
                    action: RuleAction::Fail,
                    row_rule: None,
                    dataset: Some(DatasetCheck::Freshness {
                        column: "fill_date".into(),
                        maxima_index: 0,
                        max_age_days: 10,
                        as_of: NaiveDate::from_ymd_opt(2024, 2, 1).unwrap(),
                    }),
                },
            ],
            max_quarantined_rows: None,
            max_quarantined_percent: Some(5.0),
        }
    }

    #[test]
    fn task_counts_merge_and_are_judged() {
        let quality = quality();
        let mut total = QualityStats::new(&quality.plan);
        let task = |rows, failed, sample: &str, newest| QualityStats {
            rows,
            quarantined: failed,
            failures: vec![failed],
            samples: vec![vec![sample.to_owned()]],
            maxima: vec![Some(newest)],
        };
        total.merge(&task(100, 3, "npi=b", 19_750), 2);
        total.merge(&task(100, 2, "npi=a", 19_748), 2);
        total.merge(&task(0, 0, "npi=c", 0), 2);
        assert_eq!(total.rows, 200);
        assert_eq!(total.failures, vec![5]);
        assert_eq!(
            total.samples,
            vec![vec!["npi=a".to_owned(), "npi=b".to_owned()]]
        );
        let report = quality.report(&total);
        // 2024-01-28 is 4 days before 2024-02-01: fresh enough; 2.5% quarantined.
        assert_eq!(report.outcome, DqOutcome::PassedWithIssues);
        assert_eq!(report.rules[0].failed, 5);
        assert_eq!(report.rules[1].failed, 0, "{:?}", report.rules[1].detail);

        total.quarantined = 20;
        let report = quality.report(&total);
        assert_eq!(report.outcome, DqOutcome::Failed);
        assert!(report.failures[0].contains("10.00% of rows quarantined"));
    }
}
