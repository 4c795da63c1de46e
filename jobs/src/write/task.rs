//! One write task's work: route each batch's rows to the outputs or the quarantine,
//! count the quality rules, and close the files.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, ListBuilder, RecordBatch, StringArray, StringBuilder,
};
use datafusion::arrow::compute::kernels::boolean::{not, or};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::metrics::{Count, Time};
use futures::StreamExt;

use crate::layout::{QUARANTINE_COLUMNS, QUARANTINE_LINE_COLUMNS};
use crate::quality::{QualityStats, evaluate_quality, flag_column};
use crate::write::sink::SinkWriter;
use crate::write::{TaskReport, WriteTask, manifest_schema};

/// One write task: routes each batch's rows to the sinks and counts the rules.
pub(super) struct TaskWriter {
    pub(super) task: WriteTask,
    pub(super) sinks: Vec<SinkWriter>,
    pub(super) write_time: Time,
    pub(super) rows: Count,
}

impl TaskWriter {
    pub(super) async fn run(mut self, mut input: SendableRecordBatchStream) -> Result<RecordBatch> {
        let mut stats = self.task.quality.as_ref().map(QualityStats::new);
        while let Some(batch) = input.next().await {
            let batch = batch?;
            if batch.num_rows() == 0 {
                continue;
            }
            self.rows.add(batch.num_rows());
            // Dropped at the end of the iteration, after the sinks' awaits.
            let _timer = self.write_time.timer();
            let quarantined = match (&self.task.quality, stats.as_mut()) {
                (Some(plan), Some(stats)) => Some(evaluate_quality(plan, stats, &batch)?),
                _ => None,
            };
            // The outputs' rows: neither quarantined nor dropped.
            let kept = match &quarantined {
                Some(excluded) => Some(not(&or(&excluded.quarantined, &excluded.dropped)?)?),
                None => None,
            };
            for sink in &mut self.sinks {
                let rows = match (&quarantined, &kept, sink.quarantine) {
                    (Some(excluded), _, true) => {
                        filter_record_batch(&batch, &excluded.quarantined)?
                    }
                    (_, Some(kept), false) => filter_record_batch(&batch, kept)?,
                    (None, _, true) => continue,
                    (_, None, false) => batch.clone(),
                };
                if rows.num_rows() == 0 {
                    continue;
                }
                let rows = if sink.quarantine {
                    quarantine_batch(&self.task, &rows)?
                } else {
                    rows
                };
                sink.write(&rows).await?;
            }
        }
        let mut files = Vec::new();
        let timer = self.write_time.timer();
        for sink in self.sinks {
            files.extend(sink.finish().await?);
        }
        timer.done();
        files.sort_by(|a, b| {
            (&a.output, &a.partition, &a.file).cmp(&(&b.output, &b.partition, &b.file))
        });
        let report = TaskReport {
            files,
            quality: stats,
        };
        let json = serde_json::to_string(&report)
            .map_err(|err| DataFusionError::Internal(format!("write report: {err}")))?;
        Ok(RecordBatch::try_new(
            manifest_schema(),
            vec![Arc::new(StringArray::from(vec![json]))],
        )?)
    }
}

/// The quarantined rows with `_dq_rules` (every rule each row broke), `_dq_run_id` and
/// `_dq_source_file` added.
fn quarantine_batch(task: &WriteTask, rows: &RecordBatch) -> Result<RecordBatch> {
    let count = rows.num_rows();
    let mut fields: Vec<Field> = rows
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let mut columns: Vec<ArrayRef> = rows.columns().to_vec();
    let mut rules = ListBuilder::new(StringBuilder::new());
    let plan = task.quality.clone().unwrap_or_default();
    let flags = plan
        .rules
        .iter()
        .map(|rule| flag_column(rows, &rule.flag))
        .collect::<Result<Vec<_>>>()?;
    for row in 0..count {
        for (rule, flags) in plan.rules.iter().zip(&flags) {
            if flags.value(row) {
                rules.values().append_value(&rule.name);
            }
        }
        rules.append(true);
    }
    let rules = rules.finish();
    fields.push(Field::new(
        QUARANTINE_COLUMNS[0],
        rules.data_type().clone(),
        false,
    ));
    columns.push(Arc::new(rules));
    fields.push(Field::new(QUARANTINE_COLUMNS[1], DataType::Utf8, false));
    columns.push(Arc::new(StringArray::from(vec![
        task.run_id.as_str();
        count
    ])));
    fields.push(Field::new(QUARANTINE_COLUMNS[2], DataType::Utf8, true));
    let source: ArrayRef = match plan
        .source_file
        .as_ref()
        .and_then(|name| rows.schema().index_of(name).ok())
    {
        Some(index) => cast(rows.column(index), &DataType::Utf8)?,
        None => Arc::new(StringArray::from(vec![None::<&str>; count])),
    };
    columns.push(source);
    // The line, raw text and fault of rows from Sluice's CSV reader, under their names.
    for (written, hidden) in QUARANTINE_LINE_COLUMNS {
        if let Ok(index) = rows.schema().index_of(hidden) {
            fields.push(rows.schema().field(index).clone().with_name(written));
            columns.push(Arc::clone(rows.column(index)));
        }
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}
