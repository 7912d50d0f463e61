//! The `report_events` read model answers exactly as `events` does, also when some months are
//! current and others are not (a late event, a compaction, a file gone): the report from a
//! store with the read model equals the report after the read model is deleted.

mod support;
use support::ingest;

use cdlake_ingest::compact::{CompactOptions, compact_table};
use cdlake_query::read_model::{self, PREFIX, ReadStats};
use cdlake_query::{Config, DoraRequest, Engine, GroupBy};
use cdlake_schemas::lake::TableLog;
use cdlake_schemas::paths::Table;
use cdlake_schemas::store::Store;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

fn event(id: &str, ty: &str, subject: &str, time: &str, content: Value) -> String {
    support::cdevent("/read-model-test", id, ty, subject, time, content)
}

fn deployed(id: &str, service: &str, time: &str, artifact: &str) -> String {
    event(
        id,
        "service.deployed",
        service,
        time,
        json!({"environment": {"id": "production"}, "artifactId": artifact}),
    )
}

fn incident(id: &str, incident: &str, service: &str, time: &str) -> String {
    event(
        id,
        "incident.detected",
        incident,
        time,
        json!({"environment": {"id": "production"}, "service": {"id": service}}),
    )
}

fn merged(id: &str, change: &str, time: &str) -> String {
    event(
        id,
        "change.merged",
        change,
        time,
        json!({"repository": {"id": "shop"}}),
    )
}

fn packaged(id: &str, artifact: &str, change: &str, time: &str) -> String {
    event(
        id,
        "artifact.packaged",
        artifact,
        time,
        json!({"change": {"id": change, "source": "/read-model-test"}}),
    )
}

/// A January of one change built, deployed to production and failed by an incident.
fn january() -> Vec<String> {
    vec![
        merged("m1", "shop/1", "2026-01-04T09:00:00Z"),
        packaged("p1", "pkg:oci/web@1", "shop/1", "2026-01-04T10:00:00Z"),
        deployed("d1", "web", "2026-01-05T10:00:00Z", "pkg:oci/web@1"),
        incident("i1", "inc-1", "web", "2026-01-05T12:00:00Z"),
    ]
}

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// The report over January and February 2026, by service, as JSON.
async fn report(store: &Store) -> Value {
    let engine = Engine::open(store, Config::default()).await.unwrap();
    let report = engine
        .dora(&DoraRequest {
            from: t("2026-01-01T00:00:00Z"),
            to: t("2026-03-01T00:00:00Z"),
            by: Some(GroupBy::Service),
            then_by: None,
        })
        .await
        .unwrap();
    serde_json::to_value(report).unwrap()
}

/// The report with the read model deleted: every month read from `events`.
async fn report_from_events(store: &Store) -> Value {
    let dir = store.local_root().unwrap().join(PREFIX);
    let kept = tempfile::tempdir().unwrap();
    let moved = kept.path().join("report_events");
    if dir.exists() {
        std::fs::rename(&dir, &moved).unwrap();
    }
    assert_eq!(read_model::coverage(store).await.unwrap().months_held, 0);
    let v = report(store).await;
    if moved.exists() {
        std::fs::rename(&moved, &dir).unwrap();
    }
    v
}

fn deployments(report: &Value) -> u64 {
    report["deployment_frequency"]["deployments"]
        .as_u64()
        .unwrap_or_else(|| panic!("no deployment count in {report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn months_current_or_not_answer_as_events_does() {
    let (_dir, store) = support::temp_store();
    let config = Config::default();
    ingest(
        &store,
        &[
            january().as_slice(),
            &[
                merged("m2", "shop/2", "2026-02-02T09:00:00Z"),
                packaged("p2", "pkg:oci/web@2", "shop/2", "2026-02-02T10:00:00Z"),
                deployed("d2", "web", "2026-02-03T10:00:00Z", "pkg:oci/web@2"),
                deployed("d3", "api", "2026-02-04T10:00:00Z", "pkg:oci/api@1"),
            ],
        ]
        .concat(),
    )
    .await;
    let before = report(&store).await;
    assert_eq!(deployments(&before), 3);

    // Built: both months come from the read model, with the same answer.
    let built = read_model::refresh_store(&store, &config, read_model::Scope::ALL, |_, _| {})
        .await
        .unwrap();
    assert_eq!((built.built, built.current), (2, 0), "{built:?}");
    assert_eq!(
        read_model::coverage(&store).await.unwrap(),
        ReadStats {
            months_held: 2,
            months_read: 0
        }
    );
    assert_eq!(report(&store).await, before);
    // Again: nothing to build.
    let again = read_model::refresh_store(&store, &config, read_model::Scope::ALL, |_, _| {})
        .await
        .unwrap();
    assert_eq!((again.built, again.current), (0, 2), "{again:?}");
    // `--from 2026-02`: February derived again, over its own file, with the same answer.
    let february = read_model::refresh_store(
        &store,
        &config,
        read_model::Scope {
            again_from: Some("2026-02"),
            ..read_model::Scope::ALL
        },
        |_, _| {},
    )
    .await
    .unwrap();
    assert_eq!((february.built, february.current), (1, 1), "{february:?}");
    assert_eq!(read_model::coverage(&store).await.unwrap().months_held, 2);
    assert_eq!(report(&store).await, before);

    // A late deployment and incident in January: January is read from `events`, February
    // from the read model, and the answer counts them.
    ingest(
        &store,
        &[
            deployed("d0", "web", "2026-01-20T10:00:00Z", "pkg:oci/web@1"),
            incident("i2", "inc-2", "api", "2026-02-04T11:00:00Z"),
        ],
    )
    .await;
    let coverage = read_model::coverage(&store).await.unwrap();
    assert_eq!(
        coverage,
        ReadStats {
            months_held: 0,
            months_read: 2
        },
        "both months got an event"
    );
    ingest(
        &store,
        &[deployed(
            "d4",
            "api",
            "2026-01-21T10:00:00Z",
            "pkg:oci/api@1",
        )],
    )
    .await;
    read_model::refresh_store(&store, &config, read_model::Scope::ALL, |_, _| {})
        .await
        .unwrap();
    ingest(
        &store,
        &[deployed(
            "d5",
            "web",
            "2026-01-22T10:00:00Z",
            "pkg:oci/web@2",
        )],
    )
    .await;
    assert_eq!(
        read_model::coverage(&store).await.unwrap(),
        ReadStats {
            months_held: 1,
            months_read: 1
        }
    );
    let mixed = report(&store).await;
    assert_eq!(deployments(&mixed), 6);
    assert_eq!(mixed, report_from_events(&store).await);

    // A compaction changes January's files: January is read from `events` again.
    let log = TableLog::open(&store, Table::Events).await.unwrap();
    let compacted = compact_table(
        &store,
        &log,
        &CompactOptions {
            min_files: 2,
            ..CompactOptions::default()
        },
        |_, _| {},
    )
    .await
    .unwrap();
    assert!(compacted.files_in > 0, "{compacted:?}");
    assert_eq!(report(&store).await, mixed);
    read_model::refresh_store(&store, &config, read_model::Scope::ALL, |_, _| {})
        .await
        .unwrap();
    assert_eq!(read_model::coverage(&store).await.unwrap().months_read, 0);
    assert_eq!(report(&store).await, mixed);

    // A file that vanished (deleted by hand, or by a refresher) is read from `events`.
    let february: Vec<String> = store
        .list(PREFIX)
        .await
        .unwrap()
        .into_iter()
        .filter(|p| p.contains("month=2026-02/"))
        .collect();
    assert!(!february.is_empty());
    for f in &february {
        store.delete(f).await.unwrap();
    }
    assert_eq!(read_model::coverage(&store).await.unwrap().months_read, 1);
    assert_eq!(report(&store).await, mixed);
}

/// The background refresher derives a changed month at its next look, except the hot months
/// (the current and the previous, which every commit changes): those wait for their turn and
/// are answered from `events` meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_refresher_derives_changed_months_at_once_and_hot_months_in_turn() {
    use std::sync::atomic::Ordering::Relaxed;
    let (_dir, store) = support::temp_store();
    // Months well away from the hot ones (the current and the previous), whenever this runs.
    let now = Utc::now();
    let old = |days: i64| (now - chrono::Duration::days(days)).to_rfc3339();
    ingest(
        &store,
        &[
            deployed("d1", "web", &old(200), "pkg:oci/web@1"),
            deployed("d2", "web", &now.to_rfc3339(), "pkg:oci/web@2"),
        ],
    )
    .await;
    let engine = Engine::open(&store, Config::default()).await.unwrap();
    let mut refresher =
        read_model::Refresher::new(store.clone(), engine, std::time::Duration::from_secs(3600));
    let status = refresher.status();

    // First look: everything is due.
    let first = refresher.tick().await.unwrap().expect("a first look works");
    for (model, r) in &first {
        assert_eq!((r.built, r.waiting), (2, 0), "{model:?}: {r:?}");
    }
    assert_eq!(first.len(), read_model::Model::ALL.len());
    // Nothing changed: no work, not even a listing.
    assert_eq!(refresher.tick().await.unwrap(), None);

    // Old events (a spray, an import) and a new one.
    ingest(
        &store,
        &[
            deployed("d3", "web", &old(400), "pkg:oci/web@0"),
            // A second after d1: its month.
            deployed(
                "d4",
                "web",
                &(now - chrono::Duration::days(200) + chrono::Duration::seconds(1)).to_rfc3339(),
                "pkg:oci/web@1",
            ),
            deployed("d5", "web", &now.to_rfc3339(), "pkg:oci/web@2"),
        ],
    )
    .await;
    let second = refresher.tick().await.unwrap().expect("the store changed");
    for (model, r) in &second {
        assert_eq!(
            (r.built, r.waiting),
            (2, 1),
            "{model:?}: the months 400 and about 200 days ago built, the current month waits: {r:?}"
        );
        let s = status.of(*model);
        assert_eq!(s.months_stale.load(Relaxed), 1);
        assert_eq!(s.months_current.load(Relaxed), 2);
        assert_eq!(s.months_built.load(Relaxed), 4);
    }
    assert!(
        status
            .render()
            .contains("cdlake_read_model_months{table=\"run_events\",state=\"stale\"} 1\n"),
        "{}",
        status.render()
    );
    assert_eq!(
        read_model::coverage(&store).await.unwrap(),
        ReadStats {
            months_held: 2,
            months_read: 1
        }
    );
}

fn run_event(id: &str, predicate: &str, run: &str, time: &str, outcome: Option<&str>) -> String {
    let mut content = json!({"pipelineName": "build"});
    if let Some(o) = outcome {
        content["outcome"] = json!(o);
    }
    event(id, &format!("pipelinerun.{predicate}"), run, time, content)
}

/// The runs as the engine answers them now, as JSON rows.
async fn runs(store: &Store) -> Value {
    let engine = Engine::open(store, Config::default()).await.unwrap();
    let result = engine
        .sql(
            "SELECT run_id, CAST(started_at AS VARCHAR) AS started, duration_seconds, outcome
             FROM pipeline_runs ORDER BY run_id",
        )
        .await
        .unwrap();
    let bytes =
        cdlake_query::format::render(&result, cdlake_query::format::Format::Json, 64).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// `pipeline_runs` and `task_runs` read `run_events` through its read model: a month held
/// and a month changed since answer as `events` does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_read_through_the_read_model_answer_as_events_does() {
    let (_dir, store) = support::temp_store();
    let config = Config::default();
    ingest(
        &store,
        &[
            run_event("a1", "started", "r1", "2026-01-10T09:00:00Z", None),
            run_event(
                "a2",
                "finished",
                "r1",
                "2026-01-10T09:10:00Z",
                Some("success"),
            ),
            run_event("b1", "started", "r2", "2026-02-10T09:00:00Z", None),
        ],
    )
    .await;
    let from_events = runs(&store).await;
    assert_eq!(
        from_events.as_array().map(Vec::len),
        Some(2),
        "{from_events}"
    );
    read_model::refresh_models(
        &store,
        &config,
        &read_model::Model::ALL,
        read_model::Scope::ALL,
        |_, _, _| {},
    )
    .await
    .unwrap();
    let held = read_model::coverage_of(&store, read_model::Model::RunEvents)
        .await
        .unwrap();
    assert_eq!((held.months_held, held.months_read), (2, 0));
    assert_eq!(runs(&store).await, from_events);

    // r2 finishes, late: February is read from `events`, January from its file.
    ingest(
        &store,
        &[run_event(
            "b2",
            "finished",
            "r2",
            "2026-02-10T09:05:00Z",
            Some("failure"),
        )],
    )
    .await;
    let mixed = read_model::coverage_of(&store, read_model::Model::RunEvents)
        .await
        .unwrap();
    assert_eq!((mixed.months_held, mixed.months_read), (1, 1));
    let now = runs(&store).await;
    assert_eq!(now[1]["outcome"], "failure", "{now}");
    assert_eq!(now[1]["duration_seconds"], 300.0, "{now}");
    assert_eq!(now[0], from_events[0]);
    // The same rows once the read model holds February again.
    read_model::refresh_models(
        &store,
        &config,
        &[read_model::Model::RunEvents],
        read_model::Scope::ALL,
        |_, _, _| {},
    )
    .await
    .unwrap();
    assert_eq!(runs(&store).await, now);
}

/// Set the modification time of every read-model file under `dir` to an hour ago.
fn age_files(dir: &std::path::Path) {
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for entry in walk(dir) {
        std::fs::File::options()
            .write(true)
            .open(&entry)
            .unwrap()
            .set_modified(hour_ago)
            .unwrap();
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A superseded file stays until its month's new file has existed for ten minutes, however
/// old the superseded file itself is: a statement that chose it just before a late event may
/// still be reading it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_superseded_file_stays_ten_minutes_after_its_replacement() {
    let (_dir, store) = support::temp_store();
    let config = Config::default();
    ingest(
        &store,
        &[deployed(
            "d1",
            "web",
            "2026-01-05T10:00:00Z",
            "pkg:oci/web@1",
        )],
    )
    .await;
    let refresh = || read_model::refresh_store(&store, &config, read_model::Scope::ALL, |_, _| {});
    refresh().await.unwrap();
    let files = store.local_root().unwrap().join(PREFIX);
    age_files(&files);
    // A late event: January gets a new file; the hour-old one stays.
    ingest(
        &store,
        &[deployed(
            "d2",
            "web",
            "2026-01-06T10:00:00Z",
            "pkg:oci/web@1",
        )],
    )
    .await;
    let replaced = refresh().await.unwrap();
    assert_eq!((replaced.built, replaced.deleted), (1, 0), "{replaced:?}");
    assert_eq!(walk(&files).len(), 2);
    // An hour after the replacement (both files aged): kept while a statement may still run
    // that long (a query time limit of two hours), gone with the default limit.
    age_files(&files);
    let mut long = config.clone();
    long.limits.query_timeout_secs = 7_200;
    let kept = read_model::refresh_store(&store, &long, read_model::Scope::ALL, |_, _| {})
        .await
        .unwrap();
    assert_eq!((kept.built, kept.deleted), (0, 0), "{kept:?}");
    let cleaned = refresh().await.unwrap();
    assert_eq!((cleaned.built, cleaned.deleted), (0, 1), "{cleaned:?}");
    assert_eq!(walk(&files).len(), 1);
    assert_eq!(
        read_model::coverage(&store).await.unwrap().months_held,
        1,
        "the current file is the one kept"
    );
}

/// A read model's file keeps its rows sorted by subject in small row groups, so a view that
/// scans one subject (the report's `incidents`, `changes`, …) skips the row groups of the
/// others by their statistics instead of decoding the month whole; and a report read that way
/// answers as `events` does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_month_file_keeps_each_subject_in_row_groups_of_its_own() {
    use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
    use datafusion::parquet::file::statistics::Statistics;
    let (_dir, store) = support::temp_store();
    let mut events = Vec::new();
    // Interleaved in time, so a file in time order would mix the subjects in every row group.
    for i in 0..12_000 {
        let at = |m: u32| format!("2026-01-{:02}T{:02}:{:02}:00Z", 1 + i % 28, i % 24, m);
        events.push(merged(&format!("m{i}"), &format!("shop/{i}"), &at(0)));
        events.push(packaged(
            &format!("p{i}"),
            &format!("pkg:oci/web@{i}"),
            &format!("shop/{i}"),
            &at(1),
        ));
        events.push(deployed(
            &format!("d{i}"),
            "web",
            &at(2),
            &format!("pkg:oci/web@{i}"),
        ));
        if i % 100 == 0 {
            events.push(incident(
                &format!("i{i}"),
                &format!("inc-{i}"),
                "web",
                &at(3),
            ));
        }
    }
    ingest(&store, &events).await;
    read_model::refresh_store(
        &store,
        &Config::default(),
        read_model::Scope::ALL,
        |_, _| {},
    )
    .await
    .unwrap();
    let files: Vec<_> = walk(&store.local_root().unwrap().join(PREFIX))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    assert_eq!(files.len(), 1, "one month, one file: {files:?}");
    let reader = SerializedFileReader::new(std::fs::File::open(&files[0]).unwrap()).unwrap();
    let meta = reader.metadata();
    let subject = meta
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.name() == "subject")
        .unwrap();
    // Each row group's range of subjects.
    let ranges: Vec<(Vec<u8>, Vec<u8>)> = meta
        .row_groups()
        .iter()
        .map(|rg| match rg.column(subject).statistics() {
            Some(Statistics::ByteArray(s)) => (
                s.min_opt().unwrap().data().to_vec(),
                s.max_opt().unwrap().data().to_vec(),
            ),
            other => panic!("no string statistics for subject: {other:?}"),
        })
        .collect();
    assert!(
        ranges.len() >= 3,
        "36,120 rows in {} row groups",
        ranges.len()
    );
    // Sorted by subject: the ranges follow each other.
    assert!(
        ranges.windows(2).all(|w| w[0].1 <= w[1].0),
        "row groups out of subject order: {ranges:?}"
    );
    // The 120 incident rows are in one row group, which holds nothing else but the rows of
    // its neighbours in the order.
    let with_incident = ranges
        .iter()
        .filter(|(lo, hi)| {
            lo.as_slice() <= b"incident".as_slice() && b"incident".as_slice() <= hi.as_slice()
        })
        .count();
    assert_eq!(with_incident, 1, "{ranges:?}");
    assert_eq!(report(&store).await, report_from_events(&store).await);
}

/// The one value of a one-row, one-column answer.
async fn single(engine: &Engine, sql: &str) -> i64 {
    let result = engine.sql(sql).await.unwrap();
    let batch = &result.batches[0];
    arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Int64)
        .unwrap()
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .unwrap()
        .value(0)
}

/// Statements over the same snapshot share the views they hold (a dashboard's panels compute
/// `changes`, `deployments`, … once), and a commit makes the next statement compute them
/// again, so no answer misses a committed event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_over_one_snapshot_share_held_views_and_a_commit_renews_them() {
    let (_dir, store) = support::temp_store();
    ingest(&store, &january()).await;
    let engine = Engine::open(&store, Config::default()).await.unwrap();
    let all = "SELECT count(*) FROM dora_deployments";
    let failed = "SELECT count(*) FROM dora_deployments WHERE failed";
    assert_eq!(single(&engine, all).await, 1);
    let (computed, reused) = engine.shared_view_counts();
    assert!(computed > 0, "the first statement computes its held views");
    assert_eq!(reused, 0);
    // Another statement over the same snapshot takes them.
    assert_eq!(single(&engine, failed).await, 1);
    let (computed_again, reused) = engine.shared_view_counts();
    assert_eq!(
        computed_again, computed,
        "nothing computed twice for one snapshot"
    );
    assert!(
        reused >= computed,
        "every held view taken: {reused} of {computed}"
    );
    // A commit: the next statement sees the new deployment (computing the views again), and
    // its held views are shared in turn.
    ingest(
        &store,
        &[
            merged("m2", "shop/2", "2026-02-02T09:00:00Z"),
            packaged("p2", "pkg:oci/web@2", "shop/2", "2026-02-02T10:00:00Z"),
            deployed("d2", "web", "2026-02-03T10:00:00Z", "pkg:oci/web@2"),
        ],
    )
    .await;
    assert_eq!(single(&engine, all).await, 2);
    let (after_commit, _) = engine.shared_view_counts();
    assert!(
        after_commit > computed,
        "the new snapshot's views are computed"
    );
    assert_eq!(single(&engine, failed).await, 1);
    assert_eq!(engine.shared_view_counts().0, after_commit);
    // The report over the same snapshot agrees with one computed from scratch.
    let fresh = Engine::open(&store, Config::default()).await.unwrap();
    let req = DoraRequest {
        from: t("2026-01-01T00:00:00Z"),
        to: t("2026-03-01T00:00:00Z"),
        by: Some(GroupBy::Service),
        then_by: None,
    };
    let shared = serde_json::to_value(engine.dora(&req).await.unwrap()).unwrap();
    assert_eq!(deployments(&shared), 2);
    assert_eq!(
        shared,
        serde_json::to_value(fresh.dora(&req).await.unwrap()).unwrap()
    );
}

/// A statement's own session defines only the views the statement reaches: a view named
/// anywhere in it (a CTE, a scalar subquery, EXISTS, a UNION branch, a view that names
/// another) is there, with the rows it has when named directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_named_anywhere_in_a_statement_is_defined_for_it() {
    let (_dir, store) = support::temp_store();
    ingest(&store, &january()).await;
    let engine = Engine::open(&store, Config::default()).await.unwrap();
    let deployments = single(&engine, "SELECT count(*) FROM dora_deployments").await;
    let incidents = single(&engine, "SELECT count(*) FROM dora_incidents").await;
    let changes = single(&engine, "SELECT count(*) FROM dora_changes").await;
    assert_eq!((deployments, incidents, changes), (1, 1, 1));
    for (sql, expected) in [
        (
            "SELECT (SELECT count(*) FROM dora_deployments) + (SELECT count(*) FROM dora_incidents)",
            deployments + incidents,
        ),
        (
            "WITH x AS (SELECT change_id FROM dora_changes) SELECT count(*) FROM x",
            changes,
        ),
        (
            "SELECT count(*) FROM dora_incidents WHERE EXISTS (SELECT 1 FROM production_deployments)",
            incidents,
        ),
        (
            "SELECT count(*) FROM (SELECT service FROM deployments UNION ALL SELECT service FROM dora_incidents
                                   UNION ALL SELECT repository FROM pipeline_runs)",
            deployments + incidents,
        ),
        (
            "SELECT count(*) FROM lead_time_breakdown l JOIN public.dora_changes c ON c.change_id = l.change_id",
            changes,
        ),
    ] {
        assert_eq!(single(&engine, sql).await, expected, "{sql}");
    }
}
