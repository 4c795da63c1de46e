//! `sluice runs`, `sluice status` and `sluice cancel`: a scheduler's runs; `sluice
//! audit`: who called what.

use sluice_proto::v1;

use crate::cli::{
    AuditArgs, CancelArgs, OutputFormat, RunsArgs, StatusArgs, StoreBackupArgs, StoreRestoreArgs,
};
use crate::client;
use crate::error::{CliError, Result};

/// Lists runs, newest first.
pub async fn list(args: RunsArgs) -> Result<()> {
    let mut client = client::connect(&args.scheduler.url).await?;
    let page = client
        .list_runs(v1::ListRunsRequest {
            limit: args.limit,
            before: args.before.clone().unwrap_or_default(),
        })
        .await?
        .into_inner();
    client::print_runs(&page.runs, args.output);
    if !page.next_before.is_empty() && matches!(args.output, OutputFormat::Text) {
        eprintln!("more: --before {}", page.next_before);
    }
    Ok(())
}

/// Shows one run.
pub async fn status(args: StatusArgs) -> Result<()> {
    let mut client = client::connect(&args.scheduler.url).await?;
    let run = client
        .get_run(v1::GetRunRequest {
            run_id: args.run_id,
        })
        .await?
        .into_inner();
    client::print_run(&run, args.output);
    Ok(())
}

/// Cancels one run.
pub async fn cancel(args: CancelArgs) -> Result<()> {
    let mut client = client::connect(&args.scheduler.url).await?;
    let run = client
        .cancel_run(v1::CancelRunRequest {
            run_id: args.run_id.clone(),
        })
        .await?
        .into_inner();
    if client::status_name(run.status) == "running" || client::status_name(run.status) == "queued" {
        println!("cancelling {}", run.run_id);
    } else {
        println!(
            "{} is already {}",
            run.run_id,
            client::status_name(run.status)
        );
    }
    Ok(())
}

/// Prints the audit trail, newest first.
pub async fn audit(args: AuditArgs) -> Result<()> {
    let mut client = client::connect(&args.scheduler.url).await?;
    let events = client
        .list_audit(v1::ListAuditRequest { limit: args.limit })
        .await?
        .into_inner()
        .events;
    match args.output {
        OutputFormat::Json => {
            let rows: Vec<serde_json::Value> = events
                .iter()
                .map(|e| {
                    serde_json::json!({"at": e.at, "principal": e.principal, "action": e.action,
                        "outcome": e.outcome, "reason": e.reason})
                })
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&rows).unwrap_or_default()
            );
        }
        OutputFormat::Text => {
            for event in &events {
                let method = event.action.rsplit('/').next().unwrap_or(&event.action);
                let mut line = format!(
                    "{}  {:<20} {:<16} {}",
                    event.at, event.principal, method, event.outcome
                );
                if !event.reason.is_empty() {
                    line.push_str(&format!("  ({})", event.reason));
                }
                println!("{line}");
            }
        }
    }
    Ok(())
}

/// `sluice store backup`: streams the scheduler's snapshot into FILE, whole or not at all.
pub async fn backup_store(args: StoreBackupArgs) -> Result<()> {
    use futures::StreamExt;
    let mut client = client::connect(&args.scheduler.url).await?;
    let mut chunks = client
        .backup_store(v1::BackupStoreRequest {})
        .await?
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = chunks.next().await {
        bytes.extend_from_slice(&chunk?.data);
    }
    let fail = |source: std::io::Error| CliError::Io {
        context: format!("writing the run store's backup {}", args.file.display()),
        source,
    };
    let mut partial = args.file.clone().into_os_string();
    partial.push(".partial");
    std::fs::write(&partial, &bytes).map_err(fail)?;
    std::fs::rename(&partial, &args.file).map_err(fail)?;
    eprintln!(
        "run store written to {} ({} bytes)",
        args.file.display(),
        bytes.len()
    );
    Ok(())
}

/// `sluice store restore`.
pub fn restore_store(args: &StoreRestoreArgs) -> Result<()> {
    let store = args.state_dir.join("runs.redb");
    let kept = sluice_scheduler::restore_store_file(&args.file, &store)?;
    eprintln!(
        "run store {} restored from {}",
        store.display(),
        args.file.display()
    );
    if let Some(kept) = kept {
        eprintln!("the store it replaced is kept as {}", kept.display());
    }
    Ok(())
}
