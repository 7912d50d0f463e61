//! The HTTP query API of `cdlake serve` and `cdlake standalone`:
//!
//! - `POST /api/v1/sql` with `{"sql": "…"}`: JSON (an array of row objects, the default), CSV
//!   (`Accept: text/csv`) or an Arrow IPC stream (`Accept: application/vnd.apache.arrow.stream`);
//!   errors are `{"error": …}` ([`ApiError`]): 400 naming the problem (and `"limit"`, the
//!   limit reached) for the caller's mistakes, 403 for a statement that is not read-only (a
//!   write, a setting, a file or URL as a table: Postgres's 42501), 503 when too many queries
//!   run, 500 for cdlake's own failures with what failed (the details are logged).
//! - `GET /api/v1/dora?from&to&by`: the DORA report (the JSON of `cdlake dora --format json`).
//! - `GET /api/v1/tail?subject&predicate&service&environment&origin`: Server-Sent Events, one
//!   `event` per newly committed event row, found by following the `events` table's Delta log
//!   (every commit that adds rows, whatever their event time).
//!
//! [`dora_gauges`] renders the DORA figures per service over the last 30 days as Prometheus
//! gauges for `/metrics`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{self, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use cdlake_schemas::Event;
use cdlake_schemas::event::batch_to_events;
use cdlake_schemas::lake::{AsOf, TableLog};
use cdlake_schemas::paths::Table;
use cdlake_schemas::store::Store;
use chrono::{DateTime, Utc};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{Mutex, broadcast, watch};

use cdlake_wire::ErrorBody;
use cdlake_wire::tail::{Lagged, TailEvent};

use crate::dora::{DoraReport, DoraRequest, Figures, GroupBy};
use crate::format::Format;
use crate::time::parse_time;
use crate::{Engine, Error};

/// The media type of an Arrow IPC stream.
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

struct Api {
    engine: Engine,
    store: Store,
    tail: broadcast::Sender<Arc<Event>>,
    /// Becomes true when the service stops: the live tails end then, rather than holding
    /// their connections open through the stop.
    stopping: watch::Receiver<bool>,
    /// Engines over the tables as they were (`as_of`), the most recently used first.
    past: Mutex<Vec<(AsOf, Engine)>>,
}

/// Engines over past versions kept open for further requests.
const PAST_ENGINES: usize = 4;

impl Api {
    /// The engine answering at `as_of` (the live one when absent).
    async fn engine_at(&self, as_of: Option<&str>) -> crate::Result<Engine> {
        let Some(text) = as_of.filter(|t| !t.trim().is_empty()) else {
            return Ok(self.engine.clone());
        };
        let as_of = AsOf::parse(text).ok_or_else(|| {
            Error::BadRequest(format!(
                "as_of {text:?} is neither a table version (42) nor a time (2026-11-30, RFC 3339)"
            ))
        })?;
        let mut past = self.past.lock().await;
        if let Some(i) = past.iter().position(|(a, _)| *a == as_of) {
            let entry = past.remove(i);
            let engine = entry.1.clone();
            past.insert(0, entry);
            return Ok(engine);
        }
        let engine = Engine::open_as_of(&self.store, self.engine.config().clone(), as_of).await?;
        past.insert(0, (as_of, engine.clone()));
        past.truncate(PAST_ENGINES);
        Ok(engine)
    }
}

/// The query routes. Starts the store watcher that feeds `/api/v1/tail`, whose streams end
/// when `stopping` becomes true.
pub fn router(engine: Engine, store: Store, stopping: watch::Receiver<bool>) -> Router {
    let (tail, _) = broadcast::channel(4096);
    tokio::spawn(watch(store.clone(), tail.clone()));
    Router::new()
        .route("/api/v1/sql", post(sql))
        .route("/api/v1/dora", get(dora))
        .route("/api/v1/tail", get(tail_events))
        .with_state(Arc::new(Api {
            engine,
            store,
            tail,
            stopping,
            past: Mutex::new(Vec::new()),
        }))
}

/// An error as the HTTP API answers it: the status and message [`Error`] decides, as
/// `{"error": …}` (plus `"limit"` naming the limit that was reached). A failure of cdlake's own
/// is logged here, once; its answer says what failed, not the internal error.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.0.log_if_internal();
        let status =
            StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let limit = match &self.0 {
            Error::Limit { limit, .. } => Some(*limit),
            Error::Timeout { .. } => Some("query_timeout_secs"),
            Error::Memory { .. } => Some("memory_mb"),
            _ => None,
        };
        let body = ErrorBody {
            error: self.0.client_message(),
            limit: limit.map(|l| format!("limits.{l}")),
        };
        let mut response = (status, axum::Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
        }
        response
    }
}

fn bad_request(message: impl Into<String>) -> Response {
    (StatusCode::BAD_REQUEST, axum::Json(ErrorBody::new(message))).into_response()
}

#[derive(Debug, Deserialize)]
struct SqlRequest {
    sql: String,
    /// Read the tables as they were: a version of `events` or a time.
    #[serde(default)]
    as_of: Option<String>,
}

async fn sql(State(api): State<Arc<Api>>, headers: HeaderMap, body: Bytes) -> Response {
    let request: SqlRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return bad_request(format!(
                "the body must be JSON {{\"sql\": \"SELECT …\"}}: {e}"
            ));
        }
    };
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_ascii_lowercase();
    let (format, content_type) = if accept.contains(ARROW_STREAM) {
        (Format::ArrowIpc, ARROW_STREAM)
    } else if accept.contains("text/csv") {
        (Format::Csv, "text/csv; charset=utf-8")
    } else {
        (Format::Json, "application/json")
    };
    let engine = match api.engine_at(request.as_of.as_deref()).await {
        Ok(e) => e,
        Err(e) => return ApiError(e).into_response(),
    };
    match engine.sql_rendered(&request.sql, format).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, content_type)], bytes).into_response(),
        Err(e) => ApiError(e).into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct DoraParams {
    from: Option<String>,
    to: Option<String>,
    by: Option<String>,
    as_of: Option<String>,
    /// Whose levels (`design`, `2021`…`2025`); the config's `[dora] bands` when absent.
    bands: Option<String>,
}

async fn dora(State(api): State<Arc<Api>>, Query(p): Query<DoraParams>) -> Response {
    let request = (|| {
        let now = Utc::now();
        let to = match &p.to {
            Some(t) => parse_time(t, now)?,
            None => now,
        };
        let from = match &p.from {
            Some(f) => parse_time(f, now)?,
            None => to - chrono::Duration::days(30),
        };
        let (by, then_by) = match p.by.as_deref() {
            Some(text) => crate::dora::parse_by(text)?,
            None => (None, None),
        };
        let bands = p
            .bands
            .as_deref()
            .map(str::parse::<crate::dora::levels::Benchmark>)
            .transpose()?;
        Ok::<_, Error>((
            DoraRequest {
                from,
                to,
                by,
                then_by,
            },
            bands,
        ))
    })();
    let (request, bands) = match request {
        Ok(r) => r,
        Err(e) => return ApiError(e).into_response(),
    };
    let engine = match api.engine_at(p.as_of.as_deref()).await {
        Ok(e) => e,
        Err(e) => return ApiError(e).into_response(),
    };
    let engine = match bands {
        Some(b) => engine.with_bands(b),
        None => engine,
    };
    match engine.dora(&request).await {
        Ok(report) => axum::Json(report).into_response(),
        Err(e) => ApiError(e).into_response(),
    }
}

#[derive(Debug, Default, Deserialize)]
struct TailFilter {
    subject: Option<String>,
    predicate: Option<String>,
    service: Option<String>,
    environment: Option<String>,
    origin: Option<String>,
}

impl TailFilter {
    fn matches(&self, e: &Event) -> bool {
        let eq = |want: &Option<String>, have: Option<&str>| {
            want.as_deref().is_none_or(|w| have == Some(w))
        };
        eq(&self.subject, Some(&e.subject))
            && eq(&self.predicate, Some(&e.predicate))
            && eq(&self.service, e.service.as_deref())
            && eq(&self.environment, e.environment.as_deref())
            && eq(&self.origin, Some(&e.origin))
    }
}

fn rfc3339(micros: i64) -> String {
    DateTime::from_timestamp_micros(micros)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// An event as the tail sends it: every column but the payload.
pub fn tail_event(e: &Event) -> TailEvent {
    TailEvent {
        event_id: e.event_id.clone(),
        event_source: e.event_source.clone(),
        event_type: e.event_type.clone(),
        subject: e.subject.clone(),
        predicate: e.predicate.clone(),
        spec_version: e.spec_version.clone(),
        origin: e.origin.clone(),
        time: rfc3339(e.time),
        ingested_at: rfc3339(e.ingested_at),
        subject_id: Some(e.subject_id.clone()),
        service: e.service.clone(),
        environment: e.environment.clone(),
        repository: e.repository.clone(),
        change_id: e.change_id.clone(),
        artifact_id: e.artifact_id.clone(),
        pipeline: e.pipeline.clone(),
        run_id: e.run_id.clone(),
        outcome: e.outcome.clone(),
        url: e.url.clone(),
        trace_id: e.trace_id.clone(),
        span_id: e.span_id.clone(),
        chain_id: e.chain_id.clone(),
        team: e.team.clone(),
        task: e.task.clone(),
    }
}

/// [`tail_event`] as a JSON value (its keys in serde_json's map order).
pub fn tail_json(e: &Event) -> serde_json::Value {
    serde_json::to_value(tail_event(e)).unwrap_or_default()
}

async fn tail_events(
    State(api): State<Arc<Api>>,
    Query(filter): Query<TailFilter>,
) -> Sse<impl futures::Stream<Item = Result<sse::Event, Infallible>>> {
    let rx = api.tail.subscribe();
    let stopping = api.stopping.clone();
    let stream = futures::stream::unfold((rx, filter, stopping), |state| async move {
        let (mut rx, filter, mut stopping) = state;
        loop {
            let received = tokio::select! {
                r = rx.recv() => r,
                _ = stopping.wait_for(|s| *s) => return None,
            };
            match received {
                Ok(e) if filter.matches(&e) => {
                    let event = sse::Event::default()
                        .event("event")
                        .id(format!("{}/{}", e.event_source, e.event_id))
                        .data(tail_json(&e).to_string());
                    return Some((Ok(event), (rx, filter, stopping)));
                }
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    let note = sse::Event::default()
                        .event("lagged")
                        .data(json!(Lagged { skipped: n }).to_string());
                    return Some((Ok(note), (rx, filter, stopping)));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// Follow the `events` table's log and broadcast the rows of every commit that adds new rows
/// (compactions add none), whatever their event time: a late redelivery or a backfill of last
/// week shows up as it is committed.
async fn watch(store: Store, tx: broadcast::Sender<Arc<Event>>) {
    let log = loop {
        match TableLog::open(&store, Table::Events).await {
            Ok(log) => break log,
            Err(e) => {
                tracing::warn!(error = %e, "The live tail cannot open the events table; retrying.");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    };
    let mut version = log.latest_version().await.unwrap_or(0);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if tx.receiver_count() == 0 {
            // Nobody listens: move on without reading what was committed meanwhile. The newest
            // version is read before looking for listeners again, so a commit made after a
            // client subscribed (after its response headers) is never skipped.
            if let Ok(latest) = log.latest_version().await
                && tx.receiver_count() == 0
            {
                version = latest;
            }
            continue;
        }
        let commits = match log.added_since(version).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "Reading the events log for the tail failed.");
                continue;
            }
        };
        for (committed, files) in commits {
            for path in files {
                let Ok(Some(bytes)) = store.get(&path.to_string()).await else {
                    continue;
                };
                let events = tokio::task::spawn_blocking(move || read_events(bytes)).await;
                if let Ok(Ok(mut events)) = events {
                    events.sort_by_key(|e| e.time);
                    for e in events {
                        let _ = tx.send(Arc::new(e));
                    }
                }
            }
            version = committed;
        }
    }
}

fn read_events(bytes: Vec<u8>) -> Result<Vec<Event>, Box<dyn std::error::Error + Send + Sync>> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(bytes))?.build()?;
    let mut out = Vec::new();
    for batch in reader {
        out.extend(batch_to_events(&batch?)?);
    }
    Ok(out)
}

/// DORA gauges over the last 30 days, overall (`service="*"`) and per service, cached for a
/// minute so frequent scrapes cost nothing.
#[derive(Clone)]
pub struct DoraGauges {
    engine: Engine,
    cache: Arc<Mutex<Option<(Instant, String)>>>,
}

impl std::fmt::Debug for DoraGauges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DoraGauges").finish_non_exhaustive()
    }
}

impl DoraGauges {
    pub fn new(engine: Engine) -> Self {
        DoraGauges {
            engine,
            cache: Arc::new(Mutex::new(None)),
        }
    }

    /// The Prometheus text of the gauges (empty when the report fails; the failure is logged).
    pub async fn render(&self) -> String {
        let mut cache = self.cache.lock().await;
        if let Some((at, text)) = cache.as_ref()
            && at.elapsed() < Duration::from_secs(60)
        {
            return text.clone();
        }
        let to = Utc::now();
        let request = DoraRequest {
            from: to - chrono::Duration::days(30),
            to,
            by: Some(GroupBy::Service),
            then_by: None,
        };
        let text = match self.engine.dora(&request).await {
            Ok(report) => dora_gauges(&report),
            Err(e) => {
                tracing::warn!(error = %e, "DORA gauges: the report failed.");
                String::new()
            }
        };
        *cache = Some((Instant::now(), text.clone()));
        text
    }
}

/// Render a report's figures as Prometheus gauges, overall as `service="*"`.
pub fn dora_gauges(report: &DoraReport) -> String {
    let mut series: HashMap<&'static str, Vec<String>> = HashMap::new();
    let mut add = |name: &'static str, labels: String, v: Option<f64>| {
        if let Some(v) = v {
            series
                .entry(name)
                .or_default()
                .push(format!("{name}{{{labels}}} {v}"));
        }
    };
    let escape = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let mut figures: Vec<(String, &Figures)> = vec![("*".to_string(), &report.figures)];
    for g in report.groups.iter().flatten() {
        figures.push((g.key().to_string(), &g.figures));
    }
    for (service, f) in figures {
        let l = format!("service=\"{}\"", escape(&service));
        let df = &f.deployment_frequency;
        add(
            "cdlake_dora_deployments",
            l.clone(),
            Some(df.deployments as f64),
        );
        add(
            "cdlake_dora_deployments_per_day",
            l.clone(),
            Some(df.per_day),
        );
        add(
            "cdlake_dora_lead_time_seconds",
            format!("{l},quantile=\"0.5\""),
            f.lead_time.median_seconds,
        );
        add(
            "cdlake_dora_lead_time_seconds",
            format!("{l},quantile=\"0.9\""),
            f.lead_time.p90_seconds,
        );
        add(
            "cdlake_dora_change_failure_rate",
            l.clone(),
            f.change_failure_rate.rate,
        );
        add(
            "cdlake_dora_recovery_time_seconds",
            format!("{l},quantile=\"0.5\""),
            f.recovery_time.median_seconds,
        );
        add(
            "cdlake_dora_recovery_time_seconds",
            format!("{l},quantile=\"0.9\""),
            f.recovery_time.p90_seconds,
        );
        add(
            "cdlake_dora_open_incidents",
            l.clone(),
            Some(f.recovery_time.open as f64),
        );
        add("cdlake_dora_rework_rate", l, f.rework_rate.rate);
    }
    let help = [
        (
            "cdlake_dora_deployments",
            "Production deployments in the last 30 days.",
        ),
        (
            "cdlake_dora_deployments_per_day",
            "Deployment frequency over the last 30 days.",
        ),
        (
            "cdlake_dora_lead_time_seconds",
            "Lead time for changes delivered in the last 30 days.",
        ),
        (
            "cdlake_dora_change_failure_rate",
            "Change failure rate over the last 30 days.",
        ),
        (
            "cdlake_dora_recovery_time_seconds",
            "Failed deployment recovery time of incidents resolved in the last 30 days.",
        ),
        (
            "cdlake_dora_open_incidents",
            "Production incidents open at the end of the window.",
        ),
        (
            "cdlake_dora_rework_rate",
            "Rework rate over the last 30 days.",
        ),
    ];
    let mut out = String::new();
    for (name, text) in help {
        if let Some(lines) = series.get(name) {
            let _ = writeln!(out, "# HELP {name} {text}\n# TYPE {name} gauge");
            for line in lines {
                let _ = writeln!(out, "{line}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `GET /api/v1/tail?…` as axum parses it.
    fn filter(query: &str) -> TailFilter {
        let uri: axum::http::Uri = format!("/api/v1/tail?{query}").parse().unwrap();
        Query::<TailFilter>::try_from_uri(&uri).unwrap().0
    }

    #[test]
    fn each_tail_filter_keeps_only_its_value_and_they_combine() {
        let event = Event {
            subject: "service".into(),
            predicate: "deployed".into(),
            origin: "cdevents".into(),
            service: Some("checkout".into()),
            environment: Some("production".into()),
            ..Event::default()
        };
        let unset = Event {
            service: None,
            environment: None,
            ..event.clone()
        };
        for (query, matches, matches_unset) in [
            ("", true, true),
            ("subject=service", true, true),
            ("subject=change", false, false),
            ("predicate=deployed", true, true),
            ("predicate=upgraded", false, false),
            ("service=checkout", true, false),
            ("service=payments", false, false),
            ("environment=production", true, false),
            ("environment=staging", false, false),
            ("origin=cdevents", true, true),
            ("origin=github", false, false),
            (
                "subject=service&service=checkout&environment=production",
                true,
                false,
            ),
            (
                "subject=service&service=checkout&environment=staging",
                false,
                false,
            ),
        ] {
            let f = filter(query);
            assert_eq!(f.matches(&event), matches, "{query}");
            assert_eq!(
                f.matches(&unset),
                matches_unset,
                "{query} without service/environment"
            );
        }
    }
}
