//! Sluice's side of Ballista's scheduler: the embedded scheduler's type, the executors
//! alive now, polling a submitted job to its end (with progress and cancellation), and
//! reading what a finished job did — its statistics and the write manifests its tasks
//! returned.

use std::collections::BTreeMap;
use std::time::Duration;

use ballista_core::JobId;
use ballista_core::client::BallistaClient;
use ballista_core::serde::protobuf::{
    FailedTask, PartitionLocation, executor_status, failed_task, job_status, task_status,
};
use ballista_core::serde::scheduler::PartitionId;
use ballista_scheduler::cluster::JobState;
use ballista_scheduler::scheduler_server::SchedulerServer;
use ballista_scheduler::state::execution_stage::ExecutionStage;
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};
use futures::TryStreamExt;
use sluice_jobs::TaskReport;
use tokio::sync::watch;

use super::accounting::StallWatch;
use super::profile::PlanMetrics;
use crate::error::{Result, SchedulerError};
use crate::record::RunId;

/// How often a running job's status is read.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Ballista's scheduler, as Sluice embeds it.
pub type BallistaScheduler = SchedulerServer<LogicalPlanNode, PhysicalPlanNode>;

/// An executor as the scheduler knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutorInfo {
    /// Its id.
    pub id: String,
    /// The host it is reached at.
    pub host: String,
    /// Its Arrow Flight port.
    pub flight_port: u16,
    /// Its gRPC port.
    pub grpc_port: u16,
    /// Its task slots.
    pub task_slots: u32,
}

/// The registered executors whose last heartbeat is recent and says active.
pub(super) async fn alive_executors(
    ballista: &BallistaScheduler,
    executor_timeout: Duration,
) -> Vec<ExecutorInfo> {
    let Ok(states) = ballista.state.executor_manager.get_executors_state().await else {
        return Vec::new();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut executors: Vec<ExecutorInfo> = states
        .into_iter()
        .filter(|(meta, last_heartbeat, _)| {
            let recent =
                last_heartbeat.is_some_and(|at| now.saturating_sub(at) <= executor_timeout);
            // Pulling executors' heartbeats are their polls, which carry no status; an
            // executor that says it is fenced or terminating takes no new work.
            let active = ballista
                .state
                .executor_manager
                .get_executor_hearbeat(&meta.id)
                .is_some_and(
                    |heartbeat| match heartbeat.status.and_then(|status| status.status) {
                        None => true,
                        Some(status) => matches!(status, executor_status::Status::Active(_)),
                    },
                );
            recent && active
        })
        .map(|(meta, _, _)| ExecutorInfo {
            id: meta.id,
            host: meta.host,
            flight_port: meta.port,
            grpc_port: meta.grpc_port,
            task_slots: meta.specification.vcores,
        })
        .collect();
    executors.sort_by(|a, b| a.id.cmp(&b.id));
    executors
}

/// How far a running job has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct JobProgress {
    /// Stages finished.
    pub(super) stages_done: u32,
    /// Stages planned.
    pub(super) stages_total: u32,
    /// Rows its scans read so far.
    pub(super) rows_read: u64,
}

/// A running job as one poll sees it, from one read of its graph: how far it has come
/// and, when it has stalled, why (see [`StallWatch`]); `None` once it left the running
/// jobs.
async fn observe(
    ballista: &BallistaScheduler,
    job_id: &JobId,
    stall: &mut StallWatch,
) -> Option<(JobProgress, Option<String>)> {
    let running = ballista.state.task_manager.get_running_job_cache();
    let job = running.get(job_id)?;
    let graph = job.execution_graph.read().await;
    let progress = JobProgress {
        stages_done: graph.completed_stages() as u32,
        stages_total: graph.stage_count() as u32,
        rows_read: PlanMetrics::of_stages(graph.stages().values()).rows_read,
    };
    Some((progress, stall.check(graph.as_ref())))
}

/// Waits for a Ballista job to end, handing each change of its progress to
/// `on_progress`; cancels the job when `cancel` turns true.
pub(super) async fn wait_for_job(
    ballista: &BallistaScheduler,
    job_id: &JobId,
    output: &str,
    run_id: &RunId,
    cancel: &mut watch::Receiver<bool>,
    stall_timeout: Duration,
    mut on_progress: impl FnMut(JobProgress) -> Result<()>,
) -> Result<Vec<PartitionLocation>> {
    let mut cancelled = false;
    let mut reported = None;
    let mut stall = StallWatch::new(stall_timeout);
    let mut stalled: Option<String> = None;
    loop {
        let status = ballista
            .state
            .task_manager
            .get_job_status(job_id)
            .await
            .map_err(|err| SchedulerError::ballista("reading job status", err))?;
        let observed = observe(ballista, job_id, &mut stall).await;
        if let Some((progress, _)) = &observed
            && reported != Some(*progress)
        {
            let progress = *progress;
            // Reported only when it changes: every update is a durable commit.
            reported = Some(progress);
            on_progress(progress)?;
        }
        match status.and_then(|s| s.status) {
            Some(job_status::Status::Successful(success)) => {
                if cancelled {
                    return Err(SchedulerError::Cancelled);
                }
                return Ok(success.partition_location);
            }
            Some(job_status::Status::Failed(failed)) => {
                if let Some(message) = stalled {
                    return Err(SchedulerError::JobFailed {
                        output: output.to_owned(),
                        message,
                    });
                }
                if cancelled {
                    return Err(SchedulerError::Cancelled);
                }
                return Err(SchedulerError::JobFailed {
                    output: output.to_owned(),
                    message: readable_failure(&failed.error),
                });
            }
            _ => {}
        }
        if let Some(message) = &stalled
            && observed.is_none()
        {
            // Cancelled and gone from the running jobs: fail with the stall's reason.
            return Err(SchedulerError::JobFailed {
                output: output.to_owned(),
                message: message.clone(),
            });
        }
        if stalled.is_none()
            && let Some((_, Some(message))) = observed
        {
            tracing::error!(%run_id, %job_id, "{message}");
            stalled = Some(message);
            ballista
                .cancel_job(job_id.clone())
                .await
                .map_err(|err| SchedulerError::ballista("cancelling a stalled job", err))?;
        }
        if !cancelled && *cancel.borrow() {
            cancelled = true;
            tracing::info!(%run_id, %job_id, "cancelling ballista job");
            ballista
                .cancel_job(job_id.clone())
                .await
                .map_err(|err| SchedulerError::ballista("cancelling job", err))?;
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
            _ = cancel.changed(), if !cancelled => {}
        }
    }
}

/// What a finished Ballista job did, from its execution graph.
#[derive(Debug, Default)]
pub(super) struct JobStatistics {
    /// A stage ran more than once (a lost executor's work was redone).
    pub(super) recovered: bool,
    /// Stages the job planned.
    pub(super) stages: u32,
    /// What its operators' metrics say.
    pub(super) metrics: PlanMetrics,
    /// When its first task started, in ms since the epoch.
    pub(super) first_task_start: Option<i64>,
    /// Successful tasks per executor.
    pub(super) tasks_by_executor: BTreeMap<String, u64>,
    /// What the finished graph cannot account for (see `accounting::unaccounted`).
    pub(super) unaccounted: Vec<String>,
}

/// Successful tasks per executor over a job's stages.
fn tasks_by_executor<'a>(
    stages: impl Iterator<Item = &'a ExecutionStage>,
) -> BTreeMap<String, u64> {
    let mut tasks = BTreeMap::new();
    for stage in stages {
        let ExecutionStage::Successful(stage) = stage else {
            continue;
        };
        for info in &stage.task_infos {
            if let task_status::Status::Successful(success) = &info.task_status {
                *tasks.entry(success.executor_id.clone()).or_default() += 1;
            }
        }
    }
    tasks
}

/// What a finished job did, from the metrics of its stages. The finished graph reaches
/// the job state just after the status does.
pub(super) async fn job_statistics(job_state: &dyn JobState, job_id: &JobId) -> JobStatistics {
    // The status turns successful before the event loop saves the finished graph; on a
    // busy scheduler that takes a while, so wait up to 5 s for it.
    for _ in 0..250 {
        if let Ok(Some(graph)) = job_state.get_execution_graph(job_id).await {
            return JobStatistics {
                recovered: graph.stages().values().any(redone),
                stages: graph.stage_count() as u32,
                metrics: PlanMetrics::of_stages(graph.stages().values()),
                first_task_start: first_task_start(graph.stages().values()),
                tasks_by_executor: tasks_by_executor(graph.stages().values()),
                unaccounted: super::accounting::unaccounted(graph.as_ref()),
            };
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    JobStatistics {
        unaccounted: vec!["the finished job's stage graph could not be read".to_owned()],
        ..JobStatistics::default()
    }
}

/// Whether a stage's work was redone after a loss: a later attempt of the stage, or a
/// task whose result was lost (Ballista resets those without a new attempt).
fn redone(stage: &ExecutionStage) -> bool {
    let (attempt, tasks) = match stage {
        ExecutionStage::Successful(s) => (s.stage_attempt_num, s.task_infos.as_slice()),
        ExecutionStage::Running(s) => (s.stage_attempt_num, s.task_infos.as_slice()),
        _ => return false,
    };
    attempt > 0
        || tasks.iter().any(|info| {
            matches!(
                &info.task_status,
                task_status::Status::Failed(FailedTask {
                    failed_reason: Some(failed_task::FailedReason::ResultLost(_)),
                    ..
                })
            )
        })
}

/// When the first task of a job's stages started executing, in ms since the epoch.
fn first_task_start<'a>(stages: impl Iterator<Item = &'a ExecutionStage>) -> Option<i64> {
    stages
        .filter_map(|stage| match stage {
            ExecutionStage::Successful(stage) => stage
                .task_infos
                .iter()
                .map(|info| info.start_exec_time)
                .filter(|start| *start > 0)
                .min(),
            _ => None,
        })
        .min()
        .and_then(|start| i64::try_from(start).ok())
}

/// Reads the manifests the write tasks returned, from the executors that hold them.
/// One result location per write partition: the last one recorded. When the final
/// stage runs again after a lost executor, Ballista appends the new attempt's locations
/// after those of the earlier attempt's tasks that had succeeded; each is a whole
/// manifest of its partition, and exactly one of them is committed (the other
/// attempt's files stay in staging and are deleted with it).
pub(super) fn one_per_partition(locations: Vec<PartitionLocation>) -> Vec<PartitionLocation> {
    let mut by_partition: BTreeMap<u32, PartitionLocation> = BTreeMap::new();
    for location in locations {
        let partition = location
            .partition_id
            .as_ref()
            .map_or(u32::MAX, |p| p.partition_id);
        by_partition.insert(partition, location);
    }
    by_partition.into_values().collect()
}

/// Ballista's text of a failed job, readable: its "Job failed due to …" phrasing
/// shortened, and DataFusion's debug wrappers around a task's error
/// (`DataFusionError(Shared(External(…Execution("…"))))`) reduced to the message
/// inside, unescaped.
pub(super) fn readable_failure(text: &str) -> String {
    let text = text
        .replace("Job failed due to stage ", "stage ")
        .replace("Task failed due to runtime execution error: ", "");
    let Some(start) = text.find("DataFusionError(") else {
        return text;
    };
    let rest = &text[start..];
    // Wrappers carry no text of their own: the first string literal is the message.
    let Some(open) = rest.find("(\"") else {
        return text;
    };
    let mut message = String::new();
    let mut chars = rest[open + 2..].chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('n') => message.push('\n'),
                Some('t') => message.push('\t'),
                Some(other) => message.push(other),
                None => break,
            },
            '"' => break,
            c => message.push(c),
        }
    }
    format!("{}{message}", &text[..start])
}

pub(super) async fn fetch_manifests(
    locations: &[PartitionLocation],
    output: &str,
) -> Result<Vec<TaskReport>> {
    let fail = |message: String| SchedulerError::JobFailed {
        output: output.to_owned(),
        message,
    };
    let mut files = Vec::new();
    for location in locations {
        let (Some(executor), Some(partition)) = (&location.executor_meta, &location.partition_id)
        else {
            return Err(fail("a write task reported no location".into()));
        };
        let mut client = BallistaClient::try_new(
            &executor.host,
            executor.port as u16,
            16 * 1024 * 1024,
            false,
            None,
            3,
            200,
            0,
            0,
        )
        .await
        .map_err(|err| fail(format!("connecting to executor {}: {err}", executor.id)))?;
        let partition_id = PartitionId {
            job_id: JobId::new(partition.job_id.clone()),
            stage_id: partition.stage_id as usize,
            partition_id: partition.partition_id as usize,
        };
        let stream = client
            .fetch_partition(
                &executor.id,
                &partition_id,
                location.file_id,
                location.layout(),
                true,
            )
            .await
            .map_err(|err| {
                fail(format!(
                    "reading a write manifest from {}: {err}",
                    executor.id
                ))
            })?;
        let batches: Vec<_> = stream.try_collect().await.map_err(|err| {
            fail(format!(
                "reading a write manifest from {}: {err}",
                executor.id
            ))
        })?;
        for batch in &batches {
            files.extend(TaskReport::from_manifest(batch).map_err(|err| fail(err.to_string()))?);
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::readable_failure;

    #[test]
    fn a_tasks_error_reads_without_datafusions_wrappers() {
        let ballista = r#"Job failed due to stage 1 failed: Task failed due to runtime execution error: DataFusionError(Shared(External(DataFusionError(Execution("landing/a.csv: line 3: malformed row (2 fields where the header has 3); the source's mode is FAILFAST")))))"#;
        assert_eq!(
            readable_failure(ballista),
            "stage 1 failed: landing/a.csv: line 3: malformed row (2 fields where the header \
             has 3); the source's mode is FAILFAST"
        );
        let quoted = r#"Job failed due to stage 2 failed: Task failed due to runtime execution error: DataFusionError(ArrowError(CastError("Cannot cast string \"N/A\" to Int32"), None))"#;
        assert_eq!(
            readable_failure(quoted),
            "stage 2 failed: Cannot cast string \"N/A\" to Int32"
        );
        assert_eq!(readable_failure("executor lost"), "executor lost");
    }
}
