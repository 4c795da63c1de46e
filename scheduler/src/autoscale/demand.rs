//! Demand: the work there is now — tasks ready and running in Ballista, runs whose
//! jobs have not reached Ballista yet — and the executors busy with it.

use std::collections::BTreeSet;

use ballista_core::serde::protobuf::task_status;

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

/// The demand, and the executors running its tasks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DemandReading {
    /// The work there is.
    pub demand: Demand,
    /// Executors running a task now, holding shuffle output that a running job may still
    /// read (a successful task of one of its stages: scaling one in would cost the job a
    /// re-run of that stage), or holding the result of a finished job whose run has not
    /// read it yet.
    pub busy_executors: BTreeSet<String>,
}

/// Reads the demand from Ballista's running jobs and the run records.
pub async fn demand(ballista: &BallistaScheduler, manager: &RunManager) -> DemandReading {
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
        for stage in graph.stages().values() {
            for info in stage.task_infos().unwrap_or_default() {
                if let task_status::Status::Successful(done) = &info.task_status {
                    busy_executors.insert(done.executor_id.clone());
                }
            }
        }
    }
    // A finished job's result stays on its executors until the run has read it.
    busy_executors.extend(manager.executors_holding_results().await);
    demand.queued_runs = manager.runs_waiting_for_ballista();
    DemandReading {
        demand,
        busy_executors,
    }
}
