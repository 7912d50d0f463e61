//! The store as Delta Lake tables, end to end with real processes: other Delta implementations
//! (the Python `deltalake` package and Polars) read what cdlake reads, also while compaction and
//! vacuum run; several writers at once store each event once; the report as of a past version
//! is the report of then; an old store is refused until `cdlake migrate` converts it; and a
//! column added later leaves old files readable.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;
use support::*;

/// The Python with `deltalake` and `polars` (scripts/test installs them).
fn python() -> PathBuf {
    if let Ok(p) = std::env::var("CDLAKE_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = std::env::var("HOME")
        .map(|h| PathBuf::from(h).join(".cache/cdlake/venv/bin/python"))
        .unwrap_or_default();
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// What the Python `deltalake` package and Polars see in the store.
fn outside(store: &Path, version: Option<u64>) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/delta_count.py");
    let mut cmd = std::process::Command::new(python());
    cmd.arg(&script).arg(store);
    if let Some(v) = version {
        cmd.arg(v.to_string());
    }
    let out = cmd
        .output()
        .expect("run python: scripts/test installs deltalake and polars");
    assert!(
        out.status.success(),
        "the outside reader failed (run scripts/test to install deltalake and polars): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "cdlake failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A deployment of `service` at `2026-11-0<day>T<n>`, as a CDEvent with id `id`.
fn deployed(id: &str, service: &str, day: u32, n: u32) -> String {
    format!(
        r#"{{"context":{{"version":"0.4.1","id":"{id}","source":"/lake","type":"dev.cdevents.service.deployed.0.2.0","timestamp":"2026-11-{day:02}T{h:02}:{m:02}:00Z"}},"subject":{{"id":"{service}","source":"/lake","content":{{"environment":{{"id":"prod"}},"artifactId":"pkg:oci/{service}@sha256:{n}"}}}}}}"#,
        h = (n / 60) % 24,
        m = n % 60
    )
}

fn import(store: &Path, dir: &Path, name: &str, lines: &[String]) -> String {
    let file = dir.join(name);
    std::fs::write(&file, lines.join("\n")).unwrap();
    ok(cdlake(store, &["import", file.to_str().unwrap()]))
}

fn count(store: &Path) -> (u64, u64) {
    let rows = sql_json(
        store,
        "SELECT count(*) AS n, count(DISTINCT event_source || '/' || event_id) AS d FROM events",
    );
    (
        rows[0]["n"].as_u64().unwrap(),
        rows[0]["d"].as_u64().unwrap(),
    )
}

#[test]
fn outside_engines_read_what_cdlake_reads_even_while_compaction_and_vacuum_run() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    // Six imports over four days: 24 small files, with some events delivered twice.
    for batch in 0..6u32 {
        let lines: Vec<String> = (0..200u32)
            .map(|i| {
                let n = batch * 150 + i; // 50 of each batch repeat the previous one
                deployed(&format!("e{n}"), "checkout", 1 + n % 4, n)
            })
            .collect();
        import(&store, dir.path(), &format!("b{batch}.jsonl"), &lines);
    }
    let (n, distinct) = count(&store);
    assert_eq!(
        (n, distinct),
        (6 * 150 + 50, 6 * 150 + 50),
        "each event once"
    );
    let seen = outside(&store, None);
    assert_eq!(seen["events"]["deltalake"], n, "{seen}");
    assert_eq!(seen["events"]["polars"], n, "{seen}");
    assert_eq!(seen["events"]["polars_distinct"], n, "{seen}");
    assert_eq!(seen["events"]["files"], 24, "{seen}");

    // Readers in a loop while one compaction commits and a later run vacuums the inputs.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(Ordering::SeqCst) {
                let seen = outside(&store, None);
                assert_eq!(seen["events"]["deltalake"], n, "{seen}");
                assert_eq!(seen["events"]["polars"], n, "{seen}");
                assert_eq!(seen["events"]["polars_distinct"], n, "{seen}");
                reads += 1;
            }
            reads
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    let compact = |grace: &str| {
        let out = ok(cdlake(
            &store,
            &[
                "compact",
                "--json",
                "--compact-min-files",
                "2",
                "--retention-hours",
                "0",
                "--compact-grace-secs",
                grace,
            ],
        ));
        serde_json::from_str::<Value>(&out).unwrap()
    };
    let first = compact("4");
    assert_eq!(
        (first["files_in"].clone(), first["files_out"].clone()),
        (24.into(), 4.into()),
        "{first}"
    );
    assert_eq!(first["removed"], 0, "inputs kept for readers: {first}");
    std::thread::sleep(Duration::from_secs(5));
    let second = compact("4");
    assert_eq!(second["removed"], 24, "inputs vacuumed: {second}");
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    let reads = reader
        .join()
        .expect("every outside read saw each event once");
    assert!(reads >= 3, "the outside readers read {reads} times");
    let seen = outside(&store, None);
    assert_eq!(
        (
            seen["events"]["files"].clone(),
            seen["events"]["polars"].clone()
        ),
        (4.into(), n.into())
    );
    assert_eq!(count(&store), (n, n));
}

/// Compaction across processes: two `cdlake compact` runs, a renormalisation and an import at
/// once on one store. Each partition's small files are merged by one of the compactors only
/// (the other's commit is refused and dropped), and every event is stored once throughout.
#[test]
fn two_compactors_a_renormalisation_and_an_import_at_once_store_each_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    // Six imports over four days: 24 small files.
    for batch in 0..6u32 {
        let lines: Vec<String> = (0..150u32)
            .map(|i| {
                let n = batch * 150 + i;
                deployed(&format!("e{n}"), "checkout", 1 + n % 4, n)
            })
            .collect();
        import(&store, dir.path(), &format!("b{batch}.jsonl"), &lines);
    }
    assert_eq!(count(&store), (900, 900));
    // While they run, an import of 300 events, 100 of them stored already.
    let late: Vec<String> = (800..1100u32)
        .map(|n| deployed(&format!("e{n}"), "checkout", 1 + n % 4, n))
        .collect();
    let late_file = dir.path().join("late.jsonl");
    std::fs::write(&late_file, late.join("\n")).unwrap();
    let run = |args: Vec<String>| {
        let store = store.clone();
        std::thread::spawn(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            ok(cdlake(&store, &args))
        })
    };
    let compact = || {
        run(["compact", "--json", "--compact-min-files", "2"]
            .map(String::from)
            .to_vec())
    };
    let (a, b) = (compact(), compact());
    let renormalise = run(["rebuild", "--renormalise", "--json"]
        .map(String::from)
        .to_vec());
    let importer = run(vec![
        "import".to_string(),
        late_file.to_str().unwrap().to_string(),
    ]);
    let reports: Vec<Value> = [a, b]
        .into_iter()
        .map(|t| serde_json::from_str(&t.join().expect("compact ran")).unwrap())
        .collect();
    let renormalised: Value =
        serde_json::from_str(&renormalise.join().expect("rebuild ran")).unwrap();
    importer.join().expect("import ran");
    assert_eq!(count(&store), (1100, 1100), "each event once");
    // No small file was merged by both: together they merged at most the 24 files and the
    // import's (one per day), and at least the 24 (those were there before either started).
    let merged: u64 = reports
        .iter()
        .map(|r| r["files_in"].as_u64().unwrap())
        .sum();
    eprintln!("compactions: {reports:?}");
    assert!((24..=28).contains(&merged), "{reports:?}");
    // CDEvents rows are what their payloads say: the renormalisation read and rewrote none.
    let r = &renormalised["renormalised"];
    assert_eq!(
        (&r["changed"], &r["rewritten"]),
        (&0.into(), &0.into()),
        "{r}"
    );
    assert!(r["rows"].as_u64().unwrap() >= 900, "{r}");
    let seen = outside(&store, None);
    assert_eq!(seen["events"]["polars"], 1100, "{seen}");
    assert_eq!(seen["events"]["polars_distinct"], 1100, "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_ingesters_and_an_import_writing_at_once_store_each_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let nats = Nats::start(&dir.path().join("nats"));
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    cdlake_ingest::stream::ensure_stream(&js).await.unwrap();
    // 3,000 events on the stream; the import brings 2,000..4,000: a third of it twice.
    let stream_events: Vec<String> = (0..3000u32)
        .map(|n| deployed(&format!("e{n}"), &format!("svc{}", n % 9), 1 + n % 5, n))
        .collect();
    let file_events: Vec<String> = (2000..4000u32)
        .map(|n| deployed(&format!("e{n}"), &format!("svc{}", n % 9), 1 + n % 5, n))
        .collect();
    let file = dir.path().join("import.jsonl");
    std::fs::write(&file, file_events.join("\n")).unwrap();
    for chunk in stream_events.chunks(500) {
        let mut acks = Vec::new();
        for body in chunk {
            acks.push(
                js.publish(
                    "cdlake.events.cdevents.service.deployed",
                    body.clone().into(),
                )
                .await
                .unwrap(),
            );
        }
        for a in acks {
            a.await.unwrap();
        }
    }
    let s = store.to_str().unwrap().to_string();
    let url = nats.url();
    let ingest = |port: u16| {
        Service::spawn(&[
            "ingest",
            "--store",
            &s,
            "--nats",
            &url,
            "--metrics-listen",
            &format!("127.0.0.1:{port}"),
            "--max-rows",
            "250",
            "--max-age-ms",
            "100",
            "--compact-every-secs",
            "0",
        ])
    };
    let (a, b) = (ingest(free_port()), ingest(free_port()));
    let importer = {
        let (store, file) = (store.clone(), file.clone());
        tokio::task::spawn_blocking(move || cdlake(&store, &["import", file.to_str().unwrap()]))
    };
    let imported = ok(importer.await.unwrap());
    assert!(imported.contains("imported"), "{imported}");
    let drained = eventually(Duration::from_secs(90), || async {
        count(&store).0 >= 4000
    })
    .await;
    assert!(drained, "all committed: {:?}", count(&store));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(count(&store), (4000, 4000), "each event once");
    let seen = outside(&store, None);
    assert_eq!(seen["events"]["polars"], 4000, "{seen}");
    assert_eq!(seen["events"]["polars_distinct"], 4000, "{seen}");
    drop((a, b));
}

#[test]
fn the_report_as_of_a_past_version_is_the_report_of_then() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let first: Vec<String> = (0..6)
        .map(|n| deployed(&format!("a{n}"), "checkout", 1 + n, n))
        .collect();
    import(&store, dir.path(), "a.jsonl", &first);
    let version = outside(&store, None)["events"]["version"].as_u64().unwrap();
    let window = [
        "--from",
        "2026-11-01",
        "--to",
        "2026-12-01",
        "--format",
        "json",
    ];
    let dora = |extra: &[&str]| -> Value {
        let mut args = vec!["dora"];
        args.extend(window);
        args.extend(extra);
        serde_json::from_str(&ok(cdlake(&store, &args))).unwrap()
    };
    let then = dora(&[]);
    assert_eq!(then["deployment_frequency"]["deployments"], 6);
    std::thread::sleep(Duration::from_millis(1100));
    let between = chrono::Utc::now().to_rfc3339();
    std::thread::sleep(Duration::from_millis(1100));
    let second: Vec<String> = (0..4)
        .map(|n| deployed(&format!("b{n}"), "search", 10 + n, n))
        .collect();
    import(&store, dir.path(), "b.jsonl", &second);
    let now = dora(&[]);
    assert_eq!(now["deployment_frequency"]["deployments"], 10);

    let v = version.to_string();
    assert_eq!(dora(&["--as-of", &v]), then, "as of version {v}");
    assert_eq!(dora(&["--as-of", &between]), then, "as of {between}");
    let rows = sql_json_args(&store, &["--as-of", &v], "SELECT count(*) AS n FROM events");
    assert_eq!(rows[0]["n"], 6);
    let bad = cdlake(&store, &["sql", "--as-of", "last monday", "SELECT 1"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--as-of"));
    // The outside readers agree on the version.
    assert_eq!(outside(&store, Some(version))["events"]["polars"], 6);
}

fn sql_json_args(store: &Path, args: &[&str], query: &str) -> Vec<Value> {
    let mut all = vec!["sql", "--format", "json"];
    all.extend(args);
    all.push(query);
    serde_json::from_str(&ok(cdlake(store, &all))).unwrap()
}

#[test]
fn an_old_store_is_refused_until_migrated_and_then_answers_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let lines: Vec<String> = (0..40)
        .map(|n| deployed(&format!("m{n}"), "checkout", 1 + n % 3, n))
        .collect();
    import(&store, dir.path(), "m.jsonl", &lines);
    // The same files in the pre-Delta layout: Hive-style directories, no log.
    let old = dir.path().join("old");
    for entry in walk_files(&store.join("events")) {
        if entry.components().any(|c| c.as_os_str() == "_delta_log") {
            continue;
        }
        let relative = entry.strip_prefix(&store).unwrap();
        std::fs::create_dir_all(old.join(relative).parent().unwrap()).unwrap();
        std::fs::copy(&entry, old.join(relative)).unwrap();
    }
    let refused = cdlake(&old, &["sql", "SELECT count(*) FROM events"]);
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("cdlake migrate --store"), "{message}");
    let report = ok(cdlake(&old, &["migrate", "--json"]));
    let report: Value = serde_json::from_str(&report).unwrap();
    assert_eq!(report["partitions"], 3, "{report}");
    assert_eq!(count(&old), count(&store));
    assert_eq!(outside(&old, None)["events"]["polars"], 40);
    // Again: nothing to do.
    let again: Value = serde_json::from_str(&ok(cdlake(&old, &["migrate", "--json"]))).unwrap();
    assert_eq!(
        (again["partitions"].clone(), again["already"].clone()),
        (0.into(), 3.into())
    );
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn a_column_added_later_leaves_old_files_readable() {
    use arrow::array::{ArrayRef, StringArray};
    use cdlake_schemas::lake::{Change, CommitKind, NewFile, TableLog};
    use cdlake_schemas::paths::{DataFilePath, Table};
    use cdlake_schemas::store::Store;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let lines: Vec<String> = (0..5)
        .map(|n| deployed(&format!("o{n}"), "checkout", 1, n))
        .collect();
    import(&path, dir.path(), "o.jsonl", &lines);

    let store = Store::open(path.to_str().unwrap()).unwrap();
    let log = TableLog::open(&store, Table::Events).await.unwrap();
    log.add_column("build_host", deltalake_core::kernel::DataType::STRING)
        .await
        .unwrap();
    // A newer writer's file with the column.
    let event = cdlake_schemas::cdevents::parse(
        deployed("n0", "checkout", 2, 1).as_bytes(),
        cdlake_schemas::Origin::CdEvents,
        0,
    )
    .unwrap();
    let batch = cdlake_schemas::event::events_to_batch(std::slice::from_ref(&event)).unwrap();
    let mut fields: Vec<arrow::datatypes::FieldRef> = batch.schema().fields().to_vec();
    fields.push(Arc::new(arrow::datatypes::Field::new(
        "build_host",
        arrow::datatypes::DataType::Utf8,
        true,
    )));
    let schema = Arc::new(arrow::datatypes::Schema::new(fields));
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(StringArray::from(vec!["runner-7"])) as ArrayRef);
    let batch = arrow::array::RecordBatch::try_new(schema.clone(), columns).unwrap();
    let mut bytes = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut bytes, schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let file = DataFilePath::new(Table::Events, event.date(), "with-build-host");
    let size = bytes.len() as u64;
    store.put_if_absent(&file.to_string(), bytes).await.unwrap();
    let index = log.refresh().await.unwrap();
    log.commit(Change {
        read_version: index.version,
        kind: CommitKind::Append,
        add: vec![NewFile {
            path: file,
            size,
            rows: 1,
            time_range: None,
        }],
        remove: Vec::new(),
    })
    .await
    .unwrap();

    let rows = sql_json(
        &path,
        "SELECT build_host, count(*) AS n FROM events GROUP BY build_host ORDER BY build_host NULLS FIRST",
    );
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(
        (rows[0]["build_host"].clone(), rows[0]["n"].clone()),
        (Value::Null, 5.into())
    );
    assert_eq!(
        (rows[1]["build_host"].clone(), rows[1]["n"].clone()),
        ("runner-7".into(), 1.into())
    );
    // The views still read the table.
    let n = sql_u64(&path, "SELECT count(*) FROM deployments");
    assert_eq!(n, 6);
    assert_eq!(outside(&path, None)["events"]["polars"], 6);
}
