use cdlake_schemas::Event;
use cdlake_schemas::compaction::ManifestCache;
use cdlake_schemas::event::{batch_to_events, events_schema, events_to_batch};

use super::*;
use crate::parquet::encode;

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

/// Write `events` (sorted by time) as one file named `id`, as an ingester would.
async fn write_file(store: &Store, id: &str, mut events: Vec<Event>) -> String {
    events.sort_by_key(|e| e.time);
    let schema = events_schema();
    let batch = events_to_batch(&events).unwrap();
    let bytes = encode(
        &schema,
        &[batch],
        writer_properties(&schema, "time", &EncodeOptions::default()),
    )
    .unwrap();
    let path = DataFilePath::new(Table::Events, date(), id).to_string();
    store.put_if_absent(&path, bytes).await.unwrap();
    path
}

/// Ten files of 100 interleaved events, with events 0..50 stored twice (a second file).
async fn small_files(store: &Store) -> Vec<String> {
    let mut paths = Vec::new();
    for k in 0..10u64 {
        let events = (0..1000).filter(|n| n % 10 == k).map(event).collect();
        paths.push(write_file(store, &format!("f{k:02}"), events).await);
    }
    paths.push(write_file(store, "dup", (0..50).map(event).collect()).await);
    paths
}

/// What a reader sees: visible files, their rows in order.
async fn visible_rows(store: &Store) -> (Vec<String>, Vec<Event>) {
    let visibility = ManifestCache::default()
        .visibility(store, Table::Events)
        .await
        .unwrap();
    let mut files = Vec::new();
    let mut rows = Vec::new();
    for path in store
        .list(&Table::Events.partition_prefix(date()))
        .await
        .unwrap()
    {
        if !visibility.is_visible(&path) {
            continue;
        }
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

fn opts(grace: Duration) -> CompactOptions {
    CompactOptions {
        grace,
        min_files: 2,
        ..Default::default()
    }
}

#[tokio::test]
async fn merges_small_files_into_one_sorted_deduplicated_file() {
    let (_dir, store) = store();
    let inputs = small_files(&store).await;
    let (_, before) = visible_rows(&store).await;
    assert_eq!(before.len(), 1050);

    let report = compact_partition(&store, Table::Events, date(), &opts(Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(report.files_in, 11);
    assert_eq!(report.files_out, 1);
    assert_eq!(report.rows_in, 1050);
    assert_eq!(report.rows_out, 1000);
    // Grace zero: the inputs are gone at once (the manifest stays with its output).
    assert_eq!(report.removed, 11);

    let (files, rows) = visible_rows(&store).await;
    assert_eq!(files.len(), 1);
    assert!(files[0].contains("/compact-"), "{files:?}");
    let ids: Vec<&str> = rows.iter().map(|e| e.event_id.as_str()).collect();
    let expected: Vec<String> = (0..1000).map(|n| format!("id-{n}")).collect();
    assert_eq!(ids, expected.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(rows.windows(2).all(|w| w[0].time <= w[1].time));
    assert_eq!(rows[7], event(7), "rows keep every column");
    for input in inputs {
        assert!(
            store.get(&input).await.unwrap().is_none(),
            "{input} deleted"
        );
    }
    // Nothing left to do.
    let again = compact_partition(&store, Table::Events, date(), &opts(Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(again.files_in, 0);
    assert!(
        partitions_to_compact(&store, Table::Events, &opts(Duration::from_secs(600)))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn inputs_stay_until_the_grace_period_ends_but_readers_see_each_row_once() {
    let (_dir, store) = store();
    let inputs = small_files(&store).await;
    let grace = Duration::from_millis(300);
    let report = compact_partition(&store, Table::Events, date(), &opts(grace))
        .await
        .unwrap();
    assert_eq!((report.files_out, report.removed), (1, 0));
    // Both generations are in the store; a reader sees one.
    for input in &inputs {
        assert!(store.get(input).await.unwrap().is_some());
    }
    let (files, rows) = visible_rows(&store).await;
    assert_eq!((files.len(), rows.len()), (1, 1000));

    tokio::time::sleep(grace + Duration::from_millis(50)).await;
    assert_eq!(
        partitions_to_compact(&store, Table::Events, &opts(grace))
            .await
            .unwrap(),
        vec![date()]
    );
    let later = compact_partition(&store, Table::Events, date(), &opts(grace))
        .await
        .unwrap();
    assert_eq!(later.removed, 11);
    let (files, rows) = visible_rows(&store).await;
    assert_eq!((files.len(), rows.len()), (1, 1000));
    assert_eq!(store.list("events/").await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_crash_before_the_manifest_leaves_invisible_outputs_that_are_cleaned_up() {
    let (_dir, store) = store();
    small_files(&store).await;
    // The state after step 1 of a crashed run: an output without its manifest.
    let orphan = write_file(&store, "compact-00ff-0", (0..1000).map(event).collect()).await;
    let (files, rows) = visible_rows(&store).await;
    assert!(!files.contains(&orphan));
    assert_eq!(rows.len(), 1050);

    let report = compact_partition(&store, Table::Events, date(), &opts(Duration::ZERO))
        .await
        .unwrap();
    assert!(report.removed >= 1);
    assert!(store.get(&orphan).await.unwrap().is_none());
    let (_, rows) = visible_rows(&store).await;
    assert_eq!(rows.len(), 1000);
}

#[tokio::test]
async fn compacting_again_merges_earlier_outputs_and_retires_their_manifests() {
    let (_dir, store) = store();
    small_files(&store).await;
    compact_partition(&store, Table::Events, date(), &opts(Duration::ZERO))
        .await
        .unwrap();
    // New files arrive after the first compaction.
    write_file(&store, "late1", (1000..1100).map(event).collect()).await;
    write_file(&store, "late2", (1100..1200).map(event).collect()).await;
    let report = compact_partition(&store, Table::Events, date(), &opts(Duration::ZERO))
        .await
        .unwrap();
    assert_eq!((report.files_in, report.rows_out), (3, 1200));
    let (files, rows) = visible_rows(&store).await;
    assert_eq!((files.len(), rows.len()), (1, 1200));
    // The first manifest's output was merged away: only the second manifest is left.
    let manifests = store.list(MANIFEST_DIR).await.unwrap();
    assert_eq!(manifests.len(), 1, "{manifests:?}");
}

#[tokio::test]
async fn large_partitions_are_merged_in_groups_within_the_target_size() {
    let (_dir, store) = store();
    small_files(&store).await;
    let largest = store
        .list_meta("events/")
        .await
        .unwrap()
        .iter()
        .map(|m| m.size)
        .max()
        .unwrap();
    // Room for about four inputs per group.
    let opts = CompactOptions {
        target_bytes: largest * 4 + 1,
        ..opts(Duration::ZERO)
    };
    let report = compact_partition(&store, Table::Events, date(), &opts)
        .await
        .unwrap();
    assert!(report.files_out >= 2, "{report:?}");
    assert_eq!(report.files_in, 11);
    let (files, rows) = visible_rows(&store).await;
    assert_eq!(files.len(), report.files_out);
    let mut ids: Vec<String> = rows.iter().map(|e| e.event_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 1000, "no row lost across {} files", files.len());
    // Duplicates are dropped within a group; across groups they remain for events_unique.
    assert!((1000..1050).contains(&rows.len()), "{}", rows.len());
}

#[tokio::test]
async fn one_compactor_per_partition_until_its_lease_expires() {
    let (_dir, store) = store();
    let held = Lease::acquire(&store, Table::Events, date(), Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let busy = compact_partition(&store, Table::Events, date(), &opts(Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(busy.busy, 1);
    held.release(&store).await;

    let expired = Lease::acquire(&store, Table::Events, date(), Duration::ZERO)
        .await
        .unwrap();
    assert!(expired.is_some());
    let taken = Lease::acquire(&store, Table::Events, date(), Duration::from_secs(60))
        .await
        .unwrap();
    assert!(taken.is_some(), "an expired lease is taken over");
}
