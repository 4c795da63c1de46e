//! `sluice health`: a grpc.health.v1 check, exit 0 when serving.

use crate::cli::HealthArgs;
use crate::client;
use crate::error::{CliError, Result};

/// Checks the endpoint and prints its status.
pub async fn run(args: HealthArgs) -> Result<()> {
    // Health ports are plain unless the address says `https://` (an executor's health
    // port is plain even where SLUICE_TLS__CA points at the scheduler's CA).
    let url = if args.address.contains("://") {
        args.address.clone()
    } else {
        format!("http://{}", args.address)
    };
    let channel = client::endpoint(&url)?
        .connect()
        .await
        .map_err(|err| CliError::Unreachable {
            url: url.clone(),
            message: err.to_string(),
        })?;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: args.service.clone(),
        })
        .await?
        .into_inner()
        .status();
    println!("{}", status.as_str_name());
    if status == tonic_health::pb::health_check_response::ServingStatus::Serving {
        Ok(())
    } else {
        Err(CliError::NotServing {
            url,
            status: status.as_str_name().to_owned(),
        })
    }
}
