//! AWS Step Functions: what a run's outcome means to a state machine (the one place
//! where outcomes become error names), the task-token callback the scheduler sends when
//! a run submitted with a token ends, and the activity worker (`sfn/activity.rs`, also
//! reachable as `sluice_scheduler::activity`).
//!
//! Error names a state machine can `Retry` or `Catch`:
//!
//! | name | when | retry? |
//! |---|---|---|
//! | `Sluice.InvalidInput` | the task input is not a Sluice task (bad JSON, no job) | no |
//! | `Sluice.InvalidDefinition` | the definition, its params or its sources are bad; nothing ran | no |
//! | `Sluice.DataQualityFailed` | a `fail` rule or a quarantine threshold broke; nothing was committed | no |
//! | `Sluice.RunFailed` | the run failed on the cluster | yes |
//! | `Sluice.Cancelled` | someone cancelled the run | no |
//! | `Sluice.Interrupted` | the scheduler stopped while the run was in flight | yes |
//! | `Sluice.OutputBusy` | another run is writing the same output | yes, with backoff |
//! | `Sluice.SchedulerUnavailable` | the worker cannot reach the scheduler | yes |
//! | `Sluice.WorkerStopped` | the worker stopped before the run ended (the run goes on) | yes |

pub mod activity;

use std::time::Duration;

use aws_sdk_sfn::Client;
use serde_json::json;
use sluice_proto::v1;

use crate::aws::AwsApi;
pub use crate::aws::AwsCallError;

/// Where the Step Functions API is (the SDK's chain; `endpoint` for an emulator).
pub type StepFunctionsSettings = AwsApi;

/// GetActivityTask holds a poll for up to 60 seconds; the client waits longer.
const LONG_POLL_TIMEOUT: Duration = Duration::from_secs(70);

/// A Step Functions client for these settings.
pub async fn client(settings: &StepFunctionsSettings) -> Client {
    let shared = settings.config().await;
    let config = aws_sdk_sfn::config::Builder::from(&shared)
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .read_timeout(LONG_POLL_TIMEOUT)
                .operation_attempt_timeout(LONG_POLL_TIMEOUT + Duration::from_secs(5))
                .build(),
        )
        .build();
    Client::from_conf(config)
}

/// Why a task failed, as a state machine sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskError {
    /// The task input is not a Sluice task.
    InvalidInput,
    /// The definition, its params or its sources are bad.
    InvalidDefinition,
    /// Data quality failed the run.
    DataQualityFailed,
    /// The run failed.
    RunFailed,
    /// The run was cancelled.
    Cancelled,
    /// The scheduler stopped while the run was in flight.
    Interrupted,
    /// Another run is writing the same output.
    OutputBusy,
    /// The scheduler cannot be reached.
    SchedulerUnavailable,
    /// The worker stopped before the run ended.
    WorkerStopped,
}

impl TaskError {
    /// The error name states match in `Retry` and `Catch`.
    pub fn name(self) -> &'static str {
        match self {
            TaskError::InvalidInput => "Sluice.InvalidInput",
            TaskError::InvalidDefinition => "Sluice.InvalidDefinition",
            TaskError::DataQualityFailed => "Sluice.DataQualityFailed",
            TaskError::RunFailed => "Sluice.RunFailed",
            TaskError::Cancelled => "Sluice.Cancelled",
            TaskError::Interrupted => "Sluice.Interrupted",
            TaskError::OutputBusy => "Sluice.OutputBusy",
            TaskError::SchedulerUnavailable => "Sluice.SchedulerUnavailable",
            TaskError::WorkerStopped => "Sluice.WorkerStopped",
        }
    }

    /// The error of a submission the scheduler refused.
    pub fn of_rejection(status: &tonic::Status) -> Self {
        match status.code() {
            tonic::Code::InvalidArgument | tonic::Code::NotFound => TaskError::InvalidDefinition,
            tonic::Code::FailedPrecondition => TaskError::OutputBusy,
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
                TaskError::SchedulerUnavailable
            }
            _ => TaskError::RunFailed,
        }
    }
}

/// How a task ends: its output, or an error name and cause.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskResult {
    /// SendTaskSuccess with this output.
    Success(serde_json::Value),
    /// SendTaskFailure.
    Failure {
        /// What went wrong, by name.
        error: TaskError,
        /// What happened, for people (at most 32 KiB).
        cause: String,
    },
}

/// The result of a run that reached a final status; `None` while it is in flight.
pub fn run_result(run: &v1::Run) -> Option<TaskResult> {
    let status = v1::RunStatus::try_from(run.status).ok()?;
    let error = match status {
        v1::RunStatus::Succeeded => return Some(TaskResult::Success(task_output(run))),
        v1::RunStatus::Failed
            if run
                .data_quality
                .as_ref()
                .is_some_and(|dq| dq.outcome == "failed") =>
        {
            TaskError::DataQualityFailed
        }
        v1::RunStatus::Failed => TaskError::RunFailed,
        v1::RunStatus::Cancelled => TaskError::Cancelled,
        v1::RunStatus::Interrupted => TaskError::Interrupted,
        v1::RunStatus::Queued | v1::RunStatus::Running | v1::RunStatus::Unspecified => {
            return None;
        }
    };
    Some(TaskResult::Failure {
        error,
        cause: truncate(format!("run {} ({}): {}", run.run_id, run.job, run.error)),
    })
}

/// The output a succeeded task hands to the next state.
pub fn task_output(run: &v1::Run) -> serde_json::Value {
    let outputs: Vec<serde_json::Value> = run
        .outputs
        .iter()
        .map(|output| {
            json!({
                "name": output.name,
                "path": output.path,
                "rows_written": output.rows_written,
                "partitions": output.partitions,
            })
        })
        .collect();
    let data_quality = run.data_quality.as_ref().map(|dq| {
        json!({
            "outcome": dq.outcome,
            "rows_checked": dq.rows_checked,
            "rows_quarantined": dq.rows_quarantined,
            "quarantined_percent": if dq.rows_checked == 0 {
                0.0
            } else {
                dq.rows_quarantined as f64 * 100.0 / dq.rows_checked as f64
            },
            "broken_rules": dq
                .rules
                .iter()
                .filter(|rule| rule.failed > 0)
                .map(|rule| json!({"name": rule.name, "action": rule.action, "failed": rule.failed}))
                .collect::<Vec<_>>(),
            "warnings": dq.warnings,
        })
    });
    json!({
        "run_id": run.run_id,
        "job": run.job,
        "status": "succeeded",
        "rows_read": run.rows_read,
        "rows_written": run.outputs.iter().filter(|o| o.name != "quarantine").map(|o| o.rows_written).sum::<u64>(),
        "rows_quarantined": run.rows_quarantined,
        "outputs": outputs,
        "data_quality": data_quality,
        "warnings": run.warnings,
    })
}

fn truncate(mut cause: String) -> String {
    const LIMIT: usize = 32_000;
    if cause.len() > LIMIT {
        let mut end = LIMIT;
        while !cause.is_char_boundary(end) {
            end -= 1;
        }
        cause.truncate(end);
    }
    cause
}

/// Sends a task's result. Errors say what Step Functions answered.
pub async fn send_result(
    client: &Client,
    token: &str,
    result: &TaskResult,
) -> Result<(), AwsCallError> {
    match result {
        TaskResult::Success(output) => client
            .send_task_success()
            .task_token(token)
            .output(output.to_string())
            .send()
            .await
            .map(|_| ())
            .map_err(|err| AwsCallError::new("SendTaskSuccess", err)),
        TaskResult::Failure { error, cause } => client
            .send_task_failure()
            .task_token(token)
            .error(error.name())
            .cause(cause)
            .send()
            .await
            .map(|_| ())
            .map_err(|err| AwsCallError::new("SendTaskFailure", err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(status: v1::RunStatus, dq_outcome: Option<&str>) -> v1::Run {
        v1::Run {
            run_id: "r-1".into(),
            job: "claims".into(),
            status: status as i32,
            error: "boom".into(),
            data_quality: dq_outcome.map(|outcome| v1::DataQuality {
                outcome: outcome.into(),
                rows_checked: 200,
                rows_quarantined: 10,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn outcomes_map_to_the_documented_error_names() {
        let name = |run: &v1::Run| match run_result(run) {
            Some(TaskResult::Failure { error, .. }) => Some(error.name()),
            _ => None,
        };
        assert_eq!(
            name(&run(v1::RunStatus::Failed, Some("failed"))),
            Some("Sluice.DataQualityFailed")
        );
        assert_eq!(
            name(&run(v1::RunStatus::Failed, Some("passed"))),
            Some("Sluice.RunFailed")
        );
        assert_eq!(
            name(&run(v1::RunStatus::Cancelled, None)),
            Some("Sluice.Cancelled")
        );
        assert_eq!(
            name(&run(v1::RunStatus::Interrupted, None)),
            Some("Sluice.Interrupted")
        );
        assert_eq!(run_result(&run(v1::RunStatus::Running, None)), None);
        let Some(TaskResult::Success(output)) =
            run_result(&run(v1::RunStatus::Succeeded, Some("passed_with_issues")))
        else {
            panic!("not a success");
        };
        assert_eq!(output["data_quality"]["quarantined_percent"], 5.0);
        assert_eq!(
            TaskError::of_rejection(&tonic::Status::invalid_argument("x")),
            TaskError::InvalidDefinition
        );
        assert_eq!(
            TaskError::of_rejection(&tonic::Status::failed_precondition("x")),
            TaskError::OutputBusy
        );
    }
}
