//! `cdlake serve`: the read-only query service: SQL, DORA and the live tail over HTTP, and the
//! Postgres wire protocol for psql and Grafana.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use cdlake_ingest::Metrics;
use cdlake_query::http::DoraGauges;
use cdlake_query::pg::{PgOptions, serve as serve_pg};
use cdlake_query::{Config, Engine};
use cdlake_schemas::store::Store;
use tokio::sync::watch;

use super::{ConfigArgs, StoreArgs};
use crate::http::{
    ExtraMetrics, HttpArgs, check_exposure, finish, request_timeout, serve, shutdown_signal_then,
};

/// Where the Postgres wire protocol listens.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct PgArgs {
    /// Address of the Postgres wire protocol (psql, Grafana); `off` disables it.
    #[arg(
        long = "pg-listen",
        env = "CDLAKE_PG_LISTEN",
        default_value = "127.0.0.1:5433"
    )]
    pub(crate) pg_listen: String,
}

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    http: HttpArgs,
    #[command(flatten)]
    pg: PgArgs,
}

/// The query side of a service: its routes, its `/metrics` gauges and the engine.
pub(crate) struct QueryFront {
    pub(crate) routes: axum::Router,
    pub(crate) gauges: ExtraMetrics,
    pub(crate) engine: Engine,
    /// How long a request may take ([`request_timeout`] of the query time limit).
    pub(crate) request_limit: std::time::Duration,
}

/// The query routes over `store`; their live tails end when `stopping` becomes true.
pub(crate) async fn query_front(
    store: &Store,
    config: Config,
    stopping: watch::Receiver<bool>,
) -> anyhow::Result<QueryFront> {
    let request_limit = request_timeout(config.limits.query_timeout_secs);
    let engine = Engine::open(store, config).await?;
    let read_model = super::rebuild::spawn_background(store.clone(), engine.clone());
    let routes = cdlake_query::http::router(engine.clone(), store.clone(), stopping);
    let gauges = DoraGauges::new(engine.clone());
    let shared = engine.clone();
    let gauges: ExtraMetrics = Arc::new(move || {
        let g = gauges.clone();
        let read_model = read_model.clone();
        let shared = shared.render_shared_view_metrics();
        Box::pin(async move { g.render().await + &read_model.render() + &shared })
    });
    Ok(QueryFront {
        routes,
        gauges,
        engine,
        request_limit,
    })
}

/// Bind the Postgres listener (unless `off`) and serve it until `stop` changes.
pub(crate) async fn spawn_pg(
    engine: Engine,
    pg: &PgArgs,
    token: Option<String>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    if pg.pg_listen == "off" {
        return Ok(None);
    }
    let addr: SocketAddr = pg.pg_listen.parse().with_context(|| {
        format!(
            "--pg-listen {:?} is not an address (or `off`)",
            pg.pg_listen
        )
    })?;
    check_exposure("the Postgres endpoint", addr, token.as_deref())?;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr} for Postgres: is another cdlake or Postgres there? Pass --pg-listen ADDR")
    })?;
    eprintln!("Postgres wire listening on {}", listener.local_addr()?);
    let options = PgOptions { token };
    Ok(Some(tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(e) = serve_pg(engine, listener, options, shutdown).await {
            tracing::error!(error = %e, "The Postgres endpoint failed.");
        }
    })))
}

pub(crate) async fn run(args: Args) -> anyhow::Result<std::process::ExitCode> {
    let store = args.store.open()?;
    let config = args.config.load()?;
    check_exposure("HTTP", args.http.listen, args.http.token.as_deref())?;
    let (stop, stopped) = watch::channel(false);
    let front = query_front(&store, config, stopped.clone()).await?;
    let pg = spawn_pg(
        front.engine.clone(),
        &args.pg,
        args.http.token.clone(),
        stopped,
    )
    .await?;
    let app = finish(
        front.routes,
        &args.http,
        Arc::new(Metrics::new()),
        Some(front.gauges),
        front.request_limit,
    );
    let stop = Arc::new(stop);
    let served = serve(app, args.http.listen, shutdown_signal_then(stop.clone())).await;
    stop.send_replace(true);
    if let Some(pg) = pg {
        let _ = pg.await;
    }
    served?;
    Ok(std::process::ExitCode::SUCCESS)
}
