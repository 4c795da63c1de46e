//! The client side of `JobService`: submit, watch, list, show and cancel runs, and the
//! readable summaries the CLI prints.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use futures::StreamExt;
use sluice_proto::JobServiceClient;
use sluice_proto::v1;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::cli::OutputFormat;
use crate::error::{CliError, Result};

/// A connected JobService client.
pub type Client = JobServiceClient<InterceptedService<Channel, BearerToken>>;

/// Adds the client's bearer token (`SLUICE_TOKEN`, else the file `SLUICE_TOKEN_FILE`
/// names) to every call; none when neither is set.
#[derive(Debug, Clone, Default)]
pub struct BearerToken(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl BearerToken {
    /// The token of this process's environment.
    pub fn from_env() -> Result<Self> {
        let token = match std::env::var("SLUICE_TOKEN").ok().filter(|t| !t.is_empty()) {
            Some(token) => Some(token),
            None => match std::env::var_os("SLUICE_TOKEN_FILE") {
                None => None,
                Some(path) => {
                    Some(
                        std::fs::read_to_string(&path).map_err(|source| CliError::Io {
                            context: format!(
                                "reading SLUICE_TOKEN_FILE {}",
                                Path::new(&path).display()
                            ),
                            source,
                        })?,
                    )
                }
            },
        };
        let Some(token) = token else {
            return Ok(Self(None));
        };
        let value = format!("Bearer {}", token.trim()).parse().map_err(|_| {
            CliError::Usage("the bearer token holds characters a header cannot carry".into())
        })?;
        Ok(Self(Some(value)))
    }
}

impl tonic::service::Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// The CA that verifies the scheduler's certificate (`SLUICE_TLS__CA`), when set.
fn scheduler_ca() -> Result<Option<tonic::transport::Certificate>> {
    let Some(path) = std::env::var_os("SLUICE_TLS__CA").filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let pem = std::fs::read(&path).map_err(|source| CliError::Io {
        context: format!("reading SLUICE_TLS__CA {}", Path::new(&path).display()),
        source,
    })?;
    Ok(Some(tonic::transport::Certificate::from_pem(pem)))
}

/// The endpoint of `url`: over TLS for `https://`, verified with `SLUICE_TLS__CA` or the
/// system's roots.
pub fn endpoint(url: &str) -> Result<tonic::transport::Endpoint> {
    let unreachable = |message: String| CliError::Unreachable {
        url: url.to_owned(),
        message,
    };
    let mut endpoint = Channel::from_shared(url.to_owned())
        .map_err(|err| unreachable(err.to_string()))?
        .connect_timeout(std::time::Duration::from_secs(5));
    if url.starts_with("https://") {
        let tls = tonic::transport::ClientTlsConfig::new();
        let tls = match scheduler_ca()? {
            Some(ca) => tls.ca_certificate(ca),
            None => tls.with_native_roots(),
        };
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|err| unreachable(err.to_string()))?;
    }
    Ok(endpoint)
}

/// A scheduler address as a URL: `host:port` gets `http://`, or `https://` when
/// `SLUICE_TLS__CA` is set.
pub fn normalize_url(url: &str) -> String {
    if url.contains("://") {
        url.to_owned()
    } else if std::env::var_os("SLUICE_TLS__CA").is_some_and(|ca| !ca.is_empty()) {
        format!("https://{url}")
    } else {
        format!("http://{url}")
    }
}

/// How long a client keeps trying to reach a scheduler that refuses connections.
const CONNECT_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Connects to the scheduler at `url` (`http://host:port` or `host:port`).
pub async fn connect(url: &str) -> Result<Client> {
    let url = normalize_url(url);
    let unreachable = |message: String| CliError::Unreachable {
        url: url.clone(),
        message,
    };
    let endpoint = endpoint(&url)?;
    let token = BearerToken::from_env()?;
    // A scheduler started a moment ago (`sluice scheduler & sluice submit …`) is given a
    // few seconds to listen before the scheduler counts as unreachable.
    let deadline = std::time::Instant::now() + CONNECT_GRACE;
    let channel = loop {
        match endpoint.connect().await {
            Ok(channel) => break channel,
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            Err(err) => {
                let mut message = err.to_string();
                let mut source = std::error::Error::source(&err);
                while let Some(cause) = source {
                    message = format!("{message}: {cause}");
                    source = cause.source();
                }
                return Err(unreachable(message));
            }
        }
    };
    Ok(JobServiceClient::with_interceptor(channel, token)
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(64 * 1024 * 1024))
}

/// Parses `name=value` arguments.
pub fn parse_params(raw: &[String]) -> Result<BTreeMap<String, String>> {
    raw.iter()
        .map(|pair| {
            pair.split_once('=')
                .map(|(name, value)| (name.trim().to_owned(), value.to_owned()))
                .ok_or_else(|| CliError::Usage(format!("--param `{pair}`: write name=value")))
        })
        .collect()
}

/// Reads a definition file and submits it; returns the run id. `idempotency_key` names
/// the work for `append` outputs (a key that committed already appends nothing again).
pub async fn submit_file(
    client: &mut Client,
    file: &Path,
    params: &[String],
    idempotency_key: Option<&str>,
) -> Result<String> {
    let yaml = std::fs::read_to_string(file).map_err(|source| CliError::Io {
        context: format!("cannot read job definition {}", file.display()),
        source,
    })?;
    let params = parse_params(params)?;
    let job = v1::submit_run_request::Job::DefinitionYaml(yaml);
    submit(
        client,
        job,
        &file.display().to_string(),
        params,
        idempotency_key,
    )
    .await
}

/// Submits a job registered on the scheduler (`name` or `name@3`); returns the run id.
pub async fn submit_registered(
    client: &mut Client,
    job: &str,
    params: &[String],
    idempotency_key: Option<&str>,
) -> Result<String> {
    let params = parse_params(params)?;
    let job = v1::submit_run_request::Job::RegisteredJob(job.to_owned());
    submit(client, job, "", params, idempotency_key).await
}

/// Submits a definition's text; returns the run id. Relative local paths in it resolve
/// against this process's working directory.
pub async fn submit_text(
    client: &mut Client,
    yaml: String,
    origin: &str,
    params: BTreeMap<String, String>,
) -> Result<String> {
    submit(
        client,
        v1::submit_run_request::Job::DefinitionYaml(yaml),
        origin,
        params,
        None,
    )
    .await
}

async fn submit(
    client: &mut Client,
    job: v1::submit_run_request::Job,
    origin: &str,
    params: BTreeMap<String, String>,
    idempotency_key: Option<&str>,
) -> Result<String> {
    let response = client
        .submit_run(v1::SubmitRunRequest {
            job: Some(job),
            params: params.into_iter().collect(),
            origin: origin.to_owned(),
            working_dir: working_dir(),
            task_token: String::new(),
            idempotency_key: idempotency_key.unwrap_or_default().to_owned(),
        })
        .await?
        .into_inner();
    for warning in &response.warnings {
        eprintln!("warning: {warning}");
    }
    Ok(response.run_id)
}

/// This process's working directory, which relative local paths resolve against.
pub fn working_dir() -> String {
    std::env::current_dir()
        .map(|dir| dir.display().to_string())
        .unwrap_or_default()
}

/// Follows a run until it ends, printing progress to stderr when `show_progress`.
pub async fn wait(client: &mut Client, run_id: &str, show_progress: bool) -> Result<v1::Run> {
    let mut events = client
        .watch_run(v1::WatchRunRequest {
            run_id: run_id.to_owned(),
        })
        .await?
        .into_inner();
    let mut last_line = String::new();
    let mut last_run = None;
    while let Some(event) = events.next().await {
        let Some(run) = event?.run else { continue };
        if show_progress {
            let line = progress_line(&run);
            if line != last_line {
                eprintln!("{line}");
                last_line = line;
            }
        }
        let done = is_final(run.status);
        last_run = Some(run);
        if done {
            break;
        }
    }
    match last_run {
        Some(run) if is_final(run.status) => Ok(run),
        // The stream ended early (scheduler restarted): read the record as it is.
        _ => Ok(client
            .get_run(v1::GetRunRequest {
                run_id: run_id.to_owned(),
            })
            .await?
            .into_inner()),
    }
}

fn is_final(status: i32) -> bool {
    !matches!(
        v1::RunStatus::try_from(status),
        Ok(v1::RunStatus::Queued | v1::RunStatus::Running | v1::RunStatus::Unspecified)
    )
}

/// The status of a run as users read it.
pub fn status_name(status: i32) -> &'static str {
    match v1::RunStatus::try_from(status) {
        Ok(v1::RunStatus::Queued) => "queued",
        Ok(v1::RunStatus::Running) => "running",
        Ok(v1::RunStatus::Succeeded) => "succeeded",
        Ok(v1::RunStatus::Failed) => "failed",
        Ok(v1::RunStatus::Cancelled) => "cancelled",
        Ok(v1::RunStatus::Interrupted) => "interrupted",
        _ => "unknown",
    }
}

fn progress_line(run: &v1::Run) -> String {
    let progress = run.progress.clone().unwrap_or_default();
    let mut line = format!("{} {}: {}", run.run_id, run.job, status_name(run.status));
    if progress.stages_total > 0 {
        line.push_str(&format!(
            ", stages {}/{}",
            progress.stages_done, progress.stages_total
        ));
    }
    if !progress.current_output.is_empty() && !is_final(run.status) {
        line.push_str(&format!(", writing `{}`", progress.current_output));
    }
    if progress.rows_so_far > 0 {
        line.push_str(&format!(", {} rows read", thousands(progress.rows_so_far)));
    }
    line
}

/// Turns a final run into the command's result: an error unless it succeeded.
pub fn require_success(run: &v1::Run) -> Result<()> {
    if v1::RunStatus::try_from(run.status) == Ok(v1::RunStatus::Succeeded) {
        Ok(())
    } else {
        Err(CliError::RunFailed {
            run_id: run.run_id.clone(),
            status: status_name(run.status).to_owned(),
            error: run.error.clone(),
        })
    }
}

/// Prints a run as text or as its JSON record.
pub fn print_run(run: &v1::Run, format: OutputFormat) {
    let mut out = std::io::stdout().lock();
    match format {
        OutputFormat::Json => {
            let _ = writeln!(out, "{}", run.record_json);
        }
        OutputFormat::Text => {
            let _ = write!(out, "{}", summary(run));
        }
    }
}

/// A readable summary of a run.
pub fn summary(run: &v1::Run) -> String {
    let mut text = format!(
        "run {}  job {}  {}",
        run.run_id,
        run.job,
        status_name(run.status)
    );
    if let (Ok(start), Ok(end)) = (
        chrono::DateTime::parse_from_rfc3339(&run.submitted_at),
        chrono::DateTime::parse_from_rfc3339(&run.finished_at),
    ) {
        let seconds = (end - start).num_milliseconds() as f64 / 1000.0;
        text.push_str(&format!(" in {seconds:.1}s"));
    }
    text.push('\n');
    if !run.submitted_by.is_empty() {
        text.push_str(&format!("  submitted  by {}\n", run.submitted_by));
    }
    if !run.params.is_empty() {
        let mut params: Vec<_> = run.params.iter().collect();
        params.sort();
        let params: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        text.push_str(&format!("  params     {}\n", params.join(" ")));
    }
    if run.rows_read > 0 {
        text.push_str(&format!("  rows read  {}\n", thousands(run.rows_read)));
    }
    for output in &run.outputs {
        text.push_str(&format!(
            "  output {}  {} rows, {} files, {} → {}\n",
            output.name,
            thousands(output.rows_written),
            output.files.len(),
            bytes(output.bytes_written),
            output.path.strip_prefix("file://").unwrap_or(&output.path)
        ));
        if !output.partitions.is_empty() {
            let shown: Vec<&str> = output
                .partitions
                .iter()
                .take(6)
                .map(String::as_str)
                .collect();
            let more = output.partitions.len().saturating_sub(shown.len());
            text.push_str(&format!(
                "    partitions {}{}\n",
                shown.join(", "),
                if more > 0 {
                    format!(" (+{more} more)")
                } else {
                    String::new()
                }
            ));
        }
    }
    if let Some(dq) = &run.data_quality {
        text.push_str(&format!(
            "  quality    {}: {} rows checked, {} valid, {} quarantined\n",
            dq.outcome.replace('_', " "),
            thousands(dq.rows_checked),
            thousands(dq.rows_valid),
            thousands(dq.rows_quarantined)
        ));
        let width = dq.rules.iter().map(|r| r.name.len()).max().unwrap_or(0);
        for rule in &dq.rules {
            let result = if rule.detail.is_empty() {
                format!("{} failed", thousands(rule.failed))
            } else {
                format!(
                    "{} ({})",
                    if rule.failed > 0 { "broke" } else { "held" },
                    rule.detail
                )
            };
            text.push_str(&format!(
                "    {:<width$}  {:<15} {:<10} {}\n",
                rule.name, rule.kind, rule.action, result
            ));
            for sample in rule.samples.iter().take(3) {
                text.push_str(&format!("    {:<width$}    e.g. {sample}\n", ""));
            }
        }
    }
    for warning in &run.warnings {
        text.push_str(&format!("  warning    {warning}\n"));
    }
    if !run.error.is_empty() {
        text.push_str(&format!("  error      {}\n", run.error));
    }
    text
}

/// Prints a table of runs.
pub fn print_runs(runs: &[v1::Run], format: OutputFormat) {
    let mut out = std::io::stdout().lock();
    if format == OutputFormat::Json {
        let records: Vec<serde_json::Value> = runs
            .iter()
            .filter_map(|run| serde_json::from_str(&run.record_json).ok())
            .collect();
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&records).unwrap_or_default()
        );
        return;
    }
    let _ = writeln!(
        out,
        "{:<32} {:<24} {:<12} {:<26} {:>12}",
        "RUN", "JOB", "STATUS", "SUBMITTED", "ROWS WRITTEN"
    );
    for run in runs {
        let written: u64 = run.outputs.iter().map(|o| o.rows_written).sum();
        let _ = writeln!(
            out,
            "{:<32} {:<24} {:<12} {:<26} {:>12}",
            run.run_id,
            run.job,
            status_name(run.status),
            run.submitted_at.get(..19).unwrap_or(&run.submitted_at),
            thousands(written)
        );
    }
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// One line about a backfill: id, job, status, range and partition counts.
pub fn backfill_line(backfill: &v1::Backfill) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for partition in &backfill.partitions {
        *counts.entry(partition.status.as_str()).or_default() += 1;
    }
    let counts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    format!(
        "{}  {}  {}  {}..{} every {}  [{}]",
        backfill.backfill_id,
        backfill.job,
        backfill.status,
        backfill.from,
        backfill.to,
        backfill.every,
        counts.join(", ")
    )
}

/// Prints a backfill with its partitions.
pub fn print_backfill(backfill: &v1::Backfill, format: OutputFormat) {
    if format == OutputFormat::Json {
        let partitions: Vec<serde_json::Value> = backfill
            .partitions
            .iter()
            .map(|p| {
                serde_json::json!({"value": p.value, "status": p.status, "run_id": p.run_id, "error": p.error})
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "backfill_id": backfill.backfill_id,
                "job": backfill.job,
                "status": backfill.status,
                "date_param": backfill.date_param,
                "from": backfill.from,
                "to": backfill.to,
                "every": backfill.every,
                "max_concurrent": backfill.max_concurrent,
                "partitions": partitions,
            })
        );
        return;
    }
    println!("{}", backfill_line(backfill));
    for partition in &backfill.partitions {
        let error = if partition.error.is_empty() {
            String::new()
        } else {
            format!("  {}", partition.error)
        };
        println!(
            "  {}={:<12} {:<10} {}{error}",
            backfill.date_param, partition.value, partition.status, partition.run_id
        );
    }
}

/// Follows a backfill until it ends, printing progress to stderr.
pub async fn wait_backfill(client: &mut Client, backfill_id: &str) -> Result<v1::Backfill> {
    let mut last = String::new();
    loop {
        let backfill = client
            .get_backfill(v1::GetBackfillRequest {
                backfill_id: backfill_id.to_owned(),
            })
            .await?
            .into_inner();
        let line = backfill_line(&backfill);
        if line != last {
            eprintln!("{line}");
            last = line;
        }
        if backfill.status != "running" {
            return Ok(backfill);
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}
