//! The Sluice scheduler: Ballista's scheduler embedded with Sluice's `JobService`, the
//! durable run store and the run lifecycle (compile, run on the executors, commit).
//!
//! ```text
//!   sluice CLI / Step Functions ──gRPC JobService──┐
//!                                                  ▼
//!   ┌──────────────────────── Scheduler ─────────────────────────┐
//!   │ JobServiceImpl ─► RunManager ─► Runs (RunStore: redb file) │
//!   │                      │ one Ballista job per output          │
//!   │                      ▼                                      │
//!   │ Ballista SchedulerServer (stages, tasks) ◄─ SchedulerGrpc ──┼── executors
//!   └─────────────────────────────────────────────────────────────┘
//! ```
//!
//! ```no_run
//! # async fn serve() -> Result<(), sluice_scheduler::SchedulerError> {
//! let settings = sluice_scheduler::SchedulerSettings::default();
//! let scheduler = sluice_scheduler::Scheduler::start(&settings).await?;
//! println!("listening on {}", scheduler.address());
//! scheduler.serve(std::future::pending()).await?;
//! # Ok(()) }
//! ```

pub mod activity;
pub mod autoscale;
mod aws;
pub mod backfill;
mod commit;
mod error;
mod http;
mod run;
mod runner;
mod server;
mod service;
pub mod sfn;
mod store;

pub use error::{Result, SchedulerError};
pub use run::{OutputRecord, Progress, RunId, RunProfile, RunRecord, RunStatus};
pub use runner::{Engine, ExecutorInfo, RunManager, Runs, Submission};
pub use server::{Scheduler, SchedulerSettings};
pub use service::to_proto;
pub use store::{JobVersion, RunStore};
