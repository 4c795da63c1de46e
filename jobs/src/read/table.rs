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

/// A source's columns from the headers of `files` (its first files): in the order they
/// first appear, matched by name. Without a header, Spark's names `_c0`, `_c1`, … for
/// the fields of the first record. Errors name the file.
pub(crate) async fn read_columns(
    store: &dyn object_store::ObjectStore,
    files: &[object_store::ObjectMeta],
    options: &CsvReadOptions,
) -> std::result::Result<Vec<String>, String> {
    let mut columns: Vec<String> = Vec::new();
    let mut first: Option<(String, Vec<String>)> = None;
    for meta in files {
        let names = first_record(store, meta, options).await?;
        let Some(names) = names else { continue };
        let names: Vec<String> = if options.header {
            names
                .into_iter()
                .map(|name| name.trim().to_owned())
                .collect()
        } else {
            (0..names.len()).map(|index| format!("_c{index}")).collect()
        };
        if !options.header {
            return Ok(names);
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(duplicate) = names.iter().find(|name| !seen.insert(name.as_str())) {
            return Err(format!(
                "{}: the header names column `{duplicate}` twice",
                meta.location
            ));
        }
        match &first {
            None => first = Some((meta.location.to_string(), names.clone())),
            Some((first_file, first_names)) => {
                if names != *first_names
                    && options.schema_drift == crate::definition::SchemaDrift::Fail
                {
                    return Err(format!(
                        "{}: its header ({}) differs from that of {first_file} ({}), and the \
                         source's schema_drift is fail",
                        meta.location,
                        names.join(", "),
                        first_names.join(", ")
                    ));
                }
            }
        }
        for name in names {
            if !columns.contains(&name) {
                columns.push(name);
            }
        }
    }
    Ok(columns)
}

/// The fields of a file's first record, decoded; `None` for a file of blank lines.
async fn first_record(
    store: &dyn object_store::ObjectStore,
    meta: &object_store::ObjectMeta,
    options: &CsvReadOptions,
) -> std::result::Result<Option<Vec<String>>, String> {
    use futures::StreamExt;

    let fail = |message: String| format!("{}: {message}", meta.location);
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
