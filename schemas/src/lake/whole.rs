//! Delta tables whose every version is the whole table in one file: the query side's
//! projections (`_cdlake/read/<entity>/`), written again whole each time they change. Each
//! commit removes every file of the version before and adds the new one, so the newest version
//! is exactly the newest file, and any Delta reader (Spark, Trino, DuckDB, Polars, delta-rs)
//! reads a projection as a table.
//!
//! The files are put by the caller (under the table's directory) before [`replace`] commits
//! them; files no version references any more are the caller's to delete (the query side keeps
//! them while a statement may still read them). Checkpoints and log clean-up run as the commit's
//! own post-commit steps, by the table's properties.

use deltalake_core::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake_core::kernel::transaction::{CommitBuilder, CommitProperties, TableReference};
use deltalake_core::kernel::{Action, Add, MetadataExt, Remove, StructType};
use deltalake_core::protocol::{DeltaOperation, SaveMode};
use deltalake_core::{DeltaTable, DeltaTableError, TableProperty};

use super::{CommitError, LakeError, Result, has_log, is_conflict, log_store_at, put_first_commit};
use crate::store::Store;

/// Commits between two checkpoints of a whole-file table: a reader opens the last checkpoint
/// and at most this many commits after it.
pub const CHECKPOINT_INTERVAL: u64 = 10;

/// How long a whole-file table keeps log entries: the reach of its time travel. Replaced
/// files go sooner (the caller's rule), so an old version may name files no longer there.
pub const LOG_RETENTION: &str = "interval 2 hours";

/// A file put under a whole-file table, to be its next version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WholeFile {
    /// Its path relative to the table's directory (`<id>.parquet`).
    pub path: String,
    pub size: u64,
    pub rows: u64,
}

/// Make `file` (already put under the table at `prefix`) the newest version of that table,
/// replacing every file of the version before: created with `schema` when the store has no
/// such table, and its schema replaced when it differs (a new definition). `Ok(None)` when
/// `file` already is the newest version. [`CommitError::Conflict`] when another writer
/// committed meanwhile: the caller decides whether its file is still the newer one.
pub async fn replace(
    store: &Store,
    prefix: &str,
    name: &str,
    schema: &arrow::datatypes::Schema,
    file: &WholeFile,
) -> Result<Option<u64>, CommitError> {
    let log_store = log_store_at(store, prefix)?;
    let delta_err = |e| delta_error(store, prefix, e);
    let columns: StructType = schema.try_into_kernel().map_err(|e| delta_err(e.into()))?;
    if let Some(root) = store.local_root() {
        // The kernel looks for a local table's directory before its log.
        let dir = root.join(prefix);
        std::fs::create_dir_all(&dir).map_err(|source| {
            LakeError::from(crate::store::StoreError::CreateDir { path: dir, source })
        })?;
    }
    if !has_log(&log_store).await {
        create(&log_store, name, &columns)
            .await
            .map_err(delta_err)?;
    }
    let mut delta = DeltaTable::new(log_store.clone());
    delta.load().await.map_err(delta_err)?;
    let snapshot = delta.snapshot().map_err(delta_err)?;
    let active: Vec<(String, i64)> = snapshot
        .log_data()
        .iter()
        .map(|f| (f.path().to_string(), f.size()))
        .collect();
    if active == [(file.path.clone(), file.size as i64)] {
        return Ok(None);
    }
    let now_ms = chrono::Utc::now().timestamp_millis();
    let mut actions = Vec::new();
    if snapshot.schema().as_ref() != &columns {
        let metadata = snapshot
            .metadata()
            .clone()
            .with_schema(&columns)
            .map_err(|e| delta_err(e.into()))?;
        actions.push(Action::Metadata(metadata));
    }
    actions.extend(active.into_iter().map(|(path, size)| {
        Action::Remove(Remove {
            path,
            data_change: true,
            deletion_timestamp: Some(now_ms),
            extended_file_metadata: Some(true),
            partition_values: Some(Default::default()),
            size: Some(size),
            ..Default::default()
        })
    }));
    actions.push(Action::Add(Add {
        path: file.path.clone(),
        partition_values: Default::default(),
        size: file.size as i64,
        modification_time: now_ms,
        data_change: true,
        stats: Some(serde_json::json!({ "numRecords": file.rows }).to_string()),
        ..Default::default()
    }));
    let properties = CommitProperties::default()
        .with_max_retries(0)
        .with_create_checkpoint(true)
        .with_cleanup_expired_logs(Some(true));
    let committed = CommitBuilder::from(properties)
        .with_actions(actions)
        .build(
            Some(snapshot as &dyn TableReference),
            log_store.clone(),
            DeltaOperation::Write {
                mode: SaveMode::Overwrite,
                partition_by: None,
                predicate: None,
            },
        )
        .await;
    match committed {
        Ok(finalized) => Ok(Some(finalized.version())),
        Err(e) if is_conflict(&e) => Err(CommitError::Conflict {
            table: prefix.trim_end_matches('/').to_string(),
            latest: log_store
                .get_latest_version(delta.version().unwrap_or(0))
                .await
                .unwrap_or(0),
        }),
        Err(e) => Err(CommitError::Failed(delta_err(e))),
    }
}

/// The files of the newest version of the whole-file table at `prefix` (relative to it); none
/// when the store has no such table.
pub async fn files(store: &Store, prefix: &str) -> Result<Vec<String>> {
    let log_store = log_store_at(store, prefix)?;
    if !has_log(&log_store).await {
        return Ok(Vec::new());
    }
    let delta_err = |e| delta_error(store, prefix, e);
    let mut delta = DeltaTable::new(log_store);
    delta.load().await.map_err(delta_err)?;
    Ok(delta
        .snapshot()
        .map_err(delta_err)?
        .log_data()
        .iter()
        .map(|f| f.path().to_string())
        .collect())
}

/// An error of the Delta table at `prefix`, naming it and the store.
fn delta_error(store: &Store, prefix: &str, source: DeltaTableError) -> LakeError {
    LakeError::Delta {
        table: prefix.trim_end_matches('/').to_string(),
        location: store.location().to_string(),
        source: Box::new(source),
    }
}

/// Create the table (version 0: protocol and metadata, no file) unless another process did it
/// first.
async fn create(
    log_store: &deltalake_core::logstore::LogStoreRef,
    name: &str,
    columns: &StructType,
) -> std::result::Result<(), DeltaTableError> {
    let template = DeltaTable::new_in_memory()
        .create()
        .with_table_name(name)
        .with_columns(columns.fields().cloned())
        .with_configuration_property(
            TableProperty::CheckpointInterval,
            Some(CHECKPOINT_INTERVAL.to_string()),
        )
        .with_configuration_property(TableProperty::LogRetentionDuration, Some(LOG_RETENTION))
        .with_configuration_property(TableProperty::EnableExpiredLogCleanup, Some("true"))
        .await?;
    put_first_commit(log_store, &template).await.map(|_| ())
}
