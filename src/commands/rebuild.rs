//! `cdlake rebuild`: derive the read models from `events` now (also done at the end of
//! `cdlake demo`, and kept current in the background by `cdlake serve` and `cdlake standalone`).
//! With `--renormalise`, first run today's normalisers over the stored payloads and rewrite
//! the rows that come out different (`cdlake_ingest::renormalise`).

use std::sync::Arc;

use std::collections::BTreeMap;

use cdlake_ingest::parquet::EncodeOptions;
use cdlake_ingest::renormalise::RenormaliseReport;
use cdlake_query::projection::ProjectionReport;
use cdlake_query::read_model::{
    self, Model, RefreshReport, Refresher, RefresherStatus, Scope, refresh_models,
};
use cdlake_query::{Config, Engine};
use cdlake_schemas::lake::Lake;
use cdlake_schemas::paths::Table;
use cdlake_schemas::store::Store;
use chrono::NaiveDate;
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
    /// The read models to rebuild (repeatable; default: all): `report_events` (with the
    /// projections `change_facts`, `artifact_facts`, `artifact_changes`, `production_events`,
    /// `incident_facts` and `production_links`, which name it too), `run_events` (with
    /// `pipeline_runs` and `task_runs`).
    #[arg(long = "table", value_name = "NAME")]
    tables: Vec<String>,
    /// Derive every month from this date's month on again, also those that are current
    /// (`YYYY-MM-DD` or `YYYY-MM`). Without it only months that are not current are derived.
    /// With --renormalise, also the first day renormalised.
    #[arg(long, value_name = "DATE")]
    from: Option<String>,
    /// First run today's GitHub, GitLab and CDEvents normalisers again over the raw payloads
    /// stored in `events`, and rewrite the rows that come out different (one transaction per
    /// day; rows stored twice under old and new identities become one). Safe while ingest
    /// runs; run it again to finish an interrupted run.
    #[arg(long)]
    renormalise: bool,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<std::process::ExitCode> {
    let mut models = Vec::new();
    for table in &args.tables {
        // A projection is written with the read model it is derived from.
        let projected = cdlake_query::projection::Entity::ALL
            .into_iter()
            .find(|e| e.name() == table.as_str())
            .map(|e| e.model());
        let Some(model) = Model::named(table).or(projected) else {
            let names: Vec<&str> = Model::ALL
                .iter()
                .map(|m| m.name())
                .chain(
                    cdlake_query::projection::Entity::ALL
                        .iter()
                        .map(|e| e.name()),
                )
                .collect();
            anyhow::bail!(
                "--table {table:?} is not a read model; the read models and projections are: {}",
                names.join(", ")
            );
        };
        if !models.contains(&model) {
            models.push(model);
        }
    }
    if models.is_empty() {
        models = Model::ALL.to_vec();
    }
    let from = match &args.from {
        Some(text) => Some(read_model::month_of_text(text).ok_or_else(|| {
            anyhow::anyhow!("--from {text:?} is not a date: give YYYY-MM-DD or YYYY-MM")
        })?),
        None => None,
    };
    let store = args.store.open()?;
    let config = args.config.load()?;
    let renormalised = if args.renormalise {
        let from_day = match &from {
            Some(month) => Some(first_day(args.from.as_deref().unwrap_or_default(), month)?),
            None => None,
        };
        Some(renormalise(&store, from_day, &config).await?)
    } else {
        None
    };
    let scope = Scope {
        again_from: from.as_deref(),
        ..Scope::ALL
    };
    let mut rebuilt = rebuild(&store, &config, &models, scope, true).await?;
    rebuilt.renormalised = renormalised;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rebuilt)?);
    } else {
        if let Some(r) = &rebuilt.renormalised {
            println!("{}", renormalised_summary(r));
        }
        println!("{}", summary(&rebuilt));
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// The first day `--from` names: the day given, or the first of the month given.
fn first_day(text: &str, month: &str) -> anyhow::Result<NaiveDate> {
    NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
        .or_else(|_| NaiveDate::parse_from_str(&format!("{month}-01"), "%Y-%m-%d"))
        .map_err(|_| anyhow::anyhow!("--from {text:?} is not a date: give YYYY-MM-DD or YYYY-MM"))
}

/// Run the normalisers again over `events` from `from` on, with a progress bar.
async fn renormalise(
    store: &Store,
    from: Option<NaiveDate>,
    config: &Config,
) -> anyhow::Result<RenormaliseReport> {
    let log = Lake::new(store.clone()).table(Table::Events).await?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} renormalising events [{bar:30}] {pos}/{len} days")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let report = cdlake_ingest::renormalise::renormalise(
        store,
        &log,
        from,
        &super::rules(config),
        &EncodeOptions::default(),
        |done, all| {
            bar.set_length(all as u64);
            bar.set_position(done as u64);
        },
    )
    .await
    .map_err(|e| {
        anyhow::anyhow!(
            "{e}; the days renormalised so far are committed: fix the cause above and run `cdlake rebuild --renormalise` again (days already done are read, not rewritten)"
        )
    })?;
    bar.finish_and_clear();
    Ok(report)
}

/// What a renormalisation did, in a line or two.
fn renormalised_summary(r: &RenormaliseReport) -> String {
    let mut s = format!(
        "renormalised {} days ({} rows): {} rows changed ({} moved to another day) in {} days rewritten, {} duplicates dropped, {} rows kept as stored (their payload is now rejected)",
        r.partitions, r.rows, r.changed, r.moved, r.rewritten, r.duplicates, r.rejected
    );
    if r.busy > 0 {
        s.push_str(&format!(
            "\n{} days were changed by other writers throughout: run `cdlake rebuild --renormalise` again to finish them",
            r.busy
        ));
    }
    s
}

/// What a rebuild did: in total (the fields of [`RefreshReport`]), by read model, and what
/// `--renormalise` did first.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Rebuilt {
    #[serde(flatten)]
    pub(crate) total: RefreshReport,
    pub(crate) tables: BTreeMap<&'static str, RefreshReport>,
    /// The projections (entities kept whole) of the read models rebuilt.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) projections: BTreeMap<&'static str, ProjectionReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) renormalised: Option<RenormaliseReport>,
}

/// Bring the read models `models` up to date with `events`, with a progress bar when `show`
/// is set.
pub(crate) async fn rebuild(
    store: &Store,
    config: &Config,
    models: &[Model],
    scope: Scope<'_>,
    show: bool,
) -> anyhow::Result<Rebuilt> {
    let bar = if show {
        ProgressBar::new(0)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} read model {msg} [{bar:30}] {pos}/{len} months")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let reports = refresh_models(store, config, models, scope, |model, done, all| {
        bar.set_message(model.name());
        bar.set_length(all as u64);
        bar.set_position(done as u64);
    })
    .await
    .map_err(|e| {
        anyhow::anyhow!(
            "{e}; the answers stay correct without the read models (they read `events` meanwhile): fix the cause above and run `cdlake rebuild` again (it takes up where it stopped)"
        )
    })?;
    // The projections are derived through the read models, so they follow them.
    let mut projections = BTreeMap::new();
    {
        bar.set_message("projections");
        let again = scope.again_from.is_some();
        let reports = cdlake_query::projection::refresh_store(store, config, models, again)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "{e}; the answers stay correct without the projections (their views are derived from the read models meanwhile): fix the cause above and run `cdlake rebuild` again"
                )
            })?;
        for (entity, r) in reports {
            projections.insert(entity.name(), r);
        }
    }
    bar.finish_and_clear();
    let mut total = RefreshReport::default();
    let mut tables = BTreeMap::new();
    for (model, r) in reports {
        total.built += r.built;
        total.current += r.current;
        total.waiting += r.waiting;
        total.deleted += r.deleted;
        total.rows += r.rows;
        tables.insert(model.name(), r);
    }
    Ok(Rebuilt {
        total,
        tables,
        projections,
        renormalised: None,
    })
}

/// What a rebuild did, a line per read model.
pub(crate) fn summary(rebuilt: &Rebuilt) -> String {
    rebuilt
        .tables
        .iter()
        .map(|(name, r)| {
            format!(
                "read model {name}: {} months built ({} rows), {} already current, {} superseded files removed",
                r.built, r.rows, r.current, r.deleted
            )
        })
        .chain(rebuilt.projections.iter().map(|(name, r)| {
            if r.built {
                format!(
                    "projection {name}: written ({} rows, {} months changed since the last)",
                    r.rows, r.dirty_months
                )
            } else {
                format!("projection {name}: already current")
            }
        }))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Keep the read models current while `serve` or `standalone` runs: a look at the store every
/// few seconds, months that changed derived at once, the hot months every five minutes (see
/// [`Refresher`]). A failure is logged and tried again at the next turn (answers stay correct
/// without the read model, only slower).
pub(crate) fn spawn_background(store: Store, engine: Engine) -> Arc<RefresherStatus> {
    let mut refresher = Refresher::new(store, engine, std::time::Duration::from_secs(300));
    let status = refresher.status();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // After a failure the refresher waits longer each time (5 s doubling to 5 minutes),
        // so a build that keeps failing does not rescan the store every few seconds.
        let mut backoff = std::time::Duration::ZERO;
        loop {
            tick.tick().await;
            if !backoff.is_zero() {
                tokio::time::sleep(backoff).await;
            }
            let result = refresher.tick().await;
            backoff = match &result {
                Err(_) => (backoff * 2).clamp(
                    std::time::Duration::from_secs(5),
                    std::time::Duration::from_secs(300),
                ),
                Ok(_) => std::time::Duration::ZERO,
            };
            match result {
                Ok(Some(reports)) => {
                    for (model, r) in reports {
                        if r.built > 0 || r.deleted > 0 {
                            tracing::info!(
                                table = model.name(),
                                built = r.built,
                                rows = r.rows,
                                deleted = r.deleted,
                                waiting = r.waiting,
                                "Read model brought up to date."
                            );
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "Could not bring the read model up to date; answers read `events` meanwhile. Will try again.")
                }
            }
        }
    });
    status
}
