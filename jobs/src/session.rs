//! The DataFusion session every Sluice process uses — scheduler, executors and the
//! embedded cluster alike: Spark's functions (datafusion-spark, through Ballista's
//! `spark-compat`), Spark's defaults where DataFusion's differ, and the process's
//! object stores.

use std::collections::BTreeMap;
use std::sync::Arc;

use ballista_core::extension::{
    SessionConfigExt, ballista_aggregate_functions, ballista_window_functions,
};
use ballista_core::registry::BallistaFunctionRegistry;
use datafusion::error::Result as DataFusionResult;
use datafusion::execution::FunctionRegistry;
use datafusion::execution::SessionState;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::logical_expr::{AggregateUDF, ScalarUDF, WindowUDF};
use datafusion::optimizer::OptimizerRule;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::codec::SluicePhysicalCodec;
use crate::compile::PreparedJob;
use crate::error::{JobError, Result};
use crate::storage::ObjectStores;

/// Settings Sluice changes from DataFusion's and Ballista's defaults: Spark's behaviour where
/// they disagree, and what the benchmark measured faster.
const SESSION_DEFAULTS: &[(&str, &str)] = &[
    // Spark sorts NULLs first in ascending order and last in descending order.
    ("datafusion.sql_parser.default_null_ordering", "nulls_min"),
    // Spark 4 runs in ANSI mode: an invalid cast is an error, try_cast gives NULL.
    ("datafusion.execution.enable_ansi_mode", "true"),
    // Hash joins. Ballista defaults to sort-merge joins because they spill; the
    // benchmark measured the sort and the extra shuffle of the job's rows as the larger
    // cost, and small references are broadcast anyway. A job whose join sides both
    // outgrow memory sets `spark.sql.join.preferSortMergeJoin: true`.
    ("datafusion.optimizer.prefer_hash_join", "true"),
    // Static stage plans. Ballista 55 turns its adaptive planner on by default, but
    // Sluice submits physical plans (the write operator on top), which Ballista always
    // plans statically; saying so keeps a session from claiming otherwise. The static
    // planner is also the one whose executor-loss recovery the kill matrix proves
    // (Ballista's adaptive graph does not cover executor failure,
    // apache/datafusion-ballista#1986).
    ("ballista.planner.adaptive.enabled", "false"),
    // Spark writes INT96 timestamps as UTC instants, and its INT64 (micros) ones as
    // UTC-adjusted: both read as one type, Timestamp(us, UTC), as Spark reads both as one
    // TIMESTAMP. (DataFusion's default reads INT96 as naive nanoseconds.)
    ("datafusion.execution.parquet.coerce_int96", "us"),
    ("datafusion.execution.parquet.coerce_int96_tz", "UTC"),
];

/// A session config with Ballista's extensions, Sluice's codecs, Spark's defaults, and
/// then `settings` (a job's resolved `conf`) on top.
pub fn session_config(settings: &BTreeMap<String, String>) -> DataFusionResult<SessionConfig> {
    let mut config = SessionConfig::new_with_ballista()
        .with_information_schema(true)
        .with_ballista_physical_extension_codec(Arc::new(SluicePhysicalCodec::default()));
    for (key, value) in SESSION_DEFAULTS {
        config.options_mut().set(key, value)?;
    }
    for (key, value) in settings {
        // `ballista.*` keys are an extension registered by `new_with_ballista`.
        config.options_mut().set(key, value)?;
    }
    Ok(config)
}

/// The default session config (no job settings).
pub fn default_session_config() -> SessionConfig {
    session_config(&BTreeMap::new()).unwrap_or_else(|_| SessionConfig::new_with_ballista())
}

/// A runtime over a process's object stores.
pub fn runtime_env(stores: &Arc<ObjectStores>) -> DataFusionResult<Arc<RuntimeEnv>> {
    runtime_builder(stores).build_arc()
}

/// A runtime builder over a process's object stores, for callers that add more (a
/// spill directory, a memory pool).
pub fn runtime_builder(stores: &Arc<ObjectStores>) -> RuntimeEnvBuilder {
    RuntimeEnvBuilder::new().with_object_store_registry(Arc::clone(stores) as _)
}

/// A session state for planning: Spark's and DataFusion's functions, Ballista's
/// optimizer rules, the process's object stores.
pub fn session_state(
    config: SessionConfig,
    stores: &Arc<ObjectStores>,
) -> DataFusionResult<SessionState> {
    let mut state = with_functions(SessionStateBuilder::new().with_default_features())
        .with_config(config)
        .with_runtime_env(runtime_env(stores)?)
        .with_optimizer_rules(optimizer_rules())
        .build();
    consistent_aliases(&mut state)?;
    // Spark's `/`; a logical rewrite, so plans reach executors already rewritten.
    state.register_function_rewrite(Arc::new(crate::functions::SparkDivision))?;
    Ok(state)
}

/// Sluice's logical rules, then Ballista's (DataFusion's with Ballista's own).
fn optimizer_rules() -> Vec<Arc<dyn OptimizerRule + Send + Sync>> {
    let mut rules: Vec<Arc<dyn OptimizerRule + Send + Sync>> = vec![
        Arc::new(crate::optimizer::MixedDistinctToGroupBy),
        Arc::new(crate::optimizer::KeyedRowNumber),
    ];
    rules.extend(ballista_core::optimizer::ballista_default_optimizer_rules());
    rules
}

/// Every function a plan may call: DataFusion's (nested ones included), Spark's and
/// Sluice's. The planning session and the executors' registry both come from here.
fn with_functions(builder: SessionStateBuilder) -> SessionStateBuilder {
    builder
        .with_scalar_functions(crate::functions::planning_scalar_functions())
        .with_aggregate_functions(ballista_aggregate_functions())
        .with_window_functions(ballista_window_functions())
}

/// Makes every alias plan the function its canonical name resolves to. Plans reach
/// executors by the function's canonical name, so when a later registration takes over
/// a name but not an alias (datafusion-spark's `avg` replaces DataFusion's, whose alias
/// `mean` stayed DataFusion's), a query calling the alias was planned with one function
/// and run with another: their partial-aggregate states differ and the task failed
/// ("expected UInt64 but found Float64") — only when distributed.
fn consistent_aliases(state: &mut SessionState) -> DataFusionResult<()> {
    for f in realigned(state.scalar_functions(), ScalarUDF::name, |f, alias| {
        f.with_aliases([alias])
    }) {
        state.register_udf(f)?;
    }
    for f in realigned(
        state.aggregate_functions(),
        AggregateUDF::name,
        |f, alias| f.with_aliases([alias]),
    ) {
        state.register_udaf(f)?;
    }
    for f in realigned(state.window_functions(), WindowUDF::name, |f, alias| {
        f.with_aliases([alias])
    }) {
        state.register_udwf(f)?;
    }
    Ok(())
}

/// For every alias in `functions` whose function is not the one its canonical name
/// resolves to, that canonical function with the alias added.
fn realigned<F: PartialEq + Clone>(
    functions: &std::collections::HashMap<String, Arc<F>>,
    name: fn(&F) -> &str,
    with_alias: fn(F, &'static str) -> F,
) -> Vec<Arc<F>> {
    functions
        .iter()
        .filter_map(|(key, f)| {
            let canonical = functions.get(name(f))?;
            (key != name(f) && canonical != f)
                .then(|| Arc::new(with_alias((**canonical).clone(), interned(key))))
        })
        .collect()
}

/// A function alias as the `'static` name DataFusion's alias lists take, allocated once
/// per distinct alias for the life of the process.
fn interned(alias: &str) -> &'static str {
    static ALIASES: std::sync::Mutex<std::collections::BTreeSet<&'static str>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut aliases = ALIASES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(existing) = aliases.get(alias) {
        return existing;
    }
    let leaked: &'static str = Box::leak(alias.to_owned().into_boxed_str());
    aliases.insert(leaked);
    leaked
}

/// The functions executors resolve plans against: the planning session's, except that
/// a name DataFusion's own functions have resolves to DataFusion's. Plans reach executors
/// by function name, and DataFusion's SQL planner builds its own functions from syntax
/// (`SUBSTRING(s FROM 1 FOR 2)` is DataFusion's `substr`, `EXTRACT` its `date_part`)
/// whatever the session registers under those names; a call planned with Spark's or
/// Sluice's function of such a name travels tagged (`SluicePhysicalCodec::try_encode_udf`).
/// Ballista's own default registry leaves out DataFusion's nested functions
/// (`array_sort`, …), which made such plans fail only when distributed.
pub fn function_registry() -> BallistaFunctionRegistry {
    let mut planning = with_functions(SessionStateBuilder::new().with_default_features()).build();
    // Infallible for these functions; a registry without the fix-up would still decode.
    let _ = consistent_aliases(&mut planning);
    let mut registry = BallistaFunctionRegistry {
        scalar_functions: planning.scalar_functions().clone(),
        aggregate_functions: planning.aggregate_functions().clone(),
        window_functions: planning.window_functions().clone(),
        ..Default::default()
    };
    for (name, function) in crate::codec::syntax_functions() {
        registry
            .scalar_functions
            .insert(name.clone(), Arc::clone(function));
    }
    registry
}

impl PreparedJob {
    /// A session context configured for this job (Spark functions and defaults, the
    /// job's `conf`) over the process's object stores.
    pub fn session_context(&self, stores: &Arc<ObjectStores>) -> Result<SessionContext> {
        let config = session_config(&self.settings.session)
            .map_err(|err| JobError::datafusion("configuring the session", err))?;
        let state = session_state(config, stores)
            .map_err(|err| JobError::datafusion("configuring the session", err))?;
        Ok(SessionContext::new_with_state(state))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::execution::TaskContext;
    use datafusion::physical_expr::ScalarFunctionExpr;
    use datafusion::physical_expr::expressions::lit;
    use datafusion::physical_plan::PhysicalExpr;
    use datafusion_proto::physical_plan::from_proto::parse_physical_expr;
    use datafusion_proto::physical_plan::to_proto::serialize_physical_expr;

    use super::*;

    /// Every scalar function of the scheduler's planning session, encoded as the
    /// scheduler encodes a task and decoded as an executor decodes it; aggregate and
    /// window functions resolved by the name a plan carries. A function added on one
    /// side only fails here, not on a cluster.
    #[test]
    fn every_function_the_scheduler_plans_with_decodes_on_an_executor() {
        let planning = session_state(
            default_session_config(),
            &ObjectStores::new(Default::default()),
        )
        .unwrap();
        let registry = function_registry();
        let executor = TaskContext::new(
            None,
            "decode".into(),
            default_session_config(),
            registry.scalar_functions.clone(),
            registry.higher_order_functions.clone(),
            registry.aggregate_functions.clone(),
            registry.window_functions.clone(),
            Arc::new(RuntimeEnv::default()),
        );
        let codec = SluicePhysicalCodec::default();
        let schema = Schema::new(vec![Field::new("x", DataType::Utf8, true)]);
        let mut missing = Vec::new();
        for (name, function) in planning.scalar_functions() {
            // Plans carry the function's own name, whichever alias the query used.
            let expr: Arc<dyn PhysicalExpr> = Arc::new(ScalarFunctionExpr::new(
                function.name(),
                Arc::clone(function),
                vec![lit("a")],
                Arc::new(Field::new(name, DataType::Utf8, true)),
                Arc::new(Default::default()),
            ));
            let proto = serialize_physical_expr(&expr, &codec).unwrap();
            if let Err(err) = parse_physical_expr(&proto, &executor, &schema, &codec) {
                missing.push(format!("scalar {name}: {err}"));
            }
        }
        for name in planning.aggregate_functions().keys() {
            if executor.udaf(name).is_err() {
                missing.push(format!("aggregate {name}"));
            }
        }
        for name in planning.window_functions().keys() {
            if executor.udwf(name).is_err() {
                missing.push(format!("window {name}"));
            }
        }
        assert!(
            planning.scalar_functions().contains_key("array_sort"),
            "the planning session has DataFusion's nested functions"
        );
        assert!(missing.is_empty(), "executors cannot decode: {missing:#?}");
    }
}
