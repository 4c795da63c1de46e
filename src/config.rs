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
//! Variables override the file. Credentials come from the standard AWS chain
//! (`AWS_ACCESS_KEY_ID`…, web identity, ECS task role, instance metadata) and are never
//! printed.

use sluice_jobs::StorageSettings;

use crate::error::{CliError, Result};

/// The storage settings of this process.
pub fn storage_settings() -> Result<StorageSettings> {
    let mut settings = match std::env::var_os("SLUICE_STORAGE_CONFIG") {
        Some(path) => {
            let text = std::fs::read_to_string(&path).map_err(|source| CliError::Io {
                context: format!("reading SLUICE_STORAGE_CONFIG {}", path.to_string_lossy()),
                source,
            })?;
            serde_saphyr::from_str::<StorageSettings>(&text).map_err(|err| {
                CliError::Usage(format!(
                    "SLUICE_STORAGE_CONFIG {}: {}",
                    path.to_string_lossy(),
                    err.to_string().lines().next().unwrap_or_default()
                ))
            })?
        }
        None => StorageSettings::default(),
    };
    if settings.max_retries == 0 {
        settings.max_retries = StorageSettings::default_max_retries();
    }
    let text = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
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
    Ok(settings)
}
