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
//! Every decision is logged with its reason and kept in [`Autoscaler::status`]. The
//! loop and the limits are here; `autoscale/demand.rs` reads the demand,
//! `autoscale/local.rs` and `autoscale/cloud.rs` are the providers. KEDA's endpoint is
//! the API's (`api/keda.rs`).

mod cloud;
mod demand;
mod local;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;

use self::cloud::Cloud;
pub use self::demand::{Demand, DemandReading, TASKS_METRIC, demand};
use self::local::LocalExecutors;
pub use crate::aws::AwsApi;
use crate::runner::{BallistaScheduler, RunManager};

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

    /// Starts the loop as a task of `tasks`, whose owner aborts or awaits it; it runs
    /// until `stop` turns true, then stops its executors. Aborted, it stops them too:
    /// the executor processes are killed when their handles drop.
    pub fn start(
        settings: AutoscalerSettings,
        ballista: BallistaScheduler,
        manager: Arc<RunManager>,
        stop: watch::Receiver<bool>,
        tasks: &mut JoinSet<()>,
    ) -> Self {
        let status = Arc::new(Mutex::new(AutoscalerStatus::default()));
        let scaler = Self {
            status: Arc::clone(&status),
        };
        tasks.spawn(run(settings, ballista, manager, status, stop));
        scaler
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
        let DemandReading {
            demand,
            busy_executors: busy,
        } = demand(&ballista, &manager).await;
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
