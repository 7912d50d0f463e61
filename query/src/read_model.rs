//! The read models: `report_events` (the DORA views' input rows, narrow, without payloads) and
//! `run_events` (the pipeline and task run rows), each kept as one Parquet file per month of
//! `events`, so a question reads a dozen files a year instead of a file per day of history.
//!
//! ```text
//! <store>/_cdlake/read/<read model>/month=YYYY-MM/<fingerprint>.parquet
//! ```
//!
//! A month's file keeps its rows sorted by subject (then time) in row groups of 16 Ki rows,
//! so a view scanning one subject skips the others' row groups by their statistics; the
//! report reads the files in place ([`pinned_view`]), only the columns each view needs.
//!
//! A month's file is named by the fingerprint of what it was derived from: the read model's
//! definition (its SQL), the files' layout, and the paths and sizes of the month's `events` files in the snapshot
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
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use arrow::array::{AsArray, RecordBatch};
use cdlake_schemas::lake::{FileIndex, TableLog};
use cdlake_schemas::store::Store;
use chrono::{Datelike, NaiveDate};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::prelude::SessionContext;
use deltalake_core::delta_datafusion::{DeltaScanConfig, DeltaScanNext};
use deltalake_core::kernel::EagerSnapshot;
use sha2::{Digest, Sha256};

use crate::views;
use crate::{Error, Result};

/// How long a superseded file stays before [`refresh`] deletes it.
pub(crate) const SUPERSEDED_KEPT: chrono::Duration = chrono::Duration::minutes(10);

/// Where the `report_events` read model's files live, under the store's root.
pub const PREFIX: &str = "_cdlake/read/report_events/";

/// The read models: each a narrow selection of `events` kept as one file per month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Model {
    /// The DORA views' input (`report_events`), without the columns no DORA view reads.
    ReportEvents,
    /// The pipeline and task run events `pipeline_runs` and `task_runs` read (`run_events`).
    RunEvents,
}

impl Model {
    pub const ALL: [Model; 2] = [Model::ReportEvents, Model::RunEvents];

    /// The read model's name: the relation it answers.
    pub fn name(self) -> &'static str {
        match self {
            Model::ReportEvents => "report_events",
            Model::RunEvents => "run_events",
        }
    }

    /// The read model named `name`.
    pub fn named(name: &str) -> Option<Model> {
        Model::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Where its files live, under the store's root.
    pub fn prefix(self) -> String {
        format!("_cdlake/read/{}/", self.name())
    }

    /// Its definition over `events`: the columns and subjects it keeps.
    pub(crate) fn definition(self) -> String {
        match self {
            Model::ReportEvents => views::report_events_sql_without(
                views::REPORT_SUBJECTS,
                views::REPORT_UNREAD_COLUMNS,
            ),
            Model::RunEvents => views::run_events_sql(),
        }
    }
}

/// Rows per row group of a read model's file. A file keeps its rows sorted by subject, so a
/// scan of one subject skips the other subjects' row groups by their statistics.
pub(crate) const ROW_GROUP_ROWS: usize = 16 * 1024;

/// The layout of the files (row groups, order): part of every fingerprint, so files written
/// in an older layout are derived again, not read as current.
const LAYOUT: &str = "layout 2: sorted by subject, 16 Ki-row groups";

/// `YYYY-MM` of a date.
pub(crate) fn month_of(date: NaiveDate) -> String {
    format!("{:04}-{:02}", date.year(), date.month())
}

/// Each month of the snapshot with its fingerprint and dates.
pub(crate) fn months(
    index: &FileIndex,
    model: Model,
) -> BTreeMap<String, (String, Vec<NaiveDate>)> {
    let mut dates: BTreeMap<String, Vec<NaiveDate>> = BTreeMap::new();
    for date in index.dates() {
        dates.entry(month_of(date)).or_default().push(date);
    }
    let definition = model.definition();
    dates
        .into_iter()
        .map(|(month, dates)| {
            let mut h = Sha256::new();
            h.update(LAYOUT.as_bytes());
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

fn file_path(model: Model, month: &str, fingerprint: &str) -> String {
    format!("{}month={month}/{fingerprint}.parquet", model.prefix())
}

/// A date list as a SQL predicate on the `date` partition column.
pub(crate) fn dates_predicate(dates: &[NaiveDate]) -> String {
    let list: Vec<String> = dates
        .iter()
        .map(|d| format!("'{}'", d.format("%Y-%m-%d")))
        .collect();
    format!("date IN ({})", list.join(", "))
}

/// A session over one pinned snapshot of `events` (`pinned_events`).
fn pinned_session(
    runtime: Arc<RuntimeEnv>,
    config: &crate::Config,
    snapshot: EagerSnapshot,
) -> Result<SessionContext> {
    let ctx = crate::engine::new_session(crate::engine::spilling(&runtime)?, config);
    ctx.register_table("pinned_events", pinned_scan(snapshot)?)?;
    Ok(ctx)
}

/// A scan of exactly one snapshot of `events`, partition values unwrapped.
pub(crate) fn pinned_scan(snapshot: EagerSnapshot) -> Result<Arc<DeltaScanNext>> {
    DeltaScanNext::new(
        snapshot,
        DeltaScanConfig::new().with_wrap_partition_values(false),
    )
    .map(Arc::new)
    .map_err(|e| Error::internal("reading the events snapshot", e))
}

/// The paths of the read model's files.
async fn listed(store: &Store, model: Model) -> Result<BTreeSet<String>> {
    Ok(store
        .list(&model.prefix())
        .await
        .map_err(store_err)?
        .into_iter()
        .collect())
}

pub(crate) fn store_err(e: cdlake_schemas::store::StoreError) -> Error {
    Error::internal("reading a read model", e)
}

/// The read model as a view of the newest snapshot of `events`, read as a statement runs:
/// the months the read model holds for that snapshot from their files (a Parquet listing of
/// exactly those files; a scan reads only the columns and row groups it needs), the others
/// from `events` of the same snapshot. The view stays pinned to that snapshot, in any session
/// it is registered in. (A file superseded and deleted while a statement still reads it fails
/// that statement; files are kept ten minutes after they are superseded.)
pub(crate) async fn pinned_view(
    ctx: &SessionContext,
    store: &Store,
    log: &TableLog,
    model: Model,
) -> Result<Pinned> {
    use datafusion::datasource::file_format::parquet::ParquetFormat;
    use datafusion::datasource::listing::{
        ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
    };
    let read_err = |e| Error::internal("reading a read model", e);
    let (index, snapshot) = log.refreshed_snapshot().await?;
    let version = snapshot.version();
    let pinned = format!("cdlake_{}_pinned_events", model.name());
    ctx.register_table(pinned.as_str(), pinned_scan(snapshot)?)?;
    let present = listed(store, model).await?;
    let mut held: Vec<ListingTableUrl> = Vec::new();
    let mut raw_dates: Vec<NaiveDate> = Vec::new();
    let mut stats = ReadStats::default();
    for (month, (fingerprint, dates)) in months(&index, model) {
        let path = file_path(model, &month, &fingerprint);
        if present.contains(&path) {
            let url = store
                .root_url()
                .join(&path)
                .map_err(|e| Error::internal("reading a read model", e))?;
            held.push(ListingTableUrl::parse(url.as_str()).map_err(read_err)?);
            stats.months_held += 1;
        } else {
            raw_dates.extend(dates);
            stats.months_read += 1;
        }
    }
    let mut parts: Vec<String> = Vec::new();
    if !held.is_empty() {
        let name = format!("cdlake_{}_held", model.name());
        let options =
            ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        let config = ListingTableConfig::new_with_multi_paths(held)
            .with_listing_options(options)
            .infer_schema(&ctx.state())
            .await
            .map_err(read_err)?;
        let table = ListingTable::try_new(config).map_err(read_err)?;
        ctx.register_table(name.as_str(), Arc::new(table))?;
        parts.push(format!("SELECT * FROM {name}"));
    }
    if !raw_dates.is_empty() || parts.is_empty() {
        let raw = model
            .definition()
            .replacen("FROM events", &format!("FROM {pinned}"), 1);
        let dates = if raw_dates.is_empty() {
            "true".to_string()
        } else {
            dates_predicate(&raw_dates)
        };
        parts.push(format!("{raw} AND {dates}"));
    }
    let view = ctx
        .sql(&parts.join(" UNION ALL "))
        .await
        .map_err(read_err)?
        .into_view();
    Ok(Pinned {
        view,
        stats,
        version,
        index,
    })
}

/// A read model pinned to one snapshot of `events` ([`pinned_view`]).
#[derive(Clone)]
pub(crate) struct Pinned {
    /// The rows, as a view to register.
    pub view: Arc<dyn datafusion::catalog::TableProvider>,
    /// How its months are answered.
    pub stats: ReadStats,
    /// The version of `events` it reflects.
    pub version: u64,
    /// The files of that snapshot of `events`, by date.
    pub index: Arc<FileIndex>,
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
    /// Months with no current file that were not due this time (the hot months between their
    /// turns in the background refresher); answers read them from `events` meanwhile.
    pub waiting: usize,
    /// Files of superseded fingerprints deleted.
    pub deleted: usize,
    /// Rows written.
    pub rows: u64,
}

/// How many bytes of `events` files one build query reads at most: small months (a sparse
/// history, a spray of old events) are derived together in one scan, large ones one by one.
const CHUNK_BYTES: u64 = 64 << 20;

/// Which months a [`refresh`] derives.
#[derive(Clone, Copy)]
pub struct Scope<'a> {
    /// Derive a month without a current file only when this holds for its `YYYY-MM`.
    pub due: &'a (dyn Fn(&str) -> bool + Send + Sync),
    /// Derive again every month from this `YYYY-MM` on, current or not (`cdlake rebuild
    /// --from`): the same rows are written under the same name.
    pub again_from: Option<&'a str>,
}

impl Scope<'static> {
    /// Every month without a current file.
    pub const ALL: Scope<'static> = Scope {
        due: &|_| true,
        again_from: None,
    };
}

/// `YYYY-MM` of a date given as `YYYY-MM-DD` or `YYYY-MM`, or `None`.
pub fn month_of_text(text: &str) -> Option<String> {
    let text = text.trim();
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .or_else(|_| NaiveDate::parse_from_str(&format!("{text}-01"), "%Y-%m-%d"))
        .ok()
        .map(month_of)
}

/// Derive the months of the newest `events` snapshot that `scope` selects (by default those
/// with no file for their fingerprint), and delete the files of superseded fingerprints.
/// `progress(done, total)` as months are done.
pub async fn refresh(
    store: &Store,
    log: &TableLog,
    runtime: Arc<RuntimeEnv>,
    config: &crate::Config,
    model: Model,
    scope: Scope<'_>,
    mut progress: impl FnMut(usize, usize),
) -> Result<RefreshReport> {
    let (index, snapshot) = log.refreshed_snapshot().await?;
    let listed = store.list_meta(&model.prefix()).await.map_err(store_err)?;
    let present: BTreeSet<String> = listed.iter().map(|m| m.location.to_string()).collect();
    let months = months(&index, model);
    let total = months.len();
    let mut report = RefreshReport::default();
    let mut keep: BTreeSet<String> = BTreeSet::new();
    let keep_months: BTreeSet<String> = months.keys().cloned().collect();
    // The due months without a file, in chunks of at most CHUNK_BYTES of events files.
    let mut chunks: Vec<Vec<Derive>> = Vec::new();
    let mut chunk_bytes = 0u64;
    for (month, (fingerprint, dates)) in months {
        let path = file_path(model, &month, &fingerprint);
        keep.insert(path.clone());
        let again = scope.again_from.is_some_and(|from| month.as_str() >= from);
        if present.contains(&path) && !again {
            report.current += 1;
            continue;
        }
        if !again && !(scope.due)(&month) {
            report.waiting += 1;
            continue;
        }
        let bytes: u64 = dates
            .iter()
            .flat_map(|d| index.files(*d))
            .map(|f| f.size)
            .sum();
        if chunks.is_empty() || chunk_bytes + bytes > CHUNK_BYTES {
            chunks.push(Vec::new());
            chunk_bytes = 0;
        }
        chunk_bytes += bytes;
        if let Some(chunk) = chunks.last_mut() {
            chunk.push(Derive {
                month,
                fingerprint,
                dates,
                replace: again,
            });
        }
    }
    progress(report.current, total);
    if !chunks.is_empty() {
        let ctx = pinned_session(runtime, config, snapshot)?;
        let definition = model
            .definition()
            .replacen("FROM events", "FROM pinned_events", 1);
        for chunk in chunks {
            let built = build_chunk(store, &ctx, model, &definition, &chunk).await?;
            report.built += chunk.len();
            report.rows += built;
            progress(report.current + report.built, total);
        }
    }
    // A superseded file goes once its month's current file has existed for SUPERSEDED_KEPT
    // (or the query time limit and a minute, when that is longer): a statement that chose
    // the old file before it was superseded has finished with it by then (and one reading `report_events` that finds it gone reads that month from
    // `events`). While a month waits for its new file, its old one stays. A month gone from
    // `events` altogether takes its files with it once they are that old.
    let now = chrono::Utc::now();
    let cutoff = now - superseded_kept(config);
    let current_since: BTreeMap<String, chrono::DateTime<chrono::Utc>> = listed
        .iter()
        .filter(|m| keep.contains(m.location.as_ref()))
        .map(|m| (month_in(m.location.as_ref()), m.last_modified))
        .collect();
    for meta in &listed {
        let path = meta.location.to_string();
        if keep.contains(&path) {
            continue;
        }
        let month = month_in(&path);
        let superseded_since = if keep_months.contains(&month) {
            // Since its current file was written; now when it has none yet (waiting for its
            // turn, or written by this refresh).
            current_since.get(&month).copied().unwrap_or(now)
        } else {
            meta.last_modified
        };
        if superseded_since < cutoff {
            store.delete(&path).await.map_err(store_err)?;
            report.deleted += 1;
        }
    }
    Ok(report)
}

/// How long a superseded file stays: SUPERSEDED_KEPT, or the query time limit and a minute
/// when that is longer (at most 30 days, whatever the limit says), so a statement that chose it
/// before it was superseded has finished with it.
pub(crate) fn superseded_kept(config: &crate::Config) -> chrono::Duration {
    let limit = chrono::Duration::seconds(
        i64::try_from(config.limits.query_timeout_secs.min(30 * 86_400)).unwrap_or(0) + 60,
    );
    SUPERSEDED_KEPT.max(limit)
}

/// `YYYY-MM` of a read model file's path (`…/month=YYYY-MM/<fingerprint>.parquet`), or the
/// path itself for anything else.
fn month_in(path: &str) -> String {
    path.split('/')
        .find_map(|part| part.strip_prefix("month="))
        .unwrap_or(path)
        .to_string()
}

/// A month to derive: where its file goes, its dates, and whether it replaces a file of the
/// same name (`--from`).
struct Derive {
    month: String,
    fingerprint: String,
    dates: Vec<NaiveDate>,
    replace: bool,
}

fn build_err(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
    Error::internal("building a read model", e)
}

/// Derive the months of `chunk` in one scan of `events`, sorted by month and then as a file
/// keeps its rows, and write each month's file. Returns the rows written.
async fn build_chunk(
    store: &Store,
    ctx: &SessionContext,
    model: Model,
    definition: &str,
    chunk: &[Derive],
) -> Result<u64> {
    let dates: Vec<NaiveDate> = chunk.iter().flat_map(|d| d.dates.clone()).collect();
    let sql = format!(
        "{definition} AND {} ORDER BY substr(date, 1, 7), subject, time, event_source, event_id",
        dates_predicate(&dates)
    );
    let df = ctx.sql(&sql).await.map_err(build_err)?;
    let schema = Arc::new(df.schema().as_arrow().clone());
    let batches = df.collect().await.map_err(build_err)?;
    let schema = batches.first().map_or(schema, RecordBatch::schema);
    // Each month's rows, contiguous in the sorted output.
    let mut by_month: BTreeMap<String, Vec<RecordBatch>> = BTreeMap::new();
    let date_col = schema.index_of("date").map_err(build_err)?;
    for batch in &batches {
        let dates = arrow::compute::cast(batch.column(date_col), &arrow::datatypes::DataType::Utf8)
            .map_err(build_err)?;
        let dates = dates.as_string::<i32>();
        let mut start = 0;
        while start < batch.num_rows() {
            let month = dates.value(start).get(..7).unwrap_or_default().to_string();
            let mut end = start + 1;
            while end < batch.num_rows() && dates.value(end).get(..7) == Some(month.as_str()) {
                end += 1;
            }
            by_month
                .entry(month)
                .or_default()
                .push(batch.slice(start, end - start));
            start = end;
        }
    }
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).map_err(build_err)?))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build();
    let mut rows = 0u64;
    for d in chunk {
        // A month with no rows still gets its (empty) file: it is current.
        let mut out = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut out, schema.clone(), Some(props.clone()))
            .map_err(build_err)?;
        for b in by_month.get(&d.month).into_iter().flatten() {
            rows += b.num_rows() as u64;
            writer.write(b).map_err(build_err)?;
        }
        writer.close().map_err(build_err)?;
        let path = file_path(model, &d.month, &d.fingerprint);
        if d.replace {
            // Derived again (`--from`): the file of this name is replaced in one step.
            store.put(&path, out).await.map_err(store_err)?;
        } else {
            // A file of this name already there (another refresher was first) holds the
            // same rows: nothing to do.
            store.put_if_absent(&path, out).await.map_err(store_err)?;
        }
    }
    Ok(rows)
}

/// [`refresh`] of `models` on a store, opening its `events` table (for commands and tests).
/// `progress(model, done, total)` as months are done.
pub async fn refresh_models(
    store: &Store,
    config: &crate::Config,
    models: &[Model],
    scope: Scope<'_>,
    mut progress: impl FnMut(Model, usize, usize),
) -> Result<Vec<(Model, RefreshReport)>> {
    // The engine's `events` log and runtime: its memory limit, and the bucket's client
    // registered as the engine reads it.
    let engine = crate::Engine::open(store, config.clone()).await?;
    let mut reports = Vec::new();
    for &model in models {
        let report = refresh(
            store,
            &engine.events,
            engine.session().runtime_env(),
            config,
            model,
            scope,
            |done, total| progress(model, done, total),
        )
        .await?;
        reports.push((model, report));
    }
    Ok(reports)
}

/// [`refresh`] of the `report_events` read model on a store.
pub async fn refresh_store(
    store: &Store,
    config: &crate::Config,
    scope: Scope<'_>,
    mut progress: impl FnMut(usize, usize),
) -> Result<RefreshReport> {
    let reports = refresh_models(
        store,
        config,
        &[Model::ReportEvents],
        scope,
        |_, done, total| progress(done, total),
    )
    .await?;
    Ok(reports.first().map(|(_, r)| *r).unwrap_or_default())
}

/// Keeps the read models current beside a running query engine (`serve`, `standalone`): each
/// [`Refresher::tick`] looks at the newest `events` snapshot and derives, at once, every month
/// that changed other than the hot ones (a late event, a spray of old events, an import, a
/// compaction), and the hot months (the current and the previous, which every commit changes)
/// at most once per `hot_every`.
pub struct Refresher {
    store: Store,
    engine: crate::Engine,
    hot_every: std::time::Duration,
    last_hot: Option<std::time::Instant>,
    last_index: Option<Arc<FileIndex>>,
    status: Arc<RefresherStatus>,
}

/// What the background refresher last saw of one read model, for `/metrics`.
#[derive(Debug, Default)]
pub struct ModelStatus {
    /// Months the read model holds a current file for.
    pub months_current: AtomicU64,
    /// Months answered from `events` until their file is built.
    pub months_stale: AtomicU64,
    /// Months built since start.
    pub months_built: AtomicU64,
}

/// What the background refresher last saw, for `/metrics`.
#[derive(Debug, Default)]
pub struct RefresherStatus {
    /// By read model, in the order of [`Model::ALL`].
    pub models: [ModelStatus; Model::ALL.len()],
    /// Projections written since start, in the order of [`crate::projection::Entity::ALL`].
    pub projections_built: [AtomicU64; crate::projection::Entity::ALL.len()],
    /// Refreshes that failed since start.
    pub failures: AtomicU64,
}

impl RefresherStatus {
    /// The status of `model`.
    pub fn of(&self, model: Model) -> &ModelStatus {
        &self.models[model as usize]
    }

    /// The status as Prometheus text.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# HELP cdlake_read_model_months Months of events by read model and whether it holds a current file for them (stale months are read from events).\n\
             # TYPE cdlake_read_model_months gauge\n",
        );
        for model in Model::ALL {
            let s = self.of(model);
            for (state, value) in [
                ("current", s.months_current.load(Relaxed)),
                ("stale", s.months_stale.load(Relaxed)),
            ] {
                out.push_str(&format!(
                    "cdlake_read_model_months{{table=\"{}\",state=\"{state}\"}} {value}\n",
                    model.name()
                ));
            }
        }
        out.push_str(
            "# HELP cdlake_read_model_months_built_total Months of a read model derived since start.\n\
             # TYPE cdlake_read_model_months_built_total counter\n",
        );
        for model in Model::ALL {
            out.push_str(&format!(
                "cdlake_read_model_months_built_total{{table=\"{}\"}} {}\n",
                model.name(),
                self.of(model).months_built.load(Relaxed)
            ));
        }
        out.push_str(
            "# HELP cdlake_projections_built_total Projections (entities kept whole: pipeline_runs, task_runs, change_facts, artifact_facts, artifact_changes, production_events, incident_facts, production_links) written since start.\n\
             # TYPE cdlake_projections_built_total counter\n",
        );
        for entity in crate::projection::Entity::ALL {
            out.push_str(&format!(
                "cdlake_projections_built_total{{table=\"{}\"}} {}\n",
                entity.name(),
                self.projections_built[entity as usize].load(Relaxed)
            ));
        }
        out.push_str(&format!(
            "# HELP cdlake_read_model_failures_total Read model refreshes that failed since start.\n\
             # TYPE cdlake_read_model_failures_total counter\n\
             cdlake_read_model_failures_total {}\n",
            self.failures.load(Relaxed)
        ));
        out
    }
}

impl Refresher {
    pub fn new(store: Store, engine: crate::Engine, hot_every: std::time::Duration) -> Self {
        Self {
            store,
            engine,
            hot_every,
            last_hot: None,
            last_index: None,
            status: Arc::default(),
        }
    }

    pub fn status(&self) -> Arc<RefresherStatus> {
        self.status.clone()
    }

    /// One look at the store: what each read model did, or `None` when nothing changed and
    /// the hot months are not due.
    pub async fn tick(&mut self) -> Result<Option<Vec<(Model, RefreshReport)>>> {
        let index = match self.engine.events.refresh().await {
            Ok(index) => index,
            Err(e) => {
                self.status.failures.fetch_add(1, Relaxed);
                return Err(e.into());
            }
        };
        let hot_due = self.last_hot.is_none_or(|t| t.elapsed() >= self.hot_every);
        let changed = !self
            .last_index
            .as_ref()
            .is_some_and(|last| Arc::ptr_eq(last, &index));
        if !changed && !hot_due {
            return Ok(None);
        }
        let today = chrono::Utc::now().date_naive();
        let hot = [
            month_of(today),
            month_of(today - chrono::Duration::days(today.day() as i64)),
        ];
        let config = self.engine.config().clone();
        let due = |month: &str| hot_due || !hot.iter().any(|h| h == month);
        let mut reports = Vec::new();
        let mut failed = None;
        for model in Model::ALL {
            let result = refresh(
                &self.store,
                &self.engine.events,
                self.engine.session().runtime_env(),
                &config,
                model,
                Scope {
                    due: &due,
                    again_from: None,
                },
                |_, _| {},
            )
            .await;
            // One read model failing does not keep the others from their turn.
            let report = match result {
                Ok(r) => r,
                Err(e) => {
                    self.status.failures.fetch_add(1, Relaxed);
                    failed.get_or_insert(e);
                    continue;
                }
            };
            let s = self.status.of(model);
            s.months_current
                .store((report.current + report.built) as u64, Relaxed);
            s.months_stale.store(report.waiting as u64, Relaxed);
            s.months_built.fetch_add(report.built as u64, Relaxed);
            reports.push((model, report));
        }
        // The projections, from the newest one and the months changed since (the hot months
        // on the same turns as the read models' files).
        for entity in crate::projection::Entity::ALL {
            let result = crate::projection::refresh(
                &self.store,
                &self.engine.events,
                self.engine.session().runtime_env(),
                &config,
                entity,
                &due,
                false,
            )
            .await;
            match result {
                Ok(r) => {
                    if r.built {
                        self.status.projections_built[entity as usize].fetch_add(1, Relaxed);
                        tracing::info!(
                            table = entity.name(),
                            rows = r.rows,
                            dirty_months = r.dirty_months,
                            "Wrote a projection."
                        );
                    }
                }
                Err(e) => {
                    self.status.failures.fetch_add(1, Relaxed);
                    failed.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failed {
            // Tried again at the next tick (the index is not recorded as done).
            return Err(e);
        }
        if hot_due {
            self.last_hot = Some(std::time::Instant::now());
        }
        self.last_index = Some(index);
        Ok(Some(reports))
    }
}

/// How a `report_events` read now would be answered: the months of the newest `events`
/// snapshot that the read model holds, and those it would read from `events`.
pub async fn coverage(store: &Store) -> Result<ReadStats> {
    coverage_of(store, Model::ReportEvents).await
}

/// [`coverage`] of any read model.
pub async fn coverage_of(store: &Store, model: Model) -> Result<ReadStats> {
    let log = TableLog::open(store, cdlake_schemas::paths::Table::Events).await?;
    let index = log.refresh().await?;
    let present = listed(store, model).await?;
    let mut stats = ReadStats::default();
    for (month, (fingerprint, _)) in months(&index, model) {
        if present.contains(&file_path(model, &month, &fingerprint)) {
            stats.months_held += 1;
        } else {
            stats.months_read += 1;
        }
    }
    Ok(stats)
}
