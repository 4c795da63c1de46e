//! Rule evaluation inside the write task: count each rule's failures and samples in a
//! batch and say which rows are quarantined.

use datafusion::arrow::array::{Array, BooleanArray, Date32Array, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::compute::kernels::boolean::or;
use datafusion::arrow::datatypes::DataType;
use datafusion::error::{DataFusionError, Result};

use crate::definition::RuleAction;
use crate::layout::MASKED_SAMPLE;
use crate::quality::{QualityPlan, QualityStats};

/// Which rows of a batch leave the outputs: those a rule quarantines, and those a rule
/// drops (they go nowhere).
#[derive(Debug)]
pub struct Excluded {
    /// Rows for the quarantine.
    pub quarantined: BooleanArray,
    /// Rows for no output at all.
    pub dropped: BooleanArray,
}

/// Counts each rule's failures and samples in a batch, collects maxima, and returns
/// which rows are quarantined and dropped: the write tasks' data-quality evaluation
/// (public for the micro-benchmark).
pub fn evaluate_quality(
    plan: &QualityPlan,
    stats: &mut QualityStats,
    batch: &RecordBatch,
) -> Result<Excluded> {
    let rows = batch.num_rows();
    stats.rows += rows as u64;
    let mut quarantined = BooleanArray::from(vec![false; rows]);
    let mut dropped = BooleanArray::from(vec![false; rows]);
    for (index, rule) in plan.rules.iter().enumerate() {
        let flags = flag_column(batch, &rule.flag)?;
        let failed = flags.true_count();
        if failed == 0 {
            continue;
        }
        stats.failures[index] += failed as u64;
        match rule.action {
            RuleAction::Quarantine => quarantined = or(&quarantined, &flags)?,
            RuleAction::Drop => dropped = or(&dropped, &flags)?,
            RuleAction::Fail | RuleAction::Warn => {}
        }
        let samples = &mut stats.samples[index];
        if samples.len() < plan.samples {
            let formatters = sample_formatters(batch, rule)?;
            for row in (0..rows).filter(|&row| flags.value(row)) {
                if samples.len() >= plan.samples {
                    break;
                }
                let text = formatters
                    .iter()
                    .map(|(label, masked, array)| {
                        let value = if *masked {
                            MASKED_SAMPLE.to_owned()
                        } else if array.is_null(row) {
                            "null".to_owned()
                        } else {
                            array.value(row).to_owned()
                        };
                        format!("{label}={value}")
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                if !samples.contains(&text) {
                    samples.push(text);
                }
            }
        }
    }
    for (index, column) in plan.maxima.iter().enumerate() {
        let values = batch.column(batch.schema().index_of(column)?);
        let dates = cast(values, &DataType::Date32)?;
        let dates = dates
            .as_any()
            .downcast_ref::<Date32Array>()
            .ok_or_else(|| DataFusionError::Internal(format!("`{column}` is not a date")))?;
        if let Some(newest) = datafusion::arrow::compute::max(dates) {
            stats.maxima[index] = Some(stats.maxima[index].map_or(newest, |m| m.max(newest)));
        }
    }
    // A row both dropped and quarantined is quarantined: the quarantine keeps evidence.
    let dropped = datafusion::arrow::compute::kernels::boolean::and_not(&dropped, &quarantined)?;
    stats.quarantined += quarantined.true_count() as u64;
    stats.dropped += dropped.true_count() as u64;
    Ok(Excluded {
        quarantined,
        dropped,
    })
}

pub(crate) fn flag_column(batch: &RecordBatch, name: &str) -> Result<BooleanArray> {
    let array = batch.column(batch.schema().index_of(name)?);
    let flags = array
        .as_any()
        .downcast_ref::<BooleanArray>()
        .ok_or_else(|| DataFusionError::Internal(format!("rule flag `{name}` is not boolean")))?;
    // A NULL flag is a rule that holds.
    Ok(flags.iter().map(|v| Some(v.unwrap_or(false))).collect())
}

/// The sample columns of a rule, as text.
fn sample_formatters(
    batch: &RecordBatch,
    rule: &crate::quality::RowRule,
) -> Result<Vec<(String, bool, StringArray)>> {
    rule.samples
        .iter()
        .map(|sample| {
            let array = batch.column(batch.schema().index_of(&sample.column)?);
            let text = cast(array, &DataType::Utf8)?;
            let text = text
                .as_any()
                .downcast_ref::<StringArray>()
                .cloned()
                .ok_or_else(|| DataFusionError::Internal("sample did not cast to text".into()))?;
            Ok((sample.label.clone(), sample.masked, text))
        })
        .collect()
}
