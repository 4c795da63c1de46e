//! The distributed Parquet write: [`ParquetWriteExec`] runs inside every executor task
//! and writes that task's rows as Spark does — snappy Parquet in Hive-style
//! `key=value` folders, `part-NNNNN-<uuid>-cNNN.snappy.parquet`, rolling to a new file
//! past the target size — into the run's staging prefix
//! `<output>/_temporary/<run_id>/`. Each task returns a small manifest of the files it
//! wrote; the scheduler commits exactly the files of successful task attempts.
//!
//! Unlike DataFusion's file sinks, which need a single input partition, no task funnels
//! the whole output.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Date32Array, ListBuilder, RecordBatch, StringArray,
    StringBuilder, UInt32Array,
};
use datafusion::arrow::compute::kernels::boolean::{not, or};
use datafusion::arrow::compute::{cast, filter_record_batch, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{
    Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet, Time,
};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties,
};
use futures::StreamExt;
use object_store::ObjectStore;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use parquet::arrow::AsyncArrowWriter;
use parquet::basic::{Compression as ParquetCompression, GzipLevel, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use crate::compile::QUARANTINE_COLUMNS;
use crate::conf::Compression;
use crate::definition::RuleAction;
use crate::quality::{MASKED_SAMPLE, QualityPlan, QualityStats};

/// The folder name Spark gives a null partition value.
pub const HIVE_DEFAULT_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// Where a run's files wait, below an output, until the run commits.
pub const STAGING_DIR: &str = "_temporary";

/// What one output of one run writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteSpec {
    /// The output's name in the job.
    pub output: String,
    /// The output location as a URL (`file:///…`, `s3://bucket/prefix`), no trailing `/`.
    pub location: String,
    /// The run whose files these are.
    pub run_id: String,
    /// Columns that become `key=value` folders, in order.
    pub partition_by: Vec<String>,
    /// Roll to a new file past this many bytes.
    pub target_file_size: u64,
    /// Parquet compression.
    pub compression: Compression,
}

impl WriteSpec {
    /// The store URL (`file://`, `s3://bucket`) of the output.
    pub fn store_url(&self) -> Result<ObjectStoreUrl> {
        let url = url::Url::parse(&self.location)
            .map_err(|err| DataFusionError::Plan(format!("{}: {err}", self.location)))?;
        ObjectStoreUrl::parse(&url[..url::Position::BeforePath])
    }

    /// The output's root as an object store path.
    pub fn root(&self) -> Result<Path> {
        let url = url::Url::parse(&self.location)
            .map_err(|err| DataFusionError::Plan(format!("{}: {err}", self.location)))?;
        Path::from_url_path(url.path())
            .map_err(|err| DataFusionError::Plan(format!("{}: {err}", self.location)))
    }

    /// Where this run's files are staged.
    pub fn staging_root(&self) -> Result<Path> {
        Ok(self.root()?.join(STAGING_DIR).join(self.run_id.as_str()))
    }
}

/// One destination of a write task: an output (valid rows) or the quarantine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkSpec {
    /// Where and how the files are written.
    pub spec: WriteSpec,
    /// The plan columns written, in order; for the quarantine, followed by the
    /// `_dq_*` columns the write task adds.
    pub columns: Vec<String>,
    /// True for the quarantine: it receives the rows a rule quarantined.
    pub quarantine: bool,
}

/// What one Ballista job writes: its sinks, and the quality checks that route rows
/// between them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteTask {
    /// The run.
    pub run_id: String,
    /// The first is the output whose partitioning the rows are shuffled by.
    pub sinks: Vec<SinkSpec>,
    /// Rules to count and route by.
    pub quality: Option<QualityPlan>,
}

/// The schema of what each write task returns: one row, its [`TaskReport`] as JSON.
pub fn manifest_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        "report",
        DataType::Utf8,
        false,
    )]))
}

/// One file a write task produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrittenFile {
    /// The sink (output name, or `quarantine`).
    #[serde(default)]
    pub output: String,
    /// The Hive folder below the output (`fill_month=2024-01`), empty when unpartitioned.
    pub partition: String,
    /// The file name.
    pub file: String,
    /// Rows in the file.
    pub rows: u64,
    /// Bytes in the file.
    pub bytes: u64,
}

/// What one write task did: its files and, when the job checks quality, its counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskReport {
    /// The files written, all sinks.
    pub files: Vec<WrittenFile>,
    /// Rule counts.
    pub quality: Option<QualityStats>,
}

impl TaskReport {
    /// Reads the reports in a manifest batch.
    pub fn from_manifest(batch: &RecordBatch) -> Result<Vec<TaskReport>> {
        let reports = batch
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| {
                DataFusionError::Internal("write manifest has an unexpected schema".into())
            })?;
        reports
            .iter()
            .flatten()
            .map(|json| {
                serde_json::from_str(json).map_err(|err| {
                    DataFusionError::Internal(format!("cannot read a write report: {err}"))
                })
            })
            .collect()
    }
}

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

/// The plan columns a sink reads (the quarantine's `_dq_*` columns are made, not read).
fn sink_input_columns(sink: &SinkSpec) -> impl Iterator<Item = &String> {
    sink.columns
        .iter()
        .filter(move |c| !(sink.quarantine && QUARANTINE_COLUMNS.contains(&c.as_str())))
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

/// One write task: routes each batch's rows to the sinks and counts the rules.
struct TaskWriter {
    task: WriteTask,
    sinks: Vec<SinkWriter>,
    write_time: Time,
    rows: Count,
}

impl TaskWriter {
    async fn run(mut self, mut input: SendableRecordBatchStream) -> Result<RecordBatch> {
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
            for sink in &mut self.sinks {
                let rows = match (&quarantined, sink.quarantine) {
                    (None, true) => continue,
                    (None, false) => batch.clone(),
                    (Some(mask), true) => filter_record_batch(&batch, mask)?,
                    (Some(mask), false) => filter_record_batch(&batch, &not(mask)?)?,
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

/// Counts each rule's failures and samples in a batch, collects maxima, and returns
/// which rows are quarantined: the write tasks' data-quality evaluation (public for the
/// micro-benchmark).
pub fn evaluate_quality(
    plan: &QualityPlan,
    stats: &mut QualityStats,
    batch: &RecordBatch,
) -> Result<BooleanArray> {
    let rows = batch.num_rows();
    stats.rows += rows as u64;
    let mut quarantined = BooleanArray::from(vec![false; rows]);
    for (index, rule) in plan.rules.iter().enumerate() {
        let flags = flag_column(batch, &rule.flag)?;
        let failed = flags.true_count();
        if failed == 0 {
            continue;
        }
        stats.failures[index] += failed as u64;
        if rule.action == RuleAction::Quarantine {
            quarantined = or(&quarantined, &flags)?;
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
    stats.quarantined += quarantined.true_count() as u64;
    Ok(quarantined)
}

fn flag_column(batch: &RecordBatch, name: &str) -> Result<BooleanArray> {
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
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// An open file of one Hive partition.
struct OpenFile {
    name: String,
    writer: AsyncArrowWriter<BufWriter>,
    rows: u64,
}

/// The files one task writes to one sink.
struct SinkWriter {
    spec: WriteSpec,
    quarantine: bool,
    partition: usize,
    store: Arc<dyn ObjectStore>,
    staging: Path,
    /// Unique per task attempt, so a retried task never overwrites a file.
    attempt: uuid::Uuid,
    next_file: u32,
    /// Columns of the sink's batches, by name, in the order written.
    columns: Vec<String>,
    partition_columns: Vec<usize>,
    data_columns: Vec<usize>,
    file_schema: SchemaRef,
    properties: WriterProperties,
    open: HashMap<String, OpenFile>,
    written: Vec<WrittenFile>,
}

impl SinkWriter {
    fn try_new(
        sink: &SinkSpec,
        partition: usize,
        store: Arc<dyn ObjectStore>,
        input_schema: &SchemaRef,
    ) -> Result<Self> {
        let spec = sink.spec.clone();
        // The sink's batch: its columns from the plan, plus the `_dq_*` ones.
        let mut fields: Vec<Field> = Vec::new();
        for name in &sink.columns {
            if sink.quarantine && QUARANTINE_COLUMNS.contains(&name.as_str()) {
                continue;
            }
            fields.push(input_schema.field_with_name(name)?.clone());
        }
        if sink.quarantine {
            fields.push(Field::new(
                QUARANTINE_COLUMNS[0],
                DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                false,
            ));
            fields.push(Field::new(QUARANTINE_COLUMNS[1], DataType::Utf8, false));
            fields.push(Field::new(QUARANTINE_COLUMNS[2], DataType::Utf8, true));
        }
        let columns: Vec<String> = fields.iter().map(|f| f.name().clone()).collect();
        let partition_columns = spec
            .partition_by
            .iter()
            .map(|name| {
                columns.iter().position(|c| c == name).ok_or_else(|| {
                    DataFusionError::Plan(format!(
                        "output `{}`: partition column `{name}` is not written",
                        spec.output
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let data_columns: Vec<usize> = (0..fields.len())
            .filter(|index| !partition_columns.contains(index))
            .collect();
        let file_schema = Arc::new(Schema::new(
            data_columns
                .iter()
                .map(|&index| {
                    let field = &fields[index];
                    Field::new(
                        field.name(),
                        spark_type(field.data_type()),
                        field.is_nullable(),
                    )
                })
                .collect::<Vec<_>>(),
        ));
        let compression = match spec.compression {
            Compression::Snappy => ParquetCompression::SNAPPY,
            Compression::Zstd => ParquetCompression::ZSTD(ZstdLevel::default()),
            Compression::Gzip => ParquetCompression::GZIP(GzipLevel::default()),
            Compression::Uncompressed => ParquetCompression::UNCOMPRESSED,
        };
        let properties = WriterProperties::builder()
            .set_compression(compression)
            .set_created_by(format!("sluice version {}", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Self {
            staging: spec.staging_root()?,
            spec,
            quarantine: sink.quarantine,
            partition,
            store,
            attempt: uuid::Uuid::new_v4(),
            next_file: 0,
            columns,
            partition_columns,
            data_columns,
            file_schema,
            properties,
            open: HashMap::new(),
            written: Vec::new(),
        })
    }

    /// Writes the rows of a batch holding (at least) the sink's columns.
    async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let schema = batch.schema();
        let indices = self
            .columns
            .iter()
            .map(|name| schema.index_of(name))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let batch = batch.project(&indices)?;
        for (folder, rows) in self.split_by_partition(&batch)? {
            let data = self.file_batch(&rows)?;
            if !self.open.contains_key(&folder) {
                let file = self.open_file(&folder)?;
                self.open.insert(folder.clone(), file);
            }
            let Some(file) = self.open.get_mut(&folder) else {
                continue;
            };
            file.writer.write(&data).await?;
            file.rows += data.num_rows() as u64;
            let size = file.writer.bytes_written() + file.writer.in_progress_size();
            if size as u64 >= self.spec.target_file_size
                && let Some(file) = self.open.remove(&folder)
            {
                let written = close(&self.spec.output, folder, file).await?;
                self.written.push(written);
            }
        }
        Ok(())
    }

    async fn finish(mut self) -> Result<Vec<WrittenFile>> {
        for (folder, file) in std::mem::take(&mut self.open) {
            let written = close(&self.spec.output, folder, file).await?;
            self.written.push(written);
        }
        Ok(self.written)
    }

    fn open_file(&mut self, folder: &str) -> Result<OpenFile> {
        let name = format!(
            "part-{:05}-{}-c{:03}{}.parquet",
            self.partition,
            self.attempt,
            self.next_file,
            self.spec.compression.file_infix()
        );
        self.next_file += 1;
        let mut path = self.staging.clone();
        for segment in folder.split('/').filter(|s| !s.is_empty()) {
            path = path.join(segment);
        }
        let path = path.join(name.as_str());
        let object = BufWriter::new(Arc::clone(&self.store), path);
        let writer = AsyncArrowWriter::try_new(
            object,
            Arc::clone(&self.file_schema),
            Some(self.properties.clone()),
        )?;
        Ok(OpenFile {
            name,
            writer,
            rows: 0,
        })
    }

    /// Groups the rows of a batch by their Hive folder, in order of first appearance.
    fn split_by_partition(&self, batch: &RecordBatch) -> Result<Vec<(String, RecordBatch)>> {
        if self.partition_columns.is_empty() {
            return Ok(vec![(String::new(), batch.clone())]);
        }
        let rendered: Vec<StringArray> = self
            .partition_columns
            .iter()
            .map(|&index| {
                let as_text = cast(batch.column(index), &DataType::Utf8)?;
                as_text
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .cloned()
                    .ok_or_else(|| {
                        DataFusionError::Internal("partition value did not cast to text".into())
                    })
            })
            .collect::<Result<_>>()?;
        let mut order: Vec<String> = Vec::new();
        let mut groups: HashMap<String, Vec<u32>> = HashMap::new();
        for row in 0..batch.num_rows() {
            let folder = self
                .spec
                .partition_by
                .iter()
                .zip(&rendered)
                .map(|(name, values)| {
                    let value = if values.is_null(row) {
                        HIVE_DEFAULT_PARTITION.to_owned()
                    } else {
                        escape_path_name(values.value(row))
                    };
                    format!("{}={value}", escape_path_name(name))
                })
                .collect::<Vec<_>>()
                .join("/");
            match groups.get_mut(&folder) {
                Some(rows) => rows.push(row as u32),
                None => {
                    order.push(folder.clone());
                    groups.insert(folder, vec![row as u32]);
                }
            }
        }
        if order.len() == 1 {
            return Ok(order.into_iter().map(|f| (f, batch.clone())).collect());
        }
        order
            .into_iter()
            .map(|folder| {
                let rows = UInt32Array::from(groups.remove(&folder).unwrap_or_default());
                Ok((folder, take_record_batch(batch, &rows)?))
            })
            .collect()
    }

    /// The data columns of a batch (partition columns live in folder names), in the
    /// types Spark reads.
    fn file_batch(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let columns: Vec<ArrayRef> = self
            .data_columns
            .iter()
            .zip(self.file_schema.fields())
            .map(|(&index, field)| {
                let column = batch.column(index);
                if column.data_type() == field.data_type() {
                    Ok(Arc::clone(column))
                } else {
                    Ok(cast(column, field.data_type())?)
                }
            })
            .collect::<Result<_>>()?;
        Ok(RecordBatch::try_new(
            Arc::clone(&self.file_schema),
            columns,
        )?)
    }
}

async fn close(output: &str, partition: String, file: OpenFile) -> Result<WrittenFile> {
    let OpenFile { name, writer, rows } = file;
    let bytes = writer.bytes_written() as u64 + writer.in_progress_size() as u64;
    let metadata = writer.close().await?;
    let rows = rows.max(metadata.file_metadata().num_rows() as u64);
    Ok(WrittenFile {
        output: output.to_owned(),
        partition,
        file: name,
        rows,
        bytes,
    })
}

/// The type a column is written as so that Spark, Athena and Glue read it: microsecond
/// timestamps, no unsigned integers, no dictionaries or string views.
pub fn spark_type(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        DataType::Timestamp(_, tz) => DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
        DataType::UInt8 => DataType::Int16,
        DataType::UInt16 => DataType::Int32,
        DataType::UInt32 => DataType::Int64,
        DataType::UInt64 => DataType::Decimal128(20, 0),
        DataType::Float16 => DataType::Float32,
        DataType::Dictionary(_, value) => spark_type(value),
        other => other.clone(),
    }
}

/// Escapes a partition folder name or value the way Spark's `escapePathName` does.
pub fn escape_path_name(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        let needs_escape = matches!(
            c,
            '"' | '#'
                | '%'
                | '\''
                | '*'
                | '/'
                | ':'
                | '='
                | '?'
                | '\\'
                | '\u{7f}'
                | '{'
                | '['
                | ']'
                | '^'
        ) || (c as u32) < 0x20;
        if needs_escape {
            escaped.push_str(&format!("%{:02X}", c as u32));
        } else {
            escaped.push(c);
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_values_are_escaped_like_spark() {
        assert_eq!(escape_path_name("2024-01"), "2024-01");
        assert_eq!(escape_path_name("a/b:c"), "a%2Fb%3Ac");
    }
}
