//! `cdlake rebuild --renormalise`: run today's normalisers again over the raw payloads stored
//! in `events`, so that an improved normaliser (a new mapping, a fixed time, one fact one row)
//! fixes the history too.
//!
//! Each date partition is read whole; every GitHub, GitLab and CDEvents row is normalised again
//! from its payload, with its `ingested_at` and with its `event_id` standing in for the
//! delivery id it came with ([`crate::sources::renormalise`]). The files holding a row that
//! comes out different are replaced in one Delta transaction (`dataChange = true`, a Delta
//! `UPDATE`): by one file of their rows as they are now, and, for rows whose time moved to
//! another day, a file in that day's partition. Uniqueness holds throughout: a row whose new
//! identity another row has (the same fact by webhook and by backfill, stored under the
//! delivery id and under the fact) is dropped; the row already under that identity stays, and
//! of rewritten rows that now share one, the one ingested first.
//!
//! Safe while ingest runs: the commit names the table version it read; when another writer
//! committed first, the files it added to the partitions concerned are checked for the new
//! identities, and the partition is done again when one collides or one of the replaced files
//! is gone (a compaction). Rows whose payload the normaliser now rejects stay as they are and
//! are counted. Running it again rewrites nothing: every row then normalises to itself, so an
//! interrupted run is resumed by running it again. The other sources (the alerting tools split
//! a delivery into several rows) are left as they are.

use std::collections::{BTreeMap, HashSet};

use bytes::Bytes;
use cdlake_schemas::Event;
use cdlake_schemas::event::{batch_to_events, events_to_batch};
use cdlake_schemas::lake::{
    ActiveFile, Change, CommitError, CommitKind, FileIndex, NewFile, TableLog,
};
use cdlake_schemas::paths::{DataFilePath, Table};
use cdlake_schemas::store::Store;
use chrono::NaiveDate;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::ingester::{read_keys, sort_events};
use crate::parquet::{EncodeOptions, encode, writer_properties};
use crate::{Error, Result};

/// The file id prefix of a rewrite's outputs.
pub const OUTPUT_PREFIX: &str = "rewrite-";

/// How often a partition is read again after other writers changed it meanwhile.
const ATTEMPTS: usize = 10;

/// What a renormalisation did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct RenormaliseReport {
    /// Date partitions read.
    pub partitions: usize,
    /// Of which rewritten (one transaction each).
    pub rewritten: usize,
    /// Rows read.
    pub rows: u64,
    /// Rows the normalisers now make differently.
    pub changed: u64,
    /// Of which whose time moved them to another date partition.
    pub moved: u64,
    /// Rows dropped because their new identity was stored already (one fact, one row).
    pub duplicates: u64,
    /// Rows whose payload the normalisers now reject: kept as they are.
    pub rejected: u64,
    /// Partitions other writers kept changing: left for the next run.
    pub busy: usize,
}

/// Renormalise every date partition of `events` from `from` (all when `None`) on, under
/// `rules` (their `[[services]]`); `progress(done, total)` after each partition.
pub async fn renormalise(
    store: &Store,
    log: &TableLog,
    from: Option<NaiveDate>,
    rules: &crate::sources::Rules,
    encode_opts: &EncodeOptions,
    mut progress: impl FnMut(usize, usize),
) -> Result<RenormaliseReport> {
    let index = log.refresh().await?;
    let dates: Vec<NaiveDate> = index
        .dates()
        .filter(|d| from.is_none_or(|f| *d >= f))
        .collect();
    let mut report = RenormaliseReport::default();
    for (i, date) in dates.iter().enumerate() {
        renormalise_partition(store, log, *date, rules, encode_opts, &mut report).await?;
        progress(i + 1, dates.len());
    }
    Ok(report)
}

/// The outcome of one attempt at a partition.
enum Attempt {
    Done(RenormaliseReport),
    /// Another writer changed what this attempt read: read again.
    Again,
}

async fn renormalise_partition(
    store: &Store,
    log: &TableLog,
    date: NaiveDate,
    rules: &crate::sources::Rules,
    encode_opts: &EncodeOptions,
    report: &mut RenormaliseReport,
) -> Result<()> {
    for _ in 0..ATTEMPTS {
        match attempt(store, log, date, rules, encode_opts).await? {
            Attempt::Done(r) => {
                report.partitions += 1;
                report.rewritten += r.rewritten;
                report.rows += r.rows;
                report.changed += r.changed;
                report.moved += r.moved;
                report.duplicates += r.duplicates;
                report.rejected += r.rejected;
                return Ok(());
            }
            Attempt::Again => continue,
        }
    }
    tracing::warn!(%date, "Other writers kept changing this partition; run the renormalisation again to finish it.");
    report.partitions += 1;
    report.busy += 1;
    Ok(())
}

/// Read the partition, normalise its rows again and, if any changed, replace the files that
/// hold them.
async fn attempt(
    store: &Store,
    log: &TableLog,
    date: NaiveDate,
    rules: &crate::sources::Rules,
    encode_opts: &EncodeOptions,
) -> Result<Attempt> {
    let index = log.refresh().await?;
    let mut r = RenormaliseReport::default();
    let mut untouched_keys = HashSet::new();
    let mut touched: Vec<ActiveFile> = Vec::new();
    let mut rows: Vec<Event> = Vec::new();
    for file in index.files(date) {
        let path = file.path.to_string();
        // Listed but gone: vacuumed after a compaction committed meanwhile.
        let Some(bytes) = store.get(&path).await? else {
            return Ok(Attempt::Again);
        };
        let stored = read_events(bytes, &path)?;
        r.rows += stored.len() as u64;
        let mut changed = 0;
        let now: Vec<Event> = stored
            .into_iter()
            .map(|row| match crate::sources::renormalise(&row, rules) {
                Some(Ok(new)) if new != row => {
                    changed += 1;
                    new
                }
                Some(Err(_)) => {
                    r.rejected += 1;
                    row
                }
                _ => row,
            })
            .collect();
        if changed == 0 {
            untouched_keys.extend(now.iter().map(Event::identity_key));
        } else {
            r.changed += changed;
            touched.push(file.clone());
            rows.extend(now);
        }
    }
    if touched.is_empty() {
        return Ok(Attempt::Done(r));
    }

    // One row per identity: what the untouched files hold stays, and of the rest the copy
    // ingested first.
    rows.sort_by_key(|e| e.ingested_at);
    let mut seen = untouched_keys;
    let before = rows.len();
    rows.retain(|e| seen.insert(e.identity_key()));
    r.duplicates += (before - rows.len()) as u64;
    let mut by_date: BTreeMap<NaiveDate, Vec<Event>> = BTreeMap::new();
    for row in rows {
        by_date.entry(row.date()).or_default().push(row);
    }
    // Rows that moved to another day: not if that day holds their identity already.
    for (other, moved) in by_date.iter_mut().filter(|(d, _)| **d != date) {
        let stored = keys_of(store, index.files(*other)).await?;
        let before = moved.len();
        moved.retain(|e| !stored.contains(&e.identity_key()));
        r.duplicates += (before - moved.len()) as u64;
        r.moved += moved.len() as u64;
    }
    by_date.retain(|_, rows| !rows.is_empty());

    // The outputs, named by their content: a retry that computes other rows (another writer
    // added one of their identities meanwhile) writes another file, and one that computes the
    // same rows the same file. Put unconditionally: the same bytes again, and a fresh
    // modification time, so a vacuum does not take a file of an earlier, crashed attempt.
    let mut added = Vec::new();
    let mut output_keys: BTreeMap<NaiveDate, HashSet<u128>> = BTreeMap::new();
    for (day, mut rows) in by_date {
        sort_events(&mut rows);
        output_keys
            .entry(day)
            .or_default()
            .extend(rows.iter().map(Event::identity_key));
        let batch = events_to_batch(&rows)?;
        let schema = batch.schema();
        let bytes = encode(
            &schema,
            &[batch],
            writer_properties(&schema, "time", encode_opts),
        )
        .map_err(|source| Error::EncodeParquet {
            path: format!("{OUTPUT_PREFIX}… of {day}"),
            source,
        })?;
        let id = format!(
            "{OUTPUT_PREFIX}{}",
            hex::encode(&Sha256::digest(&bytes)[..16])
        );
        let path = DataFilePath::new(Table::Events, day, id);
        let size = bytes.len() as u64;
        store.put(&path.to_string(), bytes).await?;
        added.push(NewFile {
            path,
            size,
            rows: rows.len() as u64,
            time_range: rows.first().zip(rows.last()).map(|(a, b)| (a.time, b.time)),
        });
    }

    let mut read = index;
    for _ in 0..ATTEMPTS {
        let change = Change {
            read_version: read.version,
            kind: CommitKind::Rewrite,
            add: added.clone(),
            remove: touched.clone(),
        };
        match log.commit(change).await {
            Ok(version) => {
                tracing::info!(%date, version, files = touched.len(), changed = r.changed, duplicates = r.duplicates, moved = r.moved, "Renormalised.");
                r.rewritten = 1;
                return Ok(Attempt::Done(r));
            }
            Err(CommitError::Conflict { .. }) => {
                let now = log.refresh().await?;
                if !still_valid(store, &read, &now, date, &touched, &output_keys).await? {
                    return Ok(Attempt::Again);
                }
                read = now;
            }
            Err(e) => return Err(Error::Commit(Box::new(e))),
        }
    }
    Ok(Attempt::Again)
}

/// Whether a rewrite checked against `read` may commit on `now`: the files it replaces are
/// all still there, and no file added since to a partition it writes holds one of its rows'
/// identities.
async fn still_valid(
    store: &Store,
    read: &FileIndex,
    now: &FileIndex,
    date: NaiveDate,
    touched: &[ActiveFile],
    output_keys: &BTreeMap<NaiveDate, HashSet<u128>>,
) -> Result<bool> {
    let active: HashSet<&DataFilePath> = now.files(date).iter().map(|f| &f.path).collect();
    if !touched.iter().all(|f| active.contains(&f.path)) {
        return Ok(false);
    }
    for (day, keys) in output_keys {
        let before: HashSet<&DataFilePath> = read.files(*day).iter().map(|f| &f.path).collect();
        let new: Vec<ActiveFile> = now
            .files(*day)
            .iter()
            .filter(|f| !before.contains(&f.path))
            .cloned()
            .collect();
        if keys_of(store, &new).await?.iter().any(|k| keys.contains(k)) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The identity keys of the rows of `files`.
async fn keys_of(store: &Store, files: &[ActiveFile]) -> Result<HashSet<u128>> {
    let mut keys = HashSet::new();
    for f in files {
        keys.extend(read_keys(store, Table::Events, &f.path.to_string()).await?);
    }
    Ok(keys)
}

/// Every row of an `events` file.
fn read_events(bytes: Vec<u8>, path: &str) -> Result<Vec<Event>> {
    let read_err = |source| Error::ReadParquet {
        path: path.to_string(),
        source,
    };
    let reader = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(bytes))
        .and_then(|b| b.build())
        .map_err(read_err)?;
    let mut rows = Vec::new();
    for batch in reader {
        rows.extend(batch_to_events(&batch?)?);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests;
