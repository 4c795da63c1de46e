//! Compile-time: rules turned into flag columns of the plan and the checks the report
//! judges.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Not;

use chrono::NaiveDate;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Expr, JoinType, cast, col, lit};
use datafusion::prelude::{DataFrame, SessionContext};

use crate::definition::{Literal, QualitySpec, RuleAction, RuleSpec, Thresholds};
use crate::frame::{check_expr, column, parse_ordering, require_columns, strip_context};
use crate::layout::{
    MALFORMED_COLUMN, MALFORMED_RULE, PARSE_FAILURE_PREFIX, RULE_FLAG_PREFIX, SOURCE_FILE_COLUMN,
    SOURCE_LINE_COLUMN,
};
use crate::quality::{
    CompiledQuality, DEFAULT_SAMPLES, DatasetCheck, QualityPlan, RowRule, RuleInfo, SampleColumn,
};

/// Why the quality section does not compile: a rule's problem, or the section's.
#[derive(Debug)]
pub(crate) struct QualityError {
    /// The index of the rule at fault, `None` for the section as a whole.
    pub(crate) rule: Option<usize>,
    /// What is wrong, as shown beside the field.
    pub(crate) message: String,
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

    /// Adds the rule malformed rows of the input source break; returns its flag column,
    /// which the caller sets (false for the steps' rows, true for malformed ones).
    /// Samples name the row's file, line and fault, never its raw text (which may hold
    /// values a mask step would have hidden).
    pub(crate) fn add_malformed_rule(&mut self, action: RuleAction) -> String {
        let samples = [
            (SOURCE_FILE_COLUMN, "file"),
            (SOURCE_LINE_COLUMN, "line"),
            (MALFORMED_COLUMN, "fault"),
        ]
        .into_iter()
        .map(|(column, label)| SampleColumn {
            column: column.to_owned(),
            label: label.to_owned(),
            masked: false,
        })
        .collect();
        self.push_row_rule(MALFORMED_RULE.to_owned(), "malformed", action, samples)
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
    pub(crate) async fn build(
        mut self,
        frame: DataFrame,
        as_of_params: &BTreeMap<String, NaiveDate>,
        today: NaiveDate,
    ) -> Result<(DataFrame, CompiledQuality), QualityError> {
        let whole = |message| QualityError {
            rule: None,
            message,
        };
        let mut frame = self.add_parse_flags(frame).map_err(whole)?;
        let spec = self.spec;
        require_columns(&frame, &spec.row_key).map_err(|m| whole(format!("row_key: {m}")))?;
        for (index, rule) in spec.rules.iter().enumerate() {
            let rule = &rule.value;
            frame = self
                .add_rule(frame, index, rule, as_of_params, today)
                .await
                .map_err(|message| QualityError {
                    rule: Some(index),
                    message,
                })?;
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
                sources: Vec::new(),
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
            let expr = crate::sql::expression(&frame, check)
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
            let (frame, marks) = crate::frame::mark_repeated_keys(
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
            let keys = crate::frame::broadcast_if_small(self.ctx, keys).await?;
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
