use super::*;

fn date(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, d).unwrap()
}

/// Put a (content-free) file in the store and describe it for a commit.
async fn put(store: &Store, d: u32, id: &str) -> NewFile {
    let path = DataFilePath::new(Table::Events, date(d), id);
    let bytes = format!("file {id}").into_bytes();
    let size = bytes.len() as u64;
    store
        .put_if_absent(&path.to_string(), bytes)
        .await
        .expect("put");
    NewFile {
        path,
        size,
        rows: 3,
        time_range: Some((1_795_000_000_000_000, 1_795_000_100_000_000)),
    }
}

fn append(read_version: u64, add: Vec<NewFile>) -> Change {
    Change {
        read_version,
        kind: CommitKind::Append,
        add,
        remove: Vec::new(),
    }
}

#[tokio::test]
async fn a_new_store_gets_delta_tables_and_commits_land_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().to_str().unwrap()).unwrap();
    let log = TableLog::open(&store, Table::Events).await.unwrap();
    assert!(
        dir.path()
            .join("events/_delta_log/00000000000000000000.json")
            .exists()
    );
    let index = log.refresh().await.unwrap();
    assert_eq!((index.version, index.num_files()), (0, 0));

    let a = put(&store, 1, "a").await;
    let b = put(&store, 2, "b").await;
    let v = log.commit(append(0, vec![a.clone(), b])).await.unwrap();
    assert_eq!(v, 1);
    let index = log.index().await;
    assert_eq!(index.files(date(1)).len(), 1);
    assert_eq!(index.files(date(1))[0].path, a.path);
    assert_eq!(index.files(date(1))[0].rows, Some(3));
    assert_eq!(index.dates().collect::<Vec<_>>(), [date(1), date(2)]);

    // The commit is plain Delta: the Add names the file under its partition, with stats.
    let log_text = std::fs::read_to_string(
        dir.path()
            .join("events/_delta_log/00000000000000000001.json"),
    )
    .unwrap();
    assert!(
        log_text.contains(r#""path":"date=2026-11-01/a.parquet""#),
        "{log_text}"
    );
    assert!(log_text.contains(r#"\"numRecords\":3"#), "{log_text}");
    assert!(
        log_text.contains(r#""partitionValues":{"date":"2026-11-01"}"#),
        "{log_text}"
    );

    // Another process opening the store sees the same table.
    let other = TableLog::open(&store, Table::Events).await.unwrap();
    assert_eq!(other.index().await.num_files(), 2);
}

#[tokio::test]
async fn a_commit_checked_against_an_old_version_is_refused_until_the_writer_looks_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().to_str().unwrap()).unwrap();
    let first = TableLog::open(&store, Table::Events).await.unwrap();
    let second = TableLog::open(&store, Table::Events).await.unwrap();
    let a = put(&store, 1, "a").await;
    assert_eq!(first.commit(append(0, vec![a])).await.unwrap(), 1);

    // The second writer checked its rows against version 0: refused, nothing written.
    let b = put(&store, 1, "b").await;
    let e = second
        .commit(append(0, vec![b.clone()]))
        .await
        .expect_err("a newer version exists");
    assert!(matches!(e, CommitError::Conflict { latest: 1, .. }), "{e}");
    assert_eq!(
        TableLog::open(&store, Table::Events)
            .await
            .unwrap()
            .index()
            .await
            .num_files(),
        1
    );

    // After looking at version 1 it may commit.
    let index = second.refresh().await.unwrap();
    assert_eq!(index.version, 1);
    assert_eq!(second.commit(append(1, vec![b])).await.unwrap(), 2);
    assert_eq!(first.refresh().await.unwrap().files(date(1)).len(), 2);
}

#[tokio::test]
async fn two_processes_creating_a_table_at_once_make_one_table() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().to_str().unwrap()).unwrap();
    let (a, b) = tokio::join!(
        TableLog::open(&store, Table::Spans),
        TableLog::open(&store, Table::Spans)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.index().await.version, 0);
    assert_eq!(b.index().await.version, 0);
    assert!(
        !dir.path()
            .join("spans/_delta_log/00000000000000000001.json")
            .exists()
    );
}

#[tokio::test]
async fn a_store_of_the_old_layout_is_refused_naming_migrate() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().to_str().unwrap()).unwrap();
    store
        .put_if_absent("events/date=2026-11-01/old.parquet", b"x".to_vec())
        .await
        .unwrap();
    let e = TableLog::open(&store, Table::Events)
        .await
        .expect_err("legacy");
    assert!(e.to_string().contains("cdlake migrate --store"), "{e}");
    assert!(!dir.path().join("events/_delta_log").exists());
}

#[tokio::test]
async fn the_tail_sees_new_rows_and_not_compactions_and_time_travel_reads_old_versions() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().to_str().unwrap()).unwrap();
    let log = TableLog::open(&store, Table::Events).await.unwrap();
    let a = put(&store, 1, "a").await;
    let b = put(&store, 1, "b").await;
    log.commit(append(0, vec![a.clone()])).await.unwrap();
    log.commit(append(1, vec![b.clone()])).await.unwrap();
    let merged = put(&store, 1, "compact-ab-0").await;
    let index = log.index().await;
    let compact = Change {
        read_version: 2,
        kind: CommitKind::Compact,
        add: vec![merged.clone()],
        remove: index.files(date(1)).to_vec(),
    };
    assert_eq!(log.commit(compact).await.unwrap(), 3);
    let index = log.index().await;
    assert_eq!(
        index
            .files(date(1))
            .iter()
            .map(|f| &f.path)
            .collect::<Vec<_>>(),
        [&merged.path]
    );

    let added = log.added_since(0).await.unwrap();
    assert_eq!(
        added,
        vec![
            (1, vec![a.path.clone()]),
            (2, vec![b.path.clone()]),
            (3, vec![])
        ]
    );

    let then = TableLog::open_as_of(&store, Table::Events, AsOf::Version(1))
        .await
        .unwrap();
    assert!(then.is_pinned());
    let old = then.refresh().await.unwrap();
    assert_eq!(old.version, 1);
    assert_eq!(old.files(date(1))[0].path, a.path);
}

#[tokio::test]
async fn maintenance_vacuums_what_no_version_references_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().to_str().unwrap()).unwrap();
    let log = TableLog::open(&store, Table::Events).await.unwrap();
    let a = put(&store, 1, "a").await;
    log.commit(append(0, vec![a.clone()])).await.unwrap();
    let merged = put(&store, 1, "m").await;
    let remove = log.index().await.files(date(1)).to_vec();
    log.commit(Change {
        read_version: 1,
        kind: CommitKind::Compact,
        add: vec![merged.clone()],
        remove,
    })
    .await
    .unwrap();
    // Put by a writer that crashed before committing.
    let orphan = put(&store, 1, "orphan").await;
    let deleted = log.maintain(chrono::Duration::zero()).await.unwrap();
    let on_disk = |p: &DataFilePath| dir.path().join(p.to_string()).exists();
    assert!(
        !on_disk(&a.path),
        "the compacted input is gone: {deleted:?}"
    );
    assert!(
        !on_disk(&orphan.path),
        "the uncommitted file is gone: {deleted:?}"
    );
    assert!(on_disk(&merged.path), "the active file stays");
    assert_eq!(log.refresh().await.unwrap().files(date(1)).len(), 1);
}

#[test]
fn as_of_reads_versions_and_times() {
    assert_eq!(AsOf::parse("42"), Some(AsOf::Version(42)));
    assert_eq!(
        AsOf::parse("2026-11-30"),
        Some(AsOf::Time(
            DateTime::parse_from_rfc3339("2026-11-30T00:00:00Z")
                .unwrap()
                .with_timezone(&Utc)
        ))
    );
    assert!(matches!(
        AsOf::parse("2026-11-30T12:00:00+01:00"),
        Some(AsOf::Time(_))
    ));
    assert_eq!(AsOf::parse("last monday"), None);
}

/// A table written by a cdlake from before `events.attempt`: its first commit's schema without
/// that column.
fn drop_column_from_first_commit(dir: &std::path::Path, column: &str) {
    let path = dir.join("events/_delta_log/00000000000000000000.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            let mut action: serde_json::Value = serde_json::from_str(line).unwrap();
            if let Some(meta) = action.get_mut("metaData") {
                let mut schema: serde_json::Value =
                    serde_json::from_str(meta["schemaString"].as_str().unwrap()).unwrap();
                let fields = schema["fields"].as_array_mut().unwrap();
                let before = fields.len();
                fields.retain(|f| f["name"] != column);
                assert_eq!(fields.len(), before - 1, "the column was in the schema");
                meta["schemaString"] = schema.to_string().into();
            }
            action.to_string()
        })
        .collect();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
}

fn column_names(log_dir: &std::path::Path, version: u64) -> Vec<String> {
    let text = std::fs::read_to_string(log_dir.join(format!("{version:020}.json"))).unwrap();
    let meta = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find_map(|a| a.get("metaData").cloned())
        .expect("a metaData action");
    let schema: serde_json::Value =
        serde_json::from_str(meta["schemaString"].as_str().unwrap()).unwrap();
    schema["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_table_from_an_older_cdlake_gets_the_new_columns_appended_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().to_str().unwrap()).unwrap();
    drop(TableLog::open(&store, Table::Events).await.unwrap());
    // The columns added since the first release, as a table created before them lacks them.
    let late = ["attempt", "labels", "reverts", "branch", "first_commit_at"];
    for column in late {
        drop_column_from_first_commit(dir.path(), column);
    }
    let log_dir = dir.path().join("events/_delta_log");
    assert!(!column_names(&log_dir, 0).contains(&"attempt".to_string()));
    assert!(!column_names(&log_dir, 0).contains(&"reverts".to_string()));

    let log = TableLog::open(&store, Table::Events).await.unwrap();
    assert_eq!(log.refresh().await.unwrap().version, 1, "one schema change");
    let columns = column_names(&log_dir, 1);
    let mut want: Vec<String> = crate::event::EVENT_COLUMNS
        .iter()
        .map(|c| c.to_string())
        .collect();
    // The upgrade appends after the partition column; a table created now has the partition
    // column last. Readers find columns by name, so only the set and the file columns' order
    // matter.
    want.insert(want.len() - late.len(), Table::PARTITION_COLUMN.to_string());
    assert_eq!(columns, want);

    // Opening again changes nothing; a file of the old schema still commits.
    let again = TableLog::open(&store, Table::Events).await.unwrap();
    assert_eq!(again.refresh().await.unwrap().version, 1);
    let a = put(&store, 1, "old-writer").await;
    assert_eq!(again.commit(append(1, vec![a])).await.unwrap(), 2);
}
