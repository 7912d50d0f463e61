//! `cdlake rebuild`: derive the read models from `events` now (also done at the end of
//! `cdlake demo` and every few minutes by `cdlake serve` and `cdlake standalone`).

use cdlake_query::Config;
use cdlake_query::read_model::{RefreshReport, refresh_store};
use cdlake_schemas::store::Store;
use indicatif::{ProgressBar, ProgressStyle};

use super::{ConfigArgs, StoreArgs};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    config: ConfigArgs,
    /// Print what was done as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<std::process::ExitCode> {
    let store = args.store.open()?;
    let config = args.config.load()?;
    let report = rebuild(&store, &config, true).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", summary(&report));
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// Bring the read models up to date with `events`, with a progress bar when `show` is set.
pub(crate) async fn rebuild(
    store: &Store,
    config: &Config,
    show: bool,
) -> anyhow::Result<RefreshReport> {
    let bar = if show {
        ProgressBar::new(0)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} read model report_events [{bar:30}] {pos}/{len} months",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let report = refresh_store(store, config, |done, all| {
        bar.set_length(all as u64);
        bar.set_position(done as u64);
    })
    .await
    .map_err(|e| {
        anyhow::anyhow!(
            "{e}; the answers stay correct without the read model (they read `events`): run `cdlake rebuild` again once the store is reachable"
        )
    })?;
    bar.finish_and_clear();
    Ok(report)
}

/// One line saying what a rebuild did.
pub(crate) fn summary(r: &RefreshReport) -> String {
    format!(
        "read model report_events: {} months built ({} rows), {} already current, {} superseded files removed",
        r.built, r.rows, r.current, r.deleted
    )
}

/// Keep the read models current while `serve` or `standalone` runs: a first rebuild a minute
/// after start, then every five minutes. A failure is logged and tried again at the next turn
/// (answers stay correct without the read model, only slower).
pub(crate) fn spawn_background(store: Store, config: Config) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(300));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match refresh_store(&store, &config, |_, _| {}).await {
                Ok(r) if r.built > 0 || r.deleted > 0 => {
                    tracing::info!(
                        built = r.built,
                        rows = r.rows,
                        deleted = r.deleted,
                        "Read model report_events brought up to date."
                    );
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "Could not bring the read model up to date; answers read `events` meanwhile. Will try again.")
                }
            }
        }
    })
}
