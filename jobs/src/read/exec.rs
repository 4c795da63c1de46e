//! [`CsvScanExec`]: the leaf operator that reads a CSV source's file groups, one group
//! per partition, each file streamed: fetched, decompressed, decoded, cut into records
//! and split into fields by the file's own header.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::{ArrayRef, Int64Builder, RecordBatch, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::Sender;

use crate::definition::{MalformedMode, SchemaDrift};
use crate::layout::{
    MALFORMED_COLUMN, RAW_RECORD_COLUMN, SOURCE_FILE_COLUMN, SOURCE_LINE_COLUMN,
};
use crate::read::records::{FieldSplitter, Fields, RecordCutter, decode, raw_text};
use crate::read::{CsvReadOptions, FileCompression, RowKind, TextEncoding};

/// One file of a scan, with its Hive partition values (as text).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CsvFile {
    /// The object store path.
    pub path: String,
    /// Values of the source's partition columns, in order.
    pub partition_values: Vec<String>,
}

/// What a scan is, on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CsvScan {
    /// The object store the files are in (`file:///`, `s3://bucket/`).
    pub store_url: String,
    /// How the files are read.
    pub options: CsvReadOptions,
    /// Which rows the scan yields.
    pub kind: RowKind,
    /// The files of each partition.
    pub groups: Vec<Vec<CsvFile>>,
}

/// Reads a CSV source's files (see the module's overview).
#[derive(Debug)]
pub struct CsvScanExec {
    scan: CsvScan,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl CsvScanExec {
    /// A scan of `scan.groups`, one partition per group (at least one).
    pub fn new(mut scan: CsvScan) -> Self {
        if scan.groups.is_empty() {
            scan.groups.push(Vec::new());
        }
        let schema = scan_schema(&scan.options, scan.kind);
        let properties = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(scan.groups.len()),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Self {
            scan,
            schema,
            properties: Arc::new(properties),
        }
    }

    /// What the scan reads, for the codec.
    pub fn scan(&self) -> &CsvScan {
        &self.scan
    }
}

/// The columns a scan yields: the source's columns and partition columns as strings,
/// then its file and line; malformed rows carry their raw text and fault instead of
/// the source's columns.
pub(crate) fn scan_schema(options: &CsvReadOptions, kind: RowKind) -> SchemaRef {
    let mut fields: Vec<Field> = Vec::new();
    if kind == RowKind::Valid {
        fields.extend(
            options
                .columns
                .iter()
                .map(|name| Field::new(name, DataType::Utf8, true)),
        );
    }
    fields.extend(
        options
            .partition_columns
            .iter()
            .map(|name| Field::new(name, DataType::Utf8, true)),
    );
    fields.push(Field::new(SOURCE_FILE_COLUMN, DataType::Utf8, false));
    fields.push(Field::new(SOURCE_LINE_COLUMN, DataType::Int64, false));
    if kind == RowKind::Malformed {
        fields.push(Field::new(RAW_RECORD_COLUMN, DataType::Utf8, false));
        fields.push(Field::new(MALFORMED_COLUMN, DataType::Utf8, false));
    }
    Arc::new(Schema::new(fields))
}

impl DisplayAs for CsvScanExec {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let files: usize = self.scan.groups.iter().map(Vec::len).sum();
        write!(
            f,
            "CsvScanExec: source={}, rows={:?}, files={files}, partitions={}, mode={:?}",
            self.scan.options.source,
            self.scan.kind,
            self.scan.groups.len(),
            self.scan.options.mode
        )
    }
}

impl ExecutionPlan for CsvScanExec {
    fn name(&self) -> &str {
        "CsvScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(DataFusionError::Internal(
                "CsvScanExec takes no inputs".into(),
            ))
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let files = self
            .scan
            .groups
            .get(partition)
            .cloned()
            .ok_or_else(|| {
                DataFusionError::Internal(format!("CsvScanExec has no partition {partition}"))
            })?;
        let store = context
            .runtime_env()
            .object_store(ObjectStoreUrl::parse(&self.scan.store_url)?)?;
        let batch_size = context.session_config().batch_size();
        let mut builder = RecordBatchReceiverStreamBuilder::new(Arc::clone(&self.schema), 2);
        let sender = builder.tx();
        let reader = GroupReader {
            options: self.scan.options.clone(),
            kind: self.scan.kind,
            schema: Arc::clone(&self.schema),
            batch_size,
        };
        builder.spawn(async move {
            for file in files {
                reader.read_file(store.as_ref(), &file, &sender).await?;
            }
            Ok(())
        });
        Ok(builder.build())
    }
}

/// Reads files of one partition and sends their rows as batches.
struct GroupReader {
    options: CsvReadOptions,
    kind: RowKind,
    schema: SchemaRef,
    batch_size: usize,
}

/// Where a file's fields go: the source column of each field of its header.
enum Layout {
    /// Fields map to these source columns (`None`: a column the file has and the
    /// source does not read).
    Columns(Vec<Option<usize>>),
    /// Every record of the file is malformed for this reason.
    Rejected(String),
}

impl GroupReader {
    async fn read_file(
        &self,
        store: &dyn ObjectStore,
        file: &CsvFile,
        sender: &Sender<Result<RecordBatch>>,
    ) -> Result<()> {
        let path = object_store::path::Path::from(file.path.as_str());
        let stream = store
            .get(&path)
            .await
            .map_err(|err| file_error(file, format!("cannot read it: {err}")))?
            .into_stream()
            .map_err(|err| DataFusionError::External(Box::new(err)))
            .boxed();
        let compression: FileCompressionType = match self.options.compression.of_file(&file.path)
        {
            FileCompression::Gzip => FileCompressionType::GZIP,
            FileCompression::Bzip2 => FileCompressionType::BZIP2,
            FileCompression::Xz => FileCompressionType::XZ,
            FileCompression::Zstd => FileCompressionType::ZSTD,
            FileCompression::Auto | FileCompression::None => FileCompressionType::UNCOMPRESSED,
        };
        let mut stream = compression.convert_stream(stream)?;
        let mut text = TextStream::new(self.options.encoding);
        let mut rows = RowBuilder::new(self, file);
        let mut buffer: Vec<u8> = Vec::new();
        let mut cutter = RecordCutter::new();
        let mut splitter = FieldSplitter::new(&self.options);
        let mut fields = Fields::default();
        let mut layout: Option<Layout> = if self.options.header {
            None
        } else {
            Some(Layout::Columns(
                (0..self.options.columns.len()).map(Some).collect(),
            ))
        };
        let mut done = false;
        while !done {
            match stream.next().await {
                Some(chunk) => {
                    let chunk = chunk.map_err(|err| {
                        file_error(file, format!("cannot read it: {}", crate::frame::strip_context(&err)))
                    })?;
                    text.push(&chunk, &mut buffer);
                }
                None => {
                    text.finish(&mut buffer);
                    done = true;
                }
            }
            while let Some(record) = cutter.next(&buffer, self.options.quote) {
                self.record(
                    file,
                    record.line,
                    record.bytes,
                    false,
                    &mut layout,
                    &mut splitter,
                    &mut fields,
                    &mut rows,
                )?;
                if rows.len() >= self.batch_size {
                    send(sender, rows.finish()?).await;
                }
            }
            if done && let Some((record, open_quote)) = cutter.rest(&buffer) {
                self.record(
                    file,
                    record.line,
                    record.bytes,
                    open_quote,
                    &mut layout,
                    &mut splitter,
                    &mut fields,
                    &mut rows,
                )?;
            }
            cutter.compact(&mut buffer);
        }
        if rows.len() > 0 {
            send(sender, rows.finish()?).await;
        }
        Ok(())
    }

    /// One record of a file: its header, a row, or a malformed row.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        file: &CsvFile,
        line: u64,
        bytes: &[u8],
        open_quote: bool,
        layout: &mut Option<Layout>,
        splitter: &mut FieldSplitter,
        fields: &mut Fields,
        rows: &mut RowBuilder,
    ) -> Result<()> {
        // Blank lines are skipped, as Spark does.
        if bytes.is_empty() || bytes.iter().all(|b| *b == b' ' || *b == b'\t') && !open_quote {
            return Ok(());
        }
        let encoding = self.options.encoding;
        let Some(current) = layout.as_ref() else {
            // The header.
            let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
            splitter.split(bytes, fields);
            let mut names = Vec::with_capacity(fields.len());
            for index in 0..fields.len() {
                match decode(fields.get(index), encoding) {
                    Some(name) => names.push(name.trim().to_owned()),
                    None => {
                        return Err(file_error(
                            file,
                            format!("line {line}: the header is not valid {encoding:?} text"),
                        ));
                    }
                }
            }
            *layout = Some(self.layout(file, &names)?);
            return Ok(());
        };
        let fault = if open_quote {
            Some("a quote opened on this line is never closed".to_owned())
        } else if let Layout::Rejected(reason) = current {
            Some(reason.clone())
        } else {
            None
        };
        let Layout::Columns(targets) = current else {
            return self.malformed(file, line, bytes, fault, rows);
        };
        if fault.is_some() {
            return self.malformed(file, line, bytes, fault, rows);
        }
        splitter.split(bytes, fields);
        if fields.len() != targets.len() {
            let fault = format!(
                "{} fields where the header has {}",
                fields.len(),
                targets.len()
            );
            return self.malformed(file, line, bytes, Some(fault), rows);
        }
        if self.kind == RowKind::Malformed {
            // Only the encoding can still make it malformed.
            let undecodable = (0..fields.len()).find(|&i| decode(fields.get(i), encoding).is_none());
            if let Some(index) = undecodable {
                let fault = format!("field {} is not valid {encoding:?} text", index + 1);
                return self.malformed(file, line, bytes, Some(fault), rows);
            }
            return Ok(());
        }
        let mut values: Vec<Option<std::borrow::Cow<'_, str>>> =
            vec![None; self.options.columns.len()];
        for (index, target) in targets.iter().enumerate() {
            let Some(target) = target else { continue };
            match decode(fields.get(index), encoding) {
                Some(value) => values[*target] = Some(value),
                None => {
                    let fault = format!("field {} is not valid {encoding:?} text", index + 1);
                    return self.malformed(file, line, bytes, Some(fault), rows);
                }
            }
        }
        rows.push_valid(line, &values, &self.options.null_values);
        Ok(())
    }

    /// A malformed record: kept (malformed scans), skipped (valid scans) or the run's
    /// error (`FAILFAST`).
    fn malformed(
        &self,
        file: &CsvFile,
        line: u64,
        bytes: &[u8],
        fault: Option<String>,
        rows: &mut RowBuilder,
    ) -> Result<()> {
        let fault = fault.unwrap_or_else(|| "malformed".to_owned());
        if self.options.mode == MalformedMode::FailFast {
            return Err(file_error(
                file,
                format!("line {line}: malformed row ({fault}); the source's mode is FAILFAST"),
            ));
        }
        if self.kind == RowKind::Malformed {
            rows.push_malformed(line, &raw_text(bytes, self.options.encoding), &fault);
        }
        Ok(())
    }

    /// How a file's header maps to the source's columns.
    fn layout(&self, file: &CsvFile, names: &[String]) -> Result<Layout> {
        let columns = &self.options.columns;
        if names == columns.as_slice() {
            return Ok(Layout::Columns((0..names.len()).map(Some).collect()));
        }
        let missing: Vec<&String> = columns.iter().filter(|c| !names.contains(c)).collect();
        let extra: Vec<&String> = names.iter().filter(|n| !columns.contains(n)).collect();
        let difference = describe_difference(&missing, &extra);
        match self.options.schema_drift {
            SchemaDrift::UnionByName if extra.is_empty() => Ok(Layout::Columns(
                names
                    .iter()
                    .map(|name| columns.iter().position(|c| c == name))
                    .collect(),
            )),
            SchemaDrift::UnionByName => Err(file_error(
                file,
                format!(
                    "its header has columns the source's schema (read from its first files) \
                     lacks: {difference}; declare them by reading a file that has them first, \
                     or set schema_drift: quarantine_file"
                ),
            )),
            SchemaDrift::Fail => Err(file_error(
                file,
                format!("its header differs from the source's columns: {difference}"),
            )),
            SchemaDrift::QuarantineFile => Ok(Layout::Rejected(format!(
                "the file's header differs from the source's columns: {difference}"
            ))),
        }
    }
}

/// Says which columns a header lacks and which it adds (or that only the order differs).
fn describe_difference(missing: &[&String], extra: &[&String]) -> String {
    let list = |names: &[&String]| {
        names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (missing.is_empty(), extra.is_empty()) {
        (true, true) => "the same columns in another order".to_owned(),
        (false, true) => format!("it lacks {}", list(missing)),
        (true, false) => format!("it adds {}", list(extra)),
        (false, false) => format!("it lacks {} and adds {}", list(missing), list(extra)),
    }
}

/// An error of one file, naming the source and the file.
fn file_error(file: &CsvFile, message: String) -> DataFusionError {
    DataFusionError::Execution(format!("{}: {message}", file.path))
}

/// Sends a batch; a closed receiver (the query ended early) is not an error.
async fn send(sender: &Sender<Result<RecordBatch>>, batch: RecordBatch) {
    let _ = sender.send(Ok(batch)).await;
}

/// Bytes decoded to UTF-8 before they are cut into records, for UTF-16 files; other
/// encodings pass through (they are decoded per field).
pub(super) struct TextStream {
    decoder: Option<encoding_rs::Decoder>,
    first: bool,
    encoding: TextEncoding,
}

impl TextStream {
    pub(super) fn new(encoding: TextEncoding) -> Self {
        let decoder = match encoding {
            TextEncoding::Utf16Le => Some(encoding_rs::UTF_16LE.new_decoder()),
            TextEncoding::Utf16Be => Some(encoding_rs::UTF_16BE.new_decoder()),
            _ => None,
        };
        Self {
            decoder,
            first: true,
            encoding,
        }
    }

    pub(super) fn push(&mut self, chunk: &Bytes, buffer: &mut Vec<u8>) {
        let mut chunk: &[u8] = chunk;
        if self.first {
            self.first = false;
            if self.encoding == TextEncoding::Utf8 {
                chunk = chunk.strip_prefix(b"\xef\xbb\xbf").unwrap_or(chunk);
            }
        }
        match &mut self.decoder {
            None => buffer.extend_from_slice(chunk),
            Some(decoder) => Self::decode(decoder, chunk, false, buffer),
        }
    }

    pub(super) fn finish(&mut self, buffer: &mut Vec<u8>) {
        if let Some(decoder) = &mut self.decoder {
            Self::decode(decoder, &[], true, buffer);
        }
    }

    fn decode(decoder: &mut encoding_rs::Decoder, mut input: &[u8], last: bool, buffer: &mut Vec<u8>) {
        loop {
            let room = decoder
                .max_utf8_buffer_length(input.len())
                .unwrap_or(input.len() * 3 + 16);
            let start = buffer.len();
            buffer.resize(start + room, 0);
            let (result, read, written, _) = decoder.decode_to_utf8(input, &mut buffer[start..], last);
            buffer.truncate(start + written);
            input = &input[read..];
            if matches!(result, encoding_rs::CoderResult::InputEmpty) {
                break;
            }
        }
    }
}

/// The rows of one file being built into a batch.
struct RowBuilder {
    schema: SchemaRef,
    kind: RowKind,
    columns: Vec<StringBuilder>,
    partitions: Vec<String>,
    path: String,
    lines: Int64Builder,
    raw: StringBuilder,
    faults: StringBuilder,
    rows: usize,
}

impl RowBuilder {
    fn new(reader: &GroupReader, file: &CsvFile) -> Self {
        let columns = if reader.kind == RowKind::Valid {
            reader.options.columns.len()
        } else {
            0
        };
        Self {
            schema: Arc::clone(&reader.schema),
            kind: reader.kind,
            columns: (0..columns).map(|_| StringBuilder::new()).collect(),
            partitions: file.partition_values.clone(),
            path: file.path.clone(),
            lines: Int64Builder::new(),
            raw: StringBuilder::new(),
            faults: StringBuilder::new(),
            rows: 0,
        }
    }

    fn len(&self) -> usize {
        self.rows
    }

    fn push_valid(&mut self, line: u64, values: &[Option<std::borrow::Cow<'_, str>>], nulls: &[String]) {
        for (builder, value) in self.columns.iter_mut().zip(values) {
            match value {
                Some(text) if !text.is_empty() && !nulls.iter().any(|n| n == text) => {
                    builder.append_value(text)
                }
                _ => builder.append_null(),
            }
        }
        self.lines.append_value(line as i64);
        self.rows += 1;
    }

    fn push_malformed(&mut self, line: u64, raw: &str, fault: &str) {
        self.lines.append_value(line as i64);
        self.raw.append_value(raw);
        self.faults.append_value(fault);
        self.rows += 1;
    }

    /// The rows so far as a batch; the builder starts over.
    fn finish(&mut self) -> Result<RecordBatch> {
        let rows = std::mem::take(&mut self.rows);
        let mut arrays: Vec<ArrayRef> = Vec::new();
        for builder in &mut self.columns {
            arrays.push(Arc::new(builder.finish()));
        }
        for value in &self.partitions {
            let mut builder = StringBuilder::with_capacity(rows, value.len() * rows);
            for _ in 0..rows {
                builder.append_value(value);
            }
            arrays.push(Arc::new(builder.finish()));
        }
        let mut files = StringBuilder::with_capacity(rows, self.path.len() * rows);
        for _ in 0..rows {
            files.append_value(&self.path);
        }
        arrays.push(Arc::new(files.finish()));
        arrays.push(Arc::new(self.lines.finish()));
        if self.kind == RowKind::Malformed {
            arrays.push(Arc::new(self.raw.finish()));
            arrays.push(Arc::new(self.faults.finish()));
        }
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), arrays)?)
    }
}
