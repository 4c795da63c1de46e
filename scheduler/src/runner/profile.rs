//! Where a run's time went: operators' metrics summed into read, compute, shuffle and
//! write time for the run's [`RunProfile`].

use std::sync::Arc;

use ballista_scheduler::state::execution_stage::ExecutionStage;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::metrics::MetricsSet;

use crate::record::RunProfile;

/// What operators' metrics say: rows the source scans produced, and where task time
/// went (summed over tasks, in nanoseconds).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct PlanMetrics {
    /// Rows the source scans produced.
    pub(super) rows_read: u64,
    read_ns: u64,
    compute_ns: u64,
    shuffle_ns: u64,
    write_ns: u64,
}

impl PlanMetrics {
    /// Of a job's successful stages. Ballista keeps stage metrics in the pre-order of
    /// the operators that have metrics.
    pub(super) fn of_stages<'a>(stages: impl Iterator<Item = &'a ExecutionStage>) -> Self {
        let mut totals = Self::default();
        for stage in stages {
            let ExecutionStage::Successful(stage) = stage else {
                continue;
            };
            let mut index = 0usize;
            let mut pending: Vec<Arc<dyn ExecutionPlan>> = vec![Arc::clone(&stage.plan)];
            while let Some(plan) = pending.pop() {
                if plan.metrics().is_some() {
                    if let Some(metrics) = stage.stage_metrics.get(index) {
                        totals.add(plan.as_ref(), metrics);
                    }
                    index += 1;
                }
                for child in plan.children().into_iter().rev() {
                    pending.push(Arc::clone(child));
                }
            }
        }
        totals
    }

    /// Of a plan executed in this process.
    pub(super) fn of_plan(plan: &Arc<dyn ExecutionPlan>) -> Self {
        let mut totals = Self::default();
        let mut pending = vec![Arc::clone(plan)];
        while let Some(plan) = pending.pop() {
            if let Some(metrics) = plan.metrics() {
                totals.add(plan.as_ref(), &metrics);
            }
            pending.extend(plan.children().into_iter().cloned());
        }
        totals
    }

    fn add(&mut self, operator: &dyn ExecutionPlan, metrics: &MetricsSet) {
        let nanos = |name: &str| {
            metrics
                .sum_by_name(name)
                .map_or(0, |value| value.as_usize() as u64)
        };
        match operator.name() {
            "DataSourceExec" => {
                self.rows_read += metrics.output_rows().unwrap_or(0) as u64;
                self.read_ns += nanos("time_elapsed_opening") + nanos("time_elapsed_processing");
            }
            "ShuffleWriterExec" => self.shuffle_ns += nanos("write_time"),
            "ShuffleReaderExec" => {
                self.shuffle_ns += nanos("fetch_time") + nanos("local_read_time");
            }
            "ParquetWriteExec" => self.write_ns += nanos("write_time"),
            _ => self.compute_ns += metrics.elapsed_compute().unwrap_or(0) as u64,
        }
    }

    /// Adds these task times to a run's profile.
    pub(super) fn add_to(&self, profile: &mut RunProfile) {
        const NANOS_PER_MS: u64 = 1_000_000;
        profile.read_ms += self.read_ns / NANOS_PER_MS;
        profile.compute_ms += self.compute_ns / NANOS_PER_MS;
        profile.shuffle_ms += self.shuffle_ns / NANOS_PER_MS;
        profile.write_ms += self.write_ns / NANOS_PER_MS;
    }
}

/// Milliseconds since `start`.
pub(super) fn elapsed_ms(start: std::time::Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}
