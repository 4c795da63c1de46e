//! Sluice's own gRPC API, `sluice.v1.JobService`: submit, inspect, list, cancel and watch
//! runs. The scheduler serves it beside Ballista's `SchedulerGrpc` on the same port; the
//! `sluice` CLI, Step Functions workers and tests are its clients.
//!
//! The `.proto` files live in `proto/proto/` and are compiled at build time with protox.

/// Generated messages and the tonic client and server of `sluice.v1`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("sluice.v1");
}

/// KEDA's external scaler API, served by the scheduler.
pub mod externalscaler {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("externalscaler");
}

pub use v1::job_service_client::JobServiceClient;
pub use v1::job_service_server::{JobService, JobServiceServer};
