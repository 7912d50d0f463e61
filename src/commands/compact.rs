//! `cdlake compact`: merge each partition's small files into large sorted ones now, then
//! vacuum and checkpoint; and the background compaction `cdlake ingest` and `cdlake standalone`
//! run.

use std::time::Duration;

use cdlake_ingest::compact::{CompactOptions, CompactReport, compact_table, maintain};
use cdlake_schemas::lake::Lake;
use cdlake_schemas::paths::Table;
use cdlake_schemas::store::Store;
use indicatif::{ProgressBar, ProgressStyle};

use super::StoreArgs;

/// How compaction merges files.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct CompactArgs {
    /// Size a compacted file grows to before another is started, in MiB.
    #[arg(long = "compact-target-mb", default_value_t = 128)]
    target_mb: u64,
    /// Compact a partition once it has this many files under half the target size.
    #[arg(long = "compact-min-files", default_value_t = 4)]
    min_files: usize,
    /// Hours files removed from a table (merged by compaction) and old log entries are kept
    /// before the vacuum deletes them: how far back `--as-of` reaches.
    #[arg(
        long = "retention-hours",
        env = "CDLAKE_RETENTION_HOURS",
        default_value_t = 168
    )]
    retention_hours: u64,
    /// The least time (seconds) merged files stay for running queries; the retention is never
    /// shorter. Kept for older configurations: `--retention-hours` is the setting to use.
    #[arg(long = "compact-grace-secs", default_value_t = 600)]
    grace_secs: u64,
}

impl CompactArgs {
    pub(crate) fn options(&self) -> CompactOptions {
        let retention = chrono::Duration::hours(self.retention_hours.min(1 << 20) as i64).max(
            chrono::Duration::seconds(self.grace_secs.min(1 << 30) as i64),
        );
        CompactOptions {
            target_bytes: self.target_mb.max(1) << 20,
            min_files: self.min_files.max(2),
            retention,
            ..CompactOptions::default()
        }
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    compact: CompactArgs,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<std::process::ExitCode> {
    let store = args.store.open()?;
    let lake = Lake::new(store.clone());
    let opts = args.compact.options();
    let mut total = CompactReport::default();
    for table in [Table::Events, Table::DeadLetters, Table::Spans] {
        let log = lake.table(table).await?;
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} compacting {msg} [{bar:30}] {pos}/{len} partitions",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(table.dir());
        let mut report = compact_table(&store, &log, &opts, |done, all| {
            bar.set_length(all as u64);
            bar.set_position(done as u64);
        })
        .await?;
        bar.set_message(format!("{}: vacuum and checkpoint", table.dir()));
        report.removed += maintain(&log, &opts).await?;
        bar.finish_and_clear();
        total.add(&report);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&total)?);
    } else {
        println!("{}", summary(&total));
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn summary(r: &CompactReport) -> String {
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let mut s = format!(
        "compacted {} partitions: {} files ({:.1} MiB) into {} ({:.1} MiB), {} rows, {} duplicates dropped; {} files past the retention removed",
        r.partitions,
        r.files_in,
        mib(r.bytes_in),
        r.files_out,
        mib(r.bytes_out),
        r.rows_out,
        r.rows_in - r.rows_out,
        r.removed,
    );
    if r.busy > 0 {
        s.push_str(&format!(
            "; {} merges left to another compactor that was first",
            r.busy
        ));
    }
    s
}

/// Compact the store every `every` in the background (never when `every` is zero).
pub(crate) fn spawn_background(
    store: Store,
    opts: CompactOptions,
    every: Duration,
) -> Option<tokio::task::JoinHandle<()>> {
    if every.is_zero() {
        return None;
    }
    Some(tokio::spawn(async move {
        let lake = Lake::new(store.clone());
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            for table in [Table::Events, Table::DeadLetters, Table::Spans] {
                let result = match lake.table(table).await {
                    Ok(log) => match compact_table(&store, &log, &opts, |_, _| {}).await {
                        Ok(mut r) => maintain(&log, &opts).await.map(|n| {
                            r.removed += n;
                            r
                        }),
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e.into()),
                };
                match result {
                    Ok(r) if r.files_in > 0 || r.removed > 0 => tracing::info!(
                        table = table.dir(),
                        files_in = r.files_in,
                        files_out = r.files_out,
                        removed = r.removed,
                        "Background compaction."
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(
                        table = table.dir(),
                        error = %e,
                        "Background compaction failed; it is retried at the next interval."
                    ),
                }
            }
        }
    }))
}
