//! The local provider: `sluice executor` processes started on this machine, stopped
//! only when idle (or all at once when the autoscaler stops).

use std::collections::BTreeSet;
use std::process::Stdio;

use super::{AutoscalerSettings, ProviderSettings};
use crate::runner::BallistaScheduler;

/// How long a scaled-in executor may take to drain before it is killed.
const DRAIN_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// Executor processes the local provider started.
#[derive(Default)]
pub(super) struct LocalExecutors {
    children: Vec<(String, tokio::process::Child)>,
    started: usize,
}

impl LocalExecutors {
    pub(super) fn count(&self) -> usize {
        self.children.len()
    }

    pub(super) fn reap(&mut self) {
        self.children
            .retain_mut(|(_, child)| matches!(child.try_wait(), Ok(None)));
    }

    pub(super) fn start(&mut self, settings: &AutoscalerSettings) {
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

    /// Stops up to `count` executors that run no task and hold no shuffle output a
    /// running job reads: first out of Ballista's view, so no new task lands on one,
    /// then told to stop (SIGTERM) as a spot interruption would, so a task bound to it
    /// in the meantime still finishes and the executor reports itself stopped (which
    /// reschedules anything of its that a job still needs). One that has not exited
    /// after [`DRAIN_GRACE`] is killed.
    pub(super) async fn stop_idle(
        &mut self,
        count: usize,
        busy: &BTreeSet<String>,
        ballista: &BallistaScheduler,
    ) {
        let mut stopping = Vec::new();
        let mut kept = Vec::new();
        for (id, child) in std::mem::take(&mut self.children) {
            if stopping.len() < count && !busy.contains(&id) {
                if let Err(err) = ballista
                    .state
                    .executor_manager
                    .remove_executor(&id, Some("scaled in by the autoscaler".into()))
                    .await
                {
                    tracing::warn!(executor = %id, %err, "could not take the executor out of scheduling");
                }
                terminate(&id, &child);
                stopping.push((id, child));
            } else {
                kept.push((id, child));
            }
        }
        self.children = kept;
        let deadline = tokio::time::Instant::now() + DRAIN_GRACE;
        for (id, mut child) in stopping {
            match tokio::time::timeout_at(deadline, child.wait()).await {
                Ok(_) => tracing::info!(executor = %id, "local executor stopped (idle)"),
                Err(_) => {
                    tracing::warn!(executor = %id, "local executor did not drain in time; killing it");
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                }
            }
        }
    }

    pub(super) fn stop_all(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.start_kill();
        }
        self.children.clear();
    }
}

/// Sends SIGTERM to a child executor (it drains, then exits).
fn terminate(id: &str, child: &tokio::process::Child) {
    let Some(pid) = child
        .id()
        .and_then(|pid| i32::try_from(pid).ok())
        .and_then(rustix::process::Pid::from_raw)
    else {
        return; // already exited
    };
    if let Err(err) = rustix::process::kill_process(pid, rustix::process::Signal::TERM) {
        tracing::warn!(executor = %id, %err, "could not tell the executor to stop");
    }
}
