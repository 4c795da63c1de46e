//! LocalStack on loopback, for Step Functions activity tasks (moto answers
//! GetActivityTask with 500): PyPI `localstack-core[runtime]` in a Python 3.13 venv (from
//! pyenv), installed on first use, started per test without Docker.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The venv LocalStack lives in (shared with `.ci/run`).
pub const VENV: &str = "/var/tmp/sluice-localstack-venv";

/// Pins LocalStack 2026.3 needs on these machines (see TESTING.md).
pub const PACKAGES: &[&str] = &[
    "localstack-core[runtime]",
    "cbor2<6",
    "pyOpenSSL<24.3",
    "cryptography<44",
    "service_identity<24.3",
];

/// The venv's Python, installing LocalStack once per test process (two installs at once
/// into one venv leave it without some dependencies).
fn python() -> PathBuf {
    static READY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    READY.get_or_init(install).clone()
}

fn install() -> PathBuf {
    let python = Path::new(VENV).join("bin/python");
    let ready = python.exists()
        && Command::new(&python)
            .args([
                "-c",
                "import localstack.runtime.main, localstack.aws.components, rolo",
            ])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if !ready {
        if !python.exists() {
            let status = Command::new("python3")
                .env("PYENV_VERSION", "3.13.0")
                .args(["-m", "venv", VENV])
                .status()
                .unwrap();
            assert!(status.success(), "creating {VENV} with Python 3.13 failed");
        }
        let status = Command::new(&python)
            .args(["-m", "pip", "install", "-q"])
            .args(PACKAGES)
            .status()
            .unwrap();
        assert!(status.success(), "installing LocalStack into {VENV} failed");
    }
    python
}

/// A running LocalStack, killed when dropped.
pub struct LocalStack {
    child: Child,
    pub port: u16,
    _state: tempfile::TempDir,
}

impl LocalStack {
    /// Starts LocalStack with Step Functions on a free port and waits until it serves.
    pub fn start(log: PathBuf) -> LocalStack {
        let port = super::free_port();
        let state = tempfile::tempdir().unwrap();
        let child = Command::new(python())
            .args(["-m", "localstack.runtime.main"])
            .env("GATEWAY_LISTEN", format!("127.0.0.1:{port}"))
            .env("SERVICES", "stepfunctions")
            .env("LOCALSTACK_VOLUME_DIR", state.path())
            .env("FILESYSTEM_ROOT", state.path())
            .env("SKIP_SSL_CERT_DOWNLOAD", "1")
            .env("DISABLE_EVENTS", "1")
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stack = LocalStack {
            child,
            port,
            _state: state,
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let ready = std::fs::read_to_string(&log).is_ok_and(|text| text.contains("Ready."));
            if ready {
                return stack;
            }
            assert!(
                Instant::now() < deadline,
                "LocalStack did not start: {}",
                log.display()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Its endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Environment that points Sluice's processes at it.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("SLUICE_SFN__ENDPOINT".into(), self.endpoint()),
            ("AWS_REGION".into(), "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID".into(), "test".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
        ]
    }

    /// A Step Functions client of the AWS SDK for Rust pointed at it.
    pub fn client(&self) -> aws_sdk_sfn::Client {
        sfn_client(&self.endpoint())
    }
}

/// A Step Functions client with test credentials for an emulator endpoint.
pub fn sfn_client(endpoint: &str) -> aws_sdk_sfn::Client {
    let config = aws_sdk_sfn::Config::builder()
        .behavior_version_latest()
        .region(aws_sdk_sfn::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sfn::config::Credentials::new(
            "test", "test", None, None, "tests",
        ))
        .endpoint_url(endpoint)
        .build();
    aws_sdk_sfn::Client::from_conf(config)
}

impl Drop for LocalStack {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
