//! Sluice's logical optimizer rules, added to DataFusion's and Ballista's.
//!
//! [`KeyedRowNumber`] numbers rows per key without a window partition per key.
//!
//! [`MixedDistinctToGroupBy`] plans a grouped `count(DISTINCT x)` that sits next to
//! other aggregates as two group-bys, as Spark's `RewriteDistinctAggregates` does.
//! DataFusion does that only when every other aggregate is a `sum`, `min` or `max`
//! (its `SingleDistinctToGroupBy`); with a `count(*)` beside it, each group keeps a hash
//! set of distinct values, which the benchmark measured at about half the time and
//! most of the memory of a typical monthly aggregation.

use std::sync::Arc;

use datafusion::common::internal_err;
use datafusion::common::tree_node::Transformed;
use datafusion::error::Result;
use datafusion::functions::expr_fn::coalesce;
use datafusion::functions_aggregate::sum::sum_udaf;
use datafusion::logical_expr::builder::project;
use datafusion::logical_expr::expr::{AggregateFunction, AggregateFunctionParams, WindowFunction};
use datafusion::logical_expr::logical_plan::{Aggregate, LogicalPlan, Window};
use datafusion::logical_expr::{Expr, ExprFunctionExt, ExprSchemable, SortExpr, col, lit};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

/// The inner group-by's name for the distinct aggregates' argument.
const DISTINCT_VALUE: &str = "__sluice_distinct_value";

/// Rewrites
///
/// ```text
/// SELECT g, count(DISTINCT d), count(*), sum(x), max(y) FROM t GROUP BY g
/// ```
///
/// into
///
/// ```text
/// SELECT g, count(d), sum(c), sum(s), max(m)
/// FROM (SELECT g, d, count(*) AS c, sum(x) AS s, max(y) AS m FROM t GROUP BY g, d)
/// GROUP BY g
/// ```
///
/// when every distinct aggregate is over the same one argument and every aggregate is
/// a `count`, `sum`, `min` or `max` without `FILTER` or `ORDER BY`. Results keep their
/// names and types (a re-summed decimal is cast back to the original sum's type; a
/// count over no groups stays 0).
#[derive(Debug, Default)]
pub struct MixedDistinctToGroupBy;

/// How one aggregate is split.
enum Split {
    /// `f(DISTINCT d)` becomes `f(d)` over the inner groups.
    Distinct,
    /// `f(args)` becomes `f(args)` inside and `combine(partial)` outside.
    Partial {
        combine: Arc<datafusion::logical_expr::AggregateUDF>,
    },
}

fn split(expr: &Expr, distinct_arg: &mut Option<Expr>) -> Option<Split> {
    let Expr::AggregateFunction(AggregateFunction {
        func,
        params:
            AggregateFunctionParams {
                args,
                distinct,
                filter: None,
                order_by,
                ..
            },
    }) = expr
    else {
        return None;
    };
    if !order_by.is_empty() {
        return None;
    }
    let name = func.name().to_ascii_lowercase();
    if !matches!(name.as_str(), "count" | "sum" | "min" | "max") {
        return None;
    }
    if *distinct {
        let [arg] = args.as_slice() else {
            return None;
        };
        match distinct_arg {
            Some(seen) if seen != arg => return None,
            Some(_) => {}
            None => *distinct_arg = Some(arg.clone()),
        }
        return Some(Split::Distinct);
    }
    let combine = if name == "count" {
        sum_udaf()
    } else {
        Arc::clone(func)
    };
    Some(Split::Partial { combine })
}

impl OptimizerRule for MixedDistinctToGroupBy {
    fn name(&self) -> &str {
        "sluice_mixed_distinct_to_group_by"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Aggregate(aggregate) = plan else {
            return Ok(Transformed::no(plan));
        };
        if matches!(aggregate.group_expr.first(), Some(Expr::GroupingSet(_))) {
            return Ok(Transformed::no(LogicalPlan::Aggregate(aggregate)));
        }
        let mut distinct_arg = None;
        let Some(splits) = aggregate
            .aggr_expr
            .iter()
            .map(|expr| split(expr, &mut distinct_arg))
            .collect::<Option<Vec<_>>>()
        else {
            return Ok(Transformed::no(LogicalPlan::Aggregate(aggregate)));
        };
        // Only a mix: all-distinct and distinct-free aggregates are planned well already.
        let Some(distinct_arg) = distinct_arg else {
            return Ok(Transformed::no(LogicalPlan::Aggregate(aggregate)));
        };
        if splits.iter().all(|s| matches!(s, Split::Distinct)) {
            return Ok(Transformed::no(LogicalPlan::Aggregate(aggregate)));
        }
        let Aggregate {
            input,
            group_expr,
            aggr_expr,
            schema,
            ..
        } = aggregate;

        // Group keys: plain columns as they are, expressions under an alias the outer
        // group-by can name.
        let mut inner_groups = Vec::with_capacity(group_expr.len() + 1);
        let mut outer_groups = Vec::with_capacity(group_expr.len());
        for (index, expr) in group_expr.into_iter().enumerate() {
            if let Expr::Column(_) = expr {
                outer_groups.push(expr.clone());
                inner_groups.push(expr);
            } else {
                let alias = format!("__sluice_group_{index}");
                inner_groups.push(expr.alias(&alias));
                outer_groups.push(col(alias));
            }
        }
        inner_groups.push(distinct_arg.alias(DISTINCT_VALUE));

        let mut inner_aggregates = Vec::new();
        let mut outer_aggregates = Vec::with_capacity(aggr_expr.len());
        // Outer aggregates that re-sum partial counts.
        let mut counts = vec![false; outer_groups.len()];
        for (index, (expr, split)) in aggr_expr.into_iter().zip(splits).enumerate() {
            let Expr::AggregateFunction(AggregateFunction { func, params }) = expr else {
                return internal_err!("{}: an aggregate was split that is not one", self.name());
            };
            counts.push(
                matches!(split, Split::Partial { .. }) && func.name().eq_ignore_ascii_case("count"),
            );
            match split {
                Split::Distinct => {
                    outer_aggregates.push(Expr::AggregateFunction(AggregateFunction::new_udf(
                        func,
                        vec![col(DISTINCT_VALUE)],
                        false,
                        None,
                        vec![],
                        params.null_treatment,
                    )));
                }
                Split::Partial { combine } => {
                    let alias = format!("__sluice_partial_{index}");
                    inner_aggregates.push(
                        Expr::AggregateFunction(AggregateFunction::new_udf(
                            func,
                            params.args,
                            false,
                            None,
                            vec![],
                            params.null_treatment,
                        ))
                        .alias(&alias),
                    );
                    outer_aggregates.push(Expr::AggregateFunction(AggregateFunction::new_udf(
                        combine,
                        vec![col(alias)],
                        false,
                        None,
                        vec![],
                        None,
                    )));
                }
            }
        }
        let no_groups = outer_groups.is_empty();
        let inner =
            LogicalPlan::Aggregate(Aggregate::try_new(input, inner_groups, inner_aggregates)?);
        let outer = LogicalPlan::Aggregate(Aggregate::try_new(
            Arc::new(inner),
            outer_groups,
            outer_aggregates,
        )?);
        let outer_schema = Arc::clone(outer.schema());

        // The original names, qualifiers and types.
        let mut projection = Vec::with_capacity(schema.fields().len());
        for (index, is_count) in counts.into_iter().enumerate() {
            let (qualifier, field) = schema.qualified_field(index);
            let (_, produced) = outer_schema.qualified_field(index);
            let mut value = Expr::Column(datafusion::common::Column::from(
                outer_schema.qualified_field(index),
            ));
            if no_groups && is_count {
                // A count over no rows is 0; the sum of no partial counts is NULL.
                value = coalesce(vec![value, lit(0i64)]);
            }
            if produced.data_type() != field.data_type() {
                value = value.cast_to(field.data_type(), &outer_schema)?;
            }
            projection.push(value.alias_qualified(qualifier.cloned(), field.name()));
        }
        Ok(Transformed::yes(project(outer, projection)?))
    }
}

/// Rewrites `row_number() OVER (PARTITION BY k ORDER BY o)` as
///
/// ```text
/// row_number() OVER (PARTITION BY bucket(k) ORDER BY k, o)
///   - rank() OVER (PARTITION BY bucket(k) ORDER BY k) + 1
/// ```
///
/// where `bucket` hashes the keys into a few thousand buckets: the row's place in its
/// bucket, less the place where its key's rows start. The answer is the same;
/// the cost is not. DataFusion's window operator works one partition at a time and
/// slices every column of the batch for each, which with a partition per key (a
/// patient's fills of one product: a row or two) measured as most of a monthly
/// aggregation's time. With buckets, a sorted batch spans one or two partitions.
#[derive(Debug, Default)]
pub struct KeyedRowNumber;

/// The prefix of [`KeyedRowNumber`]'s row numbers within buckets.
const ROW_IN_BUCKET: &str = "__sluice_row_in_bucket_";

/// Numbers the helper columns of [`KeyedRowNumber`].
static NEXT_WINDOW_ID: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl KeyedRowNumber {
    /// The window function if `expr` (or the expression it aliases) is a `row_number()`
    /// over a `PARTITION BY`, with no filter.
    fn row_number(expr: &Expr) -> Option<&WindowFunction> {
        let expr = match expr {
            // This rule's own row numbers (their bucket may have become a column since).
            Expr::Alias(alias) if alias.name.starts_with(ROW_IN_BUCKET) => return None,
            Expr::Alias(alias) => alias.expr.as_ref(),
            other => other,
        };
        match expr {
            Expr::WindowFunction(window)
                if window.fun.name() == "row_number"
                    && !window.params.partition_by.is_empty()
                    && window.params.filter.is_none()
                    && !Self::by_buckets(&window.params.partition_by) =>
            {
                Some(window)
            }
            _ => None,
        }
    }
}

impl KeyedRowNumber {
    /// Partitioned by key buckets already (this rule's own output).
    fn by_buckets(partition_by: &[Expr]) -> bool {
        matches!(partition_by, [Expr::ScalarFunction(f)] if f.name() == crate::functions::KEY_BUCKET)
    }
}

impl OptimizerRule for KeyedRowNumber {
    fn name(&self) -> &str {
        "sluice_keyed_row_number"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Window(window) = plan else {
            return Ok(Transformed::no(plan));
        };
        if !window
            .window_expr
            .iter()
            .any(|e| Self::row_number(e).is_some())
        {
            return Ok(Transformed::no(LogicalPlan::Window(window)));
        }
        let Window {
            input,
            window_expr,
            schema,
            ..
        } = window;
        let inputs = input.schema().fields().len();
        let bucket_udf = crate::functions::key_bucket_udf();
        let rank_udwf = datafusion::functions_window::rank::rank_udwf();
        // One window node per sort order, as DataFusion's planner requires: the window
        // functions left as they are, the row numbers in buckets, the key starts.
        let mut kept = Vec::new();
        let mut places = Vec::new();
        let mut starts = Vec::new();
        let mut outputs = Vec::new();
        for (index, expr) in window_expr.into_iter().enumerate() {
            let (qualifier, field) = schema.qualified_field(inputs + index);
            let Some(row_number) = Self::row_number(&expr) else {
                outputs.push(Expr::Column(datafusion::common::Column::new(
                    qualifier.cloned(),
                    field.name(),
                )));
                kept.push(expr);
                continue;
            };
            let keys = row_number.params.partition_by.clone();
            let bucket = bucket_udf.call(keys.clone());
            let key_order: Vec<SortExpr> =
                keys.iter().map(|k| k.clone().sort(true, true)).collect();
            let mut order = key_order.clone();
            order.extend(row_number.params.order_by.iter().cloned());
            // Unique in the whole plan: windows nest, and passes repeat.
            let id = NEXT_WINDOW_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let place = format!("{ROW_IN_BUCKET}{id}");
            let start = format!("__sluice_key_start_{id}");
            places.push(
                Expr::from(WindowFunction::new(row_number.fun.clone(), vec![]))
                    .partition_by(vec![bucket.clone()])
                    .order_by(order)
                    .build()?
                    .alias(&place),
            );
            starts.push(
                Expr::from(WindowFunction::new(
                    datafusion::logical_expr::expr::WindowFunctionDefinition::WindowUDF(
                        rank_udwf.clone(),
                    ),
                    vec![],
                ))
                .partition_by(vec![bucket])
                .order_by(key_order)
                .build()?
                .alias(&start),
            );
            // row_number and rank are both UInt64; the place is never before the start.
            let value = col(place) - col(start) + lit(1u64);
            outputs.push(value.alias_qualified(qualifier.cloned(), field.name()));
        }
        let mut rewritten = Arc::unwrap_or_clone(input);
        for exprs in [kept, places, starts] {
            if !exprs.is_empty() {
                rewritten = LogicalPlan::Window(Window::try_new(exprs, Arc::new(rewritten))?);
            }
        }
        let mut projection: Vec<Expr> = rewritten.schema().columns()[..inputs]
            .iter()
            .cloned()
            .map(Expr::Column)
            .collect();
        projection.extend(outputs);
        Ok(Transformed::yes(project(rewritten, projection)?))
    }
}
