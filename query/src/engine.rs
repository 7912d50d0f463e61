//! The [`Engine`]: a DataFusion session over the store, and the one checked path every user
//! statement takes, whatever the protocol.
//!
//! [`Engine::sql`] (HTTP, the CLI) and the Postgres front end ([`crate::pg`]) both run a
//! statement the same way, on the [`QueryRuntime`] within the time limit:
//!
//! 1. the [`guard`] checks the text, parses it and checks the statement (read-only, what it
//!    reads, how large it is);
//! 2. [`Engine::plan`] chooses the engine (a statement reading the DORA views gets their rows
//!    computed once, [`Engine::for_subjects`]), plans it and checks the plan is read-only;
//! 3. [`Engine::collect`] runs it within the memory pool and collects at most
//!    `limits.max_result_rows` rows and `limits.max_result_mb` bytes.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use cdlake_schemas::lake::{AsOf, TableLog};
use cdlake_schemas::paths::Table;
use cdlake_schemas::store::Store;
use datafusion::datasource::MemTable;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::parser::Statement as DfStatement;
use futures::StreamExt;

use crate::functions::{BoundFunctions, sliced_bytes};
use crate::guard::{self, Class, Dialect};
use crate::projection::Entity;
use crate::runtime::QueryRuntime;
use crate::table::LakeTable;
use crate::{Config, DoraReport, DoraRequest, Error, QueryResult, QueryService, Result, views};

/// A query engine over one store. Cheap to clone: clones share the session and the runtime.
#[derive(Clone)]
pub struct Engine {
    ctx: SessionContext,
    config: Arc<Config>,
    runtime: Arc<QueryRuntime>,
    /// The store and its `events` log, for the read models ([`crate::read_model`]).
    store: Store,
    pub(crate) events: Arc<TableLog>,
    /// The store's root as the engine sees it, hidden from what users read (`EXPLAIN`).
    root: Arc<str>,
    /// The report's rows of `report_events` (narrow, through the read model, pinned to one
    /// snapshot of `events`) when a report made of several (one per environment) chose them:
    /// each of its reports reads the same snapshot.
    report_rows: Option<crate::read_model::Pinned>,
    /// The held views of the newest snapshot statements read, shared by them.
    shared: Arc<SharedViews>,
}

/// The views statements hold ([`views::REPORT_HELD_VIEWS`]: changes, artifacts, deployments,
/// incidents, their pairings), computed once per snapshot of `events` and set of view
/// definitions, and shared by every statement that reads the same: the panels of one dashboard
/// load, or a client's reports, compute them once, not once each. One snapshot is kept (its
/// views stay in memory until a statement reads a newer one); a statement of another snapshot
/// computes its own. A statement computing them makes the others wait and then reuse them.
#[derive(Default)]
pub(crate) struct SharedViews {
    slot: tokio::sync::Mutex<Option<SharedEntry>>,
    computed: std::sync::atomic::AtomicU64,
    reused: std::sync::atomic::AtomicU64,
    /// Entities a statement read from their projections, and those it derived from their
    /// read model instead (no projection yet, or more than a quarter of the months changed since).
    projected: std::sync::atomic::AtomicU64,
    unprojected: std::sync::atomic::AtomicU64,
}

struct SharedEntry {
    key: SharedKey,
    views: std::collections::BTreeMap<&'static str, Arc<MemTable>>,
}

/// What held views are a function of: the `events` snapshot their rows came from and the view
/// definitions (production pattern, `[dora]` rules) and teams they were computed with.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SharedKey {
    version: u64,
    definitions: [u8; 32],
}

impl SharedViews {
    /// How many held views were computed, and how many taken from another statement.
    pub(crate) fn counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.computed.load(Relaxed), self.reused.load(Relaxed))
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The tables of the store that SQL sees.
pub const TABLES: [Table; 3] = [Table::Events, Table::DeadLetters, Table::Spans];

/// The read-only rules DataFusion checks on every user plan, after the guard.
fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

impl Engine {
    /// Open the store's tables (their newest versions, followed as commits land) and define
    /// the views.
    pub async fn open(store: &Store, config: Config) -> Result<Self> {
        Self::open_as_of(store, config, AsOf::Latest).await
    }

    /// Open the store's tables as they were at a version of `events` or at a time (the other
    /// tables as of that version's commit time), and define the views: every answer is the one
    /// the engine would have given then, with the data it had.
    pub async fn open_as_of(store: &Store, config: Config, as_of: AsOf) -> Result<Self> {
        Self::open_defining(store, config, as_of, true).await
    }

    /// [`Engine::open_as_of`] for a process that only computes DORA reports (`cdlake dora`):
    /// its own session defines no views, since each report defines those it reads in a session
    /// of its own ([`Engine::dora`]), and planning every view takes a tenth of a second. A
    /// statement on it reads the tables only.
    pub async fn open_for_reports(store: &Store, config: Config, as_of: AsOf) -> Result<Self> {
        Self::open_defining(store, config, as_of, false).await
    }

    /// Open the tables, and define the views when `views` says.
    async fn open_defining(
        store: &Store,
        config: Config,
        as_of: AsOf,
        views: bool,
    ) -> Result<Self> {
        config.validate()?;
        // Files are immutable once committed, so the statistics and footer caches stay on;
        // which files a table has comes from its Delta log, not from directory listings.
        let caches = CacheManagerConfig::default().with_list_files_cache_limit(0);
        // No disk manager: sorts and joins never spill to the system's temporary directory, so
        // no query writes a file outside the store; past the memory pool they fail instead.
        let runtime_env = RuntimeEnvBuilder::new()
            .with_memory_limit(config.limits.memory_bytes(), 1.0)
            .with_cache_manager(caches)
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .build_arc()?;
        let ctx = new_session(runtime_env, &config);
        if let Some((bucket, object_store)) = store.bucket_store() {
            ctx.register_object_store(bucket, object_store);
        }

        let events = TableLog::open_as_of(store, Table::Events, as_of).await?;
        // The other tables as of the time the chosen `events` version was committed.
        let others = match as_of {
            AsOf::Version(_) => AsOf::Time(events.committed_at().await?),
            other => other,
        };
        let events = Arc::new(events);
        let mut logs = vec![events.clone()];
        for table in [Table::DeadLetters, Table::Spans] {
            logs.push(Arc::new(TableLog::open_as_of(store, table, others).await?));
        }
        for log in logs {
            let name = log.table().dir();
            let provider = LakeTable::new(log).await?;
            ctx.register_table(name, Arc::new(provider))?;
        }
        ctx.register_table("teams", teams_table(&config)?)?;
        if views {
            define_views(&ctx, &config, &[]).await?;
        }
        let runtime = QueryRuntime::new(config.limits.max_concurrent_queries)
            .map_err(|e| Error::internal("starting the query runtime", e))?;
        Ok(Self {
            ctx,
            store: store.clone(),
            events,
            root: Arc::from(store.root_url().path().trim_end_matches('/')),
            config: Arc::new(config),
            runtime: Arc::new(runtime),
            report_rows: None,
            shared: Arc::default(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The DataFusion session (for adapters that need the catalog, such as a Postgres wire
    /// front end). Statements run through it directly are not checked: use [`Engine::sql`] or
    /// [`Engine::run_statement`] for anything a user sent.
    pub fn session(&self) -> &SessionContext {
        &self.ctx
    }

    /// The engine's time limit.
    pub fn time_limit(&self) -> Duration {
        Duration::from_secs(self.config.limits.query_timeout_secs.max(1))
    }

    /// Statements and reports running now on this engine's runtime (shared by its clones).
    pub fn running_queries(&self) -> usize {
        self.runtime.running()
    }

    /// Run `work` on the query runtime within `limit` ([`QueryRuntime::run`]).
    pub async fn within<T: Send + 'static>(
        &self,
        limit: Duration,
        work: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        self.runtime.run(limit, work).await
    }

    /// Run one statement a user sent as text (HTTP, the CLI): the whole checked path, within
    /// the time limit.
    pub async fn sql(&self, sql: &str) -> Result<QueryResult> {
        let engine = self.clone();
        let sql = sql.to_string();
        self.within(self.time_limit(), async move {
            engine.text_statement(&sql).await
        })
        .await
    }

    /// [`Engine::sql`], rendered in `format` (within `limits.max_result_mb`) on the query
    /// runtime too.
    pub async fn sql_rendered(&self, sql: &str, format: crate::format::Format) -> Result<Vec<u8>> {
        let engine = self.clone();
        let sql = sql.to_string();
        self.within(self.time_limit(), async move {
            let result = engine.text_statement(&sql).await?;
            crate::format::render(&result, format, engine.config.limits.max_result_mb)
        })
        .await
    }

    async fn text_statement(&self, sql: &str) -> Result<QueryResult> {
        let engine = self;
        {
            let limits = &engine.config.limits;
            guard::check_text(sql, Dialect::Generic, limits)?;
            let mut statements = guard::parse(sql, Dialect::Generic)?;
            let statement = match (statements.pop(), statements.is_empty()) {
                (Some(s), true) => s,
                (None, _) => {
                    return Err(Error::Sql {
                        message: "the request holds no SQL statement".into(),
                        sqlstate: "42601",
                    });
                }
                (Some(_), false) => {
                    return Err(Error::Sql {
                        message: "send one statement per request".into(),
                        sqlstate: "42601",
                    });
                }
            };
            match guard::check_statement(&statement, limits)? {
                Class::Query => engine.run_statement(statement).await,
                Class::Set { .. } => Err(Error::ReadOnly { what: "SET".into() }),
                Class::Show | Class::Transaction => Err(Error::ReadOnly {
                    what: "a session statement".into(),
                }),
            }
        }
    }

    /// Plan and collect a statement the guard classified as a query. Runs where it is called:
    /// callers are on the query runtime ([`Engine::within`]).
    pub async fn run_statement(&self, statement: DfStatement) -> Result<QueryResult> {
        let engine = self.engine_for(&statement).await?;
        let plan = engine.plan(statement).await?;
        engine.collect(plan).await
    }

    /// The engine `statement` runs on: for a statement reading the DORA views, one holding the
    /// rows they share computed once ([`Engine::for_subjects`]).
    ///
    /// A query (not an `EXPLAIN`, whose plan should show the views) also gets the views of
    /// [`views::REPORT_HELD_VIEWS`] it reads, directly or through other views, computed once
    /// as the report does; and, unless it names `report_events` itself, `report_events`
    /// without the columns no DORA view reads.
    pub async fn engine_for(&self, statement: &DfStatement) -> Result<Engine> {
        let relations = guard::relations(statement);
        let explain = matches!(statement, DfStatement::Explain(_));
        let reached = self.reached_views(&relations, None)?;
        // Pipeline and task runs read `run_events` through its read model (EXPLAIN keeps the
        // view's plan).
        // The entities kept whole among them are read from their projections.
        let projected: Vec<Entity> = if explain {
            Vec::new()
        } else {
            Entity::ALL
                .into_iter()
                .filter(|e| reached.contains(&e.name()))
                .collect()
        };
        let runs: Option<Vec<Entity>> = (!explain && reached.contains(&"run_events")).then(|| {
            projected
                .iter()
                .copied()
                .filter(|e| e.model() == crate::read_model::Model::RunEvents)
                .collect()
        });
        let Some(subjects) = report_subjects(&relations) else {
            return if let Some(entities) = &runs {
                Box::pin(self.with_runs(entities, &reached)).await
            } else {
                Ok(self.clone())
            };
        };
        if explain {
            return self.for_subjects(&subjects).await;
        }
        let held = held_among(&reached);
        let omit: &[&str] = if relations.iter().any(|r| r == "report_events") {
            &[]
        } else {
            views::REPORT_UNREAD_COLUMNS
        };
        self.holding(
            &subjects,
            &held,
            omit,
            runs.as_deref(),
            &projected,
            Defining {
                needed: Some(&reached),
                window: None,
            },
        )
        .await
    }

    /// The views `relations` read, directly or through other views, as this engine's
    /// configuration defines them (over `window`, [`views::definitions_for`];
    /// [`views::reachable`]).
    fn reached_views(
        &self,
        relations: &[String],
        window: Option<views::ReportWindow>,
    ) -> Result<Vec<&'static str>> {
        let options = dora_options(&self.config)?;
        let definitions = views::definitions_for(&self.config.production, options, window);
        Ok(views::reachable(&definitions, relations))
    }

    /// Plan a checked statement and check the plan is read-only.
    pub async fn plan(&self, statement: DfStatement) -> Result<LogicalPlan> {
        let limits = &self.config.limits;
        let plan = self
            .ctx
            .state()
            .statement_to_plan(statement)
            .await
            .map_err(|e| Error::from_datafusion(e, limits))?;
        read_only()
            .verify_plan(&plan)
            .map_err(|e| Error::from_datafusion(e, limits))?;
        Ok(plan)
    }

    /// Run a checked plan and collect its result within the row and byte limits.
    pub async fn collect(&self, plan: LogicalPlan) -> Result<QueryResult> {
        let limits = &self.config.limits;
        let df_error = |e| Error::from_datafusion(e, limits);
        let explain = matches!(plan, LogicalPlan::Explain(_) | LogicalPlan::Analyze(_));
        let df = self
            .ctx
            .execute_logical_plan(plan)
            .await
            .map_err(df_error)?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let mut stream = df.execute_stream().await.map_err(df_error)?;
        let (max_rows, max_bytes) = (limits.max_result_rows, limits.result_bytes() as u64);
        let (mut rows, mut bytes, mut batches) = (0usize, 0u64, Vec::new());
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(df_error)?;
            rows += batch.num_rows();
            bytes += batch
                .columns()
                .iter()
                .map(|c| sliced_bytes(c.as_ref()))
                .sum::<u64>();
            if rows > max_rows {
                return Err(Error::Limit {
                    limit: "max_result_rows",
                    message: format!(
                        "the result has more than {max_rows} rows: add a LIMIT or aggregate"
                    ),
                });
            }
            if bytes > max_bytes {
                return Err(Error::result_too_large(limits.max_result_mb));
            }
            batches.push(batch);
        }
        if explain {
            batches = batches
                .into_iter()
                .map(|b| hide_root(b, &self.root))
                .collect::<Result<_>>()?;
        }
        Ok(QueryResult { schema, batches })
    }

    /// Run SQL of cdlake's own (the DORA report's queries), without the result limits. Runs
    /// where it is called (on the query runtime).
    pub(crate) async fn internal(&self, sql: &str) -> Result<QueryResult> {
        let limits = &self.config.limits;
        let df = self
            .ctx
            .sql(sql)
            .await
            .map_err(|e| Error::from_datafusion(e, limits))?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let started = std::time::Instant::now();
        // `CDLAKE_LOG=cdlake_query=trace` prints its plan with metrics, as for held views.
        let batches = if tracing::enabled!(tracing::Level::TRACE) {
            collect_physical(&self.ctx, df, &self.config).await?.batches
        } else {
            df.collect()
                .await
                .map_err(|e| Error::from_datafusion(e, limits))?
        };
        tracing::debug!(
            statement = sql
                .split_whitespace()
                .take(12)
                .collect::<Vec<_>>()
                .join(" "),
            seconds = started.elapsed().as_secs_f64(),
            "Ran a statement."
        );
        Ok(QueryResult { schema, batches })
    }

    /// The DORA report, on the query runtime within the time limit.
    pub async fn dora(&self, request: &DoraRequest) -> Result<DoraReport> {
        self.dora_paired(request, crate::dora::Pairing::Window)
            .await
    }

    /// [`Engine::dora`], pairing as `pairing` says: the report pairing the whole history is
    /// the reference the window's pairing is tested against.
    pub async fn dora_paired(
        &self,
        request: &DoraRequest,
        pairing: crate::dora::Pairing,
    ) -> Result<DoraReport> {
        crate::dora::check_request(request, &self.config.limits)?;
        let engine = self.clone();
        let request = request.clone();
        self.within(self.time_limit(), async move {
            let started = std::time::Instant::now();
            let report = crate::dora::report_over(&engine, &request, pairing).await;
            tracing::debug!(
                seconds = started.elapsed().as_secs_f64(),
                "Computed the report, and let go of what it held."
            );
            report
        })
        .await
    }
}

/// Run `df` to the end, with the schema its batches carry: the physical plan's (the logical
/// one may differ in nullability, which a `MemTable` of the batches would refuse).
pub(crate) async fn collect_physical(
    ctx: &SessionContext,
    df: datafusion::dataframe::DataFrame,
    config: &Config,
) -> Result<QueryResult> {
    let plan = df
        .create_physical_plan()
        .await
        .map_err(|e| Error::from_datafusion(e, &config.limits))?;
    let schema = plan.schema();
    let batches = datafusion::physical_plan::collect(plan.clone(), ctx.task_ctx())
        .await
        .map_err(|e| Error::from_datafusion(e, &config.limits))?;
    // `CDLAKE_LOG=cdlake_query=trace`: where a held view's time went, operator by operator.
    if tracing::enabled!(tracing::Level::TRACE) {
        tracing::trace!(
            "Plan with metrics:\n{}",
            datafusion::physical_plan::display::DisplayableExecutionPlan::with_metrics(
                plan.as_ref()
            )
            .indent(true)
        );
    }
    Ok(QueryResult { schema, batches })
}

/// Rows held for a statement with each string view column compacted to the bytes its rows
/// use. Batches out of an aggregation or a filter share the large buffers of their input:
/// held as they are, every batch counts (and a join's build side copies) those buffers
/// again, which took a report over 10 million events past the memory limit.
fn compact_views(batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
    use arrow::array::AsArray;
    batches
        .into_iter()
        .map(|batch| {
            if !batch
                .columns()
                .iter()
                .any(|c| matches!(c.data_type(), DataType::Utf8View | DataType::BinaryView))
            {
                return Ok(batch);
            }
            let columns: Vec<ArrayRef> = batch
                .columns()
                .iter()
                .map(|c| match c.data_type() {
                    DataType::Utf8View => Arc::new(c.as_string_view().gc()) as ArrayRef,
                    DataType::BinaryView => Arc::new(c.as_binary_view().gc()) as ArrayRef,
                    _ => c.clone(),
                })
                .collect();
            Ok(RecordBatch::try_new(batch.schema(), columns)?)
        })
        .collect()
}

/// `runtime` with a disk manager in the system's temporary directory, for cdlake's own
/// derivations (read models, projections): the same memory pool, caches and object stores, but
/// what does not fit in the pool spills (a repartition's or an aggregation's state at 10
/// million events) instead of failing. Statements keep the runtime without one, so no user
/// query writes a file outside the store.
pub(crate) fn spilling(runtime: &Arc<RuntimeEnv>) -> Result<Arc<RuntimeEnv>> {
    let disk_manager = DiskManagerBuilder::default()
        .with_mode(DiskManagerMode::OsTmpDirectory)
        .build()?;
    Ok(Arc::new(RuntimeEnv {
        memory_pool: runtime.memory_pool.clone(),
        disk_manager: Arc::new(disk_manager),
        cache_manager: runtime.cache_manager.clone(),
        object_store_registry: runtime.object_store_registry.clone(),
    }))
}

/// A session with cdlake's settings and rules: the `cdlake.public` schema, with
/// `information_schema`, and the bounded functions.
pub(crate) fn new_session(runtime: Arc<RuntimeEnv>, config: &Config) -> SessionContext {
    let session = SessionConfig::new()
        .with_information_schema(true)
        .with_default_catalog_and_schema("cdlake", "public")
        .with_create_default_catalog_and_schema(true);
    let ctx = SessionContext::new_with_config_rt(session, runtime);
    // DataFusion's percentile_cont rounds its interpolation (apache/datafusion#25266).
    ctx.register_udaf(crate::percentile::udaf());
    ctx.add_analyzer_rule(Arc::new(BoundFunctions::new(
        config.limits.function_output_bytes(),
    )));
    ctx
}

async fn define_views(ctx: &SessionContext, config: &Config, skip: &[&str]) -> Result<()> {
    define_views_holding(ctx, config, skip, &[], None, Defining::default()).await
}

/// Which views a statement's session defines.
#[derive(Debug, Clone, Copy, Default)]
struct Defining<'a> {
    /// Only these (the views the statement reaches, [`views::reachable`]); all when `None`.
    needed: Option<&'a [&'a str]>,
    /// As a DORA report over this window reads them ([`views::definitions_for`]).
    window: Option<views::ReportWindow>,
}

/// [`define_views`], computing each of the views named in `held` once, as it is defined, and
/// holding its rows in memory under its name: the views defined after it read those rows.
/// With `shared` (the views' cache and the `events` version `report_events` is pinned to),
/// a held view another statement computed over the same snapshot and definitions is taken from
/// there, and one computed here is left there. `which` says which views are defined
/// ([`Defining`]); over a report's window, the ones that differ from the views users query, and
/// those reading them, are neither taken from the cache nor left there.
async fn define_views_holding(
    ctx: &SessionContext,
    config: &Config,
    skip: &[&str],
    held: &[&str],
    shared: Option<(&SharedViews, u64)>,
    which: Defining<'_>,
) -> Result<()> {
    let Defining { needed, window } = which;
    use std::sync::atomic::Ordering::Relaxed;
    let options = dora_options(config)?;
    let definitions = views::definitions_for(&config.production, options.clone(), window);
    // The views users query, which the cache keeps; over a window, those its views differ from
    // (and those reading them) are the statement's own, neither taken from the cache nor left
    // there.
    let whole = match window {
        None => definitions.clone(),
        Some(_) => views::definitions_with(&config.production, options),
    };
    let differing: Vec<&'static str> = definitions
        .iter()
        .filter(|d| !whole.contains(d))
        .map(|(name, _)| *name)
        .collect();
    let own = views::readers_of(&definitions, &differing);
    // The cache's slot, locked while this statement computes what it lacks, and its entry
    // for this snapshot and these definitions.
    let mut slot = None;
    if let Some((cache, version)) = shared
        && !held.is_empty()
    {
        let key = SharedKey {
            version,
            definitions: definitions_digest(&whole, config),
        };
        let mut locked = cache.slot.lock().await;
        if locked.as_ref().is_none_or(|e| e.key != key) {
            *locked = Some(SharedEntry {
                key,
                views: Default::default(),
            });
        }
        slot = Some((cache, locked));
    }
    let defined = |name: &str| !skip.contains(&name) && needed.is_none_or(|n| n.contains(&name));
    // The held views still to come that the cache may hold: once there are none, the slot is
    // let go, so other statements do not wait while this one computes its own.
    let mut shared_left = definitions
        .iter()
        .filter(|(name, _)| defined(name) && held.contains(name) && !own.contains(name))
        .count();
    for (name, body) in definitions {
        // A statement's own session defines only the views it reaches: planning every view
        // takes a tenth of a second.
        if !defined(name) {
            continue;
        }
        let body = bind_bounds(ctx, config, body).await?;
        if shared_left == 0 {
            slot = None;
        }
        if held.contains(&name) {
            let own = own.contains(&name);
            if !own {
                shared_left -= 1;
            }
            if let Some((cache, locked)) = slot.as_ref().filter(|_| !own)
                && let Some(entry) = locked.as_ref()
                && let Some(table) = entry.views.get(name)
            {
                cache.reused.fetch_add(1, Relaxed);
                tracing::debug!(view = name, "Took a view another statement computed.");
                ctx.register_table(name, table.clone())?;
                continue;
            }
            let started = std::time::Instant::now();
            let df = ctx
                .sql(&body)
                .await
                .map_err(|e| Error::internal("defining the views", e))?;
            let QueryResult { schema, batches } = collect_physical(ctx, df, config).await?;
            let batches = compact_views(batches)?;
            tracing::debug!(
                view = name,
                rows = batches.iter().map(RecordBatch::num_rows).sum::<usize>(),
                seconds = started.elapsed().as_secs_f64(),
                "Computed a view once for the statement."
            );
            let table = Arc::new(MemTable::try_new(schema, vec![batches])?);
            if let Some((cache, locked)) = slot.as_mut().filter(|_| !own)
                && let Some(entry) = locked.as_mut()
            {
                cache.computed.fetch_add(1, Relaxed);
                entry.views.insert(name, table.clone());
            }
            ctx.register_table(name, table)?;
            continue;
        }
        let started = std::time::Instant::now();
        ctx.sql(&format!("CREATE VIEW {name} AS {body}"))
            .await
            .map_err(|e| Error::internal("defining the views", e))?;
        tracing::trace!(
            view = name,
            seconds = started.elapsed().as_secs_f64(),
            "Defined a view."
        );
    }
    Ok(())
}

/// The `[dora]` options of `config`, a configuration error as a bad request.
pub(crate) fn dora_options(config: &Config) -> Result<views::DoraOptions> {
    config
        .dora
        .options()
        .map_err(|e| Error::BadRequest(e.to_string()))
}

/// `body` with each bound it reads ([`views::bounds`], a scalar subquery over views defined
/// before it) replaced by its value, so that a filter on it is a literal a scan prunes row
/// groups by. The view means the same either way.
async fn bind_bounds(ctx: &SessionContext, config: &Config, body: String) -> Result<String> {
    let mut body = body;
    for (subquery, sql) in views::bounds() {
        if !body.contains(&subquery) {
            continue;
        }
        let df = ctx
            .sql(sql)
            .await
            .map_err(|e| Error::internal("computing a view's bound", e))?;
        let QueryResult { batches, .. } = collect_physical(ctx, df, config).await?;
        let value = batches.iter().find(|b| b.num_rows() > 0).and_then(|b| {
            use arrow::array::{Array, AsArray};
            let c = b
                .column(0)
                .as_primitive_opt::<arrow::datatypes::Int64Type>()?;
            c.is_valid(0).then(|| c.value(0))
        });
        tracing::debug!(bound = sql, value, "Bound a view to a value.");
        let literal = match value {
            Some(v) => format!("CAST({v} AS BIGINT)"),
            None => "CAST(NULL AS BIGINT)".to_string(),
        };
        body = body.replace(&subquery, &literal);
    }
    Ok(body)
}

/// The views among `reached` that a statement holds ([`views::REPORT_HELD_VIEWS`]).
fn held_among(reached: &[&'static str]) -> Vec<&'static str> {
    views::REPORT_HELD_VIEWS
        .iter()
        .copied()
        .filter(|v| reached.contains(v))
        .collect()
}

/// A digest of the view definitions and the teams they join: held views computed with the
/// same digest (over the same snapshot) are the same rows.
fn definitions_digest(definitions: &[(&'static str, String)], config: &Config) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (name, body) in definitions {
        for part in [name.as_bytes(), body.as_bytes()] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
    }
    for (key, team) in &config.teams {
        for part in [key.as_bytes(), team.as_bytes()] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
    }
    h.finalize().into()
}

/// `EXPLAIN` output without the store's location: users see table names, not the server's
/// file system.
fn hide_root(batch: RecordBatch, root: &str) -> Result<RecordBatch> {
    if root.is_empty() {
        return Ok(batch);
    }
    let columns = batch
        .columns()
        .iter()
        .map(|c| -> Result<ArrayRef> {
            if !matches!(c.data_type(), DataType::Utf8 | DataType::Utf8View) {
                return Ok(c.clone());
            }
            let text = arrow::compute::cast(c, &DataType::Utf8)?;
            let text = text
                .as_any()
                .downcast_ref::<StringArray>()
                .cloned()
                .unwrap_or_else(|| StringArray::from(Vec::<&str>::new()));
            let hidden: StringArray = text
                .iter()
                .map(|v| v.map(|s| s.replace(root, "<store>")))
                .collect();
            Ok(arrow::compute::cast(
                &(Arc::new(hidden) as ArrayRef),
                c.data_type(),
            )?)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

impl Engine {
    /// An engine for one statement over the DORA views (a report's, or a dashboard panel's).
    /// Those views read `report_events` several times each. Here `report_events` (deployments
    /// and attempts, incidents, changes, artifacts; without payloads) is the `report_events`
    /// read model pinned to one snapshot of `events`: a month's file per month it holds, sorted
    /// by subject in small row groups, so each reference scans only its columns and its
    /// subjects' row groups, and nothing of it is held in memory.
    ///
    /// The report's statements also share views (`changes` is read by four of them,
    /// `dora_deployments` and `dora_change_deliveries` by two each): those in
    /// [`views::REPORT_HELD_VIEWS`] are computed once for the whole report, as it starts.
    ///
    /// With `window`, the pairing views are those of the report over that window
    /// ([`views::definitions_for`]): its own, computed for it alone; the other held views are
    /// shared as any statement's.
    pub(crate) async fn for_report(&self, window: Option<views::ReportWindow>) -> Result<Engine> {
        // Only the views its statements reach, and among them the held ones: not `deployments`
        // of every environment, nor `artifacts`, which production deployments join from the
        // facts themselves.
        let reads: Vec<String> = views::REPORT_READS.iter().map(|r| r.to_string()).collect();
        let reached = self.reached_views(&reads, window)?;
        let mut held = held_among(&reached);
        // Over a window, `changes` is read only for the changes merged late enough to be
        // delivered in it: a scan of `change_facts` then reads those, not the whole history.
        let options = dora_options(&self.config)?;
        if !views::report_holds_changes(&options, window) {
            held.retain(|v| *v != "changes");
        }
        // Every projection of `report_events` (as a statement takes those it reaches), so a
        // new one is read by the report without being listed here too.
        let projected: Vec<Entity> = Entity::ALL
            .into_iter()
            .filter(|e| e.model() == crate::read_model::Model::ReportEvents)
            .collect();
        self.holding(
            views::REPORT_SUBJECTS,
            &held,
            views::REPORT_UNREAD_COLUMNS,
            None,
            &projected,
            Defining {
                needed: Some(&reached),
                window,
            },
        )
        .await
    }

    /// [`Engine::for_report`] holding only `subjects` in `report_events`: enough for a
    /// statement whose views read only those (see [`report_subjects`]).
    pub(crate) async fn for_subjects(&self, subjects: &[&str]) -> Result<Engine> {
        self.holding(subjects, &[], &[], None, &[], Defining::default())
            .await
    }

    /// An engine with `report_events` (without the columns in `omit`: all its subjects, through
    /// the read model, scanned where read; with them: of `subjects`, read once and held in
    /// memory) and the views named in `held` computed once and held in memory.
    async fn holding(
        &self,
        subjects: &[&str],
        held: &[&str],
        omit: &[&str],
        runs: Option<&[Entity]>,
        projected: &[Entity],
        which: Defining<'_>,
    ) -> Result<Engine> {
        let started = std::time::Instant::now();
        let ctx = self.statement_session().await?;
        // The `events` version of the rows, when the held views may be shared.
        let mut version = None;
        // The entities of `report_events` registered from their projections.
        let mut report_projected = Vec::new();
        if omit == views::REPORT_UNREAD_COLUMNS {
            // The narrow rows are what the read model holds: each view scans them from its
            // files (and the months it does not hold from `events`) as it is computed, reading
            // only the columns and the subjects' row groups it needs.
            let rows = match &self.report_rows {
                Some(rows) => rows.clone(),
                None => Box::pin(self.report_rows()).await?,
            };
            // All of the report's subjects, whatever this statement reads: every view picks its
            // own subjects (a scan skips the others' row groups), and the held views it computes
            // are then the same rows for every statement that shares them.
            version = Some(rows.version);
            ctx.register_table("report_events", rows.view.clone())?;
            let facts: Vec<Entity> = projected
                .iter()
                .copied()
                .filter(|e| e.model() == crate::read_model::Model::ReportEvents)
                .collect();
            report_projected = Box::pin(self.register_projections(&ctx, &rows, &facts)).await;
        } else {
            let rows =
                Box::pin(self.internal(&views::report_events_sql_without(subjects, omit))).await?;
            tracing::debug!(
                rows = rows
                    .batches
                    .iter()
                    .map(RecordBatch::num_rows)
                    .sum::<usize>(),
                seconds = started.elapsed().as_secs_f64(),
                "Read report_events once for the statement."
            );
            let unique = MemTable::try_new(rows.schema, vec![compact_views(rows.batches)?])?;
            ctx.register_table("report_events", Arc::new(unique))?;
        }
        let mut skip = vec!["report_events"];
        skip.extend(report_projected);
        if let Some(entities) = runs {
            skip.extend(Box::pin(self.register_runs(&ctx, entities)).await?);
        }
        let shared = version.map(|v| (&*self.shared, v));
        Box::pin(define_views_holding(
            &ctx,
            &self.config,
            &skip,
            held,
            shared,
            which,
        ))
        .await?;
        Ok(self.with_session(ctx))
    }

    /// How many held views statements computed, and how many they took from another
    /// statement over the same snapshot ([`SharedViews`]).
    pub fn shared_view_counts(&self) -> (u64, u64) {
        self.shared.counts()
    }

    /// How many entities statements read from their projections, and how many they derived
    /// from their read model instead ([`crate::projection`]).
    pub fn projection_read_counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.shared.projected.load(Relaxed),
            self.shared.unprojected.load(Relaxed),
        )
    }

    /// [`Engine::shared_view_counts`] and [`Engine::projection_read_counts`] as Prometheus
    /// text, for `/metrics`.
    pub fn render_shared_view_metrics(&self) -> String {
        let (computed, reused) = self.shared.counts();
        let (projected, unprojected) = self.projection_read_counts();
        format!(
            "# HELP cdlake_held_views_total Views a statement holds (changes, deployments, …), by whether it computed them or took them from a statement over the same snapshot.\n\
             # TYPE cdlake_held_views_total counter\n\
             cdlake_held_views_total{{outcome=\"computed\"}} {computed}\n\
             cdlake_held_views_total{{outcome=\"reused\"}} {reused}\n\
             # HELP cdlake_projection_reads_total Entities (pipeline_runs, task_runs, change_facts, artifact_facts, artifact_changes, production_events, incident_facts) a statement read, by whether it read them from their projection or derived them (no projection yet, or more than a quarter of the months changed since).\n\
             # TYPE cdlake_projection_reads_total counter\n\
             cdlake_projection_reads_total{{outcome=\"projection\"}} {projected}\n\
             cdlake_projection_reads_total{{outcome=\"derived\"}} {unprojected}\n"
        )
    }

    /// An engine whose `run_events` is read through its read model, and `entities` from their
    /// projections, for a statement over pipeline or task runs only.
    async fn with_runs(&self, entities: &[Entity], needed: &[&str]) -> Result<Engine> {
        let ctx = self.statement_session().await?;
        let skip = Box::pin(self.register_runs(&ctx, entities)).await?;
        let which = Defining {
            needed: Some(needed),
            window: None,
        };
        define_views_holding(&ctx, &self.config, &skip, &[], None, which).await?;
        Ok(self.with_session(ctx))
    }

    /// `run_events` in `ctx`, through its read model, and each of `entities` from its
    /// projection ([`crate::projection`]) pinned to the same snapshot: the names registered,
    /// which are then not defined as views.
    async fn register_runs(
        &self,
        ctx: &SessionContext,
        entities: &[Entity],
    ) -> Result<Vec<&'static str>> {
        let started = std::time::Instant::now();
        let pinned = match crate::read_model::pinned_view(
            ctx,
            &self.store,
            &self.events,
            crate::read_model::Model::RunEvents,
        )
        .await
        {
            Ok(pinned) => pinned,
            Err(e) => {
                // The answer does not need the read model: read `events` instead.
                tracing::warn!(error = %e, "Could not read run_events through its read model; reading events instead.");
                ctx.sql(&format!(
                    "CREATE VIEW run_events AS {}",
                    views::run_events_sql()
                ))
                .await
                .map_err(|e| Error::internal("defining the views", e))?;
                return Ok(vec!["run_events"]);
            }
        };
        ctx.register_table("run_events", pinned.view.clone())?;
        tracing::debug!(
            months_held = pinned.stats.months_held,
            months_read = pinned.stats.months_read,
            seconds = started.elapsed().as_secs_f64(),
            "Registered run_events through its read model."
        );
        let mut registered = vec!["run_events"];
        registered.extend(Box::pin(self.register_projections(ctx, &pinned, entities)).await);
        Ok(registered)
    }

    /// Each of `entities` derived from the read model `rows` (registered in `ctx`) from its
    /// projection ([`crate::projection`]), pinned to the same snapshot: the names registered.
    /// An entity without a projection, or whose projection cannot be read, is left to its view.
    async fn register_projections(
        &self,
        ctx: &SessionContext,
        rows: &crate::read_model::Pinned,
        entities: &[Entity],
    ) -> Vec<&'static str> {
        let mut registered = Vec::new();
        for &entity in entities {
            let started = std::time::Instant::now();
            match Box::pin(crate::projection::register(
                ctx,
                &self.store,
                rows,
                entity,
                &self.config,
            ))
            .await
            {
                Ok(Some(stats)) => {
                    tracing::debug!(
                        view = entity.name(),
                        dirty_months = stats.dirty_months,
                        derived = stats.derived,
                        seconds = started.elapsed().as_secs_f64(),
                        "Registered a view from its projection."
                    );
                    self.shared
                        .projected
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    registered.push(entity.name());
                }
                Ok(None) => {
                    self.shared
                        .unprojected
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Err(e) => {
                    self.shared
                        .unprojected
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    // The view over the read model gives the same rows, only slower.
                    tracing::warn!(view = entity.name(), error = %e, "Could not read a projection; deriving the view from its read model instead.");
                    let _ = ctx.deregister_table(entity.name());
                }
            }
        }
        registered
    }

    /// A session for one statement: the tables and `teams` of this engine's session, its
    /// runtime, and the catalog Postgres clients read; no views yet.
    async fn statement_session(&self) -> Result<SessionContext> {
        let ctx = new_session(self.ctx.runtime_env(), &self.config);
        for name in TABLES.iter().map(|t| t.dir()).chain(["teams"]) {
            let provider = self
                .ctx
                .table_provider(name)
                .await
                .map_err(|e| Error::internal("opening the tables", e))?;
            ctx.register_table(name, provider)?;
        }
        // The catalog Postgres clients read, when the base session has one.
        let catalog = self
            .ctx
            .state()
            .config()
            .options()
            .catalog
            .default_catalog
            .clone();
        if let (Some(base), Some(own)) = (self.ctx.catalog(&catalog), ctx.catalog(&catalog))
            && let Some(pg) = base.schema("pg_catalog")
        {
            own.register_schema("pg_catalog", pg)?;
        }
        Ok(ctx)
    }

    /// This engine with another production pattern: its statements and reports define the
    /// views with it (a report by environment reports each environment as production).
    pub(crate) fn with_production(&self, pattern: String) -> Engine {
        self.with_config(|c| c.production = pattern)
    }

    /// This engine placing the report's figures in `bands`' levels (`--bands`, `bands=`),
    /// whatever `[dora] bands` says.
    pub fn with_bands(&self, bands: crate::dora::levels::Benchmark) -> Engine {
        self.with_config(|c| c.dora.bands = bands.as_str().to_string())
    }

    /// This engine with its configuration changed by `change` (for the views its reports
    /// define; the tables and the base session stay shared).
    fn with_config(&self, change: impl FnOnce(&mut Config)) -> Engine {
        let mut config = (*self.config).clone();
        change(&mut config);
        Self {
            config: Arc::new(config),
            ..self.clone()
        }
    }

    /// This engine with `ctx` as its session.
    fn with_session(&self, ctx: SessionContext) -> Engine {
        Self {
            ctx,
            config: self.config.clone(),
            runtime: self.runtime.clone(),
            root: self.root.clone(),
            store: self.store.clone(),
            events: self.events.clone(),
            report_rows: self.report_rows.clone(),
            shared: self.shared.clone(),
        }
    }

    /// This engine with the report's rows of `report_events` chosen once (one snapshot), for
    /// the several reports of one answer (a report by environment).
    pub(crate) async fn with_report_rows(&self) -> Result<Engine> {
        let rows = self.report_rows().await?;
        Ok(Self {
            report_rows: Some(rows),
            ..self.clone()
        })
    }

    /// The narrow rows of `report_events` (all of [`views::REPORT_SUBJECTS`]) through the read
    /// model, pinned to the newest snapshot of `events`.
    async fn report_rows(&self) -> Result<crate::read_model::Pinned> {
        let started = std::time::Instant::now();
        let scratch = new_session(self.ctx.runtime_env(), &self.config);
        let rows = crate::read_model::pinned_view(
            &scratch,
            &self.store,
            &self.events,
            crate::read_model::Model::ReportEvents,
        )
        .await?;
        tracing::debug!(
            months_held = rows.stats.months_held,
            months_read = rows.stats.months_read,
            version = rows.version,
            seconds = started.elapsed().as_secs_f64(),
            "Chose report_events' files through its read model."
        );
        Ok(rows)
    }
}

/// The subjects of `report_events` that the DORA views among `relations` read, or `None` when
/// none of them is one. A false positive (a CTE of a view's name) only costs the statement the
/// shared computation.
pub(crate) fn report_subjects(relations: &[String]) -> Option<Vec<&'static str>> {
    let mut needed: Vec<&'static str> = Vec::new();
    for name in relations {
        if let Some((_, subjects)) = views::REPORT_VIEWS.iter().find(|(v, _)| v == name) {
            for s in subjects.iter() {
                if !needed.contains(s) {
                    needed.push(s);
                }
            }
        }
    }
    (!needed.is_empty()).then(|| {
        views::REPORT_SUBJECTS
            .iter()
            .copied()
            .filter(|s| needed.contains(s))
            .collect()
    })
}

fn teams_table(config: &Config) -> Result<Arc<MemTable>> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("team", DataType::Utf8, false),
    ]));
    let keys: ArrayRef = Arc::new(StringArray::from_iter_values(config.teams.keys()));
    let teams: ArrayRef = Arc::new(StringArray::from_iter_values(config.teams.values()));
    let batch = RecordBatch::try_new(schema.clone(), vec![keys, teams])?;
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
}

#[async_trait::async_trait]
impl QueryService for Engine {
    async fn sql(&self, sql: &str) -> Result<QueryResult> {
        Engine::sql(self, sql).await
    }

    async fn dora(&self, request: &DoraRequest) -> Result<DoraReport> {
        Engine::dora(self, request).await
    }
}

#[cfg(test)]
mod tests {
    use super::report_subjects;
    use crate::guard::{Dialect, parse, relations};

    fn subjects(sql: &str) -> Option<Vec<&'static str>> {
        report_subjects(&relations(&parse(sql, Dialect::Generic).unwrap()[0]))
    }

    #[test]
    fn statements_reading_a_dora_view_are_recognised_by_their_relations_with_their_subjects() {
        assert_eq!(
            subjects("SELECT count(*) FROM dora_deployments").as_deref(),
            Some(&["service", "incident", "change", "artifact", "branch"][..])
        );
        assert_eq!(
            subjects("select * from Deployments d join cdlake.public.incidents i using (service)")
                .as_deref(),
            Some(&["service", "incident", "change", "artifact", "branch"][..])
        );
        assert_eq!(
            subjects("SELECT median(recovery_seconds) FROM dora_incidents").as_deref(),
            Some(&["incident"][..])
        );
        assert_eq!(
            subjects("SELECT * FROM changes").as_deref(),
            Some(&["change", "artifact", "branch"][..]),
            "a revert names a commit, which artifact links resolve; a created branch has a first commit"
        );
        assert_eq!(subjects("SELECT * FROM pipeline_runs"), None);
        // Task runs read the pipeline subjects, not `report_events`.
        assert_eq!(
            subjects("SELECT * FROM task_runs t JOIN pipeline_runs p USING (run_key)"),
            None
        );
        assert_eq!(subjects("SELECT deployments_total FROM events"), None);
        assert_eq!(subjects("SELECT 1 AS dora_deployments"), None);
        assert_eq!(subjects("SELECT 1"), None);
    }
}
