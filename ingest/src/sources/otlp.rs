//! OTLP/HTTP trace requests (`POST /v1/traces`) decoded into rows of the `spans` table.
//!
//! [`decode`] takes the request's `Content-Type`, `Content-Encoding` and body. A gzip body is
//! inflated first, refusing anything that would inflate beyond [`MAX_DECOMPRESSED`]. The body is
//! an `ExportTraceServiceRequest` of opentelemetry-proto, either as protobuf (the messages are
//! hand-written in [`proto`] with `prost`) or in the OTLP/JSON mapping (lowerCamelCase fields,
//! ids as hex, 64-bit integers as strings or numbers, enums as integers or names), which is
//! read into the same messages. Every span then becomes one [`cdlake_schemas::Span`]: ids in
//! lowercase hex, times in microseconds, the `cicd.*` and `vcs.*` semantic-convention
//! attributes as columns (span attributes first, then resource attributes), and all
//! attributes as JSON. One invalid span rejects the whole request, naming it
//! (`resource_spans[i].scope_spans[j].spans[k]`); OTLP partial success is not used.
//!
//! The protobuf messages are also re-exported here: note that [`Span`] is the protobuf
//! message, while the rows are [`cdlake_schemas::Span`].

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Read;

use cdlake_schemas::cdevents::Reason;
use cdlake_schemas::span::SEMCONV_COLUMNS;
use prost::Message as _;
use serde_json::Value;

pub use proto::*;
pub use route::ROUTE;
pub(super) use route::SOURCE;

use super::base64;
mod count;
mod json;
pub mod proto;
mod route;
#[cfg(test)]
mod tests;

/// The largest body accepted once decompressed (64 MiB); larger requests are [`OtlpError::TooLarge`].
pub const MAX_DECOMPRESSED: usize = 64 << 20;

/// Spans one request may hold by default ([`decode`]'s `max_spans`): a decoded span takes about
/// 2 KiB, so the bytes limit alone would let one small gzip request grow the process by
/// gigabytes. Exporters batch far fewer (the Collector's batch processor sends 8,192).
pub const DEFAULT_MAX_SPANS: usize = 50_000;

/// Why an OTLP request was refused. [`OtlpError::status`] gives the HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OtlpError {
    /// The `Content-Type` (as received, `None` when missing) is neither protobuf nor JSON.
    #[error(
        "unsupported Content-Type {}: send OTLP/HTTP as application/x-protobuf or application/json",
        describe(.0.as_deref())
    )]
    UnsupportedMediaType(Option<String>),
    /// The `Content-Encoding` (as received) is not gzip.
    #[error(
        "unsupported Content-Encoding {0:?}: send the body uncompressed or with Content-Encoding: gzip"
    )]
    UnsupportedEncoding(String),
    /// The body is larger than [`MAX_DECOMPRESSED`] once decompressed.
    #[error(
        "the request body is larger than {} MiB once decompressed: export smaller batches (e.g. lower the exporter's maximum batch size)",
        MAX_DECOMPRESSED >> 20
    )]
    TooLarge,
    /// The request holds more spans than one request may.
    #[error(
        "the request holds {spans} spans, more than the {max} cdlake takes in one request (--otlp-max-spans): export smaller batches (e.g. the batch processor's send_batch_max_size)"
    )]
    TooManySpans { spans: usize, max: usize },
    /// The body is not a valid `ExportTraceServiceRequest`, or a span in it is invalid.
    #[error("malformed OTLP trace request: {0}")]
    Malformed(String),
}

fn describe(content_type: Option<&str>) -> String {
    match content_type {
        Some(t) => format!("{t:?}"),
        None => "(missing)".to_string(),
    }
}

impl OtlpError {
    /// The class of the rejection.
    pub fn reason(&self) -> Reason {
        match self {
            OtlpError::UnsupportedMediaType(_) | OtlpError::UnsupportedEncoding(_) => {
                Reason::Invalid
            }
            OtlpError::TooLarge | OtlpError::TooManySpans { .. } => Reason::TooLarge,
            OtlpError::Malformed(_) => Reason::Invalid,
        }
    }

    /// The HTTP status to answer with: 415, 413 or 400.
    pub fn status(&self) -> u16 {
        match self {
            OtlpError::UnsupportedMediaType(_) | OtlpError::UnsupportedEncoding(_) => 415,
            OtlpError::TooLarge | OtlpError::TooManySpans { .. } => 413,
            OtlpError::Malformed(_) => 400,
        }
    }
}

/// The two encodings of OTLP/HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Protobuf,
    Json,
}

fn format_of(content_type: Option<&str>) -> Result<Format, OtlpError> {
    let media_type = content_type
        .map(|t| {
            t.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    match media_type.as_str() {
        "application/x-protobuf" | "application/protobuf" => Ok(Format::Protobuf),
        "application/json" => Ok(Format::Json),
        _ => Err(OtlpError::UnsupportedMediaType(
            content_type.map(str::to_string),
        )),
    }
}

/// Whether a `Content-Type` is OTLP/JSON (parameters ignored): the answer must then be JSON too.
pub fn is_json(content_type: Option<&str>) -> bool {
    format_of(content_type) == Ok(Format::Json)
}

/// Decode one OTLP/HTTP trace request into `spans` rows, each stamped with `ingested_at` (µs
/// since the Unix epoch, UTC), with at most [`DEFAULT_MAX_SPANS`] spans.
pub fn decode(
    content_type: Option<&str>,
    content_encoding: Option<&str>,
    body: &[u8],
    ingested_at: i64,
) -> Result<Vec<cdlake_schemas::Span>, OtlpError> {
    decode_limited(
        content_type,
        content_encoding,
        body,
        ingested_at,
        DEFAULT_MAX_SPANS,
    )
}

/// [`decode`] with at most `max_spans` spans: a larger request is refused after counting its
/// spans, before any is decoded.
pub fn decode_limited(
    content_type: Option<&str>,
    content_encoding: Option<&str>,
    body: &[u8],
    ingested_at: i64,
    max_spans: usize,
) -> Result<Vec<cdlake_schemas::Span>, OtlpError> {
    let format = format_of(content_type)?;
    let body = decompress(content_encoding, body)?;
    let spans = match format {
        Format::Protobuf => count::protobuf(&body)?,
        Format::Json => count::json(&body)?,
    };
    if spans > max_spans {
        return Err(OtlpError::TooManySpans {
            spans,
            max: max_spans,
        });
    }
    let request = match format {
        Format::Protobuf => ExportTraceServiceRequest::decode(&*body)
            .map_err(|e| OtlpError::Malformed(format!("invalid OTLP/protobuf body: {e}")))?,
        Format::Json => json::parse(&body)?,
    };
    rows(request, ingested_at)
}

/// The body of a successful answer, an empty `ExportTraceServiceResponse`, with its content
/// type: the same encoding as the request's.
pub fn response_body(content_type_is_json: bool) -> (&'static str, Vec<u8>) {
    if content_type_is_json {
        ("application/json", b"{}".to_vec())
    } else {
        (
            "application/x-protobuf",
            ExportTraceServiceResponse::default().encode_to_vec(),
        )
    }
}

fn decompress<'a>(
    content_encoding: Option<&str>,
    body: &'a [u8],
) -> Result<Cow<'a, [u8]>, OtlpError> {
    let encoding = content_encoding.unwrap_or("").trim().to_ascii_lowercase();
    match encoding.as_str() {
        "" | "identity" if body.len() > MAX_DECOMPRESSED => Err(OtlpError::TooLarge),
        "" | "identity" => Ok(Cow::Borrowed(body)),
        "gzip" | "x-gzip" => gunzip(body).map(Cow::Owned),
        _ => Err(OtlpError::UnsupportedEncoding(
            content_encoding.unwrap_or_default().to_string(),
        )),
    }
}

/// Inflate a gzip body (all its members), reading at most [`MAX_DECOMPRESSED`] bytes.
fn gunzip(body: &[u8]) -> Result<Vec<u8>, OtlpError> {
    let malformed = |e: std::io::Error| OtlpError::Malformed(format!("invalid gzip body: {e}"));
    let mut decoder = flate2::read::MultiGzDecoder::new(body);
    let mut out = Vec::new();
    // `take` bounds what is read and so what is allocated; one more byte tells a body of
    // exactly the limit from a larger one.
    (&mut decoder)
        .take(MAX_DECOMPRESSED as u64)
        .read_to_end(&mut out)
        .map_err(malformed)?;
    if out.len() == MAX_DECOMPRESSED && decoder.read(&mut [0u8; 1]).map_err(malformed)? > 0 {
        return Err(OtlpError::TooLarge);
    }
    Ok(out)
}

/// The rows of a decoded request; one invalid span rejects the request.
fn rows(
    request: ExportTraceServiceRequest,
    ingested_at: i64,
) -> Result<Vec<cdlake_schemas::Span>, OtlpError> {
    let mut rows = Vec::new();
    for (i, resource_spans) in request.resource_spans.into_iter().enumerate() {
        let resource = attributes_map(
            resource_spans
                .resource
                .map(|r| r.attributes)
                .unwrap_or_default(),
        );
        let resource_json = object_text(&resource);
        let service_name = resource.get("service.name").and_then(column_text);
        for (j, scope_spans) in resource_spans.scope_spans.into_iter().enumerate() {
            let scope_name = scope_spans
                .scope
                .map(|s| s.name)
                .filter(|name| !name.is_empty());
            for (k, span) in scope_spans.spans.into_iter().enumerate() {
                let mut row = row(span, &resource, ingested_at).map_err(|e| {
                    OtlpError::Malformed(format!(
                        "resource_spans[{i}].scope_spans[{j}].spans[{k}]: {e}"
                    ))
                })?;
                row.resource_attributes = resource_json.clone();
                row.service_name = service_name.clone();
                row.scope_name = scope_name.clone();
                rows.push(row);
            }
        }
    }
    Ok(rows)
}

/// One span to a row, without the resource and scope columns other than the semantic
/// conventions looked up in `resource`.
fn row(
    span: Span,
    resource: &BTreeMap<String, Value>,
    ingested_at: i64,
) -> Result<cdlake_schemas::Span, String> {
    let trace_id = id(&span.trace_id, 16, "trace_id")?
        .ok_or("trace_id is all zeros, which is not a valid trace id")?;
    let span_id = id(&span.span_id, 8, "span_id")?
        .ok_or("span_id is all zeros, which is not a valid span id")?;
    let parent_span_id = if span.parent_span_id.is_empty() {
        None
    } else {
        id(&span.parent_span_id, 8, "parent_span_id")?
    };
    let (start, end) = (span.start_time_unix_nano, span.end_time_unix_nano);
    // The start names the span's date partition: it must be a plausible time.
    cdlake_schemas::event::check_time(nanos_to_micros(start), ingested_at).map_err(|e| {
        format!(
            "start_time_unix_nano: {}",
            e.replacen("event time", "time", 1)
        )
    })?;
    let status = span.status.unwrap_or_default();
    let attributes = attributes_map(span.attributes);
    let mut row = cdlake_schemas::Span {
        trace_id,
        span_id,
        parent_span_id,
        name: span.name,
        kind: kind_column(span.kind).to_string(),
        start: nanos_to_micros(start),
        end: nanos_to_micros(end),
        duration_ms: end.saturating_sub(start) as f64 / 1e6,
        status: status_column(status.code).to_string(),
        status_message: Some(status.message).filter(|m| !m.is_empty()),
        attributes: object_text(&attributes),
        events: events_text(span.events),
        ingested_at,
        ..Default::default()
    };
    for (column, (_, key)) in row.semconv_mut().into_iter().zip(SEMCONV_COLUMNS) {
        *column = attributes
            .get(key)
            .or_else(|| resource.get(key))
            .and_then(column_text);
    }
    Ok(row)
}

/// An id of `len` bytes in lowercase hex; `None` when all zeros.
fn id(bytes: &[u8], len: usize, what: &str) -> Result<Option<String>, String> {
    if bytes.len() != len {
        return Err(format!("{what} must be {len} bytes, got {}", bytes.len()));
    }
    Ok(bytes.iter().any(|&b| b != 0).then(|| hex::encode(bytes)))
}

fn nanos_to_micros(nanos: u64) -> i64 {
    // u64::MAX / 1000 < i64::MAX: this never truncates.
    (nanos / 1_000) as i64
}

fn kind_column(kind: i32) -> &'static str {
    match span::SpanKind::try_from(kind) {
        Ok(span::SpanKind::Internal) => "internal",
        Ok(span::SpanKind::Server) => "server",
        Ok(span::SpanKind::Client) => "client",
        Ok(span::SpanKind::Producer) => "producer",
        Ok(span::SpanKind::Consumer) => "consumer",
        Ok(span::SpanKind::Unspecified) | Err(_) => "unspecified",
    }
}

fn status_column(code: i32) -> &'static str {
    match status::StatusCode::try_from(code) {
        Ok(status::StatusCode::Ok) => "ok",
        Ok(status::StatusCode::Error) => "error",
        Ok(status::StatusCode::Unset) | Err(_) => "unset",
    }
}

/// Attributes as a map (a repeated key keeps its last value), sorted by key so its JSON text
/// does not depend on serde_json's features.
fn attributes_map(attributes: Vec<KeyValue>) -> BTreeMap<String, Value> {
    attributes
        .into_iter()
        .map(|kv| (kv.key, any_value_json(kv.value)))
        .collect()
}

fn object_text(map: &BTreeMap<String, Value>) -> String {
    serde_json::to_string(map).expect("a map of JSON values serialises")
}

/// An attribute value as JSON: strings, booleans and integers as themselves, doubles as
/// numbers (non-finite ones as the strings `NaN`, `Infinity`, `-Infinity`), arrays as arrays,
/// key-value lists as objects, bytes as base64; an empty value is `null`.
fn any_value_json(value: Option<AnyValue>) -> Value {
    use any_value::Value as V;
    match value.and_then(|v| v.value) {
        None => Value::Null,
        Some(V::StringValue(s)) => Value::String(s),
        Some(V::BoolValue(b)) => Value::Bool(b),
        Some(V::IntValue(i)) => Value::from(i),
        Some(V::DoubleValue(d)) => serde_json::Number::from_f64(d)
            .map(Value::Number)
            .unwrap_or_else(|| {
                Value::String(
                    match d {
                        d if d.is_nan() => "NaN",
                        d if d > 0.0 => "Infinity",
                        _ => "-Infinity",
                    }
                    .to_string(),
                )
            }),
        Some(V::ArrayValue(a)) => Value::Array(
            a.values
                .into_iter()
                .map(|v| any_value_json(Some(v)))
                .collect(),
        ),
        Some(V::KvlistValue(l)) => Value::Object(
            l.values
                .into_iter()
                .map(|kv| (kv.key, any_value_json(kv.value)))
                .collect(),
        ),
        Some(V::BytesValue(b)) => Value::String(base64::encode(&b)),
    }
}

/// The text of a semantic-convention column: a string as it is, `null` as no value, anything
/// else as its JSON text (an integer run id becomes `"123"`).
fn column_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Span events as a JSON array of `{name, time, attributes}` (time in RFC 3339, UTC); `None`
/// when there are none.
fn events_text(events: Vec<span::Event>) -> Option<String> {
    #[derive(serde::Serialize)]
    struct EventJson {
        name: String,
        time: String,
        attributes: BTreeMap<String, Value>,
    }
    if events.is_empty() {
        return None;
    }
    let events: Vec<EventJson> = events
        .into_iter()
        .map(|e| EventJson {
            name: e.name,
            time: nanos_to_rfc3339(e.time_unix_nano),
            attributes: attributes_map(e.attributes),
        })
        .collect();
    Some(serde_json::to_string(&events).expect("span events serialise"))
}

fn nanos_to_rfc3339(nanos: u64) -> String {
    let secs = (nanos / 1_000_000_000) as i64;
    let sub = (nanos % 1_000_000_000) as u32;
    chrono::DateTime::from_timestamp(secs, sub)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}
