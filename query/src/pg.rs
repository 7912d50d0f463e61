//! The Postgres wire protocol front end (psql, Grafana's PostgreSQL data source).
//!
//! Built on `pgwire` (through `datafusion-postgres`), with cdlake's own handlers so every rule
//! of [`Engine::sql`] holds here too:
//!
//! - **Auth.** Only user `cdlake` may log in. With a token, the client must send it as the
//!   (cleartext) password; it is compared in constant time. Any other user, `postgres`
//!   included, is refused whatever the password. A connection that failed to log in never
//!   reaches the query handlers (they check a marker that only a successful login sets).
//! - **One checked path.** Statements take [`crate::Engine`]'s path, as HTTP's do: the
//!   [`guard`] checks the text and each statement (read-only, no file or URL as a table, size
//!   and depth), the engine plans it, checks the plan and collects the result within the
//!   row, byte, memory and time limits, all on the query runtime. What is Postgres' own stays
//!   here: its parser (with `datafusion-pg-catalog`'s client-compatibility rewrites), the
//!   session statements clients send (`SET application_name`, `SHOW …`, `BEGIN`/`COMMIT`,
//!   answered without touching DataFusion), the extended protocol, and a client's shorter
//!   `statement_timeout`. Errors carry the SQLSTATE [`crate::Error::sqlstate`] decides.
//! - **Connections.** At most [`MAX_CONNECTIONS`] at once. A connection must log in within
//!   [`STARTUP_TIMEOUT`]; at most [`MAX_PENDING_LOGINS`] may be logging in at once, and a new
//!   one beyond that evicts the oldest, so no number of idle or slow connections keeps a
//!   client with the password out.
//! - **Catalog.** `pg_catalog` (from `datafusion-pg-catalog`) is installed on the engine's
//!   session, so psql's `\dt`, `\dv`, `\d events` and Grafana's schema queries work.

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Schema};
use async_trait::async_trait;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{self, Statement};
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
use futures::{Sink, SinkExt};
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
use pgwire::messages::response::TransactionStatus;
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::types::format::FormatOptions;
use tokio::net::TcpListener;
use tokio::task::{AbortHandle, JoinSet};

use crate::Engine;
use crate::guard::{self, Class, Dialect};

/// The only user that may log in.
const USER: &str = "cdlake";

/// Connections served at once; beyond it, a new connection evicts the oldest one still
/// logging in, or is closed.
pub const MAX_CONNECTIONS: usize = 256;

/// Connections logging in at once; a new one beyond it evicts the oldest.
pub const MAX_PENDING_LOGINS: usize = 64;

/// Time a connection has to log in.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// The client's `statement_timeout`, as `datafusion-postgres`' `SET` hook stores it.
const METADATA_STATEMENT_TIMEOUT: &str = "statement_timeout_ms";

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
    let logins = Arc::new(Logins::default());
    let handlers = Arc::new(Handlers::new(engine, options, logins.clone()));
    accept_loop(listener, handlers, logins, shutdown).await;
    Ok(())
}

/// Connections that have not logged in yet, oldest first, with the handle that closes them.
#[derive(Default)]
struct Logins {
    pending: std::sync::Mutex<Vec<(SocketAddr, Instant, AbortHandle)>>,
}

impl Logins {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(SocketAddr, Instant, AbortHandle)>> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn add(&self, peer: SocketAddr, handle: AbortHandle) {
        self.lock().push((peer, Instant::now(), handle));
    }

    /// The connection from `peer` logged in (or ended).
    fn done(&self, peer: SocketAddr) {
        self.lock().retain(|(p, _, _)| *p != peer);
    }

    /// Close the oldest connection still logging in; false when there is none.
    fn evict_oldest(&self) -> bool {
        let mut pending = self.lock();
        if pending.is_empty() {
            return false;
        }
        let (peer, _, handle) = pending.remove(0);
        handle.abort();
        tracing::debug!(%peer, "postgres: closed the oldest connection still logging in");
        true
    }

    /// Close connections that did not log in within [`STARTUP_TIMEOUT`].
    fn expire(&self) {
        self.lock().retain(|(peer, since, handle)| {
            let keep = since.elapsed() < STARTUP_TIMEOUT;
            if !keep {
                handle.abort();
                tracing::debug!(%peer, "postgres: no login within the startup timeout; closed");
            }
            keep
        });
    }

    fn len(&self) -> usize {
        self.lock().len()
    }
}

async fn accept_loop(
    listener: TcpListener,
    handlers: Arc<Handlers>,
    logins: Arc<Logins>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut connections = JoinSet::new();
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = sweep.tick() => logins.expire(),
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let full = connections.len() >= MAX_CONNECTIONS;
                    if (full || logins.len() >= MAX_PENDING_LOGINS) && !logins.evict_oldest() {
                        tracing::warn!(%peer, "postgres: too many connections, closing this one");
                        continue;
                    }
                    let _ = socket.set_nodelay(true);
                    let handlers = handlers.clone();
                    let done = logins.clone();
                    let handle = connections.spawn(async move {
                        if let Err(e) = pgwire::tokio::process_socket(socket, None, handlers).await {
                            tracing::debug!(%peer, error = %e, "postgres: connection ended");
                        }
                        done.done(peer);
                    });
                    logins.add(peer, handle);
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
        .map_err(|e| std::io::Error::other(format!("postgres endpoint: pg_catalog: {e}")))?;
    // `current_user` (rewritten to `session_user`) is the user that logged in, not `postgres`.
    ctx.register_udf(datafusion::logical_expr::create_udf(
        "session_user",
        vec![],
        DataType::Utf8,
        datafusion::logical_expr::Volatility::Stable,
        Arc::new(|_| {
            Ok(datafusion::logical_expr::ColumnarValue::Scalar(
                datafusion::common::ScalarValue::Utf8(Some(USER.to_string())),
            ))
        }),
    ));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Handlers

struct Handlers {
    service: Arc<Service>,
    login: Arc<Login>,
    cancel: Arc<DefaultCancelHandler>,
}

impl Handlers {
    fn new(engine: Engine, options: PgOptions, logins: Arc<Logins>) -> Self {
        let connections = Arc::new(ConnectionManager::new());
        let mut parameters = DefaultServerParameterProvider::default();
        parameters.is_superuser = false;
        parameters.default_transaction_read_only = true;
        Self {
            service: Arc::new(Service {
                parser: Arc::new(Parser {
                    engine: engine.clone(),
                    sql: Arc::new(PostgresCompatibilityParser::new()),
                }),
                engine,
                scratch: SessionContext::new(),
            }),
            login: Arc::new(Login {
                token: options.token,
                connections: connections.clone(),
                pids: RandomPidSecretKeyGenerator::default(),
                parameters,
                logins,
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
    logins: Arc<Logins>,
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
        self.logins.done(client.socket_addr());
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

/// PostgreSQL's SQLSTATE for a statement sent inside a failed transaction block.
const IN_FAILED_SQL_TRANSACTION: &str = "25P02";

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

/// An error of the shared path as Postgres answers it.
fn pg_error(e: crate::Error) -> PgWireError {
    e.log_if_internal();
    error(e.sqlstate(), e.client_message())
}

// ---------------------------------------------------------------------------------------------
// Statements

/// The parser of both protocols, and the `QueryParser` of the extended one.
struct Parser {
    engine: Engine,
    sql: Arc<PostgresCompatibilityParser>,
}

/// A statement as parsed, with its class (decided on the query runtime).
type Parsed = Vec<(Statement, Class)>;

impl Parser {
    /// Check the text, parse it and classify each statement, on the query runtime (parsing and
    /// classifying recurse over the tree).
    async fn parse(&self, sql: &str, limit: &TimeLimit) -> PgWireResult<Parsed> {
        let engine = self.engine.clone();
        let parser = self.sql.clone();
        let sql = sql.to_string();
        let work = async move {
            let limits = &engine.config().limits;
            guard::check_text(&sql, Dialect::Postgres, limits)?;
            let statements = match parser.parse(&sql) {
                Ok(statements) => statements,
                Err(e) => return Err(unparsed(&sql, e)),
            };
            statements
                .into_iter()
                .map(|s| {
                    let class = guard::check_statement(
                        &DfStatement::Statement(Box::new(s.clone())),
                        limits,
                    )?;
                    Ok((s, class))
                })
                .collect::<crate::Result<Parsed>>()
        };
        limit.run(&self.engine, work).await
    }
}

/// Text Postgres' parser refused. DataFusion's own statements (`CREATE EXTERNAL TABLE`,
/// `COPY … TO` with options) are not Postgres syntax: say they are refused, not misspelled.
fn unparsed(sql: &str, e: impl std::fmt::Display) -> crate::Error {
    if let Ok(statements) = guard::parse(sql, Dialect::Postgres) {
        for statement in &statements {
            if let Err(refused @ crate::Error::ReadOnly { .. }) =
                guard::check_statement(statement, &crate::config::Limits::default())
            {
                return refused;
            }
        }
    }
    crate::Error::Sql {
        message: e.to_string(),
        sqlstate: "42601",
    }
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
        let limit = TimeLimit::of(&self.engine, client);
        let mut statements = self.parse(sql, &limit).await?;
        if statements.len() > 1 {
            return Err(error(
                "42601",
                "cannot insert multiple commands into a prepared statement",
            ));
        }
        let Some((statement, class)) = statements.pop() else {
            return Ok(None);
        };
        let statement = Arc::new(statement);
        let query = if class == Class::Query {
            let engine = self.engine.clone();
            let statement = statement.clone();
            let work = async move {
                let plan = engine
                    .plan(DfStatement::Statement(Box::new(statement.as_ref().clone())))
                    .await?;
                let parameters = parameters(&plan)?;
                let schema = plan.schema().as_arrow().clone();
                Ok(Arc::new(PreparedQuery {
                    plan,
                    parameters,
                    schema,
                }))
            };
            Some(limit.run(&self.engine, work).await?)
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
fn parameters(plan: &LogicalPlan) -> crate::Result<Vec<Parameter>> {
    let limits = &crate::config::Limits::default();
    let mut types = plan
        .get_parameter_types()
        .map_err(|e| crate::Error::from_datafusion(e, limits))?;
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
    .map_err(|e| crate::Error::from_datafusion(e, limits))?;
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
                (None, Some(dt)) => into_pg_type(dt).map_err(|e| crate::Error::Sql {
                    message: format!("parameter {id}: {e}"),
                    sqlstate: "0A000",
                })?,
                (None, None) => Type::UNKNOWN,
            };
            Ok(Parameter { inferred, wire })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Execution

/// The time a statement may take: the engine's query timeout, or the client's shorter
/// `statement_timeout`.
struct TimeLimit {
    duration: Duration,
    /// Whether the client's `statement_timeout` is the shorter.
    client: bool,
}

impl TimeLimit {
    fn of<C: ClientInfo + ?Sized>(engine: &Engine, client: &C) -> Self {
        let engine_limit = engine.time_limit();
        let client_limit = client
            .metadata()
            .get(METADATA_STATEMENT_TIMEOUT)
            .and_then(|ms| ms.parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis);
        match client_limit {
            Some(limit) if limit < engine_limit => Self {
                duration: limit,
                client: true,
            },
            _ => Self {
                duration: engine_limit,
                client: false,
            },
        }
    }

    /// Run `work` on the engine's query runtime within this limit. Dropping the future (a
    /// cancel request, a closed connection) aborts it.
    async fn run<T: Send + 'static>(
        &self,
        engine: &Engine,
        work: impl Future<Output = crate::Result<T>> + Send + 'static,
    ) -> PgWireResult<T> {
        engine
            .within(self.duration, work)
            .await
            .map_err(|e| match e {
                crate::Error::Timeout { .. } if self.client => {
                    error("57014", "canceling statement due to statement timeout")
                }
                crate::Error::Timeout { .. } => error("57014", format!("canceling statement: {e}")),
                e => pg_error(e),
            })
    }
}

struct Service {
    engine: Engine,
    parser: Arc<Parser>,
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

    /// `TransactionStatementHook` answers `BEGIN`/`COMMIT`/`ROLLBACK`. Any other statement
    /// inside a failed transaction is refused first, as Postgres does, with its SQLSTATE 25P02
    /// (`in_failed_sql_transaction`; the hook says 25P01, `no_active_sql_transaction`).
    async fn transaction<C>(&self, client: &mut C, statement: &Statement) -> Option<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if client.transaction_status() == TransactionStatus::Error
            && !matches!(
                statement,
                Statement::Commit { .. } | Statement::Rollback { .. }
            )
        {
            return Some(Response::Error(Box::new(ErrorInfo::new(
                "ERROR".to_string(),
                IN_FAILED_SQL_TRANSACTION.to_string(),
                "current transaction is aborted, commands ignored until end of transaction block"
                    .to_string(),
            ))));
        }
        TransactionStatementHook
            .handle_simple_query(statement, &self.scratch, client)
            .await
            .map(|answer| answer.unwrap_or_else(|e| Response::Error(Box::new(e.into()))))
    }

    async fn simple_statement<C>(
        &self,
        client: &mut C,
        statement: Statement,
        class: Class,
    ) -> Response
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let Some(answer) = self.transaction(client, &statement).await {
            return answer;
        }
        if class != Class::Query {
            return self.session(client, &statement, class).await;
        }
        let engine = self.engine.clone();
        let work = async move {
            engine
                .run_statement(DfStatement::Statement(Box::new(statement)))
                .await
        };
        let limit = TimeLimit::of(&self.engine, client);
        let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        match Box::pin(limit.run(&self.engine, work))
            .await
            .and_then(|result| {
                encode(
                    &result.schema,
                    result.batches,
                    &Format::UnifiedText,
                    options,
                )
            }) {
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
        let limit = TimeLimit::of(&self.engine, client);
        let statements = self.parser.parse(query, &limit).await?;
        if statements.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let mut responses = Vec::with_capacity(statements.len());
        for (statement, class) in statements {
            let response = Box::pin(self.simple_statement(client, statement, class)).await;
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
                    .map_err(|e| crate::Error::from_datafusion(e, limits))?,
            };
            engine.collect(plan).await
        };
        let limit = TimeLimit::of(&self.engine, client);
        let result = limit.run(&self.engine, work).await?;
        let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        Ok(Response::Query(encode(
            &result.schema,
            result.batches,
            &portal.result_column_format,
            options,
        )?))
    }
}
