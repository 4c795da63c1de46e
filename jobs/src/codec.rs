//! Serialization of Sluice's physical operators, so plans that carry them run on remote
//! executors: Ballista's codec for everything else. Sluice's Spark-compatible
//! replacements of DataFusion functions (`substr`, `to_date`, …) travel tagged, because
//! their names are also those of the DataFusion functions the SQL planner builds from
//! syntax: by name alone an executor could not tell which of the two a plan called.

use std::sync::Arc;

use ballista_core::serde::BallistaPhysicalExtensionCodec;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::ScalarUDF;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};

use crate::write::{ParquetWriteExec, WriteTask};

/// Tags a Sluice operator's bytes; Ballista's own nodes are protobuf and never start so.
const WRITE_TAG: &[u8] = b"sluice.ParquetWriteExec/v2:";

/// Marks a scalar function call as Sluice's Spark-compatible function of that name.
const SPARK_COMPAT_TAG: &[u8] = b"sluice.spark_compat/v1";

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
        self.ballista.try_encode(node, buf, proto_converter)
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        // Tagged when an executor, resolving the name, would find another function: the
        // only such functions are Sluice's Spark-compatible replacements (see
        // `session::function_registry`).
        static EXECUTOR_FUNCTIONS: std::sync::OnceLock<
            std::collections::HashMap<String, Arc<ScalarUDF>>,
        > = std::sync::OnceLock::new();
        let executor =
            EXECUTOR_FUNCTIONS.get_or_init(|| crate::session::function_registry().scalar_functions);
        if executor
            .get(node.name())
            .is_none_or(|resolved| resolved.as_ref() != node)
            && crate::functions::spark_compat_functions()
                .iter()
                .any(|function| function.name() == node.name())
        {
            buf.extend_from_slice(SPARK_COMPAT_TAG);
            return Ok(());
        }
        self.ballista.try_encode_udf(node, buf)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        if buf == SPARK_COMPAT_TAG {
            return crate::functions::spark_compat_functions()
                .into_iter()
                .find(|function| function.name() == name)
                .ok_or_else(|| {
                    DataFusionError::Internal(format!(
                        "this executor has no Spark-compatible function {name}: its Sluice \
                         version differs from the scheduler's"
                    ))
                });
        }
        self.ballista.try_decode_udf(name, buf)
    }
}
