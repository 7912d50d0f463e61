//! `cdlake standalone`: receivers, writer and query service in one process, no NATS; an
//! in-process channel replaces the stream and a 2xx answer means the events are committed.

use std::sync::Arc;

use cdlake_ingest::sources::router;
use cdlake_ingest::writer::{self, WriterOptions};
use cdlake_ingest::{Ingester, Metrics};
use cdlake_query::Config;
use cdlake_schemas::store::Store;
use tokio::sync::watch;

use super::compact::CompactArgs;
use super::serve::{PgArgs, query_front, spawn_pg};
use super::{ConfigArgs, ReceiverLimits, SecretArgs, StoreArgs};
use crate::http::{HttpArgs, check_exposure, finish, serve, shutdown_signal_then};

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
    #[command(flatten)]
    secrets: SecretArgs,
    #[command(flatten)]
    receiver_limits: ReceiverLimits,
    /// Compact small files every this many seconds in the background (0: never).
    #[arg(long, env = "CDLAKE_COMPACT_EVERY_SECS", default_value_t = 600)]
    compact_every_secs: u64,
    #[command(flatten)]
    compact: CompactArgs,
    #[command(flatten)]
    reconcile: super::backfill::ReconcileArgs,
}

/// The running pieces of a standalone service, for `demo` to feed.
pub(crate) struct Standalone {
    pub(crate) writer: writer::WriterHandle,
    pub(crate) metrics: Arc<Metrics>,
    app: axum::Router,
    task: tokio::task::JoinHandle<cdlake_ingest::Result<()>>,
    pg: Option<tokio::task::JoinHandle<()>>,
    /// Set when the service stops: the live tails end, the Postgres listener stops.
    stop: Arc<watch::Sender<bool>>,
}

pub(crate) async fn start(
    store: Store,
    config: Config,
    http: &HttpArgs,
    pg: &PgArgs,
    secrets: &SecretArgs,
    receiver_limits: &ReceiverLimits,
) -> anyhow::Result<Standalone> {
    check_exposure("HTTP", http.listen, http.token.as_deref())?;
    let metrics = Arc::new(Metrics::new());
    crate::telemetry::observe(&metrics);
    let (rules, writer_config) = (super::rules(&config), super::ingester_config(&config));
    let (stop, stopped) = watch::channel(false);
    let front = query_front(&store, config, stopped.clone()).await?;
    let pg = spawn_pg(front.engine.clone(), pg, http.token.clone(), stopped).await?;
    let ingester = Ingester::new(store, writer_config);
    let (handle, task) = writer::spawn(ingester, metrics.clone(), WriterOptions::default());
    let receivers = secrets.receivers(
        Arc::new(handle.clone()),
        receiver_limits,
        metrics.clone(),
        rules,
    )?;
    let app = finish(
        router(receivers).merge(front.routes),
        http,
        metrics.clone(),
        Some(front.gauges),
        front.request_limit,
    );
    Ok(Standalone {
        writer: handle,
        metrics,
        app,
        task,
        pg,
        stop: Arc::new(stop),
    })
}

/// Serve until Ctrl-C or SIGTERM, then commit what is buffered.
pub(crate) async fn run_until_stopped(s: Standalone, http: &HttpArgs) -> anyhow::Result<()> {
    let Standalone {
        writer,
        metrics: _,
        app,
        task,
        pg,
        stop,
    } = s;
    drop(writer);
    let served = serve(app, http.listen, shutdown_signal_then(stop.clone())).await;
    stop.send_replace(true);
    if let Some(pg) = pg {
        let _ = pg.await;
    }
    // The router (and with it the last writer handle) is dropped: the writer commits and ends.
    task.await??;
    served
}

pub(crate) async fn run(args: Args) -> anyhow::Result<std::process::ExitCode> {
    let store = args.store.open()?;
    let config = args.config.load()?;
    let services = config.services.clone();
    let compaction = super::compact::spawn_background(
        store.clone(),
        args.compact.options(),
        std::time::Duration::from_secs(args.compact_every_secs),
    );
    let s = start(
        store.clone(),
        config,
        &args.http,
        &args.pg,
        &args.secrets,
        &args.receiver_limits,
    )
    .await?;
    let reconcile = args.reconcile.spawn(store, s.metrics.clone(), services)?;
    run_until_stopped(s, &args.http).await?;
    if let Some(c) = compaction {
        c.abort();
    }
    if let Some(r) = reconcile {
        r.abort();
    }
    Ok(std::process::ExitCode::SUCCESS)
}
