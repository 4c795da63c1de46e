//! What the write tasks need to check rows (shipped inside the plan) and the counts they
//! return.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::definition::RuleAction;

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
    /// Rows a rule dropped (written nowhere).
    #[serde(default)]
    pub dropped: u64,
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
            dropped: 0,
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
        self.dropped += other.dropped;
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
