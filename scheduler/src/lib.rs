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
//! The modules are layers; each uses only the layers below it (the `layer_rules` test
//! checks every `crate::` path against this table):
//!
//! ```text
//! 6  server      the composition root: opens, builds, owns and serves everything
//! 5  api         api/grpc.rs (JobService), api/keda.rs (KEDA scaler), api/http.rs
//! 4  backfill    backfills: child runs over a date range
//!    autoscale   the scaling loop; autoscale/{demand, local, cloud}.rs
//! 3  runner      RunManager; runner/{runs, accounting, execution, ballista, profile, callback}.rs
//! 2  store       the redb run store (records only)
//!    commit      making staged files visible, recovery of stopped commits
//!    sfn         Step Functions outcomes and callbacks; sfn/activity.rs, the worker
//! 1  error       SchedulerError and its gRPC statuses
//!    aws         where an AWS API is, and a failed call
//! 0  record      record/{run, backfill, job}.rs types and record/proto.rs messages
//!    auth        tokens, roles and the gate of the gRPC port
//!    tls         the port's rustls configuration, certificates re-read on change
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

pub mod autoscale;
pub mod backfill;
mod backup;
pub mod sfn;

mod api;
pub mod auth;
mod aws;
mod commit;
mod error;
mod lock;
mod record;
mod runner;
mod server;
mod store;
pub mod tls;

pub use backup::restore_file as restore_store_file;
pub use error::{Result, SchedulerError};
pub use record::{
    JobVersion, OutputRecord, Progress, RunId, RunProfile, RunRecord, RunStatus, to_proto,
};
pub use runner::{Engine, ExecutorInfo, ResolvedDefinition, RunManager, Runs, Submission};
pub use server::{Scheduler, SchedulerSettings};
/// The Step Functions activity worker (`sfn::activity`), at its old path.
pub use sfn::activity;
pub use store::RunStore;

#[cfg(test)]
mod layer_rules {
    //! The layer rule, checked on the sources: a module uses only modules of a lower
    //! layer (its own submodules aside), and inside a folder a submodule uses only
    //! siblings of a lower layer (its parent aside).

    use std::path::Path;

    /// The crate's modules, bottom (0) to top. `lib.rs` sees them all.
    const LAYERS: &[(&str, u8)] = &[
        ("record", 0),
        ("lock", 0),
        ("auth", 0),
        ("tls", 0),
        ("error", 1),
        ("aws", 1),
        ("store", 2),
        ("commit", 2),
        ("sfn", 2),
        ("backup", 3),
        ("runner", 4),
        ("backfill", 5),
        ("autoscale", 5),
        ("api", 6),
        ("server", 7),
    ];

    /// Submodules of a folder, bottom to top, where some use others.
    const SUBLAYERS: &[(&str, &[(&str, u8)])] = &[
        (
            "record",
            &[("run", 0), ("job", 0), ("backfill", 0), ("proto", 1)],
        ),
        ("sfn", &[("activity", 0)]),
        (
            "runner",
            &[
                ("accounting", 0),
                ("runs", 0),
                ("profile", 0),
                ("ballista", 1),
                ("callback", 1),
                ("execution", 2),
            ],
        ),
        ("autoscale", &[("demand", 0), ("local", 0), ("cloud", 0)]),
        ("api", &[("grpc", 0), ("http", 0), ("keda", 0)]),
    ];

    fn layer(table: &[(&str, u8)], module: &str) -> Option<u8> {
        table
            .iter()
            .find(|(name, _)| *name == module)
            .map(|(_, layer)| *layer)
    }

    /// The first path segment after each `prefix` (`crate::` or `super::`) in code,
    /// with every item of a `prefix{a, b::c}` group.
    fn references(source: &str, prefix: &str) -> Vec<String> {
        let code: String = source
            .lines()
            .map(|line| line.split("//").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        let is_ident = |c: char| c.is_alphanumeric() || c == '_';
        let mut found = Vec::new();
        for (at, _) in code.match_indices(prefix) {
            if code[..at].chars().next_back().is_some_and(is_ident) {
                continue;
            }
            let rest = &code[at + prefix.len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let mut depth = 0;
                let mut item_start = true;
                for (index, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => item_start = true,
                        c if item_start && is_ident(c) => {
                            let name: String = group[index..]
                                .chars()
                                .take_while(|c| is_ident(*c))
                                .collect();
                            found.push(name);
                            item_start = false;
                        }
                        c if c.is_whitespace() => {}
                        _ => item_start = false,
                    }
                }
            } else {
                let name: String = rest.chars().take_while(|c| is_ident(*c)).collect();
                if !name.is_empty() {
                    found.push(name);
                }
            }
        }
        found
    }

    /// What breaks the rule in the source of `module` (`runner` or `runner/execution`).
    fn violations(module: &str, source: &str) -> Vec<String> {
        let mut broken = Vec::new();
        let (top, sub) = match module.split_once('/') {
            Some((top, sub)) => (top, Some(sub)),
            None => (module, None),
        };
        let Some(own) = layer(LAYERS, top) else {
            return vec![format!("{module}: module `{top}` is not in LAYERS")];
        };
        for used in references(source, "crate::") {
            match layer(LAYERS, &used) {
                _ if used == top => {}
                Some(layer) if layer < own => {}
                Some(layer) => broken.push(format!(
                    "{module} (layer {own}) uses crate::{used} (layer {layer})"
                )),
                None => broken.push(format!("{module}: crate::{used} is not in LAYERS")),
            }
        }
        let siblings = SUBLAYERS
            .iter()
            .find(|(folder, _)| *folder == top)
            .map_or(&[][..], |(_, table)| *table);
        if let Some(sub) = sub {
            let Some(own) = layer(siblings, sub) else {
                return vec![format!("{module}: `{sub}` is not in SUBLAYERS for `{top}`")];
            };
            for used in references(source, "super::") {
                // Anything else through `super::` is the parent's own item.
                if let Some(layer) = layer(siblings, &used)
                    && used != sub
                    && layer >= own
                {
                    broken.push(format!(
                        "{module} (layer {own} in {top}/) uses super::{used} (layer {layer})"
                    ));
                }
            }
        }
        broken
    }

    /// Every `.rs` file below `dir`, as (module path without `.rs`, text).
    fn sources(dir: &Path, base: &Path, found: &mut Vec<(String, String)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                sources(&path, base, found);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                let relative = path
                    .strip_prefix(base)
                    .unwrap_or(&path)
                    .with_extension("")
                    .to_string_lossy()
                    .replace('\\', "/");
                found.push((relative, std::fs::read_to_string(&path).unwrap_or_default()));
            }
        }
    }

    #[test]
    fn modules_use_only_lower_layers() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        sources(&src, &src, &mut files);
        assert!(files.len() > 20, "read {} files below {src:?}", files.len());
        let broken: Vec<String> = files
            .iter()
            .filter(|(module, _)| module != "lib")
            .flat_map(|(module, source)| {
                assert!(
                    !module.ends_with("mod"),
                    "{module}.rs: use `foo.rs` beside `foo/`"
                );
                violations(module, source)
            })
            .collect();
        assert!(
            broken.is_empty(),
            "layer rule broken:\n{}",
            broken.join("\n")
        );
    }

    #[test]
    fn an_upward_import_is_caught() {
        assert_eq!(
            violations("store", "use crate::runner::Runs;"),
            ["store (layer 2) uses crate::runner (layer 4)"]
        );
        assert_eq!(
            violations("record/run", "use crate::{error::Result, record::RunId};").len(),
            1
        );
        assert_eq!(
            violations("sfn", "let x = crate::sfn::client;"),
            Vec::<String>::new()
        );
        assert_eq!(
            violations("runner/profile", "use super::execution::Execution;").len(),
            1
        );
        assert!(
            violations(
                "server",
                "use crate::{api::X, record::{RunId, RunRecord}};\n// crate::server\n"
            )
            .is_empty()
        );
        assert_eq!(violations("nowhere", "").len(), 1);
    }
}
