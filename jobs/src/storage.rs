//! Storage as Spark sees it: listings skip hidden paths (`_SUCCESS`, `_temporary/`,
//! `.crc` files and anything else whose name starts with `_` or `.`) below the prefix
//! being listed, so a reader never picks up a run's staged files or markers.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};

/// Wraps a store so that listings hide Spark's hidden paths below the listed prefix.
/// Reads and writes of named objects pass through, so committers can still reach
/// `_temporary/` by naming it in the prefix.
#[derive(Debug)]
pub struct SparkLayoutStore {
    inner: Arc<dyn ObjectStore>,
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
