//! The Step Functions activity worker: long-polls activities for tasks, runs each as a
//! Sluice run on a scheduler, heartbeats while it runs, and ends every task it took with
//! SendTaskSuccess or SendTaskFailure — a task token is never dropped silently.
//!
//! ```text
//! GetActivityTask (long poll, one permit per task) ─► input JSON ─► SubmitRun
//!     ─► every heartbeat: SendTaskHeartbeat; every second: GetRun
//!     ─► final status ─► SendTaskSuccess(output) | SendTaskFailure(Sluice.*, cause)
//! stop signal ─► polling stops ─► runs in flight get `drain` to end
//!     ─► then their tasks fail with Sluice.WorkerStopped (the runs go on)
//! ```
//!
//! Task input: `{"job": "name" | "name@3"}`, `{"definition": "<YAML>"}` or
//! `{"definition_uri": "s3://bucket/job.yaml"}`, with `"params": {"name": value}` and,
//! for jobs that append, `"idempotency_key"` (e.g. `"idempotency_key.$": "$$.Execution.Id"`
//! in the state's Parameters: a retry of the state never appends twice).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sfn::Client;
use sluice_proto::{JobServiceClient, v1};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::{TaskError, TaskResult, run_result, send_result};

/// How the worker runs.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Activities to poll.
    pub activity_arns: Vec<String>,
    /// The scheduler that runs the jobs.
    pub scheduler_url: String,
    /// Tasks in flight at most; no task is taken beyond this.
    pub max_concurrent: usize,
    /// Time between heartbeats (below the state's `HeartbeatSeconds`).
    pub heartbeat: Duration,
    /// After a stop signal, how long runs in flight may still finish.
    pub drain: Duration,
    /// The worker's name, shown in the execution history.
    pub worker_name: String,
    /// Reads `definition_uri` definitions.
    pub stores: Arc<sluice_jobs::ObjectStores>,
}

/// Polls until `stop` turns true, then drains. Returns when every task it took has
/// been ended.
pub async fn run(settings: WorkerSettings, sfn: Client, mut stop: watch::Receiver<bool>) {
    let permits = Arc::new(Semaphore::new(settings.max_concurrent.max(1)));
    let settings = Arc::new(settings);
    let (drained_tx, drained_rx) = watch::channel(false);
    let mut pollers: JoinSet<()> = JoinSet::new();
    for arn in settings.activity_arns.clone() {
        pollers.spawn(poll(
            arn,
            sfn.clone(),
            Arc::clone(&settings),
            Arc::clone(&permits),
            stop.clone(),
            drained_rx.clone(),
        ));
    }
    until_true(&mut stop).await;
    tracing::info!("stop signal: activity polling stops; runs in flight may finish");
    // Each poller returns once its tasks have ended.
    let deadline = tokio::time::sleep(settings.drain);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            joined = pollers.join_next() => {
                if joined.is_none() {
                    break;
                }
            }
            _ = &mut deadline, if !*drained_tx.borrow() => {
                tracing::warn!("drain time is up: failing the tasks still in flight");
                drained_tx.send_replace(true);
            }
        }
    }
}

/// One activity's poll loop; it owns the tasks it takes.
async fn poll(
    arn: String,
    sfn: Client,
    settings: Arc<WorkerSettings>,
    permits: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
    drained: watch::Receiver<bool>,
) {
    let mut tasks: JoinSet<()> = JoinSet::new();
    loop {
        if *stop.borrow() {
            break;
        }
        // A permit first: never take a task that cannot start now.
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = until_true(&mut stop) => break,
        };
        let polled_at = std::time::Instant::now();
        let polled = tokio::select! {
            polled = sfn
                .get_activity_task()
                .activity_arn(&arn)
                .worker_name(&settings.worker_name)
                .send() => polled,
            _ = until_true(&mut stop) => break,
        };
        while tasks.try_join_next().is_some() {}
        match polled {
            Ok(task) => {
                let (Some(token), input) =
                    (task.task_token().filter(|t| !t.is_empty()), task.input())
                else {
                    // The long poll ended without a task. An endpoint that answers at
                    // once (an emulator) is not polled in a tight loop.
                    if polled_at.elapsed() < Duration::from_secs(1) {
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    continue;
                };
                let token = token.to_owned();
                let input = input.unwrap_or("{}").to_owned();
                let sfn = sfn.clone();
                let settings = Arc::clone(&settings);
                let drained = drained.clone();
                tasks.spawn(async move {
                    let _permit = permit;
                    handle(token, input, sfn, settings, drained).await;
                });
            }
            Err(err) => {
                tracing::warn!(activity = %arn, "GetActivityTask failed: {}", aws_sdk_sfn::error::DisplayErrorContext(err));
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = until_true(&mut stop) => break,
                }
            }
        }
    }
    while tasks.join_next().await.is_some() {}
}

/// Runs one task to its end and reports it.
async fn handle(
    token: String,
    input: String,
    sfn: Client,
    settings: Arc<WorkerSettings>,
    drained: watch::Receiver<bool>,
) {
    let result = execute(&input, &token, &sfn, &settings, drained).await;
    if let TaskResult::Failure { error, cause } = &result {
        tracing::warn!(error = error.name(), "task failed: {cause}");
    }
    // Reporting is retried: a lost result would leave the execution waiting.
    for attempt in 0..5u32 {
        match send_result(&sfn, &token, &result).await {
            Ok(()) => return,
            Err(err) => {
                tracing::warn!(attempt, "reporting a task result failed: {err}");
                tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
            }
        }
    }
}

/// What the task input asks for.
struct TaskInput {
    job: v1::submit_run_request::Job,
    params: BTreeMap<String, String>,
    origin: String,
    idempotency_key: Option<String>,
}

/// Why a task's input is not a Sluice task.
#[derive(Debug, thiserror::Error)]
enum InputError {
    /// Not JSON.
    #[error("the task input is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    /// JSON, but not an object.
    #[error("the task input is not a JSON object")]
    NotObject,
    /// `params` is not an object.
    #[error("`params` is not an object")]
    ParamsNotObject,
    /// A param's value is not a scalar.
    #[error("param `{0}` is not a string, number or boolean")]
    ParamNotScalar(String),
    /// No `job`, `definition` or `definition_uri`.
    #[error("the task input names no job: give `job`, `definition` or `definition_uri`")]
    NoJob,
    /// `definition_uri` does not name a readable object.
    #[error("definition_uri `{uri}`: {message}")]
    BadUri {
        /// The URI.
        uri: String,
        /// What is wrong with it.
        message: String,
    },
    /// Reading the definition failed.
    #[error("reading {uri}: {source}")]
    Read {
        /// The URI.
        uri: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// The definition is not text.
    #[error("{0} is not UTF-8 text")]
    NotUtf8(String),
}

async fn read_input(
    text: &str,
    stores: &sluice_jobs::ObjectStores,
) -> Result<TaskInput, InputError> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(InputError::NotJson)?;
    let object = value.as_object().ok_or(InputError::NotObject)?;
    let params = match object.get("params") {
        None | Some(serde_json::Value::Null) => BTreeMap::new(),
        Some(serde_json::Value::Object(params)) => params
            .iter()
            .map(|(name, value)| {
                let text = match value {
                    serde_json::Value::String(text) => text.clone(),
                    serde_json::Value::Number(_) | serde_json::Value::Bool(_) => value.to_string(),
                    _ => return Err(InputError::ParamNotScalar(name.clone())),
                };
                Ok((name.clone(), text))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(InputError::ParamsNotObject),
    };
    let text = |key: &str| object.get(key).and_then(|v| v.as_str()).map(str::to_owned);
    let (job, origin) = if let Some(name) = text("job") {
        (
            v1::submit_run_request::Job::RegisteredJob(name.clone()),
            format!("registered job {name}"),
        )
    } else if let Some(yaml) = text("definition") {
        (
            v1::submit_run_request::Job::DefinitionYaml(yaml),
            "<task input>".to_owned(),
        )
    } else if let Some(uri) = text("definition_uri") {
        let yaml = read_uri(&uri, stores).await?;
        (v1::submit_run_request::Job::DefinitionYaml(yaml), uri)
    } else {
        return Err(InputError::NoJob);
    };
    Ok(TaskInput {
        job,
        params,
        origin,
        idempotency_key: text("idempotency_key"),
    })
}

/// The largest `definition_uri` object read (a definition is a few kilobytes).
const MAX_DEFINITION_BYTES: u64 = 1024 * 1024;

async fn read_uri(uri: &str, stores: &sluice_jobs::ObjectStores) -> Result<String, InputError> {
    use datafusion::execution::object_store::ObjectStoreRegistry;
    use object_store::ObjectStoreExt;
    let bad_uri = |message: String| InputError::BadUri {
        uri: uri.to_owned(),
        message,
    };
    let read = |source: object_store::Error| InputError::Read {
        uri: uri.to_owned(),
        source,
    };
    let url = url::Url::parse(uri).map_err(|err| bad_uri(err.to_string()))?;
    // A task input is written by whoever may start the state machine: it names an
    // object in S3, never a file of the worker's machine, and a definition-sized one.
    if !matches!(url.scheme(), "s3" | "s3a") {
        return Err(bad_uri(format!(
            "`{}://` is not read; definition_uri takes an s3:// object",
            url.scheme()
        )));
    }
    let store = stores
        .get_store(&url)
        .map_err(|err| bad_uri(err.to_string()))?;
    let path = object_store::path::Path::from_url_path(url.path())
        .map_err(|err| bad_uri(err.to_string()))?;
    let size = store.head(&path).await.map_err(read)?.size;
    if size > MAX_DEFINITION_BYTES {
        return Err(bad_uri(format!(
            "{size} bytes is more than a definition's {MAX_DEFINITION_BYTES}"
        )));
    }
    let bytes = store
        .get(&path)
        .await
        .map_err(read)?
        .bytes()
        .await
        .map_err(read)?;
    String::from_utf8(bytes.to_vec()).map_err(|_| InputError::NotUtf8(uri.to_owned()))
}

async fn execute(
    input: &str,
    token: &str,
    sfn: &Client,
    settings: &WorkerSettings,
    mut drained: watch::Receiver<bool>,
) -> TaskResult {
    let input = match read_input(input, &settings.stores).await {
        Ok(input) => input,
        Err(err) => {
            return TaskResult::Failure {
                error: TaskError::InvalidInput,
                cause: err.to_string(),
            };
        }
    };
    let unavailable = |err: &dyn std::fmt::Display| TaskResult::Failure {
        error: TaskError::SchedulerUnavailable,
        cause: format!("scheduler {}: {err}", settings.scheduler_url),
    };
    let mut client = match JobServiceClient::connect(settings.scheduler_url.clone()).await {
        Ok(client) => client,
        Err(err) => return unavailable(&err),
    };
    let submitted = client
        .submit_run(v1::SubmitRunRequest {
            job: Some(input.job),
            params: input.params.into_iter().collect(),
            origin: input.origin,
            working_dir: String::new(),
            task_token: String::new(),
            idempotency_key: input.idempotency_key.unwrap_or_default(),
        })
        .await;
    let run_id = match submitted {
        Ok(response) => response.into_inner().run_id,
        Err(status) => {
            return TaskResult::Failure {
                error: TaskError::of_rejection(&status),
                cause: status.message().to_owned(),
            };
        }
    };
    tracing::info!(%run_id, "activity task running");
    let mut heartbeat = tokio::time::interval(settings.heartbeat);
    heartbeat.tick().await;
    let mut check = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = heartbeat.tick() => {
                if let Err(err) = sfn.send_task_heartbeat().task_token(token).send().await {
                    // The task timed out or was stopped: nobody waits for this run.
                    tracing::warn!(%run_id, "heartbeat refused ({}); cancelling the run", aws_sdk_sfn::error::DisplayErrorContext(err));
                    let _ = client.cancel_run(v1::CancelRunRequest { run_id: run_id.clone() }).await;
                    return TaskResult::Failure {
                        error: TaskError::Cancelled,
                        cause: format!("run {run_id}: Step Functions refused the heartbeat; the run was cancelled"),
                    };
                }
            }
            _ = check.tick() => {
                match client.get_run(v1::GetRunRequest { run_id: run_id.clone() }).await {
                    Ok(run) => {
                        if let Some(result) = run_result(&run.into_inner()) {
                            return result;
                        }
                    }
                    Err(status) if status.code() == tonic::Code::Unavailable => {
                        tracing::warn!(%run_id, "scheduler unreachable: {}", status.message());
                    }
                    Err(status) => return TaskResult::Failure {
                        error: TaskError::RunFailed,
                        cause: format!("run {run_id}: {}", status.message()),
                    },
                }
            }
            _ = until_true(&mut drained) => {
                return TaskResult::Failure {
                    error: TaskError::WorkerStopped,
                    cause: format!(
                        "the worker stopped before run {run_id} ended; the run goes on on the \
                         scheduler (sluice status {run_id})"
                    ),
                };
            }
        }
    }
}

/// Waits until a flag turns true (or its sender is gone). The guard `wait_for` returns
/// is dropped here, so the futures that wait stay `Send`.
async fn until_true(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|value| *value).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_definition_uri_names_an_s3_object_never_a_local_file() {
        let stores = sluice_jobs::ObjectStores::new(Default::default());
        let dir = tempfile::tempdir().unwrap();
        let local = dir.path().join("job.yaml");
        std::fs::write(&local, "apiVersion: sluice/v1\n").unwrap();
        for uri in [
            format!("file://{}", local.display()),
            "file:///etc/passwd".to_owned(),
            "http://169.254.169.254/latest/meta-data/".to_owned(),
        ] {
            let input = format!("{{\"definition_uri\": \"{uri}\"}}");
            let err = read_input(&input, &stores).await.err().unwrap().to_string();
            assert!(
                err.contains("is not read; definition_uri takes an s3:// object"),
                "{uri}: {err}"
            );
        }
    }
}
