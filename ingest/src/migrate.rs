//! `cdlake migrate`: a store written before the tables became Delta Lake tables (Hive-style
//! Parquet files plus cdlake's own compaction manifests under `_cdlake/compactions/`) converted
//! in place, losing and doubling nothing.
//!
//! Per table, the files a reader of the old layout saw (the manifests hid a compaction's
//! inputs once it committed, and its outputs until then) are committed to a new Delta table
//! as they are, a batch of date partitions per transaction. A partition whose files hold the
//! same identity twice (the old layout de-duplicated at query time) is merged into new
//! de-duplicated files instead, so the table's identities are unique from its first version.
//! A partition already in the table is skipped, so an interrupted migration resumes where it
//! stopped, and running it again changes nothing. Files the old layout had hidden stay in the
//! store, untracked, until the vacuum removes them. At the end the old manifests and leases
//! are deleted.

use std::collections::{BTreeMap, HashSet};

use bytes::Bytes;
use cdlake_schemas::lake::{Change, CommitError, CommitKind, NewFile, TableLog};
use cdlake_schemas::paths::{DataFilePath, Table};
use cdlake_schemas::store::Store;
use chrono::NaiveDate;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::statistics::Statistics;
use serde::{Deserialize, Serialize};

use crate::compact::{OUTPUT_PREFIX, merge, sort_column};
use crate::parquet::{EncodeOptions, read_identity_keys};
use crate::{Error, Result};

/// Where the old layout kept compaction manifests, and leases.
const MANIFEST_DIR: &str = "_cdlake/compactions";
const LOCK_DIR: &str = "_cdlake/locks";

/// Date partitions committed per transaction.
const PARTITIONS_PER_COMMIT: usize = 100;

/// What a migration did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MigrateReport {
    /// Partitions committed by this run.
    pub partitions: usize,
    /// Partitions already in their table (an earlier, interrupted run).
    pub already: usize,
    /// Files committed as they were.
    pub files: usize,
    /// Partitions whose files held an identity twice, merged into de-duplicated files.
    pub rewritten: usize,
    /// Rows dropped as duplicates by those merges.
    pub duplicates: u64,
    /// Files the old layout hid (merged inputs, unfinished outputs), left for the vacuum.
    pub hidden: usize,
    /// Old manifests and leases deleted.
    pub state_removed: usize,
}

/// A compaction manifest of the old layout: which files it hid and which it made visible.
#[derive(Debug, Deserialize)]
struct Manifest {
    inputs: Vec<String>,
    outputs: Vec<String>,
}

/// Progress: table, partitions done, partitions in all.
pub type Progress<'a> = &'a mut dyn FnMut(Table, usize, usize);

/// Whether `store` still holds data of the old layout that `migrate` would convert.
pub async fn needed(store: &Store) -> Result<bool> {
    for table in [Table::Events, Table::DeadLetters, Table::Spans] {
        if legacy_files(store, table).await?.is_empty() {
            continue;
        }
        let log = TableLog::open_for_migration(store, table).await?;
        if !plan(store, table, &log).await?.todo.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// What is left to migrate of a table.
struct Plan {
    todo: Vec<(NaiveDate, Vec<(DataFilePath, u64)>)>,
    already: usize,
    hidden: usize,
}

/// The partitions of the old layout not yet in the table, with the files a reader of the old
/// layout saw in them.
async fn plan(store: &Store, table: Table, log: &TableLog) -> Result<Plan> {
    let files = legacy_files(store, table).await?;
    let index = log.refresh().await?;
    let done_dates: HashSet<NaiveDate> = index.dates().collect();
    let (hidden_by, committed_outputs) = manifests(store, table).await?;
    let mut by_date: BTreeMap<NaiveDate, Vec<(DataFilePath, u64)>> = BTreeMap::new();
    let mut hidden = 0;
    for (path, size) in files {
        let name = path.to_string();
        let output_without_manifest =
            path.id.starts_with(OUTPUT_PREFIX) && !committed_outputs.contains(&name);
        if hidden_by.contains(&name) || output_without_manifest {
            hidden += 1;
            continue;
        }
        by_date.entry(path.date).or_default().push((path, size));
    }
    let mut already = 0;
    let todo = by_date
        .into_iter()
        .filter(|(date, _)| {
            let done = done_dates.contains(date);
            already += usize::from(done);
            !done
        })
        .collect();
    Ok(Plan {
        todo,
        already,
        hidden,
    })
}

/// Convert every table of `store`.
pub async fn migrate(store: &Store, progress: Progress<'_>) -> Result<MigrateReport> {
    let mut report = MigrateReport::default();
    for table in [Table::Events, Table::DeadLetters, Table::Spans] {
        migrate_table(store, table, &mut report, progress).await?;
    }
    for prefix in [MANIFEST_DIR, LOCK_DIR] {
        for path in store.list(prefix).await? {
            store.delete(&path).await?;
            report.state_removed += 1;
        }
    }
    Ok(report)
}

/// The old layout's data files of a table, with their sizes (anything under `_delta_log/` or
/// not named as cdlake names files is not one).
async fn legacy_files(store: &Store, table: Table) -> Result<Vec<(DataFilePath, u64)>> {
    Ok(store
        .list_meta(&table.prefix())
        .await?
        .into_iter()
        .filter_map(|m| Some((DataFilePath::parse(m.location.as_ref())?, m.size)))
        .collect())
}

async fn migrate_table(
    store: &Store,
    table: Table,
    report: &mut MigrateReport,
    progress: Progress<'_>,
) -> Result<()> {
    let log = TableLog::open_for_migration(store, table).await?;
    let plan = plan(store, table, &log).await?;
    report.already += plan.already;
    report.hidden += plan.hidden;
    let total = plan.todo.len();
    progress(table, 0, total);
    let mut done = 0;
    for chunk in plan.todo.chunks(PARTITIONS_PER_COMMIT) {
        let mut adds = Vec::new();
        for (date, files) in chunk {
            adds.extend(partition_files(store, table, *date, files, report).await?);
        }
        commit(&log, adds).await?;
        report.partitions += chunk.len();
        done += chunk.len();
        progress(table, done, total);
    }
    Ok(())
}

/// The old manifests of `table`: the inputs they hid, and the outputs they made visible.
async fn manifests(store: &Store, table: Table) -> Result<(HashSet<String>, HashSet<String>)> {
    let (mut hidden, mut outputs) = (HashSet::new(), HashSet::new());
    for path in store
        .list(&format!("{MANIFEST_DIR}/{}", table.prefix()))
        .await?
    {
        let Some(bytes) = store.get(&path).await? else {
            continue;
        };
        match serde_json::from_slice::<Manifest>(&bytes) {
            Ok(m) => {
                hidden.extend(m.inputs);
                outputs.extend(m.outputs);
            }
            Err(e) => tracing::warn!(path, error = %e, "Ignoring an unreadable old manifest."),
        }
    }
    Ok((hidden, outputs))
}

/// The files to commit for one partition: its files as they are, or, when they hold an
/// identity twice, new de-duplicated files merged from them.
async fn partition_files(
    store: &Store,
    table: Table,
    date: NaiveDate,
    files: &[(DataFilePath, u64)],
    report: &mut MigrateReport,
) -> Result<Vec<NewFile>> {
    let mut contents = Vec::with_capacity(files.len());
    let mut keys: HashSet<u128> = HashSet::new();
    let mut twice = false;
    for (path, size) in files {
        let name = path.to_string();
        let Some(bytes) = store.get(&name).await? else {
            continue;
        };
        let bytes = Bytes::from(bytes);
        if !twice && table != Table::DeadLetters {
            let found =
                read_identity_keys(bytes.to_vec(), table).map_err(|source| Error::ReadParquet {
                    path: name.clone(),
                    source,
                })?;
            for k in found {
                twice |= !keys.insert(k);
            }
        }
        contents.push((path.clone(), *size, bytes));
    }
    if !twice {
        report.files += contents.len();
        return contents
            .into_iter()
            .map(|(path, size, bytes)| describe(table, path, size, bytes))
            .collect();
    }
    let id = format!("{OUTPUT_PREFIX}migrate-{}", date.format("%Y%m%d"));
    let inputs: Vec<(String, Bytes)> = contents
        .into_iter()
        .map(|(p, _, b)| (p.to_string(), b))
        .collect();
    let merged = tokio::task::spawn_blocking(move || {
        merge(
            table,
            date,
            &id,
            inputs,
            128 << 20,
            &EncodeOptions::default(),
        )
    })
    .await??;
    report.rewritten += 1;
    report.duplicates += merged.rows_in - merged.rows_out;
    let mut out = Vec::with_capacity(merged.outputs.len());
    for o in merged.outputs {
        store
            .put_if_absent(&o.path.to_string(), o.bytes.clone())
            .await?;
        out.push(NewFile {
            path: o.path,
            size: o.bytes.len() as u64,
            rows: o.rows,
            time_range: o.time_range,
        });
    }
    Ok(out)
}

/// A file as it is: its rows and time range from its footer.
fn describe(table: Table, path: DataFilePath, size: u64, bytes: Bytes) -> Result<NewFile> {
    let name = path.to_string();
    let read_err = |source| Error::ReadParquet {
        path: name.clone(),
        source,
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(read_err)?;
    let meta = builder.metadata();
    let rows = meta.file_metadata().num_rows().max(0) as u64;
    let column = sort_column(table);
    let index = meta
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.name() == column);
    let mut range: Option<(i64, i64)> = None;
    for rg in meta.row_groups() {
        let Some(Statistics::Int64(s)) = index.and_then(|i| rg.column(i).statistics()) else {
            range = None;
            break;
        };
        let (Some(lo), Some(hi)) = (s.min_opt(), s.max_opt()) else {
            range = None;
            break;
        };
        range = Some(match range {
            Some((a, b)) => (a.min(*lo), b.max(*hi)),
            None => (*lo, *hi),
        });
    }
    Ok(NewFile {
        path,
        size,
        rows,
        time_range: range,
    })
}

async fn commit(log: &TableLog, add: Vec<NewFile>) -> Result<()> {
    if add.is_empty() {
        return Ok(());
    }
    loop {
        let index = log.refresh().await?;
        let change = Change {
            read_version: index.version,
            kind: CommitKind::Append,
            add: add.clone(),
            remove: Vec::new(),
        };
        match log.commit(change).await {
            Ok(_) => return Ok(()),
            Err(CommitError::Conflict { .. }) => continue,
            Err(e) => return Err(Error::Commit(Box::new(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::ingester::Ingester;
    use crate::parquet::{encode, writer_properties};
    use cdlake_schemas::event::{events_schema, events_to_batch};
    use cdlake_schemas::{Event, Origin};

    fn event(n: u64, day: u32) -> Event {
        let t = NaiveDate::from_ymd_opt(2026, 10, day)
            .unwrap()
            .and_hms_opt(1, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_micros();
        Event {
            event_id: format!("e{n}"),
            event_source: "/old".into(),
            event_type: "dev.cdevents.service.deployed.0.2.0".into(),
            subject: "service".into(),
            predicate: "deployed".into(),
            spec_version: "0.4.1".into(),
            origin: "cdevents".into(),
            time: t + n as i64,
            ingested_at: t,
            subject_id: "checkout".into(),
            payload: "{}".into(),
            ..Default::default()
        }
    }

    /// A file of the old layout, as the old ingester named and wrote it.
    async fn old_file(store: &Store, day: u32, id: &str, events: Vec<Event>) -> String {
        let schema = events_schema();
        let batch = events_to_batch(&events).unwrap();
        let bytes = encode(
            &schema,
            &[batch],
            writer_properties(&schema, "time", &EncodeOptions::default()),
        )
        .unwrap();
        let date = NaiveDate::from_ymd_opt(2026, 10, day).unwrap();
        let path = DataFilePath::new(Table::Events, date, id).to_string();
        store.put_if_absent(&path, bytes).await.unwrap();
        path
    }

    #[tokio::test]
    async fn an_old_store_converts_in_place_losing_and_doubling_nothing_and_again_changes_nothing()
    {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap()).unwrap();
        // Day 1: two files, one event in both (a duplicate the old layout kept).
        old_file(&store, 1, "a", (0..3).map(|n| event(n, 1)).collect()).await;
        old_file(&store, 1, "b", (2..5).map(|n| event(n, 1)).collect()).await;
        // Day 2: a compaction whose manifest hides its input.
        let input = old_file(&store, 2, "c", (10..12).map(|n| event(n, 2)).collect()).await;
        let output = old_file(
            &store,
            2,
            "compact-x-0",
            (10..12).map(|n| event(n, 2)).collect(),
        )
        .await;
        store
            .put_if_absent(
                "_cdlake/compactions/events/date=2026-10-02/compact-x.json",
                serde_json::to_vec(&serde_json::json!({"inputs": [input], "outputs": [output]}))
                    .unwrap(),
            )
            .await
            .unwrap();
        // An unfinished compaction's output (no manifest): invisible in the old layout.
        old_file(
            &store,
            2,
            "compact-y-0",
            (10..12).map(|n| event(n, 2)).collect(),
        )
        .await;

        // Every other command refuses the old layout and says what to run.
        let e = TableLog::open(&store, Table::Events).await.unwrap_err();
        assert!(e.to_string().contains("cdlake migrate"), "{e}");
        assert!(needed(&store).await.unwrap());

        let report = migrate(&store, &mut |_, _, _| {}).await.unwrap();
        assert_eq!(report.partitions, 2, "{report:?}");
        assert_eq!((report.rewritten, report.duplicates), (1, 1), "{report:?}");
        assert_eq!(report.hidden, 2, "{report:?}");
        assert_eq!(report.state_removed, 1, "{report:?}");
        assert!(!needed(&store).await.unwrap());

        // The ingester now stores nothing twice: the old rows are known.
        let mut ing = Ingester::new(store.clone(), crate::IngesterConfig::default());
        let again = r#"{"context":{"version":"0.4.1","id":"e4","source":"/old","type":"dev.cdevents.service.deployed.0.2.0","timestamp":"2026-10-01T01:00:00.000004Z"},"subject":{"id":"checkout","content":{}}}"#;
        assert_eq!(
            ing.ingest(again.as_bytes(), Origin::CdEvents, "t")
                .await
                .unwrap(),
            crate::Outcome::Duplicate
        );

        let log = TableLog::open(&store, Table::Events).await.unwrap();
        let index = log.refresh().await.unwrap();
        let rows: u64 = index.all().map(|f| f.rows.unwrap()).sum();
        assert_eq!(rows, 5 + 2, "each event once");
        let version = index.version;

        // Again: nothing to do, nothing changes.
        let report = migrate(&store, &mut |_, _, _| {}).await.unwrap();
        assert_eq!((report.partitions, report.already), (0, 2), "{report:?}");
        assert_eq!(log.refresh().await.unwrap().version, version);
    }

    #[tokio::test]
    async fn an_interrupted_migration_resumes_where_it_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap()).unwrap();
        for day in 1..=3 {
            old_file(&store, day, "f", vec![event(u64::from(day), day)]).await;
        }
        // A run that committed day 1 only, then stopped.
        let log = TableLog::open_for_migration(&store, Table::Events)
            .await
            .unwrap();
        let mut report = MigrateReport::default();
        let files = legacy_files(&store, Table::Events).await.unwrap();
        let day1: Vec<(DataFilePath, u64)> = files
            .into_iter()
            .filter(|(p, _)| p.date.format("%d").to_string() == "01")
            .collect();
        let add = partition_files(&store, Table::Events, day1[0].0.date, &day1, &mut report)
            .await
            .unwrap();
        commit(&log, add).await.unwrap();

        let report = migrate(&store, &mut |_, _, _| {}).await.unwrap();
        assert_eq!((report.partitions, report.already), (2, 1), "{report:?}");
        let index = log.refresh().await.unwrap();
        assert_eq!(index.num_files(), 3);
        let paths: HashMap<String, u64> = index
            .all()
            .map(|f| (f.path.to_string(), f.rows.unwrap()))
            .collect();
        assert_eq!(paths.values().sum::<u64>(), 3);
    }
}
