//! What unit tests of the store share.

use cdlake_schemas::Event;
use cdlake_schemas::event::events_to_batch;
use cdlake_schemas::lake::{Change, CommitKind, NewFile, TableLog};
use cdlake_schemas::paths::{DataFilePath, Table};
use cdlake_schemas::store::Store;

use crate::parquet::{EncodeOptions, encode, writer_properties};

/// Commit `rows` (all of one date) to `events` as one file named `id`, as a writer would but
/// without cdlake's de-duplication, so a test can hold duplicates. Returns the file's path.
pub(crate) async fn commit_events_file(
    store: &Store,
    log: &TableLog,
    id: &str,
    mut rows: Vec<Event>,
) -> String {
    rows.sort_by_key(|e| e.time);
    let batch = events_to_batch(&rows).unwrap();
    let schema = batch.schema();
    let bytes = encode(
        &schema,
        &[batch],
        writer_properties(&schema, "time", &EncodeOptions::default()),
    )
    .unwrap();
    let path = DataFilePath::new(Table::Events, rows[0].date(), id);
    let size = bytes.len() as u64;
    store.put_if_absent(&path.to_string(), bytes).await.unwrap();
    let index = log.refresh().await.unwrap();
    log.commit(Change {
        read_version: index.version,
        kind: CommitKind::Append,
        add: vec![NewFile {
            path: path.clone(),
            size,
            rows: rows.len() as u64,
            time_range: Some((rows[0].time, rows[rows.len() - 1].time)),
        }],
        remove: Vec::new(),
    })
    .await
    .unwrap();
    path.to_string()
}
