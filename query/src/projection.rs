//! Entity projections: `pipeline_runs` and `task_runs` kept whole, one row per run attempt or
//! task run, so a question about the runs finished in a range reads those runs' rows instead
//! of grouping every run event of the history; `change_facts` and `artifact_facts`, a row
//! per change and per artifact from its own events, which the DORA views pair; and
//! `production_events`, a row per production deployment event, sorted by time, so the
//! pairings read those rows instead of filtering every `service` event of the history.
//! `change_facts` is sorted by merge time, so a report's window reads the changes merged late
//! enough to be delivered in it. `incident_facts`, a row per incident from its own events, so
//! the incidents are not grouped from every incident event of the history. `production_links`,
//! a row per production deployment event and change its artifact links to, with the change's
//! repository and merge time, derived from three of those (`production_events`,
//! `artifact_changes`, `change_facts`), so the frontiers are not joined from every artifact's
//! links and every change's facts: read only where no month changed since it was written (an
//! event of one entity changes rows of another in other months), and derived by its view
//! elsewhere.
//!
//! ```text
//! <store>/_cdlake/read/<entity>/<id>.parquet   the rows, runs sorted by finished_at,
//!                                              changes by merged_at, deployments by time,
//!                                              incidents by detected_at
//! <store>/_cdlake/read/<entity>/<id>.json      its manifest
//! ```
//!
//! A projection is derived from one snapshot of `events` through its read model (`run_events`
//! or `report_events`), and its manifest records what it reflects: the fingerprint of each
//! month of that read model (the paths and sizes of that month's `events` files,
//! [`crate::read_model`]) and the digest of its definition (with the `[dora]` hotfix labels
//! `change_facts` reads, and the production pattern `production_events` reads). Each row
//! keeps the entity's identity as one value (`_key`) and the first and last month of the
//! events it came from (`_first_month`, `_last_month`).
//!
//! A reader at a newer snapshot compares fingerprints: the months whose files changed since
//! (new events, a late event, a compaction) are *dirty*. An entity can have changed only if it
//! has an event in a dirty month now, or had one then (its month range meets a dirty month);
//! those entities are derived again from their events (of the dirty months and of the months
//! their rows span, which hold all their events), and every other row is taken as it is. So an
//! answer never misses or doubles a committed event whatever the projection's age, and with no
//! dirty month it is a scan of the projection, where a filter on `finished_at` skips the row
//! groups of other times.
//!
//! [`refresh`] writes a new projection when months are dirty (derived the same way, from the
//! newest one), the data file before its manifest, so a crash leaves either the old projection
//! or both files; superseded files go after [`read_model::SUPERSEDED_KEPT`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch};
use cdlake_schemas::lake::TableLog;
use cdlake_schemas::store::Store;
use chrono::NaiveDate;
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::prelude::SessionContext;
use sha2::{Digest, Sha256};

use crate::read_model::{self, Model, Pinned};
use crate::views;
use crate::{Error, Result};

/// The layout of a projection's data file: part of its definition's digest.
const LAYOUT: &str =
    "projection layout 1: one file sorted by its order column and _key, 16 Ki-row groups";

/// The entities kept whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Entity {
    /// `pipeline_runs`: a row per pipeline run attempt.
    PipelineRuns,
    /// `task_runs`: a row per task run.
    TaskRuns,
    /// `change_facts`: a row per change, from its own events.
    ChangeFacts,
    /// `artifact_facts`: a row per artifact, from its own events and the merges naming it.
    ArtifactFacts,
    /// `artifact_changes`: a row per artifact and change an event links.
    ArtifactChanges,
    /// `production_events`: a row per production deployment event.
    ProductionEvents,
    /// `incident_facts`: a row per incident, from its own events.
    IncidentFacts,
    /// `production_links`: a row per production deployment event and change its artifact links
    /// to, from the three projections before it (read only where no month changed since).
    ProductionLinks,
}

impl Entity {
    /// In the order they are refreshed: an entity after those it is derived from.
    pub const ALL: [Entity; 8] = [
        Entity::PipelineRuns,
        Entity::TaskRuns,
        Entity::ChangeFacts,
        Entity::ArtifactFacts,
        Entity::ArtifactChanges,
        Entity::ProductionEvents,
        Entity::IncidentFacts,
        Entity::ProductionLinks,
    ];

    /// The view it answers.
    pub fn name(self) -> &'static str {
        match self {
            Entity::PipelineRuns => "pipeline_runs",
            Entity::TaskRuns => "task_runs",
            Entity::ChangeFacts => "change_facts",
            Entity::ArtifactFacts => "artifact_facts",
            Entity::ArtifactChanges => "artifact_changes",
            Entity::ProductionEvents => "production_events",
            Entity::IncidentFacts => "incident_facts",
            Entity::ProductionLinks => "production_links",
        }
    }

    /// The read model it is derived from (by its months), registered under its name.
    pub fn model(self) -> Model {
        match self {
            Entity::PipelineRuns | Entity::TaskRuns => Model::RunEvents,
            Entity::ChangeFacts
            | Entity::ArtifactFacts
            | Entity::ArtifactChanges
            | Entity::ProductionEvents
            | Entity::IncidentFacts
            | Entity::ProductionLinks => Model::ReportEvents,
        }
    }

    /// Where its files live, under the store's root.
    pub fn prefix(self) -> String {
        format!("_cdlake/read/{}/", self.name())
    }

    /// The entities it is derived from (none: from its own events), each before it in
    /// [`Entity::ALL`].
    pub fn inputs(self) -> &'static [Entity] {
        match self {
            Entity::ProductionLinks => &[
                Entity::ProductionEvents,
                Entity::ArtifactChanges,
                Entity::ChangeFacts,
            ],
            _ => &[],
        }
    }

    /// Its rows over `source` (rows of its read model), with the projection's columns when
    /// `projection`.
    fn sql(self, source: &str, settings: &Settings, projection: bool) -> String {
        match self {
            Entity::PipelineRuns => views::pipeline_runs_sql(source, projection),
            Entity::TaskRuns => views::task_runs_sql(source, projection),
            Entity::ProductionEvents => {
                views::production_events_sql(source, &settings.production, projection)
            }
            Entity::ChangeFacts => {
                views::change_facts_sql(source, &settings.hotfix_labels, projection)
            }
            Entity::ArtifactFacts => views::artifact_facts_sql(source, projection),
            Entity::ArtifactChanges => views::artifact_changes_sql(source, projection),
            Entity::IncidentFacts => {
                views::incident_facts_sql(source, &settings.production, projection)
            }
            Entity::ProductionLinks => self
                .over_inputs(
                    |e| format!("({})", e.sql(source, settings, false)),
                    projection,
                )
                .unwrap_or_default(),
        }
    }

    /// The rows of an entity derived from others ([`Entity::inputs`]) over the relation
    /// `input` names for each; `None` for an entity derived from its own events.
    fn over_inputs(self, input: impl Fn(Entity) -> String, projection: bool) -> Option<String> {
        match (self, self.inputs()) {
            (Entity::ProductionLinks, &[events, links, changes]) => {
                Some(views::production_links_sql(
                    &input(events),
                    &input(links),
                    &input(changes),
                    projection,
                ))
            }
            _ => None,
        }
    }

    /// The read model's rows it reads, and their identity as `_key`: `None` for an entity
    /// derived from others ([`Entity::inputs`]), which is not derived again by the months
    /// changed since its projection (an event of one entity changes the rows of another, in
    /// other months), so its projection is read only where no month changed.
    fn rows_and_key(self, settings: &Settings) -> Option<(String, String)> {
        let production_rows;
        let (rows, identity): (&str, &[&str]) = match self {
            Entity::PipelineRuns => (views::PIPELINE_RUN_ROWS, &views::PIPELINE_RUN_IDENTITY),
            Entity::TaskRuns => (views::TASK_RUN_ROWS, &views::TASK_RUN_IDENTITY),
            Entity::ChangeFacts => (views::CHANGE_ROWS, &views::CHANGE_IDENTITY),
            Entity::ArtifactFacts => (views::ARTIFACT_ROWS, &views::ARTIFACT_IDENTITY),
            Entity::ArtifactChanges => (
                views::ARTIFACT_CHANGE_ROWS,
                &views::ARTIFACT_CHANGE_IDENTITY,
            ),
            Entity::ProductionEvents => {
                production_rows = views::production_event_rows(&settings.production);
                (&production_rows, &views::EVENT_IDENTITY)
            }
            Entity::IncidentFacts => (views::INCIDENT_ROWS, &views::INCIDENT_IDENTITY),
            Entity::ProductionLinks => return None,
        };
        Some((rows.to_string(), views::identity_key(identity)))
    }

    /// The column its file is sorted by (then `_key`), so a filter on it skips row groups:
    /// part of its digest, so a projection sorted otherwise is not read.
    fn order(self) -> Option<&'static str> {
        match self {
            Entity::PipelineRuns | Entity::TaskRuns => Some("finished_at"),
            Entity::ProductionEvents | Entity::ProductionLinks => Some("time"),
            // A report's window reads the changes merged late enough to be delivered in it
            // (`crate::views::delivered_before`).
            Entity::ChangeFacts => Some("merged_at"),
            Entity::IncidentFacts => Some("detected_at"),
            Entity::ArtifactFacts | Entity::ArtifactChanges => None,
        }
    }

    /// The digest of what its rows mean: its SQL (with the `[dora]` settings it reads), its
    /// read model's and the file layout. A projection of another digest is not read.
    fn digest(self, settings: &Settings) -> String {
        let mut h = Sha256::new();
        let model = self.model();
        for part in [
            LAYOUT.to_string(),
            self.order().unwrap_or_default().to_string(),
            self.sql(model.name(), settings, true),
            model.definition(),
        ] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        hex::encode(&h.finalize()[..16])
    }
}

/// What a projection's rows depend on besides its events.
struct Settings {
    /// The `[dora]` hotfix labels (what `change_facts.hotfix` reads).
    hotfix_labels: Vec<String>,
    /// The production environment pattern (what `production_events` keeps, and
    /// `incident_facts.production` reads).
    production: String,
}

/// The [`Settings`] of `config`.
fn settings(config: &crate::Config) -> Result<Settings> {
    Ok(Settings {
        hotfix_labels: crate::engine::dora_options(config)?.hotfix_labels,
        production: config.production.clone(),
    })
}

/// What a projection reflects (`<id>.json`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Manifest {
    /// [`Entity::digest`] of its definition.
    digest: String,
    /// The `events` version it was derived from.
    version: u64,
    /// The fingerprint of each month of its read model it reflects.
    months: BTreeMap<String, String>,
    /// Its data file, under the store's root.
    data: String,
    /// Its rows.
    rows: u64,
}

/// How a projection answered a statement.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ProjectionStats {
    /// Months changed since the projection: their entities were derived again.
    pub dirty_months: usize,
    /// Entities derived again from their events.
    pub derived: usize,
}

/// The newest projection of `entity` of today's definition with the fewest months changed
/// against `months` (the fingerprints of now), and those months; `None` when there is none.
async fn newest(
    store: &Store,
    entity: Entity,
    digest: &str,
    months: &BTreeMap<String, String>,
) -> Result<Option<(Manifest, BTreeSet<String>)>> {
    let mut best: Option<(Manifest, BTreeSet<String>)> = None;
    let listed = store
        .list(&entity.prefix())
        .await
        .map_err(read_model::store_err)?;
    for path in listed
        .iter()
        .filter(|p| p.ends_with(".json") && !in_delta_log(p))
    {
        // A manifest gone meanwhile (superseded and deleted) or unreadable is not a choice.
        let Ok(Some(bytes)) = store.get(path).await else {
            continue;
        };
        let Ok(manifest) = serde_json::from_slice::<Manifest>(&bytes) else {
            tracing::warn!(path, "Skipped a projection manifest that does not parse.");
            continue;
        };
        if manifest.digest != digest || !listed.contains(&manifest.data) {
            continue;
        }
        // Its months go into SQL: each must be a month.
        if manifest
            .months
            .keys()
            .any(|m| read_model::month_of_text(m).as_deref() != Some(m))
        {
            tracing::warn!(
                path,
                "Skipped a projection manifest with a month that is no month."
            );
            continue;
        }
        let dirty = dirty_months(&manifest.months, months);
        let better = best.as_ref().is_none_or(|(b, d)| {
            (dirty.len(), std::cmp::Reverse(manifest.version))
                < (d.len(), std::cmp::Reverse(b.version))
        });
        if better {
            best = Some((manifest, dirty));
        }
    }
    Ok(best)
}

/// The months whose fingerprint differs between `then` and `now`, or that only one has.
fn dirty_months(
    then: &BTreeMap<String, String>,
    now: &BTreeMap<String, String>,
) -> BTreeSet<String> {
    let all: BTreeSet<&String> = then.keys().chain(now.keys()).collect();
    all.into_iter()
        .filter(|m| then.get(*m) != now.get(*m))
        .cloned()
        .collect()
}

/// `YYYY-MM` months from `first` to `last`, both included.
fn months_between(first: &str, last: &str) -> Vec<String> {
    let parse = |m: &str| NaiveDate::parse_from_str(&format!("{m}-01"), "%Y-%m-%d").ok();
    let (Some(mut at), Some(end)) = (parse(first), parse(last)) else {
        return vec![first.to_string(), last.to_string()];
    };
    let mut out = Vec::new();
    while at <= end {
        out.push(read_model::month_of(at));
        at = match at.checked_add_months(chrono::Months::new(1)) {
            Some(next) => next,
            None => break,
        };
    }
    out
}

fn err(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
    Error::internal("reading a projection", e)
}

/// Run `sql` in `ctx` and hold its rows as the table `name`; returns the rows.
async fn hold(ctx: &SessionContext, name: &str, sql: &str) -> Result<Vec<RecordBatch>> {
    let df = ctx.sql(sql).await.map_err(err)?;
    let schema = Arc::new(df.schema().as_arrow().clone());
    let batches = df.collect().await.map_err(err)?;
    let schema = batches.first().map_or(schema, RecordBatch::schema);
    let table = MemTable::try_new(schema, vec![batches.clone()]).map_err(err)?;
    ctx.register_table(name, Arc::new(table))?;
    Ok(batches)
}

/// `entity` at the snapshot of `rows` (its read model, registered in `ctx` under its name), with
/// the projection's columns: from its newest projection and the events of the months changed
/// since, or `None` when no projection of today's definition exists.
///
/// With `give_way` (a statement, not a refresh), also `None` when many months changed since
/// (more than the two hot ones and more than a quarter: an import, a spray of old events, a
/// compaction of everything): deriving the changed entities again then costs about what the
/// view costs, and more with the projection to merge, so the view answers until the next
/// projection is written.
async fn current(
    ctx: &SessionContext,
    store: &Store,
    rows: &Pinned,
    entity: Entity,
    config: &crate::Config,
    give_way: bool,
) -> Result<Option<(Arc<dyn TableProvider>, Manifest, ProjectionStats)>> {
    use datafusion::datasource::file_format::parquet::ParquetFormat;
    use datafusion::datasource::listing::{
        ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
    };
    let model = entity.model();
    let settings = settings(config)?;
    let now = read_model::months(&rows.index, model);
    let fingerprints: BTreeMap<String, String> = now
        .iter()
        .map(|(m, (f, _))| (m.clone(), f.clone()))
        .collect();
    let Some((manifest, dirty)) =
        newest(store, entity, &entity.digest(&settings), &fingerprints).await?
    else {
        return Ok(None);
    };
    let incremental = entity.rows_and_key(&settings);
    if incremental.is_none() && !dirty.is_empty() {
        tracing::debug!(
            view = entity.name(),
            dirty_months = dirty.len(),
            "Months changed since the projection of a view derived from others: deriving the view instead."
        );
        return Ok(None);
    }
    if give_way && dirty.len() > 2 && dirty.len() * 4 > now.len() {
        tracing::debug!(
            view = entity.name(),
            dirty_months = dirty.len(),
            "Most months changed since the projection: deriving the view instead."
        );
        return Ok(None);
    }
    let source = model.name();
    let name = entity.name();
    let projection = format!("cdlake_{name}_projection");
    let url = store.root_url().join(&manifest.data).map_err(err)?;
    let options =
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let config = ListingTableConfig::new(ListingTableUrl::parse(url.as_str()).map_err(err)?)
        .with_listing_options(options)
        .infer_schema(&ctx.state())
        .await
        .map_err(err)?;
    ctx.register_table(
        projection.as_str(),
        Arc::new(ListingTable::try_new(config).map_err(err)?),
    )?;
    let mut stats = ProjectionStats {
        dirty_months: dirty.len(),
        derived: 0,
    };
    if dirty.is_empty() {
        let view = ctx
            .sql(&format!("SELECT * FROM {projection}"))
            .await
            .map_err(err)?
            .into_view();
        return Ok(Some((view, manifest, stats)));
    }
    let dates_of = |months: &BTreeSet<String>| -> Vec<NaiveDate> {
        months
            .iter()
            .filter_map(|m| now.get(m))
            .flat_map(|(_, dates)| dates.iter().copied())
            .collect()
    };
    // Checked before the projection is opened: an entity derived from others is not derived
    // again by its changed months.
    let Some((selected, key)) = incremental else {
        return Ok(None);
    };
    // The entities with an event in a dirty month now.
    let dirty_dates = dates_of(&dirty);
    let touched = format!("cdlake_{name}_touched");
    let touched_sql = if dirty_dates.is_empty() {
        "SELECT CAST(NULL AS VARCHAR) AS _key WHERE false".to_string()
    } else {
        format!(
            "SELECT DISTINCT {key} AS _key FROM {source} WHERE {selected} AND {}",
            read_model::dates_predicate(&dirty_dates)
        )
    };
    hold(ctx, &touched, &touched_sql).await?;
    // Those and the projected entities whose months meet a dirty month: their keys, and the
    // months their rows span.
    let meets: Vec<String> = dirty
        .iter()
        .map(|m| format!("(_first_month <= '{m}' AND _last_month >= '{m}')"))
        .collect();
    // Every row of those keys: an entity kept as one row per event (`production_events`) has
    // a row per copy where another writer stored an event twice, and the months of each copy
    // are read again, not only those of the copy that met a dirty month.
    let spans_name = format!("cdlake_{name}_spans");
    let spans = hold(
        ctx,
        &spans_name,
        &format!(
            "SELECT DISTINCT p._key, p._first_month, p._last_month FROM {projection} p
             WHERE p._key IN (SELECT _key FROM {touched}
                              UNION SELECT _key FROM {projection} WHERE {})",
            meets.join(" OR ")
        ),
    )
    .await?;
    let mut read_months = dirty.clone();
    for batch in &spans {
        let first = arrow::compute::cast(batch.column(1), &arrow::datatypes::DataType::Utf8)
            .map_err(err)?;
        let last = arrow::compute::cast(batch.column(2), &arrow::datatypes::DataType::Utf8)
            .map_err(err)?;
        let (first, last) = (first.as_string::<i32>(), last.as_string::<i32>());
        for i in 0..batch.num_rows() {
            read_months.extend(months_between(first.value(i), last.value(i)));
        }
    }
    let changed = format!("cdlake_{name}_changed");
    hold(
        ctx,
        &changed,
        &format!("SELECT _key FROM {touched} UNION SELECT _key FROM {spans_name}"),
    )
    .await?;
    // Those entities derived again from the events of the months that hold all their events.
    let read_dates = dates_of(&read_months);
    let derived = format!("cdlake_{name}_derived");
    let derived_sql = if read_dates.is_empty() {
        format!("SELECT * FROM {projection} WHERE false")
    } else {
        // Only the changed entities' rows are grouped (one long-lived entity widens the
        // months read, not the rows grouped).
        let source = format!(
            "(SELECT s.* FROM {source} s JOIN {changed} c ON c._key = {key} WHERE {})",
            read_model::dates_predicate(&read_dates)
        );
        entity.sql(&source, &settings, true)
    };
    stats.derived = hold(ctx, &derived, &derived_sql)
        .await?
        .iter()
        .map(RecordBatch::num_rows)
        .sum();
    let view = ctx
        .sql(&format!(
            "SELECT * FROM {projection} p
             WHERE NOT EXISTS (SELECT 1 FROM {changed} c WHERE c._key = p._key)
             UNION ALL SELECT * FROM {derived}"
        ))
        .await
        .map_err(err)?
        .into_view();
    Ok(Some((view, manifest, stats)))
}

/// Register `entity`'s view in `ctx` from its projection, pinned to the snapshot of `rows` (its
/// read model, registered in `ctx` under its name). `None` when there is no projection of
/// today's definition: the caller defines the view over the read model.
pub(crate) async fn register(
    ctx: &SessionContext,
    store: &Store,
    rows: &Pinned,
    entity: Entity,
    config: &crate::Config,
) -> Result<Option<ProjectionStats>> {
    let Some((full, _, stats)) = current(ctx, store, rows, entity, config, true).await? else {
        return Ok(None);
    };
    let full_name = format!("cdlake_{}_full", entity.name());
    ctx.register_table(full_name.as_str(), full.clone())?;
    let columns: Vec<String> = full
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|n| !views::PROJECTION_COLUMNS.contains(&n.as_str()))
        .map(|n| format!("\"{n}\""))
        .collect();
    let view = ctx
        .sql(&format!("SELECT {} FROM {full_name}", columns.join(", ")))
        .await
        .map_err(err)?
        .into_view();
    ctx.register_table(entity.name(), view)?;
    Ok(Some(stats))
}

/// What [`refresh`] did for one entity.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ProjectionReport {
    /// Whether a new projection was written.
    pub built: bool,
    /// Its rows, when written.
    pub rows: u64,
    /// Months that changed since the newest projection (0 when it was current).
    pub dirty_months: usize,
    /// Files of superseded projections deleted.
    pub deleted: usize,
    /// The version of the projection's Delta table that made the newest projection its
    /// contents, when this refresh committed one.
    pub published: Option<u64>,
}

/// Write a projection of `entity` for the newest `events` snapshot when months changed since
/// the newest one (and one of them is `due`, or `again` asks for a projection from the events
/// alone), and delete superseded files.
pub async fn refresh(
    store: &Store,
    log: &TableLog,
    runtime: Arc<RuntimeEnv>,
    config: &crate::Config,
    entity: Entity,
    due: &(dyn Fn(&str) -> bool + Send + Sync),
    again: bool,
) -> Result<ProjectionReport> {
    let ctx = crate::engine::new_session(crate::engine::spilling(&runtime)?, config);
    let model = entity.model();
    let settings = settings(config)?;
    let digest = entity.digest(&settings);
    let rows = read_model::pinned_view(&ctx, store, log, model).await?;
    ctx.register_table(model.name(), rows.view.clone())?;
    let fingerprints: BTreeMap<String, String> = read_model::months(&rows.index, model)
        .into_iter()
        .map(|(m, (f, _))| (m, f))
        .collect();
    let mut report = ProjectionReport::default();
    let newest = if again {
        None
    } else {
        newest(store, entity, &digest, &fingerprints).await?
    };
    let mut keep: BTreeSet<String> = BTreeSet::new();
    if let Some((manifest, dirty)) = &newest {
        report.dirty_months = dirty.len();
        keep.insert(manifest.data.clone());
        keep.insert(manifest_path(&manifest.data));
        if dirty.is_empty() || !dirty.iter().any(|m| due(m)) {
            report.published = publish(&ctx, store, entity, manifest, None).await;
            delete_superseded(store, entity, &keep, config, &mut report).await?;
            return Ok(report);
        }
    }
    // Derived from other entities: all of it again, from their projections where they are
    // current (refreshed before it), or their views over the read model.
    let rows_sql = if let Some(sql) = entity.over_inputs(|e| e.name().to_string(), true) {
        for &input in entity.inputs() {
            let registered = register(&ctx, store, &rows, input, config)
                .await
                .unwrap_or_else(|e| {
                    // Its view over the read model gives the same rows.
                    tracing::warn!(view = input.name(), error = %e, "Could not read a projection; deriving the view from its read model instead.");
                    let _ = ctx.deregister_table(input.name());
                    None
                });
            if registered.is_none() {
                let view = input.sql(model.name(), &settings, false);
                ctx.sql(&format!("CREATE VIEW {} AS {view}", input.name()))
                    .await
                    .map_err(build_err)?;
            }
        }
        sql
    } else if newest.is_some() {
        let (full, _, _) = current(&ctx, store, &rows, entity, config, false)
            .await?
            .ok_or_else(|| {
                Error::internal("building a projection", "its projection vanished meanwhile")
            })?;
        ctx.register_table("cdlake_projection_rows", full)?;
        "SELECT * FROM cdlake_projection_rows".to_string()
    } else {
        entity.sql(model.name(), &settings, true)
    };
    let df = ctx.sql(&rows_sql).await.map_err(build_err)?;
    let schema = Arc::new(df.schema().as_arrow().clone());
    let batches = df.collect().await.map_err(build_err)?;
    let schema = batches.first().map_or(schema, RecordBatch::schema);
    // Sorted by its order column and `_key` (here, not in the plan: a sort there would have
    // to fit one partition's share of the memory pool), so a filter on it skips row groups.
    let all = arrow::compute::concat_batches(&schema, &batches).map_err(build_err)?;
    drop(batches);
    let mut columns = Vec::new();
    for (name, nulls_first) in entity
        .order()
        .map(|o| (o, true))
        .into_iter()
        .chain([("_key", false)])
    {
        columns.push(arrow::compute::SortColumn {
            values: all
                .column(schema.index_of(name).map_err(build_err)?)
                .clone(),
            options: Some(arrow::compute::SortOptions {
                descending: false,
                nulls_first,
            }),
        });
    }
    let order = arrow::compute::lexsort_to_indices(&columns, None).map_err(build_err)?;
    let sorted = arrow::compute::take_record_batch(&all, &order).map_err(build_err)?;
    drop(all);
    let batches = [sorted];
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).map_err(build_err)?))
        .set_max_row_group_row_count(Some(read_model::ROW_GROUP_ROWS))
        .build();
    let mut out = Vec::new();
    let mut writer =
        ArrowWriter::try_new(&mut out, schema.clone(), Some(props)).map_err(build_err)?;
    for b in &batches {
        report.rows += b.num_rows() as u64;
        writer.write(b).map_err(build_err)?;
    }
    writer.close().map_err(build_err)?;
    let mut h = Sha256::new();
    h.update(digest.as_bytes());
    for (month, fingerprint) in &fingerprints {
        h.update(month.as_bytes());
        h.update(fingerprint.as_bytes());
    }
    let id = hex::encode(&h.finalize()[..16]);
    let data = format!("{}{id}.parquet", entity.prefix());
    let manifest = Manifest {
        digest,
        version: rows.version,
        months: fingerprints,
        data: data.clone(),
        rows: report.rows,
    };
    // The data before its manifest: a manifest names only a whole file. A file of this name
    // already there (another refresher was first) holds the same rows; written from the events
    // alone (`again`), the files of this name are replaced.
    let size = out.len() as u64;
    let manifest_bytes = serde_json::to_vec_pretty(&manifest).map_err(build_err)?;
    if again {
        store.put(&data, out).await.map_err(read_model::store_err)?;
        store
            .put(&manifest_path(&data), manifest_bytes)
            .await
            .map_err(read_model::store_err)?;
    } else {
        store
            .put_if_absent(&data, out)
            .await
            .map_err(read_model::store_err)?;
        store
            .put_if_absent(&manifest_path(&data), manifest_bytes)
            .await
            .map_err(read_model::store_err)?;
    }
    report.built = true;
    report.published = publish(&ctx, store, entity, &manifest, Some((&schema, size))).await;
    keep.insert(manifest_path(&data));
    keep.insert(data);
    delete_superseded(store, entity, &keep, config, &mut report).await?;
    Ok(report)
}

/// [`refresh`] of every entity derived from one of `models` on a store, opening its `events`
/// table (for commands and tests); `again` writes each from the events alone.
pub async fn refresh_store(
    store: &Store,
    config: &crate::Config,
    models: &[Model],
    again: bool,
) -> Result<Vec<(Entity, ProjectionReport)>> {
    let engine = crate::Engine::open(store, config.clone()).await?;
    let mut reports = Vec::new();
    for entity in Entity::ALL
        .into_iter()
        .filter(|e| models.contains(&e.model()))
    {
        let report = refresh(
            store,
            &engine.events,
            engine.session().runtime_env(),
            config,
            entity,
            &|_| true,
            again,
        )
        .await?;
        reports.push((entity, report));
    }
    Ok(reports)
}

/// How a read of `entity` now would be answered: `None` when it has no projection of today's
/// definition (the view is derived from its read model), else the months of the newest
/// `events` snapshot changed since its projection (their entities derived again).
pub async fn dirty_months_of(
    store: &Store,
    entity: Entity,
    config: &crate::Config,
) -> Result<Option<usize>> {
    let log = TableLog::open(store, cdlake_schemas::paths::Table::Events).await?;
    let index = log.refresh().await?;
    let fingerprints: BTreeMap<String, String> = read_model::months(&index, entity.model())
        .into_iter()
        .map(|(m, (f, _))| (m, f))
        .collect();
    let digest = entity.digest(&settings(config)?);
    Ok(newest(store, entity, &digest, &fingerprints)
        .await?
        .map(|(_, dirty)| dirty.len()))
}

/// Whether `path` is a file of a projection's Delta log (not a projection's own file).
fn in_delta_log(path: &str) -> bool {
    path.contains("/_delta_log/")
}

/// Make the projection of `manifest` the newest version of `entity`'s Delta table, where
/// outside engines read it, unless that table already holds a projection of an `events`
/// version at least as new (another refresher's). The version committed, if any. A failure is
/// logged, not returned: cdlake's own statements choose projections by their manifests.
async fn publish(
    ctx: &SessionContext,
    store: &Store,
    entity: Entity,
    manifest: &Manifest,
    written: Option<(&arrow::datatypes::SchemaRef, u64)>,
) -> Option<u64> {
    // The projections this process has seen published (or superseded there by a newer one):
    // a refresh that writes nothing (`written` is `None`) does not open the Delta table again
    // for them; one that wrote the file always commits it.
    static DONE: std::sync::LazyLock<std::sync::Mutex<BTreeSet<String>>> =
        std::sync::LazyLock::new(Default::default);
    let key = format!("{}\n{}", store.location(), manifest.data);
    if written.is_none() && DONE.lock().is_ok_and(|done| done.contains(&key)) {
        return None;
    }
    match try_publish(ctx, store, entity, manifest, written).await {
        Ok(version) => {
            if let Ok(mut done) = DONE.lock() {
                done.insert(key);
            }
            version
        }
        Err(e) => {
            tracing::warn!(view = entity.name(), error = %e, "Could not commit the projection to its Delta table; outside engines read the one before. cdlake's own answers are unaffected; the next refresh tries again.");
            None
        }
    }
}

async fn try_publish(
    ctx: &SessionContext,
    store: &Store,
    entity: Entity,
    manifest: &Manifest,
    written: Option<(&arrow::datatypes::SchemaRef, u64)>,
) -> Result<Option<u64>> {
    use cdlake_schemas::lake::{CommitError, whole};
    let prefix = entity.prefix();
    let Some(relative) = manifest.data.strip_prefix(&prefix) else {
        return Ok(None);
    };
    // The file's schema and size: known when this refresh wrote it, else read from the store.
    let (schema, size) = match written {
        Some((schema, size)) => (schema.clone(), size),
        None => {
            let Some(size) = store
                .size(&manifest.data)
                .await
                .map_err(read_model::store_err)?
            else {
                return Ok(None);
            };
            let url = store.root_url().join(&manifest.data).map_err(build_err)?;
            let df = ctx
                .read_parquet(
                    url.as_str(),
                    datafusion::prelude::ParquetReadOptions::default(),
                )
                .await
                .map_err(build_err)?;
            (Arc::new(df.schema().as_arrow().clone()), size)
        }
    };
    for _ in 0..3 {
        // Another refresher's projection of a version at least as new stays.
        for path in whole::files(store, &prefix).await? {
            if path == relative {
                continue;
            }
            let other = store
                .get(&manifest_path(&format!("{prefix}{path}")))
                .await
                .map_err(read_model::store_err)?
                .and_then(|bytes| serde_json::from_slice::<Manifest>(&bytes).ok());
            if other.is_some_and(|o| o.version >= manifest.version) {
                return Ok(None);
            }
        }
        let file = whole::WholeFile {
            path: relative.to_string(),
            size,
            rows: manifest.rows,
        };
        match whole::replace(store, &prefix, entity.name(), &schema, &file).await {
            Ok(version) => return Ok(version),
            Err(CommitError::Conflict { .. }) => continue,
            Err(CommitError::Failed(e)) => return Err(e.into()),
        }
    }
    Ok(None)
}

/// The manifest of a projection's file (its data file's or its own path).
fn manifest_path(file: &str) -> String {
    let id = file
        .strip_suffix(".parquet")
        .or_else(|| file.strip_suffix(".json"))
        .unwrap_or(file);
    format!("{id}.json")
}

fn build_err(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
    Error::internal("building a projection", e)
}

/// Delete the superseded files of `entity`: those of its digest other than `keep` once the
/// newest of `keep` has existed longer than a statement may read an older one (the read models'
/// rule: a statement that chose a projection before it was superseded has finished with it),
/// and those of another digest (another `[dora] hotfix_labels`, an older cdlake) once a day old.
async fn delete_superseded(
    store: &Store,
    entity: Entity,
    keep: &BTreeSet<String>,
    config: &crate::Config,
    report: &mut ProjectionReport,
) -> Result<()> {
    let kept = read_model::superseded_kept(config);
    let now = chrono::Utc::now();
    let cutoff = now - kept;
    let foreign_cutoff = now - chrono::Duration::days(1).max(kept);
    let listed: Vec<_> = store
        .list_meta(&entity.prefix())
        .await
        .map_err(read_model::store_err)?
        .into_iter()
        .filter(|m| !in_delta_log(m.location.as_ref()))
        .collect();
    // Since when the projection kept is current: its newest file's time.
    let Some(current_since) = listed
        .iter()
        .filter(|m| keep.contains(m.location.as_ref()))
        .map(|m| m.last_modified)
        .max()
    else {
        return Ok(());
    };
    let ours: BTreeSet<String> = match keep.iter().find(|p| p.ends_with(".json")) {
        Some(path) => match store.get(path).await.map_err(read_model::store_err)? {
            Some(bytes) => serde_json::from_slice::<Manifest>(&bytes)
                .map(|m| m.digest)
                .into_iter()
                .collect(),
            None => BTreeSet::new(),
        },
        None => BTreeSet::new(),
    };
    // Which files are due, all read before any is deleted (a data file goes with its
    // manifest, whichever is listed first).
    let mut due = Vec::new();
    for meta in &listed {
        let path = meta.location.to_string();
        if keep.contains(&path) {
            continue;
        }
        let digest = match store
            .get(&manifest_path(&path))
            .await
            .map_err(read_model::store_err)?
        {
            Some(bytes) => serde_json::from_slice::<Manifest>(&bytes)
                .ok()
                .map(|m| m.digest),
            None => None,
        };
        let superseded = match digest {
            Some(d) if ours.contains(&d) => current_since < cutoff,
            _ => meta.last_modified < foreign_cutoff,
        };
        if superseded {
            due.push(path);
        }
    }
    if due.is_empty() {
        return Ok(());
    }
    // The files the newest version of the Delta table names stay (outside engines read them),
    // whatever the manifests say.
    let published: BTreeSet<String> = cdlake_schemas::lake::whole::files(store, &entity.prefix())
        .await?
        .into_iter()
        .map(|p| format!("{}{p}", entity.prefix()))
        .flat_map(|p| [manifest_path(&p), p])
        .collect();
    for path in due.into_iter().filter(|p| !published.contains(p)) {
        store.delete(&path).await.map_err(read_model::store_err)?;
        report.deleted += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_and_its_manifest_share_the_id() {
        assert_eq!(
            manifest_path("_cdlake/read/t/ab.parquet"),
            "_cdlake/read/t/ab.json"
        );
        assert_eq!(
            manifest_path("_cdlake/read/t/ab.json"),
            "_cdlake/read/t/ab.json"
        );
    }

    #[test]
    fn months_between_spans_years_and_keeps_odd_text() {
        assert_eq!(
            months_between("2025-11", "2026-02"),
            ["2025-11", "2025-12", "2026-01", "2026-02"]
        );
        assert_eq!(months_between("2026-03", "2026-03"), ["2026-03"]);
        assert!(months_between("2026-04", "2026-03").is_empty());
    }

    #[test]
    fn a_month_is_dirty_when_its_fingerprint_differs_or_only_one_side_has_it() {
        let then: BTreeMap<String, String> = [("2026-01", "a"), ("2026-02", "b"), ("2026-03", "c")]
            .into_iter()
            .map(|(m, f)| (m.to_string(), f.to_string()))
            .collect();
        let now: BTreeMap<String, String> = [("2026-02", "b"), ("2026-03", "x"), ("2026-04", "d")]
            .into_iter()
            .map(|(m, f)| (m.to_string(), f.to_string()))
            .collect();
        let dirty: Vec<String> = dirty_months(&then, &now).into_iter().collect();
        assert_eq!(dirty, ["2026-01", "2026-03", "2026-04"]);
    }
}
