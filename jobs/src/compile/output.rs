//! Outputs compiled: each output's location, partitioning, write mode and plan, and the
//! checks on data already there.

use std::path::Path as FsPath;
use std::sync::Arc;

use datafusion::datasource::listing::ListingTableUrl;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{DataFrame, SessionContext};
use futures::TryStreamExt;

use crate::compile::{CompiledOutput, DEFAULT_TARGET_FILE_SIZE, PreparedJob, to_location};
use crate::definition::{OutputSpec, WriteMode, parse_byte_size};
use crate::error::{JobError, Position, Result};
use crate::frame::strip_context;

impl PreparedJob {
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn compile_output(
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
    pub(super) async fn compile_output_location(
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
