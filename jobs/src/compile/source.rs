//! Sources resolved for a run: located, listed (Hive partitions found and typed), their
//! schemas read or declared, and registered as tables of the run's session.

use std::collections::BTreeMap;
use std::path::Path as FsPath;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::logical_expr::{Expr, cast, lit, when};
use datafusion::prelude::SessionContext;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;

use crate::compile::{MalformedRows, PreparedJob, ResolvedSource, to_location};
use crate::definition::{MalformedMode, SourceFormat, SourceSpec, parse_column_type};
use crate::error::{JobError, Position, Result};
use crate::frame::{column, replace_columns, strip_context};
use crate::layout::{HIVE_DEFAULT_PARTITION, SOURCE_FILE_COLUMN, SOURCE_LINE_COLUMN};
use crate::read::{
    CsvReadOptions, CsvTable, FileCompression, FixedLayout, JsonColumns, RowKind, SourceFiles,
    TextEncoding, infer_json_columns, read_columns,
};

impl PreparedJob {
    pub(super) async fn register_source(
        &self,
        ctx: &SessionContext,
        name: &str,
        spec: &SourceSpec,
        at: &Position,
        base_dir: &FsPath,
    ) -> Result<ResolvedSource> {
        let rendered = self
            .params
            .render(&spec.path, &format!("sources.{name}.path"))?;
        let location = to_location(&rendered, base_dir, true);
        let source_error = |message: String| JobError::Source {
            source_name: name.to_owned(),
            path: location.clone(),
            message,
        };
        // Partition values fixed by pointing `path` inside a `base_path`.
        let fixed_partitions: Vec<(String, String)> = match &spec.base_path {
            None => Vec::new(),
            Some(base) => {
                let base = self
                    .params
                    .render(base, &format!("sources.{name}.base_path"))?;
                let base = to_location(&base, base_dir, false);
                let base = base.trim_end_matches('/');
                let inside = location
                    .strip_prefix(base)
                    .filter(|rest| rest.starts_with('/'))
                    .ok_or_else(|| source_error(format!("path is not inside base_path {base}")))?;
                let mut fixed = Vec::new();
                for segment in inside.split('/').filter(|s| !s.is_empty()) {
                    let (key, value) = segment.split_once('=').ok_or_else(|| {
                        source_error(format!(
                            "`{segment}` between base_path and path is not a key=value folder"
                        ))
                    })?;
                    fixed.push((key.to_owned(), value.to_owned()));
                }
                fixed
            }
        };
        let url =
            ListingTableUrl::parse(&location).map_err(|err| source_error(strip_context(&err)))?;
        let state = ctx.state();
        let store = state
            .runtime_env()
            .object_store(&url)
            .map_err(|err| source_error(strip_context(&err)))?;
        let discovered = discover(&state, store.as_ref(), &url)
            .await
            .map_err(source_error)?;
        if discovered.files.is_empty() {
            return Err(JobError::SourceEmpty {
                source_name: name.to_owned(),
                path: location,
            });
        }
        let mut partition_columns = Vec::new();
        for (key, values) in discovered.partitions {
            let data_type = partition_type(spec, name, &key, &values, at)?;
            partition_columns.push((key, data_type));
        }

        if let Some(options) = self.reader_options(spec, name, at, &partition_columns)? {
            return self
                .register_csv(
                    ctx,
                    (name, spec, at),
                    options,
                    &url,
                    &store,
                    &discovered.files,
                    fixed_partitions,
                    partition_columns,
                    &location,
                )
                .await;
        }
        let format: Arc<dyn FileFormat> = match spec.format {
            // The session's Parquet options (INT96 read as Spark reads it, see
            // `session`), not the format's defaults.
            SourceFormat::Parquet => Arc::new(
                ParquetFormat::default().with_options(state.table_options().parquet.clone()),
            ),
            // Read by Sluice's reader (`reader_options` above).
            SourceFormat::Json | SourceFormat::FixedWidth => {
                return Err(source_error(format!(
                    "a {} source is read by Sluice's reader",
                    spec.format.name()
                )));
            }
            SourceFormat::Csv => {
                let csv = spec.csv.clone().unwrap_or_default();
                let mut nulls: Vec<String> = vec![String::new()];
                nulls.extend(csv.null_values.iter().map(|value| regex::escape(value)));
                let mut format = CsvFormat::default()
                    .with_has_header(csv.header)
                    .with_delimiter(csv.delimiter.as_bytes().first().copied().unwrap_or(b','))
                    .with_quote(csv.quote.as_bytes().first().copied().unwrap_or(b'"'))
                    .with_null_regex(Some(format!("^({})$", nulls.join("|"))));
                if !csv.infer_schema {
                    format = format.with_schema_infer_max_rec(1);
                }
                Arc::new(format)
            }
        };
        let options = ListingOptions::new(format)
            .with_file_extension("")
            // Partition values are read as text and typed in the view below, where
            // Spark's null folder (`__HIVE_DEFAULT_PARTITION__`) becomes NULL.
            .with_table_partition_cols(
                partition_columns
                    .iter()
                    .map(|(key, _)| (key.clone(), DataType::Utf8))
                    .collect(),
            );
        // The schema from the files the walk found, not from a listing of every file.
        let sample =
            schema_sample(&discovered.files, url.object_store().as_str()).map_err(source_error)?;
        let mut schema = infer_schema(&state, &store, options.format.as_ref(), &sample)
            .await
            .map_err(|err| source_error(format!("reading its schema: {err}")))?;
        let reads_strings = spec.format == SourceFormat::Csv
            && !spec.csv.as_ref().is_some_and(|csv| csv.infer_schema);
        if reads_strings {
            schema = Arc::new(Schema::new(
                schema
                    .fields()
                    .iter()
                    .map(|field| Field::new(field.name(), DataType::Utf8, true))
                    .collect::<Vec<_>>(),
            ));
        }
        let config = ListingTableConfig::new(url)
            .with_listing_options(options)
            .with_schema(schema);
        let table =
            ListingTable::try_new(config).map_err(|err| source_error(strip_context(&err)))?;
        let partition_columns = self
            .register_files(
                ctx,
                name,
                spec,
                at,
                Arc::new(table),
                fixed_partitions,
                partition_columns,
                &location,
            )
            .await?;
        Ok(ResolvedSource {
            name: name.to_owned(),
            location,
            partition_columns,
            lines: None,
            malformed: None,
            files: None,
            warnings: Vec::new(),
        })
    }

    /// Registers a source's files table as the source: directly, or under a hidden name
    /// behind a view that types the partition columns and adds those fixed by
    /// `base_path`. Returns the partition columns, typed.
    #[allow(clippy::too_many_arguments)]
    async fn register_files(
        &self,
        ctx: &SessionContext,
        name: &str,
        spec: &SourceSpec,
        at: &Position,
        table: Arc<dyn datafusion::datasource::TableProvider>,
        fixed_partitions: Vec<(String, String)>,
        mut partition_columns: Vec<(String, DataType)>,
        location: &str,
    ) -> Result<Vec<(String, DataType)>> {
        let source_error = |message: String| JobError::Source {
            source_name: name.to_owned(),
            path: location.to_owned(),
            message,
        };
        if fixed_partitions.is_empty() && partition_columns.is_empty() {
            ctx.register_table(name, table)
                .map_err(|err| source_error(strip_context(&err)))?;
        } else {
            // The files' table under a hidden name, and the source as a view that types
            // the partition columns and adds those fixed by `base_path`.
            let files = format!("__sluice_files_{name}");
            ctx.register_table(files.as_str(), table)
                .map_err(|err| source_error(strip_context(&err)))?;
            let mut frame = ctx
                .table(files.as_str())
                .await
                .map_err(|err| source_error(strip_context(&err)))?;
            let typed: BTreeMap<String, Expr> = partition_columns
                .iter()
                .map(|(key, data_type)| {
                    let typed = when(
                        column(key).eq(lit(HIVE_DEFAULT_PARTITION)),
                        cast(
                            lit(datafusion::scalar::ScalarValue::Null),
                            data_type.clone(),
                        ),
                    )
                    .otherwise(cast(column(key), data_type.clone()));
                    typed.map(|expr| (key.clone(), expr))
                })
                .collect::<std::result::Result<_, _>>()
                .map_err(|err| source_error(strip_context(&err)))?;
            frame = replace_columns(frame, typed).map_err(source_error)?;
            for (index, (key, value)) in fixed_partitions.iter().enumerate() {
                let data_type = partition_type(spec, name, key, std::slice::from_ref(value), at)?;
                let literal = if value == HIVE_DEFAULT_PARTITION {
                    cast(
                        lit(datafusion::scalar::ScalarValue::Null),
                        data_type.clone(),
                    )
                } else {
                    cast(lit(value.clone()), data_type.clone())
                };
                frame = frame
                    .with_column(key, literal)
                    .map_err(|err| source_error(strip_context(&err)))?;
                partition_columns.insert(index, (key.clone(), data_type));
            }
            ctx.register_table(name, frame.into_view())
                .map_err(|err| source_error(strip_context(&err)))?;
        }
        Ok(partition_columns)
    }

    /// The options of Sluice's CSV reader for a source it reads (CSV read as strings),
    /// checked; `None` for sources DataFusion's readers read.
    fn reader_options(
        &self,
        spec: &SourceSpec,
        name: &str,
        at: &Position,
        partition_columns: &[(String, DataType)],
    ) -> Result<Option<CsvReadOptions>> {
        if spec.format == SourceFormat::FixedWidth {
            return self
                .fixed_width_options(spec, name, at, partition_columns)
                .map(Some);
        }
        if spec.format == SourceFormat::Json {
            return self
                .json_options(spec, name, at, partition_columns)
                .map(Some);
        }
        if spec.format != SourceFormat::Csv {
            return Ok(None);
        }
        let csv = spec.csv.clone().unwrap_or_default();
        let invalid = |field: &str, message: String| JobError::Invalid {
            at: at.clone(),
            field: format!("sources.{name}.csv.{field}"),
            message,
        };
        if csv.infer_schema {
            let string_only = [
                (
                    "mode",
                    csv.mode.is_some_and(|m| m != MalformedMode::FailFast),
                ),
                ("encoding", csv.encoding.is_some()),
                ("compression", csv.compression.is_some()),
                ("schema_drift", csv.schema_drift.is_some()),
            ];
            if let Some((field, _)) = string_only.iter().find(|(_, set)| *set) {
                return Err(invalid(
                    field,
                    "applies to CSV read as strings; with infer_schema: true DataFusion's                      reader reads the files and fails on the first malformed row"
                        .to_owned(),
                ));
            }
            return Ok(None);
        }
        let (encoding, compression) =
            text_options(csv.encoding.as_deref(), csv.compression.as_deref())
                .map_err(|(field, m)| invalid(field, m))?;
        let byte = |field: &str, text: &str| -> Result<u8> {
            match text.as_bytes() {
                [byte] => Ok(*byte),
                _ => Err(invalid(
                    field,
                    format!("`{text}` is not one ASCII character"),
                )),
            }
        };
        Ok(Some(CsvReadOptions {
            source: name.to_owned(),
            header: csv.header,
            delimiter: byte("delimiter", &csv.delimiter)?,
            quote: byte("quote", &csv.quote)?,
            null_values: csv.null_values.clone(),
            encoding,
            compression,
            mode: csv.mode.unwrap_or(MalformedMode::Permissive),
            schema_drift: csv.schema_drift.unwrap_or_default(),
            columns: Vec::new(),
            partition_columns: partition_columns
                .iter()
                .map(|(key, _)| key.clone())
                .collect(),
            fixed_width: None,
            json: None,
        }))
    }

    /// The reader's options for a JSON lines source (its columns are inferred when it
    /// is registered).
    fn json_options(
        &self,
        spec: &SourceSpec,
        name: &str,
        at: &Position,
        partition_columns: &[(String, DataType)],
    ) -> Result<CsvReadOptions> {
        let invalid = |field: &str, message: String| JobError::Invalid {
            at: at.clone(),
            field: format!("sources.{name}.json.{field}"),
            message,
        };
        let json = spec.json.clone().unwrap_or_default();
        let (encoding, compression) =
            text_options(json.encoding.as_deref(), json.compression.as_deref())
                .map_err(|(field, m)| invalid(field, m))?;
        Ok(CsvReadOptions {
            source: name.to_owned(),
            header: false,
            delimiter: b',',
            quote: b'"',
            null_values: Vec::new(),
            encoding,
            compression,
            mode: json.mode.unwrap_or(MalformedMode::Permissive),
            schema_drift: crate::definition::SchemaDrift::UnionByName,
            columns: Vec::new(),
            partition_columns: partition_columns
                .iter()
                .map(|(key, _)| key.clone())
                .collect(),
            fixed_width: None,
            json: Some(JsonColumns(Arc::new(Schema::empty()))),
        })
    }

    /// The reader's options for a fixed-width source: its columns from the layout (a
    /// file has no header), records cut at newlines only.
    fn fixed_width_options(
        &self,
        spec: &SourceSpec,
        name: &str,
        at: &Position,
        partition_columns: &[(String, DataType)],
    ) -> Result<CsvReadOptions> {
        let invalid = |field: &str, message: String| JobError::Invalid {
            at: at.clone(),
            field: format!("sources.{name}.fixed_width.{field}"),
            message,
        };
        let Some(layout) = &spec.fixed_width else {
            return Err(invalid("columns", "the layout is missing".into()));
        };
        let (encoding, compression) =
            text_options(layout.encoding.as_deref(), layout.compression.as_deref())
                .map_err(|(field, m)| invalid(field, m))?;
        // Layouts count from 1; the reader from 0.
        let fixed = FixedLayout {
            columns: layout
                .columns
                .iter()
                .map(|column| (column.start.saturating_sub(1), column.width))
                .collect(),
            record_type: layout.record_type.as_ref().map(|filter| {
                (
                    filter.start.saturating_sub(1),
                    filter.width,
                    filter.values.iter().map(|v| v.trim().to_owned()).collect(),
                )
            }),
            trim: layout.trim,
            skip_lines: layout.skip_lines,
        };
        Ok(CsvReadOptions {
            source: name.to_owned(),
            header: false,
            delimiter: b',',
            quote: b'"',
            null_values: layout.null_values.clone(),
            encoding,
            compression,
            mode: layout.mode.unwrap_or(MalformedMode::Permissive),
            schema_drift: crate::definition::SchemaDrift::UnionByName,
            columns: layout.columns.iter().map(|c| c.name.clone()).collect(),
            partition_columns: partition_columns
                .iter()
                .map(|(key, _)| key.clone())
                .collect(),
            fixed_width: Some(fixed),
            json: None,
        })
    }

    /// Registers a CSV source read by Sluice's reader: its columns from the headers of
    /// its first files, its valid rows as the source, and (unless it fails fast) its
    /// malformed rows as a hidden table.
    #[allow(clippy::too_many_arguments)]
    async fn register_csv(
        &self,
        ctx: &SessionContext,
        (name, spec, at): (&str, &SourceSpec, &Position),
        mut options: CsvReadOptions,
        url: &ListingTableUrl,
        store: &Arc<dyn object_store::ObjectStore>,
        files: &[object_store::ObjectMeta],
        fixed_partitions: Vec<(String, String)>,
        partition_columns: Vec<(String, DataType)>,
        location: &str,
    ) -> Result<ResolvedSource> {
        let source_error = |message: String| JobError::Source {
            source_name: name.to_owned(),
            path: location.to_owned(),
            message,
        };
        let store_url = url.object_store();
        let store_url = store_url.as_str();
        // In path order, so that "first file", the columns' order and the reports do not
        // depend on the order a store lists in.
        let mut files = files.to_vec();
        files.sort_by(|a, b| a.location.cmp(&b.location));
        let files = files.as_slice();
        let sample = schema_sample(files, store_url).map_err(source_error)?;
        let mut found = SourceFiles::new(name, store_url, files);
        let columns = if options.fixed_width.is_some() {
            options.columns.clone()
        } else if options.json.is_some() {
            let schema = infer_json_columns(store.as_ref(), store_url, &sample, &options)
                .await
                .map_err(source_error)?;
            let names = schema.fields().iter().map(|f| f.name().clone()).collect();
            options.json = Some(JsonColumns(Arc::new(schema)));
            names
        } else {
            // Every file's header (not only the first files'), so that a column added in
            // a later delivery is one of the source's and the report can say which files
            // differ.
            let with_rows: Vec<_> = files
                .iter()
                .filter(|meta| meta.size > 0)
                .take(HEADER_FILES)
                .cloned()
                .collect();
            found.headers_read = with_rows.len();
            let headers = read_columns(store.as_ref(), store_url, &with_rows, &options)
                .await
                .map_err(|err| source_error(format!("reading its header: {err}")))?;
            if headers.groups.len() > 1 {
                found.headers = headers.groups;
            }
            headers.columns
        };
        if columns.is_empty() {
            return Err(source_error(format!(
                "its first files hold only blank lines: {}",
                sample[0].location
            )));
        }
        if let Some(clash) = columns
            .iter()
            .find(|c| options.partition_columns.contains(c))
        {
            return Err(source_error(format!(
                "column `{clash}` is both in the files and a partition folder"
            )));
        }
        let warnings = found.warnings(&columns, options.schema_drift);
        options.columns = columns;
        let mode = options.mode;
        let valid = CsvTable::new(url.clone(), options.clone(), RowKind::Valid);
        // The rows with their file and line under a hidden name (the steps read them
        // when the job quarantines), and the source as those rows without the two.
        let lines = format!("__sluice_lines_{name}");
        let partition_columns = self
            .register_files(
                ctx,
                &lines,
                spec,
                at,
                Arc::new(valid),
                fixed_partitions,
                partition_columns,
                location,
            )
            .await?;
        let rows = ctx
            .table(lines.as_str())
            .await
            .map_err(|err| source_error(strip_context(&err)))?;
        let rows = rows
            .drop_columns(&[SOURCE_FILE_COLUMN, SOURCE_LINE_COLUMN])
            .map_err(|err| source_error(strip_context(&err)))?;
        ctx.register_table(name, rows.into_view())
            .map_err(|err| source_error(strip_context(&err)))?;
        let malformed = if mode == MalformedMode::FailFast {
            None
        } else {
            let table = format!("__sluice_malformed_{name}");
            let rows = CsvTable::new(url.clone(), options, RowKind::Malformed);
            ctx.register_table(table.as_str(), Arc::new(rows))
                .map_err(|err| source_error(strip_context(&err)))?;
            Some(MalformedRows { table, mode })
        };
        Ok(ResolvedSource {
            name: name.to_owned(),
            location: location.to_owned(),
            partition_columns,
            lines: Some(lines),
            malformed,
            files: Some(found),
            warnings,
        })
    }
}

/// A text source's `encoding` and `compression` (UTF-8 and by extension when unset);
/// an error names the field.
fn text_options(
    encoding: Option<&str>,
    compression: Option<&str>,
) -> std::result::Result<(TextEncoding, FileCompression), (&'static str, String)> {
    let encoding = match encoding {
        Some(text) => TextEncoding::parse(text).map_err(|m| ("encoding", m))?,
        None => TextEncoding::Utf8,
    };
    let compression = match compression {
        Some(text) => FileCompression::parse(text).map_err(|m| ("compression", m))?,
        None => FileCompression::Auto,
    };
    Ok((encoding, compression))
}

/// The files whose schemas (or headers) type a source: its first non-empty ones; an
/// error when every file is empty.
fn schema_sample(
    files: &[object_store::ObjectMeta],
    store_url: &str,
) -> std::result::Result<Vec<object_store::ObjectMeta>, String> {
    let sample: Vec<_> = files
        .iter()
        .filter(|meta| meta.size > 0)
        .take(SCHEMA_SAMPLE_FILES)
        .cloned()
        .collect();
    if sample.is_empty() {
        return Err(all_empty(files, store_url));
    }
    Ok(sample)
}

/// The error of a source whose files are all empty.
fn all_empty(files: &[object_store::ObjectMeta], store_url: &str) -> String {
    let named: Vec<String> = files
        .iter()
        .take(3)
        .map(|meta| crate::read::file_url(store_url, &meta.location))
        .collect();
    format!(
        "every file it matched is empty (0 bytes): {}{}",
        named.join(", "),
        if files.len() > named.len() {
            ", …"
        } else {
            ""
        }
    )
}

/// Files whose schemas are read to type a source.
const SCHEMA_SAMPLE_FILES: usize = 8;

/// At most this many CSV files' headers are read at compile time (a source of more
/// files takes its columns from the first ones; a later file with a column they lack
/// fails, naming it).
const HEADER_FILES: usize = 10_000;

/// The schema of `files` in `format`. A reader library that panics on a malformed file
/// (the parquet crate does on some footers) must not take the scheduler down: the
/// panic becomes this source's error, naming the file (found by reading the files one
/// at a time).
async fn infer_schema(
    state: &dyn datafusion::catalog::Session,
    store: &Arc<dyn object_store::ObjectStore>,
    format: &dyn FileFormat,
    files: &[object_store::ObjectMeta],
) -> std::result::Result<datafusion::arrow::datatypes::SchemaRef, String> {
    use futures::FutureExt;
    use std::panic::AssertUnwindSafe;

    let read = |files: &[object_store::ObjectMeta]| {
        let files = files.to_vec();
        async move {
            AssertUnwindSafe(format.infer_schema(state, store, &files))
                .catch_unwind()
                .await
        }
    };
    let panic = match read(files).await {
        Ok(Ok(schema)) => return Ok(schema),
        // Which file: the first that fails alone (else the error as it came).
        Ok(Err(err)) => {
            for file in files {
                match read(std::slice::from_ref(file)).await {
                    Ok(Err(err)) => {
                        return Err(format!("{}: {}", file.location, strip_context(&err)));
                    }
                    Err(panic) => return Err(reader_panicked(&file.location, &*panic)),
                    Ok(Ok(_)) => {}
                }
            }
            return Err(strip_context(&err));
        }
        Err(panic) => panic,
    };
    // Which file: the first that panics alone (the first sampled file when none does).
    for file in files.iter().filter(|_| files.len() > 1) {
        if let Err(panic) = read(std::slice::from_ref(file)).await {
            return Err(reader_panicked(&file.location, &*panic));
        }
    }
    Err(reader_panicked(&files[0].location, &*panic))
}

/// Which source file of `plan` makes its reader panic, as an error message; `panic` is
/// what planning the whole plan raised. The files of each listed table are read one at
/// a time (at most [`DIAGNOSED_FILES`] per table), on the failure path only.
pub(super) async fn malformed_file(
    state: &datafusion::execution::SessionState,
    plan: &datafusion::logical_expr::LogicalPlan,
    panic: String,
) -> String {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::datasource::source_as_provider;

    let mut tables: Vec<Arc<ListingTable>> = Vec::new();
    let _ = plan.apply(|node| {
        if let datafusion::logical_expr::LogicalPlan::TableScan(scan) = node
            && let Ok(provider) = source_as_provider(&scan.source)
            && let Some(table) = provider.downcast_ref::<ListingTable>()
        {
            tables.push(Arc::new(table.clone()));
        }
        Ok(TreeNodeRecursion::Continue)
    });
    for table in tables {
        let format = Arc::clone(&table.options().format);
        for url in table.table_paths() {
            let Ok(store) = state.runtime_env().object_store(url) else {
                continue;
            };
            let Ok(listing) = url.list_all_files(state, store.as_ref(), "").await else {
                continue;
            };
            let files: Vec<object_store::ObjectMeta> = listing
                .take(DIAGNOSED_FILES)
                .filter_map(|file| async move { file.ok() })
                .collect()
                .await;
            for file in files.iter().filter(|file| file.size > 0) {
                if let Err(message) =
                    infer_schema(state, &store, format.as_ref(), std::slice::from_ref(file)).await
                {
                    return message;
                }
            }
        }
    }
    format!("a reader failed on a malformed source file ({panic})")
}

/// Files of one table read one by one to find a malformed one.
const DIAGNOSED_FILES: usize = 10_000;

/// A panic's message.
pub(super) fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("no message")
}

/// The error of a file whose reader panicked, with the panic's message.
fn reader_panicked(file: &object_store::path::Path, panic: &(dyn std::any::Any + Send)) -> String {
    format!(
        "{file}: the file is malformed: its reader failed ({})",
        panic_message(panic)
    )
}

/// What resolving a source found without reading every listing.
struct Discovered {
    /// Hive partition keys by depth, with the values seen at that depth.
    partitions: Vec<(String, Vec<String>)>,
    /// Data files of one partition (or of the whole source when unpartitioned).
    files: Vec<object_store::ObjectMeta>,
}

/// Finds a source's partition columns and some of its files. A folder is walked with
/// delimiter listings — the partition folders of each level, then into one of them —
/// so that resolving a source does not list every partition: the run itself lists only
/// the partitions its filters keep. Globs are listed in full.
async fn discover(
    state: &dyn datafusion::catalog::Session,
    store: &dyn object_store::ObjectStore,
    url: &ListingTableUrl,
) -> std::result::Result<Discovered, String> {
    if url.get_glob().is_some() {
        let files: Vec<object_store::ObjectMeta> = url
            .list_all_files(state, store, "")
            .await
            .map_err(|e| strip_context(&e))?
            .try_collect()
            .await
            .map_err(|e| strip_context(&e))?;
        let mut partitions: Vec<(String, Vec<String>)> = Vec::new();
        for (index, file) in files.iter().enumerate() {
            let Some(segments) = url.strip_prefix(&file.location) else {
                continue;
            };
            let segments: Vec<&str> = segments.collect();
            let pairs: Vec<(&str, &str)> = segments[..segments.len().saturating_sub(1)]
                .iter()
                .filter_map(|segment| segment.split_once('='))
                .collect();
            if index == 0 {
                partitions = pairs
                    .iter()
                    .map(|(k, _)| ((*k).to_owned(), Vec::new()))
                    .collect();
            }
            let keys: Vec<&str> = pairs.iter().map(|(k, _)| *k).collect();
            let expected: Vec<&str> = partitions.iter().map(|(k, _)| k.as_str()).collect();
            if keys != expected {
                return Err(format!(
                    "files are partitioned inconsistently: [{}] and [{}] at {}",
                    expected.join(", "),
                    keys.join(", "),
                    file.location
                ));
            }
            for ((_, values), (_, value)) in partitions.iter_mut().zip(pairs) {
                values.push(value.to_owned());
            }
        }
        return Ok(Discovered { partitions, files });
    }

    let root = url.prefix().clone();
    let mut partitions: Vec<(String, Vec<String>)> = Vec::new();
    // Depth-first over folders, first folder first, until a level holds files.
    let mut pending: Vec<(object_store::path::Path, usize)> = vec![(root.clone(), 0)];
    while let Some((prefix, depth)) = pending.pop() {
        let listing = match store.list_with_delimiter(Some(&prefix)).await {
            Ok(listing) => listing,
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(err) => return Err(format!("listing {prefix}: {err}")),
        };
        if !listing.objects.is_empty() {
            return Ok(Discovered {
                partitions,
                files: listing.objects,
            });
        }
        let mut folders = listing.common_prefixes;
        folders.sort();
        let names: Vec<String> = folders
            .iter()
            .filter_map(|folder| folder.filename().map(str::to_owned))
            .collect();
        let pairs: Vec<(&str, &str)> = names.iter().filter_map(|n| n.split_once('=')).collect();
        if !pairs.is_empty() {
            let key = pairs[0].0;
            if pairs.len() != names.len() || pairs.iter().any(|(k, _)| *k != key) {
                return Err(format!(
                    "folders below {prefix} mix partition keys or plain folders: {}",
                    names.join(", ")
                ));
            }
            if partitions.len() == depth {
                partitions.push((
                    key.to_owned(),
                    pairs.iter().map(|(_, v)| (*v).to_owned()).collect(),
                ));
            }
        }
        for folder in folders.into_iter().rev() {
            pending.push((folder, depth + 1));
        }
    }
    // Not a folder: the location may name one file.
    if partitions.is_empty() {
        match store.head(&root).await {
            Ok(meta) => {
                return Ok(Discovered {
                    partitions,
                    files: vec![meta],
                });
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(err) => return Err(format!("reading {root}: {err}")),
        }
    }
    Ok(Discovered {
        partitions,
        files: Vec::new(),
    })
}

/// A partition column's type: as the source declares it, else inferred from its values.
fn partition_type(
    spec: &SourceSpec,
    source: &str,
    key: &str,
    values: &[String],
    at: &Position,
) -> Result<DataType> {
    match spec.partitions.get(key) {
        Some(declared) => parse_column_type(&declared.0).map_err(|message| JobError::Invalid {
            at: at.clone(),
            field: format!("sources.{source}.partitions.{key}"),
            message,
        }),
        None => Ok(infer_partition_type(values)),
    }
}

/// Partition values typed as Spark infers them: int, bigint, date, else string.
fn infer_partition_type(values: &[String]) -> DataType {
    let present: Vec<&String> = values
        .iter()
        .filter(|v| v.as_str() != HIVE_DEFAULT_PARTITION)
        .collect();
    if present.is_empty() {
        return DataType::Utf8;
    }
    if present.iter().all(|v| v.parse::<i32>().is_ok()) {
        DataType::Int32
    } else if present.iter().all(|v| v.parse::<i64>().is_ok()) {
        DataType::Int64
    } else if present
        .iter()
        .all(|v| chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").is_ok() && v.len() == 10)
    {
        DataType::Date32
    } else {
        DataType::Utf8
    }
}
