//! `sluice backfill`, `sluice backfills`, and `status`/`cancel` of a backfill id: one
//! run per day or month of a date range.

use sluice_proto::v1;

use crate::cli::{BackfillArgs, BackfillsArgs, CancelArgs, OutputFormat, StatusArgs};
use crate::client;
use crate::error::{CliError, Result};

/// Submits a backfill; with `--wait`, follows it to its end.
pub async fn run(args: BackfillArgs) -> Result<()> {
    let mut client = client::connect(&args.scheduler.url).await?;
    let job = match (&args.file, &args.job) {
        (Some(file), _) => v1::submit_run_request::Job::DefinitionYaml(
            std::fs::read_to_string(file).map_err(|source| CliError::Io {
                context: format!("cannot read job definition {}", file.display()),
                source,
            })?,
        ),
        (None, Some(job)) => v1::submit_run_request::Job::RegisteredJob(job.clone()),
        (None, None) => {
            return Err(CliError::Usage(
                "give a definition file or --job NAME".into(),
            ));
        }
    };
    let backfill = client
        .submit_backfill(v1::SubmitBackfillRequest {
            run: Some(v1::SubmitRunRequest {
                job: Some(job),
                params: client::parse_params(&args.params)?.into_iter().collect(),
                origin: args
                    .file
                    .as_ref()
                    .map(|f| f.display().to_string())
                    .unwrap_or_default(),
                working_dir: client::working_dir(),
                task_token: String::new(),
                idempotency_key: String::new(),
            }),
            date_param: args.date_param.clone().unwrap_or_default(),
            from: args.from.clone(),
            to: args.to.clone(),
            every: args.every.clone(),
            max_concurrent: args.max_concurrent,
        })
        .await?
        .into_inner();
    if !args.wait {
        println!("{}", backfill.backfill_id);
        return Ok(());
    }
    let backfill = client::wait_backfill(&mut client, &backfill.backfill_id).await?;
    client::print_backfill(&backfill, OutputFormat::Text);
    if backfill.status == "succeeded" {
        Ok(())
    } else {
        Err(CliError::RunFailed {
            run_id: backfill.backfill_id.clone(),
            status: backfill.status.clone(),
            error: "some partitions did not commit".into(),
        })
    }
}

/// Lists backfills.
pub async fn list(args: BackfillsArgs) -> Result<()> {
    let mut client = client::connect(&args.scheduler.url).await?;
    let backfills = client
        .list_backfills(v1::ListBackfillsRequest {})
        .await?
        .into_inner()
        .backfills;
    for backfill in &backfills {
        println!("{}", client::backfill_line(backfill));
    }
    Ok(())
}

/// Shows one backfill.
pub async fn status(args: StatusArgs) -> Result<()> {
    let mut client = client::connect(&args.scheduler.url).await?;
    let backfill = client
        .get_backfill(v1::GetBackfillRequest {
            backfill_id: args.run_id.clone(),
        })
        .await?
        .into_inner();
    client::print_backfill(&backfill, args.output);
    Ok(())
}

/// Cancels one backfill.
pub async fn cancel(args: CancelArgs) -> Result<()> {
    let mut client = client::connect(&args.scheduler.url).await?;
    let backfill = client
        .cancel_backfill(v1::GetBackfillRequest {
            backfill_id: args.run_id.clone(),
        })
        .await?
        .into_inner();
    println!("cancelling {} ({})", backfill.backfill_id, backfill.status);
    Ok(())
}
