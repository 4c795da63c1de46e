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

mod build;
mod evaluate;
mod plan;
mod report;

pub(crate) use build::{QualityBuilder, QualityError};
pub(crate) use evaluate::flag_column;
pub use evaluate::{Excluded, evaluate_quality};
pub use plan::{QualityPlan, QualityStats, RowRule, SampleColumn};
pub use report::{CompiledQuality, DatasetCheck, DqOutcome, DqReport, RuleInfo, RuleReport};

/// Failing values kept per rule when the definition does not say.
pub const DEFAULT_SAMPLES: usize = 5;

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use crate::definition::RuleAction;

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
            sources: Vec::new(),
        }
    }

    #[test]
    fn task_counts_merge_and_are_judged() {
        let quality = quality();
        let mut total = QualityStats::new(&quality.plan);
        let task = |rows, failed, sample: &str, newest| QualityStats {
            rows,
            quarantined: failed,
            dropped: 0,
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
