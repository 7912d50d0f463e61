//! The store's tables as Delta Lake tables: `events/`, `spans/`, `dead_letters/` each hold a
//! `_delta_log/`, so every engine (cdlake, Spark, Trino, DuckDB, Polars, Python) reads the same
//! snapshot of a table, and a commit appears whole or not at all.
//!
//! Writers encode Parquet themselves (`date=YYYY-MM-DD/<id>.parquet` under the table, the
//! name derived from the rows' identities), put the files, and then commit them as `Add`
//! actions in one transaction with [`TableLog::commit`]. A commit names the table version it
//! was checked against: if another writer committed since, it is refused with
//! [`CommitError::Conflict`] and the writer refreshes, checks again what it must (the
//! identities of rows the other writer added to the same partitions) and retries. That is how
//! "(event_source, event_id) is unique in the table" holds with several writers: no commit
//! ever lands on a version its writer did not check.
//!
//! Compaction commits `Remove` + `Add` actions with `dataChange = false` in one transaction.
//! Checkpoints (every [`CHECKPOINT_INTERVAL`] commits), log clean-up and vacuum run in
//! [`TableLog::maintain`], off the commit path.
//!
//! On a local directory, the log's commits go through [`crate::store::DurableLocal`]: a commit
//! file is fsynced before it is linked into place (create-only), and its directory after.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use deltalake_core::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake_core::kernel::transaction::{
    CommitBuilder, CommitProperties, TableReference, TransactionError,
};
use deltalake_core::kernel::{
    Action, Add, DataType, EagerSnapshot, Remove, StructField, StructType,
};
use deltalake_core::logstore::{
    CommitOrBytes, LogStoreRef, StorageConfig, default_logstore, get_actions,
};
use deltalake_core::protocol::{DeltaOperation, SaveMode};
use deltalake_core::{DeltaTable, DeltaTableError, TableProperty};
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::paths::{DataFilePath, Table};
use crate::store::Store;

/// Commits between two checkpoints: opening a table reads the last checkpoint and at most this
/// many commits after it.
pub const CHECKPOINT_INTERVAL: u64 = 100;

/// How long removed files and old log entries are kept: the reach of time travel
/// (`--as-of`), and longer than any query runs.
pub const DEFAULT_RETENTION: chrono::Duration = chrono::Duration::days(7);

/// Errors of the lake.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    #[error(
        "the store {location} holds {table}/ in the layout of cdlake before Delta Lake (Parquet files with no _delta_log): run `cdlake migrate --store {location}` once to convert it in place"
    )]
    LegacyLayout { location: String, table: String },
    #[error("table {table} in {location}: {source}")]
    Delta {
        table: String,
        location: String,
        source: Box<DeltaTableError>,
    },
    #[error("table {table}: {what}")]
    Invalid { table: String, what: String },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

pub type Result<T, E = LakeError> = std::result::Result<T, E>;

/// Why a commit did not land.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// Another writer committed after the version the commit was checked against: refresh,
    /// check again and retry.
    #[error("table {table}: another writer committed version {latest} first")]
    Conflict { table: String, latest: u64 },
    #[error(transparent)]
    Failed(#[from] LakeError),
}

/// Which version of a table to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AsOf {
    /// The newest, refreshed as commits land.
    #[default]
    Latest,
    /// A table version.
    Version(u64),
    /// The table as it was at a time (the newest commit at or before it).
    Time(DateTime<Utc>),
}

impl AsOf {
    /// `--as-of`: a version number or a time (RFC 3339 or a date).
    pub fn parse(s: &str) -> Option<AsOf> {
        let s = s.trim();
        if let Ok(v) = s.parse::<u64>() {
            return Some(AsOf::Version(v));
        }
        if let Ok(t) = DateTime::parse_from_rfc3339(s) {
            return Some(AsOf::Time(t.with_timezone(&Utc)));
        }
        NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| AsOf::Time(t.and_utc()))
    }
}

/// A data file of the table, as the log lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveFile {
    pub path: DataFilePath,
    pub size: u64,
    /// Rows, from the file's statistics (absent when the writer wrote none).
    pub rows: Option<u64>,
}

/// The active files of a table version, by date partition.
#[derive(Debug, Default)]
pub struct FileIndex {
    pub version: u64,
    by_date: BTreeMap<NaiveDate, Vec<ActiveFile>>,
}

impl FileIndex {
    /// The files of one date partition.
    pub fn files(&self, date: NaiveDate) -> &[ActiveFile] {
        self.by_date.get(&date).map_or(&[], Vec::as_slice)
    }

    /// Every file, by date.
    pub fn all(&self) -> impl Iterator<Item = &ActiveFile> {
        self.by_date.values().flatten()
    }

    /// The dates that have files.
    pub fn dates(&self) -> impl Iterator<Item = NaiveDate> + '_ {
        self.by_date.keys().copied()
    }

    pub fn num_files(&self) -> usize {
        self.by_date.values().map(Vec::len).sum()
    }
}

/// A Parquet file a writer put and wants committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFile {
    pub path: DataFilePath,
    pub size: u64,
    pub rows: u64,
    /// The smallest and largest value of the table's time column (µs), for data skipping.
    pub time_range: Option<(i64, i64)>,
}

/// What a commit does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitKind {
    /// New rows (ingest, import, the demo): `dataChange = true`.
    Append,
    /// Files rewritten with the same rows (compaction): `dataChange = false`.
    Compact,
    /// Files replaced by files whose rows changed (`cdlake rebuild --renormalise`):
    /// `dataChange = true`, as a Delta `UPDATE` is.
    Rewrite,
}

/// One transaction.
#[derive(Debug, Clone)]
pub struct Change {
    /// The version the writer checked its rows against.
    pub read_version: u64,
    pub kind: CommitKind,
    pub add: Vec<NewFile>,
    pub remove: Vec<ActiveFile>,
}

/// The time column of each table: sorted by, and the statistics written for it.
pub fn time_column(table: Table) -> &'static str {
    match table {
        Table::Events => "time",
        Table::Spans => "start",
        Table::DeadLetters => "received_at",
    }
}

fn arrow_schema(table: Table) -> arrow::datatypes::SchemaRef {
    match table {
        Table::Events => crate::events_schema(),
        Table::Spans => crate::spans_schema(),
        Table::DeadLetters => crate::dead_letters_schema(),
    }
}

/// The tables of a store, each opened (and created when missing) on first use.
#[derive(Debug)]
pub struct Lake {
    store: Store,
    events: tokio::sync::OnceCell<Arc<TableLog>>,
    spans: tokio::sync::OnceCell<Arc<TableLog>>,
    dead_letters: tokio::sync::OnceCell<Arc<TableLog>>,
}

impl Lake {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            events: tokio::sync::OnceCell::new(),
            spans: tokio::sync::OnceCell::new(),
            dead_letters: tokio::sync::OnceCell::new(),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// A table, opened on first use.
    pub async fn table(&self, table: Table) -> Result<Arc<TableLog>> {
        let cell = match table {
            Table::Events => &self.events,
            Table::Spans => &self.spans,
            Table::DeadLetters => &self.dead_letters,
        };
        cell.get_or_try_init(|| async { TableLog::open(&self.store, table).await.map(Arc::new) })
            .await
            .cloned()
    }

    /// [`TableLog::checkpoint_if_due`] of each table this lake has opened (to commit to it, or
    /// to check a commit against it): the tables checkpointed. Every one is tried; the first
    /// error is returned after.
    pub async fn checkpoint_if_due(&self) -> Result<Vec<Table>> {
        let mut done = Vec::new();
        let mut failed = None;
        for log in [&self.events, &self.spans, &self.dead_letters]
            .into_iter()
            .filter_map(|cell| cell.get())
        {
            match log.checkpoint_if_due().await {
                Ok(Some(_)) => done.push(log.table()),
                Ok(None) => {}
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(done),
        }
    }
}

/// One table of the store, opened on its Delta log.
pub struct TableLog {
    table: Table,
    location: String,
    log_store: LogStoreRef,
    pinned: bool,
    state: tokio::sync::Mutex<Loaded>,
}

struct Loaded {
    delta: DeltaTable,
    index: Arc<FileIndex>,
    refreshed: std::time::Instant,
}

impl std::fmt::Debug for TableLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableLog")
            .field("table", &self.table)
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// The URL of a table of the store (`file:///…/events/`, `s3://bucket/prefix/events/`).
pub fn table_url(store: &Store, table: Table) -> Result<url::Url> {
    store
        .root_url()
        .join(&table.prefix())
        .map_err(|e| LakeError::Invalid {
            table: table.dir().to_string(),
            what: format!("no URL for the table: {e}"),
        })
}

fn log_store(store: &Store, table: Table) -> Result<LogStoreRef> {
    log_store_at(store, &table.prefix())
}

/// The log store of the Delta table under `prefix` (`events/`, `_cdlake/read/task_runs/`).
fn log_store_at(store: &Store, prefix: &str) -> Result<LogStoreRef> {
    let invalid = |what: String| LakeError::Invalid {
        table: prefix.trim_end_matches('/').to_string(),
        what,
    };
    let url = store
        .root_url()
        .join(prefix)
        .map_err(|e| invalid(format!("no URL for the table: {e}")))?;
    let root: Arc<dyn ObjectStore> = store.url_store();
    let path = ObjectPath::from_url_path(url.path()).map_err(|e| invalid(e.to_string()))?;
    let prefixed: Arc<dyn ObjectStore> = Arc::new(PrefixStore::new(root.clone(), path));
    Ok(default_logstore(
        prefixed,
        root,
        &url,
        &StorageConfig::default(),
    ))
}

impl TableLog {
    /// Open a table at its newest version, creating it when the store has none. A table
    /// directory holding Parquet files but no log is the pre-Delta layout: refused, naming
    /// `cdlake migrate`.
    pub async fn open(store: &Store, table: Table) -> Result<Self> {
        Self::open_as_of(store, table, AsOf::Latest).await
    }

    /// Open a table as of a version or time; `AsOf::Latest` follows new commits.
    pub async fn open_as_of(store: &Store, table: Table, as_of: AsOf) -> Result<Self> {
        Self::open_inner(store, table, as_of, true).await
    }

    /// Open (or create) a table whose directory may still hold files of the pre-Delta layout:
    /// for `cdlake migrate`, which commits them.
    pub async fn open_for_migration(store: &Store, table: Table) -> Result<Self> {
        Self::open_inner(store, table, AsOf::Latest, false).await
    }

    async fn open_inner(
        store: &Store,
        table: Table,
        as_of: AsOf,
        refuse_legacy: bool,
    ) -> Result<Self> {
        let log_store = log_store(store, table)?;
        let location = store.location().to_string();
        if let Some(root) = store.local_root() {
            // The kernel looks for a local table's directory before its log.
            let dir = root.join(table.dir());
            std::fs::create_dir_all(&dir)
                .map_err(|source| crate::store::StoreError::CreateDir { path: dir, source })?;
        }
        let delta_err = |e: DeltaTableError| LakeError::Delta {
            table: table.dir().to_string(),
            location: location.clone(),
            source: Box::new(e),
        };
        let mut delta = DeltaTable::new(log_store.clone());
        // A table with no log yet is created without asking the kernel to load it first (which
        // would log an error for what is only a new store).
        let exists = has_log(&log_store).await;
        let loaded = match as_of {
            _ if !exists => Err(DeltaTableError::NotATable("no _delta_log".into())),
            AsOf::Latest => delta.load().await,
            AsOf::Version(v) => delta.load_version(v).await,
            AsOf::Time(t) => delta.load_with_datetime(t).await,
        };
        match loaded {
            Ok(()) => {}
            Err(DeltaTableError::NotATable(_)) if as_of == AsOf::Latest => {
                if refuse_legacy && has_legacy_files(store, table).await? {
                    return Err(LakeError::LegacyLayout {
                        location,
                        table: table.dir().to_string(),
                    });
                }
                create(log_store.clone(), table).await.map_err(delta_err)?;
                delta = DeltaTable::new(log_store.clone());
                delta.load().await.map_err(delta_err)?;
            }
            Err(e) => return Err(delta_err(e)),
        }
        if as_of == AsOf::Latest {
            delta = upgrade_schema(delta, table).await.map_err(delta_err)?;
        }
        let index = Arc::new(index_of(table, &delta)?);
        Ok(Self {
            table,
            location,
            log_store,
            pinned: as_of != AsOf::Latest,
            state: tokio::sync::Mutex::new(Loaded {
                delta,
                index,
                refreshed: std::time::Instant::now(),
            }),
        })
    }

    pub fn table(&self) -> Table {
        self.table
    }

    /// When the loaded version was committed (its commit file's time in the store).
    pub async fn committed_at(&self) -> Result<DateTime<Utc>> {
        let version = self.state.lock().await.delta.version().unwrap_or(0);
        let meta = self
            .log_store
            .object_store(None)
            .head(&ObjectPath::from(format!("_delta_log/{version:020}.json")))
            .await
            .map_err(|e| LakeError::Invalid {
                table: self.table.dir().to_string(),
                what: format!("version {version} has no commit file: {e}"),
            })?;
        Ok(meta.last_modified)
    }

    /// Whether the table was opened as of a version or time (it does not follow new commits).
    pub fn is_pinned(&self) -> bool {
        self.pinned
    }

    pub fn log_store(&self) -> LogStoreRef {
        self.log_store.clone()
    }

    fn delta_err(&self, e: DeltaTableError) -> LakeError {
        LakeError::Delta {
            table: self.table.dir().to_string(),
            location: self.location.clone(),
            source: Box::new(e),
        }
    }

    /// Read the commits made since the loaded version (none for a pinned table); the index of
    /// the newest version.
    pub async fn refresh(&self) -> Result<Arc<FileIndex>> {
        let mut state = self.state.lock().await;
        if self.pinned {
            return Ok(state.index.clone());
        }
        let before = state.delta.version();
        state
            .delta
            .update_incremental(None)
            .await
            .map_err(|e| self.delta_err(e))?;
        state.refreshed = std::time::Instant::now();
        if state.delta.version() != before {
            state.index = Arc::new(index_of(self.table, &state.delta)?);
        }
        Ok(state.index.clone())
    }

    /// The index of the loaded version, without reading the log.
    pub async fn index(&self) -> Arc<FileIndex> {
        self.state.lock().await.index.clone()
    }

    /// The index, refreshed first when the last refresh is older than `max_age`: for callers
    /// that look up many partitions in a row (a batch spread over thousands of dates) and
    /// check again at commit time anyway.
    pub async fn index_within(&self, max_age: std::time::Duration) -> Result<Arc<FileIndex>> {
        {
            let state = self.state.lock().await;
            if self.pinned || state.refreshed.elapsed() < max_age {
                return Ok(state.index.clone());
            }
        }
        self.refresh().await
    }

    /// The newest snapshot (the pinned one for a pinned table) with its index, the two taken
    /// together: a reader that chooses files by the index reads exactly that snapshot.
    pub async fn refreshed_snapshot(&self) -> Result<(Arc<FileIndex>, EagerSnapshot)> {
        self.refresh().await?;
        let state = self.state.lock().await;
        let snapshot = state
            .delta
            .snapshot()
            .map_err(|e| self.delta_err(e))?
            .snapshot()
            .clone();
        Ok((state.index.clone(), snapshot))
    }

    /// The loaded snapshot, for a query engine's table provider.
    pub async fn snapshot(&self) -> Result<EagerSnapshot> {
        let state = self.state.lock().await;
        Ok(state
            .delta
            .snapshot()
            .map_err(|e| self.delta_err(e))?
            .snapshot()
            .clone())
    }

    /// Commit `change` as one transaction, unless another writer committed after
    /// `change.read_version` ([`CommitError::Conflict`]). Returns the new version.
    pub async fn commit(&self, change: Change) -> Result<u64, CommitError> {
        let mut state = self.state.lock().await;
        let loaded = state.delta.version().unwrap_or(0);
        if loaded != change.read_version {
            return Err(CommitError::Conflict {
                table: self.table.dir().to_string(),
                latest: loaded.max(change.read_version),
            });
        }
        let actions = actions_of(self.table, &change, Utc::now().timestamp_millis());
        let operation = match change.kind {
            CommitKind::Append => DeltaOperation::Write {
                mode: SaveMode::Append,
                partition_by: Some(vec![Table::PARTITION_COLUMN.to_string()]),
                predicate: None,
            },
            CommitKind::Compact => DeltaOperation::Optimize {
                predicate: None,
                target_size: 128 << 20,
            },
            CommitKind::Rewrite => DeltaOperation::Update {
                predicate: Some("renormalise".to_string()),
            },
        };
        // No retries here: a retry must first check what the other writer added.
        let properties = CommitProperties::default()
            .with_max_retries(0)
            .with_create_checkpoint(false)
            .with_cleanup_expired_logs(Some(false));
        let snapshot = state.delta.snapshot().map_err(|e| self.delta_err(e))?;
        let committed = CommitBuilder::from(properties)
            .with_actions(actions)
            .build(
                Some(snapshot as &dyn TableReference),
                self.log_store.clone(),
                operation,
            )
            .await;
        match committed {
            Ok(finalized) => {
                let version = finalized.version();
                state.delta.state = Some(finalized.snapshot());
                state.index = Arc::new(index_of(self.table, &state.delta)?);
                Ok(version)
            }
            Err(e) if is_conflict(&e) => {
                let latest = self
                    .log_store
                    .get_latest_version(loaded)
                    .await
                    .unwrap_or(loaded + 1);
                Err(CommitError::Conflict {
                    table: self.table.dir().to_string(),
                    latest,
                })
            }
            Err(e) => Err(CommitError::Failed(self.delta_err(e))),
        }
    }

    /// The files commits after `version` added with new rows (`dataChange`), by version, up
    /// to the newest: what a live tail shows. Compactions add none, and nor do rewrites (a
    /// commit that also removes files: its rows were shown before, as they were).
    pub async fn added_since(&self, version: u64) -> Result<Vec<(u64, Vec<DataFilePath>)>> {
        let latest = self
            .log_store
            .get_latest_version(version)
            .await
            .map_err(|e| self.delta_err(e))?;
        let mut out = Vec::new();
        for v in (version + 1)..=latest {
            let Some(bytes) = self
                .log_store
                .read_commit_entry(v)
                .await
                .map_err(|e| self.delta_err(e))?
            else {
                continue;
            };
            let actions = get_actions(v, &bytes).map_err(|e| self.delta_err(e))?;
            let rewrite = actions.iter().any(|a| matches!(a, Action::Remove(_)));
            let files = actions
                .into_iter()
                .filter(|_| !rewrite)
                .filter_map(|a| match a {
                    Action::Add(add) if add.data_change => data_file(self.table, &add.path),
                    _ => None,
                })
                .collect();
            out.push((v, files));
        }
        Ok(out)
    }

    /// The newest version in the log (one listing), without loading it.
    pub async fn latest_version(&self) -> Result<u64> {
        let loaded = self.state.lock().await.delta.version().unwrap_or(0);
        self.log_store
            .get_latest_version(loaded)
            .await
            .map_err(|e| self.delta_err(e))
    }

    /// Checkpoint the newest version when [`CHECKPOINT_INTERVAL`] commits have passed since the
    /// last one (so opening the table reads that checkpoint and at most as many commits after
    /// it, not every commit): what a writer that committed many times does when it is done
    /// (`cdlake demo`, `cdlake import`), besides [`TableLog::maintain`]. The version checkpointed, if one was.
    pub async fn checkpoint_if_due(&self) -> Result<Option<u64>> {
        Ok(self.checkpoint_when_due().await?.1)
    }

    /// [`TableLog::checkpoint_if_due`], with the table it loaded.
    async fn checkpoint_when_due(&self) -> Result<(DeltaTable, Option<u64>)> {
        self.refresh().await?;
        let table = {
            let state = self.state.lock().await;
            state.delta.clone()
        };
        let version = table.version().unwrap_or(0);
        let last_checkpoint = last_checkpoint_version(&self.log_store).await;
        if version > 0 && version >= last_checkpoint.map_or(0, |c| c) + CHECKPOINT_INTERVAL {
            deltalake_core::checkpoints::create_checkpoint(&table, None)
                .await
                .map_err(|e| self.delta_err(e))?;
            return Ok((table, Some(version)));
        }
        Ok((table, None))
    }

    /// [`TableLog::checkpoint_if_due`], then drop log entries older than the retention, and delete data files that no
    /// version within the retention references (and files a crashed writer put but never
    /// committed). Returns the files deleted.
    pub async fn maintain(&self, retention: chrono::Duration) -> Result<Vec<String>> {
        let (table, checkpointed) = self.checkpoint_when_due().await?;
        if let Some(version) = checkpointed {
            let cutoff = (Utc::now() - retention).timestamp_millis();
            deltalake_core::checkpoints::cleanup_expired_logs_for(
                version,
                self.log_store.as_ref(),
                cutoff,
                None,
            )
            .await
            .map_err(|e| self.delta_err(e))?;
        }
        let (_, metrics) = table
            .vacuum()
            .with_retention_period(retention)
            .with_enforce_retention_duration(false)
            .with_mode(deltalake_core::operations::vacuum::VacuumMode::Full)
            .await
            .map_err(|e| self.delta_err(e))?;
        self.refresh().await?;
        Ok(metrics.files_deleted)
    }

    /// Add a nullable column to the table's schema (old files read it as NULL).
    pub async fn add_column(&self, name: &str, data_type: DataType) -> Result<u64> {
        let mut state = self.state.lock().await;
        let delta = state.delta.clone();
        let updated = delta
            .add_columns()
            .with_fields([StructField::nullable(name, data_type)])
            .await
            .map_err(|e| self.delta_err(e))?;
        state.delta = updated;
        state.index = Arc::new(index_of(self.table, &state.delta)?);
        Ok(state.delta.version().unwrap_or(0))
    }
}

/// The actions a commit of `change` writes: `Remove`s, then `Add`s with statistics.
fn actions_of(table: Table, change: &Change, now_ms: i64) -> Vec<Action> {
    let data_change = change.kind != CommitKind::Compact;
    let mut actions: Vec<Action> = change
        .remove
        .iter()
        .map(|f| {
            Action::Remove(Remove {
                path: relative(&f.path),
                data_change,
                deletion_timestamp: Some(now_ms),
                extended_file_metadata: Some(true),
                partition_values: Some(partition_values(f.path.date)),
                size: Some(f.size as i64),
                ..Default::default()
            })
        })
        .collect();
    actions.extend(change.add.iter().map(|f| {
        Action::Add(Add {
            path: relative(&f.path),
            partition_values: partition_values(f.path.date),
            size: f.size as i64,
            modification_time: now_ms,
            data_change,
            stats: Some(stats(table, f)),
            ..Default::default()
        })
    }));
    actions
}

/// The log entry (newline-delimited JSON actions) a commit of `change` to `table` writes, for
/// benchmarks that build a long log without committing one version at a time.
#[doc(hidden)]
pub fn log_entry(table: Table, change: &Change, now_ms: i64) -> String {
    actions_of(table, change, now_ms)
        .iter()
        .filter_map(|a| serde_json::to_string(a).ok())
        .map(|line| line + "\n")
        .collect()
}

fn is_conflict(e: &DeltaTableError) -> bool {
    matches!(
        e,
        DeltaTableError::Transaction {
            source: TransactionError::CommitConflict(_)
                | TransactionError::MaxCommitAttempts(_)
                | TransactionError::VersionAlreadyExists(_)
        } | DeltaTableError::VersionAlreadyExists(_)
    )
}

/// `date=2026-11-28/<id>.parquet`: a data file's path in the log (relative to the table).
fn relative(path: &DataFilePath) -> String {
    let full = path.to_string();
    full.strip_prefix(&path.table.prefix())
        .unwrap_or(&full)
        .to_string()
}

/// A path of the log back to a data file of `table`.
fn data_file(table: Table, relative: &str) -> Option<DataFilePath> {
    DataFilePath::parse(&format!("{}{relative}", table.prefix()))
}

fn partition_values(date: NaiveDate) -> HashMap<String, Option<String>> {
    HashMap::from([(
        Table::PARTITION_COLUMN.to_string(),
        Some(date.format("%Y-%m-%d").to_string()),
    )])
}

/// The statistics of a file: its rows, and the range of the time column (milliseconds, as
/// Delta writes timestamps; readers widen a maximum by the truncated part).
fn stats(table: Table, f: &NewFile) -> String {
    let column = time_column(table);
    let ms = |us: i64| {
        DateTime::<Utc>::from_timestamp_micros(us)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
    };
    let mut stats = serde_json::json!({ "numRecords": f.rows });
    if let Some((min, max)) = f.time_range
        && let (Some(min), Some(max)) = (ms(min), ms(max))
    {
        stats["minValues"] = serde_json::json!({ column: min });
        stats["maxValues"] = serde_json::json!({ column: max });
        stats["nullCount"] = serde_json::json!({ column: 0 });
    }
    stats.to_string()
}

fn index_of(table: Table, delta: &DeltaTable) -> Result<FileIndex> {
    let state = delta.snapshot().map_err(|e| LakeError::Invalid {
        table: table.dir().to_string(),
        what: e.to_string(),
    })?;
    let mut by_date: BTreeMap<NaiveDate, Vec<ActiveFile>> = BTreeMap::new();
    for f in state.log_data().iter() {
        let Some(path) = data_file(table, &f.path()) else {
            tracing::warn!(table = table.dir(), path = %f.path(), "A file of the table is not in a date partition; cdlake ignores it for de-duplication.");
            continue;
        };
        by_date.entry(path.date).or_default().push(ActiveFile {
            path,
            size: f.size().max(0) as u64,
            rows: f.num_records().map(|n| n as u64),
        });
    }
    Ok(FileIndex {
        version: delta.version().unwrap_or(0),
        by_date,
    })
}

/// Whether the table's directory holds data files of the pre-Delta layout.
pub async fn has_legacy_files(store: &Store, table: Table) -> Result<bool> {
    Ok(store
        .list(&table.prefix())
        .await?
        .iter()
        .any(|p| DataFilePath::parse(p).is_some()))
}

/// The version of the newest checkpoint, from `_last_checkpoint`.
async fn last_checkpoint_version(log_store: &LogStoreRef) -> Option<u64> {
    let store = log_store.object_store(None);
    let bytes = store
        .get(&ObjectPath::from("_delta_log/_last_checkpoint"))
        .await
        .ok()?
        .bytes()
        .await
        .ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value["version"].as_u64()
}

/// The table's Delta schema: the columns of its Parquet files, then the `date` partition.
fn delta_columns(table: Table) -> std::result::Result<Vec<StructField>, DeltaTableError> {
    let schema = arrow_schema(table);
    let file_schema: StructType = schema.as_ref().try_into_kernel()?;
    let mut columns: Vec<StructField> = file_schema.fields().cloned().collect();
    columns.push(StructField::nullable(
        Table::PARTITION_COLUMN,
        DataType::STRING,
    ));
    Ok(columns)
}

/// Add the columns this cdlake writes that the table's schema lacks (a table created by an
/// older cdlake): nullable and appended, so older files read them as NULL and the column order
/// stays that of a table created now. Another process upgrading at the same time is no error:
/// the table is reloaded and checked again.
async fn upgrade_schema(
    mut delta: DeltaTable,
    table: Table,
) -> std::result::Result<DeltaTable, DeltaTableError> {
    let mut tries = 0;
    loop {
        let have: std::collections::HashSet<String> = delta
            .snapshot()?
            .schema()
            .fields()
            .map(|f| f.name().clone())
            .collect();
        let missing: Vec<StructField> = delta_columns(table)?
            .into_iter()
            .filter(|f| !have.contains(f.name()))
            .collect();
        if missing.is_empty() {
            return Ok(delta);
        }
        let names: Vec<String> = missing.iter().map(|f| f.name().clone()).collect();
        match delta.clone().add_columns().with_fields(missing).await {
            Ok(upgraded) => {
                tracing::info!(table = table.dir(), columns = ?names, "Added the columns this version of cdlake writes to the table's schema.");
                return Ok(upgraded);
            }
            Err(e) if tries < 5 => {
                tries += 1;
                tracing::debug!(table = table.dir(), error = %e, "Schema upgrade raced another writer; reloading.");
                delta.load().await?;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Create the table unless another process did it first (the first commit is put create-only,
/// so two creators cannot both win).
async fn create(
    log_store: LogStoreRef,
    table: Table,
) -> std::result::Result<bool, DeltaTableError> {
    let retention = format!("interval {} days", DEFAULT_RETENTION.num_days());
    let template = DeltaTable::new_in_memory()
        .create()
        .with_table_name(table.dir())
        .with_columns(delta_columns(table)?)
        .with_partition_columns([Table::PARTITION_COLUMN])
        .with_configuration_property(
            TableProperty::CheckpointInterval,
            Some(CHECKPOINT_INTERVAL.to_string()),
        )
        .with_configuration_property(TableProperty::LogRetentionDuration, Some(retention.clone()))
        .with_configuration_property(TableProperty::DeletedFileRetentionDuration, Some(retention))
        .with_configuration_property(TableProperty::EnableExpiredLogCleanup, Some("false"))
        .with_configuration_property(
            TableProperty::DataSkippingStatsColumns,
            Some(time_column(table)),
        )
        .await?;
    put_first_commit(&log_store, &template).await
}

/// Whether the table under `log_store` has a log yet (one listing).
async fn has_log(log_store: &LogStoreRef) -> bool {
    use futures_util::StreamExt;
    log_store
        .object_store(None)
        .list(Some(&ObjectPath::from("_delta_log")))
        .next()
        .await
        .is_some()
}

/// Put the first commit of `template` (a table created in memory) as version 0 under
/// `log_store`, create-only: `false` when another process created the table first.
async fn put_first_commit(
    log_store: &LogStoreRef,
    template: &DeltaTable,
) -> std::result::Result<bool, DeltaTableError> {
    let bytes = template
        .log_store()
        .read_commit_entry(0)
        .await?
        .ok_or_else(|| DeltaTableError::Generic("no first commit to copy".into()))?;
    match log_store
        .write_commit_entry(0, CommitOrBytes::LogBytes(bytes), uuid::Uuid::new_v4())
        .await
    {
        Ok(()) => Ok(true),
        Err(TransactionError::VersionAlreadyExists(0)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

pub mod whole;

#[cfg(test)]
mod tests;
