//! The projections of `pipeline_runs` and `task_runs` answer exactly as the views over the run
//! events do: when current, when events were committed since (a late event for a run whose
//! other events are months older, an event for a run that spans two months, a new run), after
//! a compaction changed every month's files, and after being written again from the older
//! projection.

mod support;
use support::ingest;

use cdlake_ingest::compact::{CompactOptions, compact_table};
use cdlake_query::format::Format;
use cdlake_query::projection::{self, Entity};
use cdlake_query::read_model::Model;
use cdlake_query::{Config, Engine};
use cdlake_schemas::lake::TableLog;
use cdlake_schemas::paths::Table;
use cdlake_schemas::store::Store;
use serde_json::{Value, json};

fn run_event(id: &str, ty: &str, subject: &str, time: &str, content: Value) -> String {
    support::cdevent("/projection-test", id, ty, subject, time, content)
}

/// A pipeline run event of `run` (pipeline `build`), with an outcome when given.
fn pipeline(id: &str, predicate: &str, run: &str, time: &str, outcome: Option<&str>) -> String {
    let mut content = json!({"pipelineName": "build"});
    if let Some(o) = outcome {
        content["outcome"] = json!(o);
    }
    run_event(id, &format!("pipelinerun.{predicate}"), run, time, content)
}

/// A task run event of task `test` of `run`, with an outcome when given.
fn task(
    id: &str,
    predicate: &str,
    task_run: &str,
    run: &str,
    time: &str,
    outcome: Option<&str>,
) -> String {
    let mut content =
        json!({"taskName": "test", "pipelineRun": {"id": run, "source": "/projection-test"}});
    if let Some(o) = outcome {
        content["outcome"] = json!(o);
    }
    run_event(id, &format!("taskrun.{predicate}"), task_run, time, content)
}

/// The read model the run projections are derived through.
const RUNS: [Model; 1] = [Model::RunEvents];

const PIPELINE_RUNS: &str = "SELECT * FROM pipeline_runs ORDER BY run_key";
const TASK_RUNS: &str = "SELECT * FROM task_runs ORDER BY origin, repository, task_run_id";

/// Both views' rows as CSV, from a fresh engine.
async fn rows(store: &Store) -> (String, String) {
    let engine = Engine::open(store, Config::default()).await.unwrap();
    let csv = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (
        csv(engine
            .sql_rendered(PIPELINE_RUNS, Format::Csv)
            .await
            .unwrap()),
        csv(engine.sql_rendered(TASK_RUNS, Format::Csv).await.unwrap()),
    )
}

/// Whether a fresh engine reads both views from their projections (and derives neither).
async fn read_from_projections(store: &Store) -> bool {
    let engine = Engine::open(store, Config::default()).await.unwrap();
    for sql in [PIPELINE_RUNS, TASK_RUNS] {
        engine.sql(sql).await.unwrap();
    }
    engine.projection_read_counts() == (2, 0)
}

/// A year of runs before the history the test looks at, one a month: months enough that a
/// few changed ones are derived again, not the whole view.
fn a_year_before() -> Vec<String> {
    (1..=12)
        .flat_map(|m| {
            let run = format!("y{m}");
            [
                pipeline(
                    &format!("{run}a"),
                    "started",
                    &run,
                    &format!("2025-{m:02}-15T08:00:00Z"),
                    None,
                ),
                pipeline(
                    &format!("{run}b"),
                    "finished",
                    &run,
                    &format!("2025-{m:02}-15T08:10:00Z"),
                    Some("success"),
                ),
            ]
        })
        .collect()
}

/// Both views' rows derived from the run events alone (the projections moved away).
async fn rows_from_events(store: &Store) -> (String, String) {
    let root = store.local_root().unwrap();
    let kept = tempfile::tempdir().unwrap();
    for entity in Entity::ALL {
        let dir = root.join(entity.prefix());
        if dir.exists() {
            std::fs::rename(&dir, kept.path().join(entity.name())).unwrap();
        }
        assert_eq!(
            projection::dirty_months_of(store, entity, &Config::default())
                .await
                .unwrap(),
            None
        );
    }
    let v = rows(store).await;
    for entity in Entity::ALL {
        let moved = kept.path().join(entity.name());
        if moved.exists() {
            std::fs::rename(&moved, root.join(entity.prefix())).unwrap();
        }
    }
    v
}

/// Months changed since the projections of `pipeline_runs` and `task_runs`.
async fn dirty(store: &Store) -> Vec<Option<usize>> {
    let mut out = Vec::new();
    for entity in [Entity::PipelineRuns, Entity::TaskRuns] {
        out.push(
            projection::dirty_months_of(store, entity, &Config::default())
                .await
                .unwrap(),
        );
    }
    out
}

/// The line of `csv` whose fields include `needle`, split.
fn line<'a>(csv: &'a str, needle: &str) -> Vec<&'a str> {
    csv.lines()
        .find(|l| l.split(',').any(|f| f == needle))
        .unwrap_or_else(|| panic!("no row {needle} in\n{csv}"))
        .split(',')
        .collect()
}

/// The value of column `name` in the row of `csv` with a field equal to `needle`.
fn cell<'a>(csv: &'a str, needle: &str, name: &str) -> &'a str {
    line(csv, needle)[column(csv, name)]
}

fn column(csv: &str, name: &str) -> usize {
    csv.lines()
        .next()
        .unwrap()
        .split(',')
        .position(|c| c == name)
        .unwrap_or_else(|| panic!("no column {name} in {csv}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projections_answer_as_the_run_events_do_before_and_after_commits_and_compaction() {
    let (_dir, store) = support::temp_store();
    let config = Config::default();
    ingest(
        &store,
        &[
            pipeline("a1", "queued", "r1", "2026-01-10T09:00:00Z", None),
            pipeline("a2", "started", "r1", "2026-01-10T09:01:00Z", None),
            pipeline(
                "a3",
                "finished",
                "r1",
                "2026-01-10T09:11:00Z",
                Some("success"),
            ),
            task("a4", "started", "t1", "r1", "2026-01-10T09:02:00Z", None),
            task(
                "a5",
                "finished",
                "t1",
                "r1",
                "2026-01-10T09:10:00Z",
                Some("success"),
            ),
            // r2 spans January and February.
            pipeline("b1", "queued", "r2", "2026-01-31T23:50:00Z", None),
            pipeline("b2", "started", "r2", "2026-02-01T00:05:00Z", None),
            pipeline(
                "b3",
                "finished",
                "r2",
                "2026-02-01T00:20:00Z",
                Some("failure"),
            ),
            task("b4", "started", "t2", "r2", "2026-01-31T23:55:00Z", None),
            task(
                "b5",
                "finished",
                "t2",
                "r2",
                "2026-02-01T00:10:00Z",
                Some("failure"),
            ),
            pipeline("c1", "started", "r3", "2026-03-03T08:00:00Z", None),
            pipeline(
                "c2",
                "finished",
                "r3",
                "2026-03-03T08:30:00Z",
                Some("success"),
            ),
        ]
        .into_iter()
        .chain(a_year_before())
        .collect::<Vec<_>>(),
    )
    .await;
    assert_eq!(dirty(&store).await, [None, None], "no projection yet");
    let reference = rows_from_events(&store).await;
    let written = projection::refresh_store(&store, &config, &RUNS, false)
        .await
        .unwrap();
    let rows_written: Vec<u64> = written.iter().map(|(_, r)| r.rows).collect();
    assert_eq!(
        rows_written,
        [15, 2],
        "one row per run attempt and per task run"
    );
    assert_eq!(dirty(&store).await, [Some(0), Some(0)]);
    assert!(read_from_projections(&store).await);
    assert_eq!(rows(&store).await, reference);
    // Current: written again, nothing is written.
    let again = projection::refresh_store(&store, &config, &RUNS, false)
        .await
        .unwrap();
    assert!(again.iter().all(|(_, r)| !r.built), "{again:?}");

    // Committed since the projection: a late finish of t1 dated April (its other events are
    // January's, a month that did not change), a second finish of r2 in February (its queued
    // event is January's), and a new run in April.
    ingest(
        &store,
        &[
            task(
                "d1",
                "finished",
                "t1",
                "r1",
                "2026-04-02T10:00:00Z",
                Some("failure"),
            ),
            pipeline(
                "d2",
                "finished",
                "r2",
                "2026-02-01T00:30:00Z",
                Some("success"),
            ),
            pipeline("d3", "started", "r4", "2026-04-05T10:00:00Z", None),
        ],
    )
    .await;
    assert_eq!(
        dirty(&store).await,
        [Some(2), Some(2)],
        "February and April"
    );
    assert!(
        read_from_projections(&store).await,
        "2 of 16 months changed: the projection answers, its changed runs derived again"
    );
    let reference = rows_from_events(&store).await;
    let (pipelines, tasks) = rows(&store).await;
    // From the definitions: t1 finished last on April 2 with a failure, 2026-01-10T09:02 to
    // 2026-04-02T10:00 apart; r2's outcome is its last finish's, and it was queued 15 minutes
    // before it started.
    let t1 = line(&tasks, "t1");
    assert_eq!(t1[column(&tasks, "outcome")], "failure", "{tasks}");
    assert_eq!(
        t1[column(&tasks, "duration_seconds")],
        "7088280.0",
        "{tasks}"
    );
    let r2 = line(&pipelines, "r2");
    assert_eq!(r2[column(&pipelines, "outcome")], "success", "{pipelines}");
    assert_eq!(
        r2[column(&pipelines, "queue_seconds")],
        "900.0",
        "{pipelines}"
    );
    assert_eq!(r2[column(&pipelines, "events")], "4", "{pipelines}");
    line(&pipelines, "r4");
    assert_eq!((pipelines, tasks), reference);

    // Written again from the older projection and the changed months: current, same rows.
    let written = projection::refresh_store(&store, &config, &RUNS, false)
        .await
        .unwrap();
    assert!(
        written.iter().all(|(_, r)| r.built && r.dirty_months == 2),
        "{written:?}"
    );
    assert_eq!(dirty(&store).await, [Some(0), Some(0)]);
    assert_eq!(rows(&store).await, reference);

    // A compaction rewrites files: the months it touched are derived again, not doubled.
    ingest(
        &store,
        &[task(
            "e1",
            "started",
            "t3",
            "r3",
            "2026-03-03T08:01:00Z",
            None,
        )],
    )
    .await;
    let log = TableLog::open(&store, Table::Events).await.unwrap();
    compact_table(
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
    assert!(
        dirty(&store)
            .await
            .iter()
            .all(|d| d.is_some_and(|n| n >= 1))
    );
    assert!(read_from_projections(&store).await);
    let reference = rows_from_events(&store).await;
    assert_eq!(rows(&store).await, reference);
    projection::refresh_store(&store, &config, &RUNS, false)
        .await
        .unwrap();
    assert_eq!(rows(&store).await, reference);
    // From the events alone (`cdlake rebuild --from`): the same rows.
    let fresh = projection::refresh_store(&store, &config, &RUNS, true)
        .await
        .unwrap();
    assert!(fresh.iter().all(|(_, r)| r.dirty_months == 0), "{fresh:?}");
    assert_eq!(rows(&store).await, reference);
}

/// A change event (`merged`, `created`, …) of `change` in repository `shop`, with labels when
/// given.
fn change(id: &str, predicate: &str, change: &str, time: &str, labels: Option<&str>) -> String {
    let mut e: Value = serde_json::from_str(&run_event(
        id,
        &format!("change.{predicate}"),
        change,
        time,
        json!({"repository": {"id": "shop"}}),
    ))
    .unwrap();
    if let Some(l) = labels {
        e["customData"] = json!({"labels": l.split(',').collect::<Vec<_>>()});
    }
    e.to_string()
}

fn packaged(id: &str, artifact: &str, change: &str, time: &str) -> String {
    run_event(
        id,
        "artifact.packaged",
        artifact,
        time,
        json!({"change": {"id": change, "source": "/projection-test"}}),
    )
}

fn deployed(id: &str, artifact: &str, time: &str) -> String {
    run_event(
        id,
        "service.deployed",
        "web",
        time,
        json!({"environment": {"id": "production"}, "artifactId": artifact}),
    )
}

const CHANGES: &str = "SELECT * FROM changes ORDER BY change_id";
const ARTIFACTS: &str = "SELECT * FROM artifacts ORDER BY artifact_id";
const LEAD: &str = "SELECT * FROM dora_change_deliveries ORDER BY change_id, service";
const PRODUCTION: &str =
    "SELECT * FROM production_deployments ORDER BY service, time, event_source, event_id";
const INCIDENTS: &str = "SELECT * FROM incidents ORDER BY incident_id";

/// An incident event of `incident`, of service `web` in production.
fn incident(id: &str, predicate: &str, incident: &str, time: &str) -> String {
    run_event(
        id,
        &format!("incident.{predicate}"),
        incident,
        time,
        json!({"environment": {"id": "production"}, "service": {"id": "web"}}),
    )
}

/// The projections of `report_events`.
fn report_entities() -> Vec<Entity> {
    Entity::ALL
        .into_iter()
        .filter(|e| e.model() == Model::ReportEvents)
        .collect()
}

/// The views read from projections and derived instead by [`facts`] when every projection is
/// current: `changes` reads both facts (a reverted artifact's change from artifact_facts),
/// `artifacts` both facts, the deliveries the facts, artifact_changes, production_events and
/// production_links, the production deployments all but artifact_facts (an artifact's change
/// is its least linked one, a change's repository that of its facts), the incidents
/// incident_facts.
const CURRENT: (u64, u64) = (14, 0);

/// [`CURRENT`] when months changed since the projections: `production_links`, derived from
/// three other entities, is then derived (by the deliveries and the production deployments)
/// while the others are read with the changed months' entities derived again.
const CHANGED_SINCE: (u64, u64) = (12, 2);

/// `changes`, `artifacts`, the deliveries, the production deployments and the incidents as
/// CSV, from a fresh engine: with the projections, asserting how many views were read from
/// them and derived (`Some`), or without any (`None`).
async fn facts(store: &Store, from_projections: Option<(u64, u64)>) -> Vec<String> {
    let root = store.local_root().unwrap();
    let kept = tempfile::tempdir().unwrap();
    let moved = |e: Entity| kept.path().join(e.name());
    let entities = report_entities();
    if from_projections.is_none() {
        for &e in &entities {
            let dir = root.join(e.prefix());
            if dir.exists() {
                std::fs::rename(&dir, moved(e)).unwrap();
            }
        }
    }
    let engine = Engine::open(store, Config::default()).await.unwrap();
    let mut out = Vec::new();
    for sql in [CHANGES, ARTIFACTS, LEAD, PRODUCTION, INCIDENTS] {
        let csv = engine.sql_rendered(sql, Format::Csv).await.unwrap();
        out.push(String::from_utf8(csv).unwrap());
    }
    let (projected, derived) = engine.projection_read_counts();
    match from_projections {
        Some(counts) => assert_eq!((projected, derived), counts, "from the projections"),
        None => assert_eq!(projected, 0, "from report_events"),
    }
    for &e in &entities {
        if moved(e).exists() {
            std::fs::rename(moved(e), root.join(e.prefix())).unwrap();
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_and_artifact_facts_answer_as_report_events_do_after_commits() {
    let (_dir, store) = support::temp_store();
    let config = Config::default();
    let report = [Model::ReportEvents];
    ingest(
        &store,
        &[
            change("c1", "created", "shop/1", "2026-01-20T09:00:00Z", None),
            change("c2", "merged", "shop/1", "2026-01-21T09:00:00Z", None),
            packaged("c3", "pkg:oci/web@1", "shop/1", "2026-01-21T10:00:00Z"),
            deployed("c4", "pkg:oci/web@1", "2026-01-22T10:00:00Z"),
            incident("c6", "detected", "inc-1", "2026-01-22T12:00:00Z"),
            change("c5", "merged", "shop/2", "2026-02-03T09:00:00Z", None),
        ]
        .into_iter()
        .chain((1..=12).map(|m| {
            change(
                &format!("y{m}"),
                "merged",
                &format!("old/{m}"),
                &format!("2025-{m:02}-10T09:00:00Z"),
                None,
            )
        }))
        .collect::<Vec<_>>(),
    )
    .await;
    projection::refresh_store(&store, &config, &report, false)
        .await
        .unwrap();
    for e in report_entities() {
        assert_eq!(
            projection::dirty_months_of(&store, e, &config)
                .await
                .unwrap(),
            Some(0)
        );
    }
    assert_eq!(
        facts(&store, Some(CURRENT)).await,
        facts(&store, None).await
    );
    // The production pattern is part of production_events' definition: another pattern reads
    // no projection of the default one (and matches none of these deployments).
    let staging = Config {
        production: "^staging$".to_string(),
        ..Config::default()
    };
    for e in [Entity::ProductionEvents, Entity::IncidentFacts] {
        assert_eq!(
            projection::dirty_months_of(&store, e, &staging)
                .await
                .unwrap(),
            None,
            "{e:?}"
        );
    }
    let engine = Engine::open(&store, staging).await.unwrap();
    let csv = engine
        .sql_rendered("SELECT count(*) AS n FROM production_events", Format::Csv)
        .await
        .unwrap();
    assert_eq!(String::from_utf8(csv).unwrap().trim(), "n\n0");
    let csv = Engine::open(&store, Config::default())
        .await
        .unwrap()
        .sql_rendered("SELECT count(*) AS n FROM production_events", Format::Csv)
        .await
        .unwrap();
    assert_eq!(String::from_utf8(csv).unwrap().trim(), "n\n1");

    // Since: shop/1 labelled a hotfix in March (its other events are January's), shop/2
    // packaged and deployed in March.
    ingest(
        &store,
        &[
            change(
                "d1",
                "updated",
                "shop/1",
                "2026-03-01T09:00:00Z",
                Some("hotfix"),
            ),
            packaged("d2", "pkg:oci/web@2", "shop/2", "2026-03-02T10:00:00Z"),
            deployed("d3", "pkg:oci/web@2", "2026-03-02T11:00:00Z"),
            incident("d4", "resolved", "inc-1", "2026-03-03T12:00:00Z"),
        ],
    )
    .await;
    let now = facts(&store, Some(CHANGED_SINCE)).await;
    // From the definitions: shop/1 has three events and is a hotfix; shop/2 is delivered by
    // the March deployment.
    let (changes, lead) = (&now[0], &now[2]);
    assert_eq!(cell(changes, "shop/1", "events"), "3", "{changes}");
    assert_eq!(cell(changes, "shop/1", "hotfix"), "true", "{changes}");
    let delivered = cell(lead, "shop/2", "delivered_at");
    assert_eq!(delivered, "2026-03-02T11:00:00Z", "{lead}");
    // inc-1, detected in January, resolved in March: its January row derived again.
    let incidents = &now[4];
    let resolved = cell(incidents, "inc-1", "resolved_at");
    assert_eq!(resolved, "2026-03-03T12:00:00Z", "{incidents}");
    assert_eq!(cell(incidents, "inc-1", "events"), "2", "{incidents}");
    assert_eq!(now, facts(&store, None).await);
    projection::refresh_store(&store, &config, &report, false)
        .await
        .unwrap();
    assert_eq!(facts(&store, Some(CURRENT)).await, now);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_links_written_alone_derives_its_inputs_and_answers_as_the_events_do() {
    let (_dir, store) = support::temp_store();
    let config = Config::default();
    ingest(
        &store,
        &[
            change("p1", "merged", "shop/1", "2026-01-20T09:00:00Z", None),
            change("p2", "merged", "shop/2", "2026-01-21T09:00:00Z", None),
            // web@1 links shop/1, shop/2 and shop/9, which has no event of its own.
            packaged("p3", "pkg:oci/web@1", "shop/1", "2026-01-21T10:00:00Z"),
            packaged("p4", "pkg:oci/web@1", "shop/2", "2026-01-21T10:00:00Z"),
            packaged("p5", "pkg:oci/web@1", "shop/9", "2026-01-21T10:00:00Z"),
            deployed("p6", "pkg:oci/web@1", "2026-01-22T10:00:00Z"),
            // web@2 links nothing; the rollback redeploys web@1 in February.
            deployed("p7", "pkg:oci/web@2", "2026-02-02T10:00:00Z"),
            run_event(
                "p8",
                "service.rolledback",
                "web",
                "2026-02-03T10:00:00Z",
                json!({"environment": {"id": "production"}, "artifactId": "pkg:oci/web@1"}),
            ),
        ],
    )
    .await;
    // Written alone, before any projection of its inputs: it derives them from the events.
    let log = TableLog::open(&store, Table::Events).await.unwrap();
    let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
        .build_arc()
        .unwrap();
    let written = projection::refresh(
        &store,
        &log,
        runtime,
        &config,
        Entity::ProductionLinks,
        &|_| true,
        false,
    )
    .await
    .unwrap();
    assert!(written.built);
    // A row per production event and link: three for the deployment, three for the rollback.
    assert_eq!(written.rows, 6);
    for e in report_entities() {
        let expected = (e == Entity::ProductionLinks).then_some(0);
        let dirty = projection::dirty_months_of(&store, e, &config)
            .await
            .unwrap();
        assert_eq!(dirty, expected, "{e:?}");
    }
    let links = |engine: Engine| async move {
        let sql = "SELECT * FROM production_links ORDER BY time, change_id";
        let csv = engine.sql_rendered(sql, Format::Csv).await.unwrap();
        (
            String::from_utf8(csv).unwrap(),
            engine.projection_read_counts(),
        )
    };
    let (projected, counts) = links(Engine::open(&store, config.clone()).await.unwrap()).await;
    // It and its three inputs reached: it from its projection, they from the events.
    assert_eq!(counts, (1, 3), "production_links from its projection");
    assert_eq!(projected.lines().count(), 7, "{projected}");
    assert_eq!(cell(&projected, "shop/9", "known"), "false", "{projected}");
    assert_eq!(cell(&projected, "shop/9", "repository"), "", "{projected}");
    let moved = tempfile::tempdir().unwrap();
    let prefix = store
        .local_root()
        .unwrap()
        .join(Entity::ProductionLinks.prefix());
    std::fs::rename(&prefix, moved.path().join("links")).unwrap();
    let (derived, counts) = links(Engine::open(&store, config).await.unwrap()).await;
    assert_eq!(counts, (0, 4), "production_links derived");
    assert_eq!(projected, derived);
}

/// The Python with `deltalake` (scripts/test installs it in cdlake's virtualenv).
fn python() -> std::path::PathBuf {
    if let Ok(p) = std::env::var("CDLAKE_PYTHON") {
        return p.into();
    }
    let venv = std::env::var("HOME")
        .map(|h| std::path::PathBuf::from(h).join(".cache/cdlake/venv/bin/python"))
        .unwrap_or_default();
    if venv.exists() {
        venv
    } else {
        "python3".into()
    }
}

/// What the Python `deltalake` package (delta-rs with pyarrow, another Delta implementation)
/// reads in the Delta table of `entity`: its version, its files, and its rows' `run_id`,
/// `outcome` and `events`, sorted.
fn outside_runs(store: &Store, entity: Entity) -> Value {
    let table = store.local_root().unwrap().join(entity.prefix());
    let script = r#"
import json, os, sys
from deltalake import DeltaTable
dt = DeltaTable(sys.argv[1])
rows = dt.to_pyarrow_table(columns=["run_id", "outcome", "events"]).to_pylist()
rows.sort(key=lambda r: (r["run_id"], str(r["outcome"])))
print(json.dumps({"version": dt.version(), "files": len(dt.file_uris()),
                  "rows": [[r["run_id"], r["outcome"], r["events"]] for r in rows]}))
# No interpreter teardown: deltalake 1.6 with pyarrow 26 aborts there now and then.
sys.stdout.flush()
os._exit(0)
"#;
    let out = std::process::Command::new(python())
        .arg("-c")
        .arg(script)
        .arg(&table)
        .output()
        .expect("run python: scripts/test installs deltalake");
    assert!(
        out.status.success(),
        "the outside reader failed (scripts/test installs deltalake): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

/// `pipeline_runs` as cdlake answers it: `run_id`, `outcome`, `events`, sorted as the outside
/// reader sorts them.
async fn cdlake_runs(store: &Store) -> Value {
    let engine = Engine::open(store, Config::default()).await.unwrap();
    let out = engine
        .sql_rendered(
            "SELECT run_id, outcome, events FROM pipeline_runs ORDER BY run_id, outcome",
            Format::Json,
        )
        .await
        .unwrap();
    let rows: Vec<Value> = serde_json::from_slice(&out).unwrap();
    Value::Array(
        rows.iter()
            .map(|r| json!([r["run_id"], r["outcome"], r["events"]]))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_projection_is_a_delta_table_that_outside_engines_read_as_cdlake_answers() {
    let (_dir, store) = support::temp_store();
    let config = Config::default();
    ingest(&store, &a_year_before()).await;
    let written = projection::refresh_store(&store, &config, &RUNS, false)
        .await
        .unwrap();
    // Created (version 0) and the projection committed as version 1.
    assert!(
        written.iter().all(|(_, r)| r.published == Some(1)),
        "{written:?}"
    );
    let seen = outside_runs(&store, Entity::PipelineRuns);
    assert_eq!((&seen["version"], &seen["files"]), (&json!(1), &json!(1)));
    assert_eq!(seen["rows"].as_array().unwrap().len(), 12, "{seen}");
    assert_eq!(seen["rows"], cdlake_runs(&store).await);
    // Current: nothing is committed again.
    let again = projection::refresh_store(&store, &config, &RUNS, false)
        .await
        .unwrap();
    assert!(
        again.iter().all(|(_, r)| r.published.is_none()),
        "{again:?}"
    );

    // Ten more projections, each after a commit that finishes one of last year's runs again
    // with a failure and adds a run: each replaces the one before whole, in one file, and a
    // checkpoint keeps the log short for readers.
    for n in 1..=10u32 {
        ingest(
            &store,
            &[
                pipeline(
                    &format!("late{n}"),
                    "finished",
                    &format!("y{n}"),
                    &format!("2026-02-{n:02}T08:00:00Z"),
                    Some("failure"),
                ),
                pipeline(
                    &format!("new{n}"),
                    "started",
                    &format!("n{n}"),
                    &format!("2026-03-{n:02}T08:00:00Z"),
                    None,
                ),
            ],
        )
        .await;
        let written = projection::refresh_store(&store, &config, &RUNS, false)
            .await
            .unwrap();
        assert!(
            written
                .iter()
                .all(|(_, r)| r.built && r.published == Some(u64::from(n) + 1)),
            "{written:?}"
        );
    }
    let seen = outside_runs(&store, Entity::PipelineRuns);
    assert_eq!((&seen["version"], &seen["files"]), (&json!(11), &json!(1)));
    assert_eq!(seen["rows"].as_array().unwrap().len(), 22, "{seen}");
    let y1 = &seen["rows"].as_array().unwrap()[..]
        .iter()
        .find(|r| r[0] == "y1")
        .cloned()
        .unwrap();
    // From the definitions: y1's outcome is its last finish's, and it has three events.
    assert_eq!(y1, &json!(["y1", "failure", 3]), "{seen}");
    assert_eq!(seen["rows"], cdlake_runs(&store).await);
    let log = store
        .local_root()
        .unwrap()
        .join(Entity::PipelineRuns.prefix())
        .join("_delta_log");
    assert!(
        log.join("00000000000000000009.checkpoint.parquet").exists(),
        "a checkpoint every ten commits"
    );
    // The Delta log is no projection manifest: statements still read the projection.
    assert!(read_from_projections(&store).await);
    assert_eq!(
        projection::dirty_months_of(&store, Entity::PipelineRuns, &config)
            .await
            .unwrap(),
        Some(0)
    );
}
