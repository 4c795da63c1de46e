//! A Ballista executor embedded with Sluice's functions, operators and storage.
//!
//! Every executor — a separate `sluice executor` process or one of the embedded
//! cluster's — resolves plans with the same function registry (DataFusion's, Spark's and
//! Sluice's), decodes Sluice's operators with [`SluicePhysicalCodec`], and reads and
//! writes through the same object stores as the scheduler, so a plan that runs embedded
//! runs on a remote executor too.
//!
//! ```no_run
//! # async fn start() -> Result<(), sluice_executor::ExecutorError> {
//! let settings = sluice_executor::ExecutorSettings {
//!     scheduler_host: "127.0.0.1".into(),
//!     scheduler_port: 50050,
//!     ..Default::default()
//! };
//! sluice_executor::run_executor(settings).await?; // until SIGTERM or Ctrl-C
//! # Ok(()) }
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use ballista_core::extension::EndpointOverrideFn;
use ballista_core::utils::{GrpcClientConfig, create_grpc_client_endpoint};
use ballista_core::{ConfigProducer, RuntimeProducer};
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use sluice_jobs::{ObjectStores, SluicePhysicalCodec, StorageSettings};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// Errors of the executor crate.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// Ballista refused the configuration or the executor stopped with an error.
    #[error("executor (scheduler {scheduler}): {source}")]
    Ballista {
        /// The scheduler it was registered with.
        scheduler: String,
        /// Ballista's error.
        #[source]
        source: Box<ballista_core::error::BallistaError>,
    },
    /// A TLS file cannot be read.
    #[error("executor TLS {what} {path}: {source}")]
    Tls {
        /// What the file is.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The health endpoint could not be served.
    #[error("executor health endpoint {address}: {message}")]
    Health {
        /// Where it was to listen.
        address: String,
        /// What went wrong.
        message: String,
    },
}

/// The executor crate's result type.
pub type Result<T, E = ExecutorError> = std::result::Result<T, E>;

/// How an executor process starts.
#[derive(Debug, Clone)]
pub struct ExecutorSettings {
    /// The scheduler's host.
    pub scheduler_host: String,
    /// The scheduler's gRPC port.
    pub scheduler_port: u16,
    /// The address the executor's services bind to.
    pub bind_host: String,
    /// The host the scheduler and other executors reach this one at.
    pub external_host: Option<String>,
    /// Arrow Flight port (shuffle reads).
    pub flight_port: u16,
    /// The executor's gRPC port (task launch and cancel).
    pub grpc_port: u16,
    /// Task slots; 0 means one per CPU.
    pub vcores: usize,
    /// Memory for query execution (spills past it); `None` sizes it from the host.
    pub memory_bytes: Option<u64>,
    /// Where shuffle files and spills go; a fresh temporary directory when `None`.
    pub work_dir: Option<PathBuf>,
    /// A fixed executor id; a fresh one when `None`.
    pub executor_id: Option<String>,
    /// A port for grpc.health.v1 (liveness and readiness probes); none when `None`.
    /// It reports SERVING once the executor accepts Flight connections.
    pub health_port: Option<u16>,
    /// How storage is reached (the same as the scheduler's).
    pub storage: StorageSettings,
    /// TLS to the scheduler; plain text when `None`.
    pub tls: Option<ExecutorTls>,
}

/// How an executor reaches a scheduler whose port has TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutorTls {
    /// The CA (PEM) the scheduler's certificate is verified with.
    pub ca: PathBuf,
    /// The fleet certificate and key (PEM) presented to the scheduler, whose client CA
    /// admits only the fleet to the executor RPCs.
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl Default for ExecutorSettings {
    fn default() -> Self {
        Self {
            scheduler_host: "127.0.0.1".into(),
            scheduler_port: 50050,
            bind_host: "127.0.0.1".into(),
            external_host: None,
            flight_port: 50051,
            grpc_port: 50052,
            vcores: 0,
            memory_bytes: None,
            work_dir: None,
            executor_id: None,
            health_port: None,
            storage: StorageSettings::default(),
            tls: None,
        }
    }
}

/// The endpoint override that reaches the scheduler over TLS: Ballista dials
/// `http://host:port`; the same address is dialled as `https://` with the scheduler's CA
/// and the fleet identity, and Ballista's client timeouts.
fn tls_endpoint(settings: &ExecutorSettings, tls: &ExecutorTls) -> Result<EndpointOverrideFn> {
    let read = |what: &'static str, path: &PathBuf| {
        std::fs::read(path).map_err(|source| ExecutorError::Tls {
            what,
            path: path.clone(),
            source,
        })
    };
    let mut config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("CA", &tls.ca)?))
        .domain_name(settings.scheduler_host.clone());
    if let Some((cert, key)) = &tls.identity {
        config = config.identity(Identity::from_pem(
            read("certificate", cert)?,
            read("key", key)?,
        ));
    }
    let url = format!(
        "https://{}:{}",
        settings.scheduler_host, settings.scheduler_port
    );
    Ok(Arc::new(move |_plain: Endpoint| {
        let endpoint =
            create_grpc_client_endpoint(url.clone(), Some(&GrpcClientConfig::default()))?;
        Ok(endpoint.tls_config(config.clone())?)
    }))
}

/// The Ballista executor configuration for `settings`, with Sluice's hooks installed.
pub fn process_config(settings: &ExecutorSettings) -> Result<ExecutorProcessConfig> {
    let work_dir = settings
        .work_dir
        .as_ref()
        .map(|dir| dir.display().to_string());
    let temp_dir = work_dir.clone();
    let stores = ObjectStores::new(settings.storage.clone());
    let runtime_producer: RuntimeProducer = Arc::new(move |_config| {
        let mut builder = sluice_jobs::session::runtime_builder(&stores);
        if let Some(dir) = &temp_dir {
            builder = builder.with_temp_file_path(dir);
        }
        builder.build_arc()
    });
    let config_producer: ConfigProducer = Arc::new(sluice_jobs::session::default_session_config);
    let defaults = ExecutorProcessConfig::default();
    let mut config = ExecutorProcessConfig {
        bind_host: settings.bind_host.clone(),
        // Advertise the bind address unless it is a wildcard; otherwise the scheduler
        // takes the address the registration came from.
        external_host: settings.external_host.clone().or_else(|| {
            let wildcard = matches!(settings.bind_host.as_str(), "0.0.0.0" | "::" | "[::]");
            (!wildcard).then(|| settings.bind_host.clone())
        }),
        port: settings.flight_port,
        grpc_port: settings.grpc_port,
        scheduler_host: settings.scheduler_host.clone(),
        scheduler_port: settings.scheduler_port,
        // Wait for a scheduler that is still starting rather than exit at once.
        scheduler_connect_timeout_seconds: 30,
        vcores: if settings.vcores == 0 {
            defaults.vcores
        } else {
            settings.vcores
        },
        work_dir,
        memory_pool_size: settings.memory_bytes,
        // Heartbeats drive liveness on the scheduler; a minute is too slow to notice a
        // lost executor in a batch run.
        executor_heartbeat_interval_seconds: 5,
        print_thread_info: false,
        override_function_registry: Some(Arc::new(sluice_jobs::session::function_registry())),
        override_runtime_producer: Some(runtime_producer),
        override_config_producer: Some(config_producer),
        override_physical_codec: Some(Arc::new(SluicePhysicalCodec::default())),
        ..defaults
    };
    if let Some(id) = &settings.executor_id {
        config.executor_id = id.clone();
    }
    if let Some(tls) = &settings.tls {
        config.override_create_grpc_client_endpoint = Some(tls_endpoint(settings, tls)?);
    }
    Ok(config)
}

/// Runs an executor until it is told to stop (SIGTERM, Ctrl-C or the scheduler).
pub async fn run_executor(settings: ExecutorSettings) -> Result<()> {
    let scheduler = format!("{}:{}", settings.scheduler_host, settings.scheduler_port);
    let executor = start_executor_process(Arc::new(process_config(&settings)?));
    let Some(health_port) = settings.health_port else {
        return executor.await.map_err(|source| ExecutorError::Ballista {
            scheduler,
            source: Box::new(source),
        });
    };
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    let flight = format!("{}:{}", settings.bind_host, settings.flight_port);
    let ready = async move {
        // Ready once the Flight server (where tasks' results are fetched) answers.
        loop {
            if tokio::net::TcpStream::connect(&flight).await.is_ok() {
                reporter
                    .set_service_status("", tonic_health::ServingStatus::Serving)
                    .await;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        std::future::pending::<()>().await;
    };
    let address = format!("{}:{health_port}", settings.bind_host);
    let health_address: std::net::SocketAddr =
        address.parse().map_err(|_| ExecutorError::Health {
            address: address.clone(),
            message: "not a socket address".into(),
        })?;
    let serve_health = tonic::transport::Server::builder()
        .add_service(health)
        .serve(health_address);
    tokio::select! {
        result = executor => result.map_err(|source| ExecutorError::Ballista {
            scheduler,
            source: Box::new(source),
        }),
        result = serve_health => result.map_err(|err| ExecutorError::Health {
            address,
            message: err.to_string(),
        }),
        () = ready => Ok(()),
    }
}
