//! `cdlake demo`: a seeded, realistic history written through the real ingest path, then its
//! DORA report. The history's end time is kept in the store (`_cdlake/demo.json`), so running
//! the demo again regenerates the same events and stores none of them twice.

use anyhow::Context;
use cdlake_demo::{DemoSpec, estimated_events, generate};
use cdlake_ingest::Ingester;
use cdlake_query::{DoraRequest, GroupBy};
use cdlake_schemas::Origin;
use cdlake_schemas::paths::StatePath;
use cdlake_schemas::store::Store;
use chrono::{DateTime, DurationRound, Utc};
use indicatif::{ProgressBar, ProgressStyle};

use super::dora::{ReportFormat, render_report};
use super::import::Counts;
use super::{ConfigArgs, SecretArgs, StoreArgs};
use crate::http::HttpArgs;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    config: ConfigArgs,
    /// About how many events to generate.
    #[arg(long, default_value_t = DemoSpec::default().target_events)]
    events: u64,
    /// Days of history.
    #[arg(long, default_value_t = DemoSpec::default().days)]
    days: u32,
    /// Number of services.
    #[arg(long, default_value_t = DemoSpec::default().services)]
    services: usize,
    /// Random seed: the same seed gives the same history.
    #[arg(long, default_value_t = DemoSpec::default().seed)]
    seed: u64,
    /// Exit after the history and its report, instead of serving it with a live trickle.
    #[arg(long)]
    no_serve: bool,
    /// Live events per day in the trickle (a busy organisation: about one every few seconds).
    #[arg(long, default_value_t = 30_000)]
    live_per_day: u64,
    #[command(flatten)]
    http: HttpArgs,
    #[command(flatten)]
    pg: super::serve::PgArgs,
}

/// The end of the demo history for this spec: the one recorded in the store, or now.
async fn anchor(store: &Store, spec: &DemoSpec) -> anyhow::Result<DateTime<Utc>> {
    let key = format!(
        "seed={} days={} services={} events={}",
        spec.seed, spec.days, spec.services, spec.target_events
    );
    let path = StatePath::DEMO.to_string();
    let mut anchors: serde_json::Map<String, serde_json::Value> = match store.get(&path).await? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{path} in the store is not valid JSON"))?,
        None => serde_json::Map::new(),
    };
    if let Some(end) = anchors.get(&key).and_then(|v| v.as_str()) {
        return Ok(DateTime::parse_from_rfc3339(end)?.with_timezone(&Utc));
    }
    let end = Utc::now().duration_trunc(chrono::Duration::minutes(1))?;
    anchors.insert(key, end.to_rfc3339().into());
    // The anchor file is small state, rewritten whole; losing a race only picks another anchor.
    let tmp_name = format!("{path}.{}", std::process::id());
    let bytes = serde_json::to_vec_pretty(&anchors)?;
    match store.local_root() {
        Some(root) => {
            let target = root.join(&path);
            if let Some(dir) = target.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = root.join(tmp_name);
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, &target)?;
        }
        None => {
            store.put_if_absent(&path, bytes).await?;
        }
    }
    Ok(end)
}

pub(crate) async fn run(args: Args) -> anyhow::Result<std::process::ExitCode> {
    let store = args.store.open()?;
    let config = args.config.load()?;
    let spec = DemoSpec {
        seed: args.seed,
        days: args.days,
        services: args.services,
        target_events: args.events,
    };
    let end = anchor(&store, &spec).await?;
    eprintln!(
        "Generating {} days of history for {} services (~{} events) into {} …",
        spec.days,
        spec.services,
        estimated_events(&spec),
        store.location()
    );
    let bar = ProgressBar::new(estimated_events(&spec));
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg:>9} [{bar:30}] {human_pos}/{human_len} events ({per_sec}, {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message("ingesting");
    let mut ingester = Ingester::new(store.clone(), super::ingester_config(&config));
    let mut counts = Counts::default();
    for event in generate(&spec, end) {
        counts.add(
            ingester
                .ingest(event.as_bytes(), Origin::CdEvents, "demo")
                .await?,
        );
        bar.inc(1);
        if ingester.should_flush() {
            bar.set_message("writing");
            ingester.flush().await.context("committing to the store")?;
            bar.set_message("ingesting");
        }
    }
    ingester.flush().await.context("committing to the store")?;
    bar.finish_and_clear();
    super::checkpoint_when_done(&ingester).await;
    eprintln!(
        "Stored {} new events ({} already in the store, {} rejected).\n",
        counts.imported, counts.duplicate, counts.rejected
    );

    let rebuilt = super::rebuild::rebuild(
        &store,
        &config,
        &cdlake_query::read_model::Model::ALL,
        cdlake_query::read_model::Scope::ALL,
        true,
    )
    .await?;
    eprintln!("{}\n", super::rebuild::summary(&rebuilt));

    let engine = cdlake_query::Engine::open(&store, config).await?;
    let from = end - chrono::Duration::days(30);
    let report = cdlake_query::QueryService::dora(
        &engine,
        &DoraRequest {
            from,
            to: end,
            by: Some(GroupBy::Service),
            then_by: None,
        },
    )
    .await?;
    print!("{}", render_report(&report, ReportFormat::Table)?);
    let store_flag = if args.store.store == "./cdlake-data" {
        String::new()
    } else {
        format!(" --store {}", args.store.store)
    };
    eprintln!(
        "\nNext: cdlake dora{store_flag} --from {} --to {} --by team --format json\n      cdlake sql{store_flag} \"SELECT service, count(*) FROM dora_deployments GROUP BY service\"",
        (end - chrono::Duration::days(90)).format("%Y-%m-%d"),
        end.format("%Y-%m-%dT%H:%M:%SZ"),
    );
    if args.no_serve {
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let standalone = super::standalone::start(
        store,
        args.config.load()?,
        &args.http,
        &args.pg,
        &SecretArgs::default(),
        &super::ReceiverLimits::default(),
    )
    .await?;
    let trickle = tokio::spawn(trickle(standalone.writer.clone(), spec, args.live_per_day));
    eprintln!(
        "\nServing the demo with live events (webhooks: POST /webhooks/github, /webhooks/gitlab; CloudEvents: POST /api/v1/events). Ctrl-C stops."
    );
    let served = super::standalone::run_until_stopped(standalone, &args.http).await;
    trickle.abort();
    served?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// Feed live events through the standalone writer as their time comes, a day at a time.
async fn trickle(writer: cdlake_ingest::writer::WriterHandle, spec: DemoSpec, per_day: u64) {
    loop {
        let start = Utc::now();
        let live = cdlake_demo::live_spec(&spec, per_day, start);
        let salt = start.timestamp() as u64;
        let mut sent = 0u64;
        for event in cdlake_demo::generate_salted(&live, start + chrono::Duration::days(1), salt) {
            let Ok(parsed) = cdlake_schemas::cdevents::parse(event.as_bytes(), Origin::CdEvents, 0)
            else {
                continue;
            };
            let wait = parsed.time - Utc::now().timestamp_micros();
            if wait > 0 {
                tokio::time::sleep(std::time::Duration::from_micros(wait as u64)).await;
            }
            let env = cdlake_ingest::Envelope::cdevent(
                event.into_bytes(),
                "demo:live",
                Utc::now().timestamp_micros(),
            );
            if let Err(e) = writer.submit(vec![(env, None)]).await {
                tracing::warn!(error = %e, "Live demo event not stored.");
                return;
            }
            sent += 1;
            if sent == 1 {
                tracing::info!("First live demo event stored.");
            }
        }
    }
}
