//! A TCP proxy in front of the S3 server that answers some new connections with
//! `503 SlowDown`, as S3 does under load, and passes the rest through untouched.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const SLOW_DOWN: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";

/// The proxy; stops when dropped.
pub struct SlowDownProxy {
    pub port: u16,
    injected: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl SlowDownProxy {
    /// Proxies to `upstream_port`, answering every `every`-th new connection with 503
    /// until `max_faults` have been sent.
    pub async fn start(upstream_port: u16, every: usize, max_faults: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let injected = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&injected);
        // Owned: the proxy keeps the handle and aborts it when dropped; the connections'
        // tasks live in the loop's JoinSet and end with it.
        #[allow(clippy::disallowed_methods)]
        let task = tokio::spawn(async move {
            let mut connections = 0usize;
            let mut open = tokio::task::JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                while open.try_join_next().is_some() {}
                connections += 1;
                let fault = connections.is_multiple_of(every)
                    && counter.load(Ordering::SeqCst) < max_faults;
                if fault {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                open.spawn(async move {
                    if fault {
                        // Read the request head, then refuse it.
                        let mut head = Vec::new();
                        let mut byte = [0u8; 1];
                        while !head.ends_with(b"\r\n\r\n") && head.len() < 64 * 1024 {
                            match client.read(&mut byte).await {
                                Ok(1) => head.push(byte[0]),
                                _ => return,
                            }
                        }
                        let response = format!(
                            "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{SLOW_DOWN}",
                            SLOW_DOWN.len()
                        );
                        let _ = client.write_all(response.as_bytes()).await;
                        let _ = client.shutdown().await;
                        return;
                    }
                    if let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", upstream_port)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
            }
        });
        Self {
            port,
            injected,
            task,
        }
    }

    /// 503s sent so far.
    pub fn injected(&self) -> usize {
        self.injected.load(Ordering::SeqCst)
    }
}

impl Drop for SlowDownProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Which S3 call a fault rule counts, as the proxy tells them apart on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum S3Call {
    /// `PUT` with `x-amz-copy-source` (CopyObject; half of every rename).
    Copy,
    /// A delete: `DELETE` of one object, or a bulk `POST ?delete` (DeleteObjects, as
    /// object_store sends every delete, also the second half of a rename).
    Delete,
    /// `PUT` of a body (PutObject).
    Put,
}

/// Fails the `nth` call of a kind whose key contains `key_contains` (counted from when
/// the rule is armed) with `403 AccessDenied`; `persistent` fails every later one too.
#[derive(Clone, Debug)]
pub struct FaultRule {
    pub call: S3Call,
    pub key_contains: String,
    pub nth: usize,
    pub persistent: bool,
}

#[derive(Default)]
struct Armed {
    rule: Option<FaultRule>,
    seen: usize,
    failed: Vec<String>,
}

/// A proxy in front of the S3 server that fails chosen S3 calls, one HTTP request per
/// connection so that it sees every call (it asks both sides to close after each).
pub struct S3FaultProxy {
    pub port: u16,
    armed: Arc<std::sync::Mutex<Armed>>,
    task: JoinHandle<()>,
}

impl S3FaultProxy {
    pub async fn start(upstream_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let armed = Arc::new(std::sync::Mutex::new(Armed::default()));
        let state = Arc::clone(&armed);
        #[allow(clippy::disallowed_methods)]
        let task = tokio::spawn(async move {
            let mut open = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                while open.try_join_next().is_some() {}
                let state = Arc::clone(&state);
                open.spawn(async move {
                    let _ = proxy_one(client, upstream_port, &state).await;
                });
            }
        });
        Self { port, armed, task }
    }

    /// Arms a rule (replacing any other) and forgets what earlier rules failed.
    pub fn arm(&self, rule: FaultRule) {
        *self.armed.lock().unwrap() = Armed {
            rule: Some(rule),
            ..Armed::default()
        };
    }

    /// Stops failing calls; what was failed stays readable.
    pub fn disarm(&self) {
        self.armed.lock().unwrap().rule = None;
    }

    /// The keys of the calls failed since the rule was armed, in order.
    pub fn failed(&self) -> Vec<String> {
        self.armed.lock().unwrap().failed.clone()
    }
}

impl Drop for S3FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads an HTTP head (up to its blank line); returns it and whatever followed it.
async fn read_head<R: tokio::io::AsyncRead + Unpin>(
    stream: &mut R,
) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buffer.split_off(end + 4);
            return Ok((buffer, rest));
        }
        let read = stream.read(&mut chunk).await?;
        if read == 0 || buffer.len() > 64 * 1024 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
}

fn unescape_xml(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// The head with its `Connection` header replaced by `Connection: close`.
fn closing(head: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let mut lines: Vec<&str> = text
        .trim_end_matches("\r\n")
        .split("\r\n")
        .filter(|line| !line.to_ascii_lowercase().starts_with("connection:"))
        .collect();
    lines.push("Connection: close");
    format!("{}\r\n\r\n", lines.join("\r\n")).into_bytes()
}

async fn proxy_one(
    mut client: TcpStream,
    upstream_port: u16,
    state: &std::sync::Mutex<Armed>,
) -> std::io::Result<()> {
    let (head, body_start) = read_head(&mut client).await?;
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut request_line = text.lines().next().unwrap_or("").split_whitespace();
    let method = request_line.next().unwrap_or("").to_owned();
    let target = request_line.next().unwrap_or("").to_owned();
    let header = |name: &str| {
        text.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    };
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let path = percent_encoding::percent_decode_str(path)
        .decode_utf8_lossy()
        .into_owned();
    let length: usize = header("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body_start = body_start;
    let bulk_delete = method == "POST" && query.split('&').any(|q| q == "delete" || q == "delete=");
    // A delete is a bulk DeleteObjects (object_store sends even one that way): its keys
    // are in the XML body, read whole before deciding.
    let mut keys = vec![path.clone()];
    if bulk_delete {
        while body_start.len() < length {
            let mut chunk = vec![0u8; length - body_start.len()];
            let read = client.read(&mut chunk).await?;
            if read == 0 {
                break;
            }
            body_start.extend_from_slice(&chunk[..read]);
        }
        let xml = String::from_utf8_lossy(&body_start);
        keys = xml
            .split("<Key>")
            .skip(1)
            .filter_map(|rest| rest.split_once("</Key>"))
            .map(|(key, _)| format!("{}/{}", path.trim_end_matches('/'), unescape_xml(key)))
            .collect();
    }
    let call = match method.as_str() {
        "PUT" if header("x-amz-copy-source").is_some() => Some(S3Call::Copy),
        "PUT" => Some(S3Call::Put),
        "DELETE" => Some(S3Call::Delete),
        "POST" if bulk_delete => Some(S3Call::Delete),
        _ => None,
    };
    let fail = {
        let mut armed = state.lock().unwrap();
        let matched = match (&armed.rule, call) {
            (Some(rule), Some(call)) if call == rule.call => keys
                .iter()
                .find(|key| key.contains(&rule.key_contains))
                .cloned(),
            _ => None,
        };
        if let Some(key) = matched {
            armed.seen += 1;
            let rule = armed.rule.as_ref().unwrap();
            let fail = armed.seen == rule.nth || (rule.persistent && armed.seen > rule.nth);
            if fail {
                armed.failed.push(key);
            }
            fail
        } else {
            false
        }
    };
    if fail {
        // Take the body off the wire, then refuse the call as S3 refuses it.
        let mut remaining = length.saturating_sub(body_start.len());
        let mut sink = [0u8; 8192];
        while remaining > 0 {
            let read = client.read(&mut sink).await?;
            if read == 0 {
                break;
            }
            remaining = remaining.saturating_sub(read);
        }
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code><Message>Access Denied (the test's fault proxy)</Message></Error>";
        let response = format!(
            "HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        client.write_all(response.as_bytes()).await?;
        return client.shutdown().await;
    }
    let mut upstream = TcpStream::connect(("127.0.0.1", upstream_port)).await?;
    upstream.write_all(&closing(&head)).await?;
    upstream.write_all(&body_start).await?;
    let (mut client_read, mut client_write) = client.into_split();
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    let request = async move {
        let _ = tokio::io::copy(&mut client_read, &mut upstream_write).await;
        let _ = upstream_write.shutdown().await;
    };
    let response = async move {
        let (head, body_start) = read_head(&mut upstream_read).await?;
        client_write.write_all(&closing(&head)).await?;
        client_write.write_all(&body_start).await?;
        tokio::io::copy(&mut upstream_read, &mut client_write).await?;
        client_write.shutdown().await
    };
    let (_, answered) = tokio::join!(request, response);
    answered
}
