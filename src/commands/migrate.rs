//! `cdlake migrate`: convert a store written before the tables became Delta Lake tables, in
//! place (idempotent and resumable: run it again after an interruption).

use cdlake_ingest::migrate::{MigrateReport, migrate};
use indicatif::{ProgressBar, ProgressStyle};

use super::StoreArgs;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    store: StoreArgs,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<std::process::ExitCode> {
    let store = args.store.open()?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} migrating {msg} [{bar:30}] {pos}/{len} partitions")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let report = migrate(&store, &mut |table, done, all| {
        bar.set_message(table.dir());
        bar.set_length(all as u64);
        bar.set_position(done as u64);
    })
    .await?;
    bar.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", summary(&report));
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn summary(r: &MigrateReport) -> String {
    let mut s = format!(
        "migrated {} partitions ({} files as they were, {} partitions de-duplicated, {} duplicate rows dropped)",
        r.partitions, r.files, r.rewritten, r.duplicates
    );
    if r.already > 0 {
        s.push_str(&format!("; {} partitions were already migrated", r.already));
    }
    if r.hidden > 0 {
        s.push_str(&format!(
            "; {} files the old layout hid are left for the vacuum (cdlake compact)",
            r.hidden
        ));
    }
    s
}
