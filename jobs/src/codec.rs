//! Serialization of Sluice's physical operators, so plans that carry them run on remote
//! executors: Ballista's codec for everything else.

use std::sync::Arc;

use ballista_core::serde::BallistaPhysicalExtensionCodec;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};

use crate::write::{ParquetWriteExec, WriteTask};

/// Tags a Sluice operator's bytes; Ballista's own nodes are protobuf and never start so.
const WRITE_TAG: &[u8] = b"sluice.ParquetWriteExec/v2:";

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
}
