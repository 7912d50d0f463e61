//! Compaction: merge a date partition's small files into files of a target size, sorted by
//! time and de-duplicated, atomically for readers.
//!
//! The protocol (see [`cdlake_schemas::compaction`]) has three steps, each safe to crash after:
//! 1. write the outputs `compact-<id>-<n>.parquet` (invisible: no manifest yet);
//! 2. commit the manifest naming inputs and outputs (the atomic switch);
//! 3. after a grace period longer than any query, delete the inputs, then manifests whose
//!    outputs have themselves been compacted away, and outputs a crash left without a manifest.
//!
//! One compactor works on a partition at a time: it holds a lease object under
//! `_cdlake/locks/` (create-if-absent, with an expiry so a crashed holder does not block
//! compaction for ever). Merging streams the inputs (each already sorted by time) through a
//! k-way merge, so memory stays at a batch per input plus the output being encoded.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashSet};
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef, TimestampMicrosecondType};
use bytes::Bytes;
use cdlake_schemas::compaction::{MANIFEST_DIR, Manifest, OUTPUT_PREFIX, Visibility};
use cdlake_schemas::paths::{DataFilePath, Table};
use cdlake_schemas::store::{Commit, Store};
use chrono::{DateTime, NaiveDate, Utc};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::parquet::{EncodeOptions, writer_properties};
use crate::{Error, Result};

/// How to compact.
#[derive(Debug, Clone)]
pub struct CompactOptions {
    /// Size an output file grows to before another is started (default 128 MiB).
    pub target_bytes: u64,
    /// Compact a partition once it has at least this many files below half the target.
    pub min_files: usize,
    /// Merge at most this many files in one output group (bounds memory).
    pub max_inputs: usize,
    /// How long merged inputs stay readable after their replacement is committed: longer than
    /// the longest query (`limits.query_timeout_secs`).
    pub grace: Duration,
    /// How long a compactor's lease on a partition lasts.
    pub lease: Duration,
    pub encode: EncodeOptions,
}

impl Default for CompactOptions {
    fn default() -> Self {
        Self {
            target_bytes: 128 << 20,
            min_files: 4,
            max_inputs: 256,
            grace: Duration::from_secs(600),
            lease: Duration::from_secs(1800),
            encode: EncodeOptions::default(),
        }
    }
}

/// What a compaction run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CompactReport {
    /// Partitions that got new files.
    pub partitions: usize,
    /// Partitions skipped because another compactor holds them.
    pub busy: usize,
    pub files_in: usize,
    pub files_out: usize,
    pub rows_in: u64,
    pub rows_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Files and manifests deleted after their grace period.
    pub removed: usize,
}

impl CompactReport {
    /// Add another report's counts to this one.
    pub fn add(&mut self, o: &CompactReport) {
        self.partitions += o.partitions;
        self.busy += o.busy;
        self.files_in += o.files_in;
        self.files_out += o.files_out;
        self.rows_in += o.rows_in;
        self.rows_out += o.rows_out;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.removed += o.removed;
    }
}

/// The column a table's files are sorted by.
pub fn sort_column(table: Table) -> &'static str {
    match table {
        Table::Events => "time",
        Table::DeadLetters => "received_at",
        Table::Spans => "start",
    }
}

/// The partitions of `table` that need work: enough small visible files, or manifests whose
/// grace period is over.
pub async fn partitions_to_compact(
    store: &Store,
    table: Table,
    opts: &CompactOptions,
) -> Result<Vec<NaiveDate>> {
    let manifests = read_manifests(store, &Manifest::table_prefix(table)).await?;
    let visibility = Visibility::from_manifests(manifests.iter().map(|(p, m)| (p.as_str(), m)));
    let mut small: BTreeMap<NaiveDate, usize> = BTreeMap::new();
    for meta in store.list_meta(&table.prefix()).await? {
        let path = meta.location.to_string();
        let Some(file) = DataFilePath::parse(&path) else {
            continue;
        };
        let entry = small.entry(file.date).or_default();
        if visibility.is_visible(&path) && meta.size < opts.target_bytes / 2 {
            *entry += 1;
        }
    }
    let now = Utc::now();
    let mut out: Vec<NaiveDate> = small
        .into_iter()
        .filter(|&(_, n)| n >= opts.min_files.max(2))
        .map(|(d, _)| d)
        .collect();
    out.extend(
        manifests
            .iter()
            .filter(|(_, m)| past(m.committed_at, opts.grace, now))
            .map(|(_, m)| m.date),
    );
    out.sort();
    out.dedup();
    Ok(out)
}

/// Compact every partition of `table` that needs it; `progress(done, total)` after each.
pub async fn compact_table(
    store: &Store,
    table: Table,
    opts: &CompactOptions,
    mut progress: impl FnMut(usize, usize),
) -> Result<CompactReport> {
    let dates = partitions_to_compact(store, table, opts).await?;
    let mut report = CompactReport::default();
    for (i, date) in dates.iter().enumerate() {
        report.add(&compact_partition(store, table, *date, opts).await?);
        progress(i + 1, dates.len());
    }
    Ok(report)
}

/// Compact one partition: vacuum what is past its grace period, then merge small files.
pub async fn compact_partition(
    store: &Store,
    table: Table,
    date: NaiveDate,
    opts: &CompactOptions,
) -> Result<CompactReport> {
    let Some(lease) = Lease::acquire(store, table, date, opts.lease).await? else {
        return Ok(CompactReport {
            busy: 1,
            ..Default::default()
        });
    };
    let result = compact_leased(store, table, date, opts).await;
    lease.release(store).await;
    result
}

async fn compact_leased(
    store: &Store,
    table: Table,
    date: NaiveDate,
    opts: &CompactOptions,
) -> Result<CompactReport> {
    let mut report = CompactReport {
        removed: vacuum(store, table, date, opts.grace).await?,
        ..Default::default()
    };
    // Manifests before files, as readers do.
    let manifests = read_manifests(store, &manifest_partition_prefix(table, date)).await?;
    let visibility = Visibility::from_manifests(manifests.iter().map(|(p, m)| (p.as_str(), m)));
    let mut candidates: Vec<(String, u64)> = store
        .list_meta(&table.partition_prefix(date))
        .await?
        .into_iter()
        .map(|m| (m.location.to_string(), m.size))
        .filter(|(p, size)| {
            DataFilePath::parse(p).is_some()
                && visibility.is_visible(p)
                && *size < opts.target_bytes / 2
        })
        .collect();
    if candidates.len() < opts.min_files.max(2) {
        return Ok(report);
    }
    candidates.sort();
    // Groups of inputs that together stay within the target size (compressed) and the input
    // count, so a merge's memory is bounded.
    let mut groups: Vec<Vec<(String, u64)>> = vec![Vec::new()];
    let mut group_bytes = 0;
    for c in candidates {
        let full = groups.last().expect("one group").len() >= opts.max_inputs.max(2)
            || group_bytes + c.1 > opts.target_bytes;
        if full && !groups.last().expect("one group").is_empty() {
            groups.push(Vec::new());
            group_bytes = 0;
        }
        group_bytes += c.1;
        groups.last_mut().expect("one group").push(c);
    }
    for group in groups.into_iter().filter(|g| g.len() >= 2) {
        let merged = merge_group(store, table, date, &group, opts).await?;
        report.partitions = 1;
        report.add(&merged);
    }
    if opts.grace.is_zero() {
        report.removed += vacuum(store, table, date, opts.grace).await?;
    }
    Ok(report)
}

/// Merge `inputs` into new files and commit their manifest.
async fn merge_group(
    store: &Store,
    table: Table,
    date: NaiveDate,
    inputs: &[(String, u64)],
    opts: &CompactOptions,
) -> Result<CompactReport> {
    let mut h = Sha256::new();
    for (path, _) in inputs {
        h.update((path.len() as u64).to_le_bytes());
        h.update(path.as_bytes());
    }
    let id = format!("{OUTPUT_PREFIX}{}", hex::encode(&h.finalize()[..16]));
    let mut files = Vec::with_capacity(inputs.len());
    let mut report = CompactReport::default();
    for (path, size) in inputs {
        // A file deleted since the listing was merged by an earlier compaction whose grace is
        // over; leave this group for the next run rather than merge half of it.
        let Some(bytes) = store.get(path).await? else {
            tracing::info!(
                path,
                "An input vanished during compaction; will retry later."
            );
            return Ok(report);
        };
        report.bytes_in += size;
        files.push((path.clone(), Bytes::from(bytes)));
    }
    let encode = opts.encode.clone();
    let target = opts.target_bytes;
    let merge_id = id.clone();
    let merged =
        tokio::task::spawn_blocking(move || merge(table, date, &merge_id, files, target, &encode))
            .await??;
    for (path, bytes) in &merged.outputs {
        report.bytes_out += bytes.len() as u64;
        if store.put_if_absent(path, bytes.clone()).await? == Commit::AlreadyExists {
            tracing::info!(
                path,
                "Compaction output already written by an earlier attempt."
            );
        }
    }
    let manifest = Manifest {
        id: id.clone(),
        table: table.dir().to_string(),
        date,
        inputs: merged.inputs.clone(),
        outputs: merged.outputs.iter().map(|(p, _)| p.clone()).collect(),
        rows: merged.rows_out,
        input_rows: merged.rows_in,
        committed_at: Utc::now(),
    };
    let body = serde_json::to_vec_pretty(&manifest).expect("a manifest serialises");
    store
        .put_if_absent(&Manifest::path_of(table, date, &id), body)
        .await?;
    tracing::info!(
        table = table.dir(),
        %date,
        inputs = merged.inputs.len(),
        outputs = manifest.outputs.len(),
        rows = merged.rows_out,
        duplicates = merged.rows_in - merged.rows_out,
        "Compacted."
    );
    report.files_in = merged.inputs.len();
    report.files_out = manifest.outputs.len();
    report.rows_in = merged.rows_in;
    report.rows_out = merged.rows_out;
    Ok(report)
}

struct Merged {
    inputs: Vec<String>,
    outputs: Vec<(String, Vec<u8>)>,
    rows_in: u64,
    rows_out: u64,
}

struct Input {
    reader: ParquetRecordBatchReader,
    batch: RecordBatch,
    slot: usize,
    row: usize,
    times: Vec<i64>,
    keys: Vec<Option<u128>>,
}

const BATCH_ROWS: usize = 2048;

/// The k-way merge of sorted files into sorted, de-duplicated output files.
fn merge(
    table: Table,
    date: NaiveDate,
    id: &str,
    files: Vec<(String, Bytes)>,
    target_bytes: u64,
    encode: &EncodeOptions,
) -> Result<Merged> {
    let sort = sort_column(table);
    let read_err = |path: &str, source| Error::ReadParquet {
        path: path.to_string(),
        source,
    };
    let mut schema: Option<SchemaRef> = None;
    let mut inputs: Vec<Input> = Vec::new();
    let mut input_paths = Vec::new();
    let mut slots: Vec<RecordBatch> = Vec::new();
    let mut rows_in = 0u64;
    for (path, bytes) in files {
        let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .map_err(|e| read_err(&path, e))?
            .with_batch_size(BATCH_ROWS);
        let file_schema = builder.schema().clone();
        match &schema {
            None => schema = Some(file_schema),
            Some(s) if s.fields() == file_schema.fields() => {}
            Some(_) => {
                // A file of another schema version: not merged, left as it is.
                tracing::warn!(path, "Not compacting a file whose columns differ.");
                continue;
            }
        }
        rows_in += builder.metadata().file_metadata().num_rows() as u64;
        let mut reader = builder.build().map_err(|e| read_err(&path, e))?;
        input_paths.push(path.clone());
        if let Some(batch) = next_batch(&mut reader, &path)? {
            let (times, keys) = sort_keys(table, sort, &batch, &path)?;
            slots.push(batch.clone());
            inputs.push(Input {
                reader,
                batch,
                slot: slots.len() - 1,
                row: 0,
                times,
                keys,
            });
        }
    }
    let schema = schema.ok_or_else(|| Error::ReadParquet {
        path: table.partition_prefix(date),
        source: parquet::errors::ParquetError::General("no inputs".into()),
    })?;
    let mut heap: BinaryHeap<Reverse<(i64, usize)>> = inputs
        .iter()
        .enumerate()
        .map(|(i, input)| Reverse((input.times[0], i)))
        .collect();
    let mut seen: HashSet<u128> = HashSet::new();
    let mut picks: Vec<(usize, usize)> = Vec::with_capacity(BATCH_ROWS);
    let mut out = OutputFiles::new(table, date, id, schema.clone(), target_bytes, encode);
    let mut rows_out = 0u64;
    while let Some(Reverse((_, i))) = heap.pop() {
        let input = &mut inputs[i];
        let fresh = match input.keys[input.row] {
            Some(k) => seen.insert(k),
            None => true,
        };
        if fresh {
            picks.push((input.slot, input.row));
            rows_out += 1;
        }
        input.row += 1;
        if input.row == input.batch.num_rows() {
            let path = &input_paths[i];
            match next_batch(&mut input.reader, path)? {
                Some(batch) => {
                    let (times, keys) = sort_keys(table, sort, &batch, path)?;
                    slots.push(batch.clone());
                    input.slot = slots.len() - 1;
                    input.batch = batch;
                    input.row = 0;
                    input.times = times;
                    input.keys = keys;
                }
                None => {
                    input.row = usize::MAX;
                    continue;
                }
            }
        }
        heap.push(Reverse((input.times[input.row], i)));
        if picks.len() >= BATCH_ROWS {
            out.write(&slots, &picks)?;
            picks.clear();
            // Keep only the batches the inputs still point into.
            let mut kept = Vec::new();
            for input in inputs.iter_mut().filter(|x| x.row != usize::MAX) {
                kept.push(input.batch.clone());
                input.slot = kept.len() - 1;
            }
            slots = kept;
        }
    }
    if !picks.is_empty() {
        out.write(&slots, &picks)?;
    }
    Ok(Merged {
        inputs: input_paths,
        outputs: out.finish()?,
        rows_in,
        rows_out,
    })
}

fn next_batch(reader: &mut ParquetRecordBatchReader, path: &str) -> Result<Option<RecordBatch>> {
    loop {
        match reader.next() {
            None => return Ok(None),
            Some(Ok(b)) if b.num_rows() == 0 => continue,
            Some(Ok(b)) => return Ok(Some(b)),
            Some(Err(e)) => {
                return Err(Error::ReadParquet {
                    path: path.to_string(),
                    source: parquet::errors::ParquetError::External(Box::new(e)),
                });
            }
        }
    }
}

/// The sort key of every row, and its identity where the table has one.
fn sort_keys(
    table: Table,
    sort: &str,
    batch: &RecordBatch,
    path: &str,
) -> Result<(Vec<i64>, Vec<Option<u128>>)> {
    let bad = |what: String| Error::ReadParquet {
        path: path.to_string(),
        source: parquet::errors::ParquetError::General(what),
    };
    let col = batch
        .column_by_name(sort)
        .ok_or_else(|| bad(format!("no column {sort}")))?;
    let times: Vec<i64> = match col.data_type() {
        DataType::Timestamp(_, _) => {
            let a = col
                .as_primitive_opt::<TimestampMicrosecondType>()
                .ok_or_else(|| bad(format!("{sort} is not a microsecond timestamp")))?;
            (0..a.len())
                .map(|i| if a.is_valid(i) { a.value(i) } else { i64::MIN })
                .collect()
        }
        other => return Err(bad(format!("{sort} has type {other}"))),
    };
    let identity = match table {
        Table::Events => Some(("event_source", "event_id")),
        Table::Spans => Some(("trace_id", "span_id")),
        Table::DeadLetters => None,
    };
    let keys = match identity {
        Some((a, b)) => {
            let (Some(a), Some(b)) = (
                batch
                    .column_by_name(a)
                    .and_then(|c| c.as_string_opt::<i32>()),
                batch
                    .column_by_name(b)
                    .and_then(|c| c.as_string_opt::<i32>()),
            ) else {
                return Err(bad(format!("no utf8 identity columns {a}, {b}")));
            };
            (0..batch.num_rows())
                .map(|i| {
                    (a.is_valid(i) && b.is_valid(i))
                        .then(|| cdlake_schemas::identity_key(a.value(i), b.value(i)))
                })
                .collect()
        }
        None => vec![None; batch.num_rows()],
    };
    Ok((times, keys))
}

/// Output files of one merge, rolled over at the target size.
struct OutputFiles {
    table: Table,
    date: NaiveDate,
    id: String,
    schema: SchemaRef,
    target_bytes: u64,
    props: parquet::file::properties::WriterProperties,
    current: Option<ArrowWriter<Vec<u8>>>,
    done: Vec<(String, Vec<u8>)>,
}

impl OutputFiles {
    fn new(
        table: Table,
        date: NaiveDate,
        id: &str,
        schema: SchemaRef,
        target_bytes: u64,
        encode: &EncodeOptions,
    ) -> Self {
        let props = writer_properties(&schema, sort_column(table), encode);
        Self {
            table,
            date,
            id: id.to_string(),
            schema,
            target_bytes,
            props,
            current: None,
            done: Vec::new(),
        }
    }

    fn path(&self) -> String {
        DataFilePath::new(
            self.table,
            self.date,
            Manifest::output_id(&self.id, self.done.len()),
        )
        .to_string()
    }

    fn write(&mut self, slots: &[RecordBatch], picks: &[(usize, usize)]) -> Result<()> {
        let refs: Vec<&RecordBatch> = slots.iter().collect();
        let batch = arrow::compute::interleave_record_batch(&refs, picks)?;
        if self.current.is_none() {
            let w = ArrowWriter::try_new(Vec::new(), self.schema.clone(), Some(self.props.clone()))
                .map_err(|source| Error::EncodeParquet {
                    path: self.path(),
                    source,
                })?;
            self.current = Some(w);
        }
        let path = self.path();
        let w = self.current.as_mut().expect("set above");
        w.write(&batch)
            .map_err(|source| Error::EncodeParquet { path, source })?;
        if (w.bytes_written() + w.in_progress_size()) as u64 >= self.target_bytes {
            self.close()?;
        }
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        if let Some(w) = self.current.take() {
            let path = self.path();
            let bytes = w.into_inner().map_err(|source| Error::EncodeParquet {
                path: path.clone(),
                source,
            })?;
            self.done.push((path, bytes));
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<(String, Vec<u8>)>> {
        self.close()?;
        Ok(self.done)
    }
}

fn manifest_partition_prefix(table: Table, date: NaiveDate) -> String {
    format!("{MANIFEST_DIR}/{}", table.partition_prefix(date))
}

async fn read_manifests(store: &Store, prefix: &str) -> Result<Vec<(String, Manifest)>> {
    let mut out = Vec::new();
    for path in store.list(prefix).await? {
        if !path.ends_with(".json") {
            continue;
        }
        let Some(bytes) = store.get(&path).await? else {
            continue;
        };
        match serde_json::from_slice::<Manifest>(&bytes) {
            Ok(m) => out.push((path, m)),
            Err(e) => tracing::warn!(path, error = %e, "Ignoring an unreadable manifest."),
        }
    }
    Ok(out)
}

fn past(t: DateTime<Utc>, grace: Duration, now: DateTime<Utc>) -> bool {
    chrono::Duration::from_std(grace).is_ok_and(|g| t + g <= now)
}

/// Delete what the partition no longer needs: inputs of manifests past their grace period,
/// manifests whose outputs are all gone, and outputs without a manifest (a crashed run) that
/// are older than the grace period. Returns how many objects were deleted.
async fn vacuum(store: &Store, table: Table, date: NaiveDate, grace: Duration) -> Result<usize> {
    let now = Utc::now();
    let manifests = read_manifests(store, &manifest_partition_prefix(table, date)).await?;
    let files = store.list_meta(&table.partition_prefix(date)).await?;
    let mut present: HashSet<String> = files.iter().map(|m| m.location.to_string()).collect();
    let mut removed = 0;
    for (_, m) in manifests
        .iter()
        .filter(|(_, m)| past(m.committed_at, grace, now))
    {
        for input in &m.inputs {
            if present.remove(input) {
                store.delete(input).await?;
                removed += 1;
            }
        }
    }
    for (path, m) in &manifests {
        if past(m.committed_at, grace, now) && m.outputs.iter().all(|o| !present.contains(o)) {
            store.delete(path).await?;
            removed += 1;
        }
    }
    let committed: HashSet<&str> = manifests.iter().map(|(p, _)| p.as_str()).collect();
    for meta in &files {
        let path = meta.location.to_string();
        let Some(manifest) = DataFilePath::parse(&path)
            .as_ref()
            .and_then(Manifest::path_for_output)
        else {
            continue;
        };
        if present.contains(&path)
            && !committed.contains(manifest.as_str())
            && past(meta.last_modified, grace, now)
        {
            tracing::info!(path, "Removing the output of an unfinished compaction.");
            store.delete(&path).await?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// A compactor's claim on one partition.
#[derive(Debug, Serialize, Deserialize)]
struct Lease {
    path: String,
    owner: String,
    expires_at: DateTime<Utc>,
}

impl Lease {
    async fn acquire(
        store: &Store,
        table: Table,
        date: NaiveDate,
        ttl: Duration,
    ) -> Result<Option<Self>> {
        let path = format!(
            "_cdlake/locks/compact/{}date={}.json",
            table.prefix(),
            date.format("%Y-%m-%d")
        );
        let lease = Lease {
            path: path.clone(),
            owner: format!("pid {} ({})", std::process::id(), uuid_ish()),
            expires_at: Utc::now()
                + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::minutes(30)),
        };
        let body = serde_json::to_vec(&lease).expect("a lease serialises");
        for _ in 0..2 {
            match store.put_if_absent(&path, body.clone()).await? {
                Commit::Created => return Ok(Some(lease)),
                Commit::AlreadyExists => {
                    let held = store
                        .get(&path)
                        .await?
                        .and_then(|b| serde_json::from_slice::<Lease>(&b).ok());
                    match held {
                        Some(h) if h.expires_at > Utc::now() => return Ok(None),
                        _ => {
                            tracing::warn!(path, "Taking over an expired compaction lease.");
                            store.delete(&path).await?;
                        }
                    }
                }
            }
        }
        Ok(None)
    }

    async fn release(self, store: &Store) {
        if let Err(e) = store.delete(&self.path).await {
            tracing::warn!(path = self.path, error = %e, "Could not release a compaction lease; it expires by itself.");
        }
    }
}

fn uuid_ish() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{nanos:x}")
}

#[cfg(test)]
mod tests;
