//! Compaction is atomic for readers: queries running in a loop before, during and after the
//! commit that swaps a partition's small files for merged ones, and while the vacuum deletes
//! the old files, always see every row exactly once, and `count(*)` (answered from the files'
//! row counts) agrees. Two checks do not depend on timing: a query planned before the switch
//! is still reading when it lands and finishes on its own snapshot, and every version of the
//! table from before compaction to after it, read by time travel, holds each event once (so
//! no moment exists where inputs and outputs are both visible, or neither).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use arrow::array::{Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::DataType;
use cdlake_ingest::compact::{CompactOptions, compact_table, maintain};
use cdlake_ingest::{Ingester, IngesterConfig};
use cdlake_query::{Config, Engine};
use cdlake_schemas::Origin;
use cdlake_schemas::lake::{AsOf, TableLog};
use cdlake_schemas::paths::Table;
use cdlake_schemas::store::Store;
use futures::StreamExt;

const DAYS: i64 = 3;
const PER_FILE: usize = 40;
const FILES_PER_DAY: usize = 25;

fn cdevent(day: i64, n: usize) -> Vec<u8> {
    let time = chrono::DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z").unwrap()
        + chrono::Duration::days(day)
        + chrono::Duration::seconds(n as i64 * 7 % 86_000);
    serde_json::json!({
        "context": {"version": "0.4.1", "id": format!("e-{day}-{n}"), "source": "/compaction-test",
                    "type": "dev.cdevents.service.deployed.0.2.0", "timestamp": time.to_rfc3339()},
        "subject": {"id": format!("svc-{}", n % 5), "source": "/compaction-test",
                    "content": {"environment": {"id": "production"},
                                "artifactId": "pkg:oci/app@sha256:0"}}
    })
    .to_string()
    .into_bytes()
}

async fn counts(engine: &Engine) -> (i64, i64, i64) {
    let r = engine
        .sql(
            "SELECT count(*) AS n, count(DISTINCT event_id) AS d, \
             (SELECT count(*) FROM events WHERE date = '2026-11-02') AS day \
             FROM events",
        )
        .await
        .unwrap_or_else(|e| panic!("query during compaction failed: {e}"));
    let b = &r.batches[0];
    let col = |i: usize| {
        b.column(i)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .value(0)
    };
    (col(0), col(1), col(2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_see_each_row_once_while_compaction_runs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().to_str().unwrap()).unwrap();
    // Many small files: one flush per PER_FILE events, like a busy streaming ingester.
    let mut ingester = Ingester::new(store.clone(), IngesterConfig::default());
    for f in 0..FILES_PER_DAY {
        for day in 0..DAYS {
            for i in 0..PER_FILE {
                let raw = cdevent(day, f * PER_FILE + i);
                ingester
                    .ingest(&raw, Origin::CdEvents, "test")
                    .await
                    .unwrap();
            }
        }
        ingester.flush().await.unwrap();
    }
    let total = (DAYS as usize * FILES_PER_DAY * PER_FILE) as i64;
    let per_day = (FILES_PER_DAY * PER_FILE) as i64;
    let log = TableLog::open(&store, Table::Events).await.unwrap();
    let files_before = log.refresh().await.unwrap().num_files();
    assert_eq!(files_before, DAYS as usize * FILES_PER_DAY);
    assert_eq!(parquet_files(dir.path()), files_before);

    let engine = Engine::open(&store, Config::default()).await.unwrap();
    assert_eq!(counts(&engine).await, (total, total, per_day));

    let done = Arc::new(AtomicBool::new(false));
    let queries = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (engine, done, queries) = (engine.clone(), done.clone(), queries.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::SeqCst) {
                assert_eq!(counts(&engine).await, (total, total, per_day));
                queries.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    // Waits until the reader has answered `n` more queries.
    let more = |n: usize| {
        let queries = queries.clone();
        async move {
            let start = queries.load(Ordering::SeqCst);
            while queries.load(Ordering::SeqCst) < start + n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    more(2).await;
    // Long enough for the checks between the switch and the first vacuum on a loaded machine.
    let retention = Duration::from_secs(8);
    let opts = CompactOptions {
        retention: chrono::Duration::from_std(retention).unwrap(),
        min_files: 2,
        ..CompactOptions::default()
    };
    let version_before = log.latest_version().await.unwrap();
    // A query planned on the version before the switch, and still reading when it lands.
    let mut in_flight = engine
        .session()
        .sql("SELECT event_id FROM events")
        .await
        .unwrap()
        .execute_stream()
        .await
        .unwrap();
    let mut seen = Vec::new();
    let first_batch = in_flight.next().await.expect("a first batch").unwrap();
    event_ids(&first_batch, &mut seen);
    assert!(
        seen.len() < total as usize,
        "the query must still be reading when the switch lands"
    );
    // The switch: one commit removes the 75 inputs and adds 3 outputs, while queries run.
    let first = compact_table(&store, &log, &opts, |_, _| {}).await.unwrap();
    assert_eq!(first.files_in, files_before);
    assert_eq!(first.files_out, DAYS as usize);
    let version_after = log.latest_version().await.unwrap();
    assert!(version_after > version_before, "compaction committed");
    // The query planned before finishes on its snapshot: the inputs, each event once.
    while let Some(batch) = in_flight.next().await {
        event_ids(&batch.unwrap(), &mut seen);
    }
    let distinct: HashSet<&String> = seen.iter().collect();
    assert_eq!(
        (seen.len(), distinct.len()),
        (total as usize, total as usize),
        "the query that spanned the switch"
    );
    // Every version in between, read as it was: each event once at every moment.
    for version in version_before..=version_after {
        let then = Engine::open_as_of(&store, Config::default(), AsOf::Version(version))
            .await
            .unwrap();
        assert_eq!(
            counts(&then).await,
            (total, total, per_day),
            "version {version} (before compaction {version_before}, after {version_after})"
        );
    }
    more(2).await;
    // Inputs stay for queries planned on the old version until the retention passed.
    assert_eq!(parquet_files(dir.path()), files_before + DAYS as usize);
    assert_eq!(
        maintain(&log, &opts).await.unwrap(),
        0,
        "nothing past the retention yet"
    );
    tokio::time::sleep(retention + Duration::from_millis(200)).await;
    more(1).await;
    assert_eq!(maintain(&log, &opts).await.unwrap(), files_before);
    more(2).await;
    done.store(true, Ordering::SeqCst);
    reader.await.unwrap();
    assert_eq!(parquet_files(dir.path()), DAYS as usize);
    assert_eq!(counts(&engine).await, (total, total, per_day));
}

/// The `event_id`s of a batch.
fn event_ids(batch: &RecordBatch, out: &mut Vec<String>) {
    let ids = arrow::compute::cast(batch.column(0), &DataType::Utf8).unwrap();
    let ids = ids.as_any().downcast_ref::<StringArray>().unwrap();
    out.extend((0..ids.len()).map(|i| ids.value(i).to_string()));
}

/// Data files on disk (the log's own files excluded).
fn parquet_files(dir: &std::path::Path) -> usize {
    fn walk(dir: &std::path::Path, n: &mut usize) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                if !p.ends_with("_delta_log") {
                    walk(&p, n);
                }
            } else if p.extension().is_some_and(|x| x == "parquet") {
                *n += 1;
            }
        }
    }
    let mut n = 0;
    walk(&dir.join("events"), &mut n);
    n
}
