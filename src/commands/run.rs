//! `sluice run`: one job on an embedded cluster, printed as it ends.

use crate::cli::{OutputFormat, RunArgs, RunEngine};
use crate::client;
use crate::config::Settings;
use crate::embedded::EmbeddedCluster;
use crate::error::{CliError, Result};

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
    // SIGTERM or Ctrl-C cancels the run (its tasks stop) and ends the process, instead of
    // leaving it waiting for a run nobody will read.
    let mut watcher = client.clone();
    let waited = tokio::select! {
        run = client::wait(&mut watcher, &run_id, args.output == OutputFormat::Text) => run?,
        () = super::shutdown_signal() => {
            eprintln!("stopping: cancelling run {run_id}");
            let cancelled = tokio::time::timeout(
                std::time::Duration::from_secs(30),
                client.cancel_run(sluice_proto::v1::CancelRunRequest { run_id: run_id.clone() }),
            )
            .await;
            let status = match cancelled {
                Ok(Ok(_)) => "cancelled",
                _ => "stopped",
            };
            return Err(CliError::RunFailed {
                run_id,
                status: status.to_owned(),
                error: "sluice run was stopped by a signal (SIGTERM or Ctrl-C) and cancelled \
                        its run; a commit already under way is completed by the next run on \
                        its outputs"
                    .to_owned(),
            });
        }
    };
    client::print_run(&waited, args.output);
    client::require_success(&waited)
}
