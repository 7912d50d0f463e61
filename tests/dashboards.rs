//! The Grafana dashboards of `dashboards/*.json` against the demo history, run the way Grafana
//! runs them.
//!
//! Every query of every panel (the panels of collapsed rows included) and every template
//! variable's query is
//!
//! 1. interpolated as Grafana's frontend does for its PostgreSQL data source
//!    (`templateSrv.replace` with the SQL data source's `interpolateVariable`): a multi-value
//!    variable becomes its values quoted and comma-joined (`'a','b'`), "All" becomes the
//!    variable's custom all value as it is (Grafana does not format it: `'__all'`) or, without
//!    one, every value the variable's own query returned, quoted and comma-joined;
//! 2. expanded as Grafana's backend does (`sqleng.Interpolate`, then the macro engine of
//!    `pkg/tsdb/grafana-postgresql-datasource/macros.go`), both steps in `support/grafana.rs`;
//! 3. sent to `cdlake_query::pg::serve` with the simple query protocol (what Grafana's pgx
//!    `PgConn().Exec` speaks), as user `cdlake` on database `cdlake`;
//!
//! and its answer must be what the panel needs (see [`check`]): no error; the columns the
//! panel's overrides and options name; for `time_series` a `time` column, ascending and never
//! NULL, and a numeric column; for a stat one row with a number. With every variable at "All",
//! every query must answer rows (except the ones [`MAY_BE_EMPTY`] lists, with the reason); with
//! the first two values of each variable selected, every query must still run and answer the
//! right columns.
//!
//! The DORA overview must also show exactly the figures and levels of the DORA report
//! (`cdlake dora`) for the same window, and its stat thresholds must colour every figure with
//! its DORA level.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::DataType;
use arrow::util::display::array_value_to_string;
use cdlake_demo::{DemoSpec, generate};
use cdlake_ingest::{Ingester, IngesterConfig};
use cdlake_query::dora::Level;
use cdlake_query::dora::levels::{self, Metric};
use cdlake_query::pg::{PgOptions, serve};
use cdlake_query::read_model::{self, Model};
use cdlake_query::{Config, DoraRequest, Engine, GroupBy, projection};
use cdlake_schemas::store::Store;
use cdlake_schemas::{DeadLetter, Origin, cdevents};
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use regex::Regex;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

#[path = "support/grafana.rs"]
mod grafana;

use grafana::{Scope, Selection, TimeRange, Variable, expand};

/// What every panel and variable must query.
const DATASOURCE_TYPE: &str = "grafana-postgresql-datasource";
const DATASOURCE_UID: &str = "cdlake";
const PANEL_TYPES: &[&str] = &["stat", "timeseries", "barchart", "table", "histogram"];

/// The demo history: 60 days, 6 services, about 20,000 events, ending here.
const END: &str = "2026-03-01T00:00:00Z";
const SPEC: DemoSpec = DemoSpec {
    seed: 42,
    days: 60,
    services: 6,
    target_events: 20_000,
};

/// Queries that may answer no rows with every variable at "All" on the demo history, as
/// (dashboard file, panel title, reason). Every other query must answer at least one row.
/// Aggregates such as "Open incidents" or "Changes waiting" answer one row (a zero) even when
/// nothing matches, so they need no exception; none is needed today.
const MAY_BE_EMPTY: &[(&str, &str, &str)] = &[];

/// Rejected input added to the history (as if imported during it), so the dead-letter panels
/// have rows: cdlake stamps a dead letter with the time it received it.
const BAD_INPUT: &[&[u8]] = &[
    b"{\"context\": {\"id\": \"truncated",
    b"this is not JSON",
    b"{\"context\":{\"id\":\"x-1\",\"source\":\"/ci\",\"type\":\"com.example.build.done\",\"timestamp\":\"2026-02-27T10:00:00Z\"},\"subject\":{\"id\":\"b\"}}",
    b"\xff\xfe not UTF-8",
];

// ---- the dashboards ------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Query {
    dashboard: String,
    panel: Value,
    title: String,
    kind: String,
    ref_id: String,
    format: String,
    sql: String,
}

#[derive(Debug, Clone)]
struct Dashboard {
    file: String,
    variables: Vec<Variable>,
    queries: Vec<Query>,
}

fn dashboards_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards")
}

/// Every panel, the panels nested in rows included.
fn flatten_panels(panels: &[Value], out: &mut Vec<Value>) {
    for p in panels {
        out.push(p.clone());
        if let Some(nested) = p.get("panels").and_then(Value::as_array) {
            flatten_panels(nested, out);
        }
    }
}

fn str_field<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn is_our_datasource(v: &Value) -> bool {
    str_field(v, "type") == DATASOURCE_TYPE && str_field(v, "uid") == DATASOURCE_UID
}

/// Read every `dashboards/*.json`, checking what Grafana needs of its structure; `problems`
/// collects what is wrong.
fn load_dashboards(problems: &mut Vec<String>) -> Vec<Dashboard> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dashboards_dir())
        .expect("dashboards/ exists")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no dashboards/*.json");
    let mut uids = BTreeSet::new();
    let mut out = Vec::new();
    for path in files {
        let file = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let text = std::fs::read_to_string(&path).expect("read dashboard");
        let json: Value = match serde_json::from_str(&text) {
            Ok(j) => j,
            Err(e) => {
                problems.push(format!("{file}: not valid JSON: {e}"));
                continue;
            }
        };
        let uid = str_field(&json, "uid");
        if uid.is_empty() || !uids.insert(uid.to_string()) {
            problems.push(format!("{file}: missing or duplicate uid {uid:?}"));
        }
        if str_field(&json, "title").is_empty() {
            problems.push(format!("{file}: no title"));
        }
        if json["schemaVersion"].as_u64().unwrap_or(0) < 36 {
            problems.push(format!("{file}: schemaVersion below 36"));
        }
        if !json["id"].is_null() {
            problems.push(format!("{file}: a provisioned dashboard has \"id\": null"));
        }

        let mut variables = Vec::new();
        for v in json["templating"]["list"].as_array().into_iter().flatten() {
            let name = str_field(v, "name").to_string();
            if str_field(v, "type") != "query" {
                problems.push(format!("{file}: variable {name} is not a query variable"));
                continue;
            }
            if !is_our_datasource(&v["datasource"]) {
                problems.push(format!(
                    "{file}: variable {name} does not query the cdlake data source"
                ));
            }
            // The query is a string (older Grafana) or an object with `rawSql` (SQL data sources since 10).
            let query = match &v["query"] {
                Value::String(s) => s.clone(),
                q => str_field(q, "rawSql").to_string(),
            };
            if query.trim().is_empty() {
                problems.push(format!("{file}: variable {name} has no query"));
            }
            variables.push(Variable {
                name,
                query,
                multi: v["multi"].as_bool().unwrap_or(false),
                include_all: v["includeAll"].as_bool().unwrap_or(false),
                all_value: v["allValue"]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            });
        }

        let mut panels = Vec::new();
        flatten_panels(
            json["panels"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default(),
            &mut panels,
        );
        let mut ids = BTreeSet::new();
        let mut queries = Vec::new();
        for p in panels {
            let title = str_field(&p, "title").to_string();
            let kind = str_field(&p, "type").to_string();
            if !ids.insert(p["id"].as_u64().unwrap_or(0)) {
                problems.push(format!(
                    "{file}: panel {title:?} has a missing or duplicate id"
                ));
            }
            if kind == "row" {
                continue;
            }
            if !PANEL_TYPES.contains(&kind.as_str()) {
                problems.push(format!(
                    "{file}: panel {title:?} has an unexpected type {kind}"
                ));
            }
            if !is_our_datasource(&p["datasource"]) {
                problems.push(format!(
                    "{file}: panel {title:?} does not use the cdlake data source"
                ));
            }
            let targets = p["targets"].as_array().cloned().unwrap_or_default();
            if targets.is_empty() {
                problems.push(format!("{file}: panel {title:?} has no query"));
            }
            let mut refs = BTreeSet::new();
            for t in targets {
                let ref_id = str_field(&t, "refId").to_string();
                let format = str_field(&t, "format").to_string();
                let sql = str_field(&t, "rawSql").to_string();
                let at = format!("{file}: panel {title:?} query {ref_id}");
                if !refs.insert(ref_id.clone()) {
                    problems.push(format!("{at}: duplicate refId"));
                }
                if !is_our_datasource(&t["datasource"]) {
                    problems.push(format!("{at}: does not use the cdlake data source"));
                }
                if t["rawQuery"] != Value::Bool(true) || str_field(&t, "editorMode") != "code" {
                    problems.push(format!(
                        "{at}: needs \"rawQuery\": true and \"editorMode\": \"code\""
                    ));
                }
                if format != "table" && format != "time_series" {
                    problems.push(format!(
                        "{at}: format {format:?} is neither table nor time_series"
                    ));
                }
                if sql.trim().is_empty() {
                    problems.push(format!("{at}: no rawSql"));
                }
                // Recent Grafana strips SQL comments before expanding macros, older versions do
                // not: without comments every version runs the same SQL.
                if sql.contains("--") || sql.contains("/*") {
                    problems.push(format!("{at}: SQL comments are not allowed in panel SQL"));
                }
                queries.push(Query {
                    dashboard: file.clone(),
                    panel: p.clone(),
                    title: title.clone(),
                    kind: kind.clone(),
                    ref_id,
                    format,
                    sql,
                });
            }
        }
        out.push(Dashboard {
            file,
            variables,
            queries,
        });
    }
    out
}

// ---- the demo history behind the Postgres endpoint -----------------------------------------

struct Demo {
    engine: Engine,
    store: Store,
    client: Client,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

fn end() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(END)
        .expect("END is RFC 3339")
        .with_timezone(&Utc)
}

/// The dashboards' time range in the test: the 30 days before the end of the history, the end
/// a millisecond short, as Grafana's time picker sends it.
fn test_range() -> TimeRange {
    TimeRange {
        from: end() - chrono::Duration::days(30),
        to: end() - chrono::Duration::milliseconds(1),
    }
}

impl Demo {
    async fn start() -> Self {
        let started = std::time::Instant::now();
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path().to_str().expect("utf-8 path")).expect("store");
        let mut ingester = Ingester::new(store.clone(), IngesterConfig::default());
        for event in generate(&SPEC, end()) {
            ingester
                .ingest(event.as_bytes(), Origin::CdEvents, "demo")
                .await
                .expect("ingest");
            if ingester.should_flush() {
                ingester.flush().await.expect("flush");
            }
        }
        for (i, raw) in BAD_INPUT.iter().enumerate() {
            let received_at = end() - chrono::Duration::hours(3 * i as i64 + 5);
            let reason =
                match cdevents::parse(raw, Origin::CdEvents, received_at.timestamp_micros()) {
                    Err(rejection) => rejection.message,
                    Ok(_) => panic!("bad input {i} was accepted"),
                };
            ingester.push_dead_letter(DeadLetter {
                received_at: received_at.timestamp_micros(),
                origin: Origin::CdEvents.as_str().to_string(),
                source: format!("import:bad.jsonl:{}", i + 1),
                reason,
                payload: raw.to_vec(),
            });
        }
        ingester.flush().await.expect("flush");
        eprintln!("demo history stored in {:.1?}", started.elapsed());

        let engine = Engine::open(&store, Config::default())
            .await
            .expect("engine");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            engine.clone(),
            listener,
            PgOptions::default(),
            async {
                let _ = stopped.await;
            },
        ));
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(port)
            .user("cdlake")
            .dbname("cdlake")
            .application_name("grafana")
            .connect_timeout(Duration::from_secs(10));
        let (client, connection) = config.connect(NoTls).await.expect("connect as cdlake");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Self {
            engine,
            store,
            client,
            stop: Some(stop),
            server,
            _dir: dir,
        }
    }

    async fn stop(mut self) {
        drop(self.client);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let ended = tokio::time::timeout(Duration::from_secs(10), &mut self.server)
            .await
            .expect("the endpoint stops")
            .expect("endpoint task");
        ended.expect("the endpoint ends cleanly");
    }
}

/// An answer as Grafana's pgx reads it with the simple protocol: column names and text values.
#[derive(Debug, Default)]
struct Answer {
    columns: Vec<String>,
    rows: Vec<Vec<Option<String>>>,
}

impl Answer {
    fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }

    fn values(&self, i: usize) -> impl Iterator<Item = Option<&str>> {
        self.rows.iter().map(move |r| r[i].as_deref())
    }

    /// Whether a column holds numbers (every non-NULL value parses as one, and there is one).
    fn is_numeric(&self, i: usize) -> bool {
        let mut any = false;
        for v in self.values(i).flatten() {
            if v.parse::<f64>().is_err() {
                return false;
            }
            any = true;
        }
        any
    }

    fn number(&self, row: usize, name: &str) -> Option<f64> {
        let i = self.column(name)?;
        self.rows.get(row)?[i].as_deref()?.parse().ok()
    }
}

async fn run(client: &Client, sql: &str) -> Result<Answer, String> {
    let messages = client
        .simple_query(sql)
        .await
        .map_err(|e| match e.as_db_error() {
            Some(db) => format!("{}: {}", db.code().code(), db.message()),
            None => e.to_string(),
        })?;
    let mut answer = Answer::default();
    for m in messages {
        match m {
            SimpleQueryMessage::RowDescription(columns) => {
                answer.columns = columns.iter().map(|c| c.name().to_string()).collect();
            }
            SimpleQueryMessage::Row(row) => {
                if answer.columns.is_empty() {
                    answer.columns = row.columns().iter().map(|c| c.name().to_string()).collect();
                }
                answer.rows.push(
                    (0..row.len())
                        .map(|i| row.get(i).map(str::to_string))
                        .collect(),
                );
            }
            _ => {}
        }
    }
    Ok(answer)
}

/// Rows as sorted text, floats to 9 significant digits (sums may differ in the last bits
/// between plans that add in another order).
fn rows_text(batches: &[RecordBatch]) -> Vec<String> {
    let mut rows = Vec::new();
    for batch in batches {
        for r in 0..batch.num_rows() {
            let cells: Vec<String> = batch
                .columns()
                .iter()
                .map(|c| {
                    let v = array_value_to_string(c, r).unwrap_or_default();
                    match c.data_type() {
                        DataType::Float32 | DataType::Float64 => {
                            v.parse::<f64>().map(|f| format!("{f:.8e}")).unwrap_or(v)
                        }
                        _ => v,
                    }
                })
                .collect();
            rows.push(cells.join(" | "));
        }
    }
    rows.sort();
    rows
}

/// A panel over the DORA views is answered with `report_events` computed once for the
/// statement (`Engine::sql`, and the Postgres endpoint): it must answer exactly what the views
/// answer computed per reference (the session's own planning, which shares nothing).
/// Whether `Engine::sql` answers `sql` as the session's views do per reference (a problem
/// when not), and its rows as text.
async fn same_without_sharing(engine: &Engine, sql: &str) -> (Option<String>, Vec<String>) {
    let shared = match engine.sql(sql).await {
        Ok(r) => r.batches,
        Err(e) => return (Some(format!("Engine::sql: {e}")), Vec::new()),
    };
    let plain = match engine.session().sql(sql).await {
        Ok(df) => match df.collect().await {
            Ok(b) => b,
            Err(e) => return (Some(format!("per reference: {e}")), Vec::new()),
        },
        Err(e) => return (Some(format!("per reference: {e}")), Vec::new()),
    };
    let (a, b) = (rows_text(&shared), rows_text(&plain));
    let problem = (a != b).then(|| {
        format!(
            "computing report_events once changed the answer: {} rows against {} per reference; first differences: {:?}",
            a.len(),
            b.len(),
            a.iter().zip(&b).filter(|(x, y)| x != y).take(3).collect::<Vec<_>>()
        )
    });
    (problem, a)
}

/// What changes between `then` and `now` (rows as text, in any order), or `None`.
fn row_difference(then: &[String], now: &[String]) -> Option<String> {
    let (mut a, mut b) = (then.to_vec(), now.to_vec());
    a.sort();
    b.sort();
    (a != b).then(|| {
        let only_then: Vec<&String> = a.iter().filter(|r| !b.contains(r)).take(3).collect();
        let only_now: Vec<&String> = b.iter().filter(|r| !a.contains(r)).take(3).collect();
        format!(
            "{} rows against {}; only before: {only_then:?}; only after: {only_now:?}",
            a.len(),
            b.len()
        )
    })
}

/// A value of a `time` column as Grafana converts it: epoch seconds (or milliseconds) as a
/// number, or a timestamp.
fn parse_time(s: &str) -> Option<f64> {
    if let Ok(v) = s.parse::<f64>() {
        return Some(v);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_micros() as f64 / 1e6);
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%:z"] {
        if let Ok(t) = DateTime::parse_from_str(s, format) {
            return Some(t.timestamp_micros() as f64 / 1e6);
        }
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, format) {
            return Some(Utc.from_utc_datetime(&t).timestamp_micros() as f64 / 1e6);
        }
    }
    None
}

/// Field names a panel refers to: its overrides' `byName` matchers, a bar chart's `xField`.
fn named_fields(panel: &Value) -> Vec<String> {
    let mut names: Vec<String> = panel["fieldConfig"]["overrides"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| str_field(&o["matcher"], "id") == "byName")
        .map(|o| str_field(&o["matcher"], "options").to_string())
        .collect();
    if let Some(x) = panel["options"]["xField"].as_str() {
        names.push(x.to_string());
    }
    names
}

/// What the panel needs of an answer; returns the problems.
fn check(q: &Query, answer: &Answer, must_have_rows: bool) -> Vec<String> {
    let mut problems = Vec::new();
    if answer.columns.is_empty() {
        problems.push("no columns".to_string());
        return problems;
    }
    for name in named_fields(&q.panel) {
        if answer.column(&name).is_none() {
            problems.push(format!(
                "the panel names a field {name:?} the query does not answer"
            ));
        }
    }
    if must_have_rows && answer.rows.is_empty() {
        problems.push("no rows".to_string());
    }
    let has_rows = !answer.rows.is_empty();
    let numeric: Vec<usize> = (0..answer.columns.len())
        .filter(|&i| answer.is_numeric(i))
        .collect();
    if q.format == "time_series" {
        let times: Vec<usize> = (0..answer.columns.len())
            .filter(|&i| answer.columns[i] == "time")
            .collect();
        let [time] = times.as_slice() else {
            problems.push(format!(
                "a time_series query needs exactly one column named time, got {:?}",
                answer.columns
            ));
            return problems;
        };
        if has_rows {
            let parsed: Vec<Option<f64>> = answer
                .values(*time)
                .map(|v| v.and_then(parse_time))
                .collect();
            if parsed.iter().any(Option::is_none) {
                problems.push("the time column has NULL or unreadable values".to_string());
            } else if parsed.windows(2).any(|w| w[0] > w[1]) {
                problems.push("the series is not sorted by time (add ORDER BY 1)".to_string());
            }
            if !numeric.iter().any(|i| i != time) {
                problems.push("a time_series query needs a numeric value column".to_string());
            }
            // Long format: Grafana turns each distinct set of the string columns into a series;
            // a (time, labels) pair twice would be two values for one point.
            let labels: Vec<usize> = (0..answer.columns.len())
                .filter(|i| i != time && !numeric.contains(i))
                .collect();
            let mut seen = BTreeSet::new();
            for row in &answer.rows {
                let key: Vec<Option<&str>> = std::iter::once(*time)
                    .chain(labels.iter().copied())
                    .map(|i| row[i].as_deref())
                    .collect();
                if !seen.insert(key) {
                    problems.push("two rows for the same time and labels".to_string());
                    break;
                }
            }
        }
    } else if has_rows {
        match q.kind.as_str() {
            "stat" => {
                if answer.rows.len() != 1 {
                    problems.push(format!(
                        "a stat query answers one row, got {}",
                        answer.rows.len()
                    ));
                }
                if numeric.is_empty() && answer.rows.iter().flatten().any(Option::is_some) {
                    problems.push("a stat query needs a numeric column".to_string());
                }
            }
            "histogram" | "barchart" if numeric.is_empty() => {
                problems.push(format!("a {} needs a numeric column", q.kind));
            }
            _ => {}
        }
    }
    problems
}

/// Resolve the variables of a dashboard in order (a variable's query may use the ones before
/// it), each set to "All" or to the first two values its query returns.
async fn resolve(
    client: &Client,
    d: &Dashboard,
    all: bool,
    range: TimeRange,
    problems: &mut Vec<String>,
) -> Scope {
    let mut scope = Scope::default();
    for v in &d.variables {
        let options = match expand(&v.query, &scope, range) {
            Err(e) => {
                problems.push(format!("{}: variable {}: {e}", d.file, v.name));
                Vec::new()
            }
            Ok(sql) => match run(client, &sql).await {
                Err(e) => {
                    problems.push(format!("{}: variable {}: {e}\n{sql}", d.file, v.name));
                    Vec::new()
                }
                Ok(a) => a.values(0).flatten().map(str::to_string).collect(),
            },
        };
        if options.is_empty() {
            problems.push(format!(
                "{}: variable {} has no values on the demo history",
                d.file, v.name
            ));
        }
        let selection = if all && v.include_all {
            Selection::All
        } else {
            Selection::Values(
                options
                    .iter()
                    .take(if v.multi { 2 } else { 1 })
                    .cloned()
                    .collect(),
            )
        };
        scope
            .vars
            .insert(v.name.clone(), (v.clone(), selection, options));
    }
    scope
}

fn may_be_empty(q: &Query) -> bool {
    MAY_BE_EMPTY
        .iter()
        .any(|(file, title, _why)| *file == q.dashboard && *title == q.title)
}

/// The answers of the "All" pass, by (dashboard file, panel title, refId).
type Answers = BTreeMap<(String, String, String), Answer>;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_panel_answers_what_it_needs_and_the_dora_overview_is_the_report() {
    let demo = Box::pin(Demo::start()).await;
    let range = test_range();
    let mut problems = Vec::new();
    let dashboards = load_dashboards(&mut problems);
    for (file, title, why) in MAY_BE_EMPTY {
        assert!(
            dashboards
                .iter()
                .any(|d| d.file == *file && d.queries.iter().any(|q| q.title == *title)),
            "MAY_BE_EMPTY names a panel that does not exist: {file} {title:?} ({why})"
        );
    }
    let mut answers = Answers::new();
    // Each query at "All", expanded, with its rows from the events alone.
    let mut from_events: Vec<(String, String, Vec<String>)> = Vec::new();
    for d in &dashboards {
        // The second pass, with values selected, only matters where there are variables.
        let modes: &[bool] = if d.variables.is_empty() {
            &[true]
        } else {
            &[true, false]
        };
        for &all in modes {
            let scope = resolve(&demo.client, d, all, range, &mut problems).await;
            let mode = if all { "All" } else { "two values each" };
            for q in &d.queries {
                let at = format!("{} / {} / {} ({mode})", q.dashboard, q.title, q.ref_id);
                let sql = match expand(&q.sql, &scope, range) {
                    Ok(sql) => sql,
                    Err(e) => {
                        problems.push(format!("{at}: {e}"));
                        continue;
                    }
                };
                let started = std::time::Instant::now();
                match run(&demo.client, &sql).await {
                    Err(e) => problems.push(format!("{at}: {e}\n{sql}")),
                    Ok(answer) => {
                        eprintln!(
                            "{at}: {} rows in {:.1?}, columns {:?}",
                            answer.rows.len(),
                            started.elapsed(),
                            answer.columns
                        );
                        for p in check(q, &answer, all && !may_be_empty(q)) {
                            problems.push(format!("{at}: {p}\n{sql}"));
                        }
                        if all {
                            let (problem, rows) = same_without_sharing(&demo.engine, &sql).await;
                            if let Some(p) = problem {
                                problems.push(format!("{at}: {p}\n{sql}"));
                            }
                            from_events.push((at.clone(), sql.clone(), rows));
                            let key = (q.dashboard.clone(), q.title.clone(), q.ref_id.clone());
                            answers.insert(key, answer);
                        }
                    }
                }
            }
        }
    }
    assert!(!answers.is_empty(), "no panel queries");

    let report = demo
        .engine
        .dora(&DoraRequest {
            from: range.from,
            to: range.to,
            by: Some(GroupBy::Service),
            then_by: None,
        })
        .await
        .expect("the DORA report");
    let by_environment = demo
        .engine
        .dora(&DoraRequest {
            from: range.from,
            to: range.to,
            by: Some(GroupBy::Environment),
            then_by: None,
        })
        .await
        .expect("the DORA report by environment");
    problems.extend(compare_with_report(&dashboards, &answers, &report));
    problems.extend(compare_environments(&dashboards, &answers, &by_environment));

    // The same panels and reports once the read models and the projections exist (what
    // `cdlake rebuild` writes, and `serve` keeps current): the same rows as from the events
    // alone, now read from them.
    let config = Config::default();
    read_model::refresh_models(
        &demo.store,
        &config,
        &Model::ALL,
        read_model::Scope::ALL,
        |_, _, _| {},
    )
    .await
    .expect("the read models");
    projection::refresh_store(&demo.store, &config, &Model::ALL, false)
        .await
        .expect("the projections");
    let rebuilt = Engine::open(&demo.store, config).await.expect("engine");
    for (at, sql, rows) in &from_events {
        match rebuilt.sql(sql).await {
            Err(e) => problems.push(format!("{at}, from the projections: {e}\n{sql}")),
            Ok(answer) => {
                if let Some(p) = row_difference(rows, &rows_text(&answer.batches)) {
                    problems.push(format!(
                        "{at}: the projections answer otherwise than the events: {p}\n{sql}"
                    ));
                }
            }
        }
    }
    let (projected, derived) = rebuilt.projection_read_counts();
    assert!(
        projected > 0 && derived == 0,
        "every panel reads the projections: {projected} projected reads, {derived} derived"
    );
    for (by, events_report) in [
        (GroupBy::Service, &report),
        (GroupBy::Environment, &by_environment),
    ] {
        let projected_report = rebuilt
            .dora(&DoraRequest {
                from: range.from,
                to: range.to,
                by: Some(by),
                then_by: None,
            })
            .await
            .expect("the DORA report from the projections");
        assert_eq!(
            serde_json::to_value(&projected_report).unwrap(),
            serde_json::to_value(events_report).unwrap(),
            "the DORA report by {by:?} from the projections is the report from the events"
        );
    }
    demo.stop().await;
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

// ---- the DORA overview is the DORA report --------------------------------------------------

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// The colour Grafana gives `value` with a panel's thresholds (the highest step at or below).
fn threshold_color(thresholds: &Value, value: f64) -> String {
    let mut color = String::new();
    for step in thresholds["steps"].as_array().into_iter().flatten() {
        match step["value"].as_f64() {
            Some(at) if value < at => break,
            _ => color = str_field(step, "color").to_string(),
        }
    }
    color
}

/// The DORA level a threshold colour stands for on the DORA overview.
fn color_level(color: &str) -> Option<Level> {
    Level::ALL.into_iter().find(|&l| level_color(l) == color)
}

fn find<'a>(dashboards: &'a [Dashboard], file: &str, title: &str) -> &'a Query {
    dashboards
        .iter()
        .filter(|d| d.file == file)
        .flat_map(|d| &d.queries)
        .find(|q| q.title == title)
        .unwrap_or_else(|| panic!("{file} has no panel {title:?}"))
}

fn stat_thresholds<'a>(dashboards: &'a [Dashboard], title: &str) -> &'a Value {
    &find(dashboards, "dora-overview.json", title).panel["fieldConfig"]["defaults"]["thresholds"]
}

/// The DORA overview (with every variable at "All") against the DORA report of the same
/// window: the stats show the report's figures, their thresholds colour them with the report's
/// levels, the levels table says the same levels, the per-service table the same figures per
/// service; the delivery flow's "Changes waiting" is the report's undelivered changes.
fn compare_with_report(
    dashboards: &[Dashboard],
    answers: &Answers,
    report: &cdlake_query::DoraReport,
) -> Vec<String> {
    let mut problems = Vec::new();
    let answer = |file: &str, title: &str| -> &Answer {
        find(dashboards, file, title);
        answers
            .get(&(file.to_string(), title.to_string(), "A".to_string()))
            .unwrap_or_else(|| panic!("{file} / {title} did not answer"))
    };
    let f = &report.figures;
    if f.deployment_frequency.deployments == 0 {
        problems.push("the report has no deployments in the window".to_string());
    }

    // The stats, and the level their thresholds colour them with.
    let stats = [
        (
            "Deployment frequency",
            Some(f.deployment_frequency.per_day),
            f.deployment_frequency.level,
        ),
        (
            "Lead time for changes (median)",
            f.lead_time.median_seconds,
            f.lead_time.level,
        ),
        (
            "Change failure rate",
            f.change_failure_rate.rate,
            f.change_failure_rate.level,
        ),
        (
            "Failed deployment recovery time (median)",
            f.recovery_time.median_seconds,
            f.recovery_time.level,
        ),
        ("Rework rate", f.rework_rate.rate, None),
        ("Open incidents", Some(f.recovery_time.open as f64), None),
    ];
    for (title, expected, level) in stats {
        let a = answer("dora-overview.json", title);
        let shown = a
            .rows
            .first()
            .and_then(|r| r[0].as_deref()?.parse::<f64>().ok());
        match (shown, expected) {
            (Some(s), Some(e)) if close(s, e) => {
                if let Some(level) = level {
                    let color = threshold_color(stat_thresholds(dashboards, title), s);
                    if color_level(&color) != Some(level) {
                        problems.push(format!(
                            "{title}: {s} is coloured {color}, the report's level is {}",
                            level.as_str()
                        ));
                    }
                }
            }
            (None, None) => {}
            _ => problems.push(format!(
                "{title}: the panel shows {shown:?}, the report says {expected:?}"
            )),
        }
    }

    // The levels table.
    let levels = answer("dora-overview.json", "DORA levels");
    let level_of = |figure: &str| -> Option<String> {
        let (fi, li) = (levels.column("figure")?, levels.column("level")?);
        levels
            .rows
            .iter()
            .find(|r| r[fi].as_deref() == Some(figure))
            .and_then(|r| r[li].clone())
    };
    let expected_levels = [
        ("Deployment frequency", f.deployment_frequency.level),
        ("Lead time for changes", f.lead_time.level),
        ("Change failure rate", f.change_failure_rate.level),
        ("Failed deployment recovery time", f.recovery_time.level),
        ("Rework rate", None),
    ];
    if levels.rows.len() != expected_levels.len() {
        problems.push(format!("DORA levels: {} rows", levels.rows.len()));
    }
    for (figure, level) in expected_levels {
        let shown = level_of(figure);
        if shown.as_deref() != level.map(Level::as_str) {
            problems.push(format!(
                "DORA levels: {figure} shows {shown:?}, the report says {level:?}"
            ));
        }
    }

    // The per-service table.
    let by_service = answer("dora-overview.json", "By service");
    let groups = report.groups.as_deref().unwrap_or_default();
    let mut shown_services = BTreeSet::new();
    for (row, values) in by_service.rows.iter().enumerate() {
        let service = by_service
            .column("service")
            .and_then(|i| values[i].clone())
            .unwrap_or_default();
        let Some(g) = groups
            .iter()
            .find(|g| g.service.as_deref() == Some(&service))
        else {
            problems.push(format!("By service: the report has no group {service:?}"));
            continue;
        };
        let gf = &g.figures;
        let pairs = [
            (
                "deployments",
                Some(gf.deployment_frequency.deployments as f64),
            ),
            ("per_day", Some(gf.deployment_frequency.per_day)),
            ("lead_time_median", gf.lead_time.median_seconds),
            ("change_failure_rate", gf.change_failure_rate.rate),
            ("recovery_median", gf.recovery_time.median_seconds),
            ("rework_rate", gf.rework_rate.rate),
        ];
        for (column, expected) in pairs {
            let shown = by_service.number(row, column);
            match (shown, expected) {
                (Some(a), Some(b)) if close(a, b) => {}
                (None, None) => {}
                _ => problems.push(format!(
                    "By service: {service} {column} shows {shown:?}, the report says {expected:?}"
                )),
            }
        }
        shown_services.insert(service);
    }
    for g in groups {
        if g.figures.deployment_frequency.deployments > 0 && !shown_services.contains(g.key()) {
            problems.push(format!("By service lacks {}", g.key()));
        }
    }

    // Change failures by source are the report's `change_failure_rate.by_source`.
    let sources = answer("dora-overview.json", "Change failures by source");
    let shown: BTreeMap<String, f64> = (0..sources.rows.len())
        .filter_map(|row| {
            let source = sources
                .column("source")
                .and_then(|i| sources.rows[row][i].clone())?;
            Some((source, sources.number(row, "deployments")?))
        })
        .collect();
    let expected: BTreeMap<String, f64> = f
        .change_failure_rate
        .by_source
        .iter()
        .map(|(k, v)| (k.clone(), *v as f64))
        .collect();
    if shown != expected || expected.is_empty() {
        problems.push(format!(
            "Change failures by source shows {shown:?}, the report says {expected:?}"
        ));
    }

    // Changes waiting for delivery are the report's undelivered changes.
    let waiting = answer("delivery-flow.json", "Changes waiting").number(0, "changes_waiting");
    if waiting != Some(report.unlinked.changes_not_delivered as f64) {
        problems.push(format!(
            "Changes waiting shows {waiting:?}, the report's unlinked.changes_not_delivered is {}",
            report.unlinked.changes_not_delivered
        ));
    }
    problems
}

/// "Deployments by environment" shows, for every environment of the report by environment,
/// its deployments, frequency, deployment days, rollbacks and failed attempts.
fn compare_environments(
    dashboards: &[Dashboard],
    answers: &Answers,
    report: &cdlake_query::DoraReport,
) -> Vec<String> {
    let (file, title) = ("dora-overview.json", "Deployments by environment");
    find(dashboards, file, title);
    let answer = answers
        .get(&(file.to_string(), title.to_string(), "A".to_string()))
        .unwrap_or_else(|| panic!("{file} / {title} did not answer"));
    let shown: BTreeMap<String, [f64; 5]> = (0..answer.rows.len())
        .filter_map(|row| {
            let env = answer.rows[row][answer.column("environment")?].clone()?;
            let n = |c: &str| answer.number(row, c).unwrap_or(f64::NAN);
            Some((
                env,
                [
                    n("deployments"),
                    n("per_day"),
                    n("deploy_days"),
                    n("rollbacks"),
                    n("failed_attempts"),
                ],
            ))
        })
        .collect();
    let expected: BTreeMap<String, [f64; 5]> = report
        .environments
        .iter()
        .flatten()
        .map(|g| {
            let (df, cfr) = (
                &g.figures.deployment_frequency,
                &g.figures.change_failure_rate,
            );
            (
                g.key().to_string(),
                [
                    df.deployments as f64,
                    df.per_day,
                    df.deploy_days as f64,
                    cfr.rollbacks as f64,
                    cfr.failed_deployments as f64,
                ],
            )
        })
        .collect();
    let same = shown.len() == expected.len()
        && shown
            .iter()
            .zip(&expected)
            .all(|((a, x), (b, y))| a == b && x.iter().zip(y).all(|(x, y)| close(*x, *y)));
    if !same || expected.len() < 2 {
        vec![format!(
            "{title} shows {shown:?}, the report by environment says {expected:?}"
        )]
    } else {
        Vec::new()
    }
}

/// The colour of each level on the DORA overview (thresholds and the levels table's mapping).
fn level_color(level: Level) -> &'static str {
    match level {
        Level::Elite => "dark-green",
        Level::High => "green",
        Level::Medium => "orange",
        Level::Low => "red",
    }
}

/// The levelled figure a set of thresholds on the DORA overview colours: by panel title, and
/// by column for the per-service table's overrides.
fn levelled_metric(title: &str, column: Option<&str>) -> Option<Metric> {
    match (title, column) {
        ("Deployment frequency", None) | ("By service", Some("per_day")) => {
            Some(Metric::DeploymentFrequency)
        }
        ("Lead time for changes (median)" | "Lead time for changes per week", None)
        | ("By service", Some("lead_time_median")) => Some(Metric::LeadTime),
        ("Change failure rate" | "Change failure rate per week", None)
        | ("By service", Some("change_failure_rate")) => Some(Metric::ChangeFailureRate),
        ("Failed deployment recovery time (median)" | "Recovery time per week", None)
        | ("By service", Some("recovery_median")) => Some(Metric::RecoveryTime),
        _ => None,
    }
}

/// Every colour threshold of the DORA overview that colours a DORA figure is the levels
/// table's (`levels::grafana_steps`, the table the report levels with), in the levels'
/// colours; the "DORA levels" panel levels its figures by joining the `dora_levels` view and
/// writes no bound of its own.
#[test]
fn the_dora_overview_takes_its_levels_from_the_levels_table() {
    let mut problems = Vec::new();
    let dashboards = load_dashboards(&mut problems);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let overview: Vec<&Query> = dashboards
        .iter()
        .filter(|d| d.file == "dora-overview.json")
        .flat_map(|d| &d.queries)
        .collect();
    assert!(!overview.is_empty(), "no DORA overview");

    let mut checked = BTreeSet::new();
    let mut check_steps = |title: &str, column: Option<&str>, thresholds: &Value| {
        let steps = thresholds["steps"].as_array().cloned().unwrap_or_default();
        if steps.len() < 2 {
            return;
        }
        let Some(metric) = levelled_metric(title, column) else {
            if title != "Open incidents" {
                problems.push(format!(
                    "{title} {column:?}: thresholds on the DORA overview that colour no DORA figure"
                ));
            }
            return;
        };
        checked.insert(metric);
        let expected = levels::grafana_steps(metric);
        let same = steps.len() == expected.len()
            && steps.iter().zip(&expected).all(|(step, (value, level))| {
                let at = step["value"].as_f64();
                str_field(step, "color") == level_color(*level)
                    && match (at, value) {
                        (None, None) => true,
                        (Some(a), Some(b)) => (a - b).abs() <= 1e-12 * b.abs().max(1.0),
                        _ => false,
                    }
            });
        if !same {
            let want: Vec<String> = expected
                .iter()
                .map(|(v, l)| format!("{v:?} {}", level_color(*l)))
                .collect();
            problems.push(format!(
                "{title} {column:?}: thresholds {steps:?}, the levels table says {want:?}"
            ));
        }
    };
    let mut seen_panels = BTreeSet::new();
    for q in &overview {
        if !seen_panels.insert(q.title.clone()) {
            continue;
        }
        let config = &q.panel["fieldConfig"];
        check_steps(&q.title, None, &config["defaults"]["thresholds"]);
        for o in config["overrides"].as_array().into_iter().flatten() {
            for p in o["properties"].as_array().into_iter().flatten() {
                if str_field(p, "id") == "thresholds" {
                    check_steps(
                        &q.title,
                        Some(str_field(&o["matcher"], "options")),
                        &p["value"],
                    );
                }
            }
        }
    }
    assert_eq!(
        checked,
        Metric::ALL.into_iter().collect::<BTreeSet<_>>(),
        "every levelled figure has its thresholds on the DORA overview"
    );

    let table = find(&dashboards, "dora-overview.json", "DORA levels");
    if !Regex::new(r"(?i)\bJOIN\s+dora_levels\b")
        .unwrap()
        .is_match(&table.sql)
    {
        problems.push("DORA levels: the panel does not join dora_levels".to_string());
    }
    for level in Level::ALL {
        if table.sql.contains(&format!("'{}'", level.as_str())) {
            problems.push(format!(
                "DORA levels: the panel names the level {:?} itself instead of reading dora_levels",
                level.as_str()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// [`check`] refuses what Grafana's PostgreSQL data source would refuse or show wrongly.
#[test]
fn check_refuses_what_grafana_cannot_show() {
    let query = |kind: &str, format: &str, panel: Value| Query {
        dashboard: "x.json".into(),
        panel,
        title: "t".into(),
        kind: kind.into(),
        ref_id: "A".into(),
        format: format.into(),
        sql: String::new(),
    };
    let answer = |columns: &[&str], rows: &[&[Option<&str>]]| Answer {
        columns: columns.iter().map(|c| c.to_string()).collect(),
        rows: rows
            .iter()
            .map(|r| r.iter().map(|v| v.map(str::to_string)).collect())
            .collect(),
    };
    let series = query("timeseries", "time_series", Value::Null);
    let good = answer(
        &["time", "metric", "n"],
        &[
            &[Some("1767225600.0"), Some("a"), Some("1")],
            &[Some("1767225600.0"), Some("b"), Some("2")],
            &[Some("2026-01-02 00:00:00+00:00"), Some("a"), Some("3")],
        ],
    );
    assert_eq!(check(&series, &good, true), Vec::<String>::new());
    let unsorted = answer(
        &["time", "n"],
        &[
            &[Some("1767312000"), Some("1")],
            &[Some("1767225600"), Some("2")],
        ],
    );
    assert!(check(&series, &unsorted, true)[0].contains("sorted"));
    let untimed = answer(&["t", "n"], &[&[Some("1767225600"), Some("1")]]);
    assert!(check(&series, &untimed, true)[0].contains("time"));
    let twice = answer(
        &["time", "n"],
        &[
            &[Some("1767225600"), Some("1")],
            &[Some("1767225600"), Some("2")],
        ],
    );
    assert!(check(&series, &twice, true)[0].contains("same time"));
    let no_number = answer(&["time", "s"], &[&[Some("1767225600"), Some("x")]]);
    assert!(check(&series, &no_number, true)[0].contains("numeric"));
    assert!(check(&series, &answer(&["time", "n"], &[]), true)[0].contains("no rows"));
    assert!(check(&series, &answer(&["time", "n"], &[]), false).is_empty());

    let stat = query("stat", "table", Value::Null);
    let two = answer(&["n"], &[&[Some("1")], &[Some("2")]]);
    assert!(check(&stat, &two, true)[0].contains("one row"));
    assert!(check(&stat, &answer(&["n"], &[&[None]]), true).is_empty());

    let table = query(
        "table",
        "table",
        serde_json::json!({"fieldConfig": {"overrides": [
            {"matcher": {"id": "byName", "options": "waiting"}, "properties": []}]}}),
    );
    let renamed = answer(&["wait"], &[&[Some("1")]]);
    assert!(check(&table, &renamed, true)[0].contains("\"waiting\""));
}

/// The provisioning files name the data source the dashboards use and the directory the
/// README mounts them at (a line check: the files are small and flat).
#[test]
fn the_provisioning_files_match_the_dashboards() {
    let read = |path: &str| {
        std::fs::read_to_string(dashboards_dir().join(path))
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    let settings = |text: &str| -> BTreeMap<String, String> {
        text.lines()
            .map(|l| l.trim().trim_start_matches("- "))
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect()
    };
    let datasource = settings(&read("provisioning/datasources/cdlake.yaml"));
    for (key, value) in [
        ("uid", DATASOURCE_UID),
        ("type", DATASOURCE_TYPE),
        ("user", "cdlake"),
        ("database", "cdlake"),
        ("sslmode", "disable"),
        ("password", "${CDLAKE_TOKEN}"),
        ("url", "${CDLAKE_PG_HOST}:${CDLAKE_PG_PORT}"),
    ] {
        assert_eq!(
            datasource.get(key).map(String::as_str),
            Some(value),
            "{key}"
        );
    }
    let provider = settings(&read("provisioning/dashboards/cdlake.yaml"));
    assert_eq!(
        provider.get("path").map(String::as_str),
        Some("/var/lib/grafana/dashboards/cdlake")
    );
    assert!(
        read("README.md").contains("/var/lib/grafana/dashboards/cdlake"),
        "the README says where to mount the dashboards"
    );
}
