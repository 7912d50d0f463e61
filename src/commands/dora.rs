//! `cdlake dora`: the DORA report for a window.

use anyhow::Context;
use cdlake_query::dora::levels::Benchmark;
use cdlake_query::dora::{html, render};
use cdlake_query::{DoraRequest, GroupBy};
use chrono::{SubsecRound, Utc};

use super::{ConfigArgs, StoreArgs, parse_time};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    config: ConfigArgs,
    /// Window start (inclusive): RFC 3339, a date, or now-30d. Default: 30 days before --to.
    #[arg(long)]
    from: Option<String>,
    /// Window end (exclusive): RFC 3339, a date, or now. Default: now.
    #[arg(long, default_value = "now")]
    to: String,
    /// Also report per service, team or ISO week (in `groups`), per repository (in
    /// `repositories`), or per environment (in `environments`: every environment deployed to
    /// in the window, each as if it were production).
    /// Two keys combine: `--by service,week` is one group per service and week.
    #[arg(long, value_name = "service|team|week|repository|environment[,…]")]
    by: Option<String>,
    /// Output format. `html` is a self-contained page (five figures, change against the
    /// previous period, weekly trends, per-service table) for management.
    #[arg(long, value_enum, default_value = "table")]
    format: ReportFormat,
    /// Write the report to this file instead of standard output.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    /// Answer from the tables as they were: a version of `events` (42) or a time
    /// (2026-11-30, 2026-11-30T12:00:00Z): what the report said then, with the data it had.
    #[arg(long = "as-of")]
    as_of: Option<String>,
    /// Whose levels to place the figures in: `design` (DESIGN.md's) or a DORA State of DevOps
    /// report's year, 2021 to 2024 (2022 has no elite); 2025 publishes no tiers, so no level.
    /// Default: `[dora] bands` of the config, else `design`.
    #[arg(long, env = "CDLAKE_DORA_BANDS", value_parser = parse_bands)]
    bands: Option<Benchmark>,
    /// Print the SQL instead of the report, as one JSON object: the view definitions and the
    /// statements the report runs for this window (for benchmarks against other engines).
    #[arg(long, hide = true)]
    print_sql: bool,
}

fn parse_bands(text: &str) -> Result<Benchmark, String> {
    text.parse()
        .map_err(|e: cdlake_query::dora::levels::UnknownBenchmark| e.to_string())
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum ReportFormat {
    Table,
    Json,
    Markdown,
    Html,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<std::process::ExitCode> {
    let now = Utc::now().trunc_subsecs(0);
    let to = parse_time(&args.to, now).context("--to")?;
    let from = match &args.from {
        Some(f) => parse_time(f, now).context("--from")?,
        None => to - chrono::Duration::days(30),
    };
    let (by, then_by) = match &args.by {
        Some(text) => cdlake_query::dora::parse_by(text).context("--by")?,
        None => (None, None),
    };
    let req = |from, to, by| DoraRequest {
        from,
        to,
        by,
        then_by,
    };
    if args.print_sql {
        let config = args.config.load()?;
        let sql = print_sql(&config, &req(from, to, by))?;
        println!("{}", serde_json::to_string(&sql)?);
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let engine =
        super::report_engine_as_of(&args.store, &args.config, args.as_of.as_deref()).await?;
    let engine = match args.bands {
        Some(b) => engine.with_bands(b),
        None => engine,
    };
    let report = async |req: DoraRequest| anyhow::Ok(engine.dora(&req).await?);
    let text = match args.format {
        ReportFormat::Html => {
            let by = by.or(Some(GroupBy::Service));
            let current = report(req(from, to, by)).await?;
            let overall = |from, to| DoraRequest {
                from,
                to,
                by: None,
                then_by: None,
            };
            let previous = report(overall(from - (to - from), from)).await?;
            let weekly = report(DoraRequest {
                by: Some(GroupBy::Week),
                ..overall(from, to)
            })
            .await?;
            html::html(html::HtmlReport {
                current: &current,
                previous: Some(&previous),
                weekly: Some(&weekly),
            })
        }
        format => render_report(&report(req(from, to, by)).await?, format)?,
    };
    match &args.out {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("Wrote {}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// What `--print-sql` prints: `{"views": [[name, sql], ...], "queries": [[name, sql], ...]}`,
/// the views as the engine defines them and the statements `dora::report` runs for `req` over
/// them: as a user can run them (`cdlake sql`, another engine). The report itself pairs only
/// its window (`dora::Pairing::Window`), with the same answers.
fn print_sql(
    config: &cdlake_query::Config,
    req: &DoraRequest,
) -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::json!({
        "views": cdlake_query::views::definitions_with(&config.production, config.dora.options()?),
        "queries": cdlake_query::dora::report_queries(req, false).named(),
    }))
}

/// A report as text in one of the formats.
pub(crate) fn render_report(
    report: &cdlake_query::DoraReport,
    format: ReportFormat,
) -> anyhow::Result<String> {
    Ok(match format {
        ReportFormat::Table => render::table(report),
        ReportFormat::Markdown => render::markdown(report),
        ReportFormat::Json => serde_json::to_string_pretty(report)? + "\n",
        ReportFormat::Html => html::html(html::HtmlReport {
            current: report,
            previous: None,
            weekly: None,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cdlake_ingest::{Ingester, IngesterConfig};
    use cdlake_query::{Config, Engine};
    use cdlake_schemas::Origin;

    /// A CDEvent of `ty` (e.g. `service.deployed`) with `content`.
    fn cdevent(
        seq: usize,
        ty: &str,
        subject: &str,
        time: &str,
        content: serde_json::Value,
    ) -> String {
        serde_json::json!({
            "context": {"specversion": "0.5.1", "id": format!("e{seq}"), "source": "/print-sql",
                        "type": format!("dev.cdevents.{ty}.0.3.0"), "timestamp": time},
            "subject": {"id": subject, "source": "/print-sql", "content": content}
        })
        .to_string()
    }

    /// Rows of a statement run as a user's (the printed text, through the checked path).
    async fn rows(engine: &Engine, sql: &str) -> usize {
        engine
            .sql(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .num_rows()
    }

    async fn count(engine: &Engine, sql: &str) -> i64 {
        let r = engine
            .sql(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let col = r.batches[0].column(0);
        col.as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .unwrap_or_else(|| panic!("{sql}: not a count"))
            .value(0)
    }

    /// What `--print-sql` prints, run as printed against a store whose answers are computed by
    /// hand, gives the report's figures: the statements are the ones the report runs, for the
    /// window asked, over the views the engine defines.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn print_sql_prints_the_views_and_the_statements_the_report_runs() {
        // checkout, in production. shop#1 (merged 01-02) is built into @a, shop#2 (01-15) into
        // @b. Deployments: 12-31 23:59:59 (before the window), 01-05 @a (delivers shop#1),
        // 01-10 of an unknown artifact, 01-20 @a again, 02-01 00:00 @b (the window's end,
        // excluded: shop#2 is not delivered by then).
        // Window [2026-01-01, 2026-02-01): 3 deployments, 1 of an unknown artifact, 1 change
        // delivered (shop#1), 1 merged and not delivered (shop#2).
        let repo = serde_json::json!({"repository": {"id": "acme/shop", "source": "/print-sql"}});
        let built_from =
            |change: &str| serde_json::json!({"change": {"id": change, "source": "/print-sql"}});
        let deployed = |artifact: &str| serde_json::json!({"environment": {"id": "production"}, "artifactId": artifact});
        let events = [
            (
                "change.merged",
                "acme/shop#1",
                "2026-01-02T00:00:00Z",
                repo.clone(),
            ),
            (
                "artifact.packaged",
                "pkg:oci/checkout@a",
                "2026-01-03T00:00:00Z",
                built_from("acme/shop#1"),
            ),
            (
                "change.merged",
                "acme/shop#2",
                "2026-01-15T00:00:00Z",
                repo.clone(),
            ),
            (
                "artifact.packaged",
                "pkg:oci/checkout@b",
                "2026-01-16T00:00:00Z",
                built_from("acme/shop#2"),
            ),
            (
                "service.deployed",
                "checkout",
                "2025-12-31T23:59:59Z",
                deployed("pkg:oci/checkout@x"),
            ),
            (
                "service.deployed",
                "checkout",
                "2026-01-05T00:00:00Z",
                deployed("pkg:oci/checkout@a"),
            ),
            (
                "service.deployed",
                "checkout",
                "2026-01-10T00:00:00Z",
                deployed("pkg:oci/checkout@x"),
            ),
            (
                "service.deployed",
                "checkout",
                "2026-01-20T00:00:00Z",
                deployed("pkg:oci/checkout@a"),
            ),
            (
                "service.deployed",
                "checkout",
                "2026-02-01T00:00:00Z",
                deployed("pkg:oci/checkout@b"),
            ),
        ];
        let dir = tempfile::tempdir().expect("temp dir");
        let store =
            cdlake_schemas::store::Store::open(dir.path().to_str().expect("utf-8")).expect("store");
        let mut ingester = Ingester::new(store.clone(), IngesterConfig::default());
        for (seq, (ty, subject, time, content)) in events.into_iter().enumerate() {
            let raw = cdevent(seq, ty, subject, time, content);
            ingester
                .ingest(raw.as_bytes(), Origin::CdEvents, "test")
                .await
                .expect("ingest");
        }
        ingester.flush().await.expect("flush");
        let config = Config::default();
        let engine = Engine::open(&store, config.clone()).await.expect("engine");

        let t = |s: &str| parse_time(s, Utc::now()).unwrap();
        let req = DoraRequest {
            from: t("2026-01-01"),
            to: t("2026-02-01"),
            by: Some(GroupBy::Service),
            then_by: None,
        };
        let report = engine.dora(&req).await.expect("report");
        let printed = print_sql(&config, &req).expect("print sql");
        let pairs = |v: &serde_json::Value| -> Vec<(String, String)> {
            serde_json::from_value(v.clone()).unwrap()
        };
        let queries: std::collections::BTreeMap<String, String> =
            pairs(&printed["queries"]).into_iter().collect();
        let names: Vec<&str> = queries.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "changes_not_delivered",
                "deliveries",
                "deployments",
                "deployments_unknown_artifact",
                "failed_deployments",
                "incidents"
            ]
        );
        // The window, in microseconds: 2026-01-01 is 1767225600 s, 2026-02-01 1769904000 s.
        for name in [
            "deployments",
            "deployments_unknown_artifact",
            "failed_deployments",
        ] {
            assert!(
                queries[name].contains("1767225600000000"),
                "{name}: {}",
                queries[name]
            );
        }
        for (name, sql) in &queries {
            assert!(sql.contains("1769904000000000"), "{name}: {sql}");
        }

        // Run as printed: the hand-computed answers, which are the report's.
        let f = &report.figures;
        assert_eq!(rows(&engine, &queries["deployments"]).await, 3);
        assert_eq!(f.deployment_frequency.deployments, 3);
        assert_eq!(rows(&engine, &queries["deliveries"]).await, 1);
        assert_eq!(f.lead_time.changes, 1);
        assert_eq!(
            count(&engine, &queries["deployments_unknown_artifact"]).await,
            1
        );
        assert_eq!(report.unlinked.deployments_unknown_artifact, 1);
        assert_eq!(count(&engine, &queries["changes_not_delivered"]).await, 1);
        assert_eq!(report.unlinked.changes_not_delivered, 1);
        assert_eq!(rows(&engine, &queries["incidents"]).await, 0);
        assert_eq!(rows(&engine, &queries["failed_deployments"]).await, 0);
        assert_eq!(f.change_failure_rate.failed_deployments, 0);

        // The printed views are the ones the engine defined, as its catalog holds them.
        let catalog = engine
            .session()
            .sql("SELECT table_name, definition FROM information_schema.views")
            .await
            .expect("information_schema")
            .collect()
            .await
            .expect("views");
        let mut defined = std::collections::BTreeMap::new();
        for batch in &catalog {
            let text = |i: usize| {
                arrow::compute::cast(batch.column(i), &arrow::datatypes::DataType::Utf8)
                    .expect("text")
            };
            let (names, bodies) = (text(0), text(1));
            let names = names
                .as_any()
                .downcast_ref::<arrow::array::StringArray>()
                .expect("names");
            let bodies = bodies
                .as_any()
                .downcast_ref::<arrow::array::StringArray>()
                .expect("bodies");
            for i in 0..batch.num_rows() {
                defined.insert(names.value(i).to_string(), bodies.value(i).to_string());
            }
        }
        let views = pairs(&printed["views"]);
        assert!(views.len() >= 10, "{views:?}");
        for (name, body) in &views {
            let definition = defined
                .get(name)
                .unwrap_or_else(|| panic!("{name} is printed but not defined: {defined:?}"));
            // The catalog keeps the text with its whitespace normalised.
            let words = |s: &str| s.split_whitespace().collect::<String>();
            assert!(
                words(definition).contains(&words(body)),
                "{name}: printed {body}\ndefined {definition}"
            );
        }
    }
}
