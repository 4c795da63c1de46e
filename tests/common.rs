//! The test harness: a real cluster of `sluice` processes on loopback ports — one
//! scheduler and N executors — driven over gRPC the way users drive it, plus readers of
//! what the jobs wrote.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod faults;
pub mod localstack;
pub mod moto;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use sluice_proto::JobServiceClient;
use sluice_proto::v1;
use tonic::transport::Channel;

/// The `sluice` binary under test.
pub fn sluice_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sluice"))
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    // Below the kernel's ephemeral range (32768–60999 by default): a port taken from that
    // range with `bind(0)` can be handed again, between the check and the child's bind, to
    // any outgoing connection on the machine as its source port. Each test binary starts
    // at its own offset so two binaries running at once do not walk the same ports.
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(
        0,
        20_000 + (std::process::id() % 64) as u16 * 150,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let port = NEXT.fetch_add(1, Ordering::SeqCst);
        assert!(port < 32_000, "no free port left below the ephemeral range");
        let free = |host: &str| std::net::TcpListener::bind((host, port)).is_ok();
        if free("127.0.0.1") && free("0.0.0.0") {
            return port;
        }
    }
}

/// Serializes the tests that start clusters: on a small machine, two clusters computing
/// at once only slow each other down. It also keeps ports apart: a port `free_port` chose is not taken by another test's
/// processes before the one it was chosen for binds it.
pub async fn one_cluster_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    CLUSTER_LOCK.lock().await
}

/// [`one_cluster_at_a_time`] for tests that are not async (they start embedded clusters
/// through `sluice run`, or the benchmark's).
pub fn one_cluster_at_a_time_blocking() -> tokio::sync::MutexGuard<'static, ()> {
    CLUSTER_LOCK.blocking_lock()
}

static CLUSTER_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Processes killed (and reaped) when dropped.
pub struct Killed(pub Vec<Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends a process a signal by name (`kill -STOP`).
fn send_signal(process: &Child, signal: &str) {
    let pid = process.id();
    let sent = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(sent.success(), "kill -{signal} {pid}");
}

/// A plain HTTP GET on a loopback port: the whole response, head and body.
pub fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: sluice\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// A small tmpfs mounted over a folder (root only), unmounted when dropped: a disk that
/// can fill up.
pub struct SmallDisk {
    at: PathBuf,
}

impl SmallDisk {
    /// Mounts `size` (`mount -o size=`, e.g. `16m`) of tmpfs at `at`, hiding what is there.
    pub fn mount(at: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(at).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .unwrap();
        assert!(
            mounted.status.success(),
            "this test mounts a tmpfs and needs root: {mounted:?}"
        );
        SmallDisk { at: at.to_owned() }
    }

    /// Fills the disk with a file named `name` until the file system refuses more.
    pub fn fill(&self, name: &str) -> PathBuf {
        use std::io::Write;
        let path = self.at.join(name);
        let mut file = File::create(&path).unwrap();
        let block = vec![0u8; 64 * 1024];
        loop {
            match file.write_all(&block) {
                Ok(()) => {}
                Err(err) if err.raw_os_error() == Some(28) => break, // ENOSPC
                Err(err) => panic!("filling {}: {err}", path.display()),
            }
        }
        // The last partial blocks, byte by byte down to nothing left.
        let mut small = 4096;
        while small > 0 {
            if file.write_all(&vec![0u8; small]).is_err() {
                small /= 2;
            }
        }
        let _ = file.flush();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazily: a process killed with the cluster may still hold files open.
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
    }
}

/// A scheduler process and executor processes, killed when dropped.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub port: u16,
    scheduler: Option<Child>,
    executors: Vec<Child>,
    scheduler_starts: usize,
    env: Vec<(String, String)>,
    scheduler_args: Vec<String>,
    /// Extra environment for the next scheduler starts only (fault injection).
    pub scheduler_env: Vec<(String, String)>,
}

impl Cluster {
    /// Starts a scheduler and `executors` executors (2 task slots each) and waits until
    /// every executor has registered.
    pub async fn start(executors: usize) -> Cluster {
        Self::start_with_env(executors, Vec::new()).await
    }

    /// Like [`Cluster::start`], with extra environment for every process (storage).
    pub async fn start_with_env(executors: usize, env: Vec<(String, String)>) -> Cluster {
        Self::start_with(executors, env, Vec::new()).await
    }

    /// Like [`Cluster::start_with_env`], with extra `sluice scheduler` arguments.
    pub async fn start_with(
        executors: usize,
        env: Vec<(String, String)>,
        scheduler_args: Vec<String>,
    ) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("sluice-cluster-")
            .tempdir()
            .unwrap();
        let mut cluster = Cluster {
            dir,
            port: free_port(),
            scheduler: None,
            executors: Vec::new(),
            scheduler_starts: 0,
            env,
            scheduler_args,
            scheduler_env: Vec::new(),
        };
        cluster.start_scheduler().await;
        for index in 0..executors {
            cluster.start_executor(index);
        }
        cluster.wait_for_executors(executors).await;
        cluster
    }

    /// The scheduler's state directory (its run store).
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The scheduler's URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Where process logs go.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    /// Starts (or restarts) the scheduler on the same port and state directory.
    pub async fn start_scheduler(&mut self) {
        self.scheduler_starts += 1;
        let log =
            File::create(self.log_path(&format!("scheduler-{}", self.scheduler_starts))).unwrap();
        let child = Command::new(sluice_bin())
            .args(["scheduler", "--port", &self.port.to_string(), "--state-dir"])
            .arg(self.dir.path().join("state"))
            .args(["--executor-timeout-secs", "10"])
            .args(&self.scheduler_args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(
                self.scheduler_env
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            )
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.scheduler = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while JobServiceClient::connect(self.url()).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "scheduler did not start: {}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts one more executor process, `executor-<index>`.
    pub fn start_executor(&mut self, index: usize) {
        let child = self.spawn_executor(index, &format!("executor-{index}"));
        self.executors.push(child);
    }

    /// SIGKILLs the executor started `index`-th and starts a new process under the same
    /// id and work directory at once, as Kubernetes restarts a pod's container.
    pub fn restart_executor(&mut self, index: usize) {
        self.kill_executor(index);
        self.executors[index] = self.spawn_executor(index, &format!("executor-{index}-restarted"));
    }

    fn spawn_executor(&self, index: usize, log: &str) -> Child {
        let log = File::create(self.log_path(log)).unwrap();
        let work = self.dir.path().join(format!("executor-{index}"));
        std::fs::create_dir_all(&work).unwrap();
        Command::new(sluice_bin())
            .args([
                "executor",
                "--scheduler",
                &format!("127.0.0.1:{}", self.port),
            ])
            .args(["--executor-id", &format!("executor-{index}")])
            .args(["--port", &free_port().to_string()])
            .args(["--grpc-port", &free_port().to_string()])
            .args(["--vcores", "2"])
            .arg("--work-dir")
            .arg(&work)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// Waits until `count` executors are registered and alive.
    pub async fn wait_for_executors(&self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut client = self.client().await;
            let executors = client
                .list_executors(v1::ListExecutorsRequest {})
                .await
                .unwrap()
                .into_inner()
                .executors;
            if executors.len() >= count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "executors did not register: {}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGKILLs the scheduler.
    pub fn kill_scheduler(&mut self) {
        if let Some(mut child) = self.scheduler.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Sends the scheduler process a signal (`STOP` pauses it as a long GC pause or a
    /// frozen VM would, `CONT` resumes it).
    pub fn signal_scheduler(&self, signal: &str) {
        send_signal(self.scheduler.as_ref().expect("no scheduler"), signal);
    }

    /// Sends `signal` (`STOP`, `CONT`, …) to the executor started `index`-th.
    pub fn signal_executor(&self, index: usize, signal: &str) {
        send_signal(&self.executors[index], signal);
    }

    /// Waits (up to a minute) for the scheduler process to end by itself.
    pub async fn wait_scheduler_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut child = self.scheduler.take().expect("a scheduler was started");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the scheduler did not stop: {}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILLs the executor started `index`-th.
    pub fn kill_executor(&mut self, index: usize) {
        let child = &mut self.executors[index];
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Sends SIGTERM to the executor started `index`-th (a spot interruption, a pod
    /// eviction, an ECS task stop) without waiting for it to exit.
    pub fn terminate_executor(&mut self, index: usize) {
        let pid = self.executors[index].id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success(), "kill -TERM {pid}");
    }

    /// Whether the executor started `index`-th has exited.
    pub fn executor_exited(&mut self, index: usize) -> bool {
        self.executors[index].try_wait().unwrap().is_some()
    }

    /// A JobService client.
    pub async fn client(&self) -> JobServiceClient<Channel> {
        JobServiceClient::connect(self.url()).await.unwrap()
    }

    /// Everything the processes logged, for failure messages.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        if let Ok(entries) = std::fs::read_dir(self.dir.path()) {
            let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            paths.sort();
            for path in paths
                .into_iter()
                .filter(|p| p.extension().is_some_and(|e| e == "log"))
            {
                let content = std::fs::read_to_string(&path).unwrap_or_default();
                let tail: Vec<&str> = content.lines().rev().take(40).collect();
                text.push_str(&format!("\n==== {} ====\n", path.display()));
                for line in tail.into_iter().rev() {
                    text.push_str(line);
                    text.push('\n');
                }
            }
        }
        text
    }

    /// The text an executor logged.
    pub fn executor_log(&self, index: usize) -> String {
        std::fs::read_to_string(self.log_path(&format!("executor-{index}"))).unwrap_or_default()
    }

    /// Submits a definition's text with params; returns the run id.
    pub async fn submit(
        &self,
        yaml: &str,
        origin: &str,
        params: &[(&str, String)],
    ) -> Result<String, tonic::Status> {
        let mut client = self.client().await;
        let response = client
            .submit_run(v1::SubmitRunRequest {
                job: Some(v1::submit_run_request::Job::DefinitionYaml(yaml.to_owned())),
                params: params
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect(),
                origin: origin.to_owned(),
                working_dir: self.dir.path().display().to_string(),
                task_token: String::new(),
                idempotency_key: String::new(),
            })
            .await?;
        Ok(response.into_inner().run_id)
    }

    /// Reads a run.
    pub async fn run(&self, run_id: &str) -> v1::Run {
        self.client()
            .await
            .get_run(v1::GetRunRequest {
                run_id: run_id.to_owned(),
            })
            .await
            .unwrap()
            .into_inner()
    }

    /// Polls a run until `done` says so.
    pub async fn wait_until(
        &self,
        run_id: &str,
        what: &str,
        done: impl Fn(&v1::Run) -> bool,
    ) -> v1::Run {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let run = self.run(run_id).await;
            if done(&run) {
                return run;
            }
            assert!(
                Instant::now() < deadline,
                "run {run_id} never became {what}: {run:?}{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the run reaches a final status.
    pub async fn wait_final(&self, run_id: &str) -> v1::Run {
        self.wait_until(run_id, "final", |run| {
            !matches!(
                v1::RunStatus::try_from(run.status),
                Ok(v1::RunStatus::Queued | v1::RunStatus::Running)
            )
        })
        .await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.executors.iter_mut().chain(self.scheduler.iter_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The status of a run.
pub fn status(run: &v1::Run) -> v1::RunStatus {
    v1::RunStatus::try_from(run.status).unwrap()
}

/// A job that writes one month of landed claims (`month` = `YYYY-MM`) into its month
/// partition: the unit of the backfill and scaling tests.
pub const CLAIMS_BY_MONTH: &str = r#"apiVersion: sluice/v1
name: claims_by_month
params:
  landing: {type: path, required: true}
  staging: {type: path, required: true}
  month: {type: string, required: true}
sources:
  claims: {format: csv, path: "{{landing}}/claims"}
steps:
  - filter: "substr(fill_date, 1, 7) = $month"
  - derive: {column: fill_month, expr: "substr(fill_date, 1, 7)"}
outputs:
  - name: claims
    path: "{{staging}}/claims"
    partition_by: [fill_month]
    mode: overwrite_partitions
"#;

/// An example job definition's text.
pub fn example(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("jobs/examples")
            .join(name),
    )
    .unwrap()
}

/// Every data file (visible to readers) below a directory, relative to it.
pub fn data_files(root: &Path) -> Vec<String> {
    let mut files = Vec::new();
    visit(root, root, &mut files);
    files.sort();
    files
}

fn visit(root: &Path, dir: &Path, files: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with('_') || name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            visit(root, &path, files);
        } else {
            files.push(path.strip_prefix(root).unwrap().display().to_string());
        }
    }
}

/// Reads every visible Parquet file below `root` into batches, keyed by the Hive
/// folder it sits in.
pub fn read_partitioned(root: &Path) -> BTreeMap<String, Vec<RecordBatch>> {
    let mut by_partition: BTreeMap<String, Vec<RecordBatch>> = BTreeMap::new();
    for relative in data_files(root) {
        let folder = Path::new(&relative)
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let file = File::open(root.join(&relative)).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            by_partition
                .entry(folder.clone())
                .or_default()
                .push(batch.unwrap());
        }
    }
    by_partition
}

/// `spark-submit` of PySpark 4 in the tests' venv, installed when missing.
pub fn spark_submit() -> PathBuf {
    let bin = Path::new(moto::VENV).join("bin/spark-submit");
    if !bin.exists() {
        moto::moto_server(); // creates the venv
        let status = Command::new(Path::new(moto::VENV).join("bin/python"))
            .args(["-m", "pip", "install", "-q", "pyspark>=4,<5"])
            .status()
            .unwrap();
        assert!(
            status.success(),
            "installing pyspark into {} failed",
            moto::VENV
        );
    }
    bin
}

/// Runs `tests/spark/interop.py` with PySpark in local mode; returns its JSON result.
pub fn pyspark(args: &[&str]) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/spark/interop.py");
    let venv = Path::new(moto::VENV);
    // As if the venv were activated: spark-submit finds its SPARK_HOME through the
    // python on PATH.
    let path = format!(
        "{}:{}",
        venv.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Command::new(spark_submit())
        .env("PATH", path)
        .env("VIRTUAL_ENV", venv)
        .env("PYSPARK_PYTHON", venv.join("bin/python"))
        .args(["--master", "local[2]", "--conf", "spark.ui.enabled=false"])
        .arg(&script)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "spark-submit failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|line| line.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line in:\n{stdout}"));
    serde_json::from_str(line).unwrap()
}

/// PEM files of a CA and of certificates it signed.
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A CA (`<ca>.crt`) with a server certificate for localhost (`server.*`, which may
    /// also serve as a client: a Helm chart's one Secret) and a client certificate
    /// (`<client>.*`), all under `dir`.
    pub fn generate(dir: &Path, ca: &str, client: &str) -> Pki {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{ca} CA"));
        let issuer =
            rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
                .unwrap();
        std::fs::write(dir.join(format!("{ca}.crt")), issuer.pem()).unwrap();
        for (name, purpose, names) in [
            (
                "server",
                vec![
                    rcgen::ExtendedKeyUsagePurpose::ServerAuth,
                    rcgen::ExtendedKeyUsagePurpose::ClientAuth,
                ],
                vec!["localhost".to_owned(), "127.0.0.1".to_owned()],
            ),
            (
                client,
                vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth],
                vec![format!("{client}.fleet")],
            ),
        ] {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(names).unwrap();
            params.extended_key_usages = purpose;
            let cert = params.signed_by(&key, &issuer).unwrap();
            std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
            std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
        }
        Pki {
            dir: dir.to_owned(),
        }
    }
}

/// A token made by `sluice token new`, and its tokens-file line.
pub fn new_token(principal: &str, role: &str, jobs: &[&str]) -> (String, String) {
    let mut command = Command::new(sluice_bin());
    command.args(["token", "new", "--principal", principal, "--role", role]);
    for job in jobs {
        command.args(["--job", job]);
    }
    let output = command.output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    let token = text
        .lines()
        .find_map(|line| line.strip_prefix("token: "))
        .unwrap()
        .to_owned();
    let entry = text.lines().find(|line| line.contains("sha256")).unwrap();
    assert!(!entry.contains(&token), "the entry holds only the hash");
    (token, entry.to_owned())
}
