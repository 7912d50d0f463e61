//! The `cdlake` command: parses arguments and calls the libraries. Each subcommand is a small
//! file in `commands/`.

mod alloc;
mod commands;
mod http;
mod telemetry;

use clap::{Parser, Subcommand};

/// CI/CD event analytics: CDEvents and webhooks into Parquet, DORA metrics and SQL over the
/// whole history.
#[derive(Debug, Parser)]
#[command(name = "cdlake", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate a realistic 90-day history into the store and print its DORA report.
    Demo(commands::demo::Args),
    /// Import CDEvents or CloudEvents from JSON Lines or JSON array files (`-` is stdin).
    Import(commands::import::Args),
    /// Run one read-only SQL query over the store.
    Sql(commands::sql::Args),
    /// Print the DORA report for a window.
    Dora(commands::dora::Args),
    /// Receive webhooks and CloudEvents over HTTP and publish them to NATS JetStream.
    Receive(commands::receive::Args),
    /// Consume JetStream durably and write Parquet to the store.
    Ingest(commands::ingest::Args),
    /// Receivers, writer and query service in one process, with no NATS: the embedded default.
    Standalone(commands::standalone::Args),
    /// The read-only query service: SQL, DORA and the live tail over HTTP, and Postgres wire.
    Serve(commands::serve::Args),
    /// Open the terminal UI on a running cdlake serve/standalone.
    Tui(commands::tui::Args),
    /// Merge each partition's small files into large sorted files, then vacuum and checkpoint
    /// (also done in the background by `ingest` and `standalone`).
    Compact(commands::compact::Args),
    /// Convert a store written before the tables became Delta Lake tables, in place.
    Migrate(commands::migrate::Args),
    /// Derive the read models from `events` now (also done by `demo`, `serve` and
    /// `standalone`): answers read them where they are current and `events` elsewhere.
    Rebuild(commands::rebuild::Args),
    /// Pull history from a provider's API (what the webhooks did not bring), written as the
    /// rows the webhooks would have written; resumable, and a fact already stored is skipped.
    Backfill(commands::backfill::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let service = match &cli.command {
        Command::Demo(_) => "cdlake-demo",
        Command::Import(_) => "cdlake-import",
        Command::Sql(_) => "cdlake-sql",
        Command::Dora(_) => "cdlake-dora",
        Command::Receive(_) => "cdlake-receive",
        Command::Ingest(_) => "cdlake-ingest",
        Command::Standalone(_) => "cdlake-standalone",
        Command::Serve(_) => "cdlake-serve",
        Command::Tui(_) => "cdlake-tui",
        Command::Compact(_) => "cdlake-compact",
        Command::Migrate(_) => "cdlake-migrate",
        Command::Rebuild(_) => "cdlake-rebuild",
        Command::Backfill(_) => "cdlake-backfill",
    };
    // The commands that answer queries hold large, short-lived buffers across threads: one
    // malloc arena keeps their memory near what they use (see `alloc`).
    if matches!(
        cli.command,
        Command::Serve(_) | Command::Sql(_) | Command::Dora(_)
    ) {
        alloc::limit_arenas(1);
    }
    // Dropped last: flushes the OTLP exporters after the runtime is gone.
    let _telemetry = telemetry::init(service);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Demo(args) => commands::demo::run(args).await,
            Command::Import(args) => commands::import::run(args).await,
            Command::Sql(args) => commands::sql::run(args).await,
            Command::Dora(args) => Box::pin(commands::dora::run(args)).await,
            Command::Receive(args) => commands::receive::run(args).await,
            Command::Ingest(args) => commands::ingest::run(args).await,
            Command::Standalone(args) => commands::standalone::run(args).await,
            Command::Serve(args) => commands::serve::run(args).await,
            Command::Tui(args) => commands::tui::run(args).await,
            Command::Compact(args) => commands::compact::run(args).await,
            Command::Migrate(args) => commands::migrate::run(args).await,
            Command::Rebuild(args) => commands::rebuild::run(args).await,
            Command::Backfill(args) => commands::backfill::run(args).await,
        }
    });
    drop(runtime);
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
