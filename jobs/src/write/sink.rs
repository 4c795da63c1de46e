//! One sink's files: rows split by Hive partition, written as snappy Parquet with Spark's
//! names and types, rolled past the target size.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, StringArray, UInt32Array};
use datafusion::arrow::compute::{cast, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::error::{DataFusionError, Result};
use object_store::ObjectStore;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use parquet::arrow::AsyncArrowWriter;
use parquet::basic::{Compression as ParquetCompression, GzipLevel, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::conf::Compression;
use crate::layout::{
    HIVE_DEFAULT_PARTITION, QUARANTINE_COLUMNS, escape_path_name, quarantine_line_source,
    spark_type,
};
use crate::write::{SinkSpec, WriteSpec, WrittenFile};

/// An open file of one Hive partition.
pub(super) struct OpenFile {
    name: String,
    writer: AsyncArrowWriter<BufWriter>,
    rows: u64,
}

/// The files one task writes to one sink.
pub(super) struct SinkWriter {
    spec: WriteSpec,
    pub(super) quarantine: bool,
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
    pub(super) fn try_new(
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
            match quarantine_line_source(name).filter(|_| sink.quarantine) {
                Some(hidden) => fields.push(
                    input_schema
                        .field_with_name(hidden)?
                        .as_ref()
                        .clone()
                        .with_name(name),
                ),
                None => fields.push(input_schema.field_with_name(name)?.clone()),
            }
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
    pub(super) async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
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

    pub(super) async fn finish(mut self) -> Result<Vec<WrittenFile>> {
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
