//! `sluice emr submit`: an EMR step that runs `sluice submit --wait` on the primary node.

use crate::cli::EmrSubmitArgs;
use crate::config::Settings;
use crate::error::{CliError, Result};

/// Adds the step and prints its id.
pub async fn submit(args: &EmrSubmitArgs, settings: &Settings) -> Result<()> {
    let step_args = step_args(args)?;
    let api = sluice_scheduler::autoscale::AwsApi {
        endpoint: settings.emr_endpoint(),
        region: None,
    };
    let emr = aws_sdk_emr::Client::new(&api.config().await);
    let target = args.job.clone().or(args.file.clone()).unwrap_or_default();
    let step = aws_sdk_emr::types::StepConfig::builder()
        .name(
            args.name
                .clone()
                .unwrap_or_else(|| format!("sluice {target}")),
        )
        .action_on_failure(aws_sdk_emr::types::ActionOnFailure::from(
            args.action_on_failure.as_str(),
        ))
        .hadoop_jar_step(
            aws_sdk_emr::types::HadoopJarStepConfig::builder()
                .jar("command-runner.jar")
                .set_args(Some(step_args))
                .build(),
        )
        .build();
    let added = emr
        .add_job_flow_steps()
        .job_flow_id(&args.cluster_id)
        .steps(step)
        .send()
        .await
        .map_err(|err| CliError::Aws {
            operation: "AddJobFlowSteps",
            resource: args.cluster_id.clone(),
            message: aws_sdk_emr::error::DisplayErrorContext(err).to_string(),
        })?;
    for step_id in added.step_ids() {
        println!("{step_id}");
    }
    Ok(())
}

/// The command an EMR step runs on the primary node: `sluice submit --wait` against the
/// scheduler the bootstrap action started there; an `s3://` definition is copied first.
fn step_args(args: &EmrSubmitArgs) -> Result<Vec<String>> {
    let mut submit = vec![
        "sluice".to_owned(),
        "submit".to_owned(),
        "--wait".to_owned(),
        "--scheduler".to_owned(),
        "127.0.0.1:50050".to_owned(),
    ];
    let mut copy = None;
    match (&args.file, &args.job) {
        (_, Some(job)) => submit.extend(["--job".to_owned(), job.clone()]),
        (Some(file), None) if file.starts_with("s3://") => {
            let local = format!(
                "/tmp/sluice-{}.yaml",
                uuid::Uuid::new_v4()
                    .simple()
                    .to_string()
                    .get(..8)
                    .unwrap_or("job")
            );
            copy = Some(vec![
                "aws".to_owned(),
                "s3".to_owned(),
                "cp".to_owned(),
                file.clone(),
                local.clone(),
            ]);
            submit.push(local);
        }
        (Some(file), None) => submit.push(file.clone()),
        (None, None) => return Err(CliError::Usage("give a definition or --job NAME".into())),
    }
    for param in &args.params {
        if !param.contains('=') {
            return Err(CliError::Usage(format!(
                "--param `{param}` is not name=value"
            )));
        }
        submit.extend(["-p".to_owned(), param.clone()]);
    }
    Ok(match copy {
        None => submit,
        // One command for command-runner.jar: copy, then submit.
        // Every word single-quoted: an S3 key or a param may hold spaces, `;` or `$(…)`.
        Some(copy) => {
            let quoted = |words: &[String]| {
                words
                    .iter()
                    .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            vec![
                "bash".to_owned(),
                "-c".to_owned(),
                format!("{} && {}", quoted(&copy), quoted(&submit)),
            ]
        }
    })
}
