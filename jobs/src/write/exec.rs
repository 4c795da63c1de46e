//! [`ParquetWriteExec`]: the physical operator at the top of every write task.

use std::fmt;
use std::sync::Arc;

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties,
};

use crate::layout::{QUARANTINE_COLUMNS, quarantine_line_source};
use crate::write::sink::SinkWriter;
use crate::write::task::TaskWriter;
use crate::write::{SinkSpec, WriteTask, manifest_schema};

/// Writes each input partition's rows to staged Parquet files — valid rows to the
/// outputs, quarantined rows to the quarantine — counts the quality rules, and returns
/// a [`TaskReport`].
#[derive(Debug)]
pub struct ParquetWriteExec {
    input: Arc<dyn ExecutionPlan>,
    task: WriteTask,
    properties: Arc<PlanProperties>,
    /// `write_time` (routing, quality counting, encoding and uploading) and rows.
    metrics: ExecutionPlanMetricsSet,
}

impl ParquetWriteExec {
    /// Writes `input` as `task` says. Fails when a column it needs is missing.
    pub fn try_new(input: Arc<dyn ExecutionPlan>, task: WriteTask) -> Result<Self> {
        let schema = input.schema();
        let missing = |what: &str, column: &str| {
            DataFusionError::Plan(format!(
                "{what}: column `{column}` is not in the result ({})",
                schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        };
        for sink in &task.sinks {
            let what = format!("output `{}`", sink.spec.output);
            for column in sink_input_columns(sink) {
                if schema.index_of(column).is_err() {
                    return Err(missing(&what, column));
                }
            }
        }
        if let Some(quality) = &task.quality {
            for rule in &quality.rules {
                if schema.index_of(&rule.flag).is_err() {
                    return Err(missing(&format!("rule `{}`", rule.name), &rule.flag));
                }
            }
        }
        let partitions = input.output_partitioning().partition_count();
        let properties = PlanProperties::new(
            EquivalenceProperties::new(manifest_schema()),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        Ok(Self {
            input,
            task,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    /// What this operator writes.
    pub fn task(&self) -> &WriteTask {
        &self.task
    }
}

/// The plan columns a sink reads (the quarantine's `_dq_*` columns are made, or read
/// from Sluice's hidden columns).
fn sink_input_columns(sink: &SinkSpec) -> impl Iterator<Item = &str> {
    sink.columns
        .iter()
        .filter(move |c| !(sink.quarantine && QUARANTINE_COLUMNS.contains(&c.as_str())))
        .map(move |c| match quarantine_line_source(c) {
            Some(hidden) if sink.quarantine => hidden,
            _ => c.as_str(),
        })
}

impl DisplayAs for ParquetWriteExec {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let sinks = self
            .task
            .sinks
            .iter()
            .map(|sink| {
                format!(
                    "{}={} [{}]",
                    sink.spec.output,
                    sink.spec.location,
                    sink.spec.partition_by.join(", ")
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        let rules = self.task.quality.as_ref().map_or(0, |q| q.rules.len());
        write!(
            f,
            "ParquetWriteExec: sinks=[{sinks}], rules={rules}, compression={:?}",
            self.task
                .sinks
                .first()
                .map(|sink| sink.spec.compression)
                .unwrap_or_default()
        )
    }
}

impl ExecutionPlan for ParquetWriteExec {
    fn name(&self) -> &str {
        "ParquetWriteExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false]
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [input] = <[_; 1]>::try_from(children)
            .map_err(|_| DataFusionError::Internal("ParquetWriteExec takes one input".into()))?;
        Ok(Arc::new(Self::try_new(input, self.task.clone())?))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, Arc::clone(&context))?;
        let schema = input.schema();
        let mut sinks = Vec::new();
        for sink in &self.task.sinks {
            let store = context.runtime_env().object_store(sink.spec.store_url()?)?;
            sinks.push(SinkWriter::try_new(sink, partition, store, &schema)?);
        }
        let task = TaskWriter {
            task: self.task.clone(),
            sinks,
            write_time: MetricBuilder::new(&self.metrics).subset_time("write_time", partition),
            rows: MetricBuilder::new(&self.metrics).counter("rows_written", partition),
        };
        let manifest = futures::stream::once(task.run(input));
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            manifest_schema(),
            manifest,
        )))
    }
}
