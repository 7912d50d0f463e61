//! CDEvents (spec v0.4.x and v0.5.x) and CloudEvents-wrapped CDEvents to [`Event`] rows.
//!
//! Accepted shapes:
//! - a bare CDEvent: `{"context": {...}, "subject": {...}, "customData": ...}`; v0.4 names the
//!   spec version `context.version`, v0.5 `context.specversion`;
//! - a CloudEvent in structured mode whose `data` is the CDEvent (an object or a JSON string),
//!   e.g. `{"specversion": "1.0", "id", "source", "type", "time", "traceparent", "data": {...}}`.
//!
//! Any well-formed CDEvent of any type is accepted, known or not; the linking fields are read
//! from the places the spec puts them (e.g. `subject.content.environment.id`).

use serde_json::{Map, Value};

use crate::event::{Event, Origin};

/// Why an input was rejected: the reason of its dead-letter row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection(pub String);

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Rejection {}

fn reject(reason: impl Into<String>) -> Rejection {
    Rejection(reason.into())
}

/// The parts of a CDEvents type `dev.cdevents.<subject>.<predicate>.<version>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdEventType<'a> {
    pub subject: &'a str,
    pub predicate: &'a str,
    pub version: &'a str,
}

/// Parse a CDEvents type; `None` when it is not one.
pub fn parse_type(ty: &str) -> Option<CdEventType<'_>> {
    let rest = ty.strip_prefix("dev.cdevents.")?;
    let (subject, rest) = rest.split_once('.')?;
    let (predicate, version) = rest.split_once('.')?;
    let ident =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    let core = version.split(['-', '+']).next().unwrap_or_default();
    let semver = core.split('.').count() == 3
        && core
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    (ident(subject) && ident(predicate) && semver).then_some(CdEventType {
        subject,
        predicate,
        version,
    })
}

/// Parse an RFC 3339 timestamp with any offset to microseconds since the epoch, UTC.
pub fn parse_time(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_micros())
}

/// Parse one CDEvent or CloudEvent-wrapped CDEvent from its raw JSON text.
///
/// `ingested_at` is stamped on the row; `origin` records the receiver.
pub fn parse(raw: &[u8], origin: Origin, ingested_at: i64) -> Result<Event, Rejection> {
    let text = std::str::from_utf8(raw).map_err(|e| reject(format!("not valid UTF-8: {e}")))?;
    let value: Value =
        serde_json::from_str(text).map_err(|e| reject(format!("malformed JSON: {e}")))?;
    let Value::Object(top) = value else {
        return Err(reject("not a JSON object"));
    };
    let mut event = if top.contains_key("context") {
        from_cdevent(&top, None)?
    } else if top.contains_key("specversion") {
        from_cloudevent(&top)?
    } else {
        return Err(reject(
            "neither a CDEvent (no `context`) nor a CloudEvent (no `specversion`)",
        ));
    };
    event.origin = origin.as_str().to_string();
    event.ingested_at = ingested_at;
    event.payload = text.to_string();
    Ok(event)
}

/// Attributes of a CloudEvent envelope that complete or annotate the CDEvent it carries.
struct Envelope<'a> {
    id: Option<&'a str>,
    source: Option<&'a str>,
    ty: Option<&'a str>,
    time: Option<&'a str>,
    traceparent: Option<&'a str>,
}

fn from_cloudevent(ce: &Map<String, Value>) -> Result<Event, Rejection> {
    let env = Envelope {
        id: str_at(ce, &["id"]),
        source: str_at(ce, &["source"]),
        ty: str_at(ce, &["type"]),
        time: str_at(ce, &["time"]),
        traceparent: str_at(ce, &["traceparent"]),
    };
    let parsed;
    let data = match ce.get("data") {
        Some(Value::Object(m)) => m,
        Some(Value::String(s)) => {
            parsed = serde_json::from_str::<Value>(s)
                .map_err(|e| reject(format!("CloudEvent `data` is a string but not JSON: {e}")))?;
            parsed
                .as_object()
                .ok_or_else(|| reject("CloudEvent `data` is not a JSON object"))?
        }
        Some(_) => return Err(reject("CloudEvent `data` is not a JSON object")),
        None => match ce.get("data_base64") {
            Some(_) => {
                return Err(reject(
                    "CloudEvent `data_base64` is not supported; send JSON `data`",
                ));
            }
            None => return Err(reject("CloudEvent has no `data`")),
        },
    };
    from_cdevent(data, Some(&env))
}

fn from_cdevent(ev: &Map<String, Value>, env: Option<&Envelope<'_>>) -> Result<Event, Rejection> {
    let empty = Map::new();
    let context = match ev.get("context") {
        Some(Value::Object(c)) => c,
        Some(_) => return Err(reject("`context` is not an object")),
        None if env.is_some() => &empty,
        None => return Err(reject("missing `context`")),
    };
    let field = |name: &str, from_env: Option<&'static str>| -> Result<String, Rejection> {
        let env_value = env.and_then(|e| match from_env? {
            "id" => e.id,
            "source" => e.source,
            "type" => e.ty,
            "time" => e.time,
            _ => None,
        });
        match context.get(name) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(Value::String(_)) => Err(reject(format!("`context.{name}` is empty"))),
            Some(_) => Err(reject(format!("`context.{name}` is not a string"))),
            None => env_value
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .ok_or_else(|| reject(format!("missing `context.{name}`"))),
        }
    };
    let event_id = field("id", Some("id"))?;
    let event_source = field("source", Some("source"))?;
    let event_type = field("type", Some("type"))?;
    let timestamp = field("timestamp", Some("time"))?;
    let ty = parse_type(&event_type).ok_or_else(|| {
        reject(format!(
            "`context.type` {event_type:?} is not a CDEvents type (expected dev.cdevents.<subject>.<predicate>.<version>)"
        ))
    })?;
    let time = parse_time(&timestamp).ok_or_else(|| {
        reject(format!(
            "`context.timestamp` {timestamp:?} is not an RFC 3339 time"
        ))
    })?;
    let subject = match ev.get("subject") {
        Some(Value::Object(s)) => s,
        Some(_) => return Err(reject("`subject` is not an object")),
        None => return Err(reject("missing `subject`")),
    };
    let subject_id = match subject.get("id") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::String(_)) => return Err(reject("`subject.id` is empty")),
        Some(_) => return Err(reject("`subject.id` is not a string")),
        None => return Err(reject("missing `subject.id`")),
    };
    let content = subject
        .get("content")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let spec_version = str_at(context, &["specversion"])
        .or_else(|| str_at(context, &["version"]))
        .unwrap_or("unknown")
        .to_string();
    let c = |path: &[&str]| str_at(content, path).map(str::to_string);

    let mut e = Event {
        subject: ty.subject.to_string(),
        predicate: ty.predicate.to_string(),
        spec_version,
        time,
        environment: c(&["environment", "id"]),
        service: c(&["service", "id"]),
        repository: c(&["repository", "id"]),
        change_id: c(&["change", "id"]),
        artifact_id: c(&["artifactId"]),
        outcome: c(&["outcome"]),
        url: c(&["url"]).or_else(|| c(&["uri"])),
        chain_id: str_at(context, &["chainId"]).map(str::to_string),
        team: ev
            .get("customData")
            .and_then(Value::as_object)
            .and_then(|m| str_at(m, &["team"]))
            .map(str::to_string),
        ..Event::default()
    };
    match ty.subject {
        "service" => e.service = Some(subject_id.clone()),
        "environment" => e.environment = Some(subject_id.clone()),
        "change" => e.change_id = Some(subject_id.clone()),
        "repository" => e.repository = Some(subject_id.clone()),
        "artifact" => e.artifact_id = Some(subject_id.clone()),
        "pipelinerun" => {
            e.pipeline = c(&["pipelineName"]);
            e.run_id = Some(subject_id.clone());
        }
        "taskrun" => {
            e.task = c(&["taskName"]);
            e.run_id = c(&["pipelineRun", "id"]);
        }
        _ => {}
    }
    if let Some((trace, span)) = env.and_then(|e| e.traceparent).and_then(parse_traceparent) {
        e.trace_id = Some(trace);
        e.span_id = Some(span);
    }
    e.event_id = event_id;
    e.event_source = event_source;
    e.event_type = event_type;
    e.subject_id = subject_id;
    Ok(e)
}

/// `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>` to (trace id, span id).
pub fn parse_traceparent(tp: &str) -> Option<(String, String)> {
    let mut parts = tp.trim().split('-');
    let (_version, trace, span) = (parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(trace, 32) && hex(span, 16))
        .then(|| (trace.to_ascii_lowercase(), span.to_ascii_lowercase()))
}

fn str_at<'a>(map: &'a Map<String, Value>, path: &[&str]) -> Option<&'a str> {
    let (last, init) = path.split_last()?;
    let mut m = map;
    for key in init {
        m = m.get(*key)?.as_object()?;
    }
    m.get(*last)?.as_str().filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests;
