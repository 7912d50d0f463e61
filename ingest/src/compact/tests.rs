use cdlake_schemas::Event;
use cdlake_schemas::event::batch_to_events;
use cdlake_schemas::lake::TableLog;

use super::*;
use crate::test_support::commit_events_file;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().to_str().unwrap()).unwrap();
    (dir, store)
}

fn date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 27).unwrap()
}

fn event(n: u64) -> Event {
    let base = date()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp_micros();
    Event {
        event_id: format!("id-{n}"),
        event_source: "test".into(),
        event_type: "dev.cdevents.service.deployed.0.2.0".into(),
        subject: "service".into(),
        predicate: "deployed".into(),
        spec_version: "0.4.1".into(),
        origin: "cdevents".into(),
        // Interleaved times across files: file k holds n ≡ k (mod files).
        time: base + (n as i64) * 1_000_000,
        ingested_at: base,
        subject_id: format!("svc-{}", n % 7),
        payload: format!("{{\"n\":{n}}}"),
        ..Default::default()
    }
}

/// Ten files of 100 interleaved events, with events 0..50 stored twice (a second file).
async fn small_files(store: &Store, log: &TableLog) {
    for k in 0..10u64 {
        let events = (0..1000).filter(|n| n % 10 == k).map(event).collect();
        commit_events_file(store, log, &format!("f{k:02}"), events).await;
    }
    commit_events_file(store, log, "dup", (0..50).map(event).collect()).await;
}

/// What a reader sees: the table's files and their rows in order.
async fn table_rows(store: &Store, log: &TableLog) -> (Vec<String>, Vec<Event>) {
    let index = log.refresh().await.unwrap();
    let mut files = Vec::new();
    let mut rows = Vec::new();
    for f in index.files(date()) {
        let path = f.path.to_string();
        let bytes = store.get(&path).await.unwrap().unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(bytes))
            .unwrap()
            .build()
            .unwrap();
        for b in reader {
            rows.extend(batch_to_events(&b.unwrap()).unwrap());
        }
        files.push(path);
    }
    (files, rows)
}

fn opts() -> CompactOptions {
    CompactOptions {
        min_files: 2,
        retention: chrono::Duration::zero(),
        ..Default::default()
    }
}

#[tokio::test]
async fn merges_small_files_into_one_sorted_deduplicated_file_in_one_commit() {
    let (dir, store) = store();
    let log = TableLog::open(&store, Table::Events).await.unwrap();
    small_files(&store, &log).await;
    let (inputs, before) = table_rows(&store, &log).await;
    assert_eq!((inputs.len(), before.len()), (11, 1050));
    let version = log.refresh().await.unwrap().version;

    let report = compact_table(&store, &log, &opts(), |_, _| {})
        .await
        .unwrap();
    assert_eq!((report.files_in, report.files_out), (11, 1));
    assert_eq!((report.rows_in, report.rows_out), (1050, 1000));

    // One transaction: the next version removes the eleven and adds the merged file.
    let index = log.refresh().await.unwrap();
    assert_eq!(index.version, version + 1);
    let (files, rows) = table_rows(&store, &log).await;
    assert_eq!(files.len(), 1);
    assert!(files[0].contains("/compact-"), "{files:?}");
    assert_eq!(rows.len(), 1000);
    assert!(rows.windows(2).all(|w| w[0].time <= w[1].time), "sorted");
    let ids: HashSet<&str> = rows.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids.len(), 1000, "each event once");
    // The commit is a rewrite, not new data: the tail shows no rows of it.
    let added = log.added_since(version).await.unwrap();
    assert_eq!(added, vec![(version + 1, vec![])]);

    // The inputs stay in the store for readers of older versions until the vacuum.
    for p in &inputs {
        assert!(dir.path().join(p).exists(), "{p} kept until vacuumed");
    }
    let removed = maintain(&log, &opts()).await.unwrap();
    assert_eq!(removed, 11);
    for p in &inputs {
        assert!(!dir.path().join(p).exists(), "{p} vacuumed");
    }
    assert_eq!(table_rows(&store, &log).await.1.len(), 1000);
}

#[tokio::test]
async fn two_compactors_of_one_partition_cannot_both_commit() {
    let (_dir, store) = store();
    let first = TableLog::open(&store, Table::Events).await.unwrap();
    small_files(&store, &first).await;
    let second = TableLog::open(&store, Table::Events).await.unwrap();
    let options = opts();
    let (a, b) = tokio::join!(
        compact_table(&store, &first, &options, |_, _| {}),
        compact_table(&store, &second, &options, |_, _| {})
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.files_out + b.files_out, 1, "{a:?} {b:?}");
    assert_eq!(a.busy + b.busy, 1, "{a:?} {b:?}");
    let (files, rows) = table_rows(&store, &first).await;
    assert_eq!((files.len(), rows.len()), (1, 1000));
}

#[tokio::test]
async fn compacting_again_merges_earlier_outputs() {
    let (_dir, store) = store();
    let log = TableLog::open(&store, Table::Events).await.unwrap();
    small_files(&store, &log).await;
    compact_table(&store, &log, &opts(), |_, _| {})
        .await
        .unwrap();
    commit_events_file(&store, &log, "late", (1000..1010).map(event).collect()).await;
    let report = compact_table(&store, &log, &opts(), |_, _| {})
        .await
        .unwrap();
    assert_eq!((report.files_in, report.files_out), (2, 1));
    let (files, rows) = table_rows(&store, &log).await;
    assert_eq!((files.len(), rows.len()), (1, 1010));
}

#[tokio::test]
async fn large_partitions_are_merged_in_groups_within_the_target_size() {
    let (_dir, store) = store();
    let log = TableLog::open(&store, Table::Events).await.unwrap();
    small_files(&store, &log).await;
    let options = CompactOptions {
        max_inputs: 4,
        ..opts()
    };
    let report = compact_table(&store, &log, &options, |_, _| {})
        .await
        .unwrap();
    // 11 files in groups of at most 4: 4 + 4 + 3.
    assert_eq!((report.files_in, report.files_out), (11, 3));
    let (files, rows) = table_rows(&store, &log).await;
    assert_eq!(files.len(), 3);
    // Duplicates across groups are not merged away by one group: the store keeps each row it
    // was given at most once per group, and every event is there.
    let ids: HashSet<&str> = rows.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids.len(), 1000);
}
