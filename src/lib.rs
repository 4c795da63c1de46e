//! The `sluice` command: [`parse_cli`] reads the command line over the configuration
//! layers (see `config`), [`execute`] carries out its subcommand over the library
//! crates, one module of `commands` each.
//!
//! - `run`, `demo`: an embedded cluster — the scheduler and executors in this process,
//!   on loopback ports, with the local filesystem as storage — driven through the same
//!   `JobService` API a remote scheduler serves.
//! - `scheduler`, `executor`: the processes of a distributed cluster.
//! - `submit`, `runs`, `status`, `cancel`: clients of a scheduler's `JobService`.
//! - `validate`, `schema`: definition checks that need no cluster.

pub mod cli;
pub mod client;
mod commands;
mod config;
mod embedded;
mod error;

pub use crate::commands::execute;
pub use crate::commands::sfn::render_state_machine;
pub use crate::config::{Settings, parse_cli, settings_table};
pub use crate::error::{CliError, Result};
