//! Executor scaling: how many executors the queued and running work needs, decided in
//! the scheduler and carried out by a provider — or left to KEDA, which asks the
//! scheduler's external-scaler endpoint.
//!
//! ```text
//! demand (tasks ready + running, runs queued) ─► desired = ceil(tasks / slots),
//!     clamped to [min, max], at most `step` more per decision
//!   ─► scale out at once; scale in after `cooldown` of lower demand, idle executors only
//!   ─► provider: local processes | (KEDA: IsActive false when idle, metric = tasks)
//! ```
//!
//! Every decision is logged with its reason and kept in [`Autoscaler::status`].

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::Stream;
use sluice_proto::externalscaler::{
    GetMetricSpecResponse, GetMetricsRequest, GetMetricsResponse, IsActiveResponse, MetricSpec,
    MetricValue, ScaledObjectRef, external_scaler_server::ExternalScaler,
};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

pub use crate::aws::AwsApi;
use crate::runner::{BallistaScheduler, RunManager};

/// The metric KEDA scales the executors on: tasks ready or running.
pub const TASKS_METRIC: &str = "sluice_pending_tasks";

/// The work there is now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Demand {
    /// Tasks ready to run.
    pub ready_tasks: usize,
    /// Tasks running.
    pub running_tasks: usize,
    /// Runs accepted whose jobs have not reached Ballista yet.
    pub queued_runs: usize,
}

impl Demand {
    /// True when anything waits or runs.
    pub fn is_active(&self) -> bool {
        self.ready_tasks + self.running_tasks + self.queued_runs > 0
    }

    /// Task slots the work could use now (a queued run needs at least one).
    pub fn tasks(&self) -> usize {
        self.ready_tasks + self.running_tasks + self.queued_runs
    }
}

/// Reads the demand from Ballista's running jobs and the run records.
pub async fn demand(
    ballista: &BallistaScheduler,
    manager: &RunManager,
) -> (Demand, BTreeSet<String>) {
    let mut demand = Demand::default();
    let mut busy_executors = BTreeSet::new();
    let cache = ballista.state.task_manager.get_running_job_cache();
    for (_, job) in cache.iter() {
        let graph = job.execution_graph.read().await;
        demand.ready_tasks += graph.available_tasks();
        for task in graph.running_tasks() {
            demand.running_tasks += 1;
            busy_executors.insert(task.executor_id.clone());
        }
    }
    demand.queued_runs = manager.runs_waiting_for_ballista();
    (demand, busy_executors)
}

/// Where executors come from.
#[derive(Debug, Clone)]
pub enum ProviderSettings {
    /// `sluice executor` processes started on this machine.
    Local {
        /// The `sluice` binary.
        binary: PathBuf,
        /// The scheduler address executors register with (`host:port`).
        scheduler: String,
        /// Task slots of each executor.
        vcores: usize,
        /// Where their logs go.
        log_dir: PathBuf,
    },
    /// An ECS service of executors: its desiredCount (UpdateService).
    Ecs {
        /// The ECS cluster.
        cluster: String,
        /// The executor service.
        service: String,
        /// Where the ECS API is.
        api: AwsApi,
    },
    /// An EMR instance group whose nodes run executors: its instance count
    /// (ModifyInstanceGroups).
    Emr {
        /// The EMR cluster (`j-…`).
        cluster_id: String,
        /// The instance group (`ig-…`).
        instance_group_id: String,
        /// Where the EMR API is.
        api: AwsApi,
    },
    /// Decisions only (KEDA or a person acts on them through the metric).
    External,
}

/// A cloud provider: the executor count is a number it holds.
enum Cloud {
    Ecs {
        client: aws_sdk_ecs::Client,
        cluster: String,
        service: String,
    },
    Emr {
        client: aws_sdk_emr::Client,
        cluster_id: String,
        instance_group_id: String,
    },
}

impl Cloud {
    async fn connect(provider: &ProviderSettings) -> Option<Self> {
        match provider {
            ProviderSettings::Ecs {
                cluster,
                service,
                api,
            } => Some(Cloud::Ecs {
                client: aws_sdk_ecs::Client::new(&api.config().await),
                cluster: cluster.clone(),
                service: service.clone(),
            }),
            ProviderSettings::Emr {
                cluster_id,
                instance_group_id,
                api,
            } => Some(Cloud::Emr {
                client: aws_sdk_emr::Client::new(&api.config().await),
                cluster_id: cluster_id.clone(),
                instance_group_id: instance_group_id.clone(),
            }),
            ProviderSettings::Local { .. } | ProviderSettings::External => None,
        }
    }

    /// The count the provider holds now.
    async fn current(&self) -> Result<usize, String> {
        match self {
            Cloud::Ecs {
                client,
                cluster,
                service,
            } => {
                let described = client
                    .describe_services()
                    .cluster(cluster)
                    .services(service)
                    .send()
                    .await
                    .map_err(|e| {
                        format!(
                            "DescribeServices: {}",
                            aws_sdk_ecs::error::DisplayErrorContext(e)
                        )
                    })?;
                let desired = described
                    .services()
                    .first()
                    .map(|s| s.desired_count())
                    .ok_or_else(|| format!("ECS service {service} not found in {cluster}"))?;
                Ok(desired.max(0) as usize)
            }
            Cloud::Emr {
                client,
                cluster_id,
                instance_group_id,
            } => {
                let groups = client
                    .list_instance_groups()
                    .cluster_id(cluster_id)
                    .send()
                    .await
                    .map_err(|e| {
                        format!(
                            "ListInstanceGroups: {}",
                            aws_sdk_emr::error::DisplayErrorContext(e)
                        )
                    })?;
                let group = groups
                    .instance_groups()
                    .iter()
                    .find(|g| g.id() == Some(instance_group_id.as_str()))
                    .ok_or_else(|| {
                        format!("instance group {instance_group_id} not in {cluster_id}")
                    })?;
                Ok(group.requested_instance_count().unwrap_or(0).max(0) as usize)
            }
        }
    }

    /// Sets the count.
    async fn set(&self, count: usize) -> Result<(), String> {
        match self {
            Cloud::Ecs {
                client,
                cluster,
                service,
            } => client
                .update_service()
                .cluster(cluster)
                .service(service)
                .desired_count(count as i32)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| {
                    format!(
                        "UpdateService: {}",
                        aws_sdk_ecs::error::DisplayErrorContext(e)
                    )
                }),
            Cloud::Emr {
                client,
                cluster_id,
                instance_group_id,
            } => client
                .modify_instance_groups()
                .cluster_id(cluster_id)
                .instance_groups(
                    aws_sdk_emr::types::InstanceGroupModifyConfig::builder()
                        .instance_group_id(instance_group_id)
                        .instance_count(count as i32)
                        .build(),
                )
                .send()
                .await
                .map(|_| ())
                .map_err(|e| {
                    format!(
                        "ModifyInstanceGroups: {}",
                        aws_sdk_emr::error::DisplayErrorContext(e)
                    )
                }),
        }
    }
}

/// Scaling limits.
#[derive(Debug, Clone)]
pub struct AutoscalerSettings {
    /// The provider.
    pub provider: ProviderSettings,
    /// Executors kept when idle (0 scales to zero).
    pub min: usize,
    /// Executors at most.
    pub max: usize,
    /// Executors added per decision at most.
    pub step: usize,
    /// Demand must stay lower this long before executors are removed.
    pub cooldown: Duration,
    /// Task slots per executor, to turn tasks into executors.
    pub slots_per_executor: usize,
    /// How often demand is read.
    pub interval: Duration,
}

/// One scaling decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// When.
    pub at: chrono::DateTime<chrono::Utc>,
    /// Executors before.
    pub from: usize,
    /// Executors wanted.
    pub to: usize,
    /// Why.
    pub reason: String,
}

/// What the autoscaler knows now.
#[derive(Debug, Clone, Default)]
pub struct AutoscalerStatus {
    /// The last demand read.
    pub demand: Demand,
    /// Executors it runs (local provider) or wants (external).
    pub executors: usize,
    /// The latest decisions, newest last (at most 100).
    pub decisions: Vec<Decision>,
    /// Decisions since start that added executors.
    pub scale_out_total: u64,
    /// Decisions since start that removed executors.
    pub scale_in_total: u64,
}

/// The scaler loop and the state the KEDA endpoint reads.
#[derive(Debug, Clone)]
pub struct Autoscaler {
    status: Arc<Mutex<AutoscalerStatus>>,
}

impl Autoscaler {
    /// What it knows now.
    pub fn status(&self) -> AutoscalerStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Starts the loop; it runs until `stop` turns true, then stops its executors.
    pub fn start(
        settings: AutoscalerSettings,
        ballista: BallistaScheduler,
        manager: Arc<RunManager>,
        stop: watch::Receiver<bool>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let status = Arc::new(Mutex::new(AutoscalerStatus::default()));
        let scaler = Self {
            status: Arc::clone(&status),
        };
        let task = tokio::spawn(run(settings, ballista, manager, status, stop));
        (scaler, task)
    }
}

/// The executors a demand calls for, before step and cooldown.
pub fn wanted(demand: &Demand, settings: &AutoscalerSettings) -> usize {
    demand
        .tasks()
        .div_ceil(settings.slots_per_executor.max(1))
        .clamp(settings.min, settings.max.max(settings.min))
}

async fn run(
    settings: AutoscalerSettings,
    ballista: BallistaScheduler,
    manager: Arc<RunManager>,
    status: Arc<Mutex<AutoscalerStatus>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut local = LocalExecutors::default();
    let mut lower_since: Option<Instant> = None;
    let cloud = Cloud::connect(&settings.provider).await;
    let mut current = match &cloud {
        Some(cloud) => match cloud.current().await {
            Ok(count) => count,
            Err(err) => {
                tracing::warn!("autoscaler: reading the executor count failed: {err}");
                settings.min
            }
        },
        None => settings.min,
    };
    if let Some(cloud) = &cloud
        && current < settings.min
        && cloud.set(settings.min).await.is_ok()
    {
        current = settings.min;
    }
    if let ProviderSettings::Local { .. } = &settings.provider {
        for _ in 0..settings.min {
            local.start(&settings);
        }
        current = local.count();
    }
    loop {
        let (demand, busy) = demand(&ballista, &manager).await;
        let wanted = wanted(&demand, &settings);
        let mut decision = None;
        if wanted > current {
            lower_since = None;
            let to = wanted.min(current + settings.step.max(1));
            decision = Some((
                to,
                format!(
                    "{} tasks ready, {} running, {} runs queued need {wanted} executors of {} slots",
                    demand.ready_tasks,
                    demand.running_tasks,
                    demand.queued_runs,
                    settings.slots_per_executor
                ),
            ));
        } else if wanted < current {
            let since = *lower_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= settings.cooldown {
                decision = Some((
                    wanted,
                    format!(
                        "demand ({} tasks) has needed only {wanted} executors for {:?}",
                        demand.tasks(),
                        settings.cooldown
                    ),
                ));
            }
        } else {
            lower_since = None;
        }
        if let Some((to, reason)) = decision {
            let to = match &settings.provider {
                ProviderSettings::Local { .. } => {
                    local.reap();
                    while local.count() < to {
                        local.start(&settings);
                    }
                    // Only idle executors stop; a busy one is kept until it is idle.
                    if local.count() > to {
                        local.stop_idle(local.count() - to, &busy, &ballista).await;
                    }
                    local.count()
                }
                ProviderSettings::External => to,
                ProviderSettings::Ecs { .. } | ProviderSettings::Emr { .. } => {
                    // A service or instance group picks which node goes: scale in only
                    // when no task runs anywhere, so none is lost.
                    if to < current && !busy.is_empty() {
                        current
                    } else if let Some(cloud) = &cloud {
                        match cloud.set(to).await {
                            Ok(()) => to,
                            Err(err) => {
                                tracing::warn!("autoscaler: setting {to} executors failed: {err}");
                                current
                            }
                        }
                    } else {
                        current
                    }
                }
            };
            if to != current {
                tracing::info!(from = current, to, reason = %reason, "autoscaler decision");
                if let Ok(mut status) = status.lock() {
                    if to > current {
                        status.scale_out_total += 1;
                    } else {
                        status.scale_in_total += 1;
                    }
                    status.decisions.push(Decision {
                        at: chrono::Utc::now(),
                        from: current,
                        to,
                        reason,
                    });
                    let excess = status.decisions.len().saturating_sub(100);
                    status.decisions.drain(..excess);
                }
                current = to;
                lower_since = None;
            }
        }
        if let Ok(mut status) = status.lock() {
            status.demand = demand;
            status.executors = current;
        }
        tokio::select! {
            _ = tokio::time::sleep(settings.interval) => {}
            _ = stop.changed() => {
                if *stop.borrow() {
                    break;
                }
            }
        }
    }
    local.stop_all();
}

/// Executor processes the local provider started.
#[derive(Default)]
struct LocalExecutors {
    children: Vec<(String, tokio::process::Child)>,
    started: usize,
}

impl LocalExecutors {
    fn count(&self) -> usize {
        self.children.len()
    }

    fn reap(&mut self) {
        self.children
            .retain_mut(|(_, child)| matches!(child.try_wait(), Ok(None)));
    }

    fn start(&mut self, settings: &AutoscalerSettings) {
        let ProviderSettings::Local {
            binary,
            scheduler,
            vcores,
            log_dir,
        } = &settings.provider
        else {
            return;
        };
        self.started += 1;
        let id = format!("local-{}-{}", std::process::id(), self.started);
        let port = |_: ()| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .unwrap_or(0)
        };
        let log = std::fs::create_dir_all(log_dir)
            .and_then(|()| std::fs::File::create(log_dir.join(format!("{id}.log"))));
        let mut command = tokio::process::Command::new(binary);
        command
            .args(["executor", "--scheduler", scheduler])
            .args(["--port", &port(()).to_string()])
            .args(["--grpc-port", &port(()).to_string()])
            .args(["--vcores", &vcores.to_string()])
            .args(["--executor-id", &id])
            .stdout(Stdio::null())
            .kill_on_drop(true);
        match log {
            Ok(file) => {
                command.stderr(file);
            }
            Err(_) => {
                command.stderr(Stdio::null());
            }
        }
        match command.spawn() {
            Ok(child) => {
                tracing::info!(executor = %id, "local executor started");
                self.children.push((id, child));
            }
            Err(err) => tracing::warn!("starting a local executor failed: {err}"),
        }
    }

    /// Stops up to `count` executors that run no task, after taking them out of
    /// Ballista's view so no new task lands on them.
    async fn stop_idle(
        &mut self,
        count: usize,
        busy: &BTreeSet<String>,
        ballista: &BallistaScheduler,
    ) {
        let mut stopped = 0;
        let mut kept = Vec::new();
        for (id, mut child) in std::mem::take(&mut self.children) {
            if stopped < count && !busy.contains(&id) {
                let _ = ballista
                    .state
                    .executor_manager
                    .remove_executor(&id, Some("scaled in by the autoscaler".into()))
                    .await;
                let _ = child.start_kill();
                let _ = child.wait().await;
                tracing::info!(executor = %id, "local executor stopped (idle)");
                stopped += 1;
            } else {
                kept.push((id, child));
            }
        }
        self.children = kept;
    }

    fn stop_all(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.start_kill();
        }
        self.children.clear();
    }
}

/// KEDA's external scaler on the scheduler: active only when there is work (so KEDA
/// scales the executor Deployment to zero when idle), with the tasks ready or running
/// as the metric.
#[derive(Clone)]
pub struct KedaScaler {
    ballista: BallistaScheduler,
    manager: Arc<RunManager>,
    /// Tasks one executor takes (the HPA target per replica).
    pub slots_per_executor: usize,
}

impl std::fmt::Debug for KedaScaler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KedaScaler").finish_non_exhaustive()
    }
}

impl KedaScaler {
    /// A scaler reading the scheduler's queue.
    pub fn new(
        ballista: BallistaScheduler,
        manager: Arc<RunManager>,
        slots_per_executor: usize,
    ) -> Self {
        Self {
            ballista,
            manager,
            slots_per_executor,
        }
    }

    async fn demand(&self) -> Demand {
        demand(&self.ballista, &self.manager).await.0
    }
}

type ActiveStream = Pin<Box<dyn Stream<Item = Result<IsActiveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalScaler for KedaScaler {
    async fn is_active(
        &self,
        _request: Request<ScaledObjectRef>,
    ) -> Result<Response<IsActiveResponse>, Status> {
        Ok(Response::new(IsActiveResponse {
            result: self.demand().await.is_active(),
        }))
    }

    type StreamIsActiveStream = ActiveStream;

    async fn stream_is_active(
        &self,
        _request: Request<ScaledObjectRef>,
    ) -> Result<Response<Self::StreamIsActiveStream>, Status> {
        let scaler = self.clone();
        let stream = futures::stream::unfold((scaler, None), |(scaler, last)| async move {
            loop {
                let active = scaler.demand().await.is_active();
                if last != Some(active) {
                    return Some((
                        Ok(IsActiveResponse { result: active }),
                        (scaler, Some(active)),
                    ));
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_metric_spec(
        &self,
        _request: Request<ScaledObjectRef>,
    ) -> Result<Response<GetMetricSpecResponse>, Status> {
        Ok(Response::new(GetMetricSpecResponse {
            metric_specs: vec![MetricSpec {
                metric_name: TASKS_METRIC.into(),
                target_size: self.slots_per_executor as i64,
                target_size_float: self.slots_per_executor as f64,
            }],
        }))
    }

    async fn get_metrics(
        &self,
        _request: Request<GetMetricsRequest>,
    ) -> Result<Response<GetMetricsResponse>, Status> {
        let tasks = self.demand().await.tasks();
        Ok(Response::new(GetMetricsResponse {
            metric_values: vec![MetricValue {
                metric_name: TASKS_METRIC.into(),
                metric_value: tasks as i64,
                metric_value_float: tasks as f64,
            }],
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demand_becomes_executors_within_limits() {
        let settings = AutoscalerSettings {
            provider: ProviderSettings::External,
            min: 0,
            max: 4,
            step: 2,
            cooldown: Duration::from_secs(5),
            slots_per_executor: 2,
            interval: Duration::from_millis(500),
        };
        let demand = |ready, running, queued| Demand {
            ready_tasks: ready,
            running_tasks: running,
            queued_runs: queued,
        };
        assert_eq!(wanted(&demand(0, 0, 0), &settings), 0);
        assert_eq!(wanted(&demand(0, 0, 1), &settings), 1);
        assert_eq!(wanted(&demand(3, 2, 0), &settings), 3);
        assert_eq!(wanted(&demand(40, 0, 0), &settings), 4);
        assert!(!demand(0, 0, 0).is_active());
    }
}
