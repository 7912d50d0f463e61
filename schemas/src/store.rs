//! Opening the store named by `--store` and committing files to it durably.
//!
//! A store is a directory (`./cdlake-data`, `/var/lib/cdlake`, `file:///…`) or an object-store
//! URL (`s3://bucket/prefix`, `gs://…`, `az://…`). Writers commit whole files under names chosen from their content with a
//! create-if-absent put, so a file appears whole or not at all, and a retried commit of the
//! same rows finds the file already there instead of storing it twice.
//!
//! `object_store`'s `LocalFileSystem` (0.13) renames a staged file into place but never calls
//! `fsync`, so a power cut could lose a file that was reported committed. Local commits
//! therefore go through [`Store::put_if_absent`]'s own path: write a temporary file in the
//! target directory, `fsync` it, hard-link it to the final name (which fails if the name
//! exists: no overwrite), `fsync` the directory, remove the temporary name. On S3 the put
//! carries `If-None-Match: *` (object_store's default `ETagMatch` conditional put), which AWS
//! S3, MinIO, R2 and moto honour.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

/// Errors opening or writing the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {location:?}: {reason}")]
    Location { location: String, reason: String },
    #[error("cannot create store directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing {path} to the store: {source}")]
    WriteLocal {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing {path} to the store: {source}")]
    WriteObject {
        path: String,
        source: object_store::Error,
    },
    #[error("reading {path} from the store: {source}")]
    Read {
        path: String,
        source: object_store::Error,
    },
    #[error("reading {path} from the store: {source}")]
    ReadLocal {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("store task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The outcome of a create-if-absent commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// The file is new.
    Created,
    /// A file of that name was already there (a retried commit of the same rows).
    AlreadyExists,
}

/// An opened store: an object store rooted at the store's root, and the URL DataFusion reads.
#[derive(Debug, Clone)]
pub struct Store {
    location: String,
    root_url: url::Url,
    local_root: Option<PathBuf>,
    object_store: Arc<dyn ObjectStore>,
    /// For an object-store URL: the bucket's URL (`s3://bucket`) and its store, which a query
    /// engine registers to read the files at their full URLs.
    bucket_store: Option<(url::Url, Arc<dyn ObjectStore>)>,
    /// The store whose paths are the paths of [`Store::root_url`] (the file system from `/`
    /// with durable writes, or the bucket): what Delta Lake tables are opened on.
    url_store: Arc<dyn ObjectStore>,
}

impl Store {
    /// Open the store at `location`: a directory path or a `file://` URL (created if missing),
    /// or an object-store URL: `s3://bucket/prefix`, `gs://bucket/prefix`,
    /// `az://container/prefix` (also `abfs://`, `abfss://`, `azure://`). Object stores take
    /// their credentials and endpoint from the environment as their own tools do
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL`,
    /// `AWS_ALLOW_HTTP`; `GOOGLE_SERVICE_ACCOUNT`; `AZURE_STORAGE_ACCOUNT_NAME`, …).
    pub fn open(location: &str) -> Result<Self> {
        Self::open_with_options(location, &[])
    }

    /// [`Store::open`] with object-store options on top of the environment's, keyed as
    /// `object_store` names them (`aws_endpoint`, `aws_allow_http`, `google_service_account`,
    /// `azure_storage_account_name`, …). Ignored for a local directory.
    pub fn open_with_options(location: &str, options: &[(&str, &str)]) -> Result<Self> {
        let err = |reason: String| StoreError::Location {
            location: location.to_string(),
            reason,
        };
        let path = if let Some(rest) = location.strip_prefix("file://") {
            PathBuf::from(rest)
        } else if let Some((scheme, _)) = location.split_once("://") {
            return Self::open_object_store(location, scheme, options);
        } else {
            PathBuf::from(location)
        };
        std::fs::create_dir_all(&path).map_err(|source| StoreError::CreateDir {
            path: path.clone(),
            source,
        })?;
        let root = path
            .canonicalize()
            .map_err(|source| StoreError::CreateDir {
                path: path.clone(),
                source,
            })?;
        let root_url = url::Url::from_directory_path(&root)
            .map_err(|()| err(format!("{} is not an absolute directory", root.display())))?;
        let object_store =
            LocalFileSystem::new_with_prefix(&root).map_err(|e| err(e.to_string()))?;
        Ok(Self {
            location: location.to_string(),
            root_url,
            local_root: Some(root),
            object_store: Arc::new(object_store),
            bucket_store: None,
            url_store: Arc::new(DurableLocal::new()),
        })
    }

    fn open_object_store(location: &str, scheme: &str, options: &[(&str, &str)]) -> Result<Self> {
        let err = |reason: String| StoreError::Location {
            location: location.to_string(),
            reason,
        };
        let mut url = url::Url::parse(location).map_err(|e| err(format!("not a URL: {e}")))?;
        let Some(bucket) = url.host_str().filter(|h| !h.is_empty()).map(str::to_string) else {
            return Err(err(format!(
                "name the bucket or container: {scheme}://BUCKET/optional/prefix"
            )));
        };
        let bucket_url = format!("{scheme}://{bucket}");
        fn configure<B, K: std::str::FromStr<Err = object_store::Error>>(
            mut builder: B,
            options: &[(&str, &str)],
            with: impl Fn(B, K, &str) -> B,
        ) -> std::result::Result<B, String> {
            for (k, v) in options {
                let key = k.parse::<K>().map_err(|e| format!("option {k}: {e}"))?;
                builder = with(builder, key, v);
            }
            Ok(builder)
        }
        use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
        use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
        use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
        let store: Arc<dyn ObjectStore> = match scheme {
            "s3" | "s3a" => Arc::new(
                configure(
                    AmazonS3Builder::from_env().with_url(&bucket_url),
                    options,
                    |b, k: AmazonS3ConfigKey, v| b.with_config(k, v),
                )
                .map_err(err)?
                .build()
                .map_err(|e| err(e.to_string()))?,
            ),
            "gs" => Arc::new(
                configure(
                    GoogleCloudStorageBuilder::from_env().with_url(&bucket_url),
                    options,
                    |b, k: GoogleConfigKey, v| b.with_config(k, v),
                )
                .map_err(err)?
                .build()
                .map_err(|e| err(e.to_string()))?,
            ),
            "az" | "abfs" | "abfss" | "azure" => Arc::new(
                configure(
                    MicrosoftAzureBuilder::from_env().with_url(&bucket_url),
                    options,
                    |b, k: AzureConfigKey, v| b.with_config(k, v),
                )
                .map_err(err)?
                .build()
                .map_err(|e| err(e.to_string()))?,
            ),
            other => {
                return Err(err(format!(
                    "the {other}:// scheme is not supported; use a directory, file://, s3://, gs:// or az://"
                )));
            }
        };
        let prefix = url.path().trim_matches('/').to_string();
        url.set_path(&format!("/{prefix}/").replace("//", "/"));
        url.set_query(None);
        url.set_fragment(None);
        let object_store: Arc<dyn ObjectStore> = if prefix.is_empty() {
            store.clone()
        } else {
            Arc::new(PrefixStore::new(store.clone(), prefix.as_str()))
        };
        Ok(Self {
            location: location.to_string(),
            root_url: url,
            local_root: None,
            object_store,
            bucket_store: Some((
                url::Url::parse(&bucket_url).map_err(|e| err(e.to_string()))?,
                store.clone(),
            )),
            url_store: store,
        })
    }

    /// What the user named, for messages.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The root as a URL ending in `/`, e.g. `file:///var/lib/cdlake/`.
    pub fn root_url(&self) -> &url::Url {
        &self.root_url
    }

    /// The local directory, for a local store.
    pub fn local_root(&self) -> Option<&Path> {
        self.local_root.as_deref()
    }

    /// For an object-store URL, the bucket's URL and store (to register with a query engine);
    /// `None` for a local directory, which engines read through their own file system store.
    pub fn bucket_store(&self) -> Option<(&url::Url, Arc<dyn ObjectStore>)> {
        self.bucket_store.as_ref().map(|(u, s)| (u, s.clone()))
    }

    /// The path of the store root inside the store engines see (`tmp/data/` for
    /// `file:///tmp/data/`, `prefix/` for `s3://bucket/prefix`), to turn the locations an
    /// engine lists back into store-relative paths.
    pub fn root_location(&self) -> String {
        self.root_url.path().trim_start_matches('/').to_string()
    }

    /// The object store, with paths relative to the store root.
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.object_store.clone()
    }

    /// The store that resolves the paths of [`Store::root_url`] and its table URLs: the local
    /// file system from `/` (writes made durable with fsync), or the bucket. Delta Lake tables
    /// are opened on it.
    pub fn url_store(&self) -> Arc<dyn ObjectStore> {
        self.url_store.clone()
    }

    /// Commit `data` at `path` (relative to the root) unless something is there already.
    /// When this returns, the file is durable.
    pub async fn put_if_absent(&self, path: &str, data: Vec<u8>) -> Result<Commit> {
        match &self.local_root {
            Some(root) => {
                let target = root.join(path);
                tokio::task::spawn_blocking(move || put_local(&target, &data)).await?
            }
            None => {
                let opts = PutOptions {
                    mode: PutMode::Create,
                    ..Default::default()
                };
                let location = ObjectPath::from(path);
                match self
                    .object_store
                    .put_opts(&location, PutPayload::from(data), opts)
                    .await
                {
                    Ok(_) => Ok(Commit::Created),
                    Err(object_store::Error::AlreadyExists { .. }) => Ok(Commit::AlreadyExists),
                    Err(source) => Err(StoreError::WriteObject {
                        path: path.to_string(),
                        source,
                    }),
                }
            }
        }
    }

    /// Write `data` at `path`, replacing what is there in one step (a reader sees the old
    /// object or the new one, never none and never part of one).
    pub async fn put(&self, path: &str, data: Vec<u8>) -> Result<()> {
        match &self.local_root {
            Some(root) => {
                let target = root.join(path);
                tokio::task::spawn_blocking(move || put_local_overwrite(&target, &data).map(|_| ()))
                    .await?
            }
            None => self
                .object_store
                .put(&ObjectPath::from(path), PutPayload::from(data))
                .await
                .map(|_| ())
                .map_err(|source| StoreError::WriteObject {
                    path: path.to_string(),
                    source,
                }),
        }
    }

    /// Read a whole object; `None` when it does not exist.
    pub async fn get(&self, path: &str) -> Result<Option<Vec<u8>>> {
        // A local file in one read (the object store's local reader reads 8 KiB chunks, each
        // on a blocking thread).
        if let Some(root) = &self.local_root {
            let file = root.join(path);
            return tokio::task::spawn_blocking(move || match std::fs::read(&file) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(StoreError::ReadLocal { path: file, source }),
            })
            .await?;
        }
        match self.object_store.get(&ObjectPath::from(path)).await {
            Ok(r) => r
                .bytes()
                .await
                .map(|b| Some(b.to_vec()))
                .map_err(|source| StoreError::Read {
                    path: path.to_string(),
                    source,
                }),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(StoreError::Read {
                path: path.to_string(),
                source,
            }),
        }
    }

    /// The size of an object; `None` when it does not exist.
    pub async fn size(&self, path: &str) -> Result<Option<u64>> {
        match self.object_store.head(&ObjectPath::from(path)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(StoreError::Read {
                path: path.to_string(),
                source,
            }),
        }
    }

    /// Every object under `prefix` with its size and time, sorted by path.
    pub async fn list_meta(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        use futures_util::TryStreamExt;
        let p = ObjectPath::from(prefix);
        let mut out: Vec<ObjectMeta> = self
            .object_store
            .list(Some(&p))
            .try_collect()
            .await
            .map_err(|source| StoreError::Read {
                path: prefix.to_string(),
                source,
            })?;
        out.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(out)
    }

    /// Delete an object; deleting one that is already gone succeeds.
    pub async fn delete(&self, path: &str) -> Result<()> {
        match self.object_store.delete(&ObjectPath::from(path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(StoreError::WriteObject {
                path: path.to_string(),
                source,
            }),
        }
    }

    /// The paths (relative to the root) of all objects under `prefix`, sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        use futures_util::TryStreamExt;
        let p = ObjectPath::from(prefix);
        let mut out: Vec<String> = self
            .object_store
            .list(Some(&p))
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .map_err(|source| StoreError::Read {
                path: prefix.to_string(),
                source,
            })?;
        out.sort();
        Ok(out)
    }
}

fn put_local(target: &Path, data: &[u8]) -> Result<Commit> {
    let io = |source| StoreError::WriteLocal {
        path: target.to_path_buf(),
        source,
    };
    let dir = target
        .parent()
        .ok_or_else(|| io(std::io::Error::other("no parent directory")))?;
    if !dir.exists() {
        // The directories this creates, and the parent each new entry is made durable in.
        let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.exists()).collect();
        std::fs::create_dir_all(dir).map_err(io)?;
        for d in missing {
            if let Some(parent) = d.parent() {
                sync_dir(parent).map_err(io)?;
            }
        }
    }
    if target.exists() {
        return Ok(Commit::AlreadyExists);
    }
    let name = target
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{}.{}.tmp", std::process::id(), unique()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        match std::fs::hard_link(&tmp, target) {
            Ok(()) => {
                sync_dir(dir)?;
                Ok(Commit::Created)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(Commit::AlreadyExists),
            Err(e) => Err(e),
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    result.map_err(io)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// The local file system from `/`, as `object_store`'s `LocalFileSystem`, but with durable
/// writes: a put writes a temporary file beside the target, fsyncs it, links it into place
/// (create-only) or renames it (overwrite), and fsyncs the directory, so a write reported done
/// survives a power cut. Delta Lake's commits (`_delta_log/N.json`, put create-only: the
/// table's only lock) and checkpoints go through it. Everything else is `LocalFileSystem`'s.
#[derive(Debug)]
pub struct DurableLocal {
    inner: LocalFileSystem,
}

impl DurableLocal {
    pub fn new() -> Self {
        Self {
            inner: LocalFileSystem::new(),
        }
    }

    fn file_path(location: &ObjectPath) -> PathBuf {
        let mut path = PathBuf::from("/");
        for part in location.parts() {
            path.push(part.as_ref());
        }
        path
    }
}

impl Default for DurableLocal {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for DurableLocal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DurableLocal")
    }
}

#[async_trait::async_trait]
impl ObjectStore for DurableLocal {
    async fn put_opts(
        &self,
        location: &ObjectPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        let target = Self::file_path(location);
        let overwrite = match opts.mode {
            PutMode::Create => false,
            PutMode::Overwrite => true,
            PutMode::Update(_) => return self.inner.put_opts(location, payload, opts).await,
        };
        let data: Vec<u8> = payload.iter().flat_map(|b| b.iter().copied()).collect();
        let written = tokio::task::spawn_blocking(move || {
            if overwrite {
                put_local_overwrite(&target, &data)
            } else {
                put_local(&target, &data).map(|c| (c, target))
            }
        })
        .await
        .map_err(|e| object_store::Error::Generic {
            store: "DurableLocal",
            source: Box::new(e),
        })?;
        match written {
            Ok((Commit::Created, _)) => Ok(object_store::PutResult {
                e_tag: None,
                version: None,
            }),
            Ok((Commit::AlreadyExists, path)) => Err(object_store::Error::AlreadyExists {
                path: path.display().to_string(),
                source: "the file exists".into(),
            }),
            Err(e) => Err(object_store::Error::Generic {
                store: "DurableLocal",
                source: Box::new(e),
            }),
        }
    }

    async fn put_multipart_opts(
        &self,
        location: &ObjectPath,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &ObjectPath,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &ObjectPath,
        ranges: &[std::ops::Range<u64>],
    ) -> object_store::Result<Vec<bytes::Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: futures_util::stream::BoxStream<'static, object_store::Result<ObjectPath>>,
    ) -> futures_util::stream::BoxStream<'static, object_store::Result<ObjectPath>> {
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> futures_util::stream::BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&ObjectPath>,
        offset: &ObjectPath,
    ) -> futures_util::stream::BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> object_store::Result<object_store::ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &ObjectPath,
        to: &ObjectPath,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &ObjectPath,
        to: &ObjectPath,
        options: object_store::RenameOptions,
    ) -> object_store::Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

/// Write `data` at `target` replacing what is there, durably: a temporary file fsynced, renamed
/// into place, the directory fsynced.
fn put_local_overwrite(target: &Path, data: &[u8]) -> Result<(Commit, PathBuf)> {
    let io = |source| StoreError::WriteLocal {
        path: target.to_path_buf(),
        source,
    };
    let dir = target
        .parent()
        .ok_or_else(|| io(std::io::Error::other("no parent directory")))?;
    std::fs::create_dir_all(dir).map_err(io)?;
    let name = target
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{}.{}.tmp", std::process::id(), unique()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, target)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)?;
    Ok((Commit::Created, target.to_path_buf()))
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_commits_are_create_only_and_leave_no_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap()).unwrap();
        let path = "events/date=2026-01-02/a.parquet";
        assert_eq!(
            store.put_if_absent(path, b"one".to_vec()).await.unwrap(),
            Commit::Created
        );
        assert_eq!(
            store.put_if_absent(path, b"two".to_vec()).await.unwrap(),
            Commit::AlreadyExists
        );
        assert_eq!(store.get(path).await.unwrap().unwrap(), b"one");
        assert_eq!(store.list("events").await.unwrap(), vec![path.to_string()]);
        assert!(store.get("events/none.parquet").await.unwrap().is_none());
    }

    #[test]
    fn unsupported_schemes_say_what_to_use() {
        let e = Store::open("ftp://x/y").unwrap_err().to_string();
        assert!(e.contains("ftp:// scheme is not supported"), "{e}");
        let e = Store::open("s3:///prefix").unwrap_err().to_string();
        assert!(e.contains("name the bucket"), "{e}");
    }
}
