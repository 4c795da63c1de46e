//! `sluice.v1.JobService` over the run manager: the one place errors become statuses.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use sluice_proto::v1;
use tonic::{Request, Response, Status};

use crate::backfill::{BackfillManager, BackfillRecord, BackfillRequest, Every};
use crate::run::{RunId, RunRecord, RunStatus};
use crate::runner::{RunManager, Submission};

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct JobServiceImpl {
    manager: Arc<RunManager>,
    backfills: Arc<BackfillManager>,
    autoscaler: Arc<std::sync::OnceLock<crate::autoscale::Autoscaler>>,
}

impl JobServiceImpl {
    /// Serves `manager`, `backfills` and the autoscaler once one is started.
    pub fn new(
        manager: Arc<RunManager>,
        backfills: Arc<BackfillManager>,
        autoscaler: Arc<std::sync::OnceLock<crate::autoscale::Autoscaler>>,
    ) -> Self {
        Self {
            manager,
            backfills,
            autoscaler,
        }
    }
}

fn submission(request: v1::SubmitRunRequest) -> Submission {
    let (definition_yaml, registered_job) = match request.job {
        Some(v1::submit_run_request::Job::DefinitionYaml(yaml)) => (Some(yaml), None),
        Some(v1::submit_run_request::Job::RegisteredJob(name)) => (None, Some(name)),
        None => (None, None),
    };
    Submission {
        definition_yaml,
        registered_job,
        params: request.params.into_iter().collect(),
        origin: request.origin,
        working_dir: (!request.working_dir.is_empty()).then(|| request.working_dir.into()),
        task_token: (!request.task_token.is_empty()).then_some(request.task_token),
    }
}

/// A backfill record as the API returns it.
pub fn backfill_to_proto(record: &BackfillRecord) -> v1::Backfill {
    v1::Backfill {
        backfill_id: record.backfill_id.clone(),
        job: record.job.clone(),
        status: name_of(&record.status),
        date_param: record.date_param.clone(),
        from: record.from.to_string(),
        to: record.to.to_string(),
        every: name_of(&record.every),
        max_concurrent: record.max_concurrent as u32,
        partitions: record
            .partitions
            .iter()
            .map(|p| v1::BackfillPartition {
                value: p.value.clone(),
                status: name_of(&p.status),
                run_id: p.run_id.as_ref().map(|r| r.to_string()).unwrap_or_default(),
                error: p.error.clone().unwrap_or_default(),
            })
            .collect(),
        submitted_at: record.submitted_at.to_rfc3339(),
        finished_at: record
            .finished_at
            .map(|t| t.to_rfc3339())
            .unwrap_or_default(),
    }
}

/// The snake_case name a status enum serializes to.
fn name_of(value: &impl serde::Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A run record as the API returns it.
pub fn to_proto(run: &RunRecord) -> v1::Run {
    let time =
        |t: Option<chrono::DateTime<chrono::Utc>>| t.map(|t| t.to_rfc3339()).unwrap_or_default();
    v1::Run {
        run_id: run.run_id.to_string(),
        job: run.job.clone(),
        params: run.params.clone().into_iter().collect(),
        status: match run.status {
            RunStatus::Queued => v1::RunStatus::Queued,
            RunStatus::Running => v1::RunStatus::Running,
            RunStatus::Succeeded => v1::RunStatus::Succeeded,
            RunStatus::Failed => v1::RunStatus::Failed,
            RunStatus::Cancelled => v1::RunStatus::Cancelled,
            RunStatus::Interrupted => v1::RunStatus::Interrupted,
        } as i32,
        submitted_at: run.submitted_at.to_rfc3339(),
        started_at: time(run.started_at),
        finished_at: time(run.finished_at),
        rows_read: run.rows_read,
        outputs: run
            .outputs
            .iter()
            .map(|output| v1::OutputResult {
                name: output.name.clone(),
                path: output.location.clone(),
                rows_written: output.rows_written,
                bytes_written: output.bytes_written,
                files: output.files.clone(),
                partitions: output.partitions.clone(),
            })
            .collect(),
        error: run.error.clone().unwrap_or_default(),
        warnings: run.warnings.clone(),
        progress: Some(v1::Progress {
            stages_done: run.progress.stages_done,
            stages_total: run.progress.stages_total,
            rows_so_far: run.progress.rows_so_far,
            current_output: run.progress.current_output.clone(),
        }),
        ballista_jobs: run.ballista_jobs.clone(),
        record_json: record_json(run),
        tasks_by_executor: run.tasks_by_executor.clone().into_iter().collect(),
        rows_quarantined: run.rows_quarantined,
        data_quality: run.dq.as_ref().map(data_quality),
    }
}

fn job_to_proto(version: &crate::store::JobVersion) -> v1::RegisteredJob {
    v1::RegisteredJob {
        name: version.name.clone(),
        version: version.version,
        description: version.description.clone(),
        registered_at: version.registered_at.to_rfc3339(),
        definition_yaml: version.definition_yaml.clone(),
    }
}

/// The record as JSON, without its task token (a credential for the task).
fn record_json(run: &RunRecord) -> String {
    let mut run = run.clone();
    if run.task_token.is_some() {
        run.task_token = Some("<redacted>".into());
    }
    serde_json::to_string(&run).unwrap_or_default()
}

fn data_quality(report: &sluice_jobs::quality::DqReport) -> v1::DataQuality {
    v1::DataQuality {
        outcome: name_of(&report.outcome),
        rows_checked: report.rows_checked,
        rows_valid: report.rows_valid,
        rows_quarantined: report.rows_quarantined,
        rules: report
            .rules
            .iter()
            .map(|rule| v1::RuleResult {
                name: rule.name.clone(),
                kind: rule.kind.clone(),
                action: rule.action.as_str().to_owned(),
                checked: rule.checked,
                failed: rule.failed,
                samples: rule.samples.clone(),
                detail: rule.detail.clone().unwrap_or_default(),
            })
            .collect(),
        failures: report.failures.clone(),
        warnings: report.warnings.clone(),
    }
}

type RunEventStream = Pin<Box<dyn Stream<Item = Result<v1::RunEvent, Status>> + Send>>;

#[tonic::async_trait]
impl sluice_proto::JobService for JobServiceImpl {
    async fn submit_run(
        &self,
        request: Request<v1::SubmitRunRequest>,
    ) -> Result<Response<v1::SubmitRunResponse>, Status> {
        let submission = submission(request.into_inner());
        let run = self.manager.submit(submission).await?;
        Ok(Response::new(v1::SubmitRunResponse {
            run_id: run.run_id.to_string(),
            warnings: run.warnings,
        }))
    }

    async fn get_run(
        &self,
        request: Request<v1::GetRunRequest>,
    ) -> Result<Response<v1::Run>, Status> {
        let run_id = RunId::from(request.into_inner().run_id);
        let run = self.manager.runs().get(&run_id)?;
        Ok(Response::new(to_proto(&run)))
    }

    async fn list_runs(
        &self,
        request: Request<v1::ListRunsRequest>,
    ) -> Result<Response<v1::ListRunsResponse>, Status> {
        let limit = request.into_inner().limit as usize;
        let runs = self.manager.runs().list(limit)?;
        Ok(Response::new(v1::ListRunsResponse {
            runs: runs.iter().map(to_proto).collect(),
        }))
    }

    async fn cancel_run(
        &self,
        request: Request<v1::CancelRunRequest>,
    ) -> Result<Response<v1::Run>, Status> {
        let run_id = RunId::from(request.into_inner().run_id);
        let run = self.manager.cancel(&run_id)?;
        Ok(Response::new(to_proto(&run)))
    }

    async fn register_job(
        &self,
        request: Request<v1::RegisterJobRequest>,
    ) -> Result<Response<v1::RegisteredJob>, Status> {
        let request = request.into_inner();
        let origin = if request.origin.is_empty() {
            "<registered definition>".to_owned()
        } else {
            request.origin
        };
        let version = self
            .manager
            .register_job(&request.definition_yaml, &origin)?;
        Ok(Response::new(job_to_proto(&version)))
    }

    async fn list_jobs(
        &self,
        _request: Request<v1::ListJobsRequest>,
    ) -> Result<Response<v1::ListJobsResponse>, Status> {
        let jobs = self.manager.runs().list_jobs()?;
        Ok(Response::new(v1::ListJobsResponse {
            jobs: jobs.iter().map(job_to_proto).collect(),
        }))
    }

    async fn submit_backfill(
        &self,
        request: Request<v1::SubmitBackfillRequest>,
    ) -> Result<Response<v1::Backfill>, Status> {
        let request = request.into_inner();
        let date = |field: &str, text: &str| {
            chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
                Status::invalid_argument(format!("{field} `{text}` is not a date (YYYY-MM-DD)"))
            })
        };
        let every = match request.every.as_str() {
            "" | "day" => Every::Day,
            "month" => Every::Month,
            other => {
                return Err(Status::invalid_argument(format!(
                    "every `{other}` is not `day` or `month`"
                )));
            }
        };
        let backfill = BackfillRequest {
            submission: submission(request.run.unwrap_or_default()),
            date_param: (!request.date_param.is_empty()).then_some(request.date_param),
            from: date("from", &request.from)?,
            to: date("to", &request.to)?,
            every,
            max_concurrent: request.max_concurrent.max(1) as usize,
        };
        let record = self.backfills.submit(backfill).await?;
        Ok(Response::new(backfill_to_proto(&record)))
    }

    async fn get_backfill(
        &self,
        request: Request<v1::GetBackfillRequest>,
    ) -> Result<Response<v1::Backfill>, Status> {
        let record = self.backfills.get(&request.into_inner().backfill_id)?;
        Ok(Response::new(backfill_to_proto(&record)))
    }

    async fn list_backfills(
        &self,
        _request: Request<v1::ListBackfillsRequest>,
    ) -> Result<Response<v1::ListBackfillsResponse>, Status> {
        Ok(Response::new(v1::ListBackfillsResponse {
            backfills: self
                .backfills
                .list()
                .iter()
                .map(backfill_to_proto)
                .collect(),
        }))
    }

    async fn cancel_backfill(
        &self,
        request: Request<v1::GetBackfillRequest>,
    ) -> Result<Response<v1::Backfill>, Status> {
        let record = self.backfills.cancel(&request.into_inner().backfill_id)?;
        Ok(Response::new(backfill_to_proto(&record)))
    }

    async fn get_autoscaler(
        &self,
        _request: Request<v1::GetAutoscalerRequest>,
    ) -> Result<Response<v1::AutoscalerStatus>, Status> {
        let Some(autoscaler) = self.autoscaler.get() else {
            return Ok(Response::new(v1::AutoscalerStatus::default()));
        };
        let status = autoscaler.status();
        Ok(Response::new(v1::AutoscalerStatus {
            enabled: true,
            executors: status.executors as u32,
            ready_tasks: status.demand.ready_tasks as u64,
            running_tasks: status.demand.running_tasks as u64,
            queued_runs: status.demand.queued_runs as u64,
            scale_out_decisions: status.scale_out_total,
            scale_in_decisions: status.scale_in_total,
            decisions: status
                .decisions
                .iter()
                .map(|d| v1::ScalingDecision {
                    at: d.at.to_rfc3339(),
                    from: d.from as u32,
                    to: d.to as u32,
                    reason: d.reason.clone(),
                })
                .collect(),
        }))
    }

    async fn list_executors(
        &self,
        _request: Request<v1::ListExecutorsRequest>,
    ) -> Result<Response<v1::ListExecutorsResponse>, Status> {
        let executors = self
            .manager
            .executors()
            .await
            .into_iter()
            .map(|e| v1::Executor {
                id: e.id,
                host: e.host,
                flight_port: u32::from(e.flight_port),
                grpc_port: u32::from(e.grpc_port),
                task_slots: e.task_slots,
            })
            .collect();
        Ok(Response::new(v1::ListExecutorsResponse { executors }))
    }

    type WatchRunStream = RunEventStream;

    async fn watch_run(
        &self,
        request: Request<v1::WatchRunRequest>,
    ) -> Result<Response<Self::WatchRunStream>, Status> {
        let run_id = RunId::from(request.into_inner().run_id);
        let current = self.manager.runs().get(&run_id)?;
        let receiver = self.manager.runs().watch(&run_id);
        let runs = Arc::clone(self.manager.runs());
        let stream = async_stream(current, receiver, runs, run_id);
        Ok(Response::new(Box::pin(stream)))
    }
}

/// The run as it is now, then every change until it is final.
fn async_stream(
    current: RunRecord,
    receiver: Option<tokio::sync::watch::Receiver<RunRecord>>,
    runs: Arc<crate::runner::Runs>,
    run_id: RunId,
) -> impl Stream<Item = Result<v1::RunEvent, Status>> + Send {
    let event = |run: &RunRecord| v1::RunEvent {
        run: Some(to_proto(run)),
        message: run.status.as_str().to_owned(),
    };
    futures::stream::unfold(
        (Some(current), receiver, false),
        move |(first, receiver, done)| {
            let runs = Arc::clone(&runs);
            let run_id = run_id.clone();
            async move {
                if done {
                    return None;
                }
                if let Some(run) = first {
                    let finished = run.status.is_final();
                    return Some((Ok(event(&run)), (None, receiver, finished)));
                }
                let mut receiver = receiver?;
                let run = match receiver.changed().await {
                    Ok(()) => receiver.borrow_and_update().clone(),
                    // The sender is dropped when the run ends: read the final record.
                    Err(_) => match runs.get(&run_id) {
                        Ok(run) => run,
                        Err(err) => return Some((Err(Status::from(err)), (None, None, true))),
                    },
                };
                let finished = run.status.is_final();
                Some((Ok(event(&run)), (None, Some(receiver), finished)))
            }
        },
    )
}
