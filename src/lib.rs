//! The `sluice` command: parses nothing itself (see `main.rs`), but carries out each
//! subcommand over the library crates.
//!
//! - `run`, `demo`: an embedded cluster — the scheduler and executors in this process,
//!   on loopback ports, with the local filesystem as storage — driven through the same
//!   `JobService` API a remote scheduler serves.
//! - `scheduler`, `executor`: the processes of a distributed cluster.
//! - `submit`, `runs`, `status`, `cancel`: clients of a scheduler's `JobService`.
//! - `validate`, `schema`: definition checks that need no cluster.

pub mod cli;
pub mod client;
mod config;
mod demo;
mod embedded;
mod error;

use std::path::Path;

use sluice_proto::v1;

use crate::cli::{Cli, Command, OutputFormat};
pub use crate::error::{CliError, Result};

/// `sluice datagen claims`: writes the data and prints the ground truth's summary.
fn datagen_claims(args: &crate::cli::DatagenClaimsArgs) -> Result<()> {
    for (name, rate) in [
        ("defect-rate", args.defect_rate),
        ("duplicate-rate", args.duplicate_rate),
    ] {
        if !(0.0..=1.0).contains(&rate) {
            return Err(CliError::Usage(format!(
                "--{name} {rate} is not between 0 and 1"
            )));
        }
    }
    if let Some(month) = args.months.iter().find(|m| !(1..=12).contains(*m)) {
        return Err(CliError::Usage(format!(
            "--months: {month} is not a month (1 to 12)"
        )));
    }
    let options = sluice_jobs::datagen::ClaimsOptions {
        rows: args.rows,
        seed: args.seed,
        months: args.months.clone(),
        defect_rate: args.defect_rate,
        duplicate_rate: args.duplicate_rate,
    };
    let started = std::time::Instant::now();
    let truth = sluice_jobs::datagen::generate_claims(&args.out, &options).map_err(|source| {
        CliError::Io {
            context: format!("writing claims to {}", args.out.display()),
            source,
        }
    })?;
    println!(
        "{} claim lines ({} valid, {} to quarantine) in {:.1}s below {}",
        truth.rows,
        truth.valid_rows,
        truth.quarantined_rows,
        started.elapsed().as_secs_f64(),
        args.out.display()
    );
    for (defect, count) in &truth.defects {
        println!("  {defect:<26} {count}");
    }
    println!(
        "ground truth: {}",
        args.out.join("ground_truth.json").display()
    );
    Ok(())
}

/// Carries out one command.
pub async fn execute(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run(args) => {
            let cluster = embedded::EmbeddedCluster::start(&args.state_dir, args.executors).await?;
            let mut client = cluster.client().await?;
            let run_id = client::submit_file(&mut client, &args.file, &args.params).await?;
            let run = client::wait(&mut client, &run_id, args.output == OutputFormat::Text).await?;
            client::print_run(&run, args.output);
            client::require_success(&run)
        }
        Command::Demo(args) => demo::run(&args).await,
        Command::Validate(args) => validate(&args.file, &args.params).await,
        Command::Datagen(crate::cli::DatagenCommand::Claims(args)) => datagen_claims(&args),
        Command::Schema => {
            let schema = sluice_jobs::json_schema();
            println!(
                "{}",
                serde_json::to_string_pretty(&schema).unwrap_or_default()
            );
            Ok(())
        }
        Command::Scheduler(args) => {
            let settings = sluice_scheduler::SchedulerSettings {
                bind_host: args.bind.clone(),
                port: args.port,
                external_host: args.external_host.clone().unwrap_or(args.bind.clone()),
                run_store: args.state_dir.join("runs.redb"),
                executor_timeout: std::time::Duration::from_secs(args.executor_timeout_secs),
                storage: config::storage_settings()?,
            };
            let scheduler = sluice_scheduler::Scheduler::start(&settings).await?;
            eprintln!("sluice scheduler listening on {}", scheduler.address());
            scheduler.serve(shutdown_signal()).await?;
            Ok(())
        }
        Command::Executor(args) => {
            let (host, port) = args.scheduler.rsplit_once(':').ok_or_else(|| {
                CliError::Usage(format!("--scheduler `{}`: write host:port", args.scheduler))
            })?;
            let host = host
                .trim_start_matches("http://")
                .trim_start_matches("https://");
            let port: u16 = port.parse().map_err(|_| {
                CliError::Usage(format!("--scheduler `{}`: bad port", args.scheduler))
            })?;
            let memory_bytes = match &args.memory {
                Some(text) => Some(parse_memory(text).ok_or_else(|| {
                    CliError::Usage(format!("--memory `{text}`: write e.g. 4GiB"))
                })?),
                None => None,
            };
            let settings = sluice_executor::ExecutorSettings {
                scheduler_host: host.to_owned(),
                scheduler_port: port,
                bind_host: args.bind.clone(),
                external_host: args.external_host.clone(),
                flight_port: args.port,
                grpc_port: args.grpc_port,
                vcores: args.vcores,
                memory_bytes,
                work_dir: args.work_dir.clone(),
                executor_id: None,
                storage: config::storage_settings()?,
            };
            sluice_executor::run_executor(settings).await?;
            Ok(())
        }
        Command::Submit(args) => {
            let mut client = client::connect(&args.scheduler.url).await?;
            let run_id = client::submit_file(&mut client, &args.file, &args.params).await?;
            if !args.wait {
                match args.output {
                    OutputFormat::Text => println!("{run_id}"),
                    OutputFormat::Json => println!("{}", serde_json::json!({ "run_id": run_id })),
                }
                return Ok(());
            }
            let run = client::wait(&mut client, &run_id, args.output == OutputFormat::Text).await?;
            client::print_run(&run, args.output);
            client::require_success(&run)
        }
        Command::Runs(args) => {
            let mut client = client::connect(&args.scheduler.url).await?;
            let runs = client
                .list_runs(v1::ListRunsRequest { limit: args.limit })
                .await?
                .into_inner()
                .runs;
            client::print_runs(&runs, args.output);
            Ok(())
        }
        Command::Status(args) => {
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
        Command::Cancel(args) => {
            let mut client = client::connect(&args.scheduler.url).await?;
            let run = client
                .cancel_run(v1::CancelRunRequest {
                    run_id: args.run_id.clone(),
                })
                .await?
                .into_inner();
            if client::status_name(run.status) == "running"
                || client::status_name(run.status) == "queued"
            {
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
    }
}

/// `sluice validate`: the definition always; with its params, its sources and
/// expressions too.
async fn validate(file: &Path, raw_params: &[String]) -> Result<()> {
    let definition = sluice_jobs::JobDefinition::from_file(file)?;
    let params = client::parse_params(raw_params)?;
    let origin = file.display().to_string();
    let missing: Vec<&String> = definition
        .params
        .iter()
        .filter(|(name, spec)| {
            spec.required && spec.default.is_none() && !params.contains_key(*name)
        })
        .map(|(name, _)| name)
        .collect();
    if !missing.is_empty() {
        sluice_jobs::JobSettings::from_conf(&definition.conf, &origin)?;
        println!(
            "{origin}: definition `{}` is valid; give --param {} to check it against its sources",
            definition.name,
            missing
                .iter()
                .map(|name| format!("{name}=…"))
                .collect::<Vec<_>>()
                .join(" --param ")
        );
        return Ok(());
    }
    let prepared = sluice_jobs::PreparedJob::prepare(definition, &origin, &params)?;
    for warning in &prepared.settings.warnings {
        eprintln!("warning: {warning}");
    }
    let ctx =
        prepared.session_context(&sluice_jobs::ObjectStores::new(config::storage_settings()?))?;
    let base_dir = std::env::current_dir().unwrap_or_default();
    let compiled = prepared.compile(&ctx, &base_dir).await?;
    println!(
        "{origin}: definition `{}` is valid against its sources ({})",
        prepared.definition.name,
        compiled
            .sources
            .iter()
            .map(|s| {
                let partitions: Vec<&str> = s
                    .partition_columns
                    .iter()
                    .map(|(name, _)| name.as_str())
                    .collect();
                if partitions.is_empty() {
                    format!("{} at {}", s.name, s.location)
                } else {
                    format!(
                        "{} at {} partitioned by {}",
                        s.name,
                        s.location,
                        partitions.join(", ")
                    )
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

fn parse_memory(text: &str) -> Option<u64> {
    sluice_jobs::parse_byte_size(&sluice_jobs::Literal::Text(text.to_owned())).ok()
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = ctrl_c.await;
}
