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

/// The class of a rejection: a bounded label for metrics (`cdlake_rejected_total{reason}`);
/// the message says the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Not JSON, or not the JSON expected.
    MalformedJson,
    /// Not UTF-8 text.
    NotUtf8,
    /// JSON, but neither a CDEvent nor a CloudEvent carrying one.
    NotCdevents,
    /// A signature or token that does not match.
    Unauthorized,
    /// Past a size or count limit.
    TooLarge,
    /// A field or header it must have is missing.
    MissingField,
    /// Anything else wrong with it (a field of the wrong type, an implausible time …).
    Invalid,
}

impl Reason {
    /// Every class.
    pub const ALL: [Reason; 7] = [
        Reason::MalformedJson,
        Reason::NotUtf8,
        Reason::NotCdevents,
        Reason::Unauthorized,
        Reason::TooLarge,
        Reason::MissingField,
        Reason::Invalid,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::MalformedJson => "malformed_json",
            Reason::NotUtf8 => "not_utf8",
            Reason::NotCdevents => "not_cdevents",
            Reason::Unauthorized => "unauthorized",
            Reason::TooLarge => "too_large",
            Reason::MissingField => "missing_field",
            Reason::Invalid => "invalid",
        }
    }

    /// The class of a label ([`Reason::as_str`]).
    pub fn parse(label: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == label)
    }
}

/// Why an input was rejected: its class, and the message that is the reason of its
/// dead-letter row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    pub message: String,
}

impl Rejection {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Rejection {
            reason,
            message: message.into(),
        }
    }

    pub fn malformed_json(message: impl Into<String>) -> Self {
        Self::new(Reason::MalformedJson, message)
    }

    pub fn not_utf8(error: std::str::Utf8Error) -> Self {
        Self::new(Reason::NotUtf8, format!("not valid UTF-8: {error}"))
    }

    pub fn missing(message: impl Into<String>) -> Self {
        Self::new(Reason::MissingField, message)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Reason::Invalid, message)
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Rejection {}

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
    let text = std::str::from_utf8(raw).map_err(Rejection::not_utf8)?;
    let mut event = match fast::cdevent(text) {
        Some(event) => event,
        None => general(text)?,
    };
    event.origin = origin.as_str().to_string();
    event.ingested_at = ingested_at;
    event.payload = text.to_string();
    Ok(event)
}

/// Any accepted shape, through a JSON tree, with the reason when it is not one.
fn general(text: &str) -> Result<Event, Rejection> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| Rejection::malformed_json(format!("malformed JSON: {e}")))?;
    let Value::Object(top) = value else {
        return Err(Rejection::invalid("not a JSON object"));
    };
    if top.contains_key("context") {
        from_cdevent(&top, None)
    } else if top.contains_key("specversion") {
        from_cloudevent(&top)
    } else {
        Err(Rejection::new(
            Reason::NotCdevents,
            "neither a CDEvent (no `context`) nor a CloudEvent (no `specversion`)",
        ))
    }
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
            parsed = serde_json::from_str::<Value>(s).map_err(|e| {
                Rejection::malformed_json(format!(
                    "CloudEvent `data` is a string but not JSON: {e}"
                ))
            })?;
            parsed
                .as_object()
                .ok_or_else(|| Rejection::invalid("CloudEvent `data` is not a JSON object"))?
        }
        Some(_) => return Err(Rejection::invalid("CloudEvent `data` is not a JSON object")),
        None => match ce.get("data_base64") {
            Some(_) => {
                return Err(Rejection::invalid(
                    "CloudEvent `data_base64` is not supported; send JSON `data`",
                ));
            }
            None => return Err(Rejection::missing("CloudEvent has no `data`")),
        },
    };
    from_cdevent(data, Some(&env))
}

/// What a CDEvent row is made of, borrowed from the parsed input.
#[derive(Debug, Default)]
struct Parts<'a> {
    event_id: &'a str,
    event_source: &'a str,
    event_type: &'a str,
    timestamp: &'a str,
    subject_id: &'a str,
    spec_version: Option<&'a str>,
    chain_id: Option<&'a str>,
    team: Option<&'a str>,
    environment: Option<&'a str>,
    service: Option<&'a str>,
    repository: Option<&'a str>,
    change_id: Option<&'a str>,
    artifact_id: Option<&'a str>,
    outcome: Option<&'a str>,
    url: Option<&'a str>,
    pipeline: Option<&'a str>,
    task: Option<&'a str>,
    pipeline_run: Option<&'a str>,
}

/// `customData.labels` (an array of strings; other items are skipped) as `events.labels`.
fn custom_labels(custom: Option<&Map<String, Value>>) -> Option<String> {
    let labels = custom?.get("labels")?.as_array()?;
    crate::event::labels_json(labels.iter().filter_map(Value::as_str))
}

fn from_cdevent(ev: &Map<String, Value>, env: Option<&Envelope<'_>>) -> Result<Event, Rejection> {
    let empty = Map::new();
    let context = match ev.get("context") {
        Some(Value::Object(c)) => c,
        Some(_) => return Err(Rejection::invalid("`context` is not an object")),
        None if env.is_some() => &empty,
        None => return Err(Rejection::missing("missing `context`")),
    };
    let field = |name: &str, from_env: Option<&'static str>| -> Result<&str, Rejection> {
        let env_value = env.and_then(|e| match from_env? {
            "id" => e.id,
            "source" => e.source,
            "type" => e.ty,
            "time" => e.time,
            _ => None,
        });
        match context.get(name) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.as_str()),
            Some(Value::String(_)) => Err(Rejection::invalid(format!("`context.{name}` is empty"))),
            Some(_) => Err(Rejection::invalid(format!(
                "`context.{name}` is not a string"
            ))),
            None => env_value
                .filter(|s| !s.is_empty())
                .ok_or_else(|| Rejection::missing(format!("missing `context.{name}`"))),
        }
    };
    let event_id = field("id", Some("id"))?;
    let event_source = field("source", Some("source"))?;
    let event_type = field("type", Some("type"))?;
    let timestamp = field("timestamp", Some("time"))?;
    let subject = match ev.get("subject") {
        Some(Value::Object(s)) => s,
        Some(_) => return Err(Rejection::invalid("`subject` is not an object")),
        None => return Err(Rejection::missing("missing `subject`")),
    };
    let subject_id = match subject.get("id") {
        Some(Value::String(s)) if !s.is_empty() => s.as_str(),
        Some(Value::String(_)) => return Err(Rejection::invalid("`subject.id` is empty")),
        Some(_) => return Err(Rejection::invalid("`subject.id` is not a string")),
        None => return Err(Rejection::missing("missing `subject.id`")),
    };
    let content = subject
        .get("content")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let c = |path: &[&str]| str_at(content, path);
    let custom = ev.get("customData").and_then(Value::as_object);
    let mut e = build(Parts {
        event_id,
        event_source,
        event_type,
        timestamp,
        subject_id,
        spec_version: str_at(context, &["specversion"]).or_else(|| str_at(context, &["version"])),
        chain_id: str_at(context, &["chainId"]),
        team: custom.and_then(|m| str_at(m, &["team"])),
        environment: c(&["environment", "id"]),
        service: c(&["service", "id"]),
        repository: c(&["repository", "id"]),
        change_id: c(&["change", "id"]),
        artifact_id: c(&["artifactId"]),
        outcome: c(&["outcome"]),
        url: c(&["url"]).or_else(|| c(&["uri"])),
        pipeline: c(&["pipelineName"]),
        task: c(&["taskName"]),
        pipeline_run: c(&["pipelineRun", "id"]),
    })?;
    // A change's labels and what it reverts (`hotfix`, reverts in `[dora]`).
    e.labels = custom_labels(custom);
    // `reverts`: the reverted change or commit; `"revert": true`: a revert naming neither.
    e.reverts = custom.and_then(|m| match str_at(m, &["reverts"]) {
        Some(target) => Some(target.to_string()),
        None => (m.get("revert") == Some(&Value::Bool(true))).then(String::new),
    });
    if let Some((trace, span)) = env.and_then(|e| e.traceparent).and_then(parse_traceparent) {
        e.trace_id = Some(trace);
        e.span_id = Some(span);
    }
    Ok(e)
}

/// The row of a CDEvent's parts: its type and time checked, the linking fields placed.
fn build(p: Parts<'_>) -> Result<Event, Rejection> {
    let ty = parse_type(p.event_type).ok_or_else(|| {
        Rejection::new(
            Reason::NotCdevents,
            format!(
            "`context.type` {:?} is not a CDEvents type (expected dev.cdevents.<subject>.<predicate>.<version>)",
            p.event_type
        ))
    })?;
    let time = parse_time(p.timestamp).ok_or_else(|| {
        Rejection::invalid(format!(
            "`context.timestamp` {:?} is not an RFC 3339 time",
            p.timestamp
        ))
    })?;
    let s = |v: Option<&str>| v.map(str::to_string);
    let mut e = Event {
        subject: ty.subject.to_string(),
        predicate: ty.predicate.to_string(),
        spec_version: p.spec_version.unwrap_or("unknown").to_string(),
        time,
        environment: s(p.environment),
        service: s(p.service),
        repository: s(p.repository),
        change_id: s(p.change_id),
        artifact_id: s(p.artifact_id),
        outcome: s(p.outcome),
        url: s(p.url),
        chain_id: s(p.chain_id),
        team: s(p.team),
        ..Event::default()
    };
    let subject_id = p.subject_id.to_string();
    match ty.subject {
        "service" => e.service = Some(subject_id.clone()),
        "environment" => e.environment = Some(subject_id.clone()),
        "change" => e.change_id = Some(subject_id.clone()),
        "repository" => e.repository = Some(subject_id.clone()),
        "artifact" => e.artifact_id = Some(subject_id.clone()),
        "pipelinerun" => {
            e.pipeline = s(p.pipeline);
            e.run_id = Some(subject_id.clone());
        }
        "taskrun" => {
            e.task = s(p.task);
            e.run_id = s(p.pipeline_run);
        }
        _ => {}
    }
    e.event_id = p.event_id.to_string();
    e.event_source = p.event_source.to_string();
    e.event_type = p.event_type.to_string();
    e.subject_id = subject_id;
    Ok(e)
}

/// The common case read without building a JSON tree: a bare CDEvent whose fields have the
/// expected types. `None` for anything else (a CloudEvent, a missing or mistyped field, a
/// repeated key, a string with escapes…), which [`parse`] then reads through the general path, so the answer and
/// every rejection reason are the same either way.
mod fast {
    use std::marker::PhantomData;

    use serde::Deserialize;
    use serde::de::{Deserializer, MapAccess, Visitor, value::MapAccessDeserializer};

    use super::{Parts, build};
    use crate::event::Event;

    /// A struct read from a JSON object only (derived structs would also take an array).
    struct Obj<T>(T);

    impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V<T>(PhantomData<T>);
            impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
                type Value = Obj<T>;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Obj<T>, A::Error> {
                    T::deserialize(MapAccessDeserializer::new(map)).map(Obj)
                }
            }
            d.deserialize_map(V(PhantomData))
        }
    }

    /// Borrowed from the input; a string with escapes fails here and takes the general path.
    type Text<'a> = Option<&'a str>;

    #[derive(Deserialize)]
    struct Doc<'a> {
        #[serde(borrow)]
        context: Option<Obj<Context<'a>>>,
        #[serde(borrow)]
        subject: Option<Obj<Subject<'a>>>,
        #[serde(borrow, rename = "customData")]
        custom_data: Option<Obj<Custom<'a>>>,
    }

    #[derive(Deserialize)]
    struct Context<'a> {
        #[serde(borrow)]
        id: Text<'a>,
        #[serde(borrow)]
        source: Text<'a>,
        #[serde(borrow, rename = "type")]
        ty: Text<'a>,
        #[serde(borrow)]
        timestamp: Text<'a>,
        #[serde(borrow)]
        specversion: Text<'a>,
        #[serde(borrow)]
        version: Text<'a>,
        #[serde(borrow, rename = "chainId")]
        chain_id: Text<'a>,
    }

    #[derive(Deserialize)]
    struct Subject<'a> {
        #[serde(borrow)]
        id: Text<'a>,
        #[serde(borrow)]
        content: Option<Obj<Content<'a>>>,
    }

    #[derive(Deserialize)]
    struct Id<'a> {
        #[serde(borrow)]
        id: Text<'a>,
    }

    #[derive(Deserialize)]
    struct Custom<'a> {
        #[serde(borrow)]
        team: Text<'a>,
        /// Read by the general path only.
        labels: Option<serde::de::IgnoredAny>,
        reverts: Option<serde::de::IgnoredAny>,
        revert: Option<serde::de::IgnoredAny>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Content<'a> {
        #[serde(borrow)]
        environment: Option<Obj<Id<'a>>>,
        #[serde(borrow)]
        service: Option<Obj<Id<'a>>>,
        #[serde(borrow)]
        repository: Option<Obj<Id<'a>>>,
        #[serde(borrow)]
        change: Option<Obj<Id<'a>>>,
        #[serde(borrow)]
        artifact_id: Text<'a>,
        #[serde(borrow)]
        outcome: Text<'a>,
        #[serde(borrow)]
        url: Text<'a>,
        #[serde(borrow)]
        uri: Text<'a>,
        #[serde(borrow)]
        pipeline_name: Text<'a>,
        #[serde(borrow)]
        task_name: Text<'a>,
        #[serde(borrow)]
        pipeline_run: Option<Obj<Id<'a>>>,
    }

    /// A text the general path would read: present and not empty.
    fn text<'b>(t: &Text<'b>) -> Option<&'b str> {
        t.filter(|s| !s.is_empty())
    }

    fn id<'b>(o: &Option<Obj<Id<'b>>>) -> Option<&'b str> {
        o.as_ref().and_then(|o| text(&o.0.id))
    }

    /// The row of a bare CDEvent with well-typed fields and a valid type and time.
    pub(super) fn cdevent(text_in: &str) -> Option<Event> {
        let doc: Obj<Doc<'_>> = serde_json::from_str(text_in).ok()?;
        let doc = doc.0;
        let context = doc.context?.0;
        let subject = doc.subject?.0;
        if doc
            .custom_data
            .as_ref()
            .is_some_and(|m| m.0.labels.is_some() || m.0.reverts.is_some() || m.0.revert.is_some())
        {
            return None;
        }
        let content = subject.content.map(|c| c.0);
        let c = content.as_ref();
        let parts = Parts {
            event_id: text(&context.id)?,
            event_source: text(&context.source)?,
            event_type: text(&context.ty)?,
            timestamp: text(&context.timestamp)?,
            subject_id: text(&subject.id)?,
            spec_version: text(&context.specversion).or_else(|| text(&context.version)),
            chain_id: text(&context.chain_id),
            team: doc.custom_data.as_ref().and_then(|m| text(&m.0.team)),
            environment: c.and_then(|c| id(&c.environment)),
            service: c.and_then(|c| id(&c.service)),
            repository: c.and_then(|c| id(&c.repository)),
            change_id: c.and_then(|c| id(&c.change)),
            artifact_id: c.and_then(|c| text(&c.artifact_id)),
            outcome: c.and_then(|c| text(&c.outcome)),
            url: c.and_then(|c| text(&c.url).or_else(|| text(&c.uri))),
            pipeline: c.and_then(|c| text(&c.pipeline_name)),
            task: c.and_then(|c| text(&c.task_name)),
            pipeline_run: c.and_then(|c| id(&c.pipeline_run)),
        };
        build(parts).ok()
    }
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
