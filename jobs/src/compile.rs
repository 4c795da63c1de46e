//! Compilation of a definition into DataFusion logical plans, one per output.
//!
//! ```text
//! definition + params ──► sources resolved, listed, typed ──► steps applied to `input`
//!                                                             ──► params bound ──► plans
//! ```
//!
//! Compiling reads the sources' listings and schemas (so unknown columns and type errors
//! in expressions are found before anything runs) but no data.

use std::collections::BTreeMap;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::Column;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::logical_expr::{
    Expr, ExprFunctionExt, LogicalPlan, SortExpr, cast, col, lit, when,
};
use datafusion::prelude::{DataFrame, SessionContext};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;

use crate::cleanse::{self, StepEffects};
use crate::conf::JobSettings;
use crate::definition::{
    DedupeStep, JobDefinition, OutputFormat, OutputSpec, QualitySpec, SourceFormat, SourceSpec,
    Step, WriteMode, position,
};
use crate::error::{JobError, Position, Result};
use crate::params::BoundParams;
use crate::quality::{CompiledQuality, QualityBuilder, SOURCE_FILE_COLUMN};
use crate::storage::ObjectStores;
use crate::types::{parse_byte_size, parse_column_type};
use crate::write::HIVE_DEFAULT_PARTITION;

/// The default target size of output files, as Spark's `maxPartitionBytes`.
pub const DEFAULT_TARGET_FILE_SIZE: u64 = 128 << 20;

/// A definition with its params bound and its `conf` resolved: everything needed to
/// build the session a run plans in.
#[derive(Debug, Clone)]
pub struct PreparedJob {
    /// The definition.
    pub definition: JobDefinition,
    /// Where it came from, for error messages.
    pub origin: String,
    /// The run's typed params.
    pub params: BoundParams,
    /// The resolved `conf`.
    pub settings: JobSettings,
}

/// A source as resolved for one run.
#[derive(Debug, Clone)]
pub struct ResolvedSource {
    /// The source's name.
    pub name: String,
    /// Its location as a URL (a glob stays a glob).
    pub location: String,
    /// Hive partition columns found below it, with their types.
    pub partition_columns: Vec<(String, DataType)>,
}

/// One output's plan.
#[derive(Debug, Clone)]
pub struct CompiledOutput {
    /// The output's name.
    pub name: String,
    /// The output location as a URL, no trailing `/`.
    pub location: String,
    /// Hive partition columns.
    pub partition_by: Vec<String>,
    /// What happens to data already there.
    pub mode: WriteMode,
    /// Roll to a new file past this many bytes.
    pub target_file_size: u64,
    /// The columns written, in order (the plan also carries Sluice's hidden columns).
    pub columns: Vec<String>,
    /// The logical plan of the rows, params bound: the steps' result with the quality
    /// flag columns.
    pub plan: LogicalPlan,
}

impl CompiledOutput {
    /// The physical plan of the output's rows, as `state` plans it.
    pub async fn physical_plan(
        &self,
        state: &datafusion::execution::SessionState,
    ) -> Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
        state
            .create_physical_plan(&self.plan)
            .await
            .map_err(|err| JobError::datafusion(format!("planning output `{}`", self.name), err))
    }
}

/// A run's compiled plans.
#[derive(Debug, Clone)]
pub struct CompiledJob {
    /// The sources as resolved.
    pub sources: Vec<ResolvedSource>,
    /// The outputs, in definition order.
    pub outputs: Vec<CompiledOutput>,
    /// The data-quality checks, when the job has any.
    pub quality: Option<CompiledQuality>,
    /// Where quarantined rows go (its `columns` include the `_dq_*` columns).
    pub quarantine: Option<CompiledOutput>,
}

/// The quarantine output's name in run records and write manifests.
pub const QUARANTINE_OUTPUT: &str = "quarantine";

/// Columns the quarantine output adds to the rows: the rules each row broke, the run,
/// and the file the row came from.
pub const QUARANTINE_COLUMNS: [&str; 3] = ["_dq_rules", "_dq_run_id", "_dq_source_file"];

impl PreparedJob {
    /// Binds raw `name=value` params and resolves `conf`.
    pub fn prepare(
        definition: JobDefinition,
        origin: &str,
        raw_params: &BTreeMap<String, String>,
    ) -> Result<Self> {
        let params = BoundParams::bind(&definition, raw_params)?;
        let settings = JobSettings::from_conf(&definition.conf, origin)?;
        Ok(Self {
            definition,
            origin: origin.to_owned(),
            params,
            settings,
        })
    }

    /// A session context configured for this job (Spark functions and defaults, the
    /// job's `conf`) over the process's object stores.
    pub fn session_context(&self, stores: &Arc<ObjectStores>) -> Result<SessionContext> {
        let config = crate::session::session_config(&self.settings.session)
            .map_err(|err| JobError::datafusion("configuring the session", err))?;
        let state = crate::session::session_state(config, stores)
            .map_err(|err| JobError::datafusion("configuring the session", err))?;
        Ok(SessionContext::new_with_state(state))
    }

    /// Compiles the job in `ctx`. Relative local paths resolve against `base_dir`.
    pub async fn compile(&self, ctx: &SessionContext, base_dir: &FsPath) -> Result<CompiledJob> {
        let definition = &self.definition;
        let mut sources = Vec::new();
        for (name, source) in &definition.sources {
            let at = position(&self.origin, &source.referenced);
            sources.push(
                self.register_source(ctx, name, &source.value, &at, base_dir)
                    .await?,
            );
        }
        let input = definition.input_source().ok_or_else(|| JobError::Invalid {
            at: self.top(),
            field: "input".into(),
            message: "name the source the steps start from".into(),
        })?;
        let mut frame = ctx
            .table(input)
            .await
            .map_err(|err| JobError::datafusion(format!("reading source `{input}`"), err))?;
        let quarantines = definition
            .quality
            .as_ref()
            .is_some_and(|quality| quality.quarantine.is_some());
        if quarantines {
            // Quarantined rows name their file; evaluated inside the scan, per file.
            frame = frame
                .with_column(
                    SOURCE_FILE_COLUMN,
                    datafusion::functions::core::expr_fn::input_file_name(),
                )
                .map_err(|err| JobError::datafusion(format!("reading source `{input}`"), err))?;
        }
        let mut effects = StepEffects::default();
        for (index, step) in definition.steps.iter().enumerate() {
            let at = position(&self.origin, &step.referenced);
            let field = format!("steps[{index}].{}", step.value.kind());
            let mask_key = match &step.value {
                Step::Mask(mask) => match &mask.key {
                    Some(key) => Some(self.mask_key(key, &field, &at)?),
                    None => None,
                },
                _ => None,
            };
            frame = apply_step(
                ctx,
                frame,
                &step.value,
                index,
                mask_key.as_deref(),
                &mut effects,
            )
            .await
            .map_err(|message| JobError::Invalid { at, field, message })?;
        }
        let columns = visible_columns(&frame);
        let no_quality = QualitySpec::default();
        let quality_spec = definition.quality.as_ref().unwrap_or(&no_quality);
        let quality = if definition.quality.is_some() || !effects.parse_rules.is_empty() {
            let mut builder = QualityBuilder::new(ctx, quality_spec, &effects.masked);
            for (name, column, action) in &effects.parse_rules {
                builder.add_parse_rule(name.clone(), column, *action);
            }
            let dates = self.params.date_values();
            let today = chrono::Utc::now().date_naive();
            let (checked, quality) = builder.build(frame, &dates, today).await.map_err(
                |(index, message)| match index {
                    Some(index) => JobError::Invalid {
                        at: position(&self.origin, &quality_spec.rules[index].referenced),
                        field: format!("quality.rules[{index}]"),
                        message,
                    },
                    None => JobError::Invalid {
                        at: self.top(),
                        field: "quality".into(),
                        message,
                    },
                },
            )?;
            frame = checked;
            Some(quality)
        } else {
            None
        };
        let frame = frame
            .with_param_values(self.params.placeholder_values())
            .map_err(|err| JobError::Invalid {
                at: self.top(),
                field: "params".into(),
                message: format!("binding params: {}", strip_context(&err)),
            })?;
        let mut outputs = Vec::new();
        for (index, output) in definition.outputs.iter().enumerate() {
            let at = position(&self.origin, &output.referenced);
            outputs.push(
                self.compile_output(ctx, &frame, &columns, index, &output.value, &at, base_dir)
                    .await?,
            );
        }
        let quarantine = match quality_spec.quarantine.as_ref() {
            Some(spec) => {
                let mut quarantine_columns = columns.clone();
                quarantine_columns.extend(QUARANTINE_COLUMNS.iter().map(|c| (*c).to_owned()));
                let output = OutputSpec {
                    name: QUARANTINE_OUTPUT.into(),
                    path: spec.path.clone(),
                    format: OutputFormat::Parquet,
                    partition_by: spec.partition_by.clone(),
                    mode: spec.mode,
                    target_file_size: spec.target_file_size.clone(),
                };
                let mut compiled = self
                    .compile_output_location(
                        ctx,
                        &quarantine_columns,
                        &output,
                        "quality.quarantine",
                        &self.top(),
                        base_dir,
                    )
                    .await?;
                compiled.plan = frame.logical_plan().clone();
                Some(compiled)
            }
            None => None,
        };
        Ok(CompiledJob {
            sources,
            outputs,
            quality,
            quarantine,
        })
    }

    /// Renders a mask step's key reference and checks that this process can read it,
    /// so a missing key fails the submission, not the run. Errors name the reference.
    fn mask_key(&self, template: &str, field: &str, at: &Position) -> Result<String> {
        let rendered = self.params.render(template, &format!("{field}.key"))?;
        let invalid = |message: String| JobError::Invalid {
            at: at.clone(),
            field: format!("{field}.key"),
            message,
        };
        let reference = crate::masking::SecretRef::parse(&rendered).map_err(&invalid)?;
        reference.resolve().map_err(&invalid)?;
        Ok(reference.to_string())
    }

    fn top(&self) -> Position {
        Position {
            origin: self.origin.clone(),
            line: 0,
            column: 0,
        }
    }

    async fn register_source(
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

        let format: Arc<dyn FileFormat> = match spec.format {
            SourceFormat::Parquet => Arc::new(ParquetFormat::default()),
            SourceFormat::Json => Arc::new(JsonFormat::default()),
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
        let sample: Vec<_> = discovered
            .files
            .iter()
            .filter(|meta| meta.size > 0)
            .take(SCHEMA_SAMPLE_FILES)
            .cloned()
            .collect();
        let mut schema = options
            .format
            .infer_schema(&state, &store, &sample)
            .await
            .map_err(|err| source_error(format!("reading its schema: {}", strip_context(&err))))?;
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
        if fixed_partitions.is_empty() && partition_columns.is_empty() {
            ctx.register_table(name, Arc::new(table))
                .map_err(|err| source_error(strip_context(&err)))?;
        } else {
            // The files' table under a hidden name, and the source as a view that types
            // the partition columns and adds those fixed by `base_path`.
            let files = format!("__sluice_files_{name}");
            ctx.register_table(files.as_str(), Arc::new(table))
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
        Ok(ResolvedSource {
            name: name.to_owned(),
            location,
            partition_columns,
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn compile_output(
        &self,
        ctx: &SessionContext,
        frame: &DataFrame,
        columns: &[String],
        index: usize,
        spec: &OutputSpec,
        at: &Position,
        base_dir: &FsPath,
    ) -> Result<CompiledOutput> {
        let mut compiled = self
            .compile_output_location(
                ctx,
                columns,
                spec,
                &format!("outputs[{index}]"),
                at,
                base_dir,
            )
            .await?;
        compiled.plan = frame.logical_plan().clone();
        Ok(compiled)
    }

    /// Resolves an output's location and checks its partitioning against `columns`.
    async fn compile_output_location(
        &self,
        ctx: &SessionContext,
        columns: &[String],
        spec: &OutputSpec,
        field: &str,
        at: &Position,
        base_dir: &FsPath,
    ) -> Result<CompiledOutput> {
        let rendered = self.params.render(&spec.path, &format!("{field}.path"))?;
        let location = to_location(&rendered, base_dir, false)
            .trim_end_matches('/')
            .to_owned();
        let invalid = |name: &str, message: String| JobError::Invalid {
            at: at.clone(),
            field: format!("{field}.{name}"),
            message,
        };
        for column in &spec.partition_by {
            if !columns.contains(column) {
                return Err(invalid(
                    "partition_by",
                    format!(
                        "`{column}` is not a column of the result (columns: {})",
                        columns.join(", ")
                    ),
                ));
            }
        }
        if spec.partition_by.len() == columns.len() {
            return Err(invalid(
                "partition_by",
                "cannot partition by every column: no data columns would be left".into(),
            ));
        }
        let target_file_size = match &spec.target_file_size {
            Some(size) => parse_byte_size(size).map_err(|m| invalid("target_file_size", m))?,
            None => DEFAULT_TARGET_FILE_SIZE,
        };
        if spec.mode == WriteMode::ErrorIfExists
            && output_has_data(ctx, &location)
                .await
                .map_err(|message| JobError::Output {
                    output: spec.name.clone(),
                    path: location.clone(),
                    message,
                })?
        {
            return Err(JobError::Output {
                output: spec.name.clone(),
                path: location,
                message: "already holds data and the mode is error_if_exists".into(),
            });
        }
        Ok(CompiledOutput {
            name: spec.name.clone(),
            location,
            partition_by: spec.partition_by.clone(),
            mode: spec.mode,
            target_file_size,
            columns: columns.to_vec(),
            plan: LogicalPlan::EmptyRelation(datafusion::logical_expr::EmptyRelation {
                produce_one_row: false,
                schema: Arc::new(datafusion::common::DFSchema::empty()),
            }),
        })
    }
}

/// True when a visible data file exists below an output location.
async fn output_has_data(
    ctx: &SessionContext,
    location: &str,
) -> std::result::Result<bool, String> {
    let url = ListingTableUrl::parse(format!("{location}/")).map_err(|e| strip_context(&e))?;
    let store = ctx
        .runtime_env()
        .object_store(&url)
        .map_err(|e| strip_context(&e))?;
    let mut listing = store.list(Some(url.prefix()));
    match listing.try_next().await {
        Ok(next) => Ok(next.is_some()),
        Err(object_store::Error::NotFound { .. }) => Ok(false),
        Err(err) => Err(err.to_string()),
    }
}

/// Applies one step; errors are the message to show beside the step's position.
async fn apply_step(
    ctx: &SessionContext,
    frame: DataFrame,
    step: &Step,
    index: usize,
    mask_key: Option<&str>,
    effects: &mut StepEffects,
) -> std::result::Result<DataFrame, String> {
    let fail = |err: datafusion::error::DataFusionError| strip_context(&err);
    match step {
        Step::Select(columns) => {
            require_columns(&frame, columns)?;
            let hidden = frame
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .filter(|name| is_hidden(name))
                .collect::<Vec<_>>();
            let exprs: Vec<Expr> = columns.iter().chain(&hidden).map(|c| column(c)).collect();
            frame.select(exprs).map_err(fail)
        }
        Step::Rename(renames) => {
            require_columns(&frame, renames.keys())?;
            let mut frame = frame;
            for (old, new) in renames {
                frame = frame.with_column_renamed(old, new).map_err(fail)?;
            }
            Ok(frame)
        }
        Step::Drop(columns) => {
            require_columns(&frame, columns)?;
            let names: Vec<&str> = columns.iter().map(String::as_str).collect();
            frame.drop_columns(&names).map_err(fail)
        }
        Step::Derive(derive) => {
            let expr = frame
                .parse_sql_expr(&derive.expr)
                .map_err(|err| format!("`{}`: {}", derive.expr, strip_context(&err)))?;
            check_expr(&frame, &expr, &derive.expr)?;
            frame.with_column(&derive.column, expr).map_err(fail)
        }
        Step::Filter(predicate) => {
            let expr = frame
                .parse_sql_expr(predicate)
                .map_err(|err| format!("`{predicate}`: {}", strip_context(&err)))?;
            check_expr(&frame, &expr, predicate)?;
            frame.filter(expr).map_err(fail)
        }
        Step::Cast(columns) => {
            require_columns(&frame, columns.keys())?;
            let mut replacements = BTreeMap::new();
            for (name, ty) in columns {
                let data_type = parse_column_type(&ty.0).map_err(|m| format!("`{name}`: {m}"))?;
                replacements.insert(name.clone(), cast(column(name), data_type));
            }
            replace_columns(frame, replacements)
        }
        Step::Trim(columns) => {
            let schema = frame.schema().clone();
            let targets: Vec<String> = if columns.is_empty() {
                schema
                    .fields()
                    .iter()
                    .filter(|f| is_string(f.data_type()) && !is_hidden(f.name()))
                    .map(|f| f.name().clone())
                    .collect()
            } else {
                require_columns(&frame, columns)?;
                columns.clone()
            };
            let mut replacements = BTreeMap::new();
            for name in targets {
                let field = schema
                    .field_with_unqualified_name(&name)
                    .map_err(|err| strip_context(&err))?;
                if !is_string(field.data_type()) {
                    return Err(format!(
                        "`{name}` is {}, not a string; trim applies to strings",
                        field.data_type()
                    ));
                }
                let trimmed = datafusion::functions::string::expr_fn::btrim(vec![column(&name)]);
                replacements.insert(name, trimmed);
            }
            replace_columns(frame, replacements)
        }
        Step::Dedupe(dedupe) => apply_dedupe(ctx, frame, dedupe),
        Step::Nulls(nulls) => cleanse::nulls(frame, nulls),
        Step::Case(styles) => cleanse::case(frame, styles),
        Step::CollapseWhitespace(columns) => cleanse::collapse_whitespace(ctx, frame, columns),
        Step::RegexReplace(replace) => cleanse::regex_replace(frame, replace),
        Step::Parse(columns) => cleanse::parse(ctx, frame, columns, effects),
        Step::Standardize(standardize) => {
            cleanse::standardize(ctx, frame, standardize, index).await
        }
        Step::Mask(mask) => cleanse::mask(ctx, frame, mask, mask_key, effects),
        Step::Sql(query) => {
            ctx.register_table("input", frame.into_view())
                .map_err(fail)?;
            let result = ctx.sql(query).await;
            // `input` is the previous result only for this step.
            let _ = ctx.deregister_table("input");
            let result = result.map_err(|err| strip_context(&err))?;
            Ok(result)
        }
    }
}

/// Replaces some columns by expressions in one projection, keeping column order.
pub(crate) fn replace_columns(
    frame: DataFrame,
    mut replacements: BTreeMap<String, Expr>,
) -> std::result::Result<DataFrame, String> {
    if replacements.is_empty() {
        return Ok(frame);
    }
    let exprs: Vec<Expr> = frame
        .schema()
        .iter()
        .map(
            |(qualifier, field)| match replacements.remove(field.name()) {
                Some(expr) => expr.alias(field.name()),
                None => Expr::Column(Column::new(qualifier.cloned(), field.name())),
            },
        )
        .collect();
    frame.select(exprs).map_err(|err| strip_context(&err))
}

fn apply_dedupe(
    ctx: &SessionContext,
    frame: DataFrame,
    dedupe: &DedupeStep,
) -> std::result::Result<DataFrame, String> {
    const REPEAT: &str = "__sluice_dedupe";
    require_columns(&frame, &dedupe.keys)?;
    let mut ordering: Vec<SortExpr> = Vec::new();
    for entry in &dedupe.order_by {
        ordering.push(parse_ordering(&frame, entry)?);
    }
    let (frame, marks) = mark_repeated_keys(ctx, frame, &dedupe.keys, ordering, REPEAT, false)?;
    frame
        .filter(datafusion::logical_expr::not(col(marks.after.as_str())))
        .and_then(|f| f.drop_columns(&[marks.after.as_str()]))
        .map_err(|err| strip_context(&err))
}

/// The columns [`mark_repeated_keys`] adds.
pub(crate) struct RepeatMarks {
    /// True where an earlier row (by the keys, then the ordering) has the same keys: the
    /// rows `row_number() OVER (PARTITION BY keys ORDER BY ordering) > 1` picks.
    pub after: String,
    /// True where a later row has the same keys (asked for with `with_next`).
    pub before: Option<String>,
}

/// Marks the rows whose keys repeat, as `row_number()` or `count(*)` over
/// `PARTITION BY keys` would, without their cost. DataFusion's window operators work one
/// partition at a time, slicing every column of the batch for each; with a partition
/// per key (most keys a row or two) that cost more than the rest of a cleansing job
/// together. Here the window's partitions are hash buckets of the keys, sorted by the
/// keys and then `ordering` inside, so the rows of one key are adjacent and each is
/// compared with its neighbours. The keys compare with `IS NOT DISTINCT FROM` (NULL keys
/// are one key, as `PARTITION BY` has them).
pub(crate) fn mark_repeated_keys(
    ctx: &SessionContext,
    frame: DataFrame,
    keys: &[String],
    ordering: Vec<SortExpr>,
    prefix: &str,
    with_next: bool,
) -> std::result::Result<(DataFrame, RepeatMarks), String> {
    use datafusion::execution::FunctionRegistry;
    use datafusion::functions_window::expr_fn::{lag, lead};
    use datafusion::scalar::ScalarValue;
    let fail = |err: datafusion::error::DataFusionError| strip_context(&err);
    let bucket_udf = ctx.udf(crate::functions::KEY_BUCKET).map_err(fail)?;
    let key_exprs: Vec<Expr> = keys.iter().map(|k| column(k)).collect();
    let bucket = bucket_udf.call(key_exprs.clone());
    let mut order: Vec<SortExpr> = key_exprs
        .iter()
        .map(|k| k.clone().sort(true, true))
        .collect();
    order.extend(ordering);
    let neighbour = |shifted: Expr, name: String| -> std::result::Result<Expr, String> {
        Ok(shifted
            .partition_by(vec![bucket.clone()])
            .order_by(order.clone())
            .build()
            .map_err(fail)?
            .alias(name))
    };
    let no_row = Some(ScalarValue::Boolean(Some(false)));
    let mut windows = Vec::new();
    let mut helpers = Vec::new();
    // (direction, shift function) for the previous row, and the next one when asked.
    type Shift = fn(Expr, Option<i64>, Option<ScalarValue>) -> Expr;
    let mut sides: Vec<(&str, Shift)> = vec![("prev", lag)];
    if with_next {
        sides.push(("next", lead));
    }
    let mut marks = Vec::new();
    for (side, shift) in sides {
        let exists = format!("{prefix}_{side}_exists");
        windows.push(neighbour(
            shift(lit(true), Some(1), no_row.clone()),
            exists.clone(),
        )?);
        let mut same = col(exists.as_str());
        helpers.push(exists);
        for (index, key) in key_exprs.iter().enumerate() {
            let name = format!("{prefix}_{side}_{index}");
            windows.push(neighbour(shift(key.clone(), Some(1), None), name.clone())?);
            same = same.and(datafusion::logical_expr::binary_expr(
                key.clone(),
                datafusion::logical_expr::Operator::IsNotDistinctFrom,
                col(name.as_str()),
            ));
            helpers.push(name);
        }
        marks.push(same);
    }
    let after = format!("{prefix}_after");
    let before = with_next.then(|| format!("{prefix}_before"));
    let mut frame = frame.window(windows).map_err(fail)?;
    let mut marks = marks.into_iter();
    if let Some(same) = marks.next() {
        frame = frame.with_column(&after, same).map_err(fail)?;
    }
    if let (Some(name), Some(same)) = (&before, marks.next()) {
        frame = frame.with_column(name, same).map_err(fail)?;
    }
    let helpers: Vec<&str> = helpers.iter().map(String::as_str).collect();
    let frame = frame.drop_columns(&helpers).map_err(fail)?;
    Ok((frame, RepeatMarks { after, before }))
}

/// `expr [asc|desc] [nulls first|nulls last]`, with Spark's null order by default.
pub(crate) fn parse_ordering(
    frame: &DataFrame,
    entry: &str,
) -> std::result::Result<SortExpr, String> {
    let mut text = entry.trim().to_owned();
    let mut nulls_first: Option<bool> = None;
    let lower = text.to_ascii_lowercase();
    if let Some(stripped) = lower.strip_suffix("nulls first") {
        nulls_first = Some(true);
        text.truncate(stripped.trim_end().len());
    } else if let Some(stripped) = lower.strip_suffix("nulls last") {
        nulls_first = Some(false);
        text.truncate(stripped.trim_end().len());
    }
    let lower = text.to_ascii_lowercase();
    let mut ascending = true;
    if let Some(stripped) = lower.strip_suffix(" desc") {
        ascending = false;
        text.truncate(stripped.trim_end().len());
    } else if let Some(stripped) = lower.strip_suffix(" asc") {
        text.truncate(stripped.trim_end().len());
    }
    let expr = frame
        .parse_sql_expr(&text)
        .map_err(|err| format!("order_by `{entry}`: {}", strip_context(&err)))?;
    check_expr(frame, &expr, entry)?;
    // Spark: NULLS FIRST for ascending, NULLS LAST for descending.
    Ok(expr.sort(ascending, nulls_first.unwrap_or(ascending)))
}

/// Type-checks an expression against the frame, so a bad column or type is reported
/// at the step that wrote it.
pub(crate) fn check_expr(
    frame: &DataFrame,
    expr: &Expr,
    text: &str,
) -> std::result::Result<(), String> {
    use datafusion::logical_expr::ExprSchemable;
    expr.get_type(frame.schema())
        .map(|_| ())
        .map_err(|err| format!("`{text}`: {}", strip_context(&err)))
}

pub(crate) fn require_columns<'a>(
    frame: &DataFrame,
    names: impl IntoIterator<Item = &'a String>,
) -> std::result::Result<(), String> {
    for name in names {
        if frame.schema().field_with_unqualified_name(name).is_err() {
            return Err(format!(
                "no column `{name}` (columns: {})",
                column_list(frame)
            ));
        }
    }
    Ok(())
}

fn column_list(frame: &DataFrame) -> String {
    frame
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .filter(|name| !is_hidden(name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Columns Sluice carries through the steps for its own use (source file, parse
/// failures, rule flags); never written to an output.
pub(crate) const HIDDEN_PREFIX: &str = "__sluice_";

/// True for a column Sluice carries for itself.
pub(crate) fn is_hidden(name: &str) -> bool {
    name.starts_with(HIDDEN_PREFIX)
}

/// The visible columns of a frame, in order.
fn visible_columns(frame: &DataFrame) -> Vec<String> {
    frame
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|name| !is_hidden(name))
        .collect()
}

/// A column by its exact name (no SQL identifier normalization, no `.` splitting).
pub(crate) fn column(name: &str) -> Expr {
    Expr::Column(Column::new_unqualified(name))
}

pub(crate) fn is_string(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}

/// The message of a DataFusion error without its "Error during planning:" wrappers.
pub fn strip_context(err: &datafusion::error::DataFusionError) -> String {
    err.message().trim().to_owned()
}

/// Files whose schemas are read to type a source.
const SCHEMA_SAMPLE_FILES: usize = 8;

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

/// A path as a URL: URLs pass through, local paths become absolute `file://` URLs
/// (relative ones against `base_dir`); an existing local directory of a source gets
/// a trailing `/` so it is listed as a folder.
fn to_location(path: &str, base_dir: &FsPath, is_source: bool) -> String {
    if path.contains("://") {
        return path.to_owned();
    }
    let local: PathBuf = if FsPath::new(path).is_absolute() {
        PathBuf::from(path)
    } else {
        base_dir.join(path)
    };
    let mut text = local.display().to_string();
    if is_source && local.is_dir() && !text.ends_with('/') {
        text.push('/');
    }
    format!("file://{text}")
}
