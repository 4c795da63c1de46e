//! A real S3-compatible server on loopback for the tests: moto server (PyPI
//! `moto[server]`), installed into a venv on first use and started per test on a free
//! port. Real SigV4, real multipart uploads, real listings.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;

/// Where the Python tools of the tests live (shared with `.ci/run`).
pub const VENV: &str = "/var/tmp/sluice-venv";

/// The `moto_server` executable, installed into the venv when missing.
pub fn moto_server() -> PathBuf {
    if let Some(path) = std::env::var_os("SLUICE_MOTO_SERVER") {
        return PathBuf::from(path);
    }
    let bin = Path::new(VENV).join("bin/moto_server");
    if !bin.exists() {
        let python = Path::new(VENV).join("bin/python");
        if !python.exists() {
            let status = Command::new("python3")
                .args(["-m", "venv", VENV])
                .status()
                .unwrap();
            assert!(status.success(), "python3 -m venv {VENV} failed");
        }
        let status = Command::new(&python)
            .args(["-m", "pip", "install", "-q", "moto[server]>=5.1,<6"])
            .status()
            .unwrap();
        assert!(
            status.success(),
            "installing moto[server] into {VENV} failed"
        );
    }
    bin
}

/// A running moto server, killed when dropped.
pub struct Moto {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Moto {
    /// Starts moto on a free loopback port, logging requests to `log`.
    pub fn start(log: PathBuf) -> Moto {
        let port = super::free_port();
        let child = Command::new(moto_server())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let moto = Moto { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(60);
        while moto.request("GET", "/", "").is_err() {
            assert!(Instant::now() < deadline, "moto did not start");
            std::thread::sleep(Duration::from_millis(200));
        }
        moto
    }

    /// The endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A plain HTTP request to moto (its own API, or unsigned S3 calls it accepts).
    pub fn request(&self, method: &str, path: &str, body: &str) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    }

    /// Creates a bucket.
    pub fn create_bucket(&self, bucket: &str) {
        let response = self.request("PUT", &format!("/{bucket}"), "").unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }

    /// The environment a Sluice process needs to use this server.
    pub fn env(&self) -> Vec<(String, String)> {
        self.env_via(&self.endpoint())
    }

    /// The environment for reaching this server through another endpoint (a proxy).
    pub fn env_via(&self, endpoint: &str) -> Vec<(String, String)> {
        vec![
            ("SLUICE_S3__ENDPOINT".into(), endpoint.to_owned()),
            ("SLUICE_S3__PATH_STYLE".into(), "true".into()),
            ("SLUICE_S3__ALLOW_HTTP".into(), "true".into()),
            ("SLUICE_S3__REGION".into(), "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID".into(), "AKIASLUICETESTKEY".into()),
            (
                "AWS_SECRET_ACCESS_KEY".into(),
                "sluice-test-secret-never-logged".into(),
            ),
        ]
    }

    /// An object store client for a bucket, for the test's own reads and writes.
    pub fn store(&self, bucket: &str) -> Arc<dyn ObjectStore> {
        Arc::new(
            AmazonS3Builder::new()
                .with_bucket_name(bucket)
                .with_endpoint(self.endpoint())
                .with_allow_http(true)
                .with_region("us-east-1")
                .with_access_key_id("AKIASLUICETESTKEY")
                .with_secret_access_key("sluice-test-secret-never-logged")
                .build()
                .unwrap(),
        )
    }

    /// What moto logged (one line per request).
    pub fn requests(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Uploads every file below `dir` to `bucket` under `prefix`.
pub async fn upload_dir(store: &Arc<dyn ObjectStore>, dir: &Path, prefix: &str) {
    use object_store::ObjectStoreExt;
    let mut pending = vec![dir.to_owned()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let relative = path.strip_prefix(dir).unwrap().display().to_string();
                let key = object_store::path::Path::from(format!("{prefix}/{relative}"));
                store
                    .put(&key, std::fs::read(&path).unwrap().into())
                    .await
                    .unwrap();
            }
        }
    }
}

/// Keys below a prefix, relative to it.
pub async fn keys(store: &Arc<dyn ObjectStore>, prefix: &str) -> Vec<String> {
    use futures::TryStreamExt;
    let prefix_path = object_store::path::Path::from(prefix);
    let mut keys: Vec<String> = store
        .list(Some(&prefix_path))
        .map_ok(|meta| meta.location.as_ref()[prefix.len() + 1..].to_owned())
        .try_collect()
        .await
        .unwrap();
    keys.sort();
    keys
}

/// Every visible data file below a prefix (what a reader would pick up), with its rows.
pub async fn visible_files(
    store: &Arc<dyn ObjectStore>,
    prefix: &str,
) -> std::collections::BTreeMap<String, usize> {
    use object_store::ObjectStoreExt;
    let mut files = std::collections::BTreeMap::new();
    for key in keys(store, prefix).await {
        if key
            .split('/')
            .any(|segment| segment.starts_with('_') || segment.starts_with('.'))
        {
            continue;
        }
        let bytes = store
            .get(&object_store::path::Path::from(format!("{prefix}/{key}")))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap();
        files.insert(key, reader.metadata().file_metadata().num_rows() as usize);
    }
    files
}
