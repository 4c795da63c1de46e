//! DataFrame helpers shared by the compiler and the quality builder: columns by name
//! (hidden ones included), expression checks, orderings, and marking repeated keys.

use std::collections::BTreeMap;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::Column;
use datafusion::logical_expr::{Expr, ExprFunctionExt, SortExpr, col, lit};
use datafusion::prelude::{DataFrame, SessionContext};

use crate::error::Result;
use crate::layout::is_hidden;

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
    let expr = crate::sql::expression(frame, &text)
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
    refuse_keyed(expr).map_err(|message| format!("`{text}`: {message}"))?;
    expr.get_type(frame.schema())
        .map(|_| ())
        .map_err(|err| format!("`{text}`: {}", strip_context(&err)))
}

/// The functions keyed by a masking key. Only `mask` steps call them: from an
/// expression anyone who may submit a job could token a list of guessed identifiers under
/// the production key and so reverse the tokens of the data.
pub(crate) const KEYED_FUNCTIONS: [&str; 2] = ["tokenize", "hmac_sha256"];

/// Refuses an expression that calls a keyed function.
pub(crate) fn refuse_keyed(expr: &Expr) -> std::result::Result<(), String> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    let mut keyed = None;
    let _ = expr.apply(|node| {
        if let Expr::ScalarFunction(call) = node
            && KEYED_FUNCTIONS.contains(&call.name())
        {
            keyed = Some(call.name().to_owned());
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    match keyed {
        None => Ok(()),
        Some(name) => Err(format!(
            "`{name}` runs only in a mask step (`mask: {{columns: {{COLUMN: {name}}}}}`), \
             keyed by the job's key; an expression may not call it"
        )),
    }
}

/// Refuses a plan (a `sql` step's query, its subqueries included) that calls a keyed
/// function.
pub(crate) fn refuse_keyed_in_plan(
    plan: &datafusion::logical_expr::LogicalPlan,
) -> std::result::Result<(), String> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    let mut refused = None;
    let _ = plan.apply_with_subqueries(|node| {
        let _ = node.apply_expressions(|expr| {
            if let Err(message) = refuse_keyed(expr) {
                refused = Some(message);
                return Ok(TreeNodeRecursion::Stop);
            }
            Ok(TreeNodeRecursion::Continue)
        });
        Ok(if refused.is_some() {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    refused.map_or(Ok(()), Err)
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

/// The visible columns of a frame, in order.
pub(crate) fn visible_columns(frame: &DataFrame) -> Vec<String> {
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

/// References with at most this many rows (keys of a referential check, entries of a
/// mapping) are read once at planning and joined from memory.
pub(crate) const BROADCAST_MAX_ROWS: usize = 50_000;

/// A small reference as an in-memory table, read once when the job is planned: with its
/// exact size known, the planner joins it as a broadcast hash join in every task (as
/// Spark broadcasts tables under `autoBroadcastJoinThreshold`), instead of shuffling
/// and sorting the job's rows to meet it. A larger reference is left as it is.
pub(crate) async fn broadcast_if_small(
    ctx: &SessionContext,
    reference: DataFrame,
) -> Result<DataFrame, String> {
    let batches = reference
        .clone()
        .limit(0, Some(BROADCAST_MAX_ROWS + 1))
        .map_err(|err| strip_context(&err))?
        .collect()
        .await
        .map_err(|err| strip_context(&err))?;
    if batches.iter().map(|b| b.num_rows()).sum::<usize>() > BROADCAST_MAX_ROWS {
        return Ok(reference);
    }
    let schema = std::sync::Arc::new(reference.schema().as_arrow().clone());
    let table = datafusion::datasource::MemTable::try_new(schema, vec![batches])
        .map_err(|err| strip_context(&err))?;
    ctx.read_table(std::sync::Arc::new(table))
        .map_err(|err| strip_context(&err))
}
