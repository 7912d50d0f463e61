//! The [`Engine`]: a DataFusion session over the store.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use cdlake_schemas::paths::Table;
use cdlake_schemas::store::Store;
use cdlake_schemas::{dead_letters_schema, events_schema, spans_schema};
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;

use futures::StreamExt;

use crate::table::StoreTable;
use crate::{Config, DoraReport, DoraRequest, Error, QueryResult, QueryService, Result, views};

/// A query engine over one store.
#[derive(Clone)]
pub struct Engine {
    ctx: SessionContext,
    config: Arc<Config>,
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

impl Engine {
    /// Open the store's tables and define the views.
    pub async fn open(store: &Store, config: Config) -> Result<Self> {
        config.validate()?;
        // DataFusion caches directory listings forever by default, which would hide files
        // committed after the first query: turn that cache off. Files are immutable once
        // committed, so the statistics and footer caches stay on.
        let caches = CacheManagerConfig::default().with_list_files_cache_limit(0);
        // No disk manager: sorts and joins never spill to the system's temporary directory, so
        // no query writes a file outside the store; past the memory pool they fail instead.
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(config.limits.memory_mb.max(64) << 20, 1.0)
            .with_cache_manager(caches)
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .build_arc()?;
        let ctx = SessionContext::new_with_config_rt(session_config(), runtime);
        if let Some((bucket, object_store)) = store.bucket_store() {
            ctx.register_object_store(bucket, object_store);
        }

        for table in TABLES {
            let schema = match table {
                Table::Events => events_schema(),
                Table::DeadLetters => dead_letters_schema(),
                Table::Spans => spans_schema(),
            };
            let url = store
                .root_url()
                .join(&table.prefix())
                .map_err(|e| Error::BadRequest(format!("store URL: {e}")))?;
            let url = ListingTableUrl::parse(url.as_str())?;
            let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
                .with_file_extension(".parquet")
                .with_table_partition_cols(vec![(
                    Table::PARTITION_COLUMN.to_string(),
                    DataType::Utf8,
                )]);
            let listing = ListingTableConfig::new(url)
                .with_listing_options(options)
                .with_schema(schema);
            let listing = ListingTable::try_new(listing)?;
            ctx.register_table(
                table.dir(),
                Arc::new(StoreTable::new(listing, store.clone(), table)),
            )?;
        }
        ctx.register_table("teams", teams_table(&config)?)?;
        for (name, body) in views::definitions(&config.production) {
            ctx.sql(&format!("CREATE VIEW {name} AS {body}"))
                .await
                .map_err(|e| Error::Sql(format!("defining view {name}: {e}")))?;
        }
        Ok(Self {
            ctx,
            config: Arc::new(config),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The DataFusion session (for adapters that need the catalog, such as a Postgres wire
    /// front end). Statements run through it directly are not restricted: use [`Engine::sql`]
    /// for anything a user sent.
    pub fn session(&self) -> &SessionContext {
        &self.ctx
    }

    /// Run one statement from a user: read-only (no DDL, no DML, no `SET`, no `COPY`), within
    /// the time limit.
    ///
    /// A statement naming a DORA view runs on [`Engine::for_subjects`] for the subjects its
    /// views read, which gives the same answer with the shared rows computed once.
    pub async fn sql(&self, sql: &str) -> Result<QueryResult> {
        check_complexity(sql)?;
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        if let Some(subjects) = report_subjects(sql) {
            let engine = self.for_subjects(&subjects).await?;
            return engine.run(sql, Some(options)).await;
        }
        self.run(sql, Some(options)).await
    }

    /// Run SQL of cdlake's own (the DORA report's queries).
    pub(crate) async fn internal(&self, sql: &str) -> Result<QueryResult> {
        self.run(sql, None).await
    }

    async fn run(&self, sql: &str, options: Option<SQLOptions>) -> Result<QueryResult> {
        let limit = self.config.limits.query_timeout_secs;
        let max_rows = self.config.limits.max_result_rows;
        let user = options.is_some();
        let work = async {
            let df = match options {
                Some(o) => self.ctx.sql_with_options(sql, o).await,
                None => self.ctx.sql(sql).await,
            }
            .map_err(|e| Error::Sql(user_message(e)))?;
            let schema = Arc::new(df.schema().as_arrow().clone());
            let engine_error = |e| match e {
                e @ datafusion::error::DataFusionError::ResourcesExhausted(_) => {
                    Error::Sql(user_message(e))
                }
                e => Error::Engine(e),
            };
            let mut stream = df.execute_stream().await.map_err(engine_error)?;
            let mut batches = Vec::new();
            let mut rows = 0usize;
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(engine_error)?;
                rows += batch.num_rows();
                if user && rows > max_rows {
                    return Err(Error::Sql(format!(
                        "the result has more than {max_rows} rows (limits.max_result_rows): add a LIMIT or aggregate"
                    )));
                }
                batches.push(batch);
            }
            Ok(QueryResult { schema, batches })
        };
        tokio::time::timeout(Duration::from_secs(limit.max(1)), work)
            .await
            .map_err(|_| Error::Timeout(limit))?
    }
}

/// The session every engine runs: the `cdlake.public` schema, with `information_schema`.
fn session_config() -> SessionConfig {
    SessionConfig::new()
        .with_information_schema(true)
        .with_default_catalog_and_schema("cdlake", "public")
        .with_create_default_catalog_and_schema(true)
}

impl Engine {
    /// An engine for one statement over the DORA views (a report's, or a dashboard panel's).
    /// Those views read `report_events` several times each, and DataFusion plans every
    /// reference anew: a scan and a de-duplication of the whole history per reference. Here
    /// `report_events` (deployments, incidents, changes, artifacts; without payloads) is
    /// computed once and held in memory for the statement, under the same view definitions.
    pub(crate) async fn for_report(&self) -> Result<Engine> {
        self.for_subjects(views::REPORT_SUBJECTS).await
    }

    /// [`Engine::for_report`] holding only `subjects` in `report_events`: enough for a
    /// statement whose views read only those (see [`report_subjects`]).
    pub(crate) async fn for_subjects(&self, subjects: &[&str]) -> Result<Engine> {
        let rows = self.internal(&views::report_events_sql(subjects)).await?;
        let ctx = SessionContext::new_with_config_rt(session_config(), self.ctx.runtime_env());
        for name in TABLES.iter().map(|t| t.dir()).chain(["teams"]) {
            let provider = self
                .ctx
                .table_provider(name)
                .await
                .map_err(|e| Error::Sql(format!("table {name}: {e}")))?;
            ctx.register_table(name, provider)?;
        }
        let unique = MemTable::try_new(rows.schema, vec![rows.batches])?;
        ctx.register_table("report_events", Arc::new(unique))?;
        for (name, body) in views::definitions(&self.config.production) {
            if name == "report_events" {
                continue;
            }
            ctx.sql(&format!("CREATE VIEW {name} AS {body}"))
                .await
                .map_err(|e| Error::Sql(format!("defining view {name}: {e}")))?;
        }
        Ok(Self {
            ctx,
            config: self.config.clone(),
        })
    }
}

/// The subjects of `report_events` that the DORA views `sql` names read, or `None` when it
/// names none. A false positive (a column or an alias of a view's name) only costs the
/// statement the shared computation.
pub(crate) fn report_subjects(sql: &str) -> Option<Vec<&'static str>> {
    let lower = sql.to_ascii_lowercase();
    let mut needed: Vec<&'static str> = Vec::new();
    for word in lower.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if let Some((_, subjects)) = views::REPORT_VIEWS.iter().find(|(v, _)| *v == word) {
            needed.extend(
                subjects
                    .iter()
                    .filter(|s| !needed.contains(s))
                    .collect::<Vec<_>>(),
            );
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

/// Operators one statement may hold, and how deep its parentheses may nest. Planning and
/// optimising recurse over the expression tree: a 10,000-term `OR` chain would overflow a
/// thread's stack and abort the process, so such statements are refused before parsing.
pub const MAX_OPERATORS: usize = 2_000;
pub const MAX_NESTING: usize = 100;

/// Refuse statements too large to plan safely (see [`MAX_OPERATORS`]). Tokenising does not
/// recurse, so this check cannot overflow itself.
pub fn check_complexity(sql: &str) -> Result<()> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::keywords::Keyword;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize()
        .map_err(|e| Error::Sql(format!("SQL syntax: {e}")))?;
    let (mut operators, mut depth, mut deepest) = (0usize, 0usize, 0usize);
    for t in &tokens {
        match t {
            Token::Word(w) if matches!(w.keyword, Keyword::OR | Keyword::AND | Keyword::NOT) => {
                operators += 1
            }
            Token::Eq
            | Token::Neq
            | Token::Lt
            | Token::Gt
            | Token::LtEq
            | Token::GtEq
            | Token::Plus
            | Token::Minus
            | Token::Mul
            | Token::Div
            | Token::Mod
            | Token::StringConcat => operators += 1,
            Token::LParen => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            Token::RParen => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    if operators > MAX_OPERATORS {
        return Err(Error::Sql(format!(
            "the statement has {operators} operators, more than the {MAX_OPERATORS} cdlake plans safely: use IN (…) for long lists of values"
        )));
    }
    if deepest > MAX_NESTING {
        return Err(Error::Sql(format!(
            "the statement nests parentheses {deepest} deep, more than the {MAX_NESTING} cdlake plans safely"
        )));
    }
    Ok(())
}

fn user_message(e: datafusion::error::DataFusionError) -> String {
    let text = e.strip_backtrace();
    if text.contains("DDL not supported")
        || text.contains("DML not supported")
        || text.contains("Statement not supported")
    {
        format!("cdlake SQL is read-only: {text}")
    } else {
        text
    }
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
        crate::dora::report(self, request).await
    }
}

#[cfg(test)]
mod tests {
    use super::report_subjects;

    #[test]
    fn statements_naming_a_dora_view_are_recognised_by_whole_words_with_their_subjects() {
        assert_eq!(
            report_subjects("SELECT count(*) FROM dora_deployments").as_deref(),
            Some(&["service", "incident", "change", "artifact"][..])
        );
        assert_eq!(
            report_subjects(
                "select * from \"Deployments\" d join cdlake.public.incidents i using (service)"
            )
            .as_deref(),
            Some(&["service", "incident", "change", "artifact"][..])
        );
        assert_eq!(
            report_subjects("SELECT median(recovery_seconds) FROM dora_incidents").as_deref(),
            Some(&["incident"][..])
        );
        assert_eq!(
            report_subjects("SELECT * FROM changes").as_deref(),
            Some(&["change"][..])
        );
        assert_eq!(report_subjects("SELECT * FROM pipeline_runs"), None);
        assert_eq!(
            report_subjects("SELECT deployments_total FROM events"),
            None
        );
        assert_eq!(report_subjects("SELECT 1"), None);
    }
}
