//! `sluice scheduler`: the scheduler process, with its autoscaler and, when given
//! activities, the Step Functions worker beside it.

use std::time::Duration;

use sluice_scheduler::autoscale::{AutoscalerSettings, ProviderSettings};

use crate::cli::SchedulerArgs;
use crate::config::Settings;
use crate::error::{CliError, Result};

use super::sfn;

/// Serves until SIGTERM or Ctrl-C.
pub async fn run(args: SchedulerArgs, settings: &Settings) -> Result<()> {
    let scheduler_settings = sluice_scheduler::SchedulerSettings {
        bind_host: args.bind.clone(),
        port: args.port,
        external_host: args.external_host.clone().unwrap_or(args.bind.clone()),
        run_store: args.state_dir.join("runs.redb"),
        executor_timeout: Duration::from_secs(args.executor_timeout_secs),
        output_lease: Duration::from_secs(args.output_lease_secs),
        state_backup: args.state_backup.clone(),
        keep_runs: (args.keep_runs > 0).then_some(args.keep_runs),
        keep_for: (args.keep_days > 0).then(|| Duration::from_secs(args.keep_days * 86_400)),
        keep_dq_for: (args.keep_dq_days > 0)
            .then(|| Duration::from_secs(args.keep_dq_days * 86_400)),
        storage: settings.storage()?,
        step_functions: settings.step_functions(),
        http_port: args.http_port,
        engine: sluice_scheduler::Engine::Ballista,
        tokens_file: args.tokens_file.clone(),
        tls: args
            .tls_cert
            .clone()
            .zip(args.tls_key.clone())
            .map(|(cert, key)| sluice_scheduler::tls::TlsSettings {
                cert,
                key,
                client_ca: args.tls_client_ca.clone(),
            }),
        insecure: args.insecure,
        zones: sluice_jobs::StorageZones::new(&args.read_zones, &args.write_zones),
    };
    let scheduler = sluice_scheduler::Scheduler::start(&scheduler_settings).await?;
    eprintln!("sluice scheduler listening on {}", scheduler.address());
    let (autoscale_stop, autoscale_stopped) = tokio::sync::watch::channel(false);
    let _autoscaler = match args.autoscale.as_deref() {
        None => None,
        Some(provider) => Some(scheduler.start_autoscaler(
            AutoscalerSettings {
                provider: provider_settings(provider, &args, &scheduler, settings)?,
                min: args.min_executors,
                max: args.max_executors,
                step: args.scale_step,
                cooldown: Duration::from_secs(args.cooldown_secs),
                slots_per_executor: args.executor_slots,
                interval: Duration::from_millis(500),
            },
            autoscale_stopped,
        )),
    };
    let _stop_autoscaler_on_exit = StopOnDrop(autoscale_stop);
    if args.sfn_activity_arns.is_empty() {
        scheduler.serve(super::shutdown_signal()).await?;
    } else {
        // The activity worker inside the scheduler, a client of its own address: over
        // TLS at the name its certificate carries, with the process's SLUICE_TOKEN and
        // SLUICE_TLS__CA, when the port has TLS.
        let own_url = match &scheduler_settings.tls {
            None => format!("http://{}", scheduler.address()),
            Some(_) => format!(
                "https://{}:{}",
                scheduler_settings.external_host,
                scheduler.address().port()
            ),
        };
        let worker = sfn::worker_settings(
            args.sfn_activity_arns.clone(),
            own_url,
            4,
            20,
            60,
            None,
            settings,
        )?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let sfn =
            sluice_scheduler::sfn::client(&settings.step_functions().unwrap_or_default()).await;
        let serving = scheduler.serve(async move {
            super::shutdown_signal().await;
            stop_tx.send_replace(true);
        });
        let working = sluice_scheduler::activity::run(worker, sfn, stop_rx);
        let (served, ()) = tokio::join!(serving, working);
        served?;
    }
    Ok(())
}

/// The `--autoscale` provider with the flags it needs.
fn provider_settings(
    provider: &str,
    args: &SchedulerArgs,
    scheduler: &sluice_scheduler::Scheduler,
    settings: &Settings,
) -> Result<ProviderSettings> {
    Ok(match provider {
        "local" => ProviderSettings::Local {
            binary: std::env::current_exe().map_err(|source| CliError::Io {
                context: "finding the sluice binary".into(),
                source,
            })?,
            scheduler: scheduler.address().to_string(),
            vcores: args.executor_slots,
            log_dir: args.state_dir.join("executors"),
        },
        "external" => ProviderSettings::External,
        "ecs" => ProviderSettings::Ecs {
            cluster: required(&args.ecs_cluster, "--ecs-cluster")?,
            service: required(&args.ecs_service, "--ecs-service")?,
            api: settings.autoscale_api(),
        },
        "emr" => ProviderSettings::Emr {
            cluster_id: required(&args.emr_cluster_id, "--emr-cluster-id")?,
            instance_group_id: required(&args.emr_instance_group_id, "--emr-instance-group-id")?,
            api: settings.autoscale_api(),
        },
        other => {
            return Err(CliError::Usage(format!(
                "--autoscale {other}: use `local`, `ecs`, `emr` or `external`"
            )));
        }
    })
}

/// A flag the chosen autoscale provider needs.
fn required(value: &Option<String>, flag: &str) -> Result<String> {
    value
        .clone()
        .ok_or_else(|| CliError::Usage(format!("this --autoscale provider needs {flag}")))
}

/// Sets a stop flag when dropped (the autoscaler stops its executors).
struct StopOnDrop(tokio::sync::watch::Sender<bool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}
