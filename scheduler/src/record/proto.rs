//! Records as the gRPC API returns them: conversions to `sluice_proto` messages, used
//! by the API and by the Step Functions callback (which judges a run by its message).

use sluice_proto::v1;

use super::{BackfillRecord, JobVersion, RunRecord, RunStatus};

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
        submitted_by: run.submitted_by.clone().unwrap_or_default(),
        data_quality: run.dq.as_ref().map(data_quality),
    }
}

pub fn job_to_proto(version: &JobVersion) -> v1::RegisteredJob {
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
