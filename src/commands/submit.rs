//! `sluice submit`: a run on a scheduler, by definition file or registered job.

use crate::cli::{OutputFormat, SubmitArgs};
use crate::client;
use crate::error::{CliError, Result};

/// Submits the run; with `--wait`, follows it to its end.
pub async fn run(args: SubmitArgs) -> Result<()> {
    let mut client = client::connect(&args.scheduler.url).await?;
    let key = args.idempotency_key.as_deref();
    let run_id = match (&args.file, &args.job) {
        (Some(file), _) => client::submit_file(&mut client, file, &args.params, key).await?,
        (None, Some(job)) => client::submit_registered(&mut client, job, &args.params, key).await?,
        (None, None) => {
            return Err(CliError::Usage(
                "give a definition file or --job NAME".into(),
            ));
        }
    };
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
