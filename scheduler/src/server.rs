//! The scheduler process, and the composition root: the one module that sees every
//! layer. It opens the run store, starts Ballista's scheduler, builds the run and
//! backfill managers, owns the autoscaler's task, and serves Ballista's `SchedulerGrpc`
//! (executors register, heartbeat and report tasks), Sluice's `JobService` and KEDA's
//! external scaler on one port, over one run manager.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use ballista_core::serde::BallistaCodec;
use ballista_core::serde::protobuf::scheduler_grpc_server::SchedulerGrpcServer;
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::metrics::default_metrics_collector;
use ballista_scheduler::scheduler_server::SchedulerServer;
use sluice_jobs::{ObjectStores, SluicePhysicalCodec, StorageSettings};
use sluice_proto::JobServiceServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_stream::wrappers::TcpListenerStream;

use crate::api::{JobServiceImpl, KedaScaler, serve_http};
use crate::auth::{Gate, GateLayer, Tokens};
use crate::autoscale::{Autoscaler, AutoscalerSettings};
use crate::backfill::BackfillManager;
use crate::commit::{CommitError, recover_interrupted_commits, recover_own_commit};
use crate::error::{Result, SchedulerError};
use crate::record::{RunRecord, RunStatus};
use crate::runner::{BallistaScheduler, Engine, RunManager, Runs};
use crate::sfn::StepFunctionsSettings;
use crate::store::RunStore;

/// How the scheduler starts.
#[derive(Debug, Clone)]
pub struct SchedulerSettings {
    /// The address to bind.
    pub bind_host: String,
    /// The port to bind; 0 picks a free one.
    pub port: u16,
    /// The host executors and clients reach the scheduler at.
    pub external_host: String,
    /// The run store file.
    pub run_store: PathBuf,
    /// An executor silent for this long is considered lost and its tasks rerun.
    pub executor_timeout: Duration,
    /// How long an output's lock on an object store lasts without renewal.
    pub output_lease: Duration,
    /// An object-store prefix that keeps a copy of the run store, restored from when the
    /// local store file is missing at start.
    pub state_backup: Option<String>,
    /// Ended runs kept at most (the newest); `None` keeps every one.
    pub keep_runs: Option<usize>,
    /// Ended runs are removed this long after they ended; `None` keeps them.
    pub keep_for: Option<Duration>,
    /// A run with a data-quality report is kept, compacted, this long after it ended
    /// even when the retention above would remove it; `None`: no longer than the run.
    pub keep_dq_for: Option<Duration>,
    /// How storage is reached (the same as the executors').
    pub storage: StorageSettings,
    /// Step Functions, for runs submitted with a task token; `None` turns callbacks off.
    pub step_functions: Option<StepFunctionsSettings>,
    /// A port for `/healthz`, `/readyz` and `/metrics`; none when `None`.
    pub http_port: Option<u16>,
    /// Where runs' plans execute.
    pub engine: Engine,
    /// The tokens file clients authenticate against; without it every method a role
    /// would need is open (loopback and the embedded mode).
    pub tokens_file: Option<PathBuf>,
    /// TLS on the gRPC port.
    pub tls: Option<crate::tls::TlsSettings>,
    /// Serve a non-loopback address without TLS or tokens.
    pub insecure: bool,
    /// Where jobs may read and write; empty checks nothing.
    pub zones: sluice_jobs::StorageZones,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        Self {
            bind_host: "127.0.0.1".into(),
            port: 50050,
            external_host: "127.0.0.1".into(),
            run_store: PathBuf::from("sluice-state/runs.redb"),
            executor_timeout: Duration::from_secs(30),
            output_lease: crate::lock::DEFAULT_LEASE,
            state_backup: None,
            keep_runs: None,
            keep_dq_for: None,
            keep_for: None,
            storage: StorageSettings::default(),
            step_functions: None,
            http_port: None,
            engine: Engine::Ballista,
            tokens_file: None,
            tls: None,
            insecure: false,
            zones: sluice_jobs::StorageZones::default(),
        }
    }
}

/// Settles the runs the previous scheduler process left in flight. Each output's lock is
/// taken (another process may hold the output by now), then the run's own commit is
/// completed where its plan was written, and what it staged elsewhere removed; plans of
/// other stopped runs on the output are rolled forward too. A run whose every output is
/// then committed succeeded — it is recorded so, with its outputs, and reported so to
/// Step Functions; one that committed nothing stays `interrupted` with nothing visible;
/// one that committed some outputs says which.
async fn recover_runs(store: &RunStore, stores: &Arc<ObjectStores>, lease: Duration) {
    let owner = crate::lock::LockOwner::current(store.dir());
    for run in store.interrupted_on_open() {
        let mut committed = run.outputs.clone();
        let mut missing = Vec::new();
        let mut unsettled = false;
        for (output, location) in &run.output_locations {
            if committed.iter().any(|done| &done.name == output) {
                continue;
            }
            let spec = sluice_jobs::WriteSpec {
                output: output.clone(),
                location: location.clone(),
                run_id: run.run_id.to_string(),
                partition_by: Vec::new(),
                target_file_size: sluice_jobs::DEFAULT_TARGET_FILE_SIZE,
                compression: sluice_jobs::Compression::default(),
            };
            match recover_output(stores, &spec, &owner, lease).await {
                Ok(Some(record)) => committed.push(record),
                Ok(None) => missing.push(output.clone()),
                Err(err) => {
                    tracing::error!(run_id = %run.run_id, %output, %location, %err, "could not settle an interrupted run's output");
                    missing.push(output.clone());
                    unsettled = true;
                }
            }
        }
        let mut settled = run.clone();
        if missing.is_empty() && !run.output_locations.is_empty() {
            tracing::warn!(run_id = %run.run_id, "a run whose commit had stopped part way is committed");
            let why = if run.commit_pending {
                format!(
                    "this run's commit stopped part way ({}); it was completed when the \
                     scheduler started again",
                    run.error.as_deref().unwrap_or("store errors")
                )
            } else {
                "the scheduler stopped while this run was committing; its commit was \
                 completed when the scheduler started again"
                    .to_owned()
            };
            settled.finish(RunStatus::Succeeded, None);
            settled.commit_pending = false;
            settled.warnings.push(why);
            if let Some(report) = &run.dq {
                for output in &committed {
                    write_recovered_report(stores, run, output, report).await;
                }
            }
            // Every output is committed: the run's decision (below its first output,
            // when it had several) has served.
            let resolver = |url: &url::Url| {
                use datafusion::execution::object_store::ObjectStoreRegistry;
                stores.get_store(url).ok()
            };
            for location in run.output_locations.values() {
                let decision = crate::commit::decision_url(location, run.run_id.as_str());
                crate::commit::remove_decision(&resolver, &decision).await;
            }
        } else if run.commit_pending {
            if unsettled {
                // Still failed; tried again at the next start, or completed by the next
                // commit on the output.
                if committed.len() == run.outputs.len() {
                    continue;
                }
            } else {
                // No plan of the run is left: a commit on the output by another
                // process completed it (a commit in this process settles the run).
                settled.commit_pending = false;
                settled.warnings.push(format!(
                    "at scheduler start the pending commit plans of outputs {} were gone: \
                     another process's commit on them completed them",
                    missing.join(", ")
                ));
            }
        } else if !committed.is_empty() {
            let done: Vec<&str> = committed.iter().map(|o| o.name.as_str()).collect();
            settled.finish(
                RunStatus::Interrupted,
                Some(format!(
                    "the scheduler stopped while this run was committing: outputs {} were \
                     committed, {} were not",
                    done.join(", "),
                    missing.join(", ")
                )),
            );
        } else {
            continue;
        }
        settled.outputs = committed;
        if let Err(err) = store.put(&settled) {
            tracing::error!(run_id = %run.run_id, %err, "could not record a settled run");
        }
    }
}

/// Applies the history retention at start and every hour after.
async fn prune_history(
    runs: Arc<Runs>,
    keep_runs: Option<usize>,
    keep_for: Option<Duration>,
    keep_dq_for: Option<Duration>,
) {
    let since = |keep: Option<Duration>| {
        keep.and_then(|keep| chrono::Duration::from_std(keep).ok())
            .map(|keep| chrono::Utc::now() - keep)
    };
    loop {
        let retention = crate::store::Retention {
            keep_runs,
            keep_since: since(keep_for),
            keep_dq_since: since(keep_dq_for),
        };
        match runs.store.prune(&retention) {
            Ok(pruned) if pruned == crate::store::Pruned::default() => {}
            Ok(pruned) => tracing::info!(
                removed = pruned.removed,
                compacted = pruned.compacted,
                "applied the history retention to ended runs"
            ),
            Err(err) => tracing::warn!(%err, "could not apply the history retention"),
        }
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

/// Settles one output of an interrupted run under its lock: its own commit completed
/// (`Some`) or its staging removed (`None`), and other stopped runs' plans rolled forward.
async fn recover_output(
    stores: &Arc<ObjectStores>,
    spec: &sluice_jobs::WriteSpec,
    owner: &crate::lock::LockOwner,
    lease: Duration,
) -> std::result::Result<Option<crate::record::OutputRecord>, RecoveryError> {
    use datafusion::execution::object_store::ObjectStoreRegistry;
    let url = url::Url::parse(&spec.location).map_err(RecoveryError::Url)?;
    let store = stores.get_store(&url).map_err(RecoveryError::Store)?;
    let root = spec
        .root()
        .map_err(|err| RecoveryError::Commit(CommitError::Location(err)))?;
    let lock = crate::lock::OutputLock::acquire(
        Arc::clone(&store),
        &spec.location,
        &root,
        &spec.run_id,
        owner,
        lease,
    )
    .await
    .map_err(RecoveryError::Lock)?;
    let result = async {
        let resolver = |url: &url::Url| stores.get_store(url).ok();
        let own = recover_own_commit(Arc::clone(&store), spec, &resolver).await?;
        recover_interrupted_commits(Arc::clone(&store), spec, &resolver).await?;
        Ok(own)
    }
    .await
    .map_err(RecoveryError::Commit);
    lock.release().await;
    result
}

/// Writes a recovered run's data-quality report beside one of its outputs.
async fn write_recovered_report(
    stores: &Arc<ObjectStores>,
    run: &RunRecord,
    output: &crate::record::OutputRecord,
    report: &sluice_jobs::quality::DqReport,
) {
    use datafusion::execution::object_store::ObjectStoreRegistry;
    let spec = sluice_jobs::WriteSpec {
        output: output.name.clone(),
        location: output.location.clone(),
        run_id: run.run_id.to_string(),
        partition_by: Vec::new(),
        target_file_size: sluice_jobs::DEFAULT_TARGET_FILE_SIZE,
        compression: sluice_jobs::Compression::default(),
    };
    let Ok(url) = url::Url::parse(&output.location) else {
        return;
    };
    if let Ok(store) = stores.get_store(&url)
        && let Err(err) = crate::commit::write_dq_report(store, &spec, report).await
    {
        tracing::warn!(run_id = %run.run_id, output = %output.name, %err, "could not write a recovered run's data-quality report");
    }
}

/// Why an interrupted commit could not be completed.
#[derive(Debug, thiserror::Error)]
enum RecoveryError {
    /// The output's location is not a URL.
    #[error(transparent)]
    Url(url::ParseError),
    /// No object store serves it.
    #[error(transparent)]
    Store(datafusion::error::DataFusionError),
    /// Rolling the commit forward failed.
    #[error(transparent)]
    Commit(CommitError),
    /// The output is held by another process now.
    #[error(transparent)]
    Lock(crate::lock::LockError),
}

/// A started scheduler.
pub struct Scheduler {
    address: SocketAddr,
    manager: Arc<RunManager>,
    backfills: Arc<BackfillManager>,
    autoscaler: Arc<OnceLock<Autoscaler>>,
    /// Background loops (the autoscaler): aborted and awaited when serving ends,
    /// aborted when the scheduler is dropped unserved.
    background: Mutex<JoinSet<()>>,
    /// The run store's copy in object storage; brought up to date when serving ends.
    backup: Option<Arc<crate::backup::StateBackup>>,
    listener: TcpListener,
    http_listener: Option<TcpListener>,
    ballista: BallistaScheduler,
    gate: Gate,
    tls: Option<Arc<crate::tls::ServerTls>>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// The gate and TLS of the port bound at `bound`. A port the network reaches (not
/// loopback) is refused without TLS and tokens unless `insecure` says so, loudly.
fn secure_port(
    settings: &SchedulerSettings,
    bound: SocketAddr,
) -> Result<(Gate, Option<Arc<crate::tls::ServerTls>>)> {
    let tokens = settings
        .tokens_file
        .as_deref()
        .map(Tokens::load)
        .transpose()?;
    let tls = settings
        .tls
        .as_ref()
        .map(crate::tls::ServerTls::load)
        .transpose()?
        .map(Arc::new);
    let fleet_certificates = settings
        .tls
        .as_ref()
        .is_some_and(|tls| tls.client_ca.is_some());
    let missing: Vec<&str> = [
        (tls.is_none(), "TLS"),
        (tokens.is_none(), "a tokens file"),
        (!fleet_certificates, "a client CA for the executors"),
    ]
    .into_iter()
    .filter_map(|(absent, what)| absent.then_some(what))
    .collect();
    if !bound.ip().is_loopback() && !missing.is_empty() {
        let missing = missing.join(", ");
        if !settings.insecure {
            return Err(SchedulerError::Insecure {
                address: bound.to_string(),
                missing,
            });
        }
        tracing::warn!(address = %bound, %missing, "INSECURE: serving a port the network reaches without TLS, tokens or fleet certificates (--insecure)");
    }
    if !bound.ip().is_loopback() && settings.zones.is_empty() {
        tracing::warn!(address = %bound, "no storage zones declared (--read-zone, --write-zone): jobs may read and write any location this scheduler and its executors reach");
    }
    Ok((Gate::new(tokens, fleet_certificates), tls))
}

impl Scheduler {
    /// Opens the run store, starts Ballista's scheduler and binds the port.
    pub async fn start(settings: &SchedulerSettings) -> Result<Self> {
        let address = format!("{}:{}", settings.bind_host, settings.port);
        let server_error = |message: String| SchedulerError::Server {
            address: address.clone(),
            message,
        };
        let listener = TcpListener::bind(&address)
            .await
            .map_err(|err| server_error(err.to_string()))?;
        let bound = listener
            .local_addr()
            .map_err(|err| server_error(err.to_string()))?;
        let (gate, tls) = secure_port(settings, bound)?;
        let stores = ObjectStores::new(settings.storage.clone());
        let backup = match &settings.state_backup {
            Some(url) => {
                let backup = Arc::new(crate::backup::StateBackup::new(url, &stores)?);
                backup.restore_if_missing(&settings.run_store).await?;
                Some(backup)
            }
            None => None,
        };
        let store = RunStore::open(&settings.run_store)?;
        recover_runs(&store, &stores, settings.output_lease).await;
        let session_stores = Arc::clone(&stores);

        let mut config = SchedulerConfig::default()
            .with_hostname(settings.external_host.clone())
            .with_port(bound.port())
            .with_override_config_producer(Arc::new(sluice_jobs::session::default_session_config))
            .with_override_session_builder(Arc::new(move |config| {
                sluice_jobs::session::session_state(config, &session_stores)
            }));
        config.override_physical_codec = Some(Arc::new(SluicePhysicalCodec::default()));
        config.executor_timeout_seconds = settings.executor_timeout.as_secs().max(1);
        config.expire_dead_executor_interval_seconds = 5;
        let config = Arc::new(config);

        let cluster = BallistaCluster::new_from_config(&config)
            .await
            .map_err(|err| SchedulerError::ballista("creating the cluster state", err))?;
        let job_state = cluster.job_state();
        let codec = BallistaCodec::new(
            Arc::new(ballista_core::serde::BallistaLogicalExtensionCodec::default()),
            Arc::new(SluicePhysicalCodec::default()),
        );
        let metrics = default_metrics_collector()
            .map_err(|err| SchedulerError::ballista("creating metrics", err))?;
        let mut ballista: BallistaScheduler = SchedulerServer::new(
            config.scheduler_endpoint(),
            cluster,
            codec,
            Arc::clone(&config),
            metrics,
        );
        ballista
            .init()
            .await
            .map_err(|err| SchedulerError::ballista("starting the Ballista scheduler", err))?;
        let runs = Arc::new(Runs::new(store).with_backup(backup.clone()));
        let mut background = JoinSet::new();
        if settings.keep_runs.is_some() || settings.keep_for.is_some() {
            background.spawn(prune_history(
                Arc::clone(&runs),
                settings.keep_runs,
                settings.keep_for,
                settings.keep_dq_for,
            ));
        }
        if backup.is_some() {
            // The copy holds what recovery settled before anything else happens.
            runs.flush_backup().await;
            background.spawn(Arc::clone(&runs).keep_backup());
        }
        let mut manager = RunManager::new(
            runs,
            ballista.clone(),
            job_state,
            stores,
            settings.executor_timeout,
        )
        .with_engine(settings.engine)
        .with_zones(settings.zones.clone())
        .with_output_lease(settings.output_lease);
        if let Some(sfn) = &settings.step_functions {
            manager = manager.with_step_functions(crate::sfn::client(sfn).await);
        }
        let manager = Arc::new(manager);
        // Results of runs that ended (or were interrupted) while no one could report them.
        manager.report_pending_tasks().await;
        let backfills = Arc::new(BackfillManager::new(Arc::clone(&manager))?);
        let http_listener =
            match settings.http_port {
                None => None,
                Some(port) => {
                    let address = format!("{}:{port}", settings.bind_host);
                    Some(TcpListener::bind(&address).await.map_err(|err| {
                        SchedulerError::Server {
                            address,
                            message: err.to_string(),
                        }
                    })?)
                }
            };
        Ok(Self {
            address: bound,
            manager,
            backfills,
            autoscaler: Arc::new(OnceLock::new()),
            background: Mutex::new(background),
            backup,
            listener,
            http_listener,
            ballista,
            gate,
            tls,
        })
    }

    /// Starts the autoscaler; it stops (with its executors) when `stop` turns true, or
    /// when serving ends. The scheduler owns its task.
    pub fn start_autoscaler(
        &self,
        settings: AutoscalerSettings,
        stop: watch::Receiver<bool>,
    ) -> Autoscaler {
        let mut background = self
            .background
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let autoscaler = Autoscaler::start(
            settings,
            self.ballista.clone(),
            Arc::clone(&self.manager),
            stop,
            &mut background,
        );
        let _ = self.autoscaler.set(autoscaler.clone());
        autoscaler
    }

    /// The bound address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The run manager, for in-process use (the embedded cluster).
    pub fn manager(&self) -> Arc<RunManager> {
        Arc::clone(&self.manager)
    }

    /// Serves both gRPC services until `shutdown` completes.
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()> + Send) -> Result<()> {
        let address = self.address.to_string();
        let max_message = 64 * 1024 * 1024;
        let ballista = SchedulerGrpcServer::new(self.ballista.clone())
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(max_message);
        let keda = sluice_proto::externalscaler::external_scaler_server::ExternalScalerServer::new(
            KedaScaler::new(self.ballista.clone(), Arc::clone(&self.manager), 2),
        );
        let jobs = JobServiceServer::new(JobServiceImpl::new(
            Arc::clone(&self.manager),
            Arc::clone(&self.backfills),
            Arc::clone(&self.autoscaler),
        ));
        tracing::info!(%address, "sluice scheduler serving JobService and Ballista SchedulerGrpc");
        // grpc.health.v1 for Kubernetes probes and `sluice health`: serving once the run
        // store is open and the services are up.
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        reporter
            .set_service_status("sluice.v1.JobService", tonic_health::ServingStatus::Serving)
            .await;
        let http = self.http_listener.map(|listener| {
            serve_http(
                listener,
                Arc::clone(&self.manager),
                Arc::clone(&self.autoscaler),
            )
        });
        // With tokens, the trail is kept in the run store too (`sluice audit`); without,
        // every caller is anonymous and the log says enough.
        let runs = Arc::clone(self.manager.runs());
        let gate = if self.gate.authenticates() {
            self.gate
                .with_audit(Arc::new(move |event| runs.record_audit(event)))
        } else {
            self.gate
        };
        let router = tonic::transport::Server::builder()
            .layer(GateLayer::new(gate))
            .add_service(health)
            .add_service(ballista)
            .add_service(jobs)
            .add_service(keda);
        let grpc: std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>> = match self.tls {
            None => Box::pin(
                router
                    .serve_with_incoming_shutdown(TcpListenerStream::new(self.listener), shutdown),
            ),
            Some(config) => Box::pin(router.serve_with_incoming_shutdown(
                crate::tls::incoming(self.listener, config),
                shutdown,
            )),
        };
        let served = match http {
            None => grpc.await,
            // The HTTP port lives as long as the gRPC server.
            Some(http) => tokio::select! {
                served = grpc => served,
                () = http => Ok(()),
            },
        };
        // The background loops end with the server.
        let mut background = self
            .background
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        background.shutdown().await;
        if self.backup.is_some() {
            self.manager.runs().flush_backup().await;
        }
        served.map_err(|err| SchedulerError::Server {
            address,
            message: err.to_string(),
        })
    }
}
