//! Settings the binary reads from its environment and hands to the library crates.
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

use std::collections::BTreeMap;
use std::sync::OnceLock;

use sluice_jobs::{StaticCredentials, StorageSettings};

use crate::error::{CliError, Result};

/// The storage settings of this process.
pub fn storage_settings() -> Result<StorageSettings> {
    let mut settings = match setting("SLUICE_STORAGE_CONFIG") {
        Some(path) => {
            let text = std::fs::read_to_string(&path).map_err(|source| CliError::Io {
                context: format!("reading SLUICE_STORAGE_CONFIG {path}"),
                source,
            })?;
            serde_saphyr::from_str::<StorageSettings>(&text).map_err(|err| {
                CliError::Usage(format!(
                    "SLUICE_STORAGE_CONFIG {}: {}",
                    path,
                    err.to_string().lines().next().unwrap_or_default()
                ))
            })?
        }
        None => StorageSettings::default(),
    };
    if settings.max_retries == 0 {
        settings.max_retries = StorageSettings::default_max_retries();
    }
    let text = |name: &str| setting(name);
    let flag = |name: &str| -> Result<Option<bool>> {
        match text(name) {
            None => Ok(None),
            Some(value) => value
                .parse::<bool>()
                .map(Some)
                .map_err(|_| CliError::Usage(format!("{name}=`{value}`: write true or false"))),
        }
    };
    if let Some(region) = text("SLUICE_S3__REGION") {
        settings.s3.region = Some(region);
    }
    if let Some(endpoint) = text("SLUICE_S3__ENDPOINT") {
        settings.s3.endpoint = Some(endpoint);
    }
    if let Some(path_style) = flag("SLUICE_S3__PATH_STYLE")? {
        settings.s3.path_style = Some(path_style);
    }
    if let Some(allow_http) = flag("SLUICE_S3__ALLOW_HTTP")? {
        settings.s3.allow_http = Some(allow_http);
    }
    if text("AWS_ACCESS_KEY_ID").is_none() {
        settings.profile_credentials = shared_profile_credentials()?;
    }
    Ok(settings)
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
    let mut values = std::collections::BTreeMap::new();
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

/// The Step Functions settings of this process, or `None` when nothing points at Step
/// Functions (no endpoint, no region).
pub fn step_functions_settings() -> Option<sluice_scheduler::sfn::StepFunctionsSettings> {
    let var = |name: &str| setting(name);
    let endpoint = var("SLUICE_SFN__ENDPOINT");
    let region = var("SLUICE_SFN__REGION");
    let configured = endpoint.is_some()
        || region.is_some()
        || var("AWS_REGION").is_some()
        || var("AWS_DEFAULT_REGION").is_some();
    configured.then_some(sluice_scheduler::sfn::StepFunctionsSettings { endpoint, region })
}

/// Where the autoscaler's ECS or EMR API is (`SLUICE_AUTOSCALE__ENDPOINT`,
/// `SLUICE_AUTOSCALE__REGION`; else the AWS chain).
pub fn autoscale_api() -> sluice_scheduler::autoscale::AwsApi {
    let var = |name: &str| setting(name);
    sluice_scheduler::autoscale::AwsApi {
        endpoint: var("SLUICE_AUTOSCALE__ENDPOINT"),
        region: var("SLUICE_AUTOSCALE__REGION"),
    }
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
];

/// Every setting the binary reads, as one Markdown table generated from its flags and
/// [`ENVIRONMENT`]: the reference the chart, the ECS template and the EMR bootstrap
/// are checked against (`sluice settings`).
pub fn settings_table() -> String {
    use clap::CommandFactory;
    let mut rows: std::collections::BTreeMap<String, (Vec<String>, String, String, String)> =
        Default::default();
    let cli = crate::cli::Cli::command();
    for command in cli.get_subcommands() {
        for arg in command.get_arguments() {
            let Some(env) = arg.get_env() else {
                continue;
            };
            let name = env.to_string_lossy().to_string();
            let flag = arg
                .get_long()
                .map(|long| format!("`--{long}`"))
                .unwrap_or_default();
            let default = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().to_string())
                .collect::<Vec<_>>()
                .join(",");
            let help = arg
                .get_help()
                .map(|h| h.to_string().replace('\n', " "))
                .unwrap_or_default();
            let row = rows
                .entry(name)
                .or_insert_with(|| (Vec::new(), flag, default, help));
            row.0.push(command.get_name().to_owned());
        }
    }
    for (name, meaning) in ENVIRONMENT {
        rows.entry((*name).to_owned()).or_insert_with(|| {
            (
                vec!["all".to_owned()],
                String::new(),
                String::new(),
                (*meaning).to_owned(),
            )
        });
    }
    let mut table =
        String::from("| variable | flag | commands | default | meaning |\n|---|---|---|---|---|\n");
    for (name, (commands, flag, default, help)) in rows {
        let default = if default.is_empty() {
            String::new()
        } else {
            format!("`{default}`")
        };
        table.push_str(&format!(
            "| `{name}` | {flag} | {} | {default} | {} |\n",
            commands.join(", "),
            help.replace('|', "\\|")
        ));
    }
    table
}

/// `SLUICE_EMR__ENDPOINT`, for `sluice emr submit`.
pub fn emr_endpoint() -> Option<String> {
    setting("SLUICE_EMR__ENDPOINT")
}

/// Settings from the file `SLUICE_CONFIG` names: a YAML map of the same `SLUICE_*`
/// names as the variables, below them in precedence (defaults < file < variables <
/// flags). Loaded once by [`load_config_file`].
static CONFIG_FILE: OnceLock<BTreeMap<String, String>> = OnceLock::new();

/// Reads `SLUICE_CONFIG` (when set). Unknown names are errors: the file may only hold
/// settings the binary reads (`sluice settings`).
pub fn load_config_file() -> Result<()> {
    let Some(path) = std::env::var_os("SLUICE_CONFIG") else {
        let _ = CONFIG_FILE.set(BTreeMap::new());
        return Ok(());
    };
    let shown = path.to_string_lossy().to_string();
    let text = std::fs::read_to_string(&path).map_err(|source| CliError::Io {
        context: format!("reading SLUICE_CONFIG {shown}"),
        source,
    })?;
    let raw: BTreeMap<String, serde_json::Value> =
        serde_saphyr::from_str(&text).map_err(|err| {
            CliError::Usage(format!(
                "SLUICE_CONFIG {shown}: {}",
                err.to_string().lines().next().unwrap_or_default()
            ))
        })?;
    let known = known_settings();
    let mut values = BTreeMap::new();
    for (name, value) in raw {
        if !known.contains(&name) {
            return Err(CliError::Usage(format!(
                "SLUICE_CONFIG {shown}: `{name}` is not a setting (see `sluice settings`)"
            )));
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
    let _ = CONFIG_FILE.set(values);
    Ok(())
}

/// A setting from the environment, else from the config file.
pub fn setting(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .or_else(|| CONFIG_FILE.get().and_then(|file| file.get(name).cloned()))
}

/// Every `SLUICE_*` name the binary reads.
fn known_settings() -> std::collections::BTreeSet<String> {
    use clap::CommandFactory;
    let mut names: std::collections::BTreeSet<String> = ENVIRONMENT
        .iter()
        .map(|(name, _)| (*name).to_owned())
        .collect();
    for command in crate::cli::Cli::command().get_subcommands() {
        for arg in command.get_arguments() {
            if let Some(env) = arg.get_env() {
                names.insert(env.to_string_lossy().to_string());
            }
        }
    }
    names
}

/// The command line with the config file's values added as flags, where neither the
/// command line nor the environment gives them.
pub fn args_with_config_file(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    use clap::CommandFactory;
    let Some(file) = CONFIG_FILE.get().filter(|file| !file.is_empty()) else {
        return args;
    };
    let Some(position) = args
        .iter()
        .skip(1)
        .position(|a| !a.to_string_lossy().starts_with('-'))
    else {
        return args;
    };
    let position = position + 1;
    let name = args[position].to_string_lossy().to_string();
    let cli = crate::cli::Cli::command();
    let Some(command) = cli.find_subcommand(&name) else {
        return args;
    };
    let mut added: Vec<std::ffi::OsString> = Vec::new();
    for arg in command.get_arguments() {
        let (Some(env), Some(long)) = (arg.get_env(), arg.get_long()) else {
            continue;
        };
        let env = env.to_string_lossy().to_string();
        let flag = format!("--{long}");
        let given = args.iter().any(|a| {
            a.to_string_lossy() == flag || a.to_string_lossy().starts_with(&format!("{flag}="))
        });
        if given || std::env::var_os(&env).is_some() {
            continue;
        }
        if let Some(value) = file.get(&env) {
            added.push(format!("{flag}={value}").into());
        }
    }
    let mut result = args[..=position].to_vec();
    result.extend(added);
    result.extend(args[position + 1..].iter().cloned());
    result
}
