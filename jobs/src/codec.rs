//! Serialization of Sluice's physical operators (the write and the CSV scan), so plans that carry them run on remote
//! executors: Ballista's codec for everything else. Spark's and Sluice's functions that
//! share a name with one of DataFusion's (`substr`, `to_date`, `strpos`, …) travel
//! tagged, because DataFusion's SQL planner builds its own functions of those names from
//! syntax: by name alone an executor could not tell which of the two a plan called.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use ballista_core::serde::BallistaPhysicalExtensionCodec;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::ScalarUDF;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};

use crate::read::{as_csv_scan, csv_scan};
use crate::write::{ParquetWriteExec, WriteTask};

/// Tags a Sluice operator's bytes; Ballista's own nodes are protobuf and never start so.
const WRITE_TAG: &[u8] = b"sluice.ParquetWriteExec/v2:";

/// Tags the bytes of a file scan by Sluice's CSV reader.
const CSV_SCAN_TAG: &[u8] = b"sluice.LandingCsvScan/v1:";

/// Marks a scalar function call as the planning session's function of that name, not
/// DataFusion's.
const PLANNED_TAG: &[u8] = b"sluice.planned_udf/v1";

/// Sluice's physical codec: [`ParquetWriteExec`], then Ballista's operators.
#[derive(Debug, Default)]
pub struct SluicePhysicalCodec {
    ballista: BallistaPhysicalExtensionCodec,
}

impl PhysicalExtensionCodec for SluicePhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if let Some(payload) = buf.strip_prefix(WRITE_TAG) {
            let task: WriteTask = serde_json::from_slice(payload).map_err(|err| {
                DataFusionError::Internal(format!("cannot decode ParquetWriteExec: {err}"))
            })?;
            let [input] = inputs else {
                return Err(DataFusionError::Internal(
                    "ParquetWriteExec takes one input".into(),
                ));
            };
            return Ok(Arc::new(ParquetWriteExec::try_new(
                Arc::clone(input),
                task,
            )?));
        }
        if let Some(payload) = buf.strip_prefix(CSV_SCAN_TAG) {
            let scan = serde_json::from_slice(payload).map_err(|err| {
                DataFusionError::Internal(format!("cannot decode a CSV scan: {err}"))
            })?;
            return csv_scan(scan);
        }
        self.ballista.try_decode(buf, inputs, ctx, proto_converter)
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        if let Some(write) = node.downcast_ref::<ParquetWriteExec>() {
            buf.extend_from_slice(WRITE_TAG);
            serde_json::to_writer(&mut *buf, write.task()).map_err(|err| {
                DataFusionError::Internal(format!("cannot encode ParquetWriteExec: {err}"))
            })?;
            return Ok(());
        }
        if let Some(scan) = as_csv_scan(node.as_ref()) {
            buf.extend_from_slice(CSV_SCAN_TAG);
            serde_json::to_writer(&mut *buf, &scan).map_err(|err| {
                DataFusionError::Internal(format!("cannot encode a CSV scan: {err}"))
            })?;
            return Ok(());
        }
        self.ballista.try_encode(node, buf, proto_converter)
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        // By name, executors resolve DataFusion's function of that name (what the SQL
        // planner builds from syntax); a call of another function under that name —
        // Spark's or Sluice's — is tagged.
        if syntax_functions()
            .get(node.name())
            .is_some_and(|datafusion| datafusion.as_ref() != node)
        {
            buf.extend_from_slice(PLANNED_TAG);
            return Ok(());
        }
        self.ballista.try_encode_udf(node, buf)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        if buf == PLANNED_TAG {
            return planned_functions().get(name).cloned().ok_or_else(|| {
                DataFusionError::Internal(format!(
                    "this executor has no function {name} as the scheduler planned it: \
                     their Sluice versions differ"
                ))
            });
        }
        self.ballista.try_decode_udf(name, buf)
    }
}

/// DataFusion's own scalar functions (nested ones included) by name and alias: what its
/// SQL planner builds from syntax, and what an untagged name resolves to.
pub(crate) fn syntax_functions() -> &'static HashMap<String, Arc<ScalarUDF>> {
    static FUNCTIONS: OnceLock<HashMap<String, Arc<ScalarUDF>>> = OnceLock::new();
    FUNCTIONS.get_or_init(|| {
        by_name(
            datafusion::functions::all_default_functions()
                .into_iter()
                .chain(datafusion::functions_nested::all_default_nested_functions()),
        )
    })
}

/// The planning session's scalar functions by name and alias (the last registered wins):
/// what a tagged name resolves to.
fn planned_functions() -> &'static HashMap<String, Arc<ScalarUDF>> {
    static FUNCTIONS: OnceLock<HashMap<String, Arc<ScalarUDF>>> = OnceLock::new();
    FUNCTIONS.get_or_init(|| by_name(crate::functions::planning_scalar_functions()))
}

fn by_name(functions: impl IntoIterator<Item = Arc<ScalarUDF>>) -> HashMap<String, Arc<ScalarUDF>> {
    let mut by_name = HashMap::new();
    for function in functions {
        for name in
            std::iter::once(function.name()).chain(function.aliases().iter().map(String::as_str))
        {
            by_name.insert(name.to_owned(), Arc::clone(&function));
        }
    }
    by_name
}
