//! What the TUI shows, as plain data: tailed events, the live filter, pipeline and task runs,
//! spans, and the text formatting they share.

use chrono::{DateTime, Utc};
use serde_json::Value;

/// One event from `/api/v1/tail`: the stored row without its payload.
pub use cdlake_wire::TailEvent;

/// A field a filter term tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Service,
    Environment,
    Origin,
    Subject,
    Predicate,
    Type,
    Outcome,
    Run,
    /// A bare word: found in any of the shown columns.
    Any,
}

/// The live filter: `key=value` terms, all of which must hold. Keys: `service`, `env`
/// (`environment`), `origin`, `subject`, `predicate`, `type` (subject, predicate, both as
/// `subject.predicate`, or part of the full type), `outcome`, `run`; a bare word matches any
/// shown column. Values compare without case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    terms: Vec<(Field, String)>,
}

impl Filter {
    pub fn parse(text: &str) -> Result<Filter, String> {
        let mut terms = Vec::new();
        for word in text.split_whitespace() {
            let (field, value) = match word.split_once('=') {
                None => (Field::Any, word),
                Some((key, value)) => {
                    let field = match key.to_ascii_lowercase().as_str() {
                        "service" | "svc" => Field::Service,
                        "env" | "environment" => Field::Environment,
                        "origin" => Field::Origin,
                        "subject" => Field::Subject,
                        "predicate" => Field::Predicate,
                        "type" => Field::Type,
                        "outcome" => Field::Outcome,
                        "run" | "run_id" => Field::Run,
                        other => {
                            return Err(format!(
                                "unknown filter key {other:?} (service, env, origin, subject, predicate, type, outcome, run)"
                            ));
                        }
                    };
                    (field, value)
                }
            };
            if value.is_empty() {
                return Err(format!("{word:?} has no value"));
            }
            terms.push((field, value.to_ascii_lowercase()));
        }
        Ok(Filter { terms })
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    pub fn matches(&self, e: &TailEvent) -> bool {
        self.terms.iter().all(|(field, want)| {
            let eq = |have: Option<&str>| have.is_some_and(|h| h.eq_ignore_ascii_case(want));
            match field {
                Field::Service => eq(e.service.as_deref()),
                Field::Environment => eq(e.environment.as_deref()),
                Field::Origin => eq(Some(&e.origin)),
                Field::Subject => eq(Some(&e.subject)),
                Field::Predicate => eq(Some(&e.predicate)),
                Field::Outcome => eq(e.outcome.as_deref()),
                Field::Run => eq(e.run_id.as_deref()),
                Field::Type => {
                    eq(Some(&e.subject))
                        || eq(Some(&e.predicate))
                        || eq(Some(&e.kind()))
                        || e.event_type.to_ascii_lowercase().contains(want.as_str())
                }
                Field::Any => [
                    Some(e.kind().as_str()),
                    Some(e.origin.as_str()),
                    e.service.as_deref(),
                    e.environment.as_deref(),
                    e.outcome.as_deref(),
                    e.subject_id.as_deref(),
                ]
                .into_iter()
                .flatten()
                .any(|h| h.to_ascii_lowercase().contains(want.as_str())),
            }
        })
    }
}

/// A row of the `pipeline_runs` view.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PipelineRun {
    pub run_id: String,
    /// The run's identity (origin, repository, run id, attempt) as one value: what its tasks
    /// and traces are looked up by.
    pub run_key: String,
    /// Which attempt of the run (a GitHub re-run counts up); `None` where the sender has none.
    pub attempt: Option<i64>,
    pub pipeline: Option<String>,
    pub outcome: Option<String>,
    pub duration_seconds: Option<f64>,
    pub queue_seconds: Option<f64>,
    /// Queued, started or finished time, the first known, in µs since the epoch.
    pub start_us: Option<i64>,
}

/// A row of the `task_runs` view.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskRun {
    pub task_run_id: String,
    pub task: Option<String>,
    pub outcome: Option<String>,
    pub start_us: Option<i64>,
    pub end_us: Option<i64>,
}

/// A span of the run's trace.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Span {
    pub name: String,
    pub start_us: Option<i64>,
    pub end_us: Option<i64>,
    pub status: Option<String>,
}

fn text(row: &Value, key: &str) -> Option<String> {
    match row.get(key)? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn float(row: &Value, key: &str) -> Option<f64> {
    match row.get(key)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn int(row: &Value, key: &str) -> Option<i64> {
    match row.get(key)? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

impl PipelineRun {
    pub const SQL: &'static str = "SELECT run_id, run_key, attempt, pipeline, outcome, duration_seconds, queue_seconds, \
         CAST(coalesce(started_at, queued_at, finished_at) AS BIGINT) AS start_us \
         FROM pipeline_runs ORDER BY start_us DESC NULLS LAST LIMIT 500";

    /// The run id as shown: with its attempt after a re-run (`123 #2`).
    pub fn label(&self) -> String {
        match self.attempt {
            Some(n) if n > 1 => format!("{} #{n}", self.run_id),
            _ => self.run_id.clone(),
        }
    }

    pub fn from_row(row: &Value) -> PipelineRun {
        PipelineRun {
            run_id: text(row, "run_id").unwrap_or_default(),
            run_key: text(row, "run_key").unwrap_or_default(),
            attempt: int(row, "attempt"),
            pipeline: text(row, "pipeline"),
            outcome: text(row, "outcome"),
            duration_seconds: float(row, "duration_seconds"),
            queue_seconds: float(row, "queue_seconds"),
            start_us: int(row, "start_us"),
        }
    }
}

impl TaskRun {
    /// The task runs of one pipeline run attempt, by its `run_key`.
    pub fn sql(run_key: &str) -> String {
        format!(
            "SELECT task_run_id, task, outcome, CAST(started_at AS BIGINT) AS start_us, \
             CAST(finished_at AS BIGINT) AS end_us FROM task_runs WHERE run_key = {} \
             ORDER BY start_us NULLS LAST, task_run_id LIMIT 500",
            quote(run_key)
        )
    }

    pub fn from_row(row: &Value) -> TaskRun {
        TaskRun {
            task_run_id: text(row, "task_run_id").unwrap_or_default(),
            task: text(row, "task"),
            outcome: text(row, "outcome"),
            start_us: int(row, "start_us"),
            end_us: int(row, "end_us"),
        }
    }
}

impl Span {
    /// The spans of the run's traces, as `pipeline_traces` joins them (by trace id, or by the
    /// spans' `cicd.pipeline.run.id`), by the attempt's `run_key`; an error is shown as "no
    /// traces".
    pub fn sql(run_key: &str) -> String {
        format!(
            "SELECT name, status, CAST(\"start\" AS BIGINT) AS start_us, CAST(\"end\" AS BIGINT) AS end_us \
             FROM spans WHERE trace_id IN (SELECT trace_id FROM pipeline_traces WHERE run_key = {}) \
             ORDER BY start_us LIMIT 200",
            quote(run_key)
        )
    }

    pub fn from_row(row: &Value) -> Span {
        Span {
            name: text(row, "name").unwrap_or_default(),
            start_us: int(row, "start_us"),
            end_us: int(row, "end_us"),
            status: text(row, "status"),
        }
    }
}

/// A SQL string literal.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The query for an event's payload.
pub fn payload_sql(event_source: &str, event_id: &str) -> String {
    format!(
        "SELECT payload FROM events WHERE event_source = {} AND event_id = {} LIMIT 1",
        quote(event_source),
        quote(event_id)
    )
}

/// `HH:MM:SS` (UTC) of an RFC 3339 time; the text itself when it does not parse.
pub fn clock(rfc3339: &str) -> String {
    DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| t.with_timezone(&Utc).format("%H:%M:%S").to_string())
        .unwrap_or_else(|_| rfc3339.chars().take(8).collect())
}

/// `MM-DD HH:MM` (UTC) of a µs timestamp.
pub fn short_time(us: Option<i64>) -> String {
    us.and_then(DateTime::from_timestamp_micros)
        .map(|t| t.format("%m-%d %H:%M").to_string())
        .unwrap_or_else(|| "-".into())
}

/// A duration in the largest unit that keeps it short: `850ms`, `42s`, `3m04s`, `2h05m`, `3.2d`.
pub fn duration(seconds: Option<f64>) -> String {
    let Some(s) = seconds.filter(|s| s.is_finite()) else {
        return "-".into();
    };
    let sign = if s < 0.0 { "-" } else { "" };
    let s = s.abs();
    let body = if s < 1.0 {
        format!("{}ms", (s * 1000.0).round() as u64)
    } else if s < 60.0 {
        format!("{}s", s.round() as u64)
    } else if s < 3600.0 {
        let t = s.round() as u64;
        format!("{}m{:02}s", t / 60, t % 60)
    } else if s < 86400.0 {
        let t = (s / 60.0).round() as u64;
        format!("{}h{:02}m", t / 60, t % 60)
    } else {
        format!("{:.1}d", s / 86400.0)
    };
    format!("{sign}{body}")
}

/// Pretty JSON of a payload; the text as it is when it is not JSON.
pub fn pretty_json(payload: &str) -> String {
    serde_json::from_str::<Value>(payload)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| payload.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: (&str, &str), service: &str) -> TailEvent {
        TailEvent {
            subject: kind.0.into(),
            predicate: kind.1.into(),
            event_type: format!("dev.cdevents.{}.{}.0.3.0", kind.0, kind.1),
            origin: "cdevents".into(),
            service: Some(service.into()),
            ..TailEvent::default()
        }
    }

    #[test]
    fn filter_terms_all_hold() {
        let f = Filter::parse("service=checkout type=deployed").unwrap();
        assert!(f.matches(&event(("service", "deployed"), "checkout")));
        assert!(f.matches(&event(("service", "deployed"), "Checkout")));
        assert!(!f.matches(&event(("service", "deployed"), "cart")));
        assert!(!f.matches(&event(("service", "upgraded"), "checkout")));
        let f = Filter::parse("type=service.deployed").unwrap();
        assert!(f.matches(&event(("service", "deployed"), "x")));
        assert!(Filter::parse("").unwrap().matches(&event(("a", "b"), "c")));
        assert!(
            Filter::parse("check")
                .unwrap()
                .matches(&event(("a", "b"), "checkout"))
        );
    }

    #[test]
    fn bad_filters_are_errors_not_panics() {
        assert!(Filter::parse("colour=red").is_err());
        assert!(Filter::parse("service=").is_err());
        assert!(Filter::parse("=x").is_err());
    }

    #[test]
    fn quotes_are_escaped() {
        assert_eq!(
            payload_sql("/src/o'brien", "id'); DROP"),
            "SELECT payload FROM events WHERE event_source = '/src/o''brien' AND event_id = 'id''); DROP' LIMIT 1"
        );
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(Some(0.25)), "250ms");
        assert_eq!(duration(Some(42.0)), "42s");
        assert_eq!(duration(Some(184.0)), "3m04s");
        assert_eq!(duration(Some(7500.0)), "2h05m");
        assert_eq!(duration(Some(2.0 * 86400.0)), "2.0d");
        assert_eq!(duration(None), "-");
        assert_eq!(duration(Some(f64::NAN)), "-");
    }

    #[test]
    fn rows_parse_leniently() {
        let row = serde_json::json!({"run_id": "r1", "pipeline": null, "duration_seconds": "12.5", "start_us": 1700000000000000i64});
        let run = PipelineRun::from_row(&row);
        assert_eq!(run.run_id, "r1");
        assert_eq!(run.label(), "r1");
        let rerun = PipelineRun::from_row(&serde_json::json!({"run_id": "r1", "attempt": 2}));
        assert_eq!(rerun.label(), "r1 #2");
        assert_eq!(run.pipeline, None);
        assert_eq!(run.duration_seconds, Some(12.5));
        assert_eq!(run.start_us, Some(1_700_000_000_000_000));
        assert_eq!(clock("2026-03-01T10:11:12.5+01:00"), "09:11:12");
        assert_eq!(clock("garbage"), "garbage");
    }
}
