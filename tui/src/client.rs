//! The HTTP side: one task follows `/api/v1/tail` and reconnects by itself; another answers
//! the app's requests (SQL, DORA) each in a task of its own. Both talk to the app only through
//! channels of [`Msg`] and [`Request`].

use std::time::Duration;

use cdlake_wire::DoraReport;
use cdlake_wire::ErrorBody;
use cdlake_wire::tail::Lagged;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::app::{DoraData, Msg, Request, RunDetail};
use crate::model::{PipelineRun, Span, TailEvent, TaskRun, payload_sql};
use crate::sse::{SseEvent, SseParser};

/// What can fail talking to the query service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    #[error("HTTP {status}: {message}")]
    Status {
        status: reqwest::StatusCode,
        message: String,
    },
    #[error("unexpected answer: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("the tail stream ended")]
    StreamEnded,
    #[error("no data for {0:?}: the connection looks dead")]
    Silent(Duration),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where the query service is, and its token.
#[derive(Debug, Clone)]
pub struct Connection {
    base: String,
    token: Option<String>,
}

impl Connection {
    pub fn new(url: &str, token: Option<String>) -> Connection {
        Connection {
            base: url.trim_end_matches('/').to_string(),
            token: token.filter(|t| !t.is_empty()),
        }
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    fn auth(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }
}

async fn check(resp: reqwest::Response) -> Result<reqwest::Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body = resp.text().await.unwrap_or_default();
    let message = serde_json::from_str::<ErrorBody>(&body)
        .map(|b| b.error)
        .unwrap_or(body);
    Err(Error::Status { status, message })
}

/// Runs one query over `/api/v1/sql`.
pub async fn sql(http: &reqwest::Client, conn: &Connection, query: &str) -> Result<Vec<Value>> {
    let resp = conn
        .auth(http.post(format!("{}/api/v1/sql", conn.base)))
        .header(reqwest::header::ACCEPT, "application/json")
        .json(&serde_json::json!({ "sql": query }))
        .timeout(Duration::from_secs(60))
        .send()
        .await?;
    let bytes = check(resp).await?.bytes().await?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// The DORA report over the last `days` days.
pub async fn dora(
    http: &reqwest::Client,
    conn: &Connection,
    days: u32,
    by: &str,
) -> Result<DoraReport> {
    let resp = conn
        .auth(http.get(format!("{}/api/v1/dora", conn.base)))
        .query(&[
            ("from", format!("now-{days}d").as_str()),
            ("to", "now"),
            ("by", by),
        ])
        .timeout(Duration::from_secs(120))
        .send()
        .await?;
    let bytes = check(resp).await?.bytes().await?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// Follows the tail for ever: reconnects with a growing pause (up to 5 s) after each loss.
pub async fn tail(http: reqwest::Client, conn: Connection, tx: mpsc::Sender<Msg>) {
    let mut pause = Duration::from_millis(250);
    loop {
        let err = match tail_once(&http, &conn, &tx, &mut pause).await {
            Ok(()) => return, // the app is gone
            Err(e) => e,
        };
        if tx.send(Msg::Disconnected(err.to_string())).await.is_err() {
            return;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// The server sends a keep-alive comment every 15 s: this much silence means a dead link.
const SILENCE: Duration = Duration::from_secs(45);

async fn tail_once(
    http: &reqwest::Client,
    conn: &Connection,
    tx: &mpsc::Sender<Msg>,
    pause: &mut Duration,
) -> Result<()> {
    let resp = conn
        .auth(http.get(format!("{}/api/v1/tail", conn.base)))
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .send()
        .await?;
    let mut resp = check(resp).await?;
    if tx.send(Msg::Connected).await.is_err() {
        return Ok(());
    }
    *pause = Duration::from_millis(250);
    let mut parser = SseParser::default();
    let mut events = Vec::new();
    loop {
        let chunk = match tokio::time::timeout(SILENCE, resp.chunk()).await {
            Err(_) => return Err(Error::Silent(SILENCE)),
            Ok(chunk) => chunk?,
        };
        let Some(chunk) = chunk else {
            return Err(Error::StreamEnded);
        };
        parser.push(&chunk, &mut events);
        for e in events.drain(..) {
            if let Some(msg) = message(e)
                && tx.send(msg).await.is_err()
            {
                return Ok(());
            }
        }
    }
}

fn message(e: SseEvent) -> Option<Msg> {
    match e.event.as_str() {
        "event" => serde_json::from_str::<TailEvent>(&e.data)
            .ok()
            .map(|ev| Msg::Tail(Box::new(ev))),
        "lagged" => {
            let skipped = serde_json::from_str::<Lagged>(&e.data)
                .map(|l| l.skipped)
                .unwrap_or(0);
            Some(Msg::Lagged(skipped))
        }
        _ => None,
    }
}

/// Answers the app's requests until it goes away.
pub async fn serve(
    http: reqwest::Client,
    conn: Connection,
    mut requests: mpsc::UnboundedReceiver<Request>,
    tx: mpsc::Sender<Msg>,
) {
    while let Some(request) = requests.recv().await {
        let (http, conn, tx) = (http.clone(), conn.clone(), tx.clone());
        tokio::spawn(async move {
            let msg = answer(&http, &conn, request).await;
            let _ = tx.send(msg).await;
        });
    }
}

async fn answer(http: &reqwest::Client, conn: &Connection, request: Request) -> Msg {
    match request {
        Request::Payload {
            event_source,
            event_id,
        } => {
            let result = sql(http, conn, &payload_sql(&event_source, &event_id))
                .await
                .map_err(|e| e.to_string())
                .and_then(|rows| {
                    rows.first()
                        .and_then(|r| r.get("payload"))
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .ok_or_else(|| "the event is not in the store (yet)".to_string())
                });
            Msg::Payload {
                event_source,
                event_id,
                result,
            }
        }
        Request::Dora {
            days,
            by_environment,
        } => {
            let by = if by_environment {
                "environment"
            } else {
                "service"
            };
            let (by_service, by_week) = tokio::join!(
                dora(http, conn, days, by),
                dora(http, conn, days.max(84), "week"),
            );
            let result = match (by_service, by_week) {
                (Ok(by_service), Ok(by_week)) => Ok(Box::new(DoraData {
                    by_service,
                    by_week,
                })),
                (Err(e), _) | (_, Err(e)) => Err(e.to_string()),
            };
            Msg::Dora {
                days,
                by_environment,
                result,
            }
        }
        Request::Pipelines => Msg::Pipelines(
            sql(http, conn, PipelineRun::SQL)
                .await
                .map(|rows| rows.iter().map(PipelineRun::from_row).collect())
                .map_err(|e| e.to_string()),
        ),
        Request::Tasks { run_key } => {
            let (task_sql, span_sql) = (TaskRun::sql(&run_key), Span::sql(&run_key));
            let (tasks, spans) =
                tokio::join!(sql(http, conn, &task_sql), sql(http, conn, &span_sql),);
            let result = tasks
                .map(|rows| RunDetail {
                    tasks: rows.iter().map(TaskRun::from_row).collect(),
                    // No spans table yet, or no trace: "no traces", not an error.
                    spans: spans
                        .map(|rows| rows.iter().map(Span::from_row).collect())
                        .unwrap_or_default(),
                })
                .map_err(|e| e.to_string());
            Msg::Tasks { run_key, result }
        }
    }
}
