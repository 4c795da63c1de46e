//! Who may call what on the scheduler's port: bearer tokens, roles, and the gate every
//! gRPC call passes.
//!
//! Clients present `authorization: Bearer <token>`. The scheduler never holds a token
//! itself, only its SHA-256 in the **tokens file** (re-read when it changes), which names
//! the token's principal, its role and, for submitters, the jobs it may run:
//!
//! ```yaml
//! tokens:
//!   - {principal: claims-pipeline, role: submitter, jobs: ["claims_*"], sha256: 5e88…}
//!   - {principal: oncall, role: operator, sha256: 9f86…}
//! ```
//!
//! Roles are ordered, each holding the ones before it: `reader` (runs, reports, jobs,
//! executors) < `submitter` (submit runs) < `operator` (cancel, backfills) < `admin`
//! (register jobs). Every RPC needs one ([`access`]); an unknown method is closed.
//! Without a token the answer is `UNAUTHENTICATED`, with the wrong role
//! `PERMISSION_DENIED` — both before the handler runs, so neither says whether the run or
//! job asked for exists. Health and KEDA's external scaler (queue depth only) stay open;
//! Ballista's client RPCs (`ExecuteQuery`, `CancelJob`, …) are closed to everyone, since
//! a raw plan would bypass the run store, the output lock and the commit. Ballista's
//! executor RPCs need the fleet's client certificate when the port has TLS with a client
//! CA. Every decision on a JobService call is an audit event (target `sluice::audit`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// A principal's role; each holds the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads runs, reports, jobs, backfills and executors.
    Reader,
    /// Also submits runs (of the jobs its `jobs` patterns allow).
    Submitter,
    /// Also cancels runs and submits and cancels backfills.
    Operator,
    /// Also registers jobs.
    Admin,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Reader => "reader",
            Role::Submitter => "submitter",
            Role::Operator => "operator",
            Role::Admin => "admin",
        })
    }
}

/// Who made a call, as the tokens file names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The principal's name (recorded on the runs it submits).
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Job-name patterns (`*` matches any text) it may submit; empty allows every job.
    pub jobs: Vec<String>,
}

impl Principal {
    /// Whether this principal may submit runs of `job`.
    pub fn may_run(&self, job: &str) -> bool {
        self.jobs.is_empty() || self.jobs.iter().any(|pattern| glob_match(pattern, job))
    }
}

/// `*` matches any text (also none); everything else matches itself.
fn glob_match(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// A tokens file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The file cannot be read.
    #[error("tokens file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a tokens file.
    #[error("tokens file {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    tokens: Vec<TokenEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    principal: String,
    role: Role,
    #[serde(default)]
    jobs: Vec<String>,
    /// The token's SHA-256, as 64 hex digits.
    sha256: String,
}

/// The SHA-256 of a token, as the tokens file holds it.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.trim().as_bytes()))
}

/// A fresh random token (`slt_` and 64 hex digits: 244 random bits).
pub fn new_token() -> String {
    format!(
        "slt_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// The tokens of a tokens file, re-read when the file changes (checked at most once a
/// second), so a token is added or revoked without a restart. A file that turns
/// unreadable or invalid keeps the last good set and is logged.
#[derive(Debug)]
pub struct Tokens {
    path: PathBuf,
    state: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    version: Option<(SystemTime, u64)>,
    checked: Instant,
    by_hash: HashMap<String, Principal>,
}

impl Tokens {
    /// Reads the tokens file at `path`.
    pub fn load(path: &Path) -> Result<Self, AuthError> {
        let (version, by_hash) = read_tokens(path)?;
        Ok(Self {
            path: path.to_owned(),
            state: Mutex::new(Loaded {
                version,
                checked: Instant::now(),
                by_hash,
            }),
        })
    }

    /// The principal a token belongs to.
    pub fn principal(&self, token: &str) -> Option<Principal> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.checked.elapsed() >= Duration::from_secs(1) {
            state.checked = Instant::now();
            if file_version(&self.path) != state.version {
                match read_tokens(&self.path) {
                    Ok((version, by_hash)) => {
                        tracing::info!(path = %self.path.display(), tokens = by_hash.len(), "tokens file re-read");
                        state.version = version;
                        state.by_hash = by_hash;
                    }
                    Err(err) => {
                        tracing::error!(%err, "the tokens file changed and cannot be used; the previous tokens stay in force");
                    }
                }
            }
        }
        state.by_hash.get(&token_hash(token)).cloned()
    }
}

fn file_version(path: &Path) -> Option<(SystemTime, u64)> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

type Read = (Option<(SystemTime, u64)>, HashMap<String, Principal>);

fn read_tokens(path: &Path) -> Result<Read, AuthError> {
    let version = file_version(path);
    let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
        path: path.to_owned(),
        source,
    })?;
    let invalid = |message: String| AuthError::Invalid {
        path: path.to_owned(),
        message,
    };
    let file: TokensFile = serde_saphyr::from_str(&text)
        .map_err(|err| invalid(err.to_string().lines().next().unwrap_or_default().into()))?;
    let mut by_hash = HashMap::new();
    for (index, entry) in file.tokens.into_iter().enumerate() {
        let hash = entry.sha256.trim().to_ascii_lowercase();
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(format!(
                "tokens[{index}] ({}): sha256 is not 64 hex digits (`sluice token new` prints one)",
                entry.principal
            )));
        }
        if entry.principal.trim().is_empty() {
            return Err(invalid(format!("tokens[{index}]: the principal is empty")));
        }
        let principal = Principal {
            name: entry.principal,
            role: entry.role,
            jobs: entry.jobs,
        };
        if by_hash.insert(hash, principal).is_some() {
            return Err(invalid(format!(
                "tokens[{index}]: the same token is listed twice"
            )));
        }
    }
    Ok((version, by_hash))
}

/// One decision of the gate on a JobService call, or a refusal of any call: the audit
/// trail's entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct AuditEvent {
    /// When.
    pub at: chrono::DateTime<chrono::Utc>,
    /// Who: the token's principal, `anonymous` on a port without tokens, `unverified`
    /// when no known token came with the call.
    pub principal: String,
    /// The method (`/sluice.v1.JobService/SubmitRun`).
    pub action: String,
    /// `allowed`, or the refusal's gRPC code (`Unauthenticated`, `PermissionDenied`).
    pub outcome: String,
    /// Why a call was refused; empty when allowed.
    #[serde(default)]
    pub reason: String,
}

/// Where audit events go besides the log (the run store).
pub type AuditSink = Arc<dyn Fn(AuditEvent) + Send + Sync>;

/// What a gRPC method needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (health checks, KEDA's queue depth).
    Open,
    /// A principal with at least this role.
    Role(Role),
    /// A member of the executor fleet.
    Fleet,
    /// No one over the network.
    Closed,
}

/// What the method at `path` (`/package.Service/Method`) needs.
pub fn access(path: &str) -> Access {
    let Some((service, method)) = path.trim_start_matches('/').split_once('/') else {
        return Access::Closed;
    };
    match service {
        "grpc.health.v1.Health" | "externalscaler.ExternalScaler" => Access::Open,
        "sluice.v1.JobService" => match method {
            "GetRun" | "ListRuns" | "WatchRun" | "ListExecutors" | "ListJobs" | "GetBackfill"
            | "ListBackfills" | "GetAutoscaler" => Access::Role(Role::Reader),
            "SubmitRun" => Access::Role(Role::Submitter),
            "CancelRun" | "SubmitBackfill" | "CancelBackfill" => Access::Role(Role::Operator),
            _ => Access::Role(Role::Admin),
        },
        "ballista.protobuf.SchedulerGrpc" => match method {
            "PollWork"
            | "RegisterExecutor"
            | "HeartBeatFromExecutor"
            | "UpdateTaskStatus"
            | "ExecutorStopped" => Access::Fleet,
            _ => Access::Closed,
        },
        _ => Access::Closed,
    }
}

/// The gate of the scheduler's port: decides each call from its method, its bearer
/// token and its client certificate.
#[derive(Clone, Default)]
pub struct Gate {
    /// `None`: no tokens file, every role's methods are open (loopback and embedded).
    tokens: Option<Arc<Tokens>>,
    /// Executor RPCs need a client certificate the port's client CA verified.
    fleet_certificates: bool,
    /// Keeps each audit event (the run store's trail).
    audit: Option<AuditSink>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("tokens", &self.tokens)
            .field("fleet_certificates", &self.fleet_certificates)
            .finish_non_exhaustive()
    }
}

impl Gate {
    /// A gate over `tokens`; `fleet_certificates` when the port verifies client
    /// certificates against the fleet's CA.
    pub fn new(tokens: Option<Tokens>, fleet_certificates: bool) -> Self {
        Self {
            tokens: tokens.map(Arc::new),
            fleet_certificates,
            audit: None,
        }
    }

    /// Also keeps every audit event with `sink`.
    pub fn with_audit(mut self, sink: AuditSink) -> Self {
        self.audit = Some(sink);
        self
    }

    fn record(&self, principal: &str, action: &str, outcome: String, reason: &str) {
        if let Some(sink) = &self.audit {
            sink(AuditEvent {
                at: chrono::Utc::now(),
                principal: principal.to_owned(),
                action: action.to_owned(),
                outcome,
                reason: reason.to_owned(),
            });
        }
    }

    /// Whether clients must present tokens.
    pub fn authenticates(&self) -> bool {
        self.tokens.is_some()
    }

    /// Admits a call (with its principal, when it presented a token) or refuses it
    /// (naming the principal when its token was known).
    fn admit<B>(&self, request: &http::Request<B>) -> Result<Option<Principal>, Refusal> {
        let path = request.uri().path();
        match access(path) {
            Access::Open => Ok(None),
            Access::Closed => Err(Refusal::anonymous(tonic::Status::permission_denied(
                format!(
                    "{path} is not served to clients; runs are submitted through sluice.v1.JobService"
                ),
            ))),
            Access::Fleet => {
                if !self.fleet_certificates || has_client_certificate(request) {
                    Ok(None)
                } else {
                    Err(Refusal::anonymous(tonic::Status::unauthenticated(
                        "executor calls need the fleet's client certificate",
                    )))
                }
            }
            Access::Role(needed) => {
                let Some(tokens) = &self.tokens else {
                    return Ok(None);
                };
                let presented = request
                    .headers()
                    .get(http::header::AUTHORIZATION)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.strip_prefix("Bearer "));
                let Some(token) = presented else {
                    return Err(Refusal::anonymous(tonic::Status::unauthenticated(
                        "this scheduler needs a bearer token (set SLUICE_TOKEN or SLUICE_TOKEN_FILE)",
                    )));
                };
                let Some(principal) = tokens.principal(token) else {
                    return Err(Refusal::anonymous(tonic::Status::unauthenticated(
                        "the bearer token is not one this scheduler knows",
                    )));
                };
                if principal.role < needed {
                    return Err(Refusal {
                        status: tonic::Status::permission_denied(format!(
                            "`{}` is a {}; {} needs the {needed} role",
                            principal.name,
                            principal.role,
                            path.rsplit('/').next().unwrap_or(path)
                        )),
                        principal: Some(principal.name),
                    });
                }
                Ok(Some(principal))
            }
        }
    }
}

/// A refused call: the status the client gets, and who it was when the token was known.
#[derive(Debug)]
struct Refusal {
    status: tonic::Status,
    principal: Option<String>,
}

impl Refusal {
    fn anonymous(status: tonic::Status) -> Self {
        Self {
            status,
            principal: None,
        }
    }
}

fn has_client_certificate<B>(request: &http::Request<B>) -> bool {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    request
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|info| info.peer_certs())
        .is_some_and(|certs| !certs.is_empty())
}

/// The gate as a tower layer over the whole gRPC router.
#[derive(Debug, Clone)]
pub struct GateLayer {
    gate: Arc<Gate>,
}

impl GateLayer {
    /// A layer checking every call with `gate`.
    pub fn new(gate: Gate) -> Self {
        Self {
            gate: Arc::new(gate),
        }
    }
}

impl<S> tower::Layer<S> for GateLayer {
    type Service = Gated<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Gated {
            inner,
            gate: Arc::clone(&self.gate),
        }
    }
}

/// A service behind the gate.
#[derive(Debug, Clone)]
pub struct Gated<S> {
    inner: S,
    gate: Arc<Gate>,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Gated<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().to_owned();
        let audited = path.starts_with("/sluice.v1.JobService/");
        match self.gate.admit(&request) {
            Ok(principal) => {
                if audited {
                    let who = principal.as_ref().map_or("anonymous", |p| p.name.as_str());
                    tracing::info!(target: "sluice::audit", principal = who, action = %path, outcome = "allowed");
                    self.gate.record(who, &path, "allowed".into(), "");
                }
                if let Some(principal) = principal {
                    request.extensions_mut().insert(principal);
                }
                Box::pin(self.inner.call(request))
            }
            Err(Refusal { status, principal }) => {
                let who = principal.as_deref().unwrap_or("unverified");
                self.gate
                    .record(who, &path, format!("{:?}", status.code()), status.message());
                tracing::warn!(
                    target: "sluice::audit",
                    principal = who,
                    action = %path,
                    outcome = ?status.code(),
                    reason = status.message(),
                );
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_patterns_match_as_globs() {
        assert!(glob_match("claims_*", "claims_cleanse"));
        assert!(glob_match("*_monthly", "rx_monthly"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
        assert!(!glob_match("claims_*", "rx_claims_x"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(glob_match("*", ""));
    }

    #[test]
    fn every_method_of_the_port_has_an_access_and_unknown_ones_are_closed() {
        assert_eq!(access("/grpc.health.v1.Health/Check"), Access::Open);
        assert_eq!(
            access("/sluice.v1.JobService/ListRuns"),
            Access::Role(Role::Reader)
        );
        assert_eq!(
            access("/sluice.v1.JobService/SubmitRun"),
            Access::Role(Role::Submitter)
        );
        assert_eq!(
            access("/sluice.v1.JobService/CancelRun"),
            Access::Role(Role::Operator)
        );
        assert_eq!(
            access("/sluice.v1.JobService/RegisterJob"),
            Access::Role(Role::Admin)
        );
        assert_eq!(
            access("/sluice.v1.JobService/SomethingNew"),
            Access::Role(Role::Admin)
        );
        assert_eq!(
            access("/ballista.protobuf.SchedulerGrpc/ExecuteQuery"),
            Access::Closed
        );
        assert_eq!(
            access("/ballista.protobuf.SchedulerGrpc/RegisterExecutor"),
            Access::Fleet
        );
        assert_eq!(access("/other.Service/Call"), Access::Closed);
        assert_eq!(access("garbage"), Access::Closed);
    }

    #[test]
    fn a_tokens_file_is_reread_when_it_changes_and_a_bad_one_keeps_the_old_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.yaml");
        let (first, second) = (new_token(), new_token());
        let entry = |name: &str, token: &str| {
            format!(
                "  - {{principal: {name}, role: reader, sha256: {}}}\n",
                token_hash(token)
            )
        };
        std::fs::write(&path, format!("tokens:\n{}", entry("first", &first))).unwrap();
        let tokens = Tokens::load(&path).unwrap();
        assert_eq!(tokens.principal(&first).unwrap().name, "first");
        assert!(tokens.principal(&second).is_none());

        std::fs::write(&path, format!("tokens:\n{}", entry("second", &second))).unwrap();
        tokens.state.lock().unwrap().checked -= Duration::from_secs(2);
        assert_eq!(tokens.principal(&second).unwrap().name, "second");
        assert!(
            tokens.principal(&first).is_none(),
            "a removed token is revoked"
        );

        std::fs::write(&path, "tokens: [not a token]\n").unwrap();
        tokens.state.lock().unwrap().checked -= Duration::from_secs(2);
        assert_eq!(tokens.principal(&second).unwrap().name, "second");
    }

    #[test]
    fn a_tokens_file_with_a_bad_hash_is_refused_naming_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.yaml");
        std::fs::write(
            &path,
            "tokens:\n  - {principal: etl, role: submitter, sha256: plaintext-token}\n",
        )
        .unwrap();
        let err = Tokens::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("tokens[0] (etl): sha256 is not 64 hex digits"),
            "{err}"
        );
        std::fs::write(
            &path,
            "tokens:\n  - {principal: etl, role: root, sha256: x}\n",
        )
        .unwrap();
        assert!(Tokens::load(&path).is_err());
    }
}
