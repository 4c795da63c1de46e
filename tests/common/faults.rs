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
