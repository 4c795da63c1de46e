//! `sluice jobs register` and `sluice jobs list`: definitions stored on the scheduler.

use sluice_proto::v1;

use crate::cli::{JobsListArgs, JobsRegisterArgs, OutputFormat};
use crate::client;
use crate::error::{CliError, Result};

/// Stores a definition as the next version of its job.
pub async fn register(args: JobsRegisterArgs) -> Result<()> {
    let mut client = client::connect(&args.scheduler.url).await?;
    let yaml = std::fs::read_to_string(&args.file).map_err(|source| CliError::Io {
        context: format!("cannot read job definition {}", args.file.display()),
        source,
    })?;
    let job = client
        .register_job(v1::RegisterJobRequest {
            definition_yaml: yaml,
            origin: args.file.display().to_string(),
        })
        .await?
        .into_inner();
    println!("registered {}@{}", job.name, job.version);
    Ok(())
}

/// Prints the registered jobs with their latest versions.
pub async fn list(args: JobsListArgs) -> Result<()> {
    let mut client = client::connect(&args.scheduler.url).await?;
    let jobs = client
        .list_jobs(v1::ListJobsRequest {})
        .await?
        .into_inner()
        .jobs;
    match args.output {
        OutputFormat::Json => {
            let jobs: Vec<serde_json::Value> = jobs
                .iter()
                .map(|job| {
                    serde_json::json!({
                        "name": job.name,
                        "version": job.version,
                        "description": job.description,
                        "registered_at": job.registered_at,
                    })
                })
                .collect();
            println!("{}", serde_json::Value::Array(jobs));
        }
        OutputFormat::Text => {
            for job in &jobs {
                println!(
                    "{:<28} v{:<4} {}  {}",
                    job.name,
                    job.version,
                    job.registered_at,
                    job.description.trim()
                );
            }
        }
    }
    Ok(())
}
