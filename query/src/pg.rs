//! The Postgres wire protocol front end (psql, Grafana's PostgreSQL data source).
//!
//! Built on `pgwire` (through `datafusion-postgres`), with cdlake's own handlers so every rule
//! of [`Engine::sql`] holds here too:
//!
//! - **Auth.** Only user `cdlake` may log in. With a token, the client must send it as the
//!   (cleartext) password; it is compared in constant time. Any other user, `postgres`
//!   included, is refused whatever the password. A connection that failed to log in never
//!   reaches the query handlers (they check a marker that only a successful login sets).
//! - **Read-only.** Every statement is parsed (Postgres dialect, with the client-compatibility
//!   rewrites of `datafusion-pg-catalog`) and classified before anything is planned: queries
//!   (`SELECT`, `WITH`, `VALUES`, `EXPLAIN`, `DESCRIBE`, `SHOW TABLES`) are planned and then
//!   checked with the same [`SQLOptions`] as [`Engine::sql`] (no DDL, no DML, no statements);
//!   tables named by a file path or URL (`SELECT * FROM '/etc/passwd'`) are refused; harmless
//!   session statements clients send (`SET application_name`, `SET extra_float_digits`,
//!   `SET DateStyle`, `SHOW …`, `BEGIN`/`COMMIT`/`ROLLBACK`) are answered without touching
//!   DataFusion; everything else (`INSERT`, `COPY`, `CREATE …`, `SET datafusion.…`, …) is
//!   refused with SQLSTATE 42501 and a message saying cdlake's SQL is read-only.
//! - **Limits.** Statements too large to plan safely (a 10,000-term `OR` chain would overflow
//!   the stack) are refused before parsing by [`check_complexity`], as [`Engine::sql`] does.
//!   The engine's memory pool bounds every operator; each statement (planning and execution)
//!   runs under the engine's query timeout (or a shorter client `statement_timeout`); a result
//!   is collected before it is sent and refused past `limits.max_result_rows` rows or the
//!   memory limit in bytes, so a runaway cross join ends with an error. A failed statement
//!   answers an error; the connection and the server go on.
//! - **Catalog.** `pg_catalog` (from `datafusion-pg-catalog`) is installed on the engine's
//!   session, so psql's `\dt`, `\dv`, `\d events` and Grafana's schema queries work.

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Schema};
use async_trait::async_trait;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{self, Statement, visit_relations};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion_postgres::QueryHook;
use datafusion_postgres::arrow_pg::datatypes::df::deserialize_parameters_with_server_types;
use datafusion_postgres::arrow_pg::datatypes::{
    PG_OID_ALIAS_KEY, arrow_schema_to_pg_fields, encode_recordbatch, into_pg_type,
    pg_type_for_alias_kind,
};
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::setup_pg_catalog;
use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::pgwire;
use futures::{Sink, SinkExt, StreamExt};
use pgwire::api::auth::{
    DefaultServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldFormat, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{
    ClientInfo, ClientPortalStore, ConnectionManager, ErrorHandler, METADATA_USER,
    PgWireConnectionState, PgWireServerHandlers, PidSecretKeyGenerator,
    RandomPidSecretKeyGenerator, Type,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::types::format::FormatOptions;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::Engine;
use crate::engine::check_complexity;
use crate::engine::report_subjects;

/// The only user that may log in.
const USER: &str = "cdlake";

/// Stack of the query runtime's threads (address space; pages are committed as used).
const QUERY_THREAD_STACK: usize = 64 << 20;

/// Connections served at once; more are closed on arrival.
const MAX_CONNECTIONS: usize = 256;

/// The client's `statement_timeout`, as `datafusion-postgres`' `SET` hook stores it.
const METADATA_STATEMENT_TIMEOUT: &str = "statement_timeout_ms";

/// Session variables a client may `SET` (answered without changing DataFusion's
/// configuration). Everything else, `datafusion.*` above all, is refused.
const SETTABLE: &[&str] = &[
    "application_name",
    "extra_float_digits",
    "datestyle",
    "intervalstyle",
    "bytea_output",
    "search_path",
    "statement_timeout",
    "timezone",
    "client_encoding",
    "client_min_messages",
    "standard_conforming_strings",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "default_transaction_isolation",
    "default_transaction_read_only",
    "transaction_read_only",
    "jit",
];

/// The subset of [`SETTABLE`] that `SetShowHook` records per connection (and reports back
/// with a `ParameterStatus`); the rest are accepted with no effect.
const RECORDED: &[&str] = &[
    "application_name",
    "extra_float_digits",
    "datestyle",
    "intervalstyle",
    "bytea_output",
    "search_path",
    "statement_timeout",
];

/// Options of the Postgres endpoint.
#[derive(Debug, Clone, Default)]
pub struct PgOptions {
    /// When set, clients must log in as user `cdlake` with this password (cleartext password auth).
    /// When unset, user `cdlake` logs in without a password (the binary only allows that on loopback).
    pub token: Option<String>,
}

/// Serve the Postgres wire protocol on `listener` for `engine` until `shutdown` resolves.
pub async fn serve(
    engine: crate::Engine,
    listener: tokio::net::TcpListener,
    options: PgOptions,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> std::io::Result<()> {
    install_catalog(&engine)?;
    let runtime = Arc::new(QueryRuntime::new()?);
    let handlers = Arc::new(Handlers::new(engine, options, runtime));
    accept_loop(listener, handlers, shutdown).await;
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    handlers: Arc<Handlers>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    if connections.len() >= MAX_CONNECTIONS {
                        tracing::warn!(%peer, "postgres: too many connections, closing this one");
                        continue;
                    }
                    let _ = socket.set_nodelay(true);
                    let handlers = handlers.clone();
                    connections.spawn(async move {
                        if let Err(e) = pgwire::tokio::process_socket(socket, None, handlers).await {
                            tracing::debug!(%peer, error = %e, "postgres: connection ended");
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "postgres: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    connections.shutdown().await;
}

/// Install `pg_catalog` and the Postgres functions clients call on the engine's session, once.
fn install_catalog(engine: &Engine) -> std::io::Result<()> {
    let ctx = engine.session();
    let name = ctx
        .state()
        .config()
        .options()
        .catalog
        .default_catalog
        .clone();
    let catalog = ctx.catalog(&name).ok_or_else(|| {
        std::io::Error::other(format!("postgres endpoint: no catalog named {name}"))
    })?;
    if catalog.schema("pg_catalog").is_some() {
        return Ok(());
    }
    setup_pg_catalog(ctx, &name, EmptyContextProvider)
        .map_err(|e| std::io::Error::other(format!("postgres endpoint: pg_catalog: {e}")))
}

// ---------------------------------------------------------------------------------------------
// Handlers

struct Handlers {
    service: Arc<Service>,
    login: Arc<Login>,
    cancel: Arc<DefaultCancelHandler>,
}

impl Handlers {
    fn new(engine: Engine, options: PgOptions, runtime: Arc<QueryRuntime>) -> Self {
        let connections = Arc::new(ConnectionManager::new());
        let mut parameters = DefaultServerParameterProvider::default();
        parameters.is_superuser = false;
        parameters.default_transaction_read_only = true;
        Self {
            service: Arc::new(Service {
                parser: Arc::new(Parser {
                    engine: engine.clone(),
                    runtime: runtime.clone(),
                    sql: PostgresCompatibilityParser::new(),
                }),
                engine,
                runtime,
                scratch: SessionContext::new(),
            }),
            login: Arc::new(Login {
                token: options.token,
                connections: connections.clone(),
                pids: RandomPidSecretKeyGenerator::default(),
                parameters,
            }),
            cancel: Arc::new(DefaultCancelHandler::new(connections)),
        }
    }
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.service.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.service.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.login.clone()
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(LogErrors)
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        self.cancel.clone()
    }
}

struct LogErrors;

impl ErrorHandler for LogErrors {
    fn on_error<C>(&self, _client: &C, error: &mut PgWireError)
    where
        C: ClientInfo,
    {
        tracing::debug!(error = %error, "postgres: error answered");
    }
}

// ---------------------------------------------------------------------------------------------
// Authentication

/// Set on a connection's session extensions once it logged in.
struct Authenticated;

struct Login {
    token: Option<String>,
    connections: Arc<ConnectionManager>,
    pids: RandomPidSecretKeyGenerator,
    parameters: DefaultServerParameterProvider,
}

impl Login {
    async fn accept<C>(&self, client: &mut C) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (pid, secret) = self.pids.generate(&*client);
        client.set_pid_and_secret_key(pid, secret.clone());
        // Lets a client cancel its running query (psql's Ctrl-C).
        let (handle, guard) = self.connections.register(pid, secret);
        client.session_extensions().insert(handle);
        client.session_extensions().insert(guard);
        client.session_extensions().insert(Authenticated);
        finish_authentication(client, &self.parameters).await
    }
}

#[async_trait]
impl StartupHandler for Login {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(ref startup)
                if matches!(client.state(), PgWireConnectionState::AwaitingStartup) =>
            {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                match client.metadata().get(METADATA_USER).map(String::as_str) {
                    None | Some("") => return Err(PgWireError::UserNameRequired),
                    Some(USER) => {}
                    Some(other) => {
                        return Err(fatal(
                            "28000",
                            format!(
                                "role \"{other}\" may not log in: cdlake accepts only user \"{USER}\""
                            ),
                        ));
                    }
                }
                if self.token.is_some() {
                    client.set_state(PgWireConnectionState::AuthenticationInProgress);
                    client
                        .send(PgWireBackendMessage::Authentication(
                            Authentication::CleartextPassword,
                        ))
                        .await?;
                    Ok(())
                } else {
                    self.accept(client).await
                }
            }
            PgWireFrontendMessage::PasswordMessageFamily(password)
                if matches!(
                    client.state(),
                    PgWireConnectionState::AuthenticationInProgress
                ) =>
            {
                let password = password.into_password()?;
                let matches = self
                    .token
                    .as_deref()
                    .is_some_and(|token| same_secret(token, &password.password));
                if !matches {
                    return Err(PgWireError::InvalidPassword(USER.to_string()));
                }
                self.accept(client).await
            }
            _ => Err(fatal("08P01", "unexpected message during authentication")),
        }
    }
}

/// Compare without leaking where the first difference is.
fn same_secret(expected: &str, given: &str) -> bool {
    let (a, b) = (expected.as_bytes(), given.as_bytes());
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

fn ensure_authenticated<C: ClientInfo + ?Sized>(client: &C) -> PgWireResult<()> {
    if client.session_extensions().get::<Authenticated>().is_some() {
        Ok(())
    } else {
        Err(fatal("28000", "not logged in"))
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

fn error(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_string(),
        code.to_string(),
        message.into(),
    )))
}

fn fatal(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".to_string(),
        code.to_string(),
        message.into(),
    )))
}

/// A statement that would write, change the configuration or read outside the store.
fn refused(what: impl std::fmt::Display) -> PgWireError {
    error(
        "42501",
        format!(
            "cdlake SQL is read-only: {what} is refused (only queries such as SELECT, EXPLAIN \
             and SHOW are allowed)"
        ),
    )
}

fn engine_error(e: DataFusionError, limits: &crate::config::Limits) -> PgWireError {
    let text = e.strip_backtrace();
    if text.contains("DDL not supported")
        || text.contains("DML not supported")
        || text.contains("Statement not supported")
    {
        return refused(format!("this statement ({text})"));
    }
    match e.find_root() {
        DataFusionError::ResourcesExhausted(_) => error(
            "53200",
            format!(
                "query exceeded the memory limit of {} MB: {text}",
                limits.memory_mb.max(64)
            ),
        ),
        DataFusionError::SQL(..) => error("42601", text),
        DataFusionError::Plan(_) | DataFusionError::SchemaError(..) => error("42000", text),
        DataFusionError::NotImplemented(_) => error("0A000", text),
        DataFusionError::Execution(_) | DataFusionError::ArrowError(..) => error("22000", text),
        _ => error("XX000", text),
    }
}

fn parse_error(e: impl std::fmt::Display) -> PgWireError {
    error("42601", e.to_string())
}

// ---------------------------------------------------------------------------------------------
// Statements

/// What a statement is allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Planned, checked read-only, run under the limits.
    Query,
    /// A session setting, answered by `SetShowHook` on a scratch context or ignored.
    Set { recorded: bool },
    /// `SHOW variable`, answered by `SetShowHook`.
    Show,
    /// `BEGIN`, `COMMIT`, `ROLLBACK`: answered by `TransactionStatementHook`.
    Transaction,
}

/// Sort a statement into a [`Class`], or refuse it.
fn classify(statement: &Statement) -> PgWireResult<Class> {
    match statement {
        Statement::Query(_)
        | Statement::ExplainTable { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowFunctions { .. } => {
            check_relations(statement)?;
            Ok(Class::Query)
        }
        Statement::Explain {
            statement: inner, ..
        } => match classify(inner)? {
            Class::Query => Ok(Class::Query),
            _ => Err(refused("EXPLAIN of a non-query")),
        },
        Statement::Set(set) => classify_set(set),
        Statement::ShowVariable { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowCatalogs { .. } => Ok(Class::Show),
        Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. } => Ok(Class::Transaction),
        other => Err(refused(statement_name(other))),
    }
}

fn classify_set(set: &ast::Set) -> PgWireResult<Class> {
    match set {
        ast::Set::SingleAssignment {
            variable, values, ..
        } => {
            let name = variable
                .0
                .iter()
                .filter_map(|part| part.as_ident())
                .map(|ident| ident.value.to_lowercase())
                .collect::<Vec<_>>()
                .join(".");
            if values.is_empty() || !SETTABLE.contains(&name.as_str()) {
                return Err(refused(format!(
                    "SET {name} (only client session settings such as application_name, \
                     extra_float_digits, DateStyle and TimeZone may be set)"
                )));
            }
            Ok(Class::Set {
                recorded: RECORDED.contains(&name.as_str()),
            })
        }
        ast::Set::SetTimeZone { local: false, .. } => Ok(Class::Set { recorded: true }),
        ast::Set::SetTimeZone { local: true, .. }
        | ast::Set::SetNames { .. }
        | ast::Set::SetTransaction { .. } => Ok(Class::Set { recorded: false }),
        _ => Err(refused("this SET statement")),
    }
}

/// A name for a refused statement, without printing it (a statement can be huge).
fn statement_name(statement: &Statement) -> &'static str {
    match statement {
        Statement::Insert(_) => "INSERT",
        Statement::Update(_) => "UPDATE",
        Statement::Delete(_) => "DELETE",
        Statement::Merge(_) => "MERGE",
        Statement::Truncate(_) => "TRUNCATE",
        Statement::Copy { .. } | Statement::CopyIntoSnowflake { .. } => "COPY",
        Statement::CreateTable(_) => "CREATE TABLE",
        Statement::CreateView(_) => "CREATE VIEW",
        Statement::CreateSchema { .. } => "CREATE SCHEMA",
        Statement::CreateDatabase { .. } => "CREATE DATABASE",
        Statement::CreateFunction(_) => "CREATE FUNCTION",
        Statement::CreateIndex(_) => "CREATE INDEX",
        Statement::Drop { .. } => "DROP",
        Statement::AlterTable(_) => "ALTER TABLE",
        Statement::Declare { .. } | Statement::Fetch { .. } | Statement::Close { .. } => {
            "a cursor statement"
        }
        Statement::Prepare { .. } | Statement::Execute { .. } | Statement::Deallocate { .. } => {
            "PREPARE/EXECUTE"
        }
        Statement::Use(_) => "USE",
        _ => "this statement",
    }
}

/// Refuse tables named by a path or URL (`SELECT * FROM '/etc/passwd'`): SQL reads only the
/// store's tables.
fn check_relations(statement: &Statement) -> PgWireResult<()> {
    let flow = visit_relations(statement, |name: &ast::ObjectName| {
        let path_like = name
            .0
            .iter()
            .filter_map(|part| part.as_ident())
            .any(|ident| {
                ident.quote_style == Some('\'')
                    || ident.value.contains('/')
                    || ident.value.contains('\\')
                    || ident.value.contains("://")
            });
        if path_like {
            std::ops::ControlFlow::Break(())
        } else {
            std::ops::ControlFlow::Continue(())
        }
    });
    if flow.is_break() {
        return Err(refused(
            "reading a file or URL (SQL reads only the tables of the store)",
        ));
    }
    Ok(())
}

/// The read-only rules of [`Engine::sql`].
fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// The parser of both protocols, and the `QueryParser` of the extended one.
struct Parser {
    engine: Engine,
    runtime: Arc<QueryRuntime>,
    sql: PostgresCompatibilityParser,
}

impl Parser {
    fn parse(&self, sql: &str) -> PgWireResult<Vec<Statement>> {
        // Before parsing, as `Engine::sql` does: planning recurses over the expression tree.
        match check_complexity(sql) {
            Ok(()) => {}
            // Text the tokenizer cannot read: the parser below says what is wrong with it.
            Err(crate::Error::Sql(message)) if message.starts_with("SQL syntax") => {}
            Err(e) => return Err(error("54001", e.to_string())),
        }
        match self.sql.parse(sql) {
            Ok(statements) => Ok(statements),
            Err(e) => {
                // DataFusion's own statements (`CREATE EXTERNAL TABLE`, `COPY … TO` with
                // options) are not Postgres syntax: say they are refused, not misspelled.
                if let Ok(statements) = DFParser::parse_sql_with_dialect(sql, &PostgreSqlDialect {})
                {
                    for statement in &statements {
                        match statement {
                            DfStatement::CreateExternalTable(_) => {
                                return Err(refused("CREATE EXTERNAL TABLE"));
                            }
                            DfStatement::CopyTo(_) => return Err(refused("COPY")),
                            DfStatement::Reset(_) => return Err(refused("RESET")),
                            DfStatement::Explain(_) => return Err(refused("this EXPLAIN")),
                            DfStatement::Statement(s) => {
                                classify(s)?;
                            }
                        }
                    }
                }
                Err(parse_error(e))
            }
        }
    }
}

/// The engine `statement` runs on: for a statement naming a DORA view, one holding the DORA
/// rows computed once for it ([`Engine::sql`] does the same).
async fn engine_for(engine: &Engine, statement: &Statement) -> PgWireResult<Engine> {
    match report_subjects(&statement.to_string()) {
        Some(subjects) => report_engine(engine, &subjects).await,
        None => Ok(engine.clone()),
    }
}

async fn report_engine(engine: &Engine, subjects: &[&str]) -> PgWireResult<Engine> {
    engine.for_subjects(subjects).await.map_err(|e| match e {
        crate::Error::Engine(e) => engine_error(e, &engine.config().limits),
        crate::Error::Sql(message) if message.contains("Resources exhausted") => {
            error("53200", message)
        }
        e => error("XX000", e.to_string()),
    })
}

/// Plan a query statement and check it against the read-only rules of [`Engine::sql`].
async fn plan(engine: &Engine, statement: &Statement) -> PgWireResult<LogicalPlan> {
    let limits = &engine.config().limits;
    let state = engine.session().state();
    let plan = state
        .statement_to_plan(DfStatement::Statement(Box::new(statement.clone())))
        .await
        .map_err(|e| engine_error(e, limits))?;
    read_only()
        .verify_plan(&plan)
        .map_err(|e| engine_error(e, limits))?;
    Ok(plan)
}

/// A statement of the extended protocol, classified (and for queries planned) at Parse. Shared
/// parts sit behind `Arc`s: cloning or dropping a deep expression tree recurses, and that must
/// happen on the query runtime, not on a connection's small stack.
#[derive(Debug, Clone)]
struct Prepared {
    statement: Arc<Statement>,
    class: Class,
    query: Option<Arc<PreparedQuery>>,
}

#[derive(Debug)]
struct PreparedQuery {
    plan: LogicalPlan,
    parameters: Vec<Parameter>,
    schema: Schema,
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        ensure_authenticated(client)?;
        let mut statements = self.parse(sql)?;
        if statements.len() > 1 {
            return Err(error(
                "42601",
                "cannot insert multiple commands into a prepared statement",
            ));
        }
        let Some(statement) = statements.pop() else {
            return Ok(None);
        };
        let class = classify(&statement)?;
        let statement = Arc::new(statement);
        let query = if class == Class::Query {
            let engine = self.engine.clone();
            let statement = statement.clone();
            let work = async move {
                let plan = plan(&engine, &statement).await?;
                let parameters = parameters(&plan, &engine)?;
                let schema = plan.schema().as_arrow().clone();
                Ok(Arc::new(PreparedQuery {
                    plan,
                    parameters,
                    schema,
                }))
            };
            let limit = TimeLimit::of(&self.engine, client);
            Some(limit.run(self.runtime.run(work)).await?)
        } else {
            None
        };
        Ok(Some(Prepared {
            statement,
            class,
            query,
        }))
    }

    fn get_parameter_types(&self, stmt: &Prepared) -> PgWireResult<Vec<Type>> {
        Ok(stmt
            .query
            .as_ref()
            .map(|q| q.parameters.iter().map(|p| p.wire.clone()).collect())
            .unwrap_or_default())
    }

    fn get_result_schema(
        &self,
        stmt: &Prepared,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        match (&stmt.query, stmt.class) {
            (Some(query), _) => arrow_schema_to_pg_fields(
                &query.schema,
                column_format.unwrap_or(&Format::UnifiedText),
                None,
            ),
            (None, Class::Show) => Ok(vec![FieldInfo::new(
                show_column(&stmt.statement),
                None,
                None,
                Type::VARCHAR,
                FieldFormat::Text,
            )]),
            (None, _) => Ok(vec![]),
        }
    }
}

/// The column name `SetShowHook` answers a `SHOW` with.
fn show_column(statement: &Statement) -> String {
    let Statement::ShowVariable { variable } = statement else {
        return "Catalogs".to_string();
    };
    let words: Vec<String> = variable.iter().map(|v| v.value.to_lowercase()).collect();
    match words
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["time", "zone"] => "TimeZone".to_string(),
        ["transaction", "isolation", "level"] => "transaction_isolation".to_string(),
        ["catalogs"] => "Catalogs".to_string(),
        [one] => (*one).to_string(),
        _ => "unsupported_show_statement".to_string(),
    }
}

/// One parameter of a prepared query: the type DataFusion inferred and the type on the wire.
#[derive(Debug)]
struct Parameter {
    inferred: Option<DataType>,
    wire: Type,
}

/// The parameters of a plan, in `$1, $2, …` order (after `datafusion-postgres`' planner: types
/// DataFusion could not infer are taken from a cast around the placeholder, and oid columns of
/// the catalog are bound as `oid`).
fn parameters(plan: &LogicalPlan, engine: &Engine) -> PgWireResult<Vec<Parameter>> {
    let limits = &engine.config().limits;
    let mut types = plan
        .get_parameter_types()
        .map_err(|e| engine_error(e, limits))?;
    let mut wire_overrides: HashMap<String, Type> = HashMap::new();
    plan.apply(|node| {
        for expr in node.expressions() {
            expr.apply(|e| {
                let (placeholder, cast) = match e {
                    Expr::Placeholder(p) => (p, None),
                    Expr::Cast(c) => match c.expr.as_ref() {
                        Expr::Placeholder(p) => (p, Some(c.field.data_type().clone())),
                        _ => return Ok(TreeNodeRecursion::Continue),
                    },
                    _ => return Ok(TreeNodeRecursion::Continue),
                };
                if let Some(cast) = cast {
                    let slot = types.entry(placeholder.id.clone()).or_insert(None);
                    if slot.is_none() {
                        *slot = Some(cast);
                    }
                }
                if let Some(field) = placeholder.field.as_deref()
                    && field.data_type() == &DataType::Int32
                    && let Some(kind) = field.metadata().get(PG_OID_ALIAS_KEY)
                    && let Some(ty) = pg_type_for_alias_kind(kind)
                {
                    wire_overrides.insert(placeholder.id.clone(), ty);
                }
                Ok(TreeNodeRecursion::Continue)
            })?;
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .map_err(|e| engine_error(e, limits))?;
    let mut ordered: Vec<(String, Option<DataType>)> = types.into_iter().collect();
    ordered.sort_by_key(|(id, _)| {
        id.trim_start_matches('$')
            .parse::<u32>()
            .unwrap_or(u32::MAX)
    });
    ordered
        .into_iter()
        .map(|(id, inferred)| {
            let wire = match (wire_overrides.remove(&id), &inferred) {
                (Some(ty), _) => ty,
                (None, Some(dt)) => into_pg_type(dt)?,
                (None, None) => Type::UNKNOWN,
            };
            Ok(Parameter { inferred, wire })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Execution

/// Where statements are planned and run: a runtime of its own whose threads have large stacks.
/// Planning, optimising, cloning and evaluating an expression recurse over its tree; a long
/// `OR` chain that `check_complexity` still lets through needs more than the 2 MiB of a
/// default tokio thread (DataFusion's own tasks are spawned on this runtime too).
struct QueryRuntime {
    runtime: Option<tokio::runtime::Runtime>,
}

impl QueryRuntime {
    fn new() -> std::io::Result<Self> {
        // More threads than cores: a query whose operators do not yield (a cross join feeding
        // an aggregate) keeps its threads busy until it finishes, even after its timeout
        // dropped it; the other threads keep serving everyone else meanwhile.
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads((4 * cores).max(8))
            .thread_name("cdlake-pg-query")
            .thread_stack_size(QUERY_THREAD_STACK)
            .enable_all()
            .build()?;
        Ok(Self {
            runtime: Some(runtime),
        })
    }

    /// Run `work` on the query runtime; dropping the returned future (a timeout, a cancel
    /// request, a closed connection) aborts it.
    async fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = PgWireResult<T>> + Send + 'static,
    ) -> PgWireResult<T> {
        let Some(runtime) = &self.runtime else {
            return Err(error("57P01", "the server is shutting down"));
        };
        let mut task = AbortOnDrop(runtime.spawn(work));
        match (&mut task.0).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => {
                tracing::error!(error = %e, "postgres: a query panicked");
                Err(error(
                    "XX000",
                    "internal error: the query failed unexpectedly",
                ))
            }
            Err(_) => Err(error("57014", "canceling statement")),
        }
    }
}

impl Drop for QueryRuntime {
    fn drop(&mut self) {
        // May be dropped inside an async context, where a blocking shutdown would panic.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The time a statement may take: the engine's query timeout, or the client's shorter
/// `statement_timeout`.
struct TimeLimit {
    duration: Duration,
    message: String,
}

impl TimeLimit {
    fn of<C: ClientInfo + ?Sized>(engine: &Engine, client: &C) -> Self {
        let secs = engine.config().limits.query_timeout_secs.max(1);
        let engine_limit = Duration::from_secs(secs);
        let client_limit = client
            .metadata()
            .get(METADATA_STATEMENT_TIMEOUT)
            .and_then(|ms| ms.parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis);
        match client_limit {
            Some(limit) if limit < engine_limit => Self {
                duration: limit,
                message: "canceling statement due to statement timeout".to_string(),
            },
            _ => Self {
                duration: engine_limit,
                message: format!("canceling statement: {}", crate::Error::Timeout(secs)),
            },
        }
    }

    async fn run<T>(&self, work: impl Future<Output = PgWireResult<T>>) -> PgWireResult<T> {
        tokio::time::timeout(self.duration, work)
            .await
            .map_err(|_| error("57014", self.message.clone()))?
    }
}

/// Run a checked plan and collect its result, within the result-size guards.
async fn collect(engine: &Engine, plan: LogicalPlan) -> PgWireResult<(Schema, Vec<RecordBatch>)> {
    let limits = &engine.config().limits;
    let max_rows = limits.max_result_rows;
    let max_bytes = limits.memory_mb.max(64).saturating_mul(1 << 20);
    let df = engine
        .session()
        .execute_logical_plan(plan)
        .await
        .map_err(|e| engine_error(e, limits))?;
    let schema = df.schema().as_arrow().clone();
    let mut stream = df
        .execute_stream()
        .await
        .map_err(|e| engine_error(e, limits))?;
    let (mut rows, mut bytes, mut batches) = (0usize, 0usize, Vec::new());
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| engine_error(e, limits))?;
        rows += batch.num_rows();
        bytes += batch.get_array_memory_size();
        if rows > max_rows {
            return Err(error(
                "54000",
                format!(
                    "the result has more than {max_rows} rows (limits.max_result_rows): add a \
                     LIMIT or aggregate"
                ),
            ));
        }
        if bytes > max_bytes {
            return Err(error(
                "54000",
                format!(
                    "the result is larger than the memory limit of {} MB: add a LIMIT, select \
                     fewer columns or aggregate",
                    limits.memory_mb.max(64)
                ),
            ));
        }
        batches.push(batch);
    }
    Ok((schema, batches))
}

struct Service {
    engine: Engine,
    parser: Arc<Parser>,
    runtime: Arc<QueryRuntime>,
    /// Where `SET` statements are "executed": never the engine's session.
    scratch: SessionContext,
}

impl Service {
    /// Answer a session statement (`SET`, `SHOW`, `BEGIN`…) the way Postgres clients expect,
    /// without touching DataFusion's configuration.
    async fn session<C>(&self, client: &mut C, statement: &Statement, class: Class) -> Response
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let answer = match class {
            Class::Set { recorded: true } => {
                SetShowHook
                    .handle_simple_query(&quote_numbers(statement), &self.scratch, client)
                    .await
            }
            Class::Show => {
                SetShowHook
                    .handle_simple_query(statement, self.engine.session(), client)
                    .await
            }
            Class::Set { recorded: false } | Class::Transaction | Class::Query => None,
        };
        match answer {
            Some(Ok(response)) => response,
            Some(Err(e)) => Response::Error(Box::new(e.into())),
            None => Response::Execution(Tag::new("SET")),
        }
    }

    /// `TransactionStatementHook` answers `BEGIN`/`COMMIT`/`ROLLBACK`, and refuses any other
    /// statement inside a failed transaction, as Postgres does.
    async fn transaction<C>(&self, client: &mut C, statement: &Statement) -> Option<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        TransactionStatementHook
            .handle_simple_query(statement, &self.scratch, client)
            .await
            .map(|answer| answer.unwrap_or_else(|e| Response::Error(Box::new(e.into()))))
    }

    async fn simple_statement<C>(&self, client: &mut C, statement: Statement) -> Response
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let class = match classify(&statement) {
            Ok(class) => class,
            Err(e) => return Response::Error(Box::new(e.into())),
        };
        if let Some(answer) = self.transaction(client, &statement).await {
            return answer;
        }
        if class != Class::Query {
            return self.session(client, &statement, class).await;
        }
        let engine = self.engine.clone();
        let work = async move {
            let engine = engine_for(&engine, &statement).await?;
            let plan = plan(&engine, &statement).await?;
            collect(&engine, plan).await
        };
        let limit = TimeLimit::of(&self.engine, client);
        let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        match limit
            .run(self.runtime.run(work))
            .await
            .and_then(|(schema, batches)| encode(&schema, batches, &Format::UnifiedText, options))
        {
            Ok(response) => Response::Query(response),
            Err(e) => Response::Error(Box::new(e.into())),
        }
    }
}

/// `SET extra_float_digits = 3` as `SET extra_float_digits = '3'`: `SetShowHook` records only
/// string values (a number would be recorded as an empty string).
fn quote_numbers(statement: &Statement) -> Statement {
    let mut statement = statement.clone();
    if let Statement::Set(ast::Set::SingleAssignment { values, .. }) = &mut statement {
        for value in values {
            if let ast::Expr::Value(value) = value
                && let ast::Value::Number(number, _) = &value.value
            {
                value.value = ast::Value::SingleQuotedString(number.clone());
            }
        }
    }
    statement
}

/// A collected result as rows of the wire protocol.
fn encode(
    schema: &Schema,
    batches: Vec<RecordBatch>,
    format: &Format,
    options: Arc<FormatOptions>,
) -> PgWireResult<QueryResponse> {
    let fields = Arc::new(arrow_schema_to_pg_fields(schema, format, Some(options))?);
    let row_fields = fields.clone();
    let rows = batches
        .into_iter()
        .flat_map(move |batch| encode_recordbatch(row_fields.clone(), batch));
    Ok(QueryResponse::new(fields, futures::stream::iter(rows)))
}

#[async_trait]
impl SimpleQueryHandler for Service {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        ensure_authenticated(client)?;
        let statements = self.parser.parse(query)?;
        if statements.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let mut responses = Vec::with_capacity(statements.len());
        for statement in statements {
            let response = Box::pin(self.simple_statement(client, statement)).await;
            let failed = matches!(response, Response::Error(_));
            responses.push(response);
            if failed {
                // Like Postgres: the rest of a failed query string is skipped.
                break;
            }
        }
        Ok(responses)
    }
}

#[async_trait]
impl ExtendedQueryHandler for Service {
    type Statement = Prepared;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Prepared>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        ensure_authenticated(client)?;
        let prepared = &portal.statement.statement;
        if let Some(answer) = self.transaction(client, &prepared.statement).await {
            return Ok(answer);
        }
        let query = match (&prepared.query, prepared.class) {
            (Some(query), Class::Query) => query.clone(),
            (None, Class::Query) => return Err(error("XX000", "the query was not planned")),
            (_, class) => return Ok(self.session(client, &prepared.statement, class).await),
        };
        let values = if query.parameters.is_empty() {
            None
        } else {
            let inferred: Vec<Option<&DataType>> = query
                .parameters
                .iter()
                .map(|p| p.inferred.as_ref())
                .collect();
            let wire: Vec<Option<&Type>> = query.parameters.iter().map(|p| Some(&p.wire)).collect();
            Some(deserialize_parameters_with_server_types(
                portal, &inferred, &wire,
            )?)
        };
        let engine = self.engine.clone();
        let work = async move {
            let limits = &engine.config().limits;
            let plan = match values {
                None => query.plan.clone(),
                Some(values) => query
                    .plan
                    .clone()
                    .replace_params_with_values(&values)
                    .map_err(|e| engine_error(e, limits))?,
            };
            // Values cannot turn a query into anything else, but checking again is cheap.
            read_only()
                .verify_plan(&plan)
                .map_err(|e| engine_error(e, limits))?;
            collect(&engine, plan).await
        };
        let limit = TimeLimit::of(&self.engine, client);
        let (schema, batches) = limit.run(self.runtime.run(work)).await?;
        let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        Ok(Response::Query(encode(
            &schema,
            batches,
            &portal.result_column_format,
            options,
        )?))
    }
}
