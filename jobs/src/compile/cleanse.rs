//! The cleansing steps: null and case normalization, whitespace, regex replacement,
//! tolerant typing, standardization through a mapping table, and masking. Each turns a
//! `DataFrame` into the next; errors are the message shown beside the step.

use std::collections::{BTreeMap, BTreeSet};

use datafusion::arrow::datatypes::DataType;
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::{Expr, JoinType, cast, col, lit, try_cast, when};
use datafusion::prelude::{DataFrame, SessionContext};
use datafusion::scalar::ScalarValue;

use crate::definition::parse_column_type;
use crate::definition::{
    CaseStyle, MaskMethod, MaskStep, NullsStep, ParseColumn, RegexReplaceStep, RuleAction,
    StandardizeStep,
};
use crate::frame::{
    broadcast_if_small, column, is_string, replace_columns, require_columns, strip_context,
};
use crate::layout::{MASKED_SAMPLE, PARSE_FAILURE_PREFIX, is_hidden};

type StepResult = std::result::Result<DataFrame, String>;

/// What the steps learned that the quality checks need.
#[derive(Debug, Default)]
pub(crate) struct StepEffects {
    /// Parse rules: (rule name, column, action), in step order.
    pub parse_rules: Vec<(String, String, RuleAction)>,
    /// Columns masked so far.
    pub masked: BTreeSet<String>,
    /// Columns any mask step of the job masks: a failed cast withholds their values.
    pub sensitive: BTreeSet<String>,
}

fn fail(err: datafusion::error::DataFusionError) -> String {
    strip_context(&err)
}

fn udf(ctx: &SessionContext, name: &str, args: Vec<Expr>) -> Result<Expr, String> {
    let function = ctx
        .udf(name)
        .map_err(|err| format!("function `{name}`: {}", strip_context(&err)))?;
    Ok(function.call(args))
}

/// The string columns named, or every visible string column when none are.
fn string_targets(
    frame: &DataFrame,
    columns: &[String],
    step: &str,
) -> Result<Vec<String>, String> {
    let schema = frame.schema();
    if columns.is_empty() {
        return Ok(schema
            .fields()
            .iter()
            .filter(|f| is_string(f.data_type()) && !is_hidden(f.name()))
            .map(|f| f.name().clone())
            .collect());
    }
    require_columns(frame, columns)?;
    for name in columns {
        let field = schema
            .field_with_unqualified_name(name)
            .map_err(|e| strip_context(&e))?;
        if !is_string(field.data_type()) {
            return Err(format!(
                "`{name}` is {}, not a string; {step} applies to strings",
                field.data_type()
            ));
        }
    }
    Ok(columns.to_vec())
}

/// Empty strings and sentinels (trimmed, any case) become NULL.
pub(crate) fn nulls(frame: DataFrame, step: &NullsStep) -> StepResult {
    let targets = string_targets(&frame, &step.columns, "nulls")?;
    let sentinels: Vec<Expr> = step
        .values
        .iter()
        .map(|v| lit(v.trim().to_uppercase()))
        .collect();
    let mut replacements = BTreeMap::new();
    for name in targets {
        let trimmed = datafusion::functions::string::expr_fn::btrim(vec![column(&name)]);
        let mut missing = trimmed.clone().eq(lit(""));
        if !sentinels.is_empty() {
            missing = missing.or(datafusion::functions::string::expr_fn::upper(trimmed)
                .in_list(sentinels.clone(), false));
        }
        let expr = when(missing, lit(ScalarValue::Utf8(None)))
            .otherwise(column(&name))
            .map_err(fail)?;
        replacements.insert(name, expr);
    }
    replace_columns(frame, replacements)
}

/// Upper, lower or title case.
pub(crate) fn case(frame: DataFrame, styles: &BTreeMap<String, CaseStyle>) -> StepResult {
    let names: Vec<String> = styles.keys().cloned().collect();
    string_targets(&frame, &names, "case")?;
    let replacements = styles
        .iter()
        .map(|(name, style)| {
            let value = column(name);
            let expr = match style {
                CaseStyle::Upper => datafusion::functions::string::expr_fn::upper(value),
                CaseStyle::Lower => datafusion::functions::string::expr_fn::lower(value),
                CaseStyle::Title => datafusion::functions::unicode::expr_fn::initcap(value),
            };
            (name.clone(), expr)
        })
        .collect();
    replace_columns(frame, replacements)
}

/// Trimmed, inner whitespace runs made one space.
pub(crate) fn collapse_whitespace(
    ctx: &SessionContext,
    frame: DataFrame,
    columns: &[String],
) -> StepResult {
    let targets = string_targets(&frame, columns, "collapse_whitespace")?;
    let mut replacements = BTreeMap::new();
    for name in targets {
        replacements.insert(
            name.clone(),
            udf(ctx, "collapse_whitespace", vec![column(&name)])?,
        );
    }
    replace_columns(frame, replacements)
}

/// Every match replaced, as Spark's `regexp_replace` does.
pub(crate) fn regex_replace(frame: DataFrame, step: &RegexReplaceStep) -> StepResult {
    string_targets(&frame, std::slice::from_ref(&step.column), "regex_replace")?;
    let expr = datafusion::functions::regex::expr_fn::regexp_replace(
        column(&step.column),
        lit(step.pattern.clone()),
        lit(step.replacement.clone()),
        Some(lit("g")),
    );
    replace_columns(frame, BTreeMap::from([(step.column.clone(), expr)]))
}

/// Parses text into types; keeps the raw text of each value that did not parse in a
/// hidden column, which the quality checks count as a violation of the row.
pub(crate) fn parse(
    ctx: &SessionContext,
    frame: DataFrame,
    columns: &BTreeMap<String, ParseColumn>,
    effects: &mut StepEffects,
) -> StepResult {
    let names: Vec<String> = columns.keys().cloned().collect();
    require_columns(&frame, &names)?;
    let mut replacements = BTreeMap::new();
    let mut failures = Vec::new();
    for (name, entry) in columns {
        let spec = entry.spec();
        let target =
            parse_column_type(&spec.column_type.0).map_err(|m| format!("`{name}`: {m}"))?;
        let raw = cast(column(name), DataType::Utf8);
        let patterns = |defaults: &[&str]| -> Vec<Expr> {
            if spec.formats.is_empty() {
                defaults.iter().map(|p| lit(*p)).collect()
            } else {
                spec.formats.iter().map(|p| lit(p.clone())).collect()
            }
        };
        let parsed = match &target {
            DataType::Date32 => {
                let mut args = vec![raw.clone()];
                args.extend(patterns(&["yyyy-MM-dd"]));
                udf(ctx, "parse_date", args)?
            }
            DataType::Timestamp(_, _) => {
                let mut args = vec![raw.clone()];
                args.extend(patterns(&["yyyy-MM-dd HH:mm:ss", "yyyy-MM-dd"]));
                cast(udf(ctx, "parse_timestamp", args)?, target.clone())
            }
            DataType::Utf8 => raw.clone(),
            DataType::Boolean => try_cast(
                datafusion::functions::string::expr_fn::btrim(vec![raw.clone()]),
                target.clone(),
            ),
            _ => try_cast(udf(ctx, "parse_number", vec![raw.clone()])?, target.clone()),
        };
        let failure = when(
            raw.clone().is_not_null().and(parsed.clone().is_null()),
            raw.clone(),
        )
        .end()
        .map_err(fail)?;
        failures.push((format!("{PARSE_FAILURE_PREFIX}{name}"), failure));
        replacements.insert(name.clone(), parsed);
        effects.parse_rules.push((
            spec.rule
                .clone()
                .unwrap_or_else(|| format!("{name}_parses")),
            name.clone(),
            spec.action.unwrap_or(RuleAction::Quarantine),
        ));
    }
    // Failure columns read the raw values, so they join the same projection.
    let mut exprs: Vec<Expr> = Vec::new();
    for (qualifier, field) in frame.schema().iter() {
        let name = field.name();
        if failures.iter().any(|(hidden, _)| hidden == name) {
            continue;
        }
        exprs.push(match replacements.remove(name) {
            Some(expr) => expr.alias(name),
            None => Expr::Column(datafusion::common::Column::new(qualifier.cloned(), name)),
        });
    }
    for (hidden, failure) in failures {
        exprs.push(failure.alias(hidden));
    }
    frame.select(exprs).map_err(fail)
}

/// Looks a column up in a mapping table, ignoring case and extra whitespace.
pub(crate) async fn standardize(
    ctx: &SessionContext,
    frame: DataFrame,
    step: &StandardizeStep,
    index: usize,
) -> StepResult {
    require_columns(&frame, std::slice::from_ref(&step.column))?;
    let reference = ctx.table(step.reference.as_str()).await.map_err(fail)?;
    require_columns(&reference, [&step.key, &step.value])
        .map_err(|m| format!("reference `{}`: {m}", step.reference))?;
    let key = format!("__sluice_std_key_{index}");
    let value = format!("__sluice_std_value_{index}");
    let match_key = |expr: Expr| -> Result<Expr, String> {
        Ok(datafusion::functions::string::expr_fn::upper(udf(
            ctx,
            "collapse_whitespace",
            vec![cast(expr, DataType::Utf8)],
        )?))
    };
    // One value per key, so the lookup never multiplies rows: a key mapped twice takes
    // the smallest value.
    let mapping = reference
        .select(vec![
            match_key(column(&step.key))?.alias(&key),
            column(&step.value).alias(&value),
        ])
        .and_then(|m| m.filter(col(key.as_str()).is_not_null()))
        .and_then(|m| {
            m.aggregate(
                vec![col(key.as_str())],
                vec![
                    datafusion::functions_aggregate::expr_fn::min(col(value.as_str()))
                        .alias(&value),
                ],
            )
        })
        .map_err(fail)?;
    let mapping = broadcast_if_small(ctx, mapping).await?;
    let lookup = format!("__sluice_std_lookup_{index}");
    let joined = frame
        .with_column(&lookup, match_key(column(&step.column))?)
        .and_then(|f| {
            f.join(
                mapping,
                JoinType::Left,
                &[lookup.as_str()],
                &[key.as_str()],
                None,
            )
        })
        .map_err(fail)?;
    let into = step.into.clone().unwrap_or_else(|| step.column.clone());
    let mut exprs = Vec::new();
    let mut placed = false;
    for (qualifier, field) in joined.schema().iter() {
        let name = field.name();
        if name == &key || name == &lookup || name == &value {
            continue;
        }
        if name == &into {
            exprs.push(col(value.as_str()).alias(&into));
            placed = true;
        } else {
            exprs.push(Expr::Column(datafusion::common::Column::new(
                qualifier.cloned(),
                name,
            )));
        }
    }
    if !placed {
        exprs.push(col(value.as_str()).alias(&into));
    }
    joined.select(exprs).map_err(fail)
}

/// Masks columns. A masked column's raw text is also removed from the parse-failure
/// column, so that it cannot reach a sample.
pub(crate) fn mask(
    ctx: &SessionContext,
    frame: DataFrame,
    step: &MaskStep,
    key: Option<&str>,
    effects: &mut StepEffects,
) -> StepResult {
    let names: Vec<String> = step.columns.keys().cloned().collect();
    require_columns(&frame, &names)?;
    let mut replacements = BTreeMap::new();
    for (name, method) in &step.columns {
        let text = cast(column(name), DataType::Utf8);
        let keyed = |function: &str| -> Result<Expr, String> {
            let key = key.ok_or_else(|| format!("`{name}`: {function} needs `key`"))?;
            udf(ctx, function, vec![text.clone(), lit(key.to_owned())])
        };
        let expr = match method {
            MaskMethod::HmacSha256 => keyed("hmac_sha256")?,
            MaskMethod::Tokenize => keyed("tokenize")?,
            MaskMethod::Redact => udf(ctx, "redact", vec![text.clone()])?,
            MaskMethod::Zip3 => udf(ctx, "zip3", vec![text.clone()])?,
            MaskMethod::GeneralizeMonth | MaskMethod::GeneralizeYear => {
                let field = frame
                    .schema()
                    .field_with_unqualified_name(name)
                    .map_err(|e| strip_context(&e))?;
                if !matches!(
                    field.data_type(),
                    DataType::Date32 | DataType::Date64 | DataType::Timestamp(_, _)
                ) {
                    return Err(format!(
                        "`{name}` is {}; generalize a date (parse or cast it first)",
                        field.data_type()
                    ));
                }
                let unit = if *method == MaskMethod::GeneralizeMonth {
                    "month"
                } else {
                    "year"
                };
                udf(ctx, "generalize_date", vec![column(name), lit(unit)])?
            }
        };
        replacements.insert(name.clone(), expr);
        let failure = format!("{PARSE_FAILURE_PREFIX}{name}");
        if frame.schema().field_with_unqualified_name(&failure).is_ok() {
            let hidden = when(column(&failure).is_not_null(), lit(MASKED_SAMPLE))
                .end()
                .map_err(fail)?;
            replacements.insert(failure, hidden);
        }
        effects.masked.insert(name.clone());
    }
    replace_columns(frame, replacements)
}
