//! Compaction: merge a date partition's small files into files of a target size, sorted by
//! time and de-duplicated, committed as one Delta transaction (the inputs removed and the
//! outputs added with `dataChange = false`), so every reader sees each row once at every
//! moment, whatever engine it is.
//!
//! Merging streams the inputs (each already sorted by time) through a k-way merge, so memory
//! stays at a batch per input plus the output being encoded. The outputs are put first; the
//! commit names the table version whose files were merged. When another writer committed
//! since, the merge is committed anyway if all its inputs are still in the table (an append
//! touches no file), and dropped if another compactor removed one of them: two compactors of
//! the same partition cannot both win. Removed inputs are deleted later by
//! [`TableLog::maintain`]'s vacuum, after the retention (queries and time travel read them
//! meanwhile).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef, TimestampMicrosecondType};
use bytes::Bytes;
use cdlake_schemas::lake::{ActiveFile, Change, CommitError, CommitKind, NewFile, TableLog};
use cdlake_schemas::paths::{DataFilePath, Table};
use cdlake_schemas::store::{Commit, Store};
use chrono::NaiveDate;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use serde::Serialize;
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
    /// How long removed files and old log entries are kept: the reach of time travel
    /// (`--as-of`), and longer than the longest query (`limits.query_timeout_secs`).
    pub retention: chrono::Duration,
    pub encode: EncodeOptions,
}

impl Default for CompactOptions {
    fn default() -> Self {
        Self {
            target_bytes: 128 << 20,
            min_files: 4,
            max_inputs: 256,
            retention: cdlake_schemas::lake::DEFAULT_RETENTION,
            encode: EncodeOptions::default(),
        }
    }
}

/// What a compaction run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CompactReport {
    /// Partitions that got new files.
    pub partitions: usize,
    /// Merges dropped because another compactor merged some of the same files first.
    pub busy: usize,
    pub files_in: usize,
    pub files_out: usize,
    pub rows_in: u64,
    pub rows_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Files deleted by the vacuum after the retention.
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

/// The small files of each partition of `table` that has enough of them to merge.
fn partitions_to_compact(
    index: &cdlake_schemas::lake::FileIndex,
    opts: &CompactOptions,
) -> Vec<(NaiveDate, Vec<ActiveFile>)> {
    index
        .dates()
        .filter_map(|date| {
            let small: Vec<ActiveFile> = index
                .files(date)
                .iter()
                .filter(|f| f.size < opts.target_bytes / 2)
                .cloned()
                .collect();
            (small.len() >= opts.min_files.max(2)).then_some((date, small))
        })
        .collect()
}

/// Compact every partition of `table` that needs it; `progress(done, total)` after each.
pub async fn compact_table(
    store: &Store,
    log: &TableLog,
    opts: &CompactOptions,
    mut progress: impl FnMut(usize, usize),
) -> Result<CompactReport> {
    let index = log.refresh().await?;
    let todo = partitions_to_compact(&index, opts);
    let mut report = CompactReport::default();
    for (i, (date, files)) in todo.iter().enumerate() {
        report.add(&compact_partition(store, log, *date, files.clone(), opts).await?);
        progress(i + 1, todo.len());
    }
    Ok(report)
}

/// Merge the small files of one partition, in groups within the target size.
async fn compact_partition(
    store: &Store,
    log: &TableLog,
    date: NaiveDate,
    mut candidates: Vec<ActiveFile>,
    opts: &CompactOptions,
) -> Result<CompactReport> {
    let table = log.table();
    let mut report = CompactReport::default();
    candidates.sort_by(|a, b| a.path.cmp(&b.path));
    // Groups of inputs that together stay within the target size (compressed) and the input
    // count, so a merge's memory is bounded.
    let mut groups: Vec<Vec<ActiveFile>> = vec![Vec::new()];
    let mut group_bytes = 0;
    for c in candidates {
        let full = groups.last().expect("one group").len() >= opts.max_inputs.max(2)
            || group_bytes + c.size > opts.target_bytes;
        if full && !groups.last().expect("one group").is_empty() {
            groups.push(Vec::new());
            group_bytes = 0;
        }
        group_bytes += c.size;
        groups.last_mut().expect("one group").push(c);
    }
    for group in groups.into_iter().filter(|g| g.len() >= 2) {
        let merged = merge_group(store, log, table, date, group, opts).await?;
        if merged.files_out > 0 {
            report.partitions = 1;
        }
        report.add(&merged);
    }
    Ok(report)
}

/// Merge `inputs` into new files and commit them in place of the inputs.
async fn merge_group(
    store: &Store,
    log: &TableLog,
    table: Table,
    date: NaiveDate,
    inputs: Vec<ActiveFile>,
    opts: &CompactOptions,
) -> Result<CompactReport> {
    let mut h = Sha256::new();
    for f in &inputs {
        let path = f.path.to_string();
        h.update((path.len() as u64).to_le_bytes());
        h.update(path.as_bytes());
    }
    let id = format!("{OUTPUT_PREFIX}{}", hex::encode(&h.finalize()[..16]));
    let mut files = Vec::with_capacity(inputs.len());
    let mut report = CompactReport::default();
    for f in &inputs {
        let path = f.path.to_string();
        // Listed but gone: vacuumed after another compaction; leave the group for later.
        let Some(bytes) = store.get(&path).await? else {
            tracing::info!(
                path,
                "An input vanished during compaction; will retry later."
            );
            return Ok(report);
        };
        report.bytes_in += f.size;
        files.push((path, Bytes::from(bytes)));
    }
    let encode = opts.encode.clone();
    let target = opts.target_bytes;
    let merge_id = id.clone();
    let merged =
        tokio::task::spawn_blocking(move || merge(table, date, &merge_id, files, target, &encode))
            .await??;
    let merged_paths: HashSet<&str> = merged.inputs.iter().map(String::as_str).collect();
    let removed: Vec<ActiveFile> = inputs
        .iter()
        .filter(|f| merged_paths.contains(f.path.to_string().as_str()))
        .cloned()
        .collect();
    let mut added = Vec::with_capacity(merged.outputs.len());
    for out in &merged.outputs {
        report.bytes_out += out.bytes.len() as u64;
        if store
            .put_if_absent(&out.path.to_string(), out.bytes.clone())
            .await?
            == Commit::AlreadyExists
        {
            tracing::info!(path = %out.path, "Compaction output already written by an earlier attempt.");
        }
        added.push(NewFile {
            path: out.path.clone(),
            size: out.bytes.len() as u64,
            rows: out.rows,
            time_range: out.time_range,
        });
    }
    // Commit unless another compactor removed one of the inputs first.
    for _ in 0..20 {
        let index = log.refresh().await?;
        let active: HashSet<&DataFilePath> = index.files(date).iter().map(|f| &f.path).collect();
        if !removed.iter().all(|f| active.contains(&f.path)) {
            tracing::info!(table = table.dir(), %date, "Another compactor merged these files first.");
            report.busy = 1;
            return Ok(report);
        }
        let change = Change {
            read_version: index.version,
            kind: CommitKind::Compact,
            add: added.clone(),
            remove: removed.clone(),
        };
        match log.commit(change).await {
            Ok(version) => {
                tracing::info!(
                    table = table.dir(),
                    %date,
                    version,
                    inputs = removed.len(),
                    outputs = added.len(),
                    rows = merged.rows_out,
                    duplicates = merged.rows_in - merged.rows_out,
                    "Compacted."
                );
                report.files_in = removed.len();
                report.files_out = added.len();
                report.rows_in = merged.rows_in;
                report.rows_out = merged.rows_out;
                return Ok(report);
            }
            Err(CommitError::Conflict { .. }) => continue,
            Err(e) => return Err(Error::Commit(Box::new(e))),
        }
    }
    report.busy = 1;
    Ok(report)
}

/// Delete what no version within the retention references (removed inputs, files of crashed
/// writers), checkpoint and trim the log. Returns how many files were deleted.
pub async fn maintain(log: &TableLog, opts: &CompactOptions) -> Result<usize> {
    Ok(log.maintain(opts.retention).await?.len())
}

/// The file id prefix of compaction outputs.
pub const OUTPUT_PREFIX: &str = "compact-";

/// One output file of a merge.
pub(crate) struct Output {
    pub(crate) path: DataFilePath,
    pub(crate) bytes: Vec<u8>,
    pub(crate) rows: u64,
    pub(crate) time_range: Option<(i64, i64)>,
}

pub(crate) struct Merged {
    pub(crate) inputs: Vec<String>,
    pub(crate) outputs: Vec<Output>,
    pub(crate) rows_in: u64,
    pub(crate) rows_out: u64,
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
pub(crate) fn merge(
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
    rows: u64,
    time_range: Option<(i64, i64)>,
    done: Vec<Output>,
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
            rows: 0,
            time_range: None,
            done: Vec::new(),
        }
    }

    fn path(&self) -> DataFilePath {
        DataFilePath::new(
            self.table,
            self.date,
            format!("{}-{}", self.id, self.done.len()),
        )
    }

    fn write(&mut self, slots: &[RecordBatch], picks: &[(usize, usize)]) -> Result<()> {
        let refs: Vec<&RecordBatch> = slots.iter().collect();
        let batch = arrow::compute::interleave_record_batch(&refs, picks)?;
        if self.current.is_none() {
            let w = ArrowWriter::try_new(Vec::new(), self.schema.clone(), Some(self.props.clone()))
                .map_err(|source| Error::EncodeParquet {
                    path: self.path().to_string(),
                    source,
                })?;
            self.current = Some(w);
        }
        if let Some(times) = batch
            .column_by_name(sort_column(self.table))
            .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
            && !times.is_empty()
        {
            let (first, last) = (times.value(0), times.value(times.len() - 1));
            self.time_range = Some(match self.time_range {
                Some((lo, hi)) => (lo.min(first), hi.max(last)),
                None => (first, last),
            });
        }
        self.rows += batch.num_rows() as u64;
        let path = self.path().to_string();
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
                path: path.to_string(),
                source,
            })?;
            self.done.push(Output {
                path,
                bytes,
                rows: std::mem::take(&mut self.rows),
                time_range: self.time_range.take(),
            });
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<Output>> {
        self.close()?;
        Ok(self.done)
    }
}

#[cfg(test)]
mod tests;
