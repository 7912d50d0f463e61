//! The [`Ingester`]: de-duplication, batching per date partition, and durable commits.
//!
//! A row is accepted when its identity is neither buffered nor in the files of its date
//! partition (loaded once per partition from the Delta log's file list). A flush encodes each
//! partition's rows as one Parquet file named by their identities, puts the files, and commits
//! them as one Delta transaction per table. Before committing, it looks at the table's newest
//! version: rows another writer committed to the same partitions since this ingester loaded
//! them are dropped from the batch (their identities read from those files), and the commit
//! names that version, so a writer that committed in between makes it check again. That keeps
//! every identity unique in the table with any number of writers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use cdlake_schemas::dead_letter::dead_letters_to_batch;
use cdlake_schemas::event::events_to_batch;
use cdlake_schemas::lake::{Change, CommitError, CommitKind, FileIndex, Lake, NewFile};
use cdlake_schemas::paths::{DataFilePath, Table};
use cdlake_schemas::span::spans_to_batch;
use cdlake_schemas::store::{Commit, Store};
use cdlake_schemas::{DeadLetter, Event, Origin, Span, cdevents, dead_letters_schema};
use chrono::NaiveDate;
use sha2::{Digest, Sha256};

use crate::parquet::{EncodeOptions, encode, read_identity_keys, writer_properties};
use crate::{Error, Result};

/// When to flush, and how to encode.
#[derive(Debug, Clone)]
pub struct IngesterConfig {
    /// Flush when this many rows are buffered.
    pub max_rows: usize,
    /// Flush when the buffered payloads reach this many bytes.
    pub max_bytes: usize,
    /// Flush when the oldest buffered row has waited this long.
    pub max_age: Duration,
    /// How many date partitions' identity sets to keep in memory for de-duplication.
    pub cached_partitions: usize,
    pub encode: EncodeOptions,
    /// `[[services]]`: the service of each event pushed, where a rule names it.
    pub services: Vec<cdlake_schemas::services::ServiceRule>,
}

impl Default for IngesterConfig {
    fn default() -> Self {
        Self {
            max_rows: 100_000,
            max_bytes: 64 << 20,
            max_age: Duration::from_secs(2),
            cached_partitions: 64,
            encode: EncodeOptions::default(),
            services: Vec::new(),
        }
    }
}

/// What happened to a pushed event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Buffered; durable after the next successful flush.
    Accepted,
    /// Its identity is already stored or buffered: dropped.
    Duplicate,
}

/// What happened to one raw record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Duplicate,
    /// Dead-lettered with this reason.
    Rejected(cdevents::Rejection),
    /// Answered but not stored (a webhook `ping`).
    Ignored,
}

/// What a flush committed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlushReport {
    pub events: usize,
    pub spans: usize,
    pub dead_letters: usize,
    /// Files committed (paths relative to the store root).
    pub files: Vec<String>,
    /// Files that were already in the store under the same name (put by a retried flush that
    /// had not committed them).
    pub already_committed: usize,
    /// Rows dropped at commit because another writer had committed them first.
    pub duplicates: usize,
    pub bytes: u64,
    /// Files other writers committed to the partitions this flush wrote, with the identities
    /// they hold: the ingester adds them to what it knows ([`Ingester::absorb`]).
    pub foreign: Vec<ForeignFile>,
}

/// A file another writer committed, and the identities in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignFile {
    pub table: Table,
    pub date: NaiveDate,
    pub path: String,
    pub keys: Vec<u128>,
}

/// Hashes identity keys, which are SHA-256 digests already: their low 64 bits are the hash,
/// so a lookup costs no hashing (and no one can choose keys that collide).
#[derive(Debug, Default, Clone, Copy)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u128(&mut self, key: u128) {
        self.0 ^= key as u64;
    }
}

type KeySet = HashSet<u128, std::hash::BuildHasherDefault<KeyHasher>>;

#[derive(Debug, Default)]
struct Partition {
    keys: KeySet,
    /// The files whose identities are in `keys`.
    files: HashSet<String>,
    last_used: u64,
}

/// Buffers events per date partition and commits them as Parquet files.
#[derive(Debug)]
pub struct Ingester {
    store: Store,
    lake: Arc<Lake>,
    config: IngesterConfig,
    seen: HashMap<(Table, NaiveDate), Partition>,
    tick: u64,
    pending: BTreeMap<NaiveDate, Vec<Event>>,
    pending_spans: BTreeMap<NaiveDate, Vec<Span>>,
    dead: Vec<DeadLetter>,
    pending_rows: usize,
    pending_bytes: usize,
    oldest: Option<Instant>,
}

/// Microseconds since the epoch, now.
pub fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

impl Ingester {
    pub fn new(store: Store, config: IngesterConfig) -> Self {
        Self {
            lake: Arc::new(Lake::new(store.clone())),
            store,
            config,
            seen: HashMap::new(),
            tick: 0,
            pending: BTreeMap::new(),
            pending_spans: BTreeMap::new(),
            dead: Vec::new(),
            pending_rows: 0,
            pending_bytes: 0,
            oldest: None,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Parse one raw record and push it, or dead-letter it with the reason.
    /// `source` says where it came from, for the dead-letter row.
    pub async fn ingest(&mut self, raw: &[u8], origin: Origin, source: &str) -> Result<Outcome> {
        let now = now_micros();
        let parsed = cdevents::parse(raw, origin, now).and_then(|e| {
            cdlake_schemas::event::check_time(e.time, now)
                .map(|()| e)
                .map_err(cdevents::Rejection::invalid)
        });
        match parsed {
            Ok(event) => Ok(match self.push(event).await? {
                Pushed::Accepted => Outcome::Accepted,
                Pushed::Duplicate => Outcome::Duplicate,
            }),
            Err(rejection) => {
                self.push_dead_letter(DeadLetter {
                    received_at: now,
                    origin: origin.as_str().to_string(),
                    source: source.to_string(),
                    reason: rejection.message.clone(),
                    payload: raw.to_vec(),
                });
                Ok(Outcome::Rejected(rejection))
            }
        }
    }

    /// Buffer a span unless its identity (trace id, span id) is already stored or buffered.
    pub async fn push_span(&mut self, span: Span) -> Result<Pushed> {
        let date = span.date();
        if !self
            .partition(Table::Spans, date)
            .await?
            .keys
            .insert(span.identity())
        {
            return Ok(Pushed::Duplicate);
        }
        self.pending_rows += 1;
        self.pending_bytes += span_bytes(&span);
        self.oldest.get_or_insert_with(Instant::now);
        self.pending_spans.entry(date).or_default().push(span);
        Ok(Pushed::Accepted)
    }

    /// Buffer an event unless its identity is already stored or buffered.
    pub async fn push(&mut self, mut event: Event) -> Result<Pushed> {
        cdlake_schemas::services::apply(&self.config.services, &mut event);
        let date = event.date();
        let key = event.identity_key();
        if !self.partition(Table::Events, date).await?.keys.insert(key) {
            return Ok(Pushed::Duplicate);
        }
        self.pending_rows += 1;
        self.pending_bytes += event_bytes(&event);
        self.oldest.get_or_insert_with(Instant::now);
        self.pending.entry(date).or_default().push(event);
        Ok(Pushed::Accepted)
    }

    /// Buffer a dead-letter row.
    pub fn push_dead_letter(&mut self, dead_letter: DeadLetter) {
        self.pending_bytes += dead_letter.payload.len() + 256;
        self.oldest.get_or_insert_with(Instant::now);
        self.dead.push(dead_letter);
    }

    /// Date partitions with buffered rows.
    pub fn pending_partitions(&self) -> usize {
        self.pending.len() + self.pending_spans.len()
    }

    /// Rows (events and dead letters) waiting for a flush.
    pub fn pending_rows(&self) -> usize {
        self.pending_rows + self.dead.len()
    }

    /// Whether a limit (rows, bytes, age) is reached.
    pub fn should_flush(&self) -> bool {
        self.pending_rows() >= self.config.max_rows
            || self.pending_bytes >= self.config.max_bytes
            || self
                .oldest
                .is_some_and(|t| t.elapsed() >= self.config.max_age)
    }

    /// The identity set of a table's date partition, loaded from the files the table's log
    /// lists on first use.
    async fn partition(&mut self, table: Table, date: NaiveDate) -> Result<&mut Partition> {
        self.tick += 1;
        if !self.seen.contains_key(&(table, date)) {
            self.evict();
            // A recent index is enough: what another writer committed since is checked at
            // commit time. One refresh serves a batch spread over many dates.
            let log = self.lake.table(table).await?;
            let index = log.index_within(Duration::from_secs(1)).await?;
            let mut partition = Partition::default();
            for file in index.files(date) {
                let path = file.path.to_string();
                partition
                    .keys
                    .extend(read_keys(&self.store, table, &path).await?);
                partition.files.insert(path);
            }
            self.seen.insert((table, date), partition);
        }
        let p = self.seen.get_mut(&(table, date)).expect("inserted above");
        p.last_used = self.tick;
        Ok(p)
    }

    /// Learn what a flush found other writers had committed, so later duplicates of those rows
    /// are dropped on arrival; and the files it committed itself. Rows buffered while that
    /// flush ran were checked without those identities: their duplicates are dropped here,
    /// since the next flush counts the file as known and does not read it again.
    pub fn absorb(&mut self, report: &FlushReport) {
        for f in &report.foreign {
            let keys: KeySet = f.keys.iter().copied().collect();
            let dropped = match f.table {
                Table::Events => drop_keys(self.pending.get_mut(&f.date), &keys, event_bytes),
                Table::Spans => drop_keys(self.pending_spans.get_mut(&f.date), &keys, span_bytes),
                Table::DeadLetters => (0, 0),
            };
            self.pending_rows -= dropped.0;
            self.pending_bytes = self.pending_bytes.saturating_sub(dropped.1);
            if let Some(p) = self.seen.get_mut(&(f.table, f.date)) {
                p.keys.extend(keys);
                p.files.insert(f.path.clone());
            }
        }
        self.pending.retain(|_, rows| !rows.is_empty());
        self.pending_spans.retain(|_, rows| !rows.is_empty());
        for path in &report.files {
            if let Some(file) = DataFilePath::parse(path)
                && let Some(p) = self.seen.get_mut(&(file.table, file.date))
            {
                p.files.insert(path.clone());
            }
        }
    }

    fn evict(&mut self) {
        // Partitions with buffered rows stay: only the others count against the cache, and
        // nothing is scanned while there is room (a batch spread over thousands of dates
        // would otherwise scan the cache once per date).
        let limit =
            self.config.cached_partitions.max(1) + self.pending.len() + self.pending_spans.len();
        while self.seen.len() >= limit {
            let victim = self
                .seen
                .iter()
                .filter(|((t, d), _)| match t {
                    Table::Spans => !self.pending_spans.contains_key(d),
                    _ => !self.pending.contains_key(d),
                })
                .min_by_key(|(_, p)| p.last_used)
                .map(|(k, _)| *k);
            match victim {
                Some(k) => self.seen.remove(&k),
                None => break,
            };
        }
    }

    /// Whether the row or byte limit is reached: a flush is due and, while one is already
    /// running, the caller should stop taking input.
    pub fn is_full(&self) -> bool {
        self.pending_rows() >= self.config.max_rows || self.pending_bytes >= self.config.max_bytes
    }

    /// Take everything buffered out, to be committed ([`Pending::commit`]) while this ingester
    /// goes on buffering. Identities stay known, so duplicates of taken rows are still dropped.
    pub fn take_pending(&mut self) -> Pending {
        let mut known = HashMap::new();
        for (table, dates) in [
            (
                Table::Events,
                self.pending.keys().copied().collect::<Vec<_>>(),
            ),
            (Table::Spans, self.pending_spans.keys().copied().collect()),
        ] {
            for date in dates {
                if let Some(p) = self.seen.get(&(table, date)) {
                    known.insert((table, date), p.files.clone());
                }
            }
        }
        let taken = Pending {
            events: std::mem::take(&mut self.pending),
            spans: std::mem::take(&mut self.pending_spans),
            dead: std::mem::take(&mut self.dead),
            bytes: self.pending_bytes,
            oldest: self.oldest,
            known,
        };
        self.pending_rows = 0;
        self.pending_bytes = 0;
        self.oldest = None;
        taken
    }

    /// Put back what a failed [`Pending::commit`] left, merged with what was buffered since.
    pub fn restore(&mut self, left: Pending) {
        for (date, rows) in left.events {
            self.pending_rows += rows.len();
            self.pending.entry(date).or_default().extend(rows);
        }
        for (date, rows) in left.spans {
            self.pending_rows += rows.len();
            self.pending_spans.entry(date).or_default().extend(rows);
        }
        self.dead.extend(left.dead);
        self.pending_bytes += left.bytes;
        for (key, files) in left.known {
            if let Some(p) = self.seen.get_mut(&key) {
                p.files.extend(files);
            }
        }
        self.oldest = match (self.oldest, left.oldest) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    /// Where and how [`Pending::commit`] writes.
    pub fn committer(&self) -> Committer {
        Committer {
            store: self.store.clone(),
            lake: self.lake.clone(),
            encode: self.config.encode.clone(),
        }
    }

    /// Checkpoint each table this ingester opened (committed to, or checked a commit against)
    /// whose log has grown [`cdlake_schemas::lake::CHECKPOINT_INTERVAL`] commits since its last
    /// checkpoint, so opening it reads the checkpoint and the few commits after it (what a
    /// one-off writer does when it is done; `ingest` and `standalone` checkpoint in their
    /// background maintenance). The tables checkpointed.
    pub async fn checkpoint_if_due(&self) -> Result<Vec<Table>> {
        Ok(self.lake.checkpoint_if_due().await?)
    }

    /// Commit everything buffered. On error, what was not committed stays buffered and a
    /// later flush retries it under the same file names.
    pub async fn flush(&mut self) -> Result<FlushReport> {
        let committer = self.committer();
        let mut pending = self.take_pending();
        let result = pending.commit(&committer).await;
        match &result {
            Ok(report) => self.absorb(report),
            Err(_) => self.restore(pending),
        }
        result
    }
}

/// The store, its tables and the encoding a commit uses.
#[derive(Debug, Clone)]
pub struct Committer {
    store: Store,
    lake: Arc<Lake>,
    encode: EncodeOptions,
}

/// Rows taken out of an [`Ingester`] ([`Ingester::take_pending`]) and not yet committed.
#[derive(Debug, Default)]
pub struct Pending {
    events: BTreeMap<NaiveDate, Vec<Event>>,
    spans: BTreeMap<NaiveDate, Vec<Span>>,
    dead: Vec<DeadLetter>,
    bytes: usize,
    oldest: Option<Instant>,
    /// The files whose identities the ingester knew, per partition, when the rows were taken.
    known: HashMap<(Table, NaiveDate), HashSet<String>>,
}

impl Pending {
    /// Rows (events, spans and dead letters) left to commit.
    pub fn rows(&self) -> usize {
        self.events.values().map(Vec::len).sum::<usize>()
            + self.spans.values().map(Vec::len).sum::<usize>()
            + self.dead.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.spans.is_empty() && self.dead.is_empty()
    }

    /// Commit every row, one file per table and date. What is committed is removed, so on
    /// error `self` holds exactly the rest, and committing it again writes the same names.
    pub async fn commit(&mut self, committer: &Committer) -> Result<FlushReport> {
        // A flush of spans alone is not traced: cdlake sending its own traces to itself would
        // otherwise trace the storing of its traces, for ever.
        let span = if self.events.is_empty() && self.dead.is_empty() {
            tracing::Span::none()
        } else {
            tracing::info_span!("flush", rows = self.rows())
        };
        tracing::Instrument::instrument(self.commit_all(committer), span).await
    }

    async fn commit_all(&mut self, committer: &Committer) -> Result<FlushReport> {
        let mut report = FlushReport::default();
        if !self.events.is_empty() {
            let rows = std::mem::take(&mut self.events);
            match commit_table(committer, &mut self.known, rows, &mut report, encode_events).await {
                Ok(n) => report.events += n,
                Err((rows, e)) => {
                    self.events = rows;
                    return Err(e);
                }
            }
        }
        if !self.spans.is_empty() {
            let rows = std::mem::take(&mut self.spans);
            match commit_table(committer, &mut self.known, rows, &mut report, encode_spans).await {
                Ok(n) => report.spans += n,
                Err((rows, e)) => {
                    self.spans = rows;
                    return Err(e);
                }
            }
        }
        if !self.dead.is_empty() {
            let mut by_date: BTreeMap<NaiveDate, Vec<DeadLetter>> = BTreeMap::new();
            for d in std::mem::take(&mut self.dead) {
                by_date.entry(d.date()).or_default().push(d);
            }
            match commit_table(
                committer,
                &mut self.known,
                by_date,
                &mut report,
                encode_dead,
            )
            .await
            {
                Ok(n) => report.dead_letters += n,
                Err((rows, e)) => {
                    self.dead = rows.into_values().flatten().collect();
                    return Err(e);
                }
            }
        }
        self.bytes = 0;
        self.oldest = None;
        self.known.clear();
        Ok(report)
    }
}

/// A row of a table a flush writes.
pub(crate) trait Row: Send + 'static {
    const TABLE: Table;
    /// The row's identity, when the table has one.
    fn key(&self) -> Option<u128>;
}

impl Row for Event {
    const TABLE: Table = Table::Events;
    fn key(&self) -> Option<u128> {
        Some(self.identity_key())
    }
}

impl Row for Span {
    const TABLE: Table = Table::Spans;
    fn key(&self) -> Option<u128> {
        Some(self.identity())
    }
}

impl Row for DeadLetter {
    const TABLE: Table = Table::DeadLetters;
    fn key(&self) -> Option<u128> {
        None
    }
}

/// What a buffered event counts for against the byte limit.
fn event_bytes(e: &Event) -> usize {
    e.payload.len() + 256
}

/// What a buffered span counts for against the byte limit.
fn span_bytes(s: &Span) -> usize {
    s.attributes.len() + s.resource_attributes.len() + 256
}

/// Drop the buffered rows of one partition whose identities are in `keys`; how many, and the
/// bytes they counted for (by `bytes`).
fn drop_keys<R: Row>(
    rows: Option<&mut Vec<R>>,
    keys: &KeySet,
    bytes: impl Fn(&R) -> usize,
) -> (usize, usize) {
    let Some(rows) = rows else {
        return (0, 0);
    };
    let (mut n, mut b) = (0, 0);
    rows.retain(|r| match r.key() {
        Some(k) if keys.contains(&k) => {
            n += 1;
            b += bytes(r);
            false
        }
        _ => true,
    });
    (n, b)
}

/// An encoder of one partition's rows: the file, its path and its statistics.
type Encoder<R> = fn(NaiveDate, &mut [R], &EncodeOptions) -> Result<Encoded>;

/// One partition's rows encoded.
pub(crate) struct Encoded {
    path: DataFilePath,
    bytes: Vec<u8>,
    rows: u64,
    time_range: Option<(i64, i64)>,
}

/// How often a commit is tried again after another writer committed first.
const COMMIT_ATTEMPTS: usize = 50;

/// Commit `rows` (by date) to their table as one transaction: drop what other writers
/// committed to the same partitions meanwhile, encode and put a file per partition, commit.
/// On error the rows come back.
async fn commit_table<R: Row>(
    committer: &Committer,
    known: &mut HashMap<(Table, NaiveDate), HashSet<String>>,
    mut rows: BTreeMap<NaiveDate, Vec<R>>,
    report: &mut FlushReport,
    encode: Encoder<R>,
) -> Result<usize, (BTreeMap<NaiveDate, Vec<R>>, Error)> {
    let table = R::TABLE;
    let log = match committer.lake.table(table).await {
        Ok(log) => log,
        Err(e) => return Err((rows, e.into())),
    };
    let mut encoded: HashMap<NaiveDate, (usize, Encoded)> = HashMap::new();
    let mut put_done: HashSet<String> = HashSet::new();
    for attempt in 0.. {
        let started = Instant::now();
        let index = match log.refresh().await {
            Ok(index) => index,
            Err(e) => return Err((rows, e.into())),
        };
        if let Err(e) = drop_foreign(committer, table, &index, known, &mut rows, report).await {
            return Err((rows, e));
        }
        let checked = started.elapsed();
        let mut files = Vec::new();
        match encode_all(committer, &mut rows, &mut encoded, encode).await {
            Ok(()) => {}
            Err(e) => return Err((rows, e)),
        }
        tracing::debug!(
            table = table.dir(),
            partitions = rows.len(),
            checked_ms = checked.as_millis() as u64,
            encoded_ms = (started.elapsed() - checked).as_millis() as u64,
            "Checked and encoded."
        );
        for (date, (_, e)) in &encoded {
            if rows.get(date).is_some_and(|r| !r.is_empty()) {
                files.push(NewFile {
                    path: e.path.clone(),
                    size: e.bytes.len() as u64,
                    rows: e.rows,
                    time_range: e.time_range,
                });
            }
        }
        if files.is_empty() {
            return Ok(0);
        }
        let put: Vec<(String, Vec<u8>)> = files
            .iter()
            .filter(|f| !put_done.contains(&f.path.to_string()))
            .filter_map(|f| {
                let (_, e) = encoded.get(&f.path.date)?;
                Some((e.path.to_string(), e.bytes.clone()))
            })
            .collect();
        let names: Vec<String> = put.iter().map(|(p, _)| p.clone()).collect();
        match put_all(&committer.store, put).await {
            Ok(already) => report.already_committed += already,
            Err(e) => return Err((rows, e)),
        }
        put_done.extend(names);
        let change = Change {
            read_version: index.version,
            kind: CommitKind::Append,
            add: files.clone(),
            remove: Vec::new(),
        };
        let span = if tracing::Span::current().is_none() {
            tracing::Span::none()
        } else {
            tracing::info_span!("commit", table = table.dir(), files = files.len())
        };
        let committed = tracing::Instrument::instrument(log.commit(change), span).await;
        match committed {
            Ok(version) => {
                tracing::debug!(
                    table = table.dir(),
                    version,
                    files = files.len(),
                    "Committed."
                );
                let n = rows.values().map(Vec::len).sum();
                for f in files {
                    report.bytes += f.size;
                    report.files.push(f.path.to_string());
                }
                return Ok(n);
            }
            Err(CommitError::Conflict { latest, .. }) if attempt < COMMIT_ATTEMPTS => {
                tracing::debug!(
                    table = table.dir(),
                    latest,
                    "Another writer committed first; checking its rows and retrying."
                );
                tokio::time::sleep(Duration::from_millis(5 * (attempt as u64 % 20))).await;
            }
            Err(e) => return Err((rows, Error::Commit(Box::new(e)))),
        }
    }
    unreachable!("the loop returns")
}

/// Drop rows whose identities are in files other writers committed to the same partitions
/// (files the ingester did not know when it took the rows), and remember those files.
async fn drop_foreign<R: Row>(
    committer: &Committer,
    table: Table,
    index: &FileIndex,
    known: &mut HashMap<(Table, NaiveDate), HashSet<String>>,
    rows: &mut BTreeMap<NaiveDate, Vec<R>>,
    report: &mut FlushReport,
) -> Result<()> {
    if matches!(table, Table::DeadLetters) {
        return Ok(());
    }
    for (date, partition) in rows.iter_mut() {
        let seen = known.entry((table, *date)).or_default();
        for file in index.files(*date) {
            let path = file.path.to_string();
            if seen.contains(&path) {
                continue;
            }
            let keys = read_keys(&committer.store, table, &path).await?;
            let set: KeySet = keys.iter().copied().collect();
            let before = partition.len();
            partition.retain(|r| r.key().is_none_or(|k| !set.contains(&k)));
            report.duplicates += before - partition.len();
            seen.insert(path.clone());
            report.foreign.push(ForeignFile {
                table,
                date: *date,
                path,
                keys,
            });
        }
    }
    rows.retain(|_, r| !r.is_empty());
    Ok(())
}

/// Encode every partition whose rows changed since it was last encoded (in parallel).
async fn encode_all<R: Row>(
    committer: &Committer,
    rows: &mut BTreeMap<NaiveDate, Vec<R>>,
    encoded: &mut HashMap<NaiveDate, (usize, Encoded)>,
    encode: Encoder<R>,
) -> Result<()> {
    encoded.retain(|date, (n, _)| rows.get(date).is_some_and(|r| r.len() == *n));
    let todo: Vec<NaiveDate> = rows
        .keys()
        .filter(|d| !encoded.contains_key(*d))
        .copied()
        .collect();
    if todo.is_empty() {
        return Ok(());
    }
    let workers = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let mut chunks: Vec<Vec<(NaiveDate, Vec<R>)>> = (0..workers).map(|_| Vec::new()).collect();
    for (i, date) in todo.iter().enumerate() {
        let partition = rows.remove(date).unwrap_or_default();
        chunks[i % workers].push((*date, partition));
    }
    let mut tasks = Vec::new();
    for chunk in chunks.into_iter().filter(|c| !c.is_empty()) {
        let opts = committer.encode.clone();
        tasks.push(tokio::task::spawn_blocking(move || {
            let mut out = Vec::with_capacity(chunk.len());
            let mut failed = None;
            for (date, mut partition) in chunk {
                let result = if failed.is_some() {
                    None
                } else {
                    match encode(date, &mut partition, &opts) {
                        Ok(e) => Some(e),
                        Err(e) => {
                            failed = Some(e);
                            None
                        }
                    }
                };
                out.push((date, partition, result));
            }
            (out, failed)
        }));
    }
    let mut error = None;
    for task in tasks {
        let (out, failed) = task.await?;
        for (date, partition, result) in out {
            if let Some(e) = result {
                encoded.insert(date, (partition.len(), e));
            }
            rows.insert(date, partition);
        }
        if error.is_none() {
            error = failed;
        }
    }
    match error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Put files (create-if-absent), many at once: a batch spread over thousands of partitions is
/// written in parallel, not one fsync after another. Returns how many were already there.
async fn put_all(store: &Store, files: Vec<(String, Vec<u8>)>) -> Result<usize> {
    use futures::StreamExt;
    let results: Vec<Result<Commit>> = futures::stream::iter(files)
        .map(|(path, bytes)| {
            let store = store.clone();
            async move {
                let started = Instant::now();
                let len = bytes.len();
                let commit = store.put_if_absent(&path, bytes).await?;
                tracing::debug!(
                    path,
                    bytes = len,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "Put a data file."
                );
                Ok(commit)
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let mut already = 0;
    for r in results {
        if r? == Commit::AlreadyExists {
            already += 1;
        }
    }
    Ok(already)
}

/// The identity keys in a file of `table`.
pub(crate) async fn read_keys(store: &Store, table: Table, path: &str) -> Result<Vec<u128>> {
    let Some(bytes) = store.get(path).await? else {
        return Ok(Vec::new());
    };
    let path = path.to_string();
    tokio::task::spawn_blocking(move || {
        read_identity_keys(bytes, table).map_err(|source| Error::ReadParquet { path, source })
    })
    .await?
}

/// The hex digest of a set of identity keys (in any order): the name of the file holding
/// those rows, and the message id of a span batch.
pub(crate) fn identity_digest(keys: impl Iterator<Item = u128>) -> String {
    let mut keys: Vec<u128> = keys.collect();
    keys.sort_unstable();
    let mut h = Sha256::new();
    for k in keys {
        h.update(k.to_le_bytes());
    }
    hex::encode(&h.finalize()[..16])
}

/// Encode one partition's rows of `table` (already sorted by `sort_column`) as a file named by
/// their identities.
fn encode_named(
    table: Table,
    date: NaiveDate,
    keys: impl Iterator<Item = u128>,
    batch: RecordBatch,
    sort_column: &str,
    opts: &EncodeOptions,
) -> Result<(DataFilePath, Vec<u8>)> {
    let path = DataFilePath::new(table, date, identity_digest(keys));
    let schema = batch.schema();
    let bytes = encode(
        &schema,
        &[batch],
        writer_properties(&schema, sort_column, opts),
    )
    .map_err(|source| Error::EncodeParquet {
        path: path.to_string(),
        source,
    })?;
    Ok((path, bytes))
}

/// Sort rows as an `events` file holds them: by time, then identity.
pub(crate) fn sort_events(rows: &mut [Event]) {
    rows.sort_by(|a, b| {
        (a.time, &a.event_source, &a.event_id).cmp(&(b.time, &b.event_source, &b.event_id))
    });
}

/// Sort a partition's rows by time and encode them; the file is named by their identities.
fn encode_events(date: NaiveDate, rows: &mut [Event], opts: &EncodeOptions) -> Result<Encoded> {
    sort_events(rows);
    let batch = events_to_batch(rows)?;
    let keys = rows.iter().map(Event::identity_key);
    let (path, bytes) = encode_named(Table::Events, date, keys, batch, "time", opts)?;
    Ok(Encoded {
        path,
        bytes,
        rows: rows.len() as u64,
        time_range: rows.first().zip(rows.last()).map(|(a, b)| (a.time, b.time)),
    })
}

/// Sort a partition's spans by start and encode them; the file is named by their identities.
fn encode_spans(date: NaiveDate, rows: &mut [Span], opts: &EncodeOptions) -> Result<Encoded> {
    rows.sort_by(|a, b| {
        (a.start, &a.trace_id, &a.span_id).cmp(&(b.start, &b.trace_id, &b.span_id))
    });
    let batch = spans_to_batch(rows)?;
    let keys = rows.iter().map(Span::identity);
    let (path, bytes) = encode_named(Table::Spans, date, keys, batch, "start", opts)?;
    Ok(Encoded {
        path,
        bytes,
        rows: rows.len() as u64,
        time_range: rows
            .first()
            .zip(rows.last())
            .map(|(a, b)| (a.start, b.start)),
    })
}

/// Dead letters of one date, in arrival order, named by a digest of their content.
fn encode_dead(date: NaiveDate, rows: &mut [DeadLetter], opts: &EncodeOptions) -> Result<Encoded> {
    rows.sort_by_key(|d| d.received_at);
    let mut h = Sha256::new();
    for d in rows.iter() {
        h.update(d.received_at.to_le_bytes());
        for part in [
            d.origin.as_bytes(),
            d.source.as_bytes(),
            d.reason.as_bytes(),
            &d.payload,
        ] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
    }
    let path = DataFilePath::new(Table::DeadLetters, date, hex::encode(&h.finalize()[..16]));
    let schema = dead_letters_schema();
    let batch = dead_letters_to_batch(rows)?;
    let bytes = encode(
        &schema,
        &[batch],
        writer_properties(&schema, "received_at", opts),
    )
    .map_err(|source| Error::EncodeParquet {
        path: path.to_string(),
        source,
    })?;
    Ok(Encoded {
        path,
        bytes,
        rows: rows.len() as u64,
        time_range: rows
            .first()
            .zip(rows.last())
            .map(|(a, b)| (a.received_at, b.received_at)),
    })
}

#[cfg(test)]
mod tests;
