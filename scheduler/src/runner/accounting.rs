//! Every task of every stage accounted for: what makes a distributed run give the
//! single-process answer or fail loudly, never commit a partial result and never wait
//! forever.
//!
//! - Before a plan is submitted, leaves that Ballista cannot account for per task are
//!   replaced ([`with_accountable_leaves`]): Ballista hands each task a slice of a stage's
//!   partitions and swaps a `PlaceholderRowExec` / `EmptyExec` leaf it gives no partition
//!   for a memory scan. Those two operators report no metrics and the memory scan does,
//!   so the tasks of one stage reported different numbers of metric sets; Ballista then
//!   refused the status of whichever task disagreed with the first — after marking it
//!   successful but before recording its output. A query such as
//!   `… INTERSECT … UNION SELECT 42` then hung or lost the constant row. A memory scan of
//!   the same rows is accounted for the same way in every task.
//! - While a job runs, [`StallWatch`] fails it when no task runs, starts or finishes
//!   for the run's stall timeout, or at once when a stage has every partition done but Ballista
//!   never completes it (a task status it could not apply), naming the stage and the
//!   executors it waited on.
//! - When a job ends, [`unaccounted`] checks its graph: every stage successful, every
//!   partition's latest attempt successful, and every output that attempt reported
//!   delivered to the stages that read it (or to the job's result); and every location
//!   a stage read, and every location of the result, from the latest attempt of its
//!   partitions, once. That last check is Sluice's OutputCommitCoordinator: a write task
//!   that ran twice (its executor lost after it wrote) staged each attempt's files
//!   under their own names, and only the manifest of the attempt the result holds is
//!   committed. A job that recovered from a lost executor and passes is committed as it
//!   ran; anything missing or read twice fails the run instead of being committed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ballista_core::serde::protobuf::{SuccessfulTask, task_status};
use ballista_scheduler::state::execution_graph::ExecutionGraph;
use ballista_scheduler::state::execution_stage::{ExecutionStage, TaskInfo};
use datafusion::arrow::array::{ArrayRef, NullArray, RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::Result as DataFusionResult;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::placeholder_row::PlaceholderRowExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};

/// How long a stage may sit with every partition done before its job is failed.
const COMPLETE_BUT_NOT_DONE: Duration = Duration::from_secs(30);

/// `plan` with every `PlaceholderRowExec` and `EmptyExec` leaf replaced by a memory scan
/// of the same rows and partitions (see the module's overview).
pub(super) fn with_accountable_leaves(
    plan: Arc<dyn ExecutionPlan>,
) -> DataFusionResult<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        let partitions = node.output_partitioning().partition_count();
        let schema = node.schema();
        let rows = if node.downcast_ref::<EmptyExec>().is_some() {
            0
        } else if node.downcast_ref::<PlaceholderRowExec>().is_some()
            && schema
                .fields()
                .iter()
                .all(|f| f.data_type() == &DataType::Null)
        {
            1
        } else {
            return Ok(Transformed::no(node));
        };
        let batch = if rows == 0 {
            Vec::new()
        } else {
            let columns: Vec<ArrayRef> = schema
                .fields()
                .iter()
                .map(|_| Arc::new(NullArray::new(rows)) as ArrayRef)
                .collect();
            vec![RecordBatch::try_new_with_options(
                Arc::clone(&schema),
                columns,
                &RecordBatchOptions::new().with_row_count(Some(rows)),
            )?]
        };
        let data = vec![batch; partitions];
        let scan = MemorySourceConfig::try_new_exec(&data, schema, None)?;
        Ok(Transformed::yes(scan as Arc<dyn ExecutionPlan>))
    })
    .map(|transformed| transformed.data)
}

/// For each partition of a stage, its latest task attempt (task id, info): retries
/// append to `task_infos`, so the newest entry covering a partition is the one that
/// counts.
fn latest_attempts(partitions: usize, tasks: &[TaskInfo]) -> Vec<Option<(usize, &TaskInfo)>> {
    let mut latest = vec![None; partitions];
    for (task_id, info) in tasks.iter().enumerate().rev() {
        for &partition in &info.global_input_partition_ids {
            if let Some(slot) = latest.get_mut(partition)
                && slot.is_none()
            {
                *slot = Some((task_id, info));
            }
        }
    }
    latest
}

/// What a finished job cannot account for: empty when every stage succeeded, every
/// partition's latest attempt succeeded, and each output it reported reached the stages
/// that read it (or the job's result).
pub(super) fn unaccounted(graph: &dyn ExecutionGraph) -> Vec<String> {
    let stages = graph.stages();
    let mut problems = Vec::new();
    let result: Vec<(usize, usize)> = graph
        .output_locations()
        .iter()
        .map(|l| (l.map_partition_id, l.partition_id.partition_id))
        .collect();
    let mut ids: Vec<&usize> = stages.keys().collect();
    ids.sort();
    for id in ids {
        let ExecutionStage::Successful(stage) = &stages[id] else {
            problems.push(format!(
                "stage {id} is {}, not successful",
                stages[id].variant_name()
            ));
            continue;
        };
        let mut delivered_tasks = std::collections::BTreeSet::new();
        for (partition, latest) in latest_attempts(stage.partitions, &stage.task_infos)
            .into_iter()
            .enumerate()
        {
            let Some((task_id, info)) = latest else {
                problems.push(format!("stage {id} partition {partition}: no task ran it"));
                continue;
            };
            let task_status::Status::Successful(SuccessfulTask {
                executor_id,
                partitions: written,
                ..
            }) = &info.task_status
            else {
                problems.push(format!(
                    "stage {id} partition {partition}: its latest task ({task_id}) did not succeed"
                ));
                continue;
            };
            if !delivered_tasks.insert(task_id) {
                continue; // one task covers several partitions; checked once
            }
            for output in written {
                let shuffle_partition = output.partition_id as usize;
                let missing_from: Vec<String> = if stage.output_links.is_empty() {
                    (!result.contains(&(task_id, shuffle_partition)))
                        .then(|| "the job's result".to_owned())
                        .into_iter()
                        .collect()
                } else {
                    stage
                        .output_links
                        .iter()
                        .filter(|consumer| {
                            !consumer_reads(stages.get(*consumer), *id, task_id, shuffle_partition)
                        })
                        .map(|consumer| format!("stage {consumer}"))
                        .collect()
                };
                for to in missing_from {
                    problems.push(format!(
                        "stage {id} task {task_id} on {executor_id}: its output partition \
                         {shuffle_partition} never reached {to}"
                    ));
                }
            }
        }
    }
    problems.extend(stale_reads(graph));
    problems
}

/// A location as the exactly-once check sees it: map task, file, executor.
type ReadLocation<'a> = (usize, Option<u64>, &'a str);

/// Reads of anything but exactly one latest attempt: every shuffle location a stage
/// read, and every location of the job's result, must come from the latest successful
/// attempt of its producer's partitions, once. A location of a superseded attempt, or
/// two of one task, would count that task's rows twice — what Spark's
/// OutputCommitCoordinator prevents for its writes. With this check a job that redid
/// work after a lost executor is committed as it ran, not computed again.
fn stale_reads(graph: &dyn ExecutionGraph) -> Vec<String> {
    let stages = graph.stages();
    let latest_tasks = |stage_id: usize| -> Option<std::collections::BTreeSet<usize>> {
        let ExecutionStage::Successful(stage) = stages.get(&stage_id)? else {
            return None;
        };
        Some(
            latest_attempts(stage.partitions, &stage.task_infos)
                .into_iter()
                .flatten()
                .map(|(task_id, _)| task_id)
                .collect(),
        )
    };
    let mut problems = Vec::new();
    let mut check =
        |reader: String,
         producer: usize,
         shuffle_partition: usize,
         locations: &mut dyn Iterator<Item = (usize, Option<u64>, &str)>| {
            let latest = latest_tasks(producer).unwrap_or_default();
            let mut seen = std::collections::BTreeSet::new();
            for (task_id, file, executor) in locations {
                if !latest.contains(&task_id) {
                    problems.push(format!(
                        "{reader} reads stage {producer} task {task_id} on {executor} (partition \
                     {shuffle_partition}), which is not the latest attempt of its partitions"
                    ));
                } else if !seen.insert((task_id, file)) {
                    problems.push(format!(
                        "{reader} reads stage {producer} task {task_id} on {executor} (partition \
                     {shuffle_partition}) twice"
                    ));
                }
            }
        };
    let mut ids: Vec<&usize> = stages.keys().collect();
    ids.sort();
    for id in ids {
        let ExecutionStage::Successful(stage) = &stages[id] else {
            continue;
        };
        let mut producers: Vec<&usize> = stage.inputs.keys().collect();
        producers.sort();
        for producer in producers {
            let mut partitions: Vec<_> =
                stage.inputs[producer].partition_locations.iter().collect();
            partitions.sort_by_key(|(partition, _)| **partition);
            for (partition, locations) in partitions {
                check(
                    format!("stage {id}"),
                    *producer,
                    *partition,
                    &mut locations
                        .iter()
                        .map(|l| (l.map_partition_id, l.file_id, l.executor_meta.id.as_str())),
                );
            }
        }
    }
    // The job's result: per partition, the location committed is the last one
    // recorded (a rerun of the final stage appends its attempt's locations after the
    // earlier attempt's, whose successful tasks Ballista keeps in the result); it must
    // come from the latest attempt.
    let final_stage = stages
        .iter()
        .find(|(_, stage)| match stage {
            ExecutionStage::Successful(s) => s.output_links.is_empty(),
            _ => false,
        })
        .map(|(id, _)| *id);
    if let Some(final_stage) = final_stage {
        let mut by_partition: BTreeMap<usize, Vec<ReadLocation>> = BTreeMap::new();
        let result = graph.output_locations();
        for location in &result {
            by_partition
                .entry(location.partition_id.partition_id)
                .or_default()
                .push((
                    location.map_partition_id,
                    location.file_id,
                    location.executor_meta.id.as_str(),
                ));
        }
        for (partition, locations) in by_partition {
            check(
                "the job's result".to_owned(),
                final_stage,
                partition,
                &mut locations.into_iter().last().into_iter(),
            );
        }
    }
    problems
}

/// Whether `consumer` reads the shuffle output `partition` that task `task_id` of
/// `producer` wrote.
fn consumer_reads(
    consumer: Option<&ExecutionStage>,
    producer: usize,
    task_id: usize,
    partition: usize,
) -> bool {
    let inputs = match consumer {
        Some(ExecutionStage::Successful(stage)) => &stage.inputs,
        _ => return false,
    };
    inputs
        .get(&producer)
        .and_then(|input| input.partition_locations.get(&partition))
        .is_some_and(|locations| locations.iter().any(|l| l.map_partition_id == task_id))
}

/// Watches a running job's graph for a stall: no task started or finished for
/// `stall_timeout`, or a stage with every partition done that never completes.
#[derive(Debug)]
pub(super) struct StallWatch {
    stall_timeout: Duration,
    last_fingerprint: Vec<StageFingerprint>,
    last_change: Instant,
    complete_since: BTreeMap<usize, Instant>,
}

/// What changes when a task of a stage starts or finishes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StageFingerprint {
    stage: usize,
    state: String,
    attempt: usize,
    tasks: usize,
    successful: usize,
    running: usize,
}

impl StallWatch {
    pub(super) fn new(stall_timeout: Duration) -> Self {
        Self {
            stall_timeout,
            last_fingerprint: Vec::new(),
            last_change: Instant::now(),
            complete_since: BTreeMap::new(),
        }
    }

    /// Looks at the running graph; an error message when the job has stalled.
    pub(super) fn check(&mut self, graph: &dyn ExecutionGraph) -> Option<String> {
        let stages = graph.stages();
        let mut ids: Vec<&usize> = stages.keys().collect();
        ids.sort();
        let mut fingerprint = Vec::new();
        let mut waiting_on = Vec::new();
        let now = Instant::now();
        for &id in &ids {
            let stage = &stages[id];
            let (attempt, tasks, successful, running) = match stage {
                ExecutionStage::Running(running) => {
                    let executors: Vec<String> = running
                        .running_tasks()
                        .into_iter()
                        .map(|(task, _, executor)| format!("task {task} on {executor}"))
                        .collect();
                    let pending = running.available_tasks();
                    let done = covered(running.partitions, &running.task_infos);
                    waiting_on.push(format!(
                        "stage {id} ({done} of {} partitions done, {pending} not started{})",
                        running.partitions,
                        if executors.is_empty() {
                            String::new()
                        } else {
                            format!("; running: {}", executors.join(", "))
                        }
                    ));
                    if done == running.partitions && pending == 0 && executors.is_empty() {
                        let since = *self.complete_since.entry(*id).or_insert(now);
                        if now.duration_since(since) > COMPLETE_BUT_NOT_DONE {
                            return Some(format!(
                                "stage {id} has every partition done but Ballista never \
                                 completed it (a task status it could not apply); failing \
                                 instead of waiting forever"
                            ));
                        }
                    } else {
                        self.complete_since.remove(id);
                    }
                    (
                        running.stage_attempt_num,
                        running.task_infos.len(),
                        running.successful_tasks(),
                        executors.len(),
                    )
                }
                ExecutionStage::Successful(done) => (
                    done.stage_attempt_num,
                    done.task_infos.len(),
                    done.partitions,
                    0,
                ),
                _ => (0, 0, 0, 0),
            };
            fingerprint.push(StageFingerprint {
                stage: *id,
                state: stage.variant_name().to_owned(),
                attempt,
                tasks,
                successful,
                running,
            });
        }
        // A task still running is progress as far as Sluice can tell (a task on a lost
        // executor is reset by Ballista when its heartbeats stop): long tasks are for
        // `sluice.run.timeout` to bound, not for the stall watch.
        let running = fingerprint.iter().any(|stage| stage.running > 0);
        if fingerprint != self.last_fingerprint || running {
            self.last_fingerprint = fingerprint;
            self.last_change = now;
            return None;
        }
        let quiet = now.duration_since(self.last_change);
        (quiet > self.stall_timeout).then(|| {
            format!(
                "no task ran, started or finished for {}s (sluice.run.stall_timeout); waiting on {}",
                quiet.as_secs(),
                if waiting_on.is_empty() {
                    "stages that cannot start".to_owned()
                } else {
                    waiting_on.join("; ")
                }
            )
        })
    }
}

/// Partitions of a stage whose latest attempt succeeded.
fn covered(partitions: usize, tasks: &[TaskInfo]) -> usize {
    latest_attempts(partitions, tasks)
        .into_iter()
        .filter(|latest| {
            latest.is_some_and(|(_, info)| {
                matches!(info.task_status, task_status::Status::Successful(_))
            })
        })
        .count()
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::Schema;
    use datafusion::physical_plan::union::UnionExec;

    use super::*;

    #[tokio::test]
    async fn constant_and_empty_leaves_become_memory_scans_of_the_same_rows() {
        let empty_schema = Arc::new(Schema::empty());
        let constant: Arc<dyn ExecutionPlan> =
            Arc::new(PlaceholderRowExec::new(Arc::clone(&empty_schema)).with_partitions(2));
        let nothing: Arc<dyn ExecutionPlan> = Arc::new(EmptyExec::new(empty_schema));
        let plan = UnionExec::try_new(vec![constant, nothing]).unwrap();
        let rewritten = with_accountable_leaves(plan).unwrap();
        let mut leaves = Vec::new();
        rewritten
            .apply(|node| {
                if node.children().is_empty() {
                    leaves.push(Arc::clone(node));
                }
                Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
            })
            .unwrap();
        assert_eq!(leaves.len(), 2);
        for leaf in &leaves {
            assert_eq!(leaf.name(), "DataSourceExec", "{leaf:?}");
            assert!(leaf.metrics().is_some(), "a memory scan reports metrics");
        }
        assert_eq!(leaves[0].output_partitioning().partition_count(), 2);
        assert_eq!(leaves[1].output_partitioning().partition_count(), 1);
        let ctx = Arc::new(datafusion::execution::TaskContext::default());
        let rows: usize = datafusion::physical_plan::collect(rewritten, ctx)
            .await
            .unwrap()
            .iter()
            .map(RecordBatch::num_rows)
            .sum();
        assert_eq!(
            rows, 2,
            "one row per constant partition, none from the empty leaf"
        );
    }
}
