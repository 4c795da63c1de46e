//! The distributed Parquet write: [`ParquetWriteExec`] runs inside every executor task
//! and writes that task's rows as Spark does — snappy Parquet in Hive-style
//! `key=value` folders, `part-NNNNN-<uuid>-cNNN.snappy.parquet`, rolling to a new file
//! past the target size — into the run's staging prefix
//! `<output>/_temporary/<run_id>/`. Each task returns a small manifest of the files it
//! wrote; the scheduler commits exactly the files of successful task attempts.
//!
//! Unlike DataFusion's file sinks, which need a single input partition, no task funnels
//! the whole output.

mod exec;
mod manifest;
mod sink;
mod spec;
mod task;

pub use exec::ParquetWriteExec;
pub use manifest::{TaskReport, WrittenFile, manifest_schema};
pub use spec::{SinkSpec, WriteSpec, WriteTask};

use std::sync::Arc;

use datafusion::error::Result;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{ExecutionPlan, Partitioning};

/// The physical plan that writes `input` as `task` says. Rows are first shuffled by the
/// first sink's partition columns, so that each Hive partition is written by one task —
/// a few large files per partition rather than one small file per task and partition.
pub fn write_plan(
    input: Arc<dyn ExecutionPlan>,
    task: WriteTask,
    tasks: usize,
) -> Result<Arc<dyn ExecutionPlan>> {
    let partition_by = task
        .sinks
        .first()
        .map(|sink| sink.spec.partition_by.clone())
        .unwrap_or_default();
    let input = if partition_by.is_empty() {
        input
    } else {
        let schema = input.schema();
        let keys = partition_by
            .iter()
            .map(|name| {
                Ok(Arc::new(Column::new(name, schema.index_of(name)?)) as Arc<dyn PhysicalExpr>)
            })
            .collect::<Result<Vec<_>>>()?;
        Arc::new(RepartitionExec::try_new(
            input,
            Partitioning::Hash(keys, tasks.max(1)),
        )?) as Arc<dyn ExecutionPlan>
    };
    Ok(Arc::new(ParquetWriteExec::try_new(input, task)?))
}
