//! `sluice sfn render` and `sluice sfn-worker`: Step Functions state machines with an
//! account's ARNs, and the activity worker that runs their tasks as Sluice runs.

use crate::cli::{SfnRenderArgs, SfnWorkerArgs};
use crate::client;
use crate::config::Settings;
use crate::error::{CliError, Result};

/// Prints a rendered state machine template.
pub fn render(args: &SfnRenderArgs) -> Result<()> {
    let template = std::fs::read_to_string(&args.file).map_err(|source| CliError::Io {
        context: format!("reading {}", args.file.display()),
        source,
    })?;
    let mut values = vec![("SluiceActivityArn", args.activity_arn.as_str())];
    if let Some(topic) = &args.topic_arn {
        values.push(("FailureTopicArn", topic.as_str()));
    }
    println!(
        "{}",
        render_state_machine(&template, &values, &args.file.display().to_string())?
    );
    Ok(())
}

/// Fills `${Name}` placeholders of a state machine template; every placeholder must get
/// a value and the result must be JSON.
pub fn render_state_machine(
    template: &str,
    values: &[(&str, &str)],
    origin: &str,
) -> Result<String> {
    let mut rendered = template.to_owned();
    for (name, value) in values {
        rendered = rendered.replace(&format!("${{{name}}}"), value);
    }
    if let Some(start) = rendered.find("${") {
        let name: String = rendered[start + 2..]
            .chars()
            .take_while(|c| *c != '}')
            .collect();
        let flag = match name.as_str() {
            "SluiceActivityArn" => "--activity-arn",
            "FailureTopicArn" => "--topic-arn",
            _ => "a value",
        };
        return Err(CliError::StateMachine {
            origin: origin.to_owned(),
            problem: format!("`${{{name}}}` needs {flag}"),
        });
    }
    serde_json::from_str::<serde_json::Value>(&rendered).map_err(|err| CliError::StateMachine {
        origin: origin.to_owned(),
        problem: format!("not JSON after rendering: {err}"),
    })?;
    Ok(rendered)
}

/// Polls the activities until SIGTERM or Ctrl-C, then drains.
pub async fn worker(args: SfnWorkerArgs, settings: &Settings) -> Result<()> {
    let worker = worker_settings(
        args.activity_arns.clone(),
        client::normalize_url(&args.scheduler.url),
        args.max_concurrent,
        args.heartbeat_secs,
        args.drain_secs,
        args.name.clone(),
        settings,
    )?;
    let sfn = sluice_scheduler::sfn::client(&settings.step_functions().unwrap_or_default()).await;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    eprintln!(
        "sluice sfn-worker polling {} activit{} for {}",
        worker.activity_arns.len(),
        if worker.activity_arns.len() == 1 {
            "y"
        } else {
            "ies"
        },
        worker.scheduler_url
    );
    let stop = async move {
        super::shutdown_signal().await;
        stop_tx.send_replace(true);
    };
    let ((), ()) = tokio::join!(
        stop_then_forget(stop),
        sluice_scheduler::activity::run(worker, sfn, stop_rx)
    );
    Ok(())
}

/// The activity worker's settings; its name defaults to `sluice-<host>-<pid>`.
pub fn worker_settings(
    activity_arns: Vec<String>,
    scheduler_url: String,
    max_concurrent: usize,
    heartbeat_secs: u64,
    drain_secs: u64,
    name: Option<String>,
    settings: &Settings,
) -> Result<sluice_scheduler::activity::WorkerSettings> {
    if heartbeat_secs == 0 {
        return Err(CliError::Usage(
            "--heartbeat-secs must be at least 1".into(),
        ));
    }
    let worker_name = name.unwrap_or_else(|| {
        format!(
            "sluice-{}-{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into()),
            std::process::id()
        )
    });
    Ok(sluice_scheduler::activity::WorkerSettings {
        activity_arns,
        scheduler_url,
        max_concurrent,
        heartbeat: std::time::Duration::from_secs(heartbeat_secs),
        drain: std::time::Duration::from_secs(drain_secs),
        worker_name,
        stores: sluice_jobs::ObjectStores::new(settings.storage()?),
    })
}

/// Waits for a stop future, for `join!` beside a worker that ends after it.
async fn stop_then_forget(stop: impl std::future::Future<Output = ()>) {
    stop.await;
}
