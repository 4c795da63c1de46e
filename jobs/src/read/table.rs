//! [`CsvTable`]: a CSV source as a table of the run's session — its partitions listed
//! and pruned by the query's filters at planning, its files spread over the scan's
//! partitions — and the compile-time reading of a source's columns from its headers.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::Session;
use datafusion::datasource::TableProvider;
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::datasource::listing::helpers::{expr_applicable_for_cols, pruned_partition_list};
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::projection::ProjectionExec;
use futures::TryStreamExt;

use crate::read::exec::{CsvFile, CsvScan, csv_scan, file_schema};
use crate::read::records::{FieldSplitter, Fields, RecordCutter, decode};
use crate::read::{CsvReadOptions, FileCompression, RowKind, TextEncoding};

/// A CSV source's valid or malformed rows (see the module's overview).
#[derive(Debug)]
pub(crate) struct CsvTable {
    url: ListingTableUrl,
    options: CsvReadOptions,
    kind: RowKind,
    schema: SchemaRef,
}

impl CsvTable {
    pub(crate) fn new(url: ListingTableUrl, options: CsvReadOptions, kind: RowKind) -> Self {
        // The file's columns, then the partition columns (as the file scan appends them).
        let mut fields: Vec<datafusion::arrow::datatypes::Field> = file_schema(&options, kind)
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.extend(
            options
                .partition_columns
                .iter()
                .map(|name| datafusion::arrow::datatypes::Field::new(name, DataType::Utf8, true)),
        );
        let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(fields));
        Self {
            url,
            options,
            kind,
            schema,
        }
    }
}

#[async_trait]
impl TableProvider for CsvTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Filters on partition columns prune the listing; all are applied again above.
        let partitions: Vec<&str> = self
            .options
            .partition_columns
            .iter()
            .map(String::as_str)
            .collect();
        Ok(filters
            .iter()
            .map(|filter| {
                if !partitions.is_empty() && expr_applicable_for_cols(&partitions, filter) {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let store = state.runtime_env().object_store(&self.url)?;
        let store_url = self.url.object_store();
        let store_url = store_url.as_str();
        let partition_columns: Vec<(String, DataType)> = self
            .options
            .partition_columns
            .iter()
            .map(|name| (name.clone(), DataType::Utf8))
            .collect();
        let mut files: Vec<(u64, CsvFile)> = pruned_partition_list(
            state,
            store.as_ref(),
            &self.url,
            filters,
            "",
            &partition_columns,
        )
        .await?
        .try_filter_map(|file| async move {
            if file.object_meta.size == 0 {
                return Ok(None);
            }
            let partition_values = file
                .partition_values
                .iter()
                .map(|value| value.to_string())
                .collect();
            Ok(Some((
                file.object_meta.size,
                CsvFile {
                    path: file.object_meta.location.to_string(),
                    url: crate::read::file_url(store_url, &file.object_meta.location),
                    size: file.object_meta.size,
                    partition_values,
                    range: None,
                },
            )))
        })
        .try_collect()
        .await?;
        let target_partitions = state.config().target_partitions().max(1);
        let optimizer = &state.config().options().optimizer;
        if optimizer.repartition_file_scans {
            files = split_files(
                files,
                &self.options,
                target_partitions,
                optimizer.repartition_file_min_size as u64,
            );
        }
        // Largest files first, each to the group with the fewest bytes so far.
        files.sort_by(|a, b| {
            b.0.cmp(&a.0)
                .then_with(|| a.1.path.cmp(&b.1.path))
                .then_with(|| a.1.range.cmp(&b.1.range))
        });
        let partitions = target_partitions.min(files.len().max(1));
        let mut groups: Vec<(u64, Vec<CsvFile>)> = vec![(0, Vec::new()); partitions];
        for (size, file) in files {
            if let Some(group) = groups.iter_mut().min_by_key(|(bytes, _)| *bytes) {
                group.0 += size;
                group.1.push(file);
            }
        }
        let scan = csv_scan(CsvScan {
            store_url: self.url.object_store().as_str().to_owned(),
            options: self.options.clone(),
            kind: self.kind,
            groups: groups.into_iter().map(|(_, files)| files).collect(),
        })?;
        match projection {
            None => Ok(scan),
            Some(indices) => {
                let exprs: Vec<(Arc<dyn datafusion::physical_expr::PhysicalExpr>, String)> =
                    indices
                        .iter()
                        .map(|&index| {
                            let field = self.schema.field(index);
                            (
                                Arc::new(datafusion::physical_expr::expressions::Column::new(
                                    field.name(),
                                    index,
                                ))
                                    as Arc<dyn datafusion::physical_expr::PhysicalExpr>,
                                field.name().clone(),
                            )
                        })
                        .collect();
                Ok(Arc::new(ProjectionExec::try_new(exprs, scan)?))
            }
        }
    }
}

/// Fewer files than tasks: large files are split into byte ranges so that every task
/// reads a part (DataFusion's `repartition_file_scans`, with pieces of at least
/// `min_bytes`). Only files whose bytes are their records can be split — not compressed
/// ones (gzip cannot be entered midway) and not UTF-16 ones (offsets are of the
/// transcoded text). Each part still reads the file from its start, cutting records
/// without parsing them, so records and line numbers are those of a whole read.
fn split_files(
    files: Vec<(u64, CsvFile)>,
    options: &CsvReadOptions,
    partitions: usize,
    min_bytes: u64,
) -> Vec<(u64, CsvFile)> {
    if files.len() >= partitions || files.is_empty() {
        return files;
    }
    let total: u64 = files.iter().map(|(size, _)| size).sum();
    let piece = (total / partitions as u64).max(min_bytes).max(1);
    let utf16 = matches!(
        options.encoding,
        TextEncoding::Utf16Le | TextEncoding::Utf16Be
    );
    let mut split = Vec::new();
    for (size, file) in files {
        let plain = options.compression.of_file(&file.path) == FileCompression::None;
        if !plain || utf16 || size <= piece {
            split.push((size, file));
            continue;
        }
        let pieces = size.div_ceil(piece);
        let step = size.div_ceil(pieces);
        let mut start = 0;
        while start < size {
            let end = (start + step).min(size);
            let mut part = file.clone();
            part.range = Some((start, end));
            split.push((end - start, part));
            start = end;
        }
    }
    split
}

/// One header found among a source's files, and the files that have it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HeaderGroup {
    /// The header's column names, in the file's order.
    pub columns: Vec<String>,
    /// How many files have it.
    pub file_count: usize,
    /// The first of them (at most [`HEADER_GROUP_FILES`]), in listing order.
    pub files: Vec<String>,
}

/// Files named per header group in reports.
pub const HEADER_GROUP_FILES: usize = 5;

/// What compile found in a text source's files: how many, which are empty, and — when
/// their headers differ — each header and the files that have it. Shown as the run's
/// warnings and in its data-quality report.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SourceFiles {
    /// The source's name.
    pub source: String,
    /// Files it matched (after partition pruning by `path`).
    pub file_count: usize,
    /// Of them, files of 0 bytes (they hold no rows).
    pub empty_count: usize,
    /// The first empty ones (at most [`HEADER_GROUP_FILES`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub empty: Vec<String>,
    /// The distinct headers, most files first, when the files' headers differ.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderGroup>,
    /// Files whose headers were read (all non-empty ones, up to a limit).
    #[serde(default)]
    pub headers_read: usize,
}

impl SourceFiles {
    /// The files of `source`, counted; headers are filled in when read.
    pub(crate) fn new(source: &str, store_url: &str, files: &[object_store::ObjectMeta]) -> Self {
        let empty: Vec<&object_store::ObjectMeta> =
            files.iter().filter(|meta| meta.size == 0).collect();
        Self {
            source: source.to_owned(),
            file_count: files.len(),
            empty_count: empty.len(),
            empty: empty
                .iter()
                .take(HEADER_GROUP_FILES)
                .map(|meta| crate::read::file_url(store_url, &meta.location))
                .collect(),
            headers: Vec::new(),
            headers_read: 0,
        }
    }

    /// Warnings for the run: empty files, and headers that differ (what each group of
    /// files lacks or adds against `columns`, the source's, and what becomes of them).
    pub fn warnings(
        &self,
        columns: &[String],
        drift: crate::definition::SchemaDrift,
    ) -> Vec<String> {
        let mut warnings = Vec::new();
        let etc = |shown: usize, all: usize| if all > shown { ", …" } else { "" };
        if self.empty_count > 0 {
            warnings.push(format!(
                "source `{}`: {} of {} files are empty (0 bytes) and hold no rows: {}{}",
                self.source,
                self.empty_count,
                self.file_count,
                self.empty.join(", "),
                etc(self.empty.len(), self.empty_count)
            ));
        }
        if self.headers.len() > 1 {
            let effect = match drift {
                crate::definition::SchemaDrift::UnionByName => {
                    "columns are matched by name; a column a file lacks is NULL in its rows"
                }
                crate::definition::SchemaDrift::QuarantineFile => {
                    "files whose header is not the most common one are quarantined whole"
                }
                // A differing header fails at compile time under `fail`.
                crate::definition::SchemaDrift::Fail => "the run fails",
            };
            let groups: Vec<String> = self
                .headers
                .iter()
                .map(|group| {
                    let how = crate::read::exec::header_difference(columns, &group.columns)
                        .unwrap_or_else(|| "the source's columns".to_owned());
                    format!(
                        "{} file{} ({}{}): {how}",
                        group.file_count,
                        if group.file_count == 1 { "" } else { "s" },
                        group.files.join(", "),
                        etc(group.files.len(), group.file_count)
                    )
                })
                .collect();
            warnings.push(format!(
                "source `{}`: its files have {} different headers ({effect}): {}",
                self.source,
                self.headers.len(),
                groups.join("; ")
            ));
        }
        warnings
    }
}

/// A source's columns, read from its files' headers at compile time.
#[derive(Debug, Clone, Default)]
pub(crate) struct SourceHeaders {
    /// The columns the source's rows have.
    pub columns: Vec<String>,
    /// The distinct headers, most files first (one group when every file agrees).
    pub groups: Vec<HeaderGroup>,
}

/// Headers read at once at compile time (each read stops after the first record).
const HEADER_READS_IN_FLIGHT: usize = 16;

/// A source's columns from the headers of `files`, matched by name:
/// - `union_by_name`: every column of any file, in the order they first appear;
/// - `fail`: the first file's, and an error naming the first file whose header differs;
/// - `quarantine_file`: the header most files have (the first such on a tie); files
///   with another are set aside at read time.
///
/// Without a header, Spark's names `_c0`, `_c1`, … for the fields of the first record.
/// Errors name the file.
pub(crate) async fn read_columns(
    store: &dyn object_store::ObjectStore,
    store_url: &str,
    files: &[object_store::ObjectMeta],
    options: &CsvReadOptions,
) -> std::result::Result<SourceHeaders, String> {
    if !options.header {
        for meta in files {
            if let Some(fields) = first_record(store, store_url, meta, options).await? {
                let columns = (0..fields.len())
                    .map(|index| format!("_c{index}"))
                    .collect();
                return Ok(SourceHeaders {
                    columns,
                    groups: Vec::new(),
                });
            }
        }
        return Ok(SourceHeaders::default());
    }
    let mut headers = Vec::with_capacity(files.len());
    for chunk in files.chunks(HEADER_READS_IN_FLIGHT) {
        let reads = chunk
            .iter()
            .map(|meta| first_record(store, store_url, meta, options));
        headers.extend(futures::future::join_all(reads).await);
    }
    let mut columns: Vec<String> = Vec::new();
    let mut groups: Vec<HeaderGroup> = Vec::new();
    for (meta, header) in files.iter().zip(headers) {
        let Some(names) = header? else { continue };
        let file = crate::read::file_url(store_url, &meta.location);
        let names: Vec<String> = names.into_iter().map(|n| n.trim().to_owned()).collect();
        let mut seen = std::collections::BTreeSet::new();
        if let Some(duplicate) = names.iter().find(|name| !seen.insert(name.as_str())) {
            return Err(format!(
                "{file}: the header names column `{duplicate}` twice"
            ));
        }
        if let Some(first) = groups.first()
            && names != first.columns
            && options.schema_drift == crate::definition::SchemaDrift::Fail
        {
            return Err(format!(
                "{}: its header ({}) differs from that of {} ({}), and the source's \
                 schema_drift is fail",
                file,
                names.join(", "),
                first.files[0],
                first.columns.join(", ")
            ));
        }
        for name in &names {
            if !columns.contains(name) {
                columns.push(name.clone());
            }
        }
        match groups.iter_mut().find(|group| group.columns == names) {
            Some(group) => {
                group.file_count += 1;
                if group.files.len() < HEADER_GROUP_FILES {
                    group.files.push(file);
                }
            }
            None => groups.push(HeaderGroup {
                columns: names,
                file_count: 1,
                files: vec![file],
            }),
        }
    }
    // Most files first; the sort is stable, so a tie keeps the first-seen header first.
    groups.sort_by_key(|group| std::cmp::Reverse(group.file_count));
    if options.schema_drift == crate::definition::SchemaDrift::QuarantineFile
        && let Some(most) = groups.first()
    {
        columns = most.columns.clone();
    }
    Ok(SourceHeaders { columns, groups })
}

/// The fields of a file's first record, decoded; `None` for a file of blank lines.
async fn first_record(
    store: &dyn object_store::ObjectStore,
    store_url: &str,
    meta: &object_store::ObjectMeta,
    options: &CsvReadOptions,
) -> std::result::Result<Option<Vec<String>>, String> {
    use futures::StreamExt;

    let fail = |message: String| {
        format!(
            "{}: {message}",
            crate::read::file_url(store_url, &meta.location)
        )
    };
    let mut stream = super::bytes::file_bytes(store, meta.location.as_ref(), options.compression)
        .await
        .map_err(fail)?;
    let mut text = super::bytes::TextStream::new(options.encoding);
    let mut buffer = Vec::new();
    let mut cutter = RecordCutter::new();
    let mut record: Option<Vec<u8>> = None;
    loop {
        let done = match stream.next().await {
            Some(chunk) => {
                let chunk = chunk.map_err(|err| {
                    fail(format!(
                        "cannot read it: {}",
                        crate::frame::strip_context(&err)
                    ))
                })?;
                text.push(&chunk, &mut buffer);
                false
            }
            None => {
                text.finish(&mut buffer);
                true
            }
        };
        while let Some(found) = cutter.next(&buffer, options.quote) {
            if !found.bytes.iter().all(u8::is_ascii_whitespace) {
                record = Some(found.bytes.to_vec());
                break;
            }
        }
        if record.is_none()
            && done
            && let Some((found, _)) = cutter.rest(&buffer)
            && !found.bytes.iter().all(u8::is_ascii_whitespace)
        {
            record = Some(found.bytes.to_vec());
        }
        if record.is_some() || done {
            break;
        }
        cutter.compact(&mut buffer);
    }
    let Some(record) = record else {
        return Ok(None);
    };
    let record = record.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&record);
    let mut splitter = FieldSplitter::new(options);
    let mut fields = Fields::default();
    splitter.split(record, &mut fields);
    (0..fields.len())
        .map(|index| {
            decode(fields.get(index), options.encoding)
                .map(|text| text.into_owned())
                .ok_or_else(|| {
                    fail(format!(
                        "line 1: the header is not valid {:?} text; set the source's encoding",
                        options.encoding
                    ))
                })
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map(Some)
}
