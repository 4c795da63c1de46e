//! The steps applied to a frame, one by one: relational steps here, cleansing steps in
//! `cleanse`, dedupe by key.

use std::collections::BTreeMap;

use datafusion::execution::FunctionRegistry;
use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::{Expr, SortExpr, cast, col, lit};
use datafusion::prelude::{DataFrame, SessionContext};
use datafusion::scalar::ScalarValue;

use super::cleanse::{self, StepEffects};
use crate::definition::{DedupeStep, Step, parse_column_type};
use crate::frame::{
    check_expr, column, is_string, mark_repeated_keys, parse_ordering, replace_columns,
    require_columns, strip_context,
};
use crate::functions::CHECKED_CAST;
use crate::layout::{SOURCE_FILE_COLUMN, SOURCE_LINE_COLUMN, is_hidden};

/// Applies one step; errors are the message to show beside the step's position.
pub(super) async fn apply_step(
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
            let expr = crate::sql::expression(&frame, &derive.expr)
                .map_err(|err| format!("`{}`: {}", derive.expr, strip_context(&err)))?;
            check_expr(&frame, &expr, &derive.expr)?;
            frame.with_column(&derive.column, expr).map_err(fail)
        }
        Step::Filter(predicate) => {
            let expr = crate::sql::expression(&frame, predicate)
                .map_err(|err| format!("`{predicate}`: {}", strip_context(&err)))?;
            check_expr(&frame, &expr, predicate)?;
            frame.filter(expr).map_err(fail)
        }
        Step::Cast(columns) => {
            require_columns(&frame, columns.keys())?;
            let mut replacements = BTreeMap::new();
            for (name, ty) in columns {
                let data_type = parse_column_type(&ty.0).map_err(|m| format!("`{name}`: {m}"))?;
                let field = frame
                    .schema()
                    .field_with_unqualified_name(name)
                    .map_err(|err| strip_context(&err))?;
                // Text is where ANSI casts fail on landing data: its cast names the step,
                // the column and the row's file and line when it fails.
                let cast = if is_string(field.data_type()) && !is_string(&data_type) {
                    checked_cast(ctx, &frame, name, data_type, index, effects)?
                } else {
                    cast(column(name), data_type)
                };
                replacements.insert(name.clone(), cast);
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
            // A step is one query over `input`: DDL (`CREATE EXTERNAL TABLE … LOCATION`
            // would read any path at planning), DML and `COPY` (writes outside the staging
            // and commit protocol) and statements (`SET` of session options) are refused
            // before anything is planned against storage.
            let queries_only = SQLOptions::new()
                .with_allow_ddl(false)
                .with_allow_dml(false)
                .with_allow_statements(false);
            let result = crate::sql::query(ctx, query, queries_only)
                .await
                .map_err(|err| {
                    let message = strip_context(&err);
                    if [
                        "DDL not supported",
                        "DML not supported",
                        "Statement not supported",
                    ]
                    .iter()
                    .any(|refused| message.contains(refused))
                    {
                        format!(
                            "a sql step is one query (SELECT, WITH, VALUES): {message}; \
                         CREATE, DROP, INSERT, COPY and SET are refused"
                        )
                    } else {
                        message
                    }
                });
            // `input` is the previous result only for this step.
            let _ = ctx.deregister_table("input");
            let result = result?;
            crate::frame::refuse_keyed_in_plan(result.logical_plan())?;
            Ok(result)
        }
    }
}

/// `__sluice_cast` of a text column, with the row's file and line when the frame carries
/// them (see `functions::cast`).
fn checked_cast(
    ctx: &SessionContext,
    frame: &DataFrame,
    name: &str,
    data_type: datafusion::arrow::datatypes::DataType,
    index: usize,
    effects: &StepEffects,
) -> std::result::Result<Expr, String> {
    let function = ctx
        .udf(CHECKED_CAST)
        .map_err(|err| format!("function `{CHECKED_CAST}`: {}", strip_context(&err)))?;
    let target = ScalarValue::try_from(&data_type).map_err(|err| strip_context(&err))?;
    let mut args = vec![
        column(name),
        lit(target),
        lit(format!("steps[{index}].cast")),
        lit(name),
        lit(effects.sensitive.contains(name)),
    ];
    let schema = frame.schema();
    if [SOURCE_FILE_COLUMN, SOURCE_LINE_COLUMN]
        .iter()
        .all(|hidden| schema.field_with_unqualified_name(hidden).is_ok())
    {
        args.push(column(SOURCE_FILE_COLUMN));
        args.push(column(SOURCE_LINE_COLUMN));
    }
    Ok(function.call(args))
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
