//! Sluice's end-to-end tests, one binary (linking DataFusion and Ballista once): real
//! scheduler and executor processes, moto, LocalStack and PySpark on loopback, driven the
//! way a user drives Sluice. Tests that start a cluster take `common::one_cluster_at_a_time`
//! so that they run one after another; the rest run alongside.
//!
//! Run one file's tests with a filter: `cargo test --workspace --test e2e cluster::`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod autoscale;
mod backfill;
mod bench;
mod cli;
mod cluster;
mod crash;
mod deploy;
mod differential;
mod landing;
mod quality;
mod readme;
mod s3;
mod security;
mod spark;
mod stepfunctions;
mod writers;
