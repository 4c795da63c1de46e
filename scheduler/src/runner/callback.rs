//! The Step Functions callback: a run submitted with a task token reports its end to
//! Step Functions (SendTaskSuccess or SendTaskFailure), once.

use super::Runs;
use crate::record::{RunId, to_proto};
use crate::sfn;

/// Sends a run's result to its task token and records that it was sent. A failure is
/// logged and left for [`super::RunManager::report_pending_tasks`] at the next start.
pub(super) async fn report_task(runs: &Runs, client: &aws_sdk_sfn::Client, run_id: &RunId) {
    let Ok(run) = runs.get(run_id) else {
        return;
    };
    let (Some(token), false) = (&run.task_token, run.task_reported) else {
        return;
    };
    let Some(result) = sfn::run_result(&to_proto(&run)) else {
        return;
    };
    match sfn::send_result(client, token, &result).await {
        Ok(()) => {
            tracing::info!(%run_id, "run result sent to Step Functions");
            let _ = runs.update(run_id, |run| run.task_reported = true);
        }
        Err(err) => {
            tracing::warn!(%run_id, "run result not sent to Step Functions: {err}");
        }
    }
}
