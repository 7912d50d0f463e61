//! `cdlake dora`: the DORA report for a window.

use anyhow::Context;
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
    /// Also report per service, team or ISO week.
    #[arg(long, value_enum)]
    by: Option<By>,
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
    /// Print the SQL instead of the report, as one JSON object: the view definitions and the
    /// statements the report runs for this window (for benchmarks against other engines).
    #[arg(long, hide = true)]
    print_sql: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum By {
    Service,
    Team,
    Week,
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
    let by = args.by.map(|b| match b {
        By::Service => GroupBy::Service,
        By::Team => GroupBy::Team,
        By::Week => GroupBy::Week,
    });
    if args.print_sql {
        let config = args.config.load()?;
        let sql = print_sql(&config.production, &DoraRequest { from, to, by });
        println!("{}", serde_json::to_string(&sql)?);
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let engine = super::engine_as_of(&args.store, &args.config, args.as_of.as_deref()).await?;
    let text = match args.format {
        ReportFormat::Html => {
            let by = by.or(Some(GroupBy::Service));
            let current = engine.dora(&DoraRequest { from, to, by }).await?;
            let previous = engine
                .dora(&DoraRequest {
                    from: from - (to - from),
                    to: from,
                    by: None,
                })
                .await?;
            let weekly = engine
                .dora(&DoraRequest {
                    from,
                    to,
                    by: Some(GroupBy::Week),
                })
                .await?;
            html::html(html::HtmlReport {
                current: &current,
                previous: Some(&previous),
                weekly: Some(&weekly),
            })
        }
        format => render_report(&engine.dora(&DoraRequest { from, to, by }).await?, format)?,
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
/// the views as the engine defines them and the statements `dora::report` runs for `req`.
fn print_sql(production: &str, req: &DoraRequest) -> serde_json::Value {
    serde_json::json!({
        "views": cdlake_query::views::definitions(production),
        "queries": cdlake_query::dora::report_queries(req).named(),
    })
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

    #[test]
    fn print_sql_prints_the_views_and_the_statements_the_report_runs() {
        let t = |s: &str| parse_time(s, Utc::now()).unwrap();
        let req = DoraRequest {
            from: t("2026-01-01"),
            to: t("2026-02-01"),
            by: Some(GroupBy::Service),
        };
        let printed = print_sql("^prod$", &req);
        let pairs = |v: &serde_json::Value| -> Vec<(String, String)> {
            serde_json::from_value(v.clone()).unwrap()
        };
        let views: Vec<(String, String)> = cdlake_query::views::definitions("^prod$")
            .into_iter()
            .map(|(n, s)| (n.to_string(), s))
            .collect();
        assert_eq!(pairs(&printed["views"]), views);
        // `dora::report` runs exactly `report_queries(req)`: the same function builds both.
        let queries = cdlake_query::dora::report_queries(&req);
        let expected: Vec<(String, String)> = queries
            .named()
            .into_iter()
            .map(|(n, s)| (n.to_string(), s.to_string()))
            .collect();
        assert_eq!(pairs(&printed["queries"]), expected);
        let names: Vec<String> = expected.into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "deployments",
                "deliveries",
                "incidents",
                "deployments_unknown_artifact",
                "changes_not_delivered"
            ]
        );
        // The window is in the statements, in microseconds.
        let to = req.to.timestamp_micros().to_string();
        assert!(queries.deployments.contains(&to) && queries.changes_not_delivered.contains(&to));
    }
}
