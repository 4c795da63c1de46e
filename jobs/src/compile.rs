//! Compilation of a definition into DataFusion logical plans, one per output.
//!
//! ```text
//! definition + params ──► sources resolved, listed, typed ──► steps applied to `input`
//!                                                             ──► params bound ──► plans
//! ```
//!
//! Compiling reads the sources' listings and schemas (so unknown columns and type errors
//! in expressions are found before anything runs) but no data.

mod cleanse;
mod malformed;
mod output;
mod overlap;
mod source;
mod steps;
mod zones;

pub use zones::{StorageZone, StorageZones};

use std::collections::BTreeMap;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;

use crate::compile::steps::apply_step;
use crate::conf::JobSettings;
use crate::definition::{
    JobDefinition, MalformedMode, OutputFormat, OutputSpec, QualitySpec, RuleAction, Step,
    WriteMode, position,
};
use crate::error::{JobError, Position, Result};
use crate::frame::{strip_context, visible_columns};
use crate::layout::{
    QUARANTINE_COLUMNS, QUARANTINE_LINE_COLUMNS, QUARANTINE_OUTPUT, SOURCE_FILE_COLUMN,
    SOURCE_LINE_COLUMN,
};
use crate::params::BoundParams;
use crate::quality::{CompiledQuality, QualityBuilder, QualityError};
use cleanse::StepEffects;

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
    /// Where the deployment lets it read and write; empty checks nothing.
    pub zones: StorageZones,
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
    /// For a CSV source read by Sluice's reader: the table of its rows with their file
    /// and line (hidden columns).
    pub(crate) lines: Option<String>,
    /// For a CSV source read by Sluice's reader that keeps malformed rows: the table of
    /// those rows, and the action of the `malformed_row` rule.
    pub(crate) malformed: Option<MalformedRows>,
    /// For a text source: its files as compile found them (empty ones, headers).
    pub files: Option<crate::read::SourceFiles>,
    /// Warnings about its files for the run (empty files, headers that differ).
    pub warnings: Vec<String>,
}

/// Where a source's malformed rows are, and what becomes of them.
#[derive(Debug, Clone)]
pub(crate) struct MalformedRows {
    /// The session table of the malformed rows.
    pub table: String,
    /// `PERMISSIVE` (quarantined when the job has a quarantine) or `DROPMALFORMED`.
    pub mode: crate::definition::MalformedMode,
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
        use futures::FutureExt;
        let planned = std::panic::AssertUnwindSafe(state.create_physical_plan(&self.plan))
            .catch_unwind()
            .await;
        match planned {
            Ok(planned) => planned.map_err(|err| {
                JobError::datafusion(format!("planning output `{}`", self.name), err)
            }),
            // Planning reads the files' footers (statistics): a reader library that
            // panics on a malformed file fails the run, naming the file, and never
            // leaves it hanging.
            Err(panic) => {
                let panic = source::panic_message(&*panic).to_owned();
                Err(JobError::Output {
                    output: self.name.clone(),
                    path: self.location.clone(),
                    message: format!(
                        "planning it: {}",
                        source::malformed_file(state, &self.plan, panic).await
                    ),
                })
            }
        }
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

impl CompiledJob {
    /// What compile found worth a warning in the sources' files (empty files, headers
    /// that differ), for the run.
    pub fn warnings(&self) -> Vec<String> {
        self.sources
            .iter()
            .flat_map(|source| source.warnings.iter().cloned())
            .collect()
    }
}

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
            zones: StorageZones::default(),
        })
    }

    /// Compiles the job in `ctx`. Relative local paths resolve against `base_dir`.
    pub async fn compile(&self, ctx: &SessionContext, base_dir: &FsPath) -> Result<CompiledJob> {
        self.check_zones(base_dir)?;
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
        let quarantines = definition
            .quality
            .as_ref()
            .is_some_and(|quality| quality.quarantine.is_some());
        let input_source = sources.iter().find(|source| source.name == input).cloned();
        // Rows keep their line for the quarantine, unless a `sql` step could see it: a
        // `SELECT DISTINCT *` over rows that each carry their own line would dedupe
        // nothing.
        let has_sql = definition
            .steps
            .iter()
            .any(|step| matches!(step.value, Step::Sql(_)));
        // A cast step's error names the failing row's file and line too; without a
        // quarantine the two are dropped after the last cast step.
        let last_cast = definition
            .steps
            .iter()
            .rposition(|step| matches!(step.value, Step::Cast(_)));
        let lines = input_source
            .as_ref()
            .and_then(|source| source.lines.clone())
            .filter(|_| (quarantines || last_cast.is_some()) && !has_sql);
        let mut frame = ctx
            .table(lines.as_deref().unwrap_or(input))
            .await
            .map_err(|err| JobError::datafusion(format!("reading source `{input}`"), err))?;
        if quarantines && lines.is_none() {
            // Quarantined rows name their file; evaluated inside the scan, per file.
            frame = frame
                .with_column(
                    SOURCE_FILE_COLUMN,
                    datafusion::functions::core::expr_fn::input_file_name(),
                )
                .map_err(|err| JobError::datafusion(format!("reading source `{input}`"), err))?;
        }
        let mut effects = StepEffects::default();
        // Declared sensitive: withheld from errors and samples from the first step on.
        effects
            .sensitive
            .extend(definition.sensitive.iter().cloned());
        effects.masked.extend(definition.sensitive.iter().cloned());
        for step in &definition.steps {
            if let Step::Mask(mask) = &step.value {
                effects.sensitive.extend(mask.columns.keys().cloned());
            }
        }
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
            if lines.is_some() && !quarantines && Some(index) == last_cast {
                frame = frame
                    .drop_columns(&[SOURCE_FILE_COLUMN, SOURCE_LINE_COLUMN])
                    .map_err(|err| {
                        JobError::datafusion(format!("reading source `{input}`"), err)
                    })?;
            }
        }
        let columns = visible_columns(&frame);
        let no_quality = QualitySpec::default();
        let quality_spec = definition.quality.as_ref().unwrap_or(&no_quality);
        let malformed = input_source
            .as_ref()
            .and_then(|source| source.malformed.clone());
        let quality = if definition.quality.is_some()
            || !effects.parse_rules.is_empty()
            || malformed.is_some()
        {
            let mut builder = QualityBuilder::new(ctx, quality_spec, &effects.masked);
            for (name, column, action) in &effects.parse_rules {
                builder.add_parse_rule(name.clone(), column, *action);
            }
            let malformed_flag = malformed.as_ref().map(|rows| {
                let action = match rows.mode {
                    MalformedMode::Permissive if quarantines => RuleAction::Quarantine,
                    _ => RuleAction::Drop,
                };
                builder.add_malformed_rule(action)
            });
            if let Some(flag) = &malformed_flag {
                frame = malformed::with_row_columns(frame, flag).map_err(|message| {
                    JobError::Invalid {
                        at: self.top(),
                        field: format!("sources.{input}"),
                        message,
                    }
                })?;
            }
            let dates = self.params.date_values();
            let today = chrono::Utc::now().date_naive();
            let (checked, quality) = builder.build(frame, &dates, today).await.map_err(
                |QualityError { rule, message }| match rule {
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
            if let (Some(flag), Some(rows), Some(source)) =
                (&malformed_flag, &malformed, &input_source)
            {
                frame = malformed::with_malformed_rows(ctx, frame, rows, flag, source)
                    .await
                    .map_err(|message| JobError::Invalid {
                        at: self.top(),
                        field: format!("sources.{input}"),
                        message,
                    })?;
            }
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
                // Rows from Sluice's CSV reader keep their line (and, when malformed,
                // their raw text and fault).
                let schema = frame.schema();
                quarantine_columns.extend(
                    QUARANTINE_LINE_COLUMNS
                        .iter()
                        .filter(|(_, hidden)| schema.field_with_unqualified_name(hidden).is_ok())
                        .map(|(written, _)| (*written).to_owned()),
                );
                let output = OutputSpec {
                    name: QUARANTINE_OUTPUT.into(),
                    path: spec.path.clone(),
                    format: OutputFormat::Parquet,
                    partition_by: match &spec.partition_by {
                        Some(explicit) => explicit.clone(),
                        // Like the first output, when its rows carry those columns.
                        None => definition
                            .outputs
                            .first()
                            .map(|output| output.value.partition_by.clone())
                            .filter(|by| by.iter().all(|column| columns.contains(column)))
                            .unwrap_or_default(),
                    },
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
        let mut quality = quality;
        if let Some(quality) = quality.as_mut() {
            quality.sources = sources
                .iter()
                .filter_map(|source| source.files.clone())
                .filter(|files| files.empty_count > 0 || !files.headers.is_empty())
                .collect();
        }
        let compiled = CompiledJob {
            sources,
            outputs,
            quality,
            quarantine,
        };
        compiled.check_overlaps(&self.origin, &[])?;
        Ok(compiled)
    }

    /// Renders a mask step's key reference and checks that this process can read it,
    /// so a missing key fails the submission, not the run. Errors name the reference.
    fn mask_key(&self, template: &str, field: &str, at: &Position) -> Result<String> {
        let rendered = self.params.render_text(template, &format!("{field}.key"))?;
        let invalid = |message: String| JobError::Invalid {
            at: at.clone(),
            field: format!("{field}.key"),
            message,
        };
        let reference = crate::functions::SecretRef::parse(&rendered).map_err(&invalid)?;
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
