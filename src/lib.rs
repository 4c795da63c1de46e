//! The `sluice` command: parses nothing itself (see `main.rs`), but carries out each
//! subcommand over the library crates.
//!
//! - `run`, `demo`: an embedded cluster — the scheduler and executors in this process,
//!   on loopback ports, with the local filesystem as storage — driven through the same
//!   `JobService` API a remote scheduler serves.
//! - `scheduler`, `executor`: the processes of a distributed cluster.
//! - `submit`, `runs`, `status`, `cancel`: clients of a scheduler's `JobService`.
//! - `validate`, `schema`: definition checks that need no cluster.

pub mod cli;
pub mod client;
mod config;
mod demo;
mod embedded;
mod error;

use std::path::Path;

use sluice_proto::v1;

use crate::cli::{Cli, Command, OutputFormat};
pub use crate::config::settings_table;
pub use crate::error::{CliError, Result};

/// Fills `${Name}` placeholders of a state machine template; every placeholder must get
/// a value and the result must be JSON.
pub fn render_state_machine(
    template: &str,
    values: &[(&str, &str)],
    origin: &str,
) -> Result<String> {
    let mut rendered = template.to_owned();
    for (name, value) in values {
        rendered = rendered.replace(&format!("${{{name}}}"), value);
    }
    if let Some(start) = rendered.find("${") {
        let name: String = rendered[start + 2..]
            .chars()
            .take_while(|c| *c != '}')
            .collect();
        let flag = match name.as_str() {
            "SluiceActivityArn" => "--activity-arn",
            "FailureTopicArn" => "--topic-arn",
            _ => "a value",
        };
        return Err(CliError::Usage(format!(
            "{origin}: `${{{name}}}` needs {flag}"
        )));
    }
    serde_json::from_str::<serde_json::Value>(&rendered)
        .map_err(|err| CliError::Usage(format!("{origin}: not JSON after rendering: {err}")))?;
    Ok(rendered)
}

/// The host name others reach this machine at, when binding every interface and no
/// external host is given (a container: its hostname resolves to its address). Without
/// one the scheduler would have to guess the executor's address from the connection.
fn this_host_when_unspecified(bind: &str) -> Option<String> {
    let unspecified = bind
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_unspecified());
    if !unspecified {
        return None;
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .filter(|name| !name.is_empty())
}

/// The command an EMR step runs on the primary node: `sluice submit --wait` against the
/// scheduler the bootstrap action started there; an `s3://` definition is copied first.
fn emr_step_args(args: &crate::cli::EmrSubmitArgs) -> Result<Vec<String>> {
    let mut submit = vec![
        "sluice".to_owned(),
        "submit".to_owned(),
        "--wait".to_owned(),
        "--scheduler".to_owned(),
        "127.0.0.1:50050".to_owned(),
    ];
    let mut copy = None;
    match (&args.file, &args.job) {
        (_, Some(job)) => submit.extend(["--job".to_owned(), job.clone()]),
        (Some(file), None) if file.starts_with("s3://") => {
            let local = format!(
                "/tmp/sluice-{}.yaml",
                uuid::Uuid::new_v4()
                    .simple()
                    .to_string()
                    .get(..8)
                    .unwrap_or("job")
            );
            copy = Some(vec![
                "aws".to_owned(),
                "s3".to_owned(),
                "cp".to_owned(),
                file.clone(),
                local.clone(),
            ]);
            submit.push(local);
        }
        (Some(file), None) => submit.push(file.clone()),
        (None, None) => return Err(CliError::Usage("give a definition or --job NAME".into())),
    }
    for param in &args.params {
        if !param.contains('=') {
            return Err(CliError::Usage(format!(
                "--param `{param}` is not name=value"
            )));
        }
        submit.extend(["-p".to_owned(), param.clone()]);
    }
    Ok(match copy {
        None => submit,
        // One command for command-runner.jar: copy, then submit.
        Some(copy) => vec![
            "bash".to_owned(),
            "-c".to_owned(),
            format!(
                "{} && {}",
                copy.join(" "),
                submit
                    .iter()
                    .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        ],
    })
}

/// A flag the chosen autoscale provider needs.
fn required(value: &Option<String>, flag: &str) -> Result<String> {
    value
        .clone()
        .ok_or_else(|| CliError::Usage(format!("this --autoscale provider needs {flag}")))
}

/// Sets a stop flag when dropped (the autoscaler stops its executors).
struct StopOnDrop(tokio::sync::watch::Sender<bool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}

/// Waits for a stop future, for `join!` beside a worker that ends after it.
async fn stop_then_forget(stop: impl std::future::Future<Output = ()>) {
    stop.await;
}

fn sfn_worker_settings(
    activity_arns: Vec<String>,
    scheduler_url: String,
    max_concurrent: usize,
    heartbeat_secs: u64,
    drain_secs: u64,
    name: Option<String>,
) -> Result<sluice_scheduler::activity::WorkerSettings> {
    if heartbeat_secs == 0 {
        return Err(CliError::Usage(
            "--heartbeat-secs must be at least 1".into(),
        ));
    }
    let worker_name = name.unwrap_or_else(|| {
        format!(
            "sluice-{}-{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into()),
            std::process::id()
        )
    });
    Ok(sluice_scheduler::activity::WorkerSettings {
        activity_arns,
        scheduler_url,
        max_concurrent,
        heartbeat: std::time::Duration::from_secs(heartbeat_secs),
        drain: std::time::Duration::from_secs(drain_secs),
        worker_name,
        stores: sluice_jobs::ObjectStores::new(config::storage_settings()?),
    })
}

/// `sluice datagen claims`: writes the data and prints the ground truth's summary.
fn datagen_claims(args: &crate::cli::DatagenClaimsArgs) -> Result<()> {
    for (name, rate) in [
        ("defect-rate", args.defect_rate),
        ("duplicate-rate", args.duplicate_rate),
    ] {
        if !(0.0..=1.0).contains(&rate) {
            return Err(CliError::Usage(format!(
                "--{name} {rate} is not between 0 and 1"
            )));
        }
    }
    if let Some(month) = args.months.iter().find(|m| !(1..=12).contains(*m)) {
        return Err(CliError::Usage(format!(
            "--months: {month} is not a month (1 to 12)"
        )));
    }
    let options = sluice_jobs::datagen::ClaimsOptions {
        rows: args.rows,
        seed: args.seed,
        months: args.months.clone(),
        defect_rate: args.defect_rate,
        duplicate_rate: args.duplicate_rate,
    };
    let started = std::time::Instant::now();
    let truth = sluice_jobs::datagen::generate_claims(&args.out, &options).map_err(|source| {
        CliError::Io {
            context: format!("writing claims to {}", args.out.display()),
            source,
        }
    })?;
    println!(
        "{} claim lines ({} valid, {} to quarantine) in {:.1}s below {}",
        truth.rows,
        truth.valid_rows,
        truth.quarantined_rows,
        started.elapsed().as_secs_f64(),
        args.out.display()
    );
    for (defect, count) in &truth.defects {
        println!("  {defect:<26} {count}");
    }
    println!(
        "ground truth: {}",
        args.out.join("ground_truth.json").display()
    );
    Ok(())
}

/// Parses the command line, with the settings of the `SLUICE_CONFIG` file under the
/// variables and flags.
pub fn parse_cli() -> Result<Cli> {
    use clap::Parser;
    config::load_config_file()?;
    let args = config::args_with_config_file(std::env::args_os().collect());
    Ok(Cli::parse_from(args))
}

/// Carries out one command.
pub async fn execute(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run(args) => {
            let (engine, executors) = match args.engine {
                cli::RunEngine::Ballista => (sluice_scheduler::Engine::Ballista, args.executors),
                cli::RunEngine::Datafusion => (sluice_scheduler::Engine::InProcess, 0),
            };
            let cluster =
                embedded::EmbeddedCluster::start_with_engine(&args.state_dir, executors, engine)
                    .await?;
            let mut client = cluster.client().await?;
            let run_id = client::submit_file(&mut client, &args.file, &args.params).await?;
            let run = client::wait(&mut client, &run_id, args.output == OutputFormat::Text).await?;
            client::print_run(&run, args.output);
            client::require_success(&run)
        }
        Command::Demo(args) => demo::run(&args).await,
        Command::Validate(args) => validate(&args.file, &args.params, args.explain).await,
        Command::Datagen(crate::cli::DatagenCommand::Claims(args)) => datagen_claims(&args),
        Command::Schema => {
            let schema = sluice_jobs::json_schema();
            println!(
                "{}",
                serde_json::to_string_pretty(&schema).unwrap_or_default()
            );
            Ok(())
        }
        Command::Scheduler(args) => {
            let settings = sluice_scheduler::SchedulerSettings {
                bind_host: args.bind.clone(),
                port: args.port,
                external_host: args.external_host.clone().unwrap_or(args.bind.clone()),
                run_store: args.state_dir.join("runs.redb"),
                executor_timeout: std::time::Duration::from_secs(args.executor_timeout_secs),
                storage: config::storage_settings()?,
                step_functions: config::step_functions_settings(),
                http_port: args.http_port,
                engine: sluice_scheduler::Engine::Ballista,
            };
            let scheduler = sluice_scheduler::Scheduler::start(&settings).await?;
            eprintln!("sluice scheduler listening on {}", scheduler.address());
            let (autoscale_stop, autoscale_stopped) = tokio::sync::watch::channel(false);
            let _autoscaler = match args.autoscale.as_deref() {
                None => None,
                Some(provider) => {
                    let provider = match provider {
                        "local" => sluice_scheduler::autoscale::ProviderSettings::Local {
                            binary: std::env::current_exe().map_err(|source| CliError::Io {
                                context: "finding the sluice binary".into(),
                                source,
                            })?,
                            scheduler: scheduler.address().to_string(),
                            vcores: args.executor_slots,
                            log_dir: args.state_dir.join("executors"),
                        },
                        "external" => sluice_scheduler::autoscale::ProviderSettings::External,
                        "ecs" => sluice_scheduler::autoscale::ProviderSettings::Ecs {
                            cluster: required(&args.ecs_cluster, "--ecs-cluster")?,
                            service: required(&args.ecs_service, "--ecs-service")?,
                            api: config::autoscale_api(),
                        },
                        "emr" => sluice_scheduler::autoscale::ProviderSettings::Emr {
                            cluster_id: required(&args.emr_cluster_id, "--emr-cluster-id")?,
                            instance_group_id: required(
                                &args.emr_instance_group_id,
                                "--emr-instance-group-id",
                            )?,
                            api: config::autoscale_api(),
                        },
                        other => {
                            return Err(CliError::Usage(format!(
                                "--autoscale {other}: use `local`, `ecs`, `emr` or `external`"
                            )));
                        }
                    };
                    Some(scheduler.start_autoscaler(
                        sluice_scheduler::autoscale::AutoscalerSettings {
                            provider,
                            min: args.min_executors,
                            max: args.max_executors,
                            step: args.scale_step,
                            cooldown: std::time::Duration::from_secs(args.cooldown_secs),
                            slots_per_executor: args.executor_slots,
                            interval: std::time::Duration::from_millis(500),
                        },
                        autoscale_stopped,
                    ))
                }
            };
            let _stop_autoscaler_on_exit = StopOnDrop(autoscale_stop);
            if args.sfn_activity_arns.is_empty() {
                scheduler.serve(shutdown_signal()).await?;
            } else {
                // The activity worker inside the scheduler, a client of its own address.
                let worker = sfn_worker_settings(
                    args.sfn_activity_arns.clone(),
                    format!("http://{}", scheduler.address()),
                    4,
                    20,
                    60,
                    None,
                )?;
                let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
                let sfn = sluice_scheduler::sfn::client(
                    &config::step_functions_settings().unwrap_or_default(),
                )
                .await;
                let serving = scheduler.serve(async move {
                    shutdown_signal().await;
                    stop_tx.send_replace(true);
                });
                let working = sluice_scheduler::activity::run(worker, sfn, stop_rx);
                let (served, ()) = tokio::join!(serving, working);
                served?;
            }
            Ok(())
        }
        Command::Executor(args) => {
            let (host, port) = args.scheduler.rsplit_once(':').ok_or_else(|| {
                CliError::Usage(format!("--scheduler `{}`: write host:port", args.scheduler))
            })?;
            let host = host
                .trim_start_matches("http://")
                .trim_start_matches("https://");
            let port: u16 = port.parse().map_err(|_| {
                CliError::Usage(format!("--scheduler `{}`: bad port", args.scheduler))
            })?;
            let memory_bytes = match &args.memory {
                Some(text) => Some(parse_memory(text).ok_or_else(|| {
                    CliError::Usage(format!("--memory `{text}`: write e.g. 4GiB"))
                })?),
                None => None,
            };
            let settings = sluice_executor::ExecutorSettings {
                scheduler_host: host.to_owned(),
                scheduler_port: port,
                bind_host: args.bind.clone(),
                external_host: args
                    .external_host
                    .clone()
                    .or_else(|| this_host_when_unspecified(&args.bind)),
                flight_port: args.port,
                grpc_port: args.grpc_port,
                vcores: args.vcores,
                memory_bytes,
                work_dir: args.work_dir.clone(),
                executor_id: args.executor_id.clone(),
                health_port: args.health_port,
                storage: config::storage_settings()?,
            };
            sluice_executor::run_executor(settings).await?;
            Ok(())
        }
        Command::Submit(args) => {
            let mut client = client::connect(&args.scheduler.url).await?;
            let run_id = match (&args.file, &args.job) {
                (Some(file), _) => client::submit_file(&mut client, file, &args.params).await?,
                (None, Some(job)) => {
                    client::submit_registered(&mut client, job, &args.params).await?
                }
                (None, None) => {
                    return Err(CliError::Usage(
                        "give a definition file or --job NAME".into(),
                    ));
                }
            };
            if !args.wait {
                match args.output {
                    OutputFormat::Text => println!("{run_id}"),
                    OutputFormat::Json => println!("{}", serde_json::json!({ "run_id": run_id })),
                }
                return Ok(());
            }
            let run = client::wait(&mut client, &run_id, args.output == OutputFormat::Text).await?;
            client::print_run(&run, args.output);
            client::require_success(&run)
        }
        Command::Jobs(crate::cli::JobsCommand::Register(args)) => {
            let mut client = client::connect(&args.scheduler.url).await?;
            let yaml = std::fs::read_to_string(&args.file).map_err(|source| CliError::Io {
                context: format!("cannot read job definition {}", args.file.display()),
                source,
            })?;
            let job = client
                .register_job(v1::RegisterJobRequest {
                    definition_yaml: yaml,
                    origin: args.file.display().to_string(),
                })
                .await?
                .into_inner();
            println!("registered {}@{}", job.name, job.version);
            Ok(())
        }
        Command::Jobs(crate::cli::JobsCommand::List(args)) => {
            let mut client = client::connect(&args.scheduler.url).await?;
            let jobs = client
                .list_jobs(v1::ListJobsRequest {})
                .await?
                .into_inner()
                .jobs;
            match args.output {
                OutputFormat::Json => {
                    let jobs: Vec<serde_json::Value> = jobs
                        .iter()
                        .map(|job| {
                            serde_json::json!({
                                "name": job.name,
                                "version": job.version,
                                "description": job.description,
                                "registered_at": job.registered_at,
                            })
                        })
                        .collect();
                    println!("{}", serde_json::Value::Array(jobs));
                }
                OutputFormat::Text => {
                    for job in &jobs {
                        println!(
                            "{:<28} v{:<4} {}  {}",
                            job.name,
                            job.version,
                            job.registered_at,
                            job.description.trim()
                        );
                    }
                }
            }
            Ok(())
        }
        Command::Sfn(crate::cli::SfnCommand::Render(args)) => {
            let template = std::fs::read_to_string(&args.file).map_err(|source| CliError::Io {
                context: format!("reading {}", args.file.display()),
                source,
            })?;
            let mut values = vec![("SluiceActivityArn", args.activity_arn.as_str())];
            if let Some(topic) = &args.topic_arn {
                values.push(("FailureTopicArn", topic.as_str()));
            }
            println!(
                "{}",
                render_state_machine(&template, &values, &args.file.display().to_string())?
            );
            Ok(())
        }
        Command::SfnWorker(args) => {
            let worker = sfn_worker_settings(
                args.activity_arns.clone(),
                client::normalize_url(&args.scheduler.url),
                args.max_concurrent,
                args.heartbeat_secs,
                args.drain_secs,
                args.name.clone(),
            )?;
            let sfn = sluice_scheduler::sfn::client(
                &config::step_functions_settings().unwrap_or_default(),
            )
            .await;
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            eprintln!(
                "sluice sfn-worker polling {} activit{} for {}",
                worker.activity_arns.len(),
                if worker.activity_arns.len() == 1 {
                    "y"
                } else {
                    "ies"
                },
                worker.scheduler_url
            );
            let stop = async move {
                shutdown_signal().await;
                stop_tx.send_replace(true);
            };
            let ((), ()) = tokio::join!(
                stop_then_forget(stop),
                sluice_scheduler::activity::run(worker, sfn, stop_rx)
            );
            Ok(())
        }
        Command::Runs(args) => {
            let mut client = client::connect(&args.scheduler.url).await?;
            let runs = client
                .list_runs(v1::ListRunsRequest { limit: args.limit })
                .await?
                .into_inner()
                .runs;
            client::print_runs(&runs, args.output);
            Ok(())
        }
        Command::Status(args) if args.run_id.starts_with("b-") => {
            let mut client = client::connect(&args.scheduler.url).await?;
            let backfill = client
                .get_backfill(v1::GetBackfillRequest {
                    backfill_id: args.run_id.clone(),
                })
                .await?
                .into_inner();
            client::print_backfill(&backfill, args.output);
            Ok(())
        }
        Command::Cancel(args) if args.run_id.starts_with("b-") => {
            let mut client = client::connect(&args.scheduler.url).await?;
            let backfill = client
                .cancel_backfill(v1::GetBackfillRequest {
                    backfill_id: args.run_id.clone(),
                })
                .await?
                .into_inner();
            println!("cancelling {} ({})", backfill.backfill_id, backfill.status);
            Ok(())
        }
        Command::Backfill(args) => {
            let mut client = client::connect(&args.scheduler.url).await?;
            let job = match (&args.file, &args.job) {
                (Some(file), _) => v1::submit_run_request::Job::DefinitionYaml(
                    std::fs::read_to_string(file).map_err(|source| CliError::Io {
                        context: format!("cannot read job definition {}", file.display()),
                        source,
                    })?,
                ),
                (None, Some(job)) => v1::submit_run_request::Job::RegisteredJob(job.clone()),
                (None, None) => {
                    return Err(CliError::Usage(
                        "give a definition file or --job NAME".into(),
                    ));
                }
            };
            let backfill = client
                .submit_backfill(v1::SubmitBackfillRequest {
                    run: Some(v1::SubmitRunRequest {
                        job: Some(job),
                        params: client::parse_params(&args.params)?.into_iter().collect(),
                        origin: args
                            .file
                            .as_ref()
                            .map(|f| f.display().to_string())
                            .unwrap_or_default(),
                        working_dir: client::working_dir(),
                        task_token: String::new(),
                    }),
                    date_param: args.date_param.clone().unwrap_or_default(),
                    from: args.from.clone(),
                    to: args.to.clone(),
                    every: args.every.clone(),
                    max_concurrent: args.max_concurrent,
                })
                .await?
                .into_inner();
            if !args.wait {
                println!("{}", backfill.backfill_id);
                return Ok(());
            }
            let backfill = client::wait_backfill(&mut client, &backfill.backfill_id).await?;
            client::print_backfill(&backfill, OutputFormat::Text);
            if backfill.status == "succeeded" {
                Ok(())
            } else {
                Err(CliError::RunFailed {
                    run_id: backfill.backfill_id.clone(),
                    status: backfill.status.clone(),
                    error: "some partitions did not commit".into(),
                })
            }
        }
        Command::Health(args) => {
            let url = client::normalize_url(&args.address);
            let channel = tonic::transport::Endpoint::from_shared(url.clone())
                .map_err(|err| CliError::Usage(format!("--address {url}: {err}")))?
                .connect()
                .await
                .map_err(|err| CliError::Unreachable {
                    url: url.clone(),
                    message: err.to_string(),
                })?;
            let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
            let status = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: args.service.clone(),
                })
                .await?
                .into_inner()
                .status();
            println!("{}", status.as_str_name());
            if status == tonic_health::pb::health_check_response::ServingStatus::Serving {
                Ok(())
            } else {
                Err(CliError::Usage(format!(
                    "{url} is {}",
                    status.as_str_name()
                )))
            }
        }
        Command::Emr(crate::cli::EmrCommand::Submit(args)) => {
            let step_args = emr_step_args(&args)?;
            let api = sluice_scheduler::autoscale::AwsApi {
                endpoint: config::emr_endpoint(),
                region: None,
            };
            let emr = aws_sdk_emr::Client::new(&api.config().await);
            let target = args.job.clone().or(args.file.clone()).unwrap_or_default();
            let step = aws_sdk_emr::types::StepConfig::builder()
                .name(
                    args.name
                        .clone()
                        .unwrap_or_else(|| format!("sluice {target}")),
                )
                .action_on_failure(aws_sdk_emr::types::ActionOnFailure::from(
                    args.action_on_failure.as_str(),
                ))
                .hadoop_jar_step(
                    aws_sdk_emr::types::HadoopJarStepConfig::builder()
                        .jar("command-runner.jar")
                        .set_args(Some(step_args))
                        .build(),
                )
                .build();
            let added = emr
                .add_job_flow_steps()
                .job_flow_id(&args.cluster_id)
                .steps(step)
                .send()
                .await
                .map_err(|err| {
                    CliError::Usage(format!(
                        "AddJobFlowSteps on {}: {}",
                        args.cluster_id,
                        aws_sdk_emr::error::DisplayErrorContext(err)
                    ))
                })?;
            for step_id in added.step_ids() {
                println!("{step_id}");
            }
            Ok(())
        }
        Command::Settings => {
            print!("{}", config::settings_table());
            Ok(())
        }
        Command::Backfills(args) => {
            let mut client = client::connect(&args.scheduler.url).await?;
            let backfills = client
                .list_backfills(v1::ListBackfillsRequest {})
                .await?
                .into_inner()
                .backfills;
            for backfill in &backfills {
                println!("{}", client::backfill_line(backfill));
            }
            Ok(())
        }
        Command::Status(args) => {
            let mut client = client::connect(&args.scheduler.url).await?;
            let run = client
                .get_run(v1::GetRunRequest {
                    run_id: args.run_id,
                })
                .await?
                .into_inner();
            client::print_run(&run, args.output);
            Ok(())
        }
        Command::Cancel(args) => {
            let mut client = client::connect(&args.scheduler.url).await?;
            let run = client
                .cancel_run(v1::CancelRunRequest {
                    run_id: args.run_id.clone(),
                })
                .await?
                .into_inner();
            if client::status_name(run.status) == "running"
                || client::status_name(run.status) == "queued"
            {
                println!("cancelling {}", run.run_id);
            } else {
                println!(
                    "{} is already {}",
                    run.run_id,
                    client::status_name(run.status)
                );
            }
            Ok(())
        }
    }
}

/// `sluice validate`: the definition always; with its params, its sources and
/// expressions too.
async fn validate(file: &Path, raw_params: &[String], explain: bool) -> Result<()> {
    let definition = sluice_jobs::JobDefinition::from_file(file)?;
    let params = client::parse_params(raw_params)?;
    let origin = file.display().to_string();
    let missing: Vec<&String> = definition
        .params
        .iter()
        .filter(|(name, spec)| {
            spec.required && spec.default.is_none() && !params.contains_key(*name)
        })
        .map(|(name, _)| name)
        .collect();
    if !missing.is_empty() {
        sluice_jobs::JobSettings::from_conf(&definition.conf, &origin)?;
        println!(
            "{origin}: definition `{}` is valid; give --param {} to check it against its sources",
            definition.name,
            missing
                .iter()
                .map(|name| format!("{name}=…"))
                .collect::<Vec<_>>()
                .join(" --param ")
        );
        return Ok(());
    }
    let prepared = sluice_jobs::PreparedJob::prepare(definition, &origin, &params)?;
    for warning in &prepared.settings.warnings {
        eprintln!("warning: {warning}");
    }
    let ctx =
        prepared.session_context(&sluice_jobs::ObjectStores::new(config::storage_settings()?))?;
    let base_dir = std::env::current_dir().unwrap_or_default();
    let compiled = prepared.compile(&ctx, &base_dir).await?;
    println!(
        "{origin}: definition `{}` is valid against its sources ({})",
        prepared.definition.name,
        compiled
            .sources
            .iter()
            .map(|s| {
                let partitions: Vec<&str> = s
                    .partition_columns
                    .iter()
                    .map(|(name, _)| name.as_str())
                    .collect();
                if partitions.is_empty() {
                    format!("{} at {}", s.name, s.location)
                } else {
                    format!(
                        "{} at {} partitioned by {}",
                        s.name,
                        s.location,
                        partitions.join(", ")
                    )
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    if explain {
        for output in &compiled.outputs {
            let plan = output.physical_plan(&ctx.state()).await?;
            println!(
                "\noutput `{}`:\n{}",
                output.name,
                datafusion::physical_plan::displayable(plan.as_ref()).indent(true)
            );
        }
    }
    Ok(())
}

fn parse_memory(text: &str) -> Option<u64> {
    sluice_jobs::parse_byte_size(&sluice_jobs::Literal::Text(text.to_owned())).ok()
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = ctrl_c.await;
}
