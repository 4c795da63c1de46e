//! The scheduler's API, over the run manager, the backfill manager and the autoscaler:
//! `sluice.v1.JobService` (`api/grpc.rs`, where errors become gRPC statuses), KEDA's
//! external scaler (`api/keda.rs`) and the HTTP port for probes and scrapers
//! (`api/http.rs`). Only the server composes them.

mod grpc;
mod http;
mod keda;

pub(crate) use self::grpc::JobServiceImpl;
pub(crate) use self::http::serve as serve_http;
pub(crate) use self::keda::KedaScaler;
