//! The scheduler's judgement: merged task counts against thresholds and dataset checks,
//! as a data-quality report.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::definition::RuleAction;
use crate::quality::{QualityPlan, QualityStats};

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
    /// Text sources whose files compile found something to say about (empty files,
    /// headers that differ), for the report.
    pub sources: Vec<crate::read::SourceFiles>,
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
    /// Sources with empty files or files whose headers differ: which files, and each
    /// header with the files that have it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<crate::read::SourceFiles>,
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
                    RuleAction::Drop => warnings.push(format!("{line} (dropped)")),
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
            rows_valid: stats.rows - stats.quarantined - stats.dropped,
            rows_quarantined: stats.quarantined,
            rules,
            failures,
            warnings,
            sources: self.sources.clone(),
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
