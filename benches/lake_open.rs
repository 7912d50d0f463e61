//! Opening a table after a long history of small commits: the `events` table with 50,000
//! commits (a little more than a day of the ingester's 2-second commits, with a compaction every
//! 100 commits), opened the way every cdlake command and query opens it.
//!
//! The log is written as the commit path writes it (the same actions, by
//! `cdlake_schemas::lake::log_entry`), straight into `_delta_log/`, since this measures reading
//! a long log, not committing one. Figures, each the best of `CDLAKE_BENCH_REPEAT` (3) opens:
//! - baseline: the log with no checkpoint, replayed from the first commit (a Delta table whose
//!   writer never checkpoints);
//! - cdlake: the same log after `TableLog::maintain` checkpointed it, with the most commits a
//!   reader can meet after a checkpoint (`CHECKPOINT_INTERVAL - 1`) appended since.
//!
//! `CDLAKE_BENCH_COMMITS` sets the number of commits (default 50,000).

use std::time::{Duration, Instant};

use cdlake_schemas::lake::{
    ActiveFile, CHECKPOINT_INTERVAL, Change, CommitKind, NewFile, TableLog, log_entry,
};
use cdlake_schemas::paths::{DataFilePath, Table};
use cdlake_schemas::store::Store;
use chrono::{NaiveDate, Utc};
use serde_json::json;

const MICROS_PER_DAY: i64 = 86_400_000_000;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Writes commits `from..=to` of the log: appends of one small file each, and every
/// [`CHECKPOINT_INTERVAL`]th commit a compaction of the files appended since the last one.
struct LogWriter {
    dir: std::path::PathBuf,
    start: NaiveDate,
    pending: Vec<ActiveFile>,
    now_ms: i64,
}

impl LogWriter {
    fn write(&mut self, from: u64, to: u64) -> std::io::Result<()> {
        for version in from..=to {
            let date = self.start + chrono::Days::new(version / 2_000);
            let change = if version % CHECKPOINT_INTERVAL == 0 && !self.pending.is_empty() {
                let id = format!("compact-{version:08}");
                let file = NewFile {
                    path: DataFilePath::new(Table::Events, date, id),
                    size: 2 << 20,
                    rows: 20_000,
                    time_range: Some(day_range(date)),
                };
                Change {
                    read_version: version - 1,
                    kind: CommitKind::Compact,
                    add: vec![file],
                    remove: std::mem::take(&mut self.pending),
                }
            } else {
                let id = format!("append-{version:08}");
                let file = NewFile {
                    path: DataFilePath::new(Table::Events, date, id),
                    size: 40_000,
                    rows: 200,
                    time_range: Some(day_range(date)),
                };
                self.pending.push(ActiveFile {
                    path: file.path.clone(),
                    size: file.size,
                    rows: Some(file.rows),
                });
                Change {
                    read_version: version - 1,
                    kind: CommitKind::Append,
                    add: vec![file],
                    remove: Vec::new(),
                }
            };
            let mut entry = log_entry(Table::Events, &change, self.now_ms);
            let info = json!({"commitInfo": {
                "timestamp": self.now_ms,
                "operation": if change.kind == CommitKind::Append { "WRITE" } else { "OPTIMIZE" },
                "operationParameters": {},
            }});
            entry.push_str(&info.to_string());
            entry.push('\n');
            std::fs::write(self.dir.join(format!("{version:020}.json")), entry)?;
        }
        Ok(())
    }
}

fn day_range(date: NaiveDate) -> (i64, i64) {
    let start = date
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc().timestamp_micros())
        .unwrap_or(0);
    (start, start + MICROS_PER_DAY - 1)
}

/// The best of `repeat` opens, and the files the last one found.
async fn best_open(store: &Store, repeat: u64) -> (Duration, u64, usize) {
    let mut best = Duration::MAX;
    let mut seen = (0, 0);
    for _ in 0..repeat.max(1) {
        let started = Instant::now();
        let log = TableLog::open(store, Table::Events)
            .await
            .expect("open the table");
        let index = log.index().await;
        best = best.min(started.elapsed());
        seen = (index.version, index.num_files());
    }
    (best, seen.0, seen.1)
}

#[tokio::main]
async fn main() {
    let commits = env_u64("CDLAKE_BENCH_COMMITS", 50_000).max(CHECKPOINT_INTERVAL * 2);
    let repeat = env_u64("CDLAKE_BENCH_REPEAT", 3);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Store::open(dir.path().to_str().expect("a UTF-8 path")).expect("open the store");
    // Creates the table (version 0) through cdlake's own path.
    let created = TableLog::open(&store, Table::Events)
        .await
        .expect("create the table");
    drop(created);

    let mut writer = LogWriter {
        dir: dir.path().join("events").join("_delta_log"),
        start: NaiveDate::from_ymd_opt(2026, 1, 1).expect("a date"),
        pending: Vec::new(),
        now_ms: Utc::now().timestamp_millis(),
    };
    // The newest checkpoint a reader can meet is CHECKPOINT_INTERVAL - 1 commits old.
    let checkpointed = commits - (CHECKPOINT_INTERVAL - 1);
    let started = Instant::now();
    writer.write(1, checkpointed).expect("write the log");
    eprintln!(
        "lake_open: wrote {checkpointed} commits in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let (replay, version, files) = best_open(&store, repeat).await;
    assert_eq!(version, checkpointed, "the replayed table's version");
    eprintln!(
        "lake_open: no checkpoint: version {version}, {files} files, {:.3} s",
        replay.as_secs_f64()
    );

    let log = TableLog::open(&store, Table::Events)
        .await
        .expect("open the table");
    log.maintain(chrono::Duration::days(7))
        .await
        .expect("checkpoint the table");
    drop(log);
    writer
        .write(checkpointed + 1, commits)
        .expect("write the log");

    let (open, version, files_now) = best_open(&store, repeat).await;
    assert_eq!(version, commits, "the checkpointed table's version");
    eprintln!(
        "lake_open: checkpoint + {} commits: version {version}, {files_now} files, {:.3} s",
        CHECKPOINT_INTERVAL - 1,
        open.as_secs_f64()
    );
    println!(
        "{}",
        json!({"bench": "lake_open", "name": "baseline: open by replaying the Delta log (no checkpoints)",
               "commits": checkpointed, "seconds": replay.as_secs_f64()})
    );
    println!(
        "{}",
        json!({"bench": "lake_open", "name": format!("cdlake: open with checkpoints every {CHECKPOINT_INTERVAL} commits"),
               "commits": commits, "seconds": open.as_secs_f64(),
               "ratio_to_baseline": open.as_secs_f64() / replay.as_secs_f64().max(1e-9),
               "under_one_second": open < Duration::from_secs(1)})
    );
}
