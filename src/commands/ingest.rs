//! `cdlake ingest`: the durable JetStream consumer writing Parquet to the store.

use std::sync::Arc;
use std::time::Duration;

use cdlake_ingest::stream::{ConsumerOptions, connect, consume};
use cdlake_ingest::{Ingester, IngesterConfig, Metrics};

use super::compact::{CompactArgs, spawn_background};
use super::{NatsArgs, StoreArgs};
use crate::http::{HttpArgs, finish, request_timeout, serve, shutdown_signal};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    rules: super::RulesArgs,
    /// Address of the metrics and health endpoints.
    #[arg(
        long = "metrics-listen",
        env = "CDLAKE_METRICS_LISTEN",
        default_value = "127.0.0.1:8081"
    )]
    listen: std::net::SocketAddr,
    /// Require `Authorization: Bearer <token>` on /metrics.
    #[arg(long, env = "CDLAKE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Commit at least this often (milliseconds) while events arrive.
    #[arg(long, default_value_t = 2000)]
    max_age_ms: u64,
    /// Commit when this many rows are buffered.
    #[arg(long, default_value_t = 50_000)]
    max_rows: usize,
    /// Commit when the buffered payloads reach this many MiB. One batch is buffered while the
    /// previous one is committed, so the process holds about twice this.
    #[arg(long, env = "CDLAKE_MAX_BUFFER_MB", default_value_t = 64)]
    max_buffer_mb: usize,
    /// Name of the shared durable consumer.
    #[arg(long, default_value = cdlake_ingest::stream::CONSUMER)]
    durable: String,
    /// Compact small files every this many seconds in the background (0: never; several
    /// ingesters share the work, one per partition at a time).
    #[arg(long, env = "CDLAKE_COMPACT_EVERY_SECS", default_value_t = 600)]
    compact_every_secs: u64,
    #[command(flatten)]
    compact: CompactArgs,
    #[command(flatten)]
    reconcile: super::backfill::ReconcileArgs,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<std::process::ExitCode> {
    let store = args.store.open()?;
    let metrics = Arc::new(Metrics::new());
    crate::telemetry::observe(&metrics);
    let client = connect(&args.nats.nats, "cdlake ingest").await?;
    let compaction = spawn_background(
        store.clone(),
        args.compact.options(),
        Duration::from_secs(args.compact_every_secs),
    );
    let services = args.rules.services()?;
    let reconcile = args
        .reconcile
        .spawn(store.clone(), metrics.clone(), services.clone())?;
    let ingester = Ingester::new(
        store,
        IngesterConfig {
            max_rows: args.max_rows,
            max_bytes: args.max_buffer_mb.max(1) << 20,
            max_age: Duration::from_millis(args.max_age_ms),
            services,
            ..IngesterConfig::default()
        },
    );
    let http = HttpArgs {
        listen: args.listen,
        token: args.token.clone(),
    };
    let app = finish(
        axum::Router::new(),
        &http,
        metrics.clone(),
        None,
        request_timeout(0),
    );
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(app, http.listen, async move {
        let _ = http_stopped.await;
    }));
    let options = ConsumerOptions {
        durable: args.durable,
        ..ConsumerOptions::default()
    };
    let result = consume(client, ingester, metrics, options, shutdown_signal()).await;
    let _ = stop_http.send(());
    let _ = server.await;
    if let Some(c) = compaction {
        c.abort();
    }
    if let Some(r) = reconcile {
        r.abort();
    }
    result?;
    Ok(std::process::ExitCode::SUCCESS)
}
