//! `sluice executor`: an executor process that registers with a scheduler.

use crate::cli::ExecutorArgs;
use crate::config::Settings;
use crate::error::{CliError, Result};

/// Runs until the executor stops.
pub async fn run(args: ExecutorArgs, settings: &Settings) -> Result<()> {
    let (host, port) = args.scheduler.rsplit_once(':').ok_or_else(|| {
        CliError::Usage(format!("--scheduler `{}`: write host:port", args.scheduler))
    })?;
    let host = host
        .trim_start_matches("http://")
        .trim_start_matches("https://");
    let port: u16 = port
        .parse()
        .map_err(|_| CliError::Usage(format!("--scheduler `{}`: bad port", args.scheduler)))?;
    let memory_bytes = match &args.memory {
        Some(text) => Some(
            parse_memory(text)
                .ok_or_else(|| CliError::Usage(format!("--memory `{text}`: write e.g. 4GiB")))?,
        ),
        None => None,
    };
    let executor_settings = sluice_executor::ExecutorSettings {
        scheduler_host: host.to_owned(),
        scheduler_port: port,
        bind_host: args.bind.clone(),
        external_host: args
            .external_host
            .clone()
            .or_else(|| this_host_when_unspecified(&args.bind)),
        flight_port: args.port,
        grpc_port: args.grpc_port,
        vcores: args.vcores,
        memory_bytes,
        work_dir: args.work_dir.clone(),
        executor_id: args.executor_id.clone(),
        health_port: args.health_port,
        storage: settings.storage()?,
        tls: args.tls_ca.clone().map(|ca| sluice_executor::ExecutorTls {
            ca,
            identity: args.tls_cert.clone().zip(args.tls_key.clone()),
        }),
    };
    sluice_executor::run_executor(executor_settings).await?;
    Ok(())
}

/// The host name others reach this machine at, when binding every interface and no
/// external host is given (a container: its hostname resolves to its address). Without
/// one the scheduler would have to guess the executor's address from the connection.
fn this_host_when_unspecified(bind: &str) -> Option<String> {
    let unspecified = bind
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_unspecified());
    if !unspecified {
        return None;
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .filter(|name| !name.is_empty())
}

fn parse_memory(text: &str) -> Option<u64> {
    sluice_jobs::parse_byte_size(&sluice_jobs::Literal::Text(text.to_owned())).ok()
}
