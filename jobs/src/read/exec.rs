//! [`LandingCsvSource`]: Sluice's CSV reader as a DataFusion file source, so a scan is
//! an ordinary `DataSourceExec` over a `FileScanConfig` — Ballista restricts its file
//! groups to each task's partitions as it does for any file scan. Each file is
//! streamed: fetched, decompressed, decoded, cut into records and split into fields by
//! the file's own header.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, Int64Builder, RecordBatch, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use datafusion::common::runtime::SpawnedTask;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{
    FileGroup, FileOpenFuture, FileOpener, FileScanConfig, FileScanConfigBuilder, FileSource,
};
use datafusion::datasource::projection::{ProjectionOpener, SplitProjection};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use datafusion::physical_plan::{DisplayFormatType, ExecutionPlan};
use datafusion::scalar::ScalarValue;
use futures::StreamExt;
use object_store::ObjectStore;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::Sender;

use crate::definition::{MalformedMode, SchemaDrift};
use crate::layout::{MALFORMED_COLUMN, RAW_RECORD_COLUMN, SOURCE_FILE_COLUMN, SOURCE_LINE_COLUMN};
use crate::read::bytes::{TextStream, file_bytes};
use crate::read::json::{JsonBatch, syntax_fault};
use crate::read::records::{FieldSplitter, Fields, RecordCutter, decode, raw_text};
use crate::read::{CsvReadOptions, FixedLayout, RowKind};
use crate::read::{TextEncoding, file_url};

/// One file of a scan, with its Hive partition values (as text).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CsvFile {
    /// The object store path.
    pub path: String,
    /// The file as a user names it (`file:///…`, `s3://bucket/…`): in messages and the
    /// rows' source-file column. Not on the wire: the opener derives it from the scan's
    /// store.
    #[serde(skip)]
    pub url: String,
    /// Its size in bytes.
    pub size: u64,
    /// Values of the source's partition columns, in order.
    pub partition_values: Vec<String>,
    /// The part of a split file this task reads: the records that start in these bytes
    /// (`None`: the whole file).
    #[serde(default)]
    pub range: Option<(u64, u64)>,
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

/// The scan of `scan.groups`, one partition per group: a `DataSourceExec` over a
/// `FileScanConfig` whose source is [`LandingCsvSource`]. No group is no partition (a
/// task that owns none of the scan's partitions gets it so, and a union counts on it).
pub fn csv_scan(scan: CsvScan) -> Result<Arc<dyn ExecutionPlan>> {
    let source = LandingCsvSource::new(scan.options, scan.kind);
    let groups: Vec<FileGroup> = scan
        .groups
        .into_iter()
        .map(|files| {
            FileGroup::new(
                files
                    .into_iter()
                    .map(|file| {
                        let part = PartitionedFile::new(file.path, file.size)
                            .with_partition_values(
                                file.partition_values
                                    .into_iter()
                                    .map(|value| ScalarValue::Utf8(Some(value)))
                                    .collect(),
                            );
                        match file.range {
                            Some((start, end)) => part.with_range(start as i64, end as i64),
                            None => part,
                        }
                    })
                    .collect(),
            )
        })
        .collect();
    let config =
        FileScanConfigBuilder::new(ObjectStoreUrl::parse(&scan.store_url)?, Arc::new(source))
            .with_file_groups(groups)
            .build();
    Ok(DataSourceExec::from_data_source(config))
}

/// The scan a plan node is, when it is a [`csv_scan`] (for the codec).
pub fn as_csv_scan(plan: &dyn ExecutionPlan) -> Option<CsvScan> {
    let exec = plan.downcast_ref::<DataSourceExec>()?;
    let config =
        (exec.data_source().as_ref() as &dyn std::any::Any).downcast_ref::<FileScanConfig>()?;
    let source =
        (config.file_source().as_ref() as &dyn std::any::Any).downcast_ref::<LandingCsvSource>()?;
    let groups = config
        .file_groups
        .iter()
        .map(|group| {
            group
                .files()
                .iter()
                .map(|file| CsvFile {
                    path: file.object_meta.location.to_string(),
                    url: file_url(config.object_store_url.as_str(), &file.object_meta.location),
                    size: file.object_meta.size,
                    partition_values: file
                        .partition_values
                        .iter()
                        .map(|value| match value {
                            ScalarValue::Utf8(Some(text)) => text.clone(),
                            other => other.to_string(),
                        })
                        .collect(),
                    range: file_range(file),
                })
                .collect()
        })
        .collect();
    Some(CsvScan {
        store_url: config.object_store_url.as_str().to_owned(),
        options: source.reader.options.clone(),
        kind: source.reader.kind,
        groups,
    })
}

/// The byte range of a split file's part.
fn file_range(file: &PartitionedFile) -> Option<(u64, u64)> {
    file.range
        .as_ref()
        .map(|range| (range.start.max(0) as u64, range.end.max(0) as u64))
}

/// The columns a file yields: the source's columns as strings, then its file and line;
/// malformed rows carry their raw text and fault instead of the source's columns. The
/// partition columns follow (added from the folders).
pub(crate) fn file_schema(options: &CsvReadOptions, kind: RowKind) -> SchemaRef {
    let mut fields: Vec<Field> = Vec::new();
    if kind == RowKind::Valid
        && let Some(json) = &options.json
    {
        fields.extend(
            json.0
                .fields()
                .iter()
                .map(|field| field.as_ref().clone().with_nullable(true)),
        );
    } else if kind == RowKind::Valid {
        fields.extend(
            options
                .columns
                .iter()
                .map(|name| Field::new(name, DataType::Utf8, true)),
        );
    }
    fields.push(Field::new(SOURCE_FILE_COLUMN, DataType::Utf8, false));
    fields.push(Field::new(SOURCE_LINE_COLUMN, DataType::Int64, false));
    if kind == RowKind::Malformed {
        fields.push(Field::new(RAW_RECORD_COLUMN, DataType::Utf8, false));
        fields.push(Field::new(MALFORMED_COLUMN, DataType::Utf8, false));
    }
    Arc::new(Schema::new(fields))
}

/// A JSON source's columns as the decoder reads them: every one nullable.
fn columns_schema(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|field| field.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ))
}

/// The source's partition columns, as strings.
fn partition_fields(options: &CsvReadOptions) -> Vec<FieldRef> {
    options
        .partition_columns
        .iter()
        .map(|name| Arc::new(Field::new(name, DataType::Utf8, true)))
        .collect()
}

/// Sluice's CSV reader as a DataFusion [`FileSource`] (see the module's overview).
#[derive(Clone)]
pub struct LandingCsvSource {
    reader: Arc<GroupReader>,
    table_schema: TableSchema,
    projection: SplitProjection,
    metrics: ExecutionPlanMetricsSet,
}

impl LandingCsvSource {
    fn new(options: CsvReadOptions, kind: RowKind) -> Self {
        let table_schema = TableSchema::builder(file_schema(&options, kind))
            .with_table_partition_cols(partition_fields(&options))
            .build();
        Self {
            reader: Arc::new(GroupReader {
                schema: file_schema(&options, kind),
                options,
                kind,
                batch_size: 8192,
            }),
            projection: SplitProjection::unprojected(&table_schema),
            table_schema,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl FileSource for LandingCsvSource {
    fn create_file_opener(
        &self,
        object_store: Arc<dyn ObjectStore>,
        base_config: &FileScanConfig,
        _partition: usize,
    ) -> Result<Arc<dyn FileOpener>> {
        let opener = Arc::new(CsvFileOpener {
            store_url: base_config.object_store_url.as_str().to_owned(),
            reader: Arc::clone(&self.reader),
            store: object_store,
        }) as Arc<dyn FileOpener>;
        // Appends the partition columns from each file's values.
        ProjectionOpener::try_new(
            self.projection.clone(),
            opener,
            self.table_schema.file_schema(),
        )
    }

    fn table_schema(&self) -> &TableSchema {
        &self.table_schema
    }

    fn with_batch_size(&self, batch_size: usize) -> Arc<dyn FileSource> {
        let mut source = self.clone();
        let mut reader = (*self.reader).clone();
        reader.batch_size = batch_size.max(1);
        source.reader = Arc::new(reader);
        Arc::new(source)
    }

    fn metrics(&self) -> &ExecutionPlanMetricsSet {
        &self.metrics
    }

    fn file_type(&self) -> &str {
        "csv"
    }

    // Records may span lines and line numbers count from the file's start: a file is
    // read whole, by one task.
    fn supports_repartitioning(&self) -> bool {
        false
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        datafusion::physical_plan::apply_expression_roots(self.projection.source.iter(), f)
    }

    fn fmt_extra(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            ", reader=sluice, rows={:?}, mode={:?}",
            self.reader.kind, self.reader.options.mode
        )
    }
}

/// Opens one file of a scan: its rows, streamed from a task that reads it.
struct CsvFileOpener {
    /// `file:///`, `s3://bucket/`: what file paths are shown below.
    store_url: String,
    reader: Arc<GroupReader>,
    store: Arc<dyn ObjectStore>,
}

impl FileOpener for CsvFileOpener {
    fn open(&self, file: PartitionedFile) -> Result<FileOpenFuture> {
        let reader = Arc::clone(&self.reader);
        let store = Arc::clone(&self.store);
        let url = file_url(&self.store_url, &file.object_meta.location);
        Ok(Box::pin(async move {
            let file = CsvFile {
                path: file.object_meta.location.to_string(),
                url,
                size: file.object_meta.size,
                partition_values: Vec::new(),
                range: file_range(&file),
            };
            let (sender, receiver) = tokio::sync::mpsc::channel::<Result<RecordBatch>>(2);
            // Aborted when the stream is dropped (a LIMIT stops reading the file).
            let task = SpawnedTask::spawn(async move {
                if let Err(err) = reader.read_file(store.as_ref(), &file, &sender).await {
                    let _ = sender.send(Err(err)).await;
                }
            });
            let rows = futures::stream::unfold((receiver, task), |(mut receiver, task)| async {
                receiver.recv().await.map(|batch| (batch, (receiver, task)))
            });
            Ok(rows.boxed())
        }))
    }
}

/// The part of a file a task reads. A split file is read from its start: its records
/// are cut exactly as when it is read whole (a quoted value spanning lines, line
/// numbers), and only those that start inside the range become rows; the header is
/// read by every part.
struct Part {
    range: Option<(u64, u64)>,
    needs_header: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Before,
    Inside,
    After,
}

impl Part {
    fn place(&self, offset: u64, header_read: bool) -> Place {
        match self.range {
            None => Place::Inside,
            // The header goes to every part.
            Some(_) if self.needs_header && !header_read => Place::Inside,
            Some((start, _)) if offset < start => Place::Before,
            Some((_, end)) if offset >= end => Place::After,
            Some(_) => Place::Inside,
        }
    }
}

/// Reads files and sends their rows as batches.
#[derive(Debug, Clone)]
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
        let mut stream = file_bytes(store, &file.path, self.options.compression)
            .await
            .map_err(|message| file_error(file, message))?;
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
        // Fixed-width lines have no quotes: cutting with the newline as the quote makes
        // every newline end a record.
        let quote = if self.options.fixed_width.is_some() {
            b'\n'
        } else {
            self.options.quote
        };
        let mut json = self
            .options
            .json
            .as_ref()
            .map(|columns| JsonBatch::new(columns_schema(&columns.0)));
        let part = Part {
            range: file.range,
            needs_header: self.options.header && self.options.fixed_width.is_none(),
        };
        let mut done = false;
        while !done {
            match stream.next().await {
                Some(chunk) => {
                    let chunk = chunk.map_err(|err| {
                        file_error(
                            file,
                            format!("cannot read it: {}", crate::frame::strip_context(&err)),
                        )
                    })?;
                    text.push(&chunk, &mut buffer);
                }
                None => {
                    text.finish(&mut buffer);
                    done = true;
                }
            }
            if let Some(batch) = json.as_mut() {
                while let Some(record) = cutter.next(&buffer, b'\n') {
                    match part.place(record.offset, true) {
                        Place::Before => continue,
                        Place::After => {
                            done = true;
                            break;
                        }
                        Place::Inside => {}
                    }
                    self.json_line(file, record.line, record.bytes, batch, &mut rows)?;
                    if batch.len() >= self.batch_size {
                        self.send_json(file, batch, &mut rows, sender).await?;
                    }
                }
                if done
                    && let Some((record, _)) = cutter.rest(&buffer)
                    && part.place(record.offset, true) == Place::Inside
                {
                    self.json_line(file, record.line, record.bytes, batch, &mut rows)?;
                }
                if done {
                    self.send_json(file, batch, &mut rows, sender).await?;
                }
                cutter.compact(&mut buffer);
                continue;
            }
            while let Some(record) = cutter.next(&buffer, quote) {
                match part.place(record.offset, layout.is_some()) {
                    Place::Before => continue,
                    Place::After => {
                        done = true;
                        break;
                    }
                    Place::Inside => {}
                }
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
            if done
                && let Some((record, open_quote)) = cutter.rest(&buffer)
                && part.place(record.offset, layout.is_some()) == Place::Inside
            {
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
        if let Some(fixed) = &self.options.fixed_width {
            return self.fixed_width_record(file, line, bytes, fixed, rows);
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
        if self.kind == RowKind::Malformed {
            // Only whether it is malformed matters here: the fields are counted (not
            // split, for a record without quotes) and the text checked as a whole.
            let count = splitter.count(bytes, fields);
            if count != targets.len() {
                let fault = format!("{count} fields where the header has {}", targets.len());
                return self.malformed(file, line, bytes, Some(fault), rows);
            }
            let whole = match encoding {
                TextEncoding::Utf8 | TextEncoding::Utf16Le | TextEncoding::Utf16Be => {
                    std::str::from_utf8(bytes).is_ok()
                }
                // Every byte is a character.
                TextEncoding::Latin1 | TextEncoding::Windows1252 => true,
            };
            if whole {
                return Ok(());
            }
            splitter.split(bytes, fields);
            let undecodable =
                (0..fields.len()).find(|&i| decode(fields.get(i), encoding).is_none());
            if let Some(index) = undecodable {
                let fault = format!("field {} is not valid {encoding:?} text", index + 1);
                return self.malformed(file, line, bytes, Some(fault), rows);
            }
            return Ok(());
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

    /// One line of a JSON lines file: skipped when blank, malformed when it is not a
    /// JSON object (or not valid text), else kept for the batch's decode.
    fn json_line(
        &self,
        file: &CsvFile,
        line: u64,
        bytes: &[u8],
        batch: &mut JsonBatch,
        rows: &mut RowBuilder,
    ) -> Result<()> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let bytes = if line == 1 {
            bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes)
        } else {
            bytes
        };
        let encoding = self.options.encoding;
        let Some(text) = decode(bytes, encoding) else {
            let fault = format!("the line is not valid {encoding:?} text");
            return self.malformed(file, line, bytes, Some(fault), rows);
        };
        if let Some(fault) = syntax_fault(text.as_bytes()) {
            if self.options.mode == MalformedMode::FailFast {
                // The run fails at the file's first malformed line: one of the lines
                // kept for decoding may come before this one.
                if let Some((line, bytes, fault)) = batch.decode().faults.into_iter().next() {
                    return self.malformed(file, line, &bytes, Some(fault), rows);
                }
            }
            return self.malformed(file, line, bytes, Some(fault), rows);
        }
        batch.push(line, text.as_bytes());
        Ok(())
    }

    /// Decodes the JSON lines kept so far: lines whose values do not fit the source's
    /// types are malformed; the rest are sent as rows (valid scans).
    async fn send_json(
        &self,
        file: &CsvFile,
        batch: &mut JsonBatch,
        rows: &mut RowBuilder,
        sender: &Sender<Result<RecordBatch>>,
    ) -> Result<()> {
        let decoded = batch.decode();
        for (line, bytes, fault) in decoded.faults {
            self.malformed(file, line, &bytes, Some(fault), rows)?;
        }
        if self.kind == RowKind::Malformed {
            if rows.len() > 0 {
                send(sender, rows.finish()?).await;
            }
            return Ok(());
        }
        let Some((values, lines)) = decoded.rows else {
            return Ok(());
        };
        let mut columns = values.columns().to_vec();
        let mut files = StringBuilder::with_capacity(lines.len(), file.url.len() * lines.len());
        for _ in 0..lines.len() {
            files.append_value(&file.url);
        }
        columns.push(Arc::new(files.finish()));
        columns.push(Arc::new(Int64Array::from_iter_values(
            lines.iter().map(|line| *line as i64),
        )));
        send(
            sender,
            RecordBatch::try_new(Arc::clone(&self.schema), columns)?,
        )
        .await;
        Ok(())
    }

    /// One line of a fixed-width file: a row, a line of another record type (skipped),
    /// or a malformed row (too short, or not valid text).
    fn fixed_width_record(
        &self,
        file: &CsvFile,
        line: u64,
        bytes: &[u8],
        fixed: &FixedLayout,
        rows: &mut RowBuilder,
    ) -> Result<()> {
        if line <= fixed.skip_lines {
            return Ok(());
        }
        let encoding = self.options.encoding;
        let bytes = if line == 1 {
            bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes)
        } else {
            bytes
        };
        let Some(text) = decode(bytes, encoding) else {
            let fault = format!("the line is not valid {encoding:?} text");
            return self.malformed(file, line, bytes, Some(fault), rows);
        };
        // Character offsets (not bytes): positions count characters in every encoding.
        let ascii = text.is_ascii();
        let offsets: Vec<usize> = if ascii {
            Vec::new()
        } else {
            text.char_indices()
                .map(|(at, _)| at)
                .chain(std::iter::once(text.len()))
                .collect()
        };
        let length = if ascii { text.len() } else { offsets.len() - 1 };
        let slice = |start: usize, width: usize| -> Option<&str> {
            let end = start + width;
            if end > length {
                return None;
            }
            Some(if ascii {
                &text[start..end]
            } else {
                &text[offsets[start]..offsets[end]]
            })
        };
        if let Some((start, width, values)) = &fixed.record_type {
            match slice(*start, *width) {
                Some(kind) if values.iter().any(|value| value == kind.trim()) => {}
                // Another record type, or a line too short to have one: not a row.
                _ => return Ok(()),
            }
        }
        if length < fixed.record_length() {
            let fault = format!(
                "{length} characters where the layout needs {}",
                fixed.record_length()
            );
            return self.malformed(file, line, bytes, Some(fault), rows);
        }
        if self.kind == RowKind::Malformed {
            return Ok(());
        }
        let values: Vec<Option<std::borrow::Cow<'_, str>>> = fixed
            .columns
            .iter()
            .map(|(start, width)| {
                slice(*start, *width).map(|value| {
                    let value = if fixed.trim { value.trim() } else { value };
                    std::borrow::Cow::Borrowed(value)
                })
            })
            .collect();
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

/// How a header differs from the source's columns (`None` when it is the same), said as
/// the file's: "it lacks `c`", "it adds `d`", "the same columns in another order".
pub(crate) fn header_difference(columns: &[String], names: &[String]) -> Option<String> {
    if names == columns {
        return None;
    }
    let missing: Vec<&String> = columns.iter().filter(|c| !names.contains(c)).collect();
    let extra: Vec<&String> = names.iter().filter(|n| !columns.contains(n)).collect();
    Some(describe_difference(&missing, &extra))
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
    DataFusionError::Execution(format!("{}: {message}", file.url))
}

/// Sends a batch; a closed receiver (the query ended early) is not an error.
async fn send(sender: &Sender<Result<RecordBatch>>, batch: RecordBatch) {
    let _ = sender.send(Ok(batch)).await;
}

/// The rows of one file being built into a batch.
struct RowBuilder {
    schema: SchemaRef,
    kind: RowKind,
    columns: Vec<StringBuilder>,
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
            path: file.url.clone(),
            lines: Int64Builder::new(),
            raw: StringBuilder::new(),
            faults: StringBuilder::new(),
            rows: 0,
        }
    }

    fn len(&self) -> usize {
        self.rows
    }

    fn push_valid(
        &mut self,
        line: u64,
        values: &[Option<std::borrow::Cow<'_, str>>],
        nulls: &[String],
    ) {
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

#[cfg(test)]
mod tests {
    //! Random and truncated bytes through the reader: every file ends in rows, malformed
    //! rows or an error naming it — never a panic or a hang.

    use datafusion::prelude::SessionContext;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::{CsvFile, CsvScan, csv_scan};
    use crate::definition::{MalformedMode, SchemaDrift};
    use crate::read::{CsvReadOptions, FileCompression, FixedLayout, RowKind, TextEncoding};

    /// Bytes that look like CSV often enough to reach every branch: delimiters, quotes,
    /// CR, LF, non-ASCII and invalid UTF-8.
    fn random_csv(rng: &mut StdRng) -> Vec<u8> {
        const ALPHABET: &[u8] = b"ab1,,,\"\"\n\n\r \t\xe9\xff\xc3\xa9x{}:[]";
        let mut bytes = b"a,b,c\n".to_vec();
        let len = rng.random_range(0..400);
        bytes.extend((0..len).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())]));
        bytes
    }

    fn options(mode: MalformedMode, encoding: TextEncoding) -> CsvReadOptions {
        CsvReadOptions {
            source: "fuzz".into(),
            header: true,
            delimiter: b',',
            quote: b'"',
            null_values: Vec::new(),
            encoding,
            compression: FileCompression::Auto,
            mode,
            schema_drift: SchemaDrift::QuarantineFile,
            columns: vec!["a".into(), "b".into(), "c".into()],
            partition_columns: Vec::new(),
            fixed_width: None,
            json: None,
        }
    }

    #[tokio::test]
    async fn random_and_truncated_files_never_panic() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let ctx = SessionContext::new();
        let mut rng = StdRng::seed_from_u64(20261202);
        let encodings = [
            TextEncoding::Utf8,
            TextEncoding::Latin1,
            TextEncoding::Windows1252,
            TextEncoding::Utf16Le,
        ];
        let mut gzip = Vec::new();
        {
            use std::io::Write;
            let mut encoder =
                flate2::write::GzEncoder::new(&mut gzip, flate2::Compression::default());
            encoder.write_all(b"a,b,c\n1,2,3\n4,5\n").expect("gzip");
            encoder.finish().expect("gzip");
        }
        for case in 0..300 {
            let (name, bytes) = match case % 4 {
                // JSON lines of every type the columns may hold, cut anywhere.
                3 => {
                    let mut bytes = Vec::new();
                    for _ in 0..rng.random_range(0..20) {
                        const VALUES: [&str; 8] = [
                            "1",
                            "-2.5",
                            "\"x\"",
                            "null",
                            "[1]",
                            "{\"n\": 1}",
                            "true",
                            "1e400",
                        ];
                        let value = |rng: &mut StdRng| VALUES[rng.random_range(0..VALUES.len())];
                        let line = format!(
                            "{{\"a\": {}, \"b\": {}, \"c\": {}}}\n",
                            value(&mut rng),
                            value(&mut rng),
                            value(&mut rng)
                        );
                        bytes.extend_from_slice(line.as_bytes());
                    }
                    bytes.truncate(rng.random_range(0..bytes.len().max(1)));
                    (format!("f{case}.json"), bytes)
                }
                0 => (format!("f{case}.csv"), random_csv(&mut rng)),
                // A gzip stream cut anywhere.
                1 => {
                    let cut = rng.random_range(0..gzip.len());
                    (format!("f{case}.csv.gz"), gzip[..cut].to_vec())
                }
                _ => {
                    let mut bytes = random_csv(&mut rng);
                    bytes.truncate(rng.random_range(0..bytes.len().max(1)));
                    (format!("f{case}.csv"), bytes)
                }
            };
            let path = dir.path().join(&name);
            std::fs::write(&path, &bytes).expect("a file");
            let file = CsvFile {
                path: path
                    .display()
                    .to_string()
                    .trim_start_matches('/')
                    .to_owned(),
                url: format!("file://{}", path.display()),
                size: bytes.len() as u64,
                partition_values: Vec::new(),
                range: None,
            };
            for (kind, reader) in [
                (RowKind::Valid, "csv"),
                (RowKind::Malformed, "csv"),
                (RowKind::Valid, "fixed_width"),
                (RowKind::Malformed, "fixed_width"),
                (RowKind::Valid, "json"),
                (RowKind::Malformed, "json"),
            ] {
                for mode in [MalformedMode::Permissive, MalformedMode::FailFast] {
                    let mut options = options(mode, encodings[case % encodings.len()]);
                    if reader == "json" {
                        use datafusion::arrow::datatypes::{DataType, Field, Schema};
                        options.header = false;
                        options.json = Some(crate::read::JsonColumns(std::sync::Arc::new(
                            Schema::new(vec![
                                Field::new("a", DataType::Int64, true),
                                Field::new("b", DataType::Utf8, true),
                                Field::new("c", DataType::Float64, true),
                            ]),
                        )));
                    }
                    if reader == "fixed_width" {
                        options.header = false;
                        options.fixed_width = Some(FixedLayout {
                            columns: vec![(0, 1), (1, 2), (3, 1)],
                            record_type: Some((0, 1, vec!["a".into(), "1".into()])),
                            trim: true,
                            skip_lines: 1,
                        });
                    }
                    let exec = csv_scan(CsvScan {
                        store_url: "file:///".into(),
                        options,
                        kind,
                        groups: vec![vec![file.clone()]],
                    })
                    .expect("a scan");
                    let read = tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        datafusion::physical_plan::collect(exec, ctx.task_ctx()),
                    )
                    .await
                    .unwrap_or_else(|_| panic!("{name} hung: {bytes:?}"));
                    if let Err(err) = read {
                        // An error names the file.
                        assert!(err.to_string().contains(&name), "{name}: {err}");
                    }
                }
            }
        }
    }

    /// A multi-record fixed-width file: header and trailer lines skipped by record type,
    /// values trimmed, positions in characters (not bytes), a short line malformed.
    #[tokio::test]
    async fn fixed_width_lines_read_by_position_and_record_type() {
        use datafusion::arrow::array::{Array, AsArray};
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("rx.txt");
        let text =
            "H20240301 PHARMACY FEED\nD0001José   0012\nD0002Ann    0007\nD0003Bo\nT0000003\n";
        std::fs::write(&path, text).expect("a file");
        let file = CsvFile {
            path: path
                .display()
                .to_string()
                .trim_start_matches('/')
                .to_owned(),
            url: format!("file://{}", path.display()),
            size: text.len() as u64,
            partition_values: Vec::new(),
            range: None,
        };
        let mut options = options(MalformedMode::Permissive, TextEncoding::Utf8);
        options.header = false;
        options.columns = vec!["id".into(), "name".into(), "qty".into()];
        options.fixed_width = Some(FixedLayout {
            columns: vec![(1, 4), (5, 7), (12, 4)],
            record_type: Some((0, 1, vec!["D".into()])),
            trim: true,
            skip_lines: 0,
        });
        let ctx = SessionContext::new();
        let read = |kind| {
            let exec = csv_scan(CsvScan {
                store_url: "file:///".into(),
                options: options.clone(),
                kind,
                groups: vec![vec![file.clone()]],
            })
            .expect("a scan");
            datafusion::physical_plan::collect(exec, ctx.task_ctx())
        };
        let valid = read(RowKind::Valid).await.expect("rows");
        let batch = datafusion::arrow::compute::concat_batches(&valid[0].schema(), &valid)
            .expect("one batch");
        let column = |index: usize| -> Vec<String> {
            let values = batch.column(index).as_string::<i32>();
            (0..values.len())
                .map(|row| values.value(row).to_owned())
                .collect()
        };
        assert_eq!(column(0), vec!["0001", "0002"]);
        assert_eq!(column(1), vec!["José", "Ann"]);
        assert_eq!(column(2), vec!["0012", "0007"]);
        let lines = batch
            .column(4)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        assert_eq!(lines.values().to_vec(), vec![2, 3]);
        let malformed = read(RowKind::Malformed).await.expect("rows");
        let rows: usize = malformed.iter().map(|batch| batch.num_rows()).sum();
        assert_eq!(rows, 1, "the short line D0003Bo");
        let batch = &malformed[0];
        let fault = batch.column(batch.num_columns() - 1).as_string::<i32>();
        assert!(
            fault
                .value(0)
                .contains("7 characters where the layout needs 16"),
            "{}",
            fault.value(0)
        );
    }

    /// Every row of a batch as text, one string per row.
    fn row_texts(batches: &[datafusion::arrow::array::RecordBatch]) -> Vec<String> {
        use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
        let mut rows = Vec::new();
        for batch in batches {
            let formats: Vec<_> = batch
                .columns()
                .iter()
                .map(|column| ArrayFormatter::try_new(column.as_ref(), &FormatOptions::default()))
                .collect::<Result<_, _>>()
                .expect("formatters");
            for row in 0..batch.num_rows() {
                let values: Vec<String> =
                    formats.iter().map(|f| f.value(row).to_string()).collect();
                rows.push(values.join("|"));
            }
        }
        rows.sort();
        rows
    }

    /// A file split into byte ranges (one task each) yields exactly the rows, lines and
    /// malformed rows of the file read whole, wherever the splits fall — inside a quoted
    /// value spanning lines, inside the header, on a newline.
    #[tokio::test]
    async fn a_split_file_reads_as_the_whole_file() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let ctx = SessionContext::new();
        let mut rng = StdRng::seed_from_u64(7);
        for case in 0..200 {
            let mut bytes = random_csv(&mut rng);
            bytes.extend_from_slice(b"1,\"x\ny\",2\n3,4,5\n");
            bytes.extend(random_csv(&mut rng).into_iter().skip(6));
            let name = format!("s{case}.csv");
            let path = dir.path().join(&name);
            std::fs::write(&path, &bytes).expect("a file");
            let size = bytes.len() as u64;
            let whole = CsvFile {
                path: path
                    .display()
                    .to_string()
                    .trim_start_matches('/')
                    .to_owned(),
                url: format!("file://{}", path.display()),
                size,
                partition_values: Vec::new(),
                range: None,
            };
            let mut cuts: Vec<u64> = (0..rng.random_range(1..5))
                .map(|_| rng.random_range(0..=size))
                .collect();
            cuts.extend([0, size]);
            cuts.sort();
            cuts.dedup();
            let parts: Vec<Vec<CsvFile>> = cuts
                .windows(2)
                .map(|w| {
                    let mut part = whole.clone();
                    part.range = Some((w[0], w[1]));
                    vec![part]
                })
                .collect();
            for kind in [RowKind::Valid, RowKind::Malformed] {
                let read = |groups: Vec<Vec<CsvFile>>| {
                    let exec = csv_scan(CsvScan {
                        store_url: "file:///".into(),
                        options: options(MalformedMode::Permissive, TextEncoding::Utf8),
                        kind,
                        groups,
                    })
                    .expect("a scan");
                    datafusion::physical_plan::collect(exec, ctx.task_ctx())
                };
                let expected = read(vec![vec![whole.clone()]]).await;
                let got = read(parts.clone()).await;
                match (expected, got) {
                    (Ok(expected), Ok(got)) => assert_eq!(
                        row_texts(&got),
                        row_texts(&expected),
                        "{name} split at {cuts:?}: {:?}",
                        String::from_utf8_lossy(&bytes)
                    ),
                    (Err(_), Err(_)) => {}
                    (expected, got) => panic!(
                        "{name} split at {cuts:?}: whole {:?}, split {:?}",
                        expected.map(|b| b.len()),
                        got.map(|b| b.len())
                    ),
                }
            }
        }
    }
}
