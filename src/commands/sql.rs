//! `cdlake sql`: one read-only query, printed as a table, CSV or JSON.

use cdlake_query::format::{Format, render_text};

use super::{ConfigArgs, StoreArgs};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    config: ConfigArgs,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: OutputFormat,
    /// Read the tables as they were: a version of `events` (42) or a time (2026-11-30,
    /// 2026-11-30T12:00:00Z); as far back as the retention keeps them.
    #[arg(long = "as-of")]
    as_of: Option<String>,
    /// The query, e.g. "SELECT service, count(*) FROM deployments GROUP BY service".
    query: String,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum OutputFormat {
    Table,
    Csv,
    Json,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<std::process::ExitCode> {
    let engine = super::engine_as_of(&args.store, &args.config, args.as_of.as_deref()).await?;
    let result = engine.sql(&args.query).await?;
    let format = match args.format {
        OutputFormat::Table => Format::Table,
        OutputFormat::Csv => Format::Csv,
        OutputFormat::Json => Format::Json,
    };
    let text = render_text(&result, format, engine.config().limits.max_result_mb)?;
    println!("{}", text.trim_end());
    Ok(std::process::ExitCode::SUCCESS)
}
