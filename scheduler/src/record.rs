//! The scheduler's records — what a run, a backfill and a registered job are, as the
//! run store keeps them (serde JSON) and the API returns them (`sluice_proto`). The
//! bottom layer: it uses no other module of the crate.

mod backfill;
mod job;
mod proto;
mod run;

pub use backfill::{BackfillRecord, BackfillStatus, Every, PartitionRecord, PartitionStatus};
pub use job::JobVersion;
pub use proto::{backfill_to_proto, job_to_proto, to_proto};
pub use run::{OutputRecord, Progress, RunId, RunProfile, RunRecord, RunStatus};
