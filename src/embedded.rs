//! The embedded cluster of `sluice run` and `sluice demo`: a scheduler and executors in
//! this process on loopback ports, the local filesystem as storage, a run store file.
//! The same code as the distributed processes, and the same API between them.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sluice_executor::ExecutorSettings;
use sluice_scheduler::{Engine, RunManager, Scheduler, SchedulerSettings};
use tokio::task::JoinSet;

use crate::client::{self, Client};
use crate::config::Settings;
use crate::error::{CliError, Result};

/// How long the embedded executors may take to register.
const REGISTRATION_TIMEOUT: Duration = Duration::from_secs(30);

/// A scheduler and executors running in this process until it is dropped.
pub struct EmbeddedCluster {
    address: SocketAddr,
    manager: Arc<RunManager>,
    // Owned so they stop with the cluster.
    _tasks: JoinSet<Option<(usize, String)>>,
    _work_dirs: Vec<tempfile::TempDir>,
}

impl EmbeddedCluster {
    /// Starts the scheduler and `executors` executors, and waits until they registered.
    pub async fn start(state_dir: &Path, executors: usize, settings: &Settings) -> Result<Self> {
        Self::start_with_engine(state_dir, executors, Engine::Ballista, settings).await
    }

    /// As [`Self::start`], with runs' plans executed by `engine` (with
    /// [`Engine::InProcess`], no executors are needed).
    pub async fn start_with_engine(
        state_dir: &Path,
        executors: usize,
        engine: Engine,
        settings: &Settings,
    ) -> Result<Self> {
        let scheduler_settings = SchedulerSettings {
            engine,
            bind_host: "127.0.0.1".into(),
            port: 0,
            external_host: "127.0.0.1".into(),
            run_store: state_dir.join("runs.redb"),
            storage: settings.storage()?,
            ..SchedulerSettings::default()
        };
        let scheduler = Scheduler::start(&scheduler_settings).await?;
        let address = scheduler.address();
        let manager = scheduler.manager();
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            if let Err(err) = scheduler.serve(std::future::pending()).await {
                tracing::error!(%err, "embedded scheduler stopped");
            }
            None
        });
        let mut work_dirs = Vec::new();
        let mut executor_settings = Vec::new();
        for index in 0..executors {
            let work_dir = tempfile::Builder::new()
                .prefix("sluice-executor-")
                .tempdir()
                .map_err(|source| CliError::Io {
                    context: "creating an executor work directory".into(),
                    source,
                })?;
            executor_settings.push(ExecutorSettings {
                scheduler_host: "127.0.0.1".into(),
                scheduler_port: address.port(),
                flight_port: 0,
                grpc_port: 0,
                vcores: 2,
                work_dir: Some(work_dir.path().to_owned()),
                executor_id: Some(format!("embedded-{index}")),
                storage: settings.storage()?,
                ..ExecutorSettings::default()
            });
            work_dirs.push(work_dir);
        }
        let mut starts = vec![0usize; executors];
        for index in 0..executors {
            spawn_executor(&mut tasks, index, &executor_settings[index])?;
            starts[index] += 1;
        }
        let deadline = tokio::time::Instant::now() + REGISTRATION_TIMEOUT;
        loop {
            let alive = manager.executors().await.len();
            if alive >= executors {
                break;
            }
            // An executor that stopped before registering (a port another process took
            // between choosing it and binding it) starts again on other ports.
            while let Some(ended) = tasks.try_join_next() {
                let Ok(Some((index, err))) = ended else {
                    continue;
                };
                if starts[index] >= EXECUTOR_STARTS {
                    return Err(CliError::EmbeddedExecutorFailed {
                        index,
                        message: err,
                    });
                }
                tracing::warn!(index, %err, "embedded executor stopped; starting it again");
                spawn_executor(&mut tasks, index, &executor_settings[index])?;
                starts[index] += 1;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(CliError::EmbeddedExecutors {
                    waited_secs: REGISTRATION_TIMEOUT.as_secs(),
                    registered: alive,
                    expected: executors,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Self {
            address,
            manager,
            _tasks: tasks,
            _work_dirs: work_dirs,
        })
    }

    /// A client of the embedded scheduler's JobService.
    pub async fn client(&self) -> Result<Client> {
        client::connect(&format!("http://{}", self.address)).await
    }

    /// The run manager.
    pub fn manager(&self) -> &Arc<RunManager> {
        &self.manager
    }
}

/// How many times an embedded executor is started before the cluster gives up.
const EXECUTOR_STARTS: usize = 3;

/// Starts executor `index` on newly chosen ports; its task ends with its error.
fn spawn_executor(
    tasks: &mut JoinSet<Option<(usize, String)>>,
    index: usize,
    settings: &ExecutorSettings,
) -> Result<()> {
    let mut settings = settings.clone();
    settings.flight_port = free_port()?;
    settings.grpc_port = free_port()?;
    tasks.spawn(async move {
        match sluice_executor::run_executor(settings).await {
            // Before registration this is a start that failed quietly: started again.
            Ok(()) => Some((index, "the executor stopped".to_owned())),
            Err(err) => {
                tracing::error!(%err, "embedded executor stopped");
                Some((index, err.to_string()))
            }
        }
    });
    Ok(())
}

/// A port for an embedded executor, below the kernel's ephemeral range (32768–60999 by
/// default) and below the range the tests' processes use (20000–32000): a port from the
/// ephemeral range that was free when checked can be handed, before the executor binds
/// it, to any outgoing connection on the machine as its source port.
fn free_port() -> Result<u16> {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(
        0,
        12_000 + (std::process::id() % 50) as u16 * 150,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..8_000 {
        let mut port = NEXT.fetch_add(1, Ordering::SeqCst);
        if port >= 20_000 {
            // Wrapped: start over at the bottom of the range.
            NEXT.store(12_001, Ordering::SeqCst);
            port = 12_000;
        }
        let free = |host: &str| std::net::TcpListener::bind((host, port)).is_ok();
        if free("127.0.0.1") && free("0.0.0.0") {
            return Ok(port);
        }
    }
    Err(CliError::Io {
        context: "finding a free port for an embedded executor".into(),
        source: std::io::ErrorKind::AddrInUse.into(),
    })
}
