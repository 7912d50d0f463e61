//! The `events` table: one row per stored event.

use std::sync::{Arc, LazyLock};

use arrow::array::{
    Array, ArrayRef, Int64Array, RecordBatch, StringArray, StringBuilder,
    TimestampMicrosecondArray, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;

/// Where an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    CdEvents,
    Github,
    Gitlab,
    Otlp,
    /// Prometheus Alertmanager's webhook (`POST /webhooks/alertmanager`).
    Alertmanager,
    /// Grafana Alerting's webhook contact point (the same route and shape).
    Grafana,
    Pagerduty,
    Opsgenie,
    Incidentio,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::CdEvents => "cdevents",
            Origin::Github => "github",
            Origin::Gitlab => "gitlab",
            Origin::Otlp => "otlp",
            Origin::Alertmanager => "alertmanager",
            Origin::Grafana => "grafana",
            Origin::Pagerduty => "pagerduty",
            Origin::Opsgenie => "opsgenie",
            Origin::Incidentio => "incidentio",
        }
    }
}

/// One normalised row of the `events` table. Times are microseconds since the Unix epoch, UTC.
/// Its JSON form carries a normalised event from the receiver to the ingester.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Event {
    pub event_id: String,
    pub event_source: String,
    pub event_type: String,
    pub subject: String,
    pub predicate: String,
    pub spec_version: String,
    pub origin: String,
    pub time: i64,
    pub ingested_at: i64,
    pub subject_id: String,
    pub service: Option<String>,
    pub environment: Option<String>,
    pub repository: Option<String>,
    pub change_id: Option<String>,
    pub artifact_id: Option<String>,
    pub pipeline: Option<String>,
    pub run_id: Option<String>,
    pub outcome: Option<String>,
    pub url: Option<String>,
    pub trace_id: Option<String>,
    pub span_id: Option<String>,
    pub chain_id: Option<String>,
    /// `customData.team`, which overrides the `[teams]` mapping of the configuration.
    pub team: Option<String>,
    /// The task name of a `taskrun.*` event.
    pub task: Option<String>,
    /// The original JSON, byte for byte.
    pub payload: String,
    /// Which attempt of its run a `pipelinerun.*` or `taskrun.*` event belongs to (GitHub's
    /// `run_attempt`: a re-run keeps the run id and counts up); `None` where the sender has no
    /// attempts. A run is identified by origin, repository, run id and attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<i64>,
    /// The labels of a `change.*` event (a pull or merge request's labels, CDEvents
    /// `customData.labels`) as a JSON array of strings; `None` where the sender has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<String>,
    /// What a `change.*` event that is a revert reverts: the reverted change's id (GitHub's
    /// `Reverts owner/repo#12`, GitLab's `This reverts merge request !12`), else the reverted
    /// commit's purl (`This reverts commit <sha>`), else `""` (a title `Revert "…"` naming
    /// neither); `None` for a change that is no revert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverts: Option<String>,
    /// The branch of a `change.*` event: a pull or merge request's source branch (in the same
    /// repository), a push's branch; `None` for the default branch and for forks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// The earliest commit time a push to a branch carries (µs since the epoch, UTC): where a
    /// change's lead time starts with `[dora] lead_time_start = "first_commit"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_commit_at: Option<i64>,
}

impl Event {
    /// The de-duplication key of this event's identity.
    pub fn identity_key(&self) -> u128 {
        crate::identity_key(&self.event_source, &self.event_id)
    }

    /// The UTC date of the event time: its partition.
    pub fn date(&self) -> chrono::NaiveDate {
        micros_to_date(self.time)
    }
}

/// Label names as stored in `events.labels`: a JSON array of strings, `None` when there are none.
pub fn labels_json<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let names: Vec<&str> = names.into_iter().collect();
    (!names.is_empty())
        .then(|| serde_json::to_string(&names).ok())
        .flatten()
}

/// The earliest event time cdlake stores: 2000-01-01T00:00:00Z, in µs since the epoch.
pub const EARLIEST_TIME: i64 = 946_684_800_000_000;

/// How far ahead of the receiver's clock an event time may be: one day, in µs.
pub const MAX_AHEAD: i64 = 86_400_000_000;

/// Whether an event time (µs since the epoch, UTC) is plausible for an input received at `now`:
/// not before 2000 and not more than a day ahead of the receiver's clock. A time outside is a
/// sender's clock or unit error (seconds read as milliseconds, a year typed 1015), and would
/// create a date partition of its own; the error is the rejection's reason.
pub fn check_time(time: i64, now: i64) -> Result<(), String> {
    let show = |t: i64| {
        chrono::DateTime::from_timestamp_micros(t)
            .map_or_else(|| format!("{t} µs"), |t| t.to_rfc3339())
    };
    if time < EARLIEST_TIME {
        return Err(format!(
            "the event time {} is before 2000-01-01: check the sender's clock and time format",
            show(time)
        ));
    }
    if time > now.saturating_add(MAX_AHEAD) {
        return Err(format!(
            "the event time {} is more than a day ahead of the receiver's clock ({}): check the sender's clock and time format",
            show(time),
            show(now)
        ));
    }
    Ok(())
}

pub(crate) fn micros_to_date(micros: i64) -> chrono::NaiveDate {
    chrono::DateTime::from_timestamp_micros(micros)
        .unwrap_or_default()
        .date_naive()
}

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// Column names of the `events` table, in order. Columns added after the first release come
/// last (`attempt`, `labels`, `reverts`, `branch`, `first_commit_at`), so a table created before them and upgraded (a Delta schema change that
/// appends) and a table created since have the same column order.
pub const EVENT_COLUMNS: [&str; 30] = [
    "event_id",
    "event_source",
    "event_type",
    "subject",
    "predicate",
    "spec_version",
    "origin",
    "time",
    "ingested_at",
    "subject_id",
    "service",
    "environment",
    "repository",
    "change_id",
    "artifact_id",
    "pipeline",
    "run_id",
    "outcome",
    "url",
    "trace_id",
    "span_id",
    "chain_id",
    "team",
    "task",
    "payload",
    "attempt",
    "labels",
    "reverts",
    "branch",
    "first_commit_at",
];

static EVENTS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let fields = EVENT_COLUMNS.iter().map(|&name| {
        let required = matches!(
            name,
            "event_id"
                | "event_source"
                | "event_type"
                | "subject"
                | "predicate"
                | "spec_version"
                | "origin"
                | "time"
                | "ingested_at"
                | "subject_id"
                | "payload"
        );
        let ty = match name {
            "time" | "ingested_at" | "first_commit_at" => ts_type(),
            "attempt" => DataType::Int64,
            _ => DataType::Utf8,
        };
        Field::new(name, ty, !required)
    });
    Arc::new(Schema::new(fields.collect::<Vec<_>>()))
});

/// The Arrow schema of the `events` table (without the `date` partition column).
pub fn events_schema() -> SchemaRef {
    EVENTS_SCHEMA.clone()
}

/// Rows to one record batch of [`events_schema`].
pub fn events_to_batch(events: &[Event]) -> Result<RecordBatch, ArrowError> {
    let n = events.len();
    let strings = |f: &dyn Fn(&Event) -> Option<&str>| -> ArrayRef {
        let mut b = StringBuilder::with_capacity(n, n * 16);
        for e in events {
            b.append_option(f(e));
        }
        Arc::new(b.finish())
    };
    let times = |f: &dyn Fn(&Event) -> i64| -> ArrayRef {
        let mut b = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
        for e in events {
            b.append_value(f(e));
        }
        Arc::new(b.finish())
    };
    let columns: Vec<ArrayRef> = vec![
        strings(&|e| Some(&e.event_id)),
        strings(&|e| Some(&e.event_source)),
        strings(&|e| Some(&e.event_type)),
        strings(&|e| Some(&e.subject)),
        strings(&|e| Some(&e.predicate)),
        strings(&|e| Some(&e.spec_version)),
        strings(&|e| Some(&e.origin)),
        times(&|e| e.time),
        times(&|e| e.ingested_at),
        strings(&|e| Some(&e.subject_id)),
        strings(&|e| e.service.as_deref()),
        strings(&|e| e.environment.as_deref()),
        strings(&|e| e.repository.as_deref()),
        strings(&|e| e.change_id.as_deref()),
        strings(&|e| e.artifact_id.as_deref()),
        strings(&|e| e.pipeline.as_deref()),
        strings(&|e| e.run_id.as_deref()),
        strings(&|e| e.outcome.as_deref()),
        strings(&|e| e.url.as_deref()),
        strings(&|e| e.trace_id.as_deref()),
        strings(&|e| e.span_id.as_deref()),
        strings(&|e| e.chain_id.as_deref()),
        strings(&|e| e.team.as_deref()),
        strings(&|e| e.task.as_deref()),
        strings(&|e| Some(&e.payload)),
        Arc::new(Int64Array::from_iter(events.iter().map(|e| e.attempt))),
        strings(&|e| e.labels.as_deref()),
        strings(&|e| e.reverts.as_deref()),
        strings(&|e| e.branch.as_deref()),
        {
            let mut b = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
            for e in events {
                b.append_option(e.first_commit_at);
            }
            Arc::new(b.finish())
        },
    ];
    RecordBatch::try_new(events_schema(), columns)
}

/// A record batch with the `events` columns (found by name, extra columns ignored) back to rows.
pub fn batch_to_events(batch: &RecordBatch) -> Result<Vec<Event>, ArrowError> {
    let col = |name: &str| -> Result<&ArrayRef, ArrowError> {
        batch
            .column_by_name(name)
            .ok_or_else(|| ArrowError::SchemaError(format!("missing column {name}")))
    };
    let s = |name: &str| -> Result<&StringArray, ArrowError> {
        col(name)?
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| ArrowError::SchemaError(format!("column {name} is not utf8")))
    };
    let t = |name: &str| -> Result<&TimestampMicrosecondArray, ArrowError> {
        col(name)?
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .ok_or_else(|| ArrowError::SchemaError(format!("column {name} is not timestamp(µs)")))
    };
    let req = |a: &StringArray, i: usize| a.value(i).to_string();
    let opt = |a: &StringArray, i: usize| a.is_valid(i).then(|| a.value(i).to_string());
    let (time, ingested_at) = (t("time")?, t("ingested_at")?);
    let (event_id, event_source, event_type) =
        (s("event_id")?, s("event_source")?, s("event_type")?);
    let (subject, predicate, subject_id) = (s("subject")?, s("predicate")?, s("subject_id")?);
    let (spec_version, origin, payload) = (s("spec_version")?, s("origin")?, s("payload")?);
    let (service, environment, repository) = (s("service")?, s("environment")?, s("repository")?);
    let (change_id, artifact_id, pipeline) = (s("change_id")?, s("artifact_id")?, s("pipeline")?);
    let (run_id, outcome, url, task) = (s("run_id")?, s("outcome")?, s("url")?, s("task")?);
    let (trace_id, span_id, chain_id, team) =
        (s("trace_id")?, s("span_id")?, s("chain_id")?, s("team")?);
    // Files written before the column existed have no `attempt`.
    let attempt =
        match batch.column_by_name("attempt") {
            None => None,
            Some(a) => Some(a.as_any().downcast_ref::<Int64Array>().ok_or_else(|| {
                ArrowError::SchemaError("column attempt is not int64".to_string())
            })?),
        };
    // Nor `labels`, `reverts`, `branch` and `first_commit_at`.
    let later = |name: &str| -> Result<Option<&StringArray>, ArrowError> {
        batch
            .column_by_name(name)
            .map_or(Ok(None), |_| s(name).map(Some))
    };
    let (labels, reverts) = (later("labels")?, later("reverts")?);
    let branch = later("branch")?;
    let first_commit_at = match batch.column_by_name("first_commit_at") {
        None => None,
        Some(_) => Some(t("first_commit_at")?),
    };
    Ok((0..batch.num_rows())
        .map(|i| Event {
            event_id: req(event_id, i),
            event_source: req(event_source, i),
            event_type: req(event_type, i),
            subject: req(subject, i),
            predicate: req(predicate, i),
            spec_version: req(spec_version, i),
            origin: req(origin, i),
            time: time.value(i),
            ingested_at: ingested_at.value(i),
            subject_id: req(subject_id, i),
            service: opt(service, i),
            environment: opt(environment, i),
            repository: opt(repository, i),
            change_id: opt(change_id, i),
            artifact_id: opt(artifact_id, i),
            pipeline: opt(pipeline, i),
            run_id: opt(run_id, i),
            outcome: opt(outcome, i),
            url: opt(url, i),
            trace_id: opt(trace_id, i),
            span_id: opt(span_id, i),
            chain_id: opt(chain_id, i),
            team: opt(team, i),
            task: opt(task, i),
            payload: req(payload, i),
            attempt: attempt.and_then(|a| a.is_valid(i).then(|| a.value(i))),
            labels: labels.and_then(|a| opt(a, i)),
            reverts: reverts.and_then(|a| opt(a, i)),
            branch: branch.and_then(|a| opt(a, i)),
            first_commit_at: first_commit_at.and_then(|a| a.is_valid(i).then(|| a.value(i))),
        })
        .collect())
}
