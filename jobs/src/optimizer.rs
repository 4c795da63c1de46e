//! Sluice's logical optimizer rules, added to DataFusion's and Ballista's.
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
use datafusion::logical_expr::expr::{AggregateFunction, AggregateFunctionParams};
use datafusion::logical_expr::logical_plan::{Aggregate, LogicalPlan};
use datafusion::logical_expr::{Expr, ExprSchemable, col, lit};
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
