//! The scheduler's HTTP port: `/healthz` (liveness), `/readyz` (readiness: the run
//! store answers) and `/metrics` (Prometheus text: runs by status, executors, autoscaler
//! demand and decisions), for load balancers, probes and scrapers that do not speak gRPC.
//!
//! Three fixed GET routes over HTTP/1.1, written against tokio directly: the HTTP crates
//! in the dependency tree (hyper, axum) come through tonic with its feature set, and
//! widening it rebuilds tonic, Ballista and arrow-flight.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::autoscale::Autoscaler;
use crate::record::RunStatus;
use crate::runner::RunManager;

/// Serves the HTTP port until the future is dropped (with the gRPC server).
pub async fn serve(
    listener: TcpListener,
    manager: Arc<RunManager>,
    autoscaler: Arc<OnceLock<Autoscaler>>,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let manager = Arc::clone(&manager);
        let autoscaler = Arc::clone(&autoscaler);
        connections.spawn(async move {
            let Some(head) = read_head(&mut stream).await else {
                return;
            };
            let head = String::from_utf8_lossy(&head);
            let path = head
                .lines()
                .next()
                .and_then(|line| line.strip_prefix("GET "))
                .and_then(|rest| rest.split_whitespace().next())
                .unwrap_or("");
            let (status, content_type, body) = match path {
                "/healthz" => ("200 OK", "text/plain", "ok\n".to_owned()),
                // Ready when the run store answers and takes writes: a scheduler that
                // cannot record its runs' ends must not get more of them.
                "/readyz" => match (manager.runs().list(1), manager.runs().write_error()) {
                    (Ok(_), None) => ("200 OK", "text/plain", "ready\n".to_owned()),
                    (Err(err), _) => ("503 Service Unavailable", "text/plain", format!("{err}\n")),
                    (Ok(_), Some(err)) => (
                        "503 Service Unavailable",
                        "text/plain",
                        format!("runs cannot be recorded: {err}\n"),
                    ),
                },
                "/metrics" => (
                    "200 OK",
                    "text/plain; version=0.0.4",
                    metrics(&manager, autoscaler.get()).await,
                ),
                _ => ("404 Not Found", "text/plain", "not found\n".to_owned()),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// The longest request head served; probes and scrapers send a few hundred bytes.
const MAX_HEAD: usize = 16 * 1024;

/// Reads a request's head up to its blank line. A client may send it in several
/// segments (a line at a time), so one `read` is not enough; a client that sends
/// nothing for ten seconds, or more than [`MAX_HEAD`], is dropped.
async fn read_head(stream: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let read =
            tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut chunk))
                .await
                .ok()?
                .ok()?;
        if read == 0 || head.len() + read > MAX_HEAD {
            return (read == 0 && !head.is_empty()).then_some(head);
        }
        head.extend_from_slice(&chunk[..read]);
    }
    Some(head)
}

async fn metrics(manager: &RunManager, autoscaler: Option<&Autoscaler>) -> String {
    let mut text = String::new();
    // Counts the store keeps with every write: no run record is read.
    let counts = manager.runs().store.count_by_status().unwrap_or_default();
    let mut by_status: BTreeMap<&'static str, u64> = BTreeMap::new();
    for status in [
        RunStatus::Queued,
        RunStatus::Running,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Cancelled,
        RunStatus::Interrupted,
    ] {
        let count = counts.get(status.as_str()).copied().unwrap_or(0);
        by_status.insert(status.as_str(), count);
    }
    let _ = writeln!(text, "# HELP sluice_runs Runs in the run store, by status.");
    let _ = writeln!(text, "# TYPE sluice_runs gauge");
    for (status, count) in by_status {
        let _ = writeln!(text, "sluice_runs{{status=\"{status}\"}} {count}");
    }
    let executors = manager.executors().await.len();
    let _ = writeln!(
        text,
        "# HELP sluice_executors Executors with a live heartbeat."
    );
    let _ = writeln!(text, "# TYPE sluice_executors gauge");
    let _ = writeln!(text, "sluice_executors {executors}");
    if let Some(autoscaler) = autoscaler {
        let status = autoscaler.status();
        let _ = writeln!(
            text,
            "# HELP sluice_autoscaler_executors Executors the autoscaler runs or wants."
        );
        let _ = writeln!(text, "# TYPE sluice_autoscaler_executors gauge");
        let _ = writeln!(text, "sluice_autoscaler_executors {}", status.executors);
        let _ = writeln!(
            text,
            "# HELP sluice_pending_tasks Tasks ready or running, plus runs not yet planned."
        );
        let _ = writeln!(text, "# TYPE sluice_pending_tasks gauge");
        let _ = writeln!(text, "sluice_pending_tasks {}", status.demand.tasks());
        let _ = writeln!(
            text,
            "# HELP sluice_autoscaler_decisions_total Scaling decisions, by direction."
        );
        let _ = writeln!(text, "# TYPE sluice_autoscaler_decisions_total counter");
        let _ = writeln!(
            text,
            "sluice_autoscaler_decisions_total{{direction=\"out\"}} {}",
            status.scale_out_total
        );
        let _ = writeln!(
            text,
            "sluice_autoscaler_decisions_total{{direction=\"in\"}} {}",
            status.scale_in_total
        );
    }
    text
}
