//! `cdlake standalone`: receivers and writer in one process, no NATS; an in-process channel
//! replaces the stream and a 2xx answer means the events are committed to the store.

use std::sync::Arc;

use cdlake_ingest::http::{Receivers, Sink, router};
use cdlake_ingest::writer::{self, WriterOptions};
use cdlake_ingest::{Ingester, IngesterConfig, Metrics};

use super::{SecretArgs, StoreArgs};
use crate::http::{HttpArgs, finish, serve, shutdown_signal};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    http: HttpArgs,
    #[command(flatten)]
    secrets: SecretArgs,
}

/// The running pieces of a standalone service, for `demo` to feed.
pub(crate) struct Standalone {
    pub(crate) writer: writer::WriterHandle,
    pub(crate) app: axum::Router,
    pub(crate) task: tokio::task::JoinHandle<cdlake_ingest::Result<()>>,
}

pub(crate) fn start(
    store: cdlake_schemas::store::Store,
    http: &HttpArgs,
    secrets: &SecretArgs,
) -> Standalone {
    let metrics = Arc::new(Metrics::new());
    let ingester = Ingester::new(store, IngesterConfig::default());
    let (handle, task) = writer::spawn(ingester, metrics.clone(), WriterOptions::default());
    secrets.warn_if_open();
    let receivers = Receivers {
        sink: Sink::Local(handle.clone()),
        github_secrets: secrets.github_secret.clone(),
        gitlab_tokens: secrets.gitlab_token.clone(),
        metrics: metrics.clone(),
    };
    let app = finish(router(receivers), http, metrics);
    Standalone {
        writer: handle,
        app,
        task,
    }
}

/// Serve until Ctrl-C or SIGTERM, then commit what is buffered.
pub(crate) async fn run_until_stopped(s: Standalone, http: &HttpArgs) -> anyhow::Result<()> {
    let Standalone { writer, app, task } = s;
    drop(writer);
    serve(app, http.listen, shutdown_signal()).await?;
    // The router (and with it the last writer handle) is dropped: the writer commits and ends.
    task.await??;
    Ok(())
}

pub(crate) async fn run(args: Args) -> anyhow::Result<std::process::ExitCode> {
    let store = args.store.open()?;
    let s = start(store, &args.http, &args.secrets);
    run_until_stopped(s, &args.http).await?;
    Ok(std::process::ExitCode::SUCCESS)
}
