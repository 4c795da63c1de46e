//! Storage: the object stores every Sluice process resolves `file://` and `s3://` URLs
//! to, configured the same way on the scheduler and the executors, and seen as Spark
//! sees them — listings skip hidden paths (`_SUCCESS`, `_temporary/`, `.crc` files and
//! anything else whose name starts with `_` or `.`) below the prefix being listed, so a
//! reader never picks up a run's staged files or markers.
//!
//! S3 credentials come from the standard AWS chain (environment, shared credentials
//! file, web identity / IRSA, ECS task role, instance metadata) through `object_store`; region, endpoint,
//! path-style addressing and plain HTTP are set per process and per bucket in
//! [`StorageSettings`]. Transient errors (503 SlowDown, connection resets) are retried
//! with exponential backoff.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::common::DataFusionError;
use datafusion::execution::object_store::ObjectStoreRegistry;
use futures::stream::{BoxStream, StreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{BackoffConfig, RetryConfig};
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};

/// S3 settings for all buckets, or for one.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Settings {
    /// The AWS region (default: the AWS environment's, else `us-east-1`).
    #[serde(default)]
    pub region: Option<String>,
    /// A custom endpoint for S3-compatible servers (`http://127.0.0.1:9000`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Address buckets by path (`endpoint/bucket/key`) instead of virtual host.
    #[serde(default)]
    pub path_style: Option<bool>,
    /// Allow plain HTTP endpoints.
    #[serde(default)]
    pub allow_http: Option<bool>,
}

impl S3Settings {
    /// `self`, with `overrides` set on top.
    fn merged(&self, overrides: Option<&S3Settings>) -> S3Settings {
        let Some(o) = overrides else {
            return self.clone();
        };
        S3Settings {
            region: o.region.clone().or_else(|| self.region.clone()),
            endpoint: o.endpoint.clone().or_else(|| self.endpoint.clone()),
            path_style: o.path_style.or(self.path_style),
            allow_http: o.allow_http.or(self.allow_http),
        }
    }
}

/// How a process reaches storage. The scheduler and the executors get the same.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    /// Settings for every S3 bucket.
    #[serde(default)]
    pub s3: S3Settings,
    /// Per-bucket overrides, by bucket name.
    #[serde(default)]
    pub buckets: BTreeMap<String, S3Settings>,
    /// How many times a failed request is retried (transient errors only).
    #[serde(default = "default_retries")]
    pub max_retries: usize,
    /// Keys from the shared credentials file (`~/.aws/credentials`, `AWS_PROFILE`), used
    /// when the environment has none; never read from the settings file.
    #[serde(skip)]
    pub profile_credentials: Option<StaticCredentials>,
}

/// An access key pair. Its `Debug` shows neither secret.
#[derive(Clone, PartialEq, Eq)]
pub struct StaticCredentials {
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
    /// A session token, for temporary credentials.
    pub session_token: Option<String>,
    /// Where they came from (`profile default in ~/.aws/credentials`), for logs.
    pub source: String,
}

impl fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticCredentials")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

fn default_retries() -> usize {
    10
}

impl StorageSettings {
    /// Retries of a failed request unless configured otherwise.
    pub fn default_max_retries() -> usize {
        default_retries()
    }
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            s3: S3Settings::default(),
            buckets: BTreeMap::new(),
            max_retries: default_retries(),
            profile_credentials: None,
        }
    }
}

/// The object stores of a process, created on first use per bucket and shared by every
/// session of the process, so connection pools are reused.
pub struct ObjectStores {
    settings: StorageSettings,
    stores: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
}

impl fmt::Debug for ObjectStores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the stores themselves: their clients may hold credentials.
        f.debug_struct("ObjectStores")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl ObjectStores {
    /// The stores of a process configured by `settings`.
    pub fn new(settings: StorageSettings) -> Arc<Self> {
        Arc::new(Self {
            settings,
            stores: Mutex::new(HashMap::new()),
        })
    }

    /// The settings the stores are built from.
    pub fn settings(&self) -> &StorageSettings {
        &self.settings
    }

    fn key(url: &url::Url) -> String {
        let scheme = match url.scheme() {
            "s3a" => "s3",
            other => other,
        };
        format!("{scheme}://{}", url.host_str().unwrap_or_default())
    }

    fn build(&self, url: &url::Url) -> Result<Arc<dyn ObjectStore>, DataFusionError> {
        match url.scheme() {
            "file" => Ok(Arc::new(SparkLayoutStore::new(Arc::new(
                LocalFileSystem::new(),
            )))),
            "s3" | "s3a" => {
                let bucket = url.host_str().ok_or_else(|| {
                    DataFusionError::Configuration(format!("{url}: an s3:// URL needs a bucket"))
                })?;
                let settings = self.settings.s3.merged(self.settings.buckets.get(bucket));
                // The standard AWS credential chain: environment, web identity, ECS task
                // role, instance metadata.
                let mut builder = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_retry(RetryConfig {
                        backoff: BackoffConfig {
                            init_backoff: Duration::from_millis(100),
                            max_backoff: Duration::from_secs(15),
                            base: 2.0,
                        },
                        max_retries: self.settings.max_retries,
                        retry_timeout: Duration::from_secs(180),
                    });
                if let Some(credentials) = &self.settings.profile_credentials {
                    tracing::info!(bucket, source = %credentials.source, "S3 credentials from the shared credentials file");
                    builder = builder
                        .with_access_key_id(&credentials.access_key_id)
                        .with_secret_access_key(&credentials.secret_access_key);
                    if let Some(token) = &credentials.session_token {
                        builder = builder.with_token(token);
                    }
                }
                if let Some(region) = &settings.region {
                    builder = builder.with_region(region);
                }
                if let Some(endpoint) = &settings.endpoint {
                    builder = builder.with_endpoint(endpoint);
                }
                if let Some(path_style) = settings.path_style {
                    builder = builder.with_virtual_hosted_style_request(!path_style);
                }
                if let Some(allow_http) = settings.allow_http {
                    builder = builder.with_allow_http(allow_http);
                }
                let store = builder.build().map_err(|err| {
                    DataFusionError::Configuration(format!("S3 bucket `{bucket}`: {err}"))
                })?;
                Ok(Arc::new(SparkLayoutStore::new(Arc::new(store))))
            }
            other => Err(DataFusionError::Configuration(format!(
                "{url}: Sluice reads and writes file:// and s3:// locations, not {other}://"
            ))),
        }
    }
}

impl ObjectStoreRegistry for ObjectStores {
    fn register_store(
        &self,
        url: &url::Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        self.stores
            .lock()
            .ok()
            .and_then(|mut stores| stores.insert(Self::key(url), store))
    }

    fn get_store(&self, url: &url::Url) -> Result<Arc<dyn ObjectStore>, DataFusionError> {
        let key = Self::key(url);
        let mut stores = self
            .stores
            .lock()
            .map_err(|_| DataFusionError::Internal("object store registry poisoned".into()))?;
        if let Some(store) = stores.get(&key) {
            return Ok(Arc::clone(store));
        }
        let store = self.build(url)?;
        stores.insert(key, Arc::clone(&store));
        Ok(store)
    }
}

/// Wraps a store so that listings hide Spark's hidden paths below the listed prefix.
/// Reads and writes of named objects pass through, so committers can still reach
/// `_temporary/` by naming it in the prefix.
pub struct SparkLayoutStore {
    inner: Arc<dyn ObjectStore>,
}

impl fmt::Debug for SparkLayoutStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Display, not Debug, of the inner store: its client config may hold credentials.
        write!(f, "SparkLayoutStore({})", self.inner)
    }
}

impl SparkLayoutStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self { inner }
    }
}

/// True when a path segment is one Spark, Hive and Athena skip.
pub fn is_hidden_segment(segment: &str) -> bool {
    segment.starts_with('_') || segment.starts_with('.')
}

fn visible_below(prefix: Option<&Path>, location: &Path) -> bool {
    let relative: Vec<_> = match prefix {
        Some(prefix) => match location.prefix_match(prefix) {
            Some(parts) => parts.collect(),
            None => return true,
        },
        None => location.parts().collect(),
    };
    !relative.iter().any(|part| is_hidden_segment(part.as_ref()))
}

impl fmt::Display for SparkLayoutStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SparkLayout({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for SparkLayoutStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let owned_prefix = prefix.cloned();
        self.inner
            .list(prefix)
            .filter(move |item| {
                let keep = match item {
                    Ok(meta) => visible_below(owned_prefix.as_ref(), &meta.location),
                    Err(_) => true,
                };
                futures::future::ready(keep)
            })
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let mut listed = self.inner.list_with_delimiter(prefix).await?;
        listed
            .common_prefixes
            .retain(|dir| visible_below(prefix, dir));
        listed
            .objects
            .retain(|meta| visible_below(prefix, &meta.location));
        Ok(listed)
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_paths_below_the_prefix_are_skipped() {
        let prefix = Path::from("lake/_landing/claims");
        assert!(visible_below(
            Some(&prefix),
            &Path::from("lake/_landing/claims/fill_month=2024-01/part-0.parquet")
        ));
        assert!(!visible_below(
            Some(&prefix),
            &Path::from("lake/_landing/claims/_SUCCESS")
        ));
        assert!(!visible_below(
            Some(&prefix),
            &Path::from("lake/_landing/claims/_temporary/run/part-0.parquet")
        ));
    }
}
