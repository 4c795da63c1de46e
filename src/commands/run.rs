//! `sluice run`: one job on an embedded cluster, printed as it ends.

use crate::cli::{OutputFormat, RunArgs, RunEngine};
use crate::client;
use crate::config::Settings;
use crate::embedded::EmbeddedCluster;
use crate::error::Result;

/// Starts the embedded cluster, submits the definition and waits for its run.
pub async fn run(args: RunArgs, settings: &Settings) -> Result<()> {
    let (engine, executors) = match args.engine {
        RunEngine::Ballista => (sluice_scheduler::Engine::Ballista, args.executors),
        RunEngine::Datafusion => (sluice_scheduler::Engine::InProcess, 0),
    };
    let cluster =
        EmbeddedCluster::start_with_engine(&args.state_dir, executors, engine, settings).await?;
    let mut client = cluster.client().await?;
    let run_id = client::submit_file(
        &mut client,
        &args.file,
        &args.params,
        args.idempotency_key.as_deref(),
    )
    .await?;
    let run = client::wait(&mut client, &run_id, args.output == OutputFormat::Text).await?;
    client::print_run(&run, args.output);
    client::require_success(&run)
}
