//! The jobs crate's tests over its public API, one binary: definitions, compilation
//! (golden plans in `golden/`), cleansing, the optimizer rules and the write operator.
//!
//! Run one file's tests with a filter: `cargo test --workspace --test jobs compile::`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cleanse;
mod compile;
mod definitions;
mod optimizer;
mod write;
