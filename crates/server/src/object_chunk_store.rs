//! Chunks in S3-compatible object storage (Garage, MinIO, AWS S3), through
//! the `object_store` crate: one object per large chunk at
//! `<prefix>/chunks/<first 2 hex digits>/<hex>`, and packs of small chunks
//! at `<prefix>/packs/<first 2 hex digits>/<id>` (see `packs.rs`).
//!
//! Architecture invariant: the metadata database, not the bucket, says
//! which chunks exist. The store never asks the bucket before it writes (no
//! HEAD, no conditional PUT): every chunk of a batch is PUT, which is
//! idempotent for content-addressed objects, and a PUT counts only once the
//! store acknowledged it. An object the metadata does not know is garbage a
//! later collection may leave behind, never a chunk a reader relies on.
//!
//! Settings come from an `s3://BUCKET/PREFIX` URL plus explicit values
//! ([`ObjectStoreConfig`]); what is not given comes from the environment
//! variables the AWS SDKs read (`AWS_ENDPOINT_URL`, `AWS_REGION`,
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP`, ...).
//! Requests are path-style (`<endpoint>/<bucket>/<key>`), as Garage wants.
//!
//! TLS is rustls with `ring`, handed to reqwest as a finished config
//! ([`RingConnector`]): no process-wide crypto provider, no aws-lc-rs. It
//! trusts the system's CA certificates (`SSL_CERT_FILE` and `SSL_CERT_DIR`
//! are honoured); object_store's own client settings (`AWS_PROXY_URL`,
//! `AWS_ALLOW_INVALID_CERTIFICATES`, its timeouts) are not used, except
//! `AWS_ALLOW_HTTP`.

use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{StreamExt as _, TryStreamExt as _};
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::client::{HttpClient, HttpConnector};
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientConfigKey, ClientOptions, ObjectStore as _, ObjectStoreExt as _,
    PutPayload, RetryConfig,
};
use syncfolder_core::Hash;

use crate::chunk_store::{ChunkStore, Space};
use crate::packs::PackId;
use crate::{Error, Result};

/// PUTs of one batch in flight at once.
const PUTS_IN_FLIGHT: usize = 16;
/// GETs of one `get_many` in flight at once.
const GETS_IN_FLIGHT: usize = 16;
/// Longest wait for a TCP (and TLS) connection to a storage node.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest one request may take, a 4 MiB chunk's body included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Retries of a request that failed to connect, timed out or got a 5xx
/// (Garage answers 503 at once when it cannot reach a quorum). With
/// [`retry_config`]'s backoff they span about 2-8 s: a node restarting is
/// waited for, a cluster that is down is reported soon.
const MAX_RETRIES: usize = 5;
/// No retry starts later than this after the first attempt: a request
/// fails within about `RETRY_TIMEOUT + REQUEST_TIMEOUT` (80 s) whatever the
/// storage does, rather than hanging on a dead node.
const RETRY_TIMEOUT: Duration = Duration::from_secs(20);

/// Where the chunks are and how to reach them. Anything `None` comes from
/// the environment (see the module comment), then object_store's defaults
/// (region `us-east-1`, HTTPS only, AWS's endpoint).
#[derive(Clone, PartialEq, Eq)]
pub struct ObjectStoreConfig {
    pub bucket: String,
    /// Path segments before `chunks/`, without leading or trailing `/`;
    /// empty for the bucket's root.
    pub prefix: String,
    /// `http(s)://host:port` of the S3 API (`AWS_ENDPOINT_URL`).
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Whether a plain `http://` endpoint is allowed.
    pub allow_http: Option<bool>,
}

impl std::fmt::Debug for ObjectStoreConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ObjectStoreConfig")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

impl ObjectStoreConfig {
    /// `s3://BUCKET` or `s3://BUCKET/PREFIX`, everything else from the
    /// environment until set.
    pub fn from_url(url: &str) -> Result<ObjectStoreConfig> {
        let invalid = |reason: &str| {
            Error::Config(format!(
                "invalid object storage URL {:?}: {reason}; expected s3://BUCKET or s3://BUCKET/PREFIX",
                without_credentials(url)
            ))
        };
        let rest = url
            .get(..5)
            .filter(|scheme| scheme.eq_ignore_ascii_case("s3://"))
            .map(|_| &url[5..])
            .ok_or_else(|| invalid("the scheme must be s3://"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(invalid("no bucket"));
        }
        if !bucket
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'-' | b'_'))
        {
            return Err(invalid(
                "a bucket name has only letters, digits, '.', '-' and '_'",
            ));
        }
        if prefix.contains(['?', '#']) {
            return Err(invalid("no query or fragment is allowed"));
        }
        let prefix = prefix.trim_matches('/');
        if !prefix.is_empty() {
            Path::parse(prefix).map_err(|err| invalid(&format!("bad prefix: {err}")))?;
        }
        Ok(ObjectStoreConfig {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            allow_http: None,
        })
    }

    /// The settings on top of `base` (the environment's, in production):
    /// each value given here wins.
    fn apply_to(&self, base: AmazonS3Builder) -> AmazonS3Builder {
        let mut builder = base
            .with_bucket_name(&self.bucket)
            .with_virtual_hosted_style_request(false);
        if let Some(endpoint) = &self.endpoint {
            // also over `AWS_ENDPOINT_URL_S3`, which object_store prefers
            builder = builder
                .with_endpoint(endpoint)
                .with_config(AmazonS3ConfigKey::S3Endpoint, endpoint);
        }
        if let Some(region) = &self.region {
            builder = builder.with_region(region);
        }
        if let Some(access_key_id) = &self.access_key_id {
            builder = builder.with_access_key_id(access_key_id);
        }
        if let Some(secret_access_key) = &self.secret_access_key {
            builder = builder.with_secret_access_key(secret_access_key);
        }
        if let Some(allow_http) = self.allow_http {
            builder = builder.with_allow_http(allow_http);
        }
        builder
    }
}

/// One object per chunk in an S3 bucket. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ObjectChunkStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    s3: AmazonS3,
    bucket: String,
    /// `<prefix>/chunks`
    chunks: Path,
    /// `<prefix>/packs`
    packs: Path,
    /// `<prefix>/quarantine`
    quarantine: Path,
    /// `<prefix>/probe`
    probe: Path,
}

impl ObjectChunkStore {
    /// A store for `config`, with the environment filling in what it does
    /// not say. Sends no request: [`ChunkStore::check_writable`] is the
    /// first contact.
    pub fn open(config: &ObjectStoreConfig) -> Result<ObjectChunkStore> {
        let s3 = config
            .apply_to(AmazonS3Builder::from_env())
            .with_retry(retry_config())
            .with_http_connector(RingConnector)
            .build()
            .map_err(|err| {
                Error::Config(format!("object storage s3://{}: {err}", config.bucket))
            })?;
        let root = Path::parse(&config.prefix)
            .map_err(|err| Error::Config(format!("object storage prefix: {err}")))?;
        Ok(ObjectChunkStore {
            inner: Arc::new(Inner {
                s3,
                bucket: config.bucket.clone(),
                chunks: root.clone().join("chunks"),
                packs: root.clone().join("packs"),
                quarantine: root.clone().join("quarantine"),
                probe: root.join("probe"),
            }),
        })
    }

    /// `<prefix>/chunks/ab/<hex>`.
    pub fn chunk_path(&self, hash: &Hash) -> Path {
        chunk_path(&self.inner.chunks, hash)
    }
}

fn retry_config() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: MAX_RETRIES,
        retry_timeout: RETRY_TIMEOUT,
    }
}

impl Inner {
    /// An [`io::Error`] naming the operation and the object; its kind says
    /// what happened: `NotFound`, `PermissionDenied` (refused credentials or
    /// access), otherwise `Other`.
    fn io_error(&self, operation: &str, path: &Path, err: object_store::Error) -> io::Error {
        let kind = match &err {
            object_store::Error::NotFound { .. } => io::ErrorKind::NotFound,
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => io::ErrorKind::PermissionDenied,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(
            kind,
            format!("{operation} s3://{}/{path}: {err}", self.bucket),
        )
    }

    async fn put(&self, hash: Hash, bytes: Bytes) -> io::Result<()> {
        let path = chunk_path(&self.chunks, &hash);
        self.s3
            .put(&path, PutPayload::from(bytes))
            .await
            .map_err(|err| self.io_error("storing chunk", &path, err))?;
        Ok(())
    }

    async fn get(&self, hash: Hash) -> io::Result<Option<Bytes>> {
        let path = chunk_path(&self.chunks, &hash);
        let read = async { self.s3.get(&path).await?.bytes().await };
        match read.await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(err) => Err(self.io_error("reading chunk", &path, err)),
        }
    }

    async fn delete(&self, path: &Path, operation: &str) -> io::Result<()> {
        match self.s3.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(self.io_error(operation, path, err)),
        }
    }

    async fn delete_many(&self, hashes: Vec<Hash>) -> io::Result<()> {
        let paths: Vec<Path> = hashes
            .iter()
            .map(|hash| chunk_path(&self.chunks, hash))
            .collect();
        let mut results = self
            .s3
            .delete_stream(futures::stream::iter(paths.into_iter().map(Ok)).boxed());
        while let Some(result) = results.next().await {
            match result {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(err) => {
                    return Err(self.io_error("deleting chunks", &self.chunks, err));
                }
            }
        }
        Ok(())
    }

    /// Copies the object to `<prefix>/quarantine/<hex>` (replacing an
    /// earlier copy), then deletes it.
    async fn quarantine(&self, hash: Hash) -> io::Result<bool> {
        let path = chunk_path(&self.chunks, &hash);
        let aside = self.quarantine.clone().join(hash.to_hex().as_str());
        match self.s3.copy(&path, &aside).await {
            Ok(()) => {}
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(err) => return Err(self.io_error("quarantining chunk", &path, err)),
        }
        self.delete(&path, "deleting quarantined chunk").await?;
        Ok(true)
    }

    /// S3 lists keys in byte order, and `ab/<hex>` sorts as `<hex>` does:
    /// the listing is in hash order. Keys that are no chunk name are skipped.
    async fn list_after(&self, after: Option<Hash>, limit: usize) -> io::Result<Vec<(Hash, u64)>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let listing = match after {
            Some(after) => self
                .s3
                .list_with_offset(Some(&self.chunks), &chunk_path(&self.chunks, &after)),
            None => self.s3.list(Some(&self.chunks)),
        };
        let chunks = &self.chunks;
        listing
            .try_filter_map(|meta| async move {
                Ok(hash_of(chunks, &meta.location).map(|hash| (hash, meta.size)))
            })
            .take(limit)
            .try_collect()
            .await
            .map_err(|err| self.io_error("listing chunks", &self.chunks, err))
    }

    /// `<prefix>/packs/ab/<id>`.
    fn pack_path(&self, pack: &PackId) -> Path {
        let name = pack.as_str();
        self.packs.clone().join(&name[..2]).join(name)
    }

    async fn put_pack(&self, pack: &PackId, bytes: Bytes) -> io::Result<()> {
        let path = self.pack_path(pack);
        self.s3
            .put(&path, PutPayload::from(bytes))
            .await
            .map_err(|err| self.io_error("storing pack", &path, err))?;
        Ok(())
    }

    /// One ranged GET per run of nearby ranges (object_store coalesces
    /// ranges less than 1 MiB apart and reads up to ten runs at once).
    async fn get_pack_ranges(
        &self,
        pack: &PackId,
        ranges: Vec<Range<u64>>,
    ) -> io::Result<Option<Vec<Bytes>>> {
        let path = self.pack_path(pack);
        match self.s3.get_ranges(&path, &ranges).await {
            Ok(parts) => Ok(Some(parts)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(err) => Err(self.io_error("reading pack", &path, err)),
        }
    }

    /// Keys list in byte order, and `ab/<id>` sorts as `<id>` does.
    async fn list_packs_after(
        &self,
        after: Option<PackId>,
        limit: usize,
    ) -> io::Result<Vec<PackId>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let listing = match &after {
            Some(after) => self
                .s3
                .list_with_offset(Some(&self.packs), &self.pack_path(after)),
            None => self.s3.list(Some(&self.packs)),
        };
        let packs = &self.packs;
        listing
            .try_filter_map(|meta| async move { Ok(pack_of(packs, &meta.location)) })
            .take(limit)
            .try_collect()
            .await
            .map_err(|err| self.io_error("listing packs", &self.packs, err))
    }

    async fn delete_packs(&self, packs: Vec<PackId>) -> io::Result<()> {
        let paths: Vec<Path> = packs.iter().map(|pack| self.pack_path(pack)).collect();
        let mut results = self
            .s3
            .delete_stream(futures::stream::iter(paths.into_iter().map(Ok)).boxed());
        while let Some(result) = results.next().await {
            match result {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(err) => return Err(self.io_error("deleting packs", &self.packs, err)),
            }
        }
        Ok(())
    }

    /// `<prefix>/quarantine/<hex>`, as [`Inner::quarantine`] names it.
    async fn keep_aside(&self, hash: Hash, bytes: Bytes) -> io::Result<()> {
        let aside = self.quarantine.clone().join(hash.to_hex().as_str());
        self.s3
            .put(&aside, PutPayload::from(bytes))
            .await
            .map_err(|err| self.io_error("keeping a corrupt chunk aside", &aside, err))?;
        Ok(())
    }

    async fn check_writable(&self) -> io::Result<()> {
        let path = self
            .probe
            .clone()
            .join(format!("ready.{:016x}", rand::random::<u64>()).as_str());
        self.s3
            .put(&path, PutPayload::from_static(b"ok"))
            .await
            .map_err(|err| self.io_error("writing a probe", &path, err))?;
        self.delete(&path, "deleting a probe").await
    }
}

/// `url` with anything before an `@` in its host part hidden: credentials
/// have no place in the URL, but whoever put them there should not find
/// them in a log.
fn without_credentials(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host_end = rest.find('/').unwrap_or(rest.len());
    match rest[..host_end].rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://<redacted>@{host}{}", &rest[host_end..]),
        None => url.to_owned(),
    }
}

fn chunk_path(chunks: &Path, hash: &Hash) -> Path {
    let hex = hash.to_hex();
    chunks.clone().join(&hex[..2]).join(hex.as_str())
}

/// The hash of `<chunks>/ab/<hex>`; `None` for any other key (also a
/// valid hash under the wrong fan-out directory, which would break the
/// order).
fn hash_of(chunks: &Path, location: &Path) -> Option<Hash> {
    let mut parts = location.prefix_match(chunks)?;
    let fan_out = parts.next()?;
    let name = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    let hash = Hash::from_hex(name.as_ref()).ok()?;
    (fan_out.as_ref() == &name.as_ref()[..2]).then_some(hash)
}

/// The pack of `<packs>/ab/<id>`; `None` for any other key.
fn pack_of(packs: &Path, location: &Path) -> Option<PackId> {
    let mut parts = location.prefix_match(packs)?;
    let fan_out = parts.next()?;
    let name = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    let pack = PackId::parse(name.as_ref())?;
    (fan_out.as_ref() == &name.as_ref()[..2]).then_some(pack)
}

impl ChunkStore for ObjectChunkStore {
    /// PUTs every distinct chunk of the batch, [`PUTS_IN_FLIGHT`] at a
    /// time, and answers true for each: the store does not look before it
    /// writes (the metadata knows which chunks are new). A hash repeated in
    /// the batch is PUT once; its repeats answer false.
    fn put_batch(&self, chunks: Vec<(Hash, Bytes)>) -> BoxFuture<'_, io::Result<Vec<bool>>> {
        Box::pin(async move {
            let mut seen = std::collections::HashSet::new();
            let mut written = Vec::with_capacity(chunks.len());
            let mut distinct = Vec::with_capacity(chunks.len());
            for (hash, bytes) in chunks {
                let first = seen.insert(hash);
                written.push(first);
                if first {
                    distinct.push(self.inner.put(hash, bytes));
                }
            }
            futures::stream::iter(distinct)
                .buffer_unordered(PUTS_IN_FLIGHT)
                .try_collect::<()>()
                .await?;
            Ok(written)
        })
    }

    fn get(&self, hash: Hash) -> BoxFuture<'_, io::Result<Option<Bytes>>> {
        Box::pin(self.inner.get(hash))
    }

    fn get_many(&self, hashes: Vec<Hash>) -> BoxFuture<'_, io::Result<Vec<Option<Bytes>>>> {
        Box::pin(async move {
            futures::stream::iter(hashes.into_iter().map(|hash| self.inner.get(hash)))
                .buffered(GETS_IN_FLIGHT)
                .try_collect()
                .await
        })
    }

    fn check_writable(&self) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(self.inner.check_writable())
    }

    /// Object storage has no volume to fill, or none it tells of: both
    /// numbers are `u64::MAX`, so nothing refuses uploads for want of space
    /// (a bucket quota shows as failed PUTs instead).
    fn space(&self) -> BoxFuture<'_, io::Result<Space>> {
        Box::pin(async {
            Ok(Space {
                total_bytes: u64::MAX,
                available_bytes: u64::MAX,
            })
        })
    }

    fn delete_many(&self, hashes: Vec<Hash>) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(self.inner.delete_many(hashes))
    }

    fn quarantine(&self, hash: Hash) -> BoxFuture<'_, io::Result<bool>> {
        Box::pin(self.inner.quarantine(hash))
    }

    fn list_after(
        &self,
        after: Option<Hash>,
        limit: usize,
    ) -> BoxFuture<'_, io::Result<Vec<(Hash, u64)>>> {
        Box::pin(self.inner.list_after(after, limit))
    }

    fn put_pack(&self, pack: &PackId, bytes: Bytes) -> BoxFuture<'_, io::Result<()>> {
        let pack = pack.clone();
        Box::pin(async move { self.inner.put_pack(&pack, bytes).await })
    }

    fn get_pack_ranges(
        &self,
        pack: &PackId,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, io::Result<Option<Vec<Bytes>>>> {
        let pack = pack.clone();
        Box::pin(async move { self.inner.get_pack_ranges(&pack, ranges).await })
    }

    fn list_packs_after(
        &self,
        after: Option<PackId>,
        limit: usize,
    ) -> BoxFuture<'_, io::Result<Vec<PackId>>> {
        Box::pin(self.inner.list_packs_after(after, limit))
    }

    fn delete_packs(&self, packs: Vec<PackId>) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(self.inner.delete_packs(packs))
    }

    fn keep_aside(&self, hash: Hash, bytes: Bytes) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(self.inner.keep_aside(hash, bytes))
    }
}

/// Builds object_store's HTTP client: reqwest with a rustls config on
/// `ring`, [`CONNECT_TIMEOUT`] and [`REQUEST_TIMEOUT`], HTTP/1.1, no
/// redirects (a signed request must not wander), `https://` only unless
/// the options allow HTTP (`AWS_ALLOW_HTTP`, or the instance-metadata
/// endpoint object_store asks for credentials when none are given).
#[derive(Debug)]
struct RingConnector;

impl HttpConnector for RingConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let allow_http = match options.get_config_value(&ClientConfigKey::AllowHttp) {
            None => false,
            Some(value) => parse_bool(&value).ok_or_else(|| object_store::Error::Generic {
                store: "S3",
                source: format!("allow_http: {value:?} is not a boolean").into(),
            })?,
        };
        let client = reqwest::Client::builder()
            .user_agent(concat!("syncfolder-server/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .http1_only()
            .redirect(reqwest::redirect::Policy::none())
            .https_only(!allow_http)
            .tls_backend_preconfigured(tls_config())
            .build()
            .map_err(|err| object_store::Error::Generic {
                store: "S3",
                source: Box::new(err),
            })?;
        Ok(HttpClient::new(client))
    }
}

/// object_store's spelling of booleans in settings.
fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "on" | "yes" | "y" => Some(true),
        "0" | "false" | "off" | "no" | "n" => Some(false),
        _ => None,
    }
}

/// rustls on `ring`, trusting the system's CAs (read once per process).
fn tls_config() -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports rustls's default protocol versions")
        .with_root_certificates(syncfolder_tls::system_roots())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_names_the_bucket_and_an_optional_prefix() {
        let config = ObjectStoreConfig::from_url("s3://chunks").expect("bucket only");
        assert_eq!(config.bucket, "chunks");
        assert_eq!(config.prefix, "");
        assert_eq!(config.endpoint, None);
        assert_eq!(config.allow_http, None);

        let config = ObjectStoreConfig::from_url("s3://my-bucket/sync/prod/").expect("prefix");
        assert_eq!(config.bucket, "my-bucket");
        assert_eq!(config.prefix, "sync/prod");
        assert_eq!(
            ObjectStoreConfig::from_url("S3://b/")
                .expect("empty prefix")
                .prefix,
            ""
        );
    }

    #[test]
    fn a_url_without_s3_scheme_or_bucket_is_refused_with_what_to_write() {
        for url in [
            "",
            "s3:",
            "s3://",
            "s3:///prefix",
            "http://bucket/prefix",
            "bucket/prefix",
            "s3://key:secret@bucket",
            "s3://bucket/a//b",
            "s3://bucket/a/../b",
            "s3://bucket/prefix?versionId=1",
        ] {
            let err = ObjectStoreConfig::from_url(url).expect_err(url).to_string();
            assert!(
                err.contains("expected s3://BUCKET or s3://BUCKET/PREFIX"),
                "{url}: {err}"
            );
        }
        let err = ObjectStoreConfig::from_url("s3://key:secret@bucket/p").expect_err("userinfo");
        assert!(!err.to_string().contains("secret"), "{err}");
        let err = ObjectStoreConfig::from_url("https://bucket").expect_err("https");
        assert!(
            err.to_string().contains("the scheme must be s3://"),
            "{err}"
        );
        let err = ObjectStoreConfig::from_url("s3:///x").expect_err("no bucket");
        assert!(err.to_string().contains("no bucket"), "{err}");
    }

    #[test]
    fn explicit_settings_win_over_the_environment_and_requests_are_path_style() {
        let environment = AmazonS3Builder::new()
            .with_config(AmazonS3ConfigKey::Endpoint, "http://env:3900")
            .with_config(AmazonS3ConfigKey::S3Endpoint, "http://env-s3:3900")
            .with_config(AmazonS3ConfigKey::Region, "env-region")
            .with_config(AmazonS3ConfigKey::AccessKeyId, "env-key")
            .with_config(AmazonS3ConfigKey::SecretAccessKey, "env-secret")
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp),
                "true",
            )
            .with_config(AmazonS3ConfigKey::VirtualHostedStyleRequest, "true");
        let value = |builder: &AmazonS3Builder, key: AmazonS3ConfigKey| {
            builder.get_config_value(&key).unwrap_or_default()
        };

        let mut config = ObjectStoreConfig::from_url("s3://bucket/prefix").expect("url");
        let from_environment = config.apply_to(environment.clone());
        assert_eq!(
            value(&from_environment, AmazonS3ConfigKey::Endpoint),
            "http://env:3900"
        );
        assert_eq!(
            value(&from_environment, AmazonS3ConfigKey::Region),
            "env-region"
        );
        assert_eq!(
            value(&from_environment, AmazonS3ConfigKey::AccessKeyId),
            "env-key"
        );
        assert_eq!(
            value(
                &from_environment,
                AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp)
            ),
            "true"
        );
        assert_eq!(
            value(&from_environment, AmazonS3ConfigKey::Bucket),
            "bucket"
        );
        assert_eq!(
            value(
                &from_environment,
                AmazonS3ConfigKey::VirtualHostedStyleRequest
            ),
            "false"
        );

        config.endpoint = Some("https://garage:3900".to_owned());
        config.region = Some("garage".to_owned());
        config.access_key_id = Some("GK123".to_owned());
        config.secret_access_key = Some("explicit-secret".to_owned());
        config.allow_http = Some(false);
        let explicit = config.apply_to(environment);
        assert_eq!(
            value(&explicit, AmazonS3ConfigKey::Endpoint),
            "https://garage:3900"
        );
        assert_eq!(
            value(&explicit, AmazonS3ConfigKey::S3Endpoint),
            "https://garage:3900"
        );
        assert_eq!(value(&explicit, AmazonS3ConfigKey::Region), "garage");
        assert_eq!(value(&explicit, AmazonS3ConfigKey::AccessKeyId), "GK123");
        assert_eq!(
            value(&explicit, AmazonS3ConfigKey::SecretAccessKey),
            "explicit-secret"
        );
        assert_eq!(
            value(
                &explicit,
                AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp)
            ),
            "false"
        );
    }

    #[test]
    fn the_debug_form_never_shows_the_secret() {
        let mut config = ObjectStoreConfig::from_url("s3://bucket").expect("url");
        config.access_key_id = Some("GK123".to_owned());
        config.secret_access_key = Some("very-secret-value".to_owned());
        let shown = format!("{config:?}");
        assert!(!shown.contains("very-secret-value"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        assert!(shown.contains("GK123"), "{shown}");
    }

    #[test]
    fn only_chunk_names_under_their_fan_out_directory_are_listed() {
        let chunks = Path::parse("sync/chunks").expect("path");
        let hash = Hash::of(b"chunk");
        let hex = hash.to_hex();
        let at = |key: String| hash_of(&chunks, &Path::parse(key).expect("path"));
        assert_eq!(at(format!("sync/chunks/{}/{hex}", &hex[..2])), Some(hash));
        let wrong_fan_out = if &hex[..2] == "00" { "01" } else { "00" };
        assert_eq!(at(format!("sync/chunks/{wrong_fan_out}/{hex}")), None);
        assert_eq!(at(format!("sync/chunks/{}/{hex}.tmp", &hex[..2])), None);
        assert_eq!(at(format!("sync/chunks/{}/x/{hex}", &hex[..2])), None);
        assert_eq!(at(format!("sync/chunks/{hex}")), None);
        assert_eq!(
            at(format!("sync/chunks/{}/{}", &hex[..2], hex.to_uppercase())),
            None
        );
        assert_eq!(at(format!("sync/quarantine/{}/{hex}", &hex[..2])), None);
    }

    #[test]
    fn chunk_objects_fan_out_by_the_first_two_hex_digits_under_the_prefix() {
        let config = ObjectStoreConfig {
            endpoint: Some("http://127.0.0.1:1".to_owned()),
            region: Some("garage".to_owned()),
            access_key_id: Some("GK1".to_owned()),
            secret_access_key: Some("very-secret-value".to_owned()),
            allow_http: Some(true),
            ..ObjectStoreConfig::from_url("s3://bucket/sync/prod").expect("url")
        };
        let store = ObjectChunkStore::open(&config).expect("open");
        let shown = format!("{store:?}");
        assert!(!shown.contains("very-secret-value"), "{shown}");
        let hash = Hash::of(b"chunk");
        let hex = hash.to_hex();
        assert_eq!(
            store.chunk_path(&hash).as_ref(),
            format!("sync/prod/chunks/{}/{hex}", &hex[..2])
        );
    }

    #[test]
    fn object_store_booleans_parse_as_object_store_parses_them() {
        assert_eq!(parse_bool("TRUE"), Some(true));
        assert_eq!(parse_bool("1"), Some(true));
        assert_eq!(parse_bool("no"), Some(false));
        assert_eq!(parse_bool("maybe"), None);
    }
}
