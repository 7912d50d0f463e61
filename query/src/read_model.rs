//! The first read model: `report_events` (the DORA views' input rows, narrow, without payloads)
//! kept as one Parquet file per month of `events`, so a report reads a dozen files instead of
//! a file per day of history, and none of the pipeline and task rows.
//!
//! ```text
//! <store>/_cdlake/read/report_events/month=YYYY-MM/<fingerprint>.parquet
//! ```
//!
//! A month's file is named by the fingerprint of what it was derived from: the read model's
//! definition (its SQL) and the paths and sizes of the month's `events` files in the snapshot
//! it read. A reader computes the fingerprints of its own snapshot and takes a month from the
//! read model only when a file of that fingerprint exists; every other month (new events,
//! a compaction since, a late event, a file vacuumed meanwhile) it reads from `events` of the
//! same snapshot. So an answer never misses or doubles a committed event, a crash at any point
//! leaves answers correct (a file is whole or absent), and building a month twice writes the
//! same rows under the same name. [`refresh`] derives the months that have no file for their
//! fingerprint (`cdlake rebuild`, the end of `cdlake demo`, and every few minutes in
//! `cdlake serve` and `cdlake standalone`) and deletes the files of superseded fingerprints.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::RecordBatch;
use cdlake_schemas::lake::{FileIndex, TableLog};
use cdlake_schemas::store::Store;
use chrono::{Datelike, NaiveDate};
use datafusion::datasource::MemTable;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::prelude::SessionContext;
use deltalake_core::delta_datafusion::{DeltaScanConfig, DeltaScanNext};
use sha2::{Digest, Sha256};

use crate::QueryResult;
use crate::views;
use crate::{Error, Result};

/// How long a superseded file stays before [`refresh`] deletes it.
const SUPERSEDED_KEPT: chrono::Duration = chrono::Duration::minutes(10);

/// Where the read model's files live, under the store's root.
pub const PREFIX: &str = "_cdlake/read/report_events/";

/// The read model's definition: the columns and subjects it keeps.
fn definition() -> String {
    views::report_events_sql_without(views::REPORT_SUBJECTS, views::REPORT_UNREAD_COLUMNS)
}

/// `YYYY-MM` of a date.
fn month_of(date: NaiveDate) -> String {
    format!("{:04}-{:02}", date.year(), date.month())
}

/// Each month of the snapshot with its fingerprint and dates.
fn months(index: &FileIndex) -> BTreeMap<String, (String, Vec<NaiveDate>)> {
    let mut dates: BTreeMap<String, Vec<NaiveDate>> = BTreeMap::new();
    for date in index.dates() {
        dates.entry(month_of(date)).or_default().push(date);
    }
    let definition = definition();
    dates
        .into_iter()
        .map(|(month, dates)| {
            let mut h = Sha256::new();
            h.update((definition.len() as u64).to_le_bytes());
            h.update(definition.as_bytes());
            let mut files: Vec<(String, u64)> = dates
                .iter()
                .flat_map(|d| index.files(*d))
                .map(|f| (f.path.to_string(), f.size))
                .collect();
            files.sort();
            for (path, size) in files {
                h.update((path.len() as u64).to_le_bytes());
                h.update(path.as_bytes());
                h.update(size.to_le_bytes());
            }
            (month, (hex::encode(&h.finalize()[..16]), dates))
        })
        .collect()
}

fn file_path(month: &str, fingerprint: &str) -> String {
    format!("{PREFIX}month={month}/{fingerprint}.parquet")
}

/// A date list as a SQL predicate on the `date` partition column.
fn dates_predicate(dates: &[NaiveDate]) -> String {
    let list: Vec<String> = dates
        .iter()
        .map(|d| format!("'{}'", d.format("%Y-%m-%d")))
        .collect();
    format!("date IN ({})", list.join(", "))
}

/// A session over one pinned snapshot of `events` (`pinned_events`).
async fn pinned_session(
    runtime: Arc<RuntimeEnv>,
    config: &crate::Config,
    log: &TableLog,
) -> Result<(SessionContext, Arc<FileIndex>)> {
    let (index, snapshot) = log.refreshed_snapshot().await?;
    let ctx = crate::engine::new_session(runtime, config);
    let scan = DeltaScanNext::new(
        snapshot,
        DeltaScanConfig::new().with_wrap_partition_values(false),
    )
    .map_err(|e| Error::internal("reading the events snapshot", e))?;
    ctx.register_table("pinned_events", Arc::new(scan))?;
    Ok((ctx, index))
}

/// Run `sql`, with the schema its batches carry.
async fn collect(ctx: &SessionContext, sql: &str, config: &crate::Config) -> Result<QueryResult> {
    let df = ctx
        .sql(sql)
        .await
        .map_err(|e| Error::internal("reading the report_events read model", e))?;
    crate::engine::collect_physical(ctx, df, config).await
}

/// The paths of the read model's files.
async fn listed(store: &Store) -> Result<BTreeSet<String>> {
    Ok(store
        .list(PREFIX)
        .await
        .map_err(store_err)?
        .into_iter()
        .collect())
}

fn store_err(e: cdlake_schemas::store::StoreError) -> Error {
    Error::internal("reading the report_events read model", e)
}

/// `report_events` of `subjects` (narrow: without [`views::REPORT_UNREAD_COLUMNS`]) as of the
/// newest snapshot of `events`: the months the read model holds for that snapshot from its
/// files, the others from `events`.
pub(crate) async fn read(
    store: &Store,
    log: &TableLog,
    runtime: Arc<RuntimeEnv>,
    config: &crate::Config,
    subjects: &[&str],
) -> Result<(QueryResult, ReadStats)> {
    let (ctx, index) = pinned_session(runtime, config, log).await?;
    let present = listed(store).await?;
    let mut held: Vec<RecordBatch> = Vec::new();
    let mut raw_dates: Vec<NaiveDate> = Vec::new();
    let mut stats = ReadStats::default();
    for (month, (fingerprint, dates)) in months(&index) {
        let path = file_path(&month, &fingerprint);
        let bytes = if present.contains(&path) {
            store.get(&path).await.map_err(store_err)?
        } else {
            None
        };
        match bytes {
            Some(bytes) => {
                let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
                    .and_then(|b| b.build())
                    .map_err(|e| Error::internal("reading the report_events read model", e))?;
                for batch in reader {
                    held.push(
                        batch.map_err(|e| {
                            Error::internal("reading the report_events read model", e)
                        })?,
                    );
                }
                stats.months_held += 1;
            }
            None => {
                stats.months_read += 1;
                raw_dates.extend(dates);
            }
        }
    }
    let subject_list: Vec<String> = subjects.iter().map(|s| format!("'{s}'")).collect();
    let subject_list = subject_list.join(", ");
    let mut parts: Vec<String> = Vec::new();
    if let Some(first) = held.first() {
        let schema = first.schema();
        ctx.register_table("held", Arc::new(MemTable::try_new(schema, vec![held])?))?;
        parts.push(format!(
            "SELECT * FROM held WHERE subject IN ({subject_list})"
        ));
    }
    if !raw_dates.is_empty() || parts.is_empty() {
        let narrow = views::report_events_sql_without(subjects, views::REPORT_UNREAD_COLUMNS)
            .replacen("FROM events", "FROM pinned_events", 1);
        let dates = if raw_dates.is_empty() {
            "true".to_string()
        } else {
            dates_predicate(&raw_dates)
        };
        parts.push(format!("{narrow} AND {dates}"));
    }
    let rows = collect(&ctx, &parts.join(" UNION ALL "), config).await?;
    Ok((rows, stats))
}

/// How a read was answered.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReadStats {
    /// Months taken from the read model's files.
    pub months_held: usize,
    /// Months read from `events` (no file for their fingerprint).
    pub months_read: usize,
}

/// What [`refresh`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RefreshReport {
    /// Months derived and written.
    pub built: usize,
    /// Months whose file was already current.
    pub current: usize,
    /// Files of superseded fingerprints deleted.
    pub deleted: usize,
    /// Rows written.
    pub rows: u64,
}

/// Derive every month of the newest `events` snapshot that has no file for its fingerprint,
/// and delete the files of other fingerprints. `progress(done, total)` after each month.
pub async fn refresh(
    store: &Store,
    log: &TableLog,
    runtime: Arc<RuntimeEnv>,
    config: &crate::Config,
    mut progress: impl FnMut(usize, usize),
) -> Result<RefreshReport> {
    let (ctx, index) = pinned_session(runtime, config, log).await?;
    let listed = store.list_meta(PREFIX).await.map_err(store_err)?;
    let present: BTreeSet<String> = listed.iter().map(|m| m.location.to_string()).collect();
    let months = months(&index);
    let mut report = RefreshReport::default();
    let mut keep: BTreeSet<String> = BTreeSet::new();
    let total = months.len();
    let definition = definition().replacen("FROM events", "FROM pinned_events", 1);
    for (i, (month, (fingerprint, dates))) in months.into_iter().enumerate() {
        let path = file_path(&month, &fingerprint);
        keep.insert(path.clone());
        if present.contains(&path) {
            report.current += 1;
            progress(i + 1, total);
            continue;
        }
        let sql = format!(
            "{definition} AND {} ORDER BY subject, time, event_source, event_id",
            dates_predicate(&dates)
        );
        let df = ctx
            .sql(&sql)
            .await
            .map_err(|e| Error::internal("building the report_events read model", e))?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let batches = df
            .collect()
            .await
            .map_err(|e| Error::internal("building the report_events read model", e))?;
        let schema = batches.first().map_or(schema, RecordBatch::schema);
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).map_err(|e| {
                Error::internal("building the report_events read model", e)
            })?))
            .build();
        let mut out = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut out, schema, Some(props))
            .map_err(|e| Error::internal("building the report_events read model", e))?;
        for b in &batches {
            report.rows += b.num_rows() as u64;
            writer
                .write(b)
                .map_err(|e| Error::internal("building the report_events read model", e))?;
        }
        writer
            .close()
            .map_err(|e| Error::internal("building the report_events read model", e))?;
        store.put_if_absent(&path, out).await.map_err(store_err)?;
        report.built += 1;
        progress(i + 1, total);
    }
    // Superseded files go once no reader can still be about to open them (a reader that
    // finds its file gone reads that month from `events`), and once a refresher working
    // from an older snapshot cannot have just written them.
    let cutoff = chrono::Utc::now() - SUPERSEDED_KEPT;
    for meta in &listed {
        let path = meta.location.to_string();
        if !keep.contains(&path) && meta.last_modified < cutoff {
            store.delete(&path).await.map_err(store_err)?;
            report.deleted += 1;
        }
    }
    Ok(report)
}

/// [`refresh`] on a store, opening its `events` table (for commands and tests).
pub async fn refresh_store(
    store: &Store,
    config: &crate::Config,
    progress: impl FnMut(usize, usize),
) -> Result<RefreshReport> {
    // The engine's `events` log and runtime: its memory limit, and the bucket's client
    // registered as the engine reads it.
    let engine = crate::Engine::open(store, config.clone()).await?;
    refresh(
        store,
        &engine.events,
        engine.session().runtime_env(),
        config,
        progress,
    )
    .await
}

/// How a report read now would be answered: the months of the newest `events` snapshot that
/// the read model holds, and those it would read from `events`.
pub async fn coverage(store: &Store) -> Result<ReadStats> {
    let log = TableLog::open(store, cdlake_schemas::paths::Table::Events).await?;
    let index = log.refresh().await?;
    let present = listed(store).await?;
    let mut stats = ReadStats::default();
    for (month, (fingerprint, _)) in months(&index) {
        if present.contains(&file_path(&month, &fingerprint)) {
            stats.months_held += 1;
        } else {
            stats.months_read += 1;
        }
    }
    Ok(stats)
}
