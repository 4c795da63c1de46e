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

use datafusion::arrow::array::UInt32Array;
use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, StringArray, UInt64Array};
use datafusion::arrow::compute::{cast, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
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

use crate::conf::Compression;

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

/// The schema of the manifest each write task returns: one row per file written.
pub fn manifest_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("partition", DataType::Utf8, false),
        Field::new("file", DataType::Utf8, false),
        Field::new("rows", DataType::UInt64, false),
        Field::new("bytes", DataType::UInt64, false),
    ]))
}

/// One file a write task produced, as read back from its manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrittenFile {
    /// The Hive folder below the output (`fill_month=2024-01`), empty when unpartitioned.
    pub partition: String,
    /// The file name.
    pub file: String,
    /// Rows in the file.
    pub rows: u64,
    /// Bytes in the file.
    pub bytes: u64,
}

impl WrittenFile {
    /// Reads the manifest rows of a batch.
    pub fn from_manifest(batch: &RecordBatch) -> Result<Vec<WrittenFile>> {
        let column = |index: usize| batch.column(index).clone();
        let partition = column(0);
        let file = column(1);
        let rows = column(2);
        let bytes = column(3);
        let (Some(partition), Some(file), Some(rows), Some(bytes)) = (
            partition.as_any().downcast_ref::<StringArray>(),
            file.as_any().downcast_ref::<StringArray>(),
            rows.as_any().downcast_ref::<UInt64Array>(),
            bytes.as_any().downcast_ref::<UInt64Array>(),
        ) else {
            return Err(DataFusionError::Internal(
                "write manifest has an unexpected schema".into(),
            ));
        };
        Ok((0..batch.num_rows())
            .map(|row| WrittenFile {
                partition: partition.value(row).to_owned(),
                file: file.value(row).to_owned(),
                rows: rows.value(row),
                bytes: bytes.value(row),
            })
            .collect())
    }
}

/// The physical plan that writes `input` as `spec` says. Rows are first shuffled by the
/// partition columns, so that each Hive partition is written by one task — a few large
/// files per partition rather than one small file per task and partition.
pub fn write_plan(
    input: Arc<dyn ExecutionPlan>,
    spec: WriteSpec,
    tasks: usize,
) -> Result<Arc<dyn ExecutionPlan>> {
    let input = if spec.partition_by.is_empty() {
        input
    } else {
        let schema = input.schema();
        let keys = spec
            .partition_by
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
    Ok(Arc::new(ParquetWriteExec::try_new(input, spec)?))
}

/// Writes each input partition's rows to staged Parquet files and returns their manifest.
#[derive(Debug)]
pub struct ParquetWriteExec {
    input: Arc<dyn ExecutionPlan>,
    spec: WriteSpec,
    properties: Arc<PlanProperties>,
}

impl ParquetWriteExec {
    /// Writes `input` as `spec` says. Fails when a partition column is missing.
    pub fn try_new(input: Arc<dyn ExecutionPlan>, spec: WriteSpec) -> Result<Self> {
        let schema = input.schema();
        for column in &spec.partition_by {
            if schema.index_of(column).is_err() {
                return Err(DataFusionError::Plan(format!(
                    "output `{}`: partition column `{column}` is not in the result ({})",
                    spec.output,
                    schema
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
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
            spec,
            properties: Arc::new(properties),
        })
    }

    /// What this operator writes.
    pub fn spec(&self) -> &WriteSpec {
        &self.spec
    }
}

impl DisplayAs for ParquetWriteExec {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "ParquetWriteExec: output={}, location={}, partition_by=[{}], compression={:?}",
            self.spec.output,
            self.spec.location,
            self.spec.partition_by.join(", "),
            self.spec.compression
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

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [input] = <[_; 1]>::try_from(children)
            .map_err(|_| DataFusionError::Internal("ParquetWriteExec takes one input".into()))?;
        Ok(Arc::new(Self::try_new(input, self.spec.clone())?))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, Arc::clone(&context))?;
        let store = context.runtime_env().object_store(self.spec.store_url()?)?;
        let task = PartitionWriter::try_new(self.spec.clone(), partition, store, input.schema())?;
        let manifest = futures::stream::once(task.run(input));
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            manifest_schema(),
            manifest,
        )))
    }
}

/// An open file of one Hive partition.
struct OpenFile {
    name: String,
    writer: AsyncArrowWriter<BufWriter>,
    rows: u64,
}

/// The write of one input partition (one task).
struct PartitionWriter {
    spec: WriteSpec,
    partition: usize,
    store: Arc<dyn ObjectStore>,
    staging: Path,
    /// Unique per task attempt, so a retried task never overwrites a file.
    attempt: uuid::Uuid,
    next_file: u32,
    partition_columns: Vec<usize>,
    data_columns: Vec<usize>,
    file_schema: SchemaRef,
    properties: WriterProperties,
}

impl PartitionWriter {
    fn try_new(
        spec: WriteSpec,
        partition: usize,
        store: Arc<dyn ObjectStore>,
        input_schema: SchemaRef,
    ) -> Result<Self> {
        let partition_columns = spec
            .partition_by
            .iter()
            .map(|name| input_schema.index_of(name))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let data_columns: Vec<usize> = (0..input_schema.fields().len())
            .filter(|index| !partition_columns.contains(index))
            .collect();
        let file_schema = Arc::new(Schema::new(
            data_columns
                .iter()
                .map(|&index| {
                    let field = input_schema.field(index);
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
            partition,
            store,
            attempt: uuid::Uuid::new_v4(),
            next_file: 0,
            partition_columns,
            data_columns,
            file_schema,
            properties,
        })
    }

    async fn run(mut self, mut input: SendableRecordBatchStream) -> Result<RecordBatch> {
        let mut open: HashMap<String, OpenFile> = HashMap::new();
        let mut written: Vec<WrittenFile> = Vec::new();
        while let Some(batch) = input.next().await {
            let batch = batch?;
            if batch.num_rows() == 0 {
                continue;
            }
            for (folder, rows) in self.split_by_partition(&batch)? {
                let data = self.file_batch(&rows)?;
                if !open.contains_key(&folder) {
                    let file = self.open_file(&folder)?;
                    open.insert(folder.clone(), file);
                }
                let Some(file) = open.get_mut(&folder) else {
                    continue;
                };
                file.writer.write(&data).await?;
                file.rows += data.num_rows() as u64;
                let size = file.writer.bytes_written() + file.writer.in_progress_size();
                if size as u64 >= self.spec.target_file_size
                    && let Some(file) = open.remove(&folder)
                {
                    written.push(close(folder, file).await?);
                }
            }
        }
        for (folder, file) in open {
            written.push(close(folder, file).await?);
        }
        written.sort_by(|a, b| (&a.partition, &a.file).cmp(&(&b.partition, &b.file)));
        manifest_batch(&written)
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

async fn close(partition: String, file: OpenFile) -> Result<WrittenFile> {
    let OpenFile { name, writer, rows } = file;
    let bytes = writer.bytes_written() as u64 + writer.in_progress_size() as u64;
    let metadata = writer.close().await?;
    let rows = rows.max(metadata.file_metadata().num_rows() as u64);
    Ok(WrittenFile {
        partition,
        file: name,
        rows,
        bytes,
    })
}

fn manifest_batch(files: &[WrittenFile]) -> Result<RecordBatch> {
    let partitions = StringArray::from_iter_values(files.iter().map(|f| f.partition.as_str()));
    let names = StringArray::from_iter_values(files.iter().map(|f| f.file.as_str()));
    let rows = UInt64Array::from_iter_values(files.iter().map(|f| f.rows));
    let bytes = UInt64Array::from_iter_values(files.iter().map(|f| f.bytes));
    Ok(RecordBatch::try_new(
        manifest_schema(),
        vec![
            Arc::new(partitions),
            Arc::new(names),
            Arc::new(rows),
            Arc::new(bytes),
        ],
    )?)
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
