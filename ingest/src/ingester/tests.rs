use arrow::array::RecordBatch;
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use proptest::prelude::*;

use super::*;
use cdlake_schemas::event::batch_to_events;
use cdlake_schemas::events_schema;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().to_str().unwrap()).unwrap();
    (dir, store)
}

fn cdevent(id: &str, time: &str) -> Vec<u8> {
    format!(
        r#"{{"context":{{"version":"0.4.1","id":"{id}","source":"/ci","type":"dev.cdevents.service.deployed.0.2.0","timestamp":"{time}"}},"subject":{{"id":"checkout","content":{{"environment":{{"id":"prod"}},"artifactId":"pkg:oci/checkout@1"}}}}}}"#
    )
    .into_bytes()
}

/// The rows of the files the table's log lists.
async fn read_table(store: &Store, table: Table) -> Vec<RecordBatch> {
    let log = cdlake_schemas::lake::TableLog::open(store, table)
        .await
        .unwrap();
    let index = log.refresh().await.unwrap();
    let mut out = Vec::new();
    for file in index.all() {
        let bytes = store.get(&file.path.to_string()).await.unwrap().unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(bytes))
            .unwrap()
            .build()
            .unwrap();
        out.extend(reader.map(Result::unwrap));
    }
    out
}

/// The event ids the table's files hold, sorted.
async fn stored_ids(store: &Store) -> Vec<String> {
    let mut ids: Vec<String> = read_table(store, Table::Events)
        .await
        .iter()
        .flat_map(|b| batch_to_events(b).unwrap())
        .map(|e| e.event_id)
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn duplicates_are_dropped_within_a_run_and_against_the_store() {
    let (_dir, store) = store();
    let mut ing = Ingester::new(store.clone(), IngesterConfig::default());
    assert_eq!(
        ing.ingest(&cdevent("a", "2026-01-01T10:00:00Z"), Origin::CdEvents, "t")
            .await
            .unwrap(),
        Outcome::Accepted
    );
    assert_eq!(
        ing.ingest(&cdevent("a", "2026-01-01T10:00:00Z"), Origin::CdEvents, "t")
            .await
            .unwrap(),
        Outcome::Duplicate
    );
    assert_eq!(
        ing.ingest(
            &cdevent("b", "2026-01-02T05:30:00+05:30"),
            Origin::CdEvents,
            "t"
        )
        .await
        .unwrap(),
        Outcome::Accepted
    );
    let report = ing.flush().await.unwrap();
    assert_eq!((report.events, report.files.len()), (2, 2), "{report:?}");
    assert!(
        report
            .files
            .iter()
            .any(|f| f.starts_with("events/date=2026-01-02/"))
    );

    // A new ingester (a second run, a restart) finds what the store holds.
    let mut again = Ingester::new(store.clone(), IngesterConfig::default());
    assert_eq!(
        again
            .ingest(&cdevent("a", "2026-01-01T10:00:00Z"), Origin::CdEvents, "t")
            .await
            .unwrap(),
        Outcome::Duplicate
    );
    assert_eq!(
        again
            .ingest(&cdevent("c", "2026-01-01T11:00:00Z"), Origin::CdEvents, "t")
            .await
            .unwrap(),
        Outcome::Accepted
    );
    let report = again.flush().await.unwrap();
    assert_eq!(report.events, 1);
    let rows: usize = read_table(&store, Table::Events)
        .await
        .iter()
        .map(RecordBatch::num_rows)
        .sum();
    assert_eq!(rows, 3);
}

#[tokio::test]
async fn rejected_records_become_dead_letters_with_reason_and_bytes() {
    let (_dir, store) = store();
    let mut ing = Ingester::new(store.clone(), IngesterConfig::default());
    let out = ing
        .ingest(b"{broken", Origin::CdEvents, "import:x.jsonl:3")
        .await
        .unwrap();
    assert!(
        matches!(&out, Outcome::Rejected(r) if r.message.contains("malformed JSON")),
        "{out:?}"
    );
    ing.flush().await.unwrap();
    let batches = read_table(&store, Table::DeadLetters).await;
    let text = arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string();
    assert!(
        text.contains("import:x.jsonl:3") && text.contains("malformed JSON"),
        "{text}"
    );
    assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 1);
}

#[tokio::test]
async fn a_retried_flush_of_the_same_rows_lands_on_the_same_file() {
    let (_dir, store) = store();
    let mut first = Ingester::new(store.clone(), IngesterConfig::default());
    let mut second = Ingester::new(store.clone(), IngesterConfig::default());
    for ing in [&mut first, &mut second] {
        // Both buffer the same rows before either commits (a crash between commit and ack).
        for id in ["x", "y"] {
            ing.ingest(&cdevent(id, "2026-02-01T00:00:00Z"), Origin::CdEvents, "t")
                .await
                .unwrap();
        }
    }
    let a = first.flush().await.unwrap();
    let b = second.flush().await.unwrap();
    assert_eq!((a.files.len(), a.events), (1, 2));
    // The second found the first's commit in the same partition and dropped its copies.
    assert_eq!((b.files.len(), b.events, b.duplicates), (0, 0, 2));
    assert_eq!(b.foreign.len(), 1);
    assert_eq!(
        read_table(&store, Table::Events)
            .await
            .iter()
            .map(RecordBatch::num_rows)
            .sum::<usize>(),
        2
    );
}

#[tokio::test]
async fn flush_limits() {
    let (_dir, store) = store();
    let config = IngesterConfig {
        max_rows: 2,
        max_age: Duration::from_secs(3600),
        ..Default::default()
    };
    let mut ing = Ingester::new(store, config);
    ing.ingest(&cdevent("1", "2026-02-01T00:00:00Z"), Origin::CdEvents, "t")
        .await
        .unwrap();
    assert!(!ing.should_flush());
    ing.ingest(b"nope", Origin::CdEvents, "t").await.unwrap();
    assert!(
        ing.should_flush(),
        "dead letters count towards the row limit"
    );
    ing.flush().await.unwrap();
    assert_eq!(ing.pending_rows(), 0);
    assert!(!ing.should_flush());
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    proptest::option::of("[a-zA-Z0-9 ._:/@%-]{0,24}|\\PC{0,12}")
}

prop_compose! {
    fn arb_event()(
        ids in ("[a-z0-9-]{1,36}", "/[a-z/]{0,20}", "[a-z]{1,12}", "[a-z]{1,12}", "\\PC{1,20}"),
        time in -2_000_000_000_000_000i64..4_000_000_000_000_000i64,
        ingested_at in 0i64..4_000_000_000_000_000i64,
        links in (opt_text(), opt_text(), opt_text(), opt_text(), opt_text(), opt_text(), opt_text()),
        more in (opt_text(), opt_text(), opt_text(), opt_text(), opt_text(), opt_text(), opt_text()),
        payload in "\\PC{0,200}",
        attempt in proptest::option::of(any::<i64>()),
        change in (opt_text(), opt_text(), opt_text(), proptest::option::of(0i64..4_000_000_000_000_000i64)),
    ) -> Event {
        let (event_id, event_source, subject, predicate, subject_id) = ids;
        Event {
            event_type: format!("dev.cdevents.{subject}.{predicate}.0.1.0"),
            event_id, event_source, subject, predicate, subject_id,
            spec_version: "0.5.1".into(), origin: "cdevents".into(), time, ingested_at,
            service: links.0, environment: links.1, repository: links.2, change_id: links.3,
            artifact_id: links.4, pipeline: links.5, run_id: links.6,
            outcome: more.0, url: more.1, trace_id: more.2, span_id: more.3, chain_id: more.4,
            team: more.5, task: more.6, payload, attempt, labels: change.0, reverts: change.1,
            branch: change.2, first_commit_at: change.3,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// event → row → Parquet → row gives the event back, whatever its contents.
    #[test]
    fn events_round_trip_through_parquet(events in proptest::collection::vec(arb_event(), 1..40)) {
        let schema = events_schema();
        let batch = events_to_batch(&events).unwrap();
        let bytes = encode(&schema, &[batch], writer_properties(&schema, "time", &EncodeOptions::default())).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(bytes)).unwrap().build().unwrap();
        let mut back = Vec::new();
        for b in reader {
            back.extend(batch_to_events(&b.unwrap()).unwrap());
        }
        prop_assert_eq!(back, events);
    }
}

#[tokio::test]
async fn taken_rows_commit_beside_new_input_and_a_failed_commit_keeps_exactly_the_rest() {
    let (dir, store) = store();
    let mut ing = Ingester::new(store.clone(), IngesterConfig::default());
    for (id, time) in [
        ("a", "2026-02-01T01:00:00Z"),
        ("b", "2026-02-01T02:00:00Z"),
        ("c", "2026-02-02T01:00:00Z"),
    ] {
        ing.ingest(&cdevent(id, time), Origin::CdEvents, "t")
            .await
            .unwrap();
    }
    let mut taken = ing.take_pending();
    assert_eq!((taken.rows(), ing.pending_rows()), (3, 0));
    // Input goes on while the taken rows are being committed; their identities stay known.
    assert_eq!(
        ing.ingest(&cdevent("a", "2026-02-01T01:00:00Z"), Origin::CdEvents, "t")
            .await
            .unwrap(),
        Outcome::Duplicate
    );
    ing.ingest(&cdevent("d", "2026-02-01T03:00:00Z"), Origin::CdEvents, "t")
        .await
        .unwrap();
    assert_eq!(ing.pending_rows(), 1);

    // The second date's partition cannot be written: a file stands where its directory goes.
    let blocked = dir.path().join("events/date=2026-02-02");
    std::fs::create_dir_all(blocked.parent().unwrap()).unwrap();
    std::fs::write(&blocked, b"in the way").unwrap();
    let committer = ing.committer();
    assert!(taken.commit(&committer).await.is_err());
    // A table's rows commit in one transaction: all of them are left.
    assert_eq!(taken.rows(), 3, "nothing was committed");
    assert!(read_table(&store, Table::Events).await.is_empty());

    std::fs::remove_file(&blocked).unwrap();
    let retried = taken.commit(&committer).await.unwrap();
    assert_eq!((retried.events, retried.files.len()), (3, 2));
    assert!(taken.is_empty());
    assert_eq!(ing.flush().await.unwrap().events, 1);
    let ids = stored_ids(&store).await;
    assert_eq!(ids, ["a", "b", "c", "d"]);
}

#[tokio::test]
async fn restore_merges_what_a_failed_commit_left_with_newer_rows() {
    let (_dir, store) = store();
    let mut ing = Ingester::new(store.clone(), IngesterConfig::default());
    ing.ingest(&cdevent("a", "2026-02-01T01:00:00Z"), Origin::CdEvents, "t")
        .await
        .unwrap();
    ing.ingest(b"nope", Origin::CdEvents, "t").await.unwrap();
    let taken = ing.take_pending();
    ing.ingest(&cdevent("b", "2026-02-01T02:00:00Z"), Origin::CdEvents, "t")
        .await
        .unwrap();
    ing.restore(taken);
    assert_eq!(ing.pending_rows(), 3);
    let report = ing.flush().await.unwrap();
    assert_eq!((report.events, report.dead_letters), (2, 1));
    assert_eq!(ing.pending_rows(), 0);
    assert!(!ing.should_flush());
}

/// Another writer commits rows while this ingester's flush runs and while it buffers the same
/// rows again (an import and a stream carrying the same events): the flush finds the other
/// writer's file and drops its duplicates; the rows buffered meanwhile, checked before that
/// file was known, are dropped when the flush's findings are absorbed, not committed twice.
#[tokio::test]
async fn rows_buffered_while_a_flush_finds_another_writers_file_are_not_stored_twice() {
    let (_dir, store) = store();
    let t = |h: u32| format!("2026-02-01T{h:02}:00:00Z");
    let mut ing = Ingester::new(store.clone(), IngesterConfig::default());
    ing.ingest(&cdevent("a", &t(1)), Origin::CdEvents, "t")
        .await
        .unwrap();
    let mut taken = ing.take_pending();
    // Buffered while the flush of `a` runs: b and c, checked against what was known then.
    for (id, h) in [("b", 2), ("c", 3)] {
        ing.ingest(&cdevent(id, &t(h)), Origin::CdEvents, "t")
            .await
            .unwrap();
    }
    // The other writer commits a, b and c first.
    let mut other = Ingester::new(store.clone(), IngesterConfig::default());
    for (id, h) in [("a", 1), ("b", 2), ("c", 3)] {
        other
            .ingest(&cdevent(id, &t(h)), Origin::CdEvents, "t")
            .await
            .unwrap();
    }
    assert_eq!(other.flush().await.unwrap().events, 3);

    let report = taken.commit(&ing.committer()).await.unwrap();
    assert_eq!((report.events, report.duplicates), (0, 1), "{report:?}");
    ing.absorb(&report);
    assert_eq!(ing.pending_rows(), 0, "b and c are the other writer's");
    assert_eq!(ing.flush().await.unwrap().events, 0);
    let ids = stored_ids(&store).await;
    assert_eq!(ids, ["a", "b", "c"]);
}

#[tokio::test]
async fn a_writer_done_after_many_commits_leaves_a_checkpoint_the_table_opens_from() {
    let (_dir, store) = store();
    let mut ing = Ingester::new(store.clone(), IngesterConfig::default());
    let interval = cdlake_schemas::lake::CHECKPOINT_INTERVAL;
    // The table's creation (version 0), then one commit fewer than the interval: not yet due.
    for i in 1..interval {
        let event = cdevent(&format!("e{i}"), "2026-01-01T10:00:00Z");
        ing.ingest(&event, Origin::CdEvents, "t").await.unwrap();
        ing.flush().await.unwrap();
    }
    let last = store
        .local_root()
        .unwrap()
        .join("events/_delta_log/_last_checkpoint");
    assert!(ing.checkpoint_if_due().await.unwrap().is_empty());
    assert!(!last.exists());
    let event = cdevent("last", "2026-01-02T10:00:00Z");
    ing.ingest(&event, Origin::CdEvents, "t").await.unwrap();
    ing.flush().await.unwrap();
    assert_eq!(ing.checkpoint_if_due().await.unwrap(), [Table::Events]);
    let checkpoint: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&last).unwrap()).unwrap();
    assert_eq!(checkpoint["version"], interval);
    // Done once: not again until another interval of commits.
    assert!(ing.checkpoint_if_due().await.unwrap().is_empty());
    // The table opened from the checkpoint holds every event.
    assert_eq!(stored_ids(&store).await.len() as u64, interval);
}
