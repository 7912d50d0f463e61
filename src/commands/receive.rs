//! `cdlake receive`: the webhook and CloudEvents receivers, publishing to JetStream.

use std::sync::Arc;

use cdlake_ingest::Metrics;
use cdlake_ingest::sources::router;
use cdlake_ingest::stream::{Publisher, connect};

use super::{ConfigArgs, NatsArgs, ReceiverLimits, SecretArgs};
use crate::http::{HttpArgs, check_exposure, finish, request_timeout, serve, shutdown_signal};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    http: HttpArgs,
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    secrets: SecretArgs,
    #[command(flatten)]
    limits: ReceiverLimits,
    #[command(flatten)]
    config: ConfigArgs,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<std::process::ExitCode> {
    // Without a token, /metrics (and the CloudEvents and OTLP routes, which carry no signature)
    // would be open to anyone who reaches the port.
    check_exposure(
        "the receivers",
        args.http.listen,
        args.http.token.as_deref(),
    )?;
    let metrics = Arc::new(Metrics::new());
    crate::telemetry::observe(&metrics);
    let client = connect(&args.nats.nats, "cdlake receive").await?;
    let publisher = Publisher::new(client.clone(), metrics.clone()).await?;
    let rules = super::rules(&args.config.load()?);
    let receivers =
        args.secrets
            .receivers(Arc::new(publisher), &args.limits, metrics.clone(), rules)?;
    let app = finish(
        router(receivers),
        &args.http,
        metrics,
        None,
        request_timeout(0),
    );
    serve(app, args.http.listen, shutdown_signal()).await?;
    client.flush().await.ok();
    Ok(std::process::ExitCode::SUCCESS)
}
