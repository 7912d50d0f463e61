//! The [`Ingester`]: de-duplication, batching per date partition, and durable commits.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use cdlake_schemas::dead_letter::dead_letters_to_batch;
use cdlake_schemas::event::events_to_batch;
use cdlake_schemas::paths::{DataFilePath, Table};
use cdlake_schemas::span::spans_to_batch;
use cdlake_schemas::store::{Commit, Store};
use cdlake_schemas::{DeadLetter, Event, Origin, Span, cdevents, dead_letters_schema};
use chrono::NaiveDate;
use sha2::{Digest, Sha256};

use crate::envelope::Envelope;
use crate::parquet::{EncodeOptions, encode, read_identity_keys, writer_properties};
use crate::webhooks::Normalised;
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
}

impl Default for IngesterConfig {
    fn default() -> Self {
        Self {
            max_rows: 100_000,
            max_bytes: 64 << 20,
            max_age: Duration::from_secs(2),
            cached_partitions: 64,
            encode: EncodeOptions::default(),
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
    Rejected(String),
    /// Answered but not stored (a webhook `ping`).
    Ignored,
}

/// What a flush committed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlushReport {
    pub events: usize,
    pub spans: usize,
    pub dead_letters: usize,
    /// Files created (paths relative to the store root).
    pub files: Vec<String>,
    /// Files that were already in the store under the same name (a retried flush).
    pub already_committed: usize,
    pub bytes: u64,
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
    last_used: u64,
}

/// Buffers events per date partition and commits them as Parquet files.
#[derive(Debug)]
pub struct Ingester {
    store: Store,
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
                .map_err(cdevents::Rejection)
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
                    reason: rejection.0.clone(),
                    payload: raw.to_vec(),
                });
                Ok(Outcome::Rejected(rejection.0))
            }
        }
    }

    /// Decode and normalise a received [`Envelope`] and push it, or dead-letter it with the
    /// reason (stamped with the time the receiver got it).
    pub async fn ingest_envelope(&mut self, envelope: &Envelope) -> Result<Outcome> {
        let now = now_micros();
        if envelope.origin == Origin::Otlp && envelope.rejected.is_none() {
            return self.ingest_spans(envelope).await;
        }
        match envelope.decode(now) {
            Ok(Normalised::Event(event)) => Ok(match self.push(*event).await? {
                Pushed::Accepted => Outcome::Accepted,
                Pushed::Duplicate => Outcome::Duplicate,
            }),
            Ok(Normalised::Ping) => Ok(Outcome::Ignored),
            Err(rejection) => {
                self.push_dead_letter(DeadLetter {
                    received_at: envelope.received_at,
                    origin: envelope.origin.as_str().to_string(),
                    source: envelope.source.clone(),
                    reason: rejection.0.clone(),
                    payload: envelope.body.to_vec(),
                });
                Ok(Outcome::Rejected(rejection.0))
            }
        }
    }

    /// A batch of spans decoded by an OTLP receiver ([`Envelope::spans`]): `Accepted` when any
    /// span is new, `Duplicate` when all were stored already.
    async fn ingest_spans(&mut self, envelope: &Envelope) -> Result<Outcome> {
        let spans: Vec<Span> = match serde_json::from_slice(&envelope.body) {
            Ok(s) => s,
            Err(e) => {
                let reason = format!("malformed span batch: {e}");
                self.push_dead_letter(DeadLetter {
                    received_at: envelope.received_at,
                    origin: envelope.origin.as_str().to_string(),
                    source: envelope.source.clone(),
                    reason: reason.clone(),
                    payload: envelope.body.to_vec(),
                });
                return Ok(Outcome::Rejected(reason));
            }
        };
        let mut any = false;
        for span in spans {
            any |= self.push_span(span).await? == Pushed::Accepted;
        }
        Ok(if any {
            Outcome::Accepted
        } else {
            Outcome::Duplicate
        })
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
        self.pending_bytes += span.attributes.len() + span.resource_attributes.len() + 256;
        self.oldest.get_or_insert_with(Instant::now);
        self.pending_spans.entry(date).or_default().push(span);
        Ok(Pushed::Accepted)
    }

    /// Buffer an event unless its identity is already stored or buffered.
    pub async fn push(&mut self, event: Event) -> Result<Pushed> {
        let date = event.date();
        let key = event.identity_key();
        if !self.partition(Table::Events, date).await?.keys.insert(key) {
            return Ok(Pushed::Duplicate);
        }
        self.pending_rows += 1;
        self.pending_bytes += event.payload.len() + 256;
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

    /// The identity set of a table's date partition, loaded from the store on first use.
    async fn partition(&mut self, table: Table, date: NaiveDate) -> Result<&mut Partition> {
        self.tick += 1;
        if !self.seen.contains_key(&(table, date)) {
            self.evict();
            let mut keys = KeySet::default();
            for path in self.store.list(&table.partition_prefix(date)).await? {
                if DataFilePath::parse(&path).is_none() {
                    continue;
                }
                let Some(bytes) = self.store.get(&path).await? else {
                    continue;
                };
                let found = tokio::task::spawn_blocking(move || read_identity_keys(bytes, table))
                    .await?
                    .map_err(|source| Error::ReadParquet {
                        path: path.clone(),
                        source,
                    })?;
                keys.extend(found);
            }
            self.seen
                .insert((table, date), Partition { keys, last_used: 0 });
        }
        let p = self.seen.get_mut(&(table, date)).expect("inserted above");
        p.last_used = self.tick;
        Ok(p)
    }

    fn evict(&mut self) {
        while self.seen.len() >= self.config.cached_partitions.max(1) {
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
        let taken = Pending {
            events: std::mem::take(&mut self.pending),
            spans: std::mem::take(&mut self.pending_spans),
            dead: std::mem::take(&mut self.dead),
            bytes: self.pending_bytes,
            oldest: self.oldest,
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
        self.oldest = match (self.oldest, left.oldest) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    /// Where and how [`Pending::commit`] writes.
    pub fn committer(&self) -> Committer {
        Committer {
            store: self.store.clone(),
            encode: self.config.encode.clone(),
        }
    }

    /// Commit everything buffered. On error, what was not committed stays buffered and a
    /// later flush retries it under the same file names.
    pub async fn flush(&mut self) -> Result<FlushReport> {
        let committer = self.committer();
        let mut pending = self.take_pending();
        let result = pending.commit(&committer).await;
        if result.is_err() {
            self.restore(pending);
        }
        result
    }
}

/// The store and encoding a commit uses.
#[derive(Debug, Clone)]
pub struct Committer {
    store: Store,
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
        while let Some((&date, _)) = self.events.first_key_value() {
            let rows = self.events.remove(&date).unwrap_or_default();
            let opts = committer.encode.clone();
            let (rows, encoded) = tokio::task::spawn_blocking(move || {
                let mut rows = rows;
                let encoded = encode_events(date, &mut rows, &opts);
                (rows, encoded)
            })
            .await?;
            let committed = match encoded {
                Ok((path, bytes)) => committer.commit(&path, bytes, &mut report).await,
                Err(e) => Err(e),
            };
            if let Err(e) = committed {
                self.events.insert(date, rows);
                return Err(e);
            }
            report.events += rows.len();
        }
        while let Some((&date, _)) = self.spans.first_key_value() {
            let rows = self.spans.remove(&date).unwrap_or_default();
            let opts = committer.encode.clone();
            let (rows, encoded) = tokio::task::spawn_blocking(move || {
                let mut rows = rows;
                let encoded = encode_spans(date, &mut rows, &opts);
                (rows, encoded)
            })
            .await?;
            let committed = match encoded {
                Ok((path, bytes)) => committer.commit(&path, bytes, &mut report).await,
                Err(e) => Err(e),
            };
            if let Err(e) = committed {
                self.spans.insert(date, rows);
                return Err(e);
            }
            report.spans += rows.len();
        }
        if !self.dead.is_empty() {
            let mut by_date: BTreeMap<NaiveDate, Vec<DeadLetter>> = BTreeMap::new();
            for d in std::mem::take(&mut self.dead) {
                by_date.entry(d.date()).or_default().push(d);
            }
            let mut failed = None;
            for (date, rows) in by_date {
                if failed.is_some() {
                    self.dead.extend(rows);
                    continue;
                }
                let result = match encode_dead_letters(date, &rows, &committer.encode) {
                    Ok((path, bytes)) => committer.commit(&path, bytes, &mut report).await,
                    Err(e) => Err(e),
                };
                match result {
                    Ok(()) => report.dead_letters += rows.len(),
                    Err(e) => {
                        self.dead.extend(rows);
                        failed = Some(e);
                    }
                }
            }
            if let Some(e) = failed {
                return Err(e);
            }
        }
        self.bytes = 0;
        self.oldest = None;
        Ok(report)
    }
}

impl Committer {
    async fn commit(
        &self,
        path: &DataFilePath,
        bytes: Vec<u8>,
        report: &mut FlushReport,
    ) -> Result<()> {
        let span = if tracing::Span::current().is_none() {
            tracing::Span::none()
        } else {
            tracing::info_span!("commit", path = %path, bytes = bytes.len())
        };
        tracing::Instrument::instrument(self.commit_file(path, bytes, report), span).await
    }

    async fn commit_file(
        &self,
        path: &DataFilePath,
        bytes: Vec<u8>,
        report: &mut FlushReport,
    ) -> Result<()> {
        let path = path.to_string();
        let len = bytes.len() as u64;
        let started = Instant::now();
        match self.store.put_if_absent(&path, bytes).await? {
            Commit::Created => {
                tracing::debug!(
                    path,
                    bytes = len,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "Committed file."
                );
                report.bytes += len;
                report.files.push(path);
            }
            Commit::AlreadyExists => {
                tracing::info!(
                    path,
                    "File already committed by an earlier attempt; not writing it again."
                );
                report.already_committed += 1;
            }
        }
        Ok(())
    }
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

/// Sort a partition's rows by time and encode them; the file is named by their identities.
fn encode_events(
    date: NaiveDate,
    rows: &mut [Event],
    opts: &EncodeOptions,
) -> Result<(DataFilePath, Vec<u8>)> {
    rows.sort_by(|a, b| {
        (a.time, &a.event_source, &a.event_id).cmp(&(b.time, &b.event_source, &b.event_id))
    });
    let batch = events_to_batch(rows)?;
    let keys = rows.iter().map(Event::identity_key);
    encode_named(Table::Events, date, keys, batch, "time", opts)
}

/// Sort a partition's spans by start and encode them; the file is named by their identities.
fn encode_spans(
    date: NaiveDate,
    rows: &mut [Span],
    opts: &EncodeOptions,
) -> Result<(DataFilePath, Vec<u8>)> {
    rows.sort_by(|a, b| {
        (a.start, &a.trace_id, &a.span_id).cmp(&(b.start, &b.trace_id, &b.span_id))
    });
    let batch = spans_to_batch(rows)?;
    let keys = rows.iter().map(Span::identity);
    encode_named(Table::Spans, date, keys, batch, "start", opts)
}

fn encode_dead_letters(
    date: NaiveDate,
    rows: &[DeadLetter],
    opts: &EncodeOptions,
) -> Result<(DataFilePath, Vec<u8>)> {
    let mut h = Sha256::new();
    for d in rows {
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
    Ok((path, bytes))
}

#[cfg(test)]
mod tests;
