//! `sluice.v1.JobService` over the run manager, the backfill manager and the
//! autoscaler: requests become submissions, records become messages (through
//! [`crate::record`]'s conversions), and errors become statuses here.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use sluice_proto::v1;
use tonic::{Request, Response, Status};

use crate::autoscale::Autoscaler;
use crate::backfill::{BackfillManager, BackfillRequest};
use crate::record::{Every, RunId, RunRecord, backfill_to_proto, job_to_proto, to_proto};
use crate::runner::{RunManager, Runs, Submission};

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct JobServiceImpl {
    manager: Arc<RunManager>,
    backfills: Arc<BackfillManager>,
    autoscaler: Arc<std::sync::OnceLock<Autoscaler>>,
}

impl JobServiceImpl {
    /// Serves `manager`, `backfills` and the autoscaler once one is started.
    pub fn new(
        manager: Arc<RunManager>,
        backfills: Arc<BackfillManager>,
        autoscaler: Arc<std::sync::OnceLock<Autoscaler>>,
    ) -> Self {
        Self {
            manager,
            backfills,
            autoscaler,
        }
    }
}

fn submission(
    request: v1::SubmitRunRequest,
    submitter: Option<crate::auth::Principal>,
) -> Submission {
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
        idempotency_key: (!request.idempotency_key.is_empty()).then_some(request.idempotency_key),
        submitter,
    }
}

type RunEventStream = Pin<Box<dyn Stream<Item = Result<v1::RunEvent, Status>> + Send>>;

#[tonic::async_trait]
impl sluice_proto::JobService for JobServiceImpl {
    async fn submit_run(
        &self,
        request: Request<v1::SubmitRunRequest>,
    ) -> Result<Response<v1::SubmitRunResponse>, Status> {
        let submitter = request
            .extensions()
            .get::<crate::auth::Principal>()
            .cloned();
        let submission = submission(request.into_inner(), submitter);
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
        let request = request.into_inner();
        let limit = request.limit as usize;
        let before = (!request.before.is_empty()).then(|| RunId::from(request.before));
        let runs = self.manager.runs().list_before(limit, before.as_ref())?;
        let next_before = match runs.last() {
            Some(last) if limit > 0 && runs.len() == limit => last.run_id.to_string(),
            _ => String::new(),
        };
        Ok(Response::new(v1::ListRunsResponse {
            runs: runs.iter().map(to_proto).collect(),
            next_before,
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
        let submitter = request
            .extensions()
            .get::<crate::auth::Principal>()
            .cloned();
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
            submission: submission(request.run.unwrap_or_default(), submitter),
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

    async fn list_audit(
        &self,
        request: Request<v1::ListAuditRequest>,
    ) -> Result<Response<v1::ListAuditResponse>, Status> {
        let limit = match request.into_inner().limit {
            0 => 100,
            limit => limit as usize,
        };
        let events = self.manager.runs().audit(limit)?;
        Ok(Response::new(v1::ListAuditResponse {
            events: events
                .into_iter()
                .map(|event| v1::AuditEvent {
                    at: event.at.to_rfc3339(),
                    principal: event.principal,
                    action: event.action,
                    outcome: event.outcome,
                    reason: event.reason,
                })
                .collect(),
        }))
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

    type BackupStoreStream = Pin<Box<dyn Stream<Item = Result<v1::StoreChunk, Status>> + Send>>;

    async fn backup_store(
        &self,
        _request: Request<v1::BackupStoreRequest>,
    ) -> Result<Response<Self::BackupStoreStream>, Status> {
        let runs = std::sync::Arc::clone(self.manager.runs());
        let snapshot = tokio::task::spawn_blocking(move || runs.store.snapshot())
            .await
            .map_err(|err| Status::internal(format!("taking the snapshot: {err}")))??;
        tracing::info!(bytes = snapshot.len(), "run store snapshot sent");
        let chunks: Vec<Result<v1::StoreChunk, Status>> = snapshot
            .chunks(1 << 20)
            .map(|chunk| {
                Ok(v1::StoreChunk {
                    data: chunk.to_vec(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
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
    runs: Arc<Runs>,
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
