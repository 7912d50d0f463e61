//! `cdlake dora`: the DORA report for a window.

use anyhow::Context;
use cdlake_query::dora::render;
use cdlake_query::{DoraRequest, GroupBy};
use chrono::Utc;

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
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: ReportFormat,
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
}

pub(crate) async fn run(args: Args) -> anyhow::Result<std::process::ExitCode> {
    let now = Utc::now();
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
    let engine = super::engine(&args.store, &args.config).await?;
    let report = cdlake_query::QueryService::dora(&engine, &DoraRequest { from, to, by }).await?;
    print_report(&report, args.format)?;
    Ok(std::process::ExitCode::SUCCESS)
}

pub(crate) fn print_report(
    report: &cdlake_query::DoraReport,
    format: ReportFormat,
) -> anyhow::Result<()> {
    match format {
        ReportFormat::Table => print!("{}", render::table(report)),
        ReportFormat::Markdown => print!("{}", render::markdown(report)),
        ReportFormat::Json => println!("{}", serde_json::to_string_pretty(report)?),
    }
    Ok(())
}
