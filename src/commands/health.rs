//! `sluice health`: a grpc.health.v1 check, exit 0 when serving.

use crate::cli::HealthArgs;
use crate::client;
use crate::error::{CliError, Result};

/// Checks the endpoint and prints its status.
pub async fn run(args: HealthArgs) -> Result<()> {
    let url = client::normalize_url(&args.address);
    let channel = tonic::transport::Endpoint::from_shared(url.clone())
        .map_err(|err| CliError::Usage(format!("--address {url}: {err}")))?
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
