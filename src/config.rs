//! The settings of one `sluice` process, in one place and in four layers:
//!
//! ```text
//! declared defaults  <  SLUICE_CONFIG file  <  SLUICE_* variables  <  flags
//! ```
//!
//! [`parse_cli`] loads the file once into a [`ConfigFile`] and parses the command line
//! with the file's values as the defaults of the invoked command's flags, so clap's own
//! `env` and flag handling put variables and flags above them; nothing is spliced into
//! the arguments and nothing is global. Settings no flag carries (storage, Step
//! Functions, the AWS endpoints) are read through the [`Settings`] it returns: a
//! variable, else the file's value of the same name. The one table of every name —
//! each flag's variable, default and help, and [`ENVIRONMENT`] — is what the file may
//! hold and what `sluice settings` prints ([`settings_table`]).
//!
//! Storage (the same for the scheduler and the executors):
//!
//! | variable | meaning |
//! |---|---|
//! | `SLUICE_STORAGE_CONFIG` | a YAML file: `s3: {region, endpoint, path_style, allow_http}`, `buckets: {NAME: {…}}`, `max_retries` |
//! | `SLUICE_S3__REGION` | the S3 region for every bucket |
//! | `SLUICE_S3__ENDPOINT` | a custom S3 endpoint (S3-compatible servers) |
//! | `SLUICE_S3__PATH_STYLE` | `true` to address buckets by path |
//! | `SLUICE_S3__ALLOW_HTTP` | `true` to allow plain-HTTP endpoints |
//!
//! Step Functions (task-token callbacks in the scheduler, the activity worker):
//!
//! | variable | meaning |
//! |---|---|
//! | `SLUICE_SFN__ENDPOINT` | a Step Functions endpoint instead of AWS's (an emulator) |
//! | `SLUICE_SFN__REGION` | the region (else `AWS_REGION` / the AWS chain) |
//!
//! The scheduler reports task tokens when one of these, `AWS_REGION` or
//! `AWS_DEFAULT_REGION` is set.
//!
//! Variables override the file. Credentials come from the standard AWS chain
//! (`AWS_ACCESS_KEY_ID`…, the shared credentials file — `AWS_SHARED_CREDENTIALS_FILE` or
//! `~/.aws/credentials`, profile `AWS_PROFILE` or `default` —, web identity, ECS task
//! role, instance metadata) and are never printed.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;

use clap::{CommandFactory, FromArgMatches};
use sluice_jobs::{StaticCredentials, StorageSettings};

use crate::cli::Cli;
use crate::error::{CliError, Result};

/// Parses a command line (the program's name first) over the `SLUICE_CONFIG` file and
/// the environment. Help, version and malformed arguments exit as clap does.
pub fn parse_cli(args: impl IntoIterator<Item = OsString>) -> Result<(Cli, Settings)> {
    let file = ConfigFile::load()?;
    let args: Vec<OsString> = args.into_iter().collect();
    // Help, version and argument errors answer from the command as declared, whatever
    // the file holds.
    let mut matches = Cli::command().get_matches_from(&args);
    let invoked = matches.subcommand_name().map(str::to_owned);
    if let Some(name) = invoked.filter(|_| !file.is_empty()) {
        matches = file
            .under_variables(Cli::command(), &name)
            .get_matches_from(&args);
    }
    let cli = Cli::from_arg_matches(&matches)
        .unwrap_or_else(|err| err.format(&mut Cli::command()).exit());
    Ok((cli, Settings { file }))
}

/// The settings of the file `SLUICE_CONFIG` names: a YAML map of the same `SLUICE_*`
/// names as the variables (`SLUICE_SCHEDULER__PORT: 50050`), lists joined by commas.
#[derive(Debug, Default)]
pub struct ConfigFile {
    values: BTreeMap<String, String>,
}

impl ConfigFile {
    /// Reads `SLUICE_CONFIG` (when set). Unknown names are errors: the file may only
    /// hold settings the binary reads (`sluice settings`).
    pub fn load() -> Result<Self> {
        let Some(path) = std::env::var_os("SLUICE_CONFIG") else {
            return Ok(Self::default());
        };
        let shown = path.to_string_lossy().to_string();
        let text = std::fs::read_to_string(&path).map_err(|source| CliError::Io {
            context: format!("reading SLUICE_CONFIG {shown}"),
            source,
        })?;
        let raw: BTreeMap<String, serde_json::Value> =
            serde_saphyr::from_str(&text).map_err(|err| CliError::ConfigFile {
                variable: "SLUICE_CONFIG",
                path: shown.clone(),
                message: first_line(&err),
            })?;
        let known = known_settings();
        let mut values = BTreeMap::new();
        for (name, value) in raw {
            if !known.contains(&name) {
                return Err(CliError::UnknownSetting { path: shown, name });
            }
            let value = match value {
                serde_json::Value::String(text) => text,
                serde_json::Value::Array(items) => items
                    .iter()
                    .map(|item| {
                        item.as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| item.to_string())
                    })
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            };
            values.insert(name, value);
        }
        Ok(Self { values })
    }

    fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// `cli` with this file's values as the defaults of `subcommand`'s flags that have
    /// a variable: above the declared defaults, under the variable and the flag. A bad
    /// value is the same error as on the command line.
    fn under_variables(&self, cli: clap::Command, subcommand: &str) -> clap::Command {
        cli.mut_subcommand(subcommand, |command| {
            let layered: Vec<(clap::Id, String)> = command
                .get_arguments()
                .filter(|arg| arg.get_long().is_some())
                .filter_map(|arg| {
                    let env = arg.get_env()?.to_string_lossy();
                    let value = self.get(&env)?;
                    Some((arg.get_id().clone(), value.to_owned()))
                })
                .collect();
            layered.into_iter().fold(command, |command, (id, value)| {
                command.mut_arg(id, |arg| arg.default_value(value))
            })
        })
    }
}

/// The settings of this process that no flag carries: each name of [`ENVIRONMENT`]
/// from its variable, else from the config file.
#[derive(Debug, Default)]
pub struct Settings {
    file: ConfigFile,
}

impl Settings {
    /// A setting from the environment (unless empty), else from the config file.
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .or_else(|| self.file.get(name).map(str::to_owned))
    }

    /// A `true`/`false` setting.
    fn flag(&self, name: &str) -> Result<Option<bool>> {
        match self.get(name) {
            None => Ok(None),
            Some(value) => match value.parse::<bool>() {
                Ok(flag) => Ok(Some(flag)),
                Err(_) => Err(CliError::NotABool {
                    name: name.to_owned(),
                    value,
                }),
            },
        }
    }

    /// The storage settings (`SLUICE_STORAGE_CONFIG`, then `SLUICE_S3__*` over it).
    pub fn storage(&self) -> Result<StorageSettings> {
        let mut settings = match self.get("SLUICE_STORAGE_CONFIG") {
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|source| CliError::Io {
                    context: format!("reading SLUICE_STORAGE_CONFIG {path}"),
                    source,
                })?;
                serde_saphyr::from_str::<StorageSettings>(&text).map_err(|err| {
                    CliError::ConfigFile {
                        variable: "SLUICE_STORAGE_CONFIG",
                        path,
                        message: first_line(&err),
                    }
                })?
            }
            None => StorageSettings::default(),
        };
        if settings.max_retries == 0 {
            settings.max_retries = StorageSettings::default_max_retries();
        }
        if let Some(region) = self.get("SLUICE_S3__REGION") {
            settings.s3.region = Some(region);
        }
        if let Some(endpoint) = self.get("SLUICE_S3__ENDPOINT") {
            settings.s3.endpoint = Some(endpoint);
        }
        if let Some(path_style) = self.flag("SLUICE_S3__PATH_STYLE")? {
            settings.s3.path_style = Some(path_style);
        }
        if let Some(allow_http) = self.flag("SLUICE_S3__ALLOW_HTTP")? {
            settings.s3.allow_http = Some(allow_http);
        }
        if self.get("AWS_ACCESS_KEY_ID").is_none() {
            settings.profile_credentials = shared_profile_credentials()?;
        }
        Ok(settings)
    }

    /// The Step Functions settings, or `None` when nothing points at Step Functions
    /// (no endpoint, no region).
    pub fn step_functions(&self) -> Option<sluice_scheduler::sfn::StepFunctionsSettings> {
        let endpoint = self.get("SLUICE_SFN__ENDPOINT");
        let region = self.get("SLUICE_SFN__REGION");
        let configured = endpoint.is_some()
            || region.is_some()
            || self.get("AWS_REGION").is_some()
            || self.get("AWS_DEFAULT_REGION").is_some();
        configured.then_some(sluice_scheduler::sfn::StepFunctionsSettings { endpoint, region })
    }

    /// Where the autoscaler's ECS or EMR API is (`SLUICE_AUTOSCALE__ENDPOINT`,
    /// `SLUICE_AUTOSCALE__REGION`; else the AWS chain).
    pub fn autoscale_api(&self) -> sluice_scheduler::autoscale::AwsApi {
        sluice_scheduler::autoscale::AwsApi {
            endpoint: self.get("SLUICE_AUTOSCALE__ENDPOINT"),
            region: self.get("SLUICE_AUTOSCALE__REGION"),
        }
    }

    /// `SLUICE_EMR__ENDPOINT`, for `sluice emr submit`.
    pub fn emr_endpoint(&self) -> Option<String> {
        self.get("SLUICE_EMR__ENDPOINT")
    }
}

/// The first line of a parser's error (the rest is a snippet of the file).
fn first_line(err: &impl std::fmt::Display) -> String {
    err.to_string()
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// The keys of the active profile in the shared credentials file, if it has them.
fn shared_profile_credentials() -> Result<Option<StaticCredentials>> {
    let path = match std::env::var_os("AWS_SHARED_CREDENTIALS_FILE") {
        Some(path) => std::path::PathBuf::from(path),
        None => match std::env::var_os("HOME") {
            Some(home) => std::path::Path::new(&home).join(".aws").join("credentials"),
            None => return Ok(None),
        },
    };
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".to_owned());
    let mut in_profile = false;
    let mut values = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_profile = section.trim() == profile;
            continue;
        }
        if in_profile && let Some((key, value)) = line.split_once('=') {
            values.insert(key.trim().to_owned(), value.trim().to_owned());
        }
    }
    let (Some(access_key_id), Some(secret_access_key)) = (
        values.remove("aws_access_key_id"),
        values.remove("aws_secret_access_key"),
    ) else {
        return Ok(None);
    };
    Ok(Some(StaticCredentials {
        access_key_id,
        secret_access_key,
        session_token: values.remove("aws_session_token"),
        source: format!("profile {profile} in {}", path.display()),
    }))
}

/// Variables read here rather than through a command's flags, with what they mean.
pub const ENVIRONMENT: &[(&str, &str)] = &[
    (
        "SLUICE_CONFIG",
        "a YAML file of these settings by the same names (`SLUICE_SCHEDULER__PORT: 50050`); variables and flags override it",
    ),
    (
        "SLUICE_STORAGE_CONFIG",
        "a YAML file: `s3: {region, endpoint, path_style, allow_http}`, `buckets: {NAME: {…}}`, `max_retries`",
    ),
    ("SLUICE_S3__REGION", "the S3 region for every bucket"),
    (
        "SLUICE_S3__ENDPOINT",
        "a custom S3 endpoint (S3-compatible servers)",
    ),
    ("SLUICE_S3__PATH_STYLE", "`true` to address buckets by path"),
    (
        "SLUICE_S3__ALLOW_HTTP",
        "`true` to allow plain-HTTP endpoints",
    ),
    (
        "SLUICE_SFN__ENDPOINT",
        "a Step Functions endpoint instead of AWS's (task-token callbacks, the activity worker)",
    ),
    ("SLUICE_SFN__REGION", "the Step Functions region"),
    (
        "SLUICE_AUTOSCALE__ENDPOINT",
        "an ECS or EMR endpoint for `--autoscale ecs|emr` instead of AWS's",
    ),
    (
        "SLUICE_AUTOSCALE__REGION",
        "the region of that ECS or EMR API",
    ),
    (
        "SLUICE_EMR__ENDPOINT",
        "an EMR endpoint for `sluice emr submit` instead of AWS's",
    ),
    (
        "SLUICE_TOKEN",
        "the bearer token a client (submit, runs, sfn-worker, …) presents to the scheduler",
    ),
    (
        "SLUICE_TOKEN_FILE",
        "a file holding that token (a mounted secret); read when SLUICE_TOKEN is not set",
    ),
    (
        "SLUICE_TLS__CA",
        "the CA (PEM) a client or executor verifies the scheduler's certificate with; a client given it reaches `host:port` over TLS",
    ),
];

/// One setting the binary reads: a row of `sluice settings`.
struct Key {
    /// The commands that read it (`all` for [`ENVIRONMENT`]).
    commands: Vec<String>,
    /// Its flag, as Markdown (empty when only a variable sets it).
    flag: String,
    /// Its declared default, values joined by commas.
    default: String,
    /// What it means.
    meaning: String,
}

/// The one table of settings: every flag with a variable (the first command's flag,
/// default and help) and [`ENVIRONMENT`], by variable name. What a config file may
/// hold and what `sluice settings` prints.
fn keys() -> BTreeMap<String, Key> {
    let mut keys: BTreeMap<String, Key> = BTreeMap::new();
    for command in Cli::command().get_subcommands() {
        for arg in command.get_arguments() {
            let Some(env) = arg.get_env() else {
                continue;
            };
            let key = keys
                .entry(env.to_string_lossy().to_string())
                .or_insert_with(|| Key {
                    commands: Vec::new(),
                    flag: arg
                        .get_long()
                        .map(|long| format!("`--{long}`"))
                        .unwrap_or_default(),
                    default: arg
                        .get_default_values()
                        .iter()
                        .map(|v| v.to_string_lossy().to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                    meaning: arg
                        .get_help()
                        .map(|h| h.to_string().replace('\n', " "))
                        .unwrap_or_default(),
                });
            key.commands.push(command.get_name().to_owned());
        }
    }
    for (name, meaning) in ENVIRONMENT {
        keys.entry((*name).to_owned()).or_insert_with(|| Key {
            commands: vec!["all".to_owned()],
            flag: String::new(),
            default: String::new(),
            meaning: (*meaning).to_owned(),
        });
    }
    keys
}

/// Every setting the binary reads, as one Markdown table generated from its flags and
/// [`ENVIRONMENT`]: the reference the chart, the ECS template and the EMR bootstrap
/// are checked against (`sluice settings`).
pub fn settings_table() -> String {
    let mut table =
        String::from("| variable | flag | commands | default | meaning |\n|---|---|---|---|---|\n");
    for (name, key) in keys() {
        let default = if key.default.is_empty() {
            String::new()
        } else {
            format!("`{}`", key.default)
        };
        table.push_str(&format!(
            "| `{name}` | {} | {} | {default} | {} |\n",
            key.flag,
            key.commands.join(", "),
            key.meaning.replace('|', "\\|")
        ));
    }
    table
}

/// Every `SLUICE_*` name the binary reads: the names a config file may hold.
fn known_settings() -> BTreeSet<String> {
    keys().into_keys().collect()
}
