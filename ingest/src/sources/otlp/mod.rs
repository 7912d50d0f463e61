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

use cdlake_schemas::span::SEMCONV_COLUMNS;
use prost::Message as _;
use serde_json::Value;

pub use proto::*;
pub use route::{BODY_LIMIT, ROUTE};
pub(super) use route::SOURCE;

mod route;

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

/// The messages of opentelemetry-proto's `collector/trace/v1/trace_service.proto`,
/// `trace/v1/trace.proto`, `resource/v1/resource.proto` and `common/v1/common.proto` that an
/// OTLP/HTTP trace export uses, with their field numbers.
pub mod proto {
    /// `opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportTraceServiceRequest {
        #[prost(message, repeated, tag = "1")]
        pub resource_spans: Vec<ResourceSpans>,
    }

    /// `opentelemetry.proto.collector.trace.v1.ExportTraceServiceResponse`, without
    /// `partial_success` (never sent: a request is accepted or rejected whole).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportTraceServiceResponse {}

    /// `opentelemetry.proto.trace.v1.ResourceSpans`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResourceSpans {
        #[prost(message, optional, tag = "1")]
        pub resource: Option<Resource>,
        #[prost(message, repeated, tag = "2")]
        pub scope_spans: Vec<ScopeSpans>,
        #[prost(string, tag = "3")]
        pub schema_url: String,
    }

    /// `opentelemetry.proto.resource.v1.Resource`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Resource {
        #[prost(message, repeated, tag = "1")]
        pub attributes: Vec<KeyValue>,
        #[prost(uint32, tag = "2")]
        pub dropped_attributes_count: u32,
    }

    /// `opentelemetry.proto.trace.v1.ScopeSpans`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScopeSpans {
        #[prost(message, optional, tag = "1")]
        pub scope: Option<InstrumentationScope>,
        #[prost(message, repeated, tag = "2")]
        pub spans: Vec<Span>,
        #[prost(string, tag = "3")]
        pub schema_url: String,
    }

    /// `opentelemetry.proto.common.v1.InstrumentationScope`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InstrumentationScope {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub version: String,
        #[prost(message, repeated, tag = "3")]
        pub attributes: Vec<KeyValue>,
        #[prost(uint32, tag = "4")]
        pub dropped_attributes_count: u32,
    }

    /// `opentelemetry.proto.trace.v1.Span` (the protobuf message, not a `spans` row).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Span {
        /// 16 bytes.
        #[prost(bytes = "vec", tag = "1")]
        pub trace_id: Vec<u8>,
        /// 8 bytes.
        #[prost(bytes = "vec", tag = "2")]
        pub span_id: Vec<u8>,
        #[prost(string, tag = "3")]
        pub trace_state: String,
        /// 8 bytes, or empty for a root span.
        #[prost(bytes = "vec", tag = "4")]
        pub parent_span_id: Vec<u8>,
        #[prost(fixed32, tag = "16")]
        pub flags: u32,
        #[prost(string, tag = "5")]
        pub name: String,
        #[prost(enumeration = "span::SpanKind", tag = "6")]
        pub kind: i32,
        #[prost(fixed64, tag = "7")]
        pub start_time_unix_nano: u64,
        #[prost(fixed64, tag = "8")]
        pub end_time_unix_nano: u64,
        #[prost(message, repeated, tag = "9")]
        pub attributes: Vec<KeyValue>,
        #[prost(uint32, tag = "10")]
        pub dropped_attributes_count: u32,
        #[prost(message, repeated, tag = "11")]
        pub events: Vec<span::Event>,
        #[prost(uint32, tag = "12")]
        pub dropped_events_count: u32,
        #[prost(message, repeated, tag = "13")]
        pub links: Vec<span::Link>,
        #[prost(uint32, tag = "14")]
        pub dropped_links_count: u32,
        #[prost(message, optional, tag = "15")]
        pub status: Option<Status>,
    }

    /// The messages and enum nested in `Span`.
    pub mod span {
        /// `Span.Event`
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct Event {
            #[prost(fixed64, tag = "1")]
            pub time_unix_nano: u64,
            #[prost(string, tag = "2")]
            pub name: String,
            #[prost(message, repeated, tag = "3")]
            pub attributes: Vec<super::KeyValue>,
            #[prost(uint32, tag = "4")]
            pub dropped_attributes_count: u32,
        }

        /// `Span.Link` (decoded, not stored).
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct Link {
            #[prost(bytes = "vec", tag = "1")]
            pub trace_id: Vec<u8>,
            #[prost(bytes = "vec", tag = "2")]
            pub span_id: Vec<u8>,
            #[prost(string, tag = "3")]
            pub trace_state: String,
            #[prost(message, repeated, tag = "4")]
            pub attributes: Vec<super::KeyValue>,
            #[prost(uint32, tag = "5")]
            pub dropped_attributes_count: u32,
            #[prost(fixed32, tag = "6")]
            pub flags: u32,
        }

        /// `Span.SpanKind`
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, prost::Enumeration)]
        #[repr(i32)]
        pub enum SpanKind {
            Unspecified = 0,
            Internal = 1,
            Server = 2,
            Client = 3,
            Producer = 4,
            Consumer = 5,
        }

        impl SpanKind {
            /// The enum value's name in the proto file, as OTLP/JSON may spell it.
            pub fn from_str_name(name: &str) -> Option<SpanKind> {
                Some(match name {
                    "SPAN_KIND_UNSPECIFIED" => SpanKind::Unspecified,
                    "SPAN_KIND_INTERNAL" => SpanKind::Internal,
                    "SPAN_KIND_SERVER" => SpanKind::Server,
                    "SPAN_KIND_CLIENT" => SpanKind::Client,
                    "SPAN_KIND_PRODUCER" => SpanKind::Producer,
                    "SPAN_KIND_CONSUMER" => SpanKind::Consumer,
                    _ => return None,
                })
            }
        }
    }

    /// `opentelemetry.proto.trace.v1.Status`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Status {
        #[prost(string, tag = "2")]
        pub message: String,
        #[prost(enumeration = "status::StatusCode", tag = "3")]
        pub code: i32,
    }

    /// The enum nested in `Status`.
    pub mod status {
        /// `Status.StatusCode`
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, prost::Enumeration)]
        #[repr(i32)]
        pub enum StatusCode {
            Unset = 0,
            Ok = 1,
            Error = 2,
        }

        impl StatusCode {
            /// The enum value's name in the proto file, as OTLP/JSON may spell it.
            pub fn from_str_name(name: &str) -> Option<StatusCode> {
                Some(match name {
                    "STATUS_CODE_UNSET" => StatusCode::Unset,
                    "STATUS_CODE_OK" => StatusCode::Ok,
                    "STATUS_CODE_ERROR" => StatusCode::Error,
                    _ => return None,
                })
            }
        }
    }

    /// `opentelemetry.proto.common.v1.KeyValue`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<AnyValue>,
    }

    /// `opentelemetry.proto.common.v1.AnyValue`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AnyValue {
        #[prost(oneof = "any_value::Value", tags = "1, 2, 3, 4, 5, 6, 7")]
        pub value: Option<any_value::Value>,
    }

    /// The `oneof` of `AnyValue`.
    pub mod any_value {
        /// `AnyValue.value`
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Value {
            #[prost(string, tag = "1")]
            StringValue(String),
            #[prost(bool, tag = "2")]
            BoolValue(bool),
            #[prost(int64, tag = "3")]
            IntValue(i64),
            #[prost(double, tag = "4")]
            DoubleValue(f64),
            #[prost(message, tag = "5")]
            ArrayValue(super::ArrayValue),
            #[prost(message, tag = "6")]
            KvlistValue(super::KeyValueList),
            #[prost(bytes = "vec", tag = "7")]
            BytesValue(Vec<u8>),
        }
    }

    /// `opentelemetry.proto.common.v1.ArrayValue`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ArrayValue {
        #[prost(message, repeated, tag = "1")]
        pub values: Vec<AnyValue>,
    }

    /// `opentelemetry.proto.common.v1.KeyValueList`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValueList {
        #[prost(message, repeated, tag = "1")]
        pub values: Vec<KeyValue>,
    }
}

/// The OTLP/JSON mapping, read into the [`proto`] messages: lowerCamelCase field names (the
/// proto's snake_case names are accepted too), trace and span ids as hex (not base64 as in
/// the generic protobuf JSON mapping), enums as integers or names, 64-bit integers as strings
/// or numbers, bytes as base64. Unknown fields are ignored; `null` is an absent field.
/// Counting the spans of a request without decoding them: the request's skeleton, each span
/// skipped (protobuf: a slice of the body; JSON: ignored).
mod count {
    use prost::Message as _;
    use serde::Deserialize;
    use serde::de::IgnoredAny;

    use super::OtlpError;

    #[derive(Clone, PartialEq, prost::Message)]
    struct Request {
        #[prost(message, repeated, tag = "1")]
        resource_spans: Vec<ResourceSpans>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct ResourceSpans {
        #[prost(message, repeated, tag = "2")]
        scope_spans: Vec<ScopeSpans>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct ScopeSpans {
        #[prost(bytes = "bytes", repeated, tag = "2")]
        spans: Vec<bytes::Bytes>,
    }

    pub(super) fn protobuf(body: &[u8]) -> Result<usize, OtlpError> {
        let request = Request::decode(bytes::Bytes::copy_from_slice(body))
            .map_err(|e| OtlpError::Malformed(format!("invalid OTLP/protobuf body: {e}")))?;
        Ok(request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum())
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct JsonRequest {
        #[serde(default, alias = "resource_spans")]
        resource_spans: Option<Vec<JsonResourceSpans>>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct JsonResourceSpans {
        #[serde(default, alias = "scope_spans")]
        scope_spans: Option<Vec<JsonScopeSpans>>,
    }

    #[derive(Deserialize)]
    struct JsonScopeSpans {
        #[serde(default)]
        spans: Option<Vec<IgnoredAny>>,
    }

    pub(super) fn json(body: &[u8]) -> Result<usize, OtlpError> {
        let request: JsonRequest = serde_json::from_slice(body)
            .map_err(|e| OtlpError::Malformed(format!("invalid OTLP/JSON body: {e}")))?;
        Ok(request
            .resource_spans
            .iter()
            .flatten()
            .flat_map(|r| r.scope_spans.iter().flatten())
            .map(|s| s.spans.as_ref().map_or(0, Vec::len))
            .sum())
    }
}

mod json {
    use std::fmt;

    use serde::Deserialize;
    use serde::de::{self, Deserializer, Visitor};

    use super::{OtlpError, proto};

    pub(super) fn parse(body: &[u8]) -> Result<proto::ExportTraceServiceRequest, OtlpError> {
        let request: Request = serde_json::from_slice(body)
            .map_err(|e| OtlpError::Malformed(format!("invalid OTLP/JSON body: {e}")))?;
        request.into_proto().map_err(OtlpError::Malformed)
    }

    fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de> + Default,
    {
        Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Request {
        #[serde(default, alias = "resource_spans", deserialize_with = "nullable")]
        resource_spans: Vec<ResourceSpans>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct ResourceSpans {
        #[serde(default)]
        resource: Option<Resource>,
        #[serde(default, alias = "scope_spans", deserialize_with = "nullable")]
        scope_spans: Vec<ScopeSpans>,
        #[serde(default, alias = "schema_url")]
        schema_url: Option<String>,
    }

    #[derive(Deserialize)]
    struct Resource {
        #[serde(default, deserialize_with = "nullable")]
        attributes: Vec<KeyValue>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct ScopeSpans {
        #[serde(default)]
        scope: Option<Scope>,
        #[serde(default, deserialize_with = "nullable")]
        spans: Vec<Span>,
        #[serde(default, alias = "schema_url")]
        schema_url: Option<String>,
    }

    #[derive(Deserialize)]
    struct Scope {
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        version: Option<String>,
        #[serde(default, deserialize_with = "nullable")]
        attributes: Vec<KeyValue>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Span {
        #[serde(default, alias = "trace_id")]
        trace_id: Option<String>,
        #[serde(default, alias = "span_id")]
        span_id: Option<String>,
        #[serde(default, alias = "trace_state")]
        trace_state: Option<String>,
        #[serde(default, alias = "parent_span_id")]
        parent_span_id: Option<String>,
        #[serde(default)]
        flags: Option<U64>,
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        kind: Option<Enum>,
        #[serde(default, alias = "start_time_unix_nano")]
        start_time_unix_nano: Option<U64>,
        #[serde(default, alias = "end_time_unix_nano")]
        end_time_unix_nano: Option<U64>,
        #[serde(default, deserialize_with = "nullable")]
        attributes: Vec<KeyValue>,
        #[serde(default, deserialize_with = "nullable")]
        events: Vec<Event>,
        #[serde(default)]
        status: Option<Status>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Event {
        #[serde(default, alias = "time_unix_nano")]
        time_unix_nano: Option<U64>,
        #[serde(default)]
        name: Option<String>,
        #[serde(default, deserialize_with = "nullable")]
        attributes: Vec<KeyValue>,
    }

    #[derive(Deserialize)]
    struct Status {
        #[serde(default)]
        message: Option<String>,
        #[serde(default)]
        code: Option<Enum>,
    }

    #[derive(Deserialize)]
    struct KeyValue {
        #[serde(default)]
        key: Option<String>,
        #[serde(default)]
        value: Option<AnyValue>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct AnyValue {
        #[serde(default, alias = "string_value")]
        string_value: Option<String>,
        #[serde(default, alias = "bool_value")]
        bool_value: Option<bool>,
        #[serde(default, alias = "int_value")]
        int_value: Option<I64>,
        #[serde(default, alias = "double_value")]
        double_value: Option<F64>,
        #[serde(default, alias = "array_value")]
        array_value: Option<ArrayValue>,
        #[serde(default, alias = "kvlist_value")]
        kvlist_value: Option<KeyValueList>,
        #[serde(default, alias = "bytes_value")]
        bytes_value: Option<String>,
    }

    #[derive(Deserialize)]
    struct ArrayValue {
        #[serde(default, deserialize_with = "nullable")]
        values: Vec<AnyValue>,
    }

    #[derive(Deserialize)]
    struct KeyValueList {
        #[serde(default, deserialize_with = "nullable")]
        values: Vec<KeyValue>,
    }

    /// An unsigned 64-bit integer, as a JSON string or number.
    struct U64(u64);
    /// A signed 64-bit integer, as a JSON string or number.
    struct I64(i64);
    /// A double, as a JSON number or one of the strings `NaN`, `Infinity`, `-Infinity`.
    struct F64(f64);
    /// An enum value, as its integer or its name.
    enum Enum {
        Number(i64),
        Name(String),
    }

    /// One visitor for the scalars that OTLP/JSON allows as strings or numbers.
    enum Scalar {
        Unsigned(u64),
        Signed(i64),
        Float(f64),
        Text(String),
    }

    struct ScalarVisitor(&'static str);

    impl<'de> Visitor<'de> for ScalarVisitor {
        type Value = Scalar;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
            Ok(Scalar::Unsigned(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
            Ok(Scalar::Signed(v))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
            Ok(Scalar::Float(v))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
            Ok(Scalar::Text(v.to_string()))
        }
    }

    fn scalar<'de, D: Deserializer<'de>>(
        d: D,
        expecting: &'static str,
    ) -> Result<Scalar, D::Error> {
        d.deserialize_any(ScalarVisitor(expecting))
    }

    fn invalid<E: de::Error>(what: &str, expecting: &str) -> E {
        E::custom(format_args!("invalid value {what}, expected {expecting}"))
    }

    impl<'de> Deserialize<'de> for U64 {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            const EXPECTING: &str = "an unsigned 64-bit integer as a string or a number";
            match scalar(d, EXPECTING)? {
                Scalar::Unsigned(v) => Ok(U64(v)),
                Scalar::Text(s) => s
                    .parse()
                    .map(U64)
                    .map_err(|_| invalid(&format!("{s:?}"), EXPECTING)),
                Scalar::Signed(v) => Err(invalid(&v.to_string(), EXPECTING)),
                Scalar::Float(v) => Err(invalid(&v.to_string(), EXPECTING)),
            }
        }
    }

    impl<'de> Deserialize<'de> for I64 {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            const EXPECTING: &str = "a 64-bit integer as a string or a number";
            match scalar(d, EXPECTING)? {
                Scalar::Signed(v) => Ok(I64(v)),
                Scalar::Unsigned(v) => i64::try_from(v)
                    .map(I64)
                    .map_err(|_| invalid(&v.to_string(), EXPECTING)),
                Scalar::Text(s) => s
                    .parse()
                    .map(I64)
                    .map_err(|_| invalid(&format!("{s:?}"), EXPECTING)),
                Scalar::Float(v) => Err(invalid(&v.to_string(), EXPECTING)),
            }
        }
    }

    impl<'de> Deserialize<'de> for F64 {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            const EXPECTING: &str = "a number, \"NaN\", \"Infinity\" or \"-Infinity\"";
            match scalar(d, EXPECTING)? {
                Scalar::Float(v) => Ok(F64(v)),
                Scalar::Unsigned(v) => Ok(F64(v as f64)),
                Scalar::Signed(v) => Ok(F64(v as f64)),
                Scalar::Text(s) => match s.as_str() {
                    "NaN" => Ok(F64(f64::NAN)),
                    "Infinity" => Ok(F64(f64::INFINITY)),
                    "-Infinity" => Ok(F64(f64::NEG_INFINITY)),
                    other => other
                        .parse()
                        .map(F64)
                        .map_err(|_| invalid(&format!("{s:?}"), EXPECTING)),
                },
            }
        }
    }

    impl<'de> Deserialize<'de> for Enum {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            const EXPECTING: &str = "an enum value as an integer or a name";
            match scalar(d, EXPECTING)? {
                Scalar::Unsigned(v) => i64::try_from(v)
                    .map(Enum::Number)
                    .map_err(|_| invalid(&v.to_string(), EXPECTING)),
                Scalar::Signed(v) => Ok(Enum::Number(v)),
                Scalar::Text(s) => Ok(Enum::Name(s)),
                Scalar::Float(v) => Err(invalid(&v.to_string(), EXPECTING)),
            }
        }
    }

    impl Enum {
        /// The enum's integer; a name is looked up with `by_name`.
        fn resolve(
            self,
            field: &str,
            by_name: impl Fn(&str) -> Option<i32>,
            example: &str,
        ) -> Result<i32, String> {
            match self {
                Enum::Number(n) => i32::try_from(n)
                    .map_err(|_| format!("{field} {n} is out of range of a protobuf enum")),
                Enum::Name(name) => by_name(&name).ok_or_else(|| {
                    format!("{field} {name:?} is not a known value (use an integer or a name like {example})")
                }),
            }
        }
    }

    impl Request {
        fn into_proto(self) -> Result<proto::ExportTraceServiceRequest, String> {
            let mut resource_spans = Vec::with_capacity(self.resource_spans.len());
            for (i, rs) in self.resource_spans.into_iter().enumerate() {
                let resource = match rs.resource {
                    Some(r) => Some(proto::Resource {
                        attributes: key_values(r.attributes)
                            .map_err(|e| format!("resource_spans[{i}].resource: {e}"))?,
                        dropped_attributes_count: 0,
                    }),
                    None => None,
                };
                let mut scope_spans = Vec::with_capacity(rs.scope_spans.len());
                for (j, ss) in rs.scope_spans.into_iter().enumerate() {
                    let at = |e: String| format!("resource_spans[{i}].scope_spans[{j}]{e}");
                    let scope = match ss.scope {
                        Some(s) => Some(proto::InstrumentationScope {
                            name: s.name.unwrap_or_default(),
                            version: s.version.unwrap_or_default(),
                            attributes: key_values(s.attributes)
                                .map_err(|e| at(format!(".scope: {e}")))?,
                            dropped_attributes_count: 0,
                        }),
                        None => None,
                    };
                    let mut spans = Vec::with_capacity(ss.spans.len());
                    for (k, span) in ss.spans.into_iter().enumerate() {
                        spans.push(
                            span.into_proto()
                                .map_err(|e| at(format!(".spans[{k}]: {e}")))?,
                        );
                    }
                    scope_spans.push(proto::ScopeSpans {
                        scope,
                        spans,
                        schema_url: ss.schema_url.unwrap_or_default(),
                    });
                }
                resource_spans.push(proto::ResourceSpans {
                    resource,
                    scope_spans,
                    schema_url: rs.schema_url.unwrap_or_default(),
                });
            }
            Ok(proto::ExportTraceServiceRequest { resource_spans })
        }
    }

    /// A trace or span id in hex (OTLP/JSON's encoding of ids).
    fn hex_id(value: Option<String>, field: &str, len: usize) -> Result<Vec<u8>, String> {
        let text = value.unwrap_or_default();
        hex::decode(&text).map_err(|_| {
            format!(
                "{field} {text:?} is not hex: OTLP/JSON encodes ids as {} hex digits, not base64",
                len * 2
            )
        })
    }

    impl Span {
        fn into_proto(self) -> Result<proto::Span, String> {
            let kind = match self.kind {
                Some(k) => k.resolve(
                    "kind",
                    |n| proto::span::SpanKind::from_str_name(n).map(i32::from),
                    "SPAN_KIND_SERVER",
                )?,
                None => 0,
            };
            let status = match self.status {
                Some(s) => Some(proto::Status {
                    message: s.message.unwrap_or_default(),
                    code: match s.code {
                        Some(c) => c.resolve(
                            "status.code",
                            |n| proto::status::StatusCode::from_str_name(n).map(i32::from),
                            "STATUS_CODE_ERROR",
                        )?,
                        None => 0,
                    },
                }),
                None => None,
            };
            let mut events = Vec::with_capacity(self.events.len());
            for (e, event) in self.events.into_iter().enumerate() {
                events.push(proto::span::Event {
                    time_unix_nano: event.time_unix_nano.map_or(0, |t| t.0),
                    name: event.name.unwrap_or_default(),
                    attributes: key_values(event.attributes)
                        .map_err(|err| format!("events[{e}]: {err}"))?,
                    dropped_attributes_count: 0,
                });
            }
            let flags = match self.flags {
                Some(U64(f)) => {
                    u32::try_from(f).map_err(|_| format!("flags {f} is not a 32-bit value"))?
                }
                None => 0,
            };
            Ok(proto::Span {
                trace_id: hex_id(self.trace_id, "traceId", 16)?,
                span_id: hex_id(self.span_id, "spanId", 8)?,
                trace_state: self.trace_state.unwrap_or_default(),
                parent_span_id: hex_id(self.parent_span_id, "parentSpanId", 8)?,
                flags,
                name: self.name.unwrap_or_default(),
                kind,
                start_time_unix_nano: self.start_time_unix_nano.map_or(0, |t| t.0),
                end_time_unix_nano: self.end_time_unix_nano.map_or(0, |t| t.0),
                attributes: key_values(self.attributes)?,
                dropped_attributes_count: 0,
                events,
                dropped_events_count: 0,
                links: Vec::new(),
                dropped_links_count: 0,
                status,
            })
        }
    }

    fn key_values(kvs: Vec<KeyValue>) -> Result<Vec<proto::KeyValue>, String> {
        kvs.into_iter()
            .map(|kv| {
                let key = kv.key.unwrap_or_default();
                let value = match kv.value {
                    Some(v) => Some(
                        v.into_proto()
                            .map_err(|e| format!("attribute {key:?}: {e}"))?,
                    ),
                    None => None,
                };
                Ok(proto::KeyValue { key, value })
            })
            .collect()
    }

    impl AnyValue {
        fn into_proto(self) -> Result<proto::AnyValue, String> {
            use proto::any_value::Value as V;
            let bytes = match self.bytes_value {
                Some(b) => Some(V::BytesValue(
                    super::base64::decode(&b).ok_or("bytesValue is not base64")?,
                )),
                None => None,
            };
            let array = match self.array_value {
                Some(a) => Some(V::ArrayValue(proto::ArrayValue {
                    values: a
                        .values
                        .into_iter()
                        .map(AnyValue::into_proto)
                        .collect::<Result<_, _>>()?,
                })),
                None => None,
            };
            let kvlist = match self.kvlist_value {
                Some(l) => Some(V::KvlistValue(proto::KeyValueList {
                    values: key_values(l.values)?,
                })),
                None => None,
            };
            let mut set = [
                self.string_value.map(V::StringValue),
                self.bool_value.map(V::BoolValue),
                self.int_value.map(|i| V::IntValue(i.0)),
                self.double_value.map(|d| V::DoubleValue(d.0)),
                array,
                kvlist,
                bytes,
            ]
            .into_iter()
            .flatten();
            let value = set.next();
            if set.next().is_some() {
                return Err(
                    "a value sets more than one of stringValue, boolValue, intValue, \
                            doubleValue, arrayValue, kvlistValue, bytesValue"
                        .to_string(),
                );
            }
            Ok(proto::AnyValue { value })
        }
    }
}

/// Standard base64 (RFC 4648) for `bytesValue` attributes; decoding also accepts the URL-safe
/// alphabet and missing padding, as the protobuf JSON mapping does.
mod base64 {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub(super) fn encode(bytes: &[u8]) -> String {
        let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    pub(super) fn decode(text: &str) -> Option<Vec<u8>> {
        let digits = text
            .strip_suffix("==")
            .or_else(|| text.strip_suffix('='))
            .unwrap_or(text);
        if digits.len() % 4 == 1 || (digits.len() != text.len() && !text.len().is_multiple_of(4)) {
            return None;
        }
        let mut out = Vec::with_capacity(digits.len() / 4 * 3 + 2);
        let (mut acc, mut bits) = (0u32, 0u32);
        for c in digits.bytes() {
            let v = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' | b'-' => 62,
                b'/' | b'_' => 63,
                _ => return None,
            };
            acc = (acc << 6) | u32::from(v);
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
                acc &= (1 << bits) - 1;
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::Compression;
    use flate2::write::GzEncoder;
    use proptest::prelude::*;

    use super::any_value::Value as V;
    use super::*;

    const PROTOBUF: &str = "application/x-protobuf";
    const JSON: &str = "application/json";
    const INGESTED: i64 = 1_714_565_200_000_000;
    /// 2024-05-01T12:00:00Z in nanoseconds.
    const T0: u64 = 1_714_564_800_000_000_000;
    const SEC: u64 = 1_000_000_000;
    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const ROOT: &str = "00f067aa0ba902b7";
    const BUILD: &str = "b7ad6b7169203331";
    const TEST: &str = "53995c3f42cd8ad8";

    fn kv(key: &str, value: V) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
        }
    }

    fn s(key: &str, value: &str) -> KeyValue {
        kv(key, V::StringValue(value.into()))
    }

    fn bytes(hex_id: &str) -> Vec<u8> {
        hex::decode(hex_id).unwrap()
    }

    /// A GitHub Actions workflow run as an OTLP exporter of CI/CD traces sends it: the run as
    /// the root span, its jobs as children, `cicd.*` and `vcs.*` semantic conventions.
    fn github_actions_request() -> ExportTraceServiceRequest {
        let root = Span {
            trace_id: bytes(TRACE),
            span_id: bytes(ROOT),
            flags: 257,
            name: "ci".into(),
            kind: span::SpanKind::Server.into(),
            start_time_unix_nano: T0,
            end_time_unix_nano: T0 + 312 * SEC + 500_000_123,
            attributes: vec![
                s("cicd.pipeline.name", "ci"),
                s("cicd.pipeline.run.id", "9123456789"),
                s("cicd.pipeline.result", "failure"),
                s(
                    "cicd.pipeline.run.url.full",
                    "https://github.com/acme/shop/actions/runs/9123456789",
                ),
                s("vcs.repository.name", "acme/shop"),
                s("vcs.change.id", "42"),
                kv("github.run_attempt", V::IntValue(1)),
            ],
            status: Some(Status {
                message: String::new(),
                code: status::StatusCode::Error.into(),
            }),
            ..Default::default()
        };
        let build = Span {
            trace_id: bytes(TRACE),
            span_id: bytes(BUILD),
            parent_span_id: bytes(ROOT),
            name: "build".into(),
            kind: span::SpanKind::Internal.into(),
            start_time_unix_nano: T0 + 5 * SEC,
            end_time_unix_nano: T0 + 125 * SEC,
            attributes: vec![
                s("cicd.pipeline.task.name", "build"),
                s("cicd.pipeline.task.run.id", "26123456781"),
                s("cicd.pipeline.task.type", "build"),
                s("cicd.pipeline.task.run.result", "success"),
                kv(
                    "github.runner.labels",
                    V::ArrayValue(ArrayValue {
                        values: vec![
                            AnyValue {
                                value: Some(V::StringValue("ubuntu-latest".into())),
                            },
                            AnyValue {
                                value: Some(V::StringValue("x64".into())),
                            },
                        ],
                    }),
                ),
                kv("github.queue_seconds", V::DoubleValue(1.5)),
            ],
            status: Some(Status {
                message: String::new(),
                code: status::StatusCode::Ok.into(),
            }),
            ..Default::default()
        };
        let test = Span {
            trace_id: bytes(TRACE),
            span_id: bytes(TEST),
            parent_span_id: bytes(ROOT),
            name: "test".into(),
            kind: span::SpanKind::Internal.into(),
            start_time_unix_nano: T0 + 126 * SEC,
            end_time_unix_nano: T0 + 312 * SEC,
            attributes: vec![
                s("cicd.pipeline.task.name", "test"),
                s("cicd.pipeline.task.run.id", "26123456782"),
                s("cicd.pipeline.task.type", "test"),
                s("cicd.pipeline.task.run.result", "failure"),
                kv("github.rerun", V::BoolValue(false)),
            ],
            events: vec![span::Event {
                time_unix_nano: T0 + 310 * SEC + 250_000_000,
                name: "log".into(),
                attributes: vec![s("log.severity", "error"), kv("exit_code", V::IntValue(1))],
                dropped_attributes_count: 0,
            }],
            status: Some(Status {
                message: "Process completed with exit code 1".into(),
                code: status::StatusCode::Error.into(),
            }),
            ..Default::default()
        };
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        s("service.name", "github-actions"),
                        s("vcs.repository.url.full", "https://github.com/acme/shop"),
                        s("vcs.ref.head.name", "main"),
                        s(
                            "vcs.ref.head.revision",
                            "8f3c2a1d4b5e6f708192a3b4c5d6e7f809a1b2c3",
                        ),
                        s("cicd.pipeline.name", "ci"),
                        s("cicd.pipeline.run.id", "9123456789"),
                    ],
                    dropped_attributes_count: 0,
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "otel-cicd-action".into(),
                        version: "2.1.0".into(),
                        ..Default::default()
                    }),
                    spans: vec![root, build, test],
                    schema_url: "https://opentelemetry.io/schemas/1.27.0".into(),
                }],
                schema_url: String::new(),
            }],
        }
    }

    /// The same request in OTLP/JSON, as an exporter writes it: hex ids, 64-bit integers as
    /// strings, enums as integers or names, fields this decoder does not store.
    const GITHUB_ACTIONS_JSON: &str = r#"{
      "resourceSpans": [{
        "resource": {
          "attributes": [
            {"key": "service.name", "value": {"stringValue": "github-actions"}},
            {"key": "vcs.repository.url.full", "value": {"stringValue": "https://github.com/acme/shop"}},
            {"key": "vcs.ref.head.name", "value": {"stringValue": "main"}},
            {"key": "vcs.ref.head.revision", "value": {"stringValue": "8f3c2a1d4b5e6f708192a3b4c5d6e7f809a1b2c3"}},
            {"key": "cicd.pipeline.name", "value": {"stringValue": "ci"}},
            {"key": "cicd.pipeline.run.id", "value": {"stringValue": "9123456789"}}
          ],
          "droppedAttributesCount": 0
        },
        "scopeSpans": [{
          "scope": {"name": "otel-cicd-action", "version": "2.1.0"},
          "spans": [
            {
              "traceId": "4bf92f3577b34da6a3ce929d0e0e4736",
              "spanId": "00f067aa0ba902b7",
              "parentSpanId": "",
              "traceState": "",
              "flags": 257,
              "name": "ci",
              "kind": 2,
              "startTimeUnixNano": "1714564800000000000",
              "endTimeUnixNano": "1714565112500000123",
              "attributes": [
                {"key": "cicd.pipeline.name", "value": {"stringValue": "ci"}},
                {"key": "cicd.pipeline.run.id", "value": {"stringValue": "9123456789"}},
                {"key": "cicd.pipeline.result", "value": {"stringValue": "failure"}},
                {"key": "cicd.pipeline.run.url.full", "value": {"stringValue": "https://github.com/acme/shop/actions/runs/9123456789"}},
                {"key": "vcs.repository.name", "value": {"stringValue": "acme/shop"}},
                {"key": "vcs.change.id", "value": {"stringValue": "42"}},
                {"key": "github.run_attempt", "value": {"intValue": "1"}}
              ],
              "droppedAttributesCount": 0,
              "events": [],
              "droppedEventsCount": 0,
              "links": [],
              "droppedLinksCount": 0,
              "status": {"code": 2}
            },
            {
              "traceId": "4bf92f3577b34da6a3ce929d0e0e4736",
              "spanId": "b7ad6b7169203331",
              "parentSpanId": "00f067aa0ba902b7",
              "name": "build",
              "kind": "SPAN_KIND_INTERNAL",
              "startTimeUnixNano": "1714564805000000000",
              "endTimeUnixNano": "1714564925000000000",
              "attributes": [
                {"key": "cicd.pipeline.task.name", "value": {"stringValue": "build"}},
                {"key": "cicd.pipeline.task.run.id", "value": {"stringValue": "26123456781"}},
                {"key": "cicd.pipeline.task.type", "value": {"stringValue": "build"}},
                {"key": "cicd.pipeline.task.run.result", "value": {"stringValue": "success"}},
                {"key": "github.runner.labels", "value": {"arrayValue": {"values": [
                  {"stringValue": "ubuntu-latest"}, {"stringValue": "x64"}
                ]}}},
                {"key": "github.queue_seconds", "value": {"doubleValue": 1.5}}
              ],
              "status": {"code": "STATUS_CODE_OK"}
            },
            {
              "traceId": "4bf92f3577b34da6a3ce929d0e0e4736",
              "spanId": "53995c3f42cd8ad8",
              "parentSpanId": "00f067aa0ba902b7",
              "name": "test",
              "kind": 1,
              "startTimeUnixNano": "1714564926000000000",
              "endTimeUnixNano": "1714565112000000000",
              "attributes": [
                {"key": "cicd.pipeline.task.name", "value": {"stringValue": "test"}},
                {"key": "cicd.pipeline.task.run.id", "value": {"stringValue": "26123456782"}},
                {"key": "cicd.pipeline.task.type", "value": {"stringValue": "test"}},
                {"key": "cicd.pipeline.task.run.result", "value": {"stringValue": "failure"}},
                {"key": "github.rerun", "value": {"boolValue": false}}
              ],
              "events": [{
                "timeUnixNano": "1714565110250000000",
                "name": "log",
                "attributes": [
                  {"key": "log.severity", "value": {"stringValue": "error"}},
                  {"key": "exit_code", "value": {"intValue": "1"}}
                ]
              }],
              "status": {"message": "Process completed with exit code 1", "code": "STATUS_CODE_ERROR"}
            }
          ],
          "schemaUrl": "https://opentelemetry.io/schemas/1.27.0"
        }]
      }]
    }"#;

    /// The rows both encodings of the GitHub Actions trace must decode to, column by column.
    fn expected_rows() -> Vec<cdlake_schemas::Span> {
        let resource = cdlake_schemas::Span {
            trace_id: TRACE.into(),
            service_name: Some("github-actions".into()),
            scope_name: Some("otel-cicd-action".into()),
            cicd_pipeline_name: Some("ci".into()),
            cicd_pipeline_run_id: Some("9123456789".into()),
            vcs_repository_url: Some("https://github.com/acme/shop".into()),
            vcs_ref_head_name: Some("main".into()),
            vcs_ref_head_revision: Some("8f3c2a1d4b5e6f708192a3b4c5d6e7f809a1b2c3".into()),
            resource_attributes: concat!(
                r#"{"cicd.pipeline.name":"ci","cicd.pipeline.run.id":"9123456789","#,
                r#""service.name":"github-actions","vcs.ref.head.name":"main","#,
                r#""vcs.ref.head.revision":"8f3c2a1d4b5e6f708192a3b4c5d6e7f809a1b2c3","#,
                r#""vcs.repository.url.full":"https://github.com/acme/shop"}"#
            )
            .into(),
            ingested_at: INGESTED,
            ..Default::default()
        };
        vec![
            cdlake_schemas::Span {
                span_id: ROOT.into(),
                parent_span_id: None,
                name: "ci".into(),
                kind: "server".into(),
                start: 1_714_564_800_000_000,
                end: 1_714_565_112_500_000,
                duration_ms: 312_500.000_123,
                status: "error".into(),
                status_message: None,
                cicd_pipeline_result: Some("failure".into()),
                cicd_pipeline_run_url: Some(
                    "https://github.com/acme/shop/actions/runs/9123456789".into(),
                ),
                vcs_repository_name: Some("acme/shop".into()),
                vcs_change_id: Some("42".into()),
                attributes: concat!(
                    r#"{"cicd.pipeline.name":"ci","cicd.pipeline.result":"failure","#,
                    r#""cicd.pipeline.run.id":"9123456789","#,
                    r#""cicd.pipeline.run.url.full":"https://github.com/acme/shop/actions/runs/9123456789","#,
                    r#""github.run_attempt":1,"vcs.change.id":"42","vcs.repository.name":"acme/shop"}"#
                )
                .into(),
                events: None,
                ..resource.clone()
            },
            cdlake_schemas::Span {
                span_id: BUILD.into(),
                parent_span_id: Some(ROOT.into()),
                name: "build".into(),
                kind: "internal".into(),
                start: 1_714_564_805_000_000,
                end: 1_714_564_925_000_000,
                duration_ms: 120_000.0,
                status: "ok".into(),
                status_message: None,
                cicd_pipeline_task_name: Some("build".into()),
                cicd_pipeline_task_run_id: Some("26123456781".into()),
                cicd_pipeline_task_type: Some("build".into()),
                cicd_pipeline_task_run_result: Some("success".into()),
                attributes: concat!(
                    r#"{"cicd.pipeline.task.name":"build","cicd.pipeline.task.run.id":"26123456781","#,
                    r#""cicd.pipeline.task.run.result":"success","cicd.pipeline.task.type":"build","#,
                    r#""github.queue_seconds":1.5,"github.runner.labels":["ubuntu-latest","x64"]}"#
                )
                .into(),
                events: None,
                ..resource.clone()
            },
            cdlake_schemas::Span {
                span_id: TEST.into(),
                parent_span_id: Some(ROOT.into()),
                name: "test".into(),
                kind: "internal".into(),
                start: 1_714_564_926_000_000,
                end: 1_714_565_112_000_000,
                duration_ms: 186_000.0,
                status: "error".into(),
                status_message: Some("Process completed with exit code 1".into()),
                cicd_pipeline_task_name: Some("test".into()),
                cicd_pipeline_task_run_id: Some("26123456782".into()),
                cicd_pipeline_task_type: Some("test".into()),
                cicd_pipeline_task_run_result: Some("failure".into()),
                attributes: concat!(
                    r#"{"cicd.pipeline.task.name":"test","cicd.pipeline.task.run.id":"26123456782","#,
                    r#""cicd.pipeline.task.run.result":"failure","cicd.pipeline.task.type":"test","#,
                    r#""github.rerun":false}"#
                )
                .into(),
                events: Some(
                    concat!(
                        r#"[{"name":"log","time":"2024-05-01T12:05:10.250Z","#,
                        r#""attributes":{"exit_code":1,"log.severity":"error"}}]"#
                    )
                    .into(),
                ),
                ..resource
            },
        ]
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    fn malformed(result: Result<Vec<cdlake_schemas::Span>, OtlpError>) -> String {
        match result {
            Err(OtlpError::Malformed(reason)) => reason,
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn otlp_protobuf_golden() {
        let body = github_actions_request().encode_to_vec();
        let rows = decode(Some(PROTOBUF), None, &body, INGESTED).unwrap();
        assert_eq!(rows, expected_rows());
        assert_eq!(rows[0].date().to_string(), "2024-05-01");
    }

    #[test]
    fn otlp_json_golden_matches_protobuf() {
        let from_json = decode(
            Some("application/json; charset=utf-8"),
            None,
            GITHUB_ACTIONS_JSON.as_bytes(),
            INGESTED,
        )
        .unwrap();
        assert_eq!(from_json, expected_rows());
        let body = github_actions_request().encode_to_vec();
        let from_protobuf = decode(Some("application/protobuf"), None, &body, INGESTED).unwrap();
        assert_eq!(from_json, from_protobuf);
    }

    #[test]
    fn otlp_json_numbers_for_64_bit_integers_and_snake_case_names() {
        let body = r#"{"resource_spans": [{"scope_spans": [{"spans": [{
            "trace_id": "4BF92F3577B34DA6A3CE929D0E0E4736",
            "span_id": "00f067aa0ba902b7",
            "name": "deploy",
            "kind": "SPAN_KIND_CLIENT",
            "start_time_unix_nano": 1714564800000000000,
            "endTimeUnixNano": 1714564801500000000,
            "attributes": [
                {"key": "attempt", "value": {"int_value": 3}},
                {"key": "big", "value": {"intValue": -9007199254740993}},
                {"key": "ratio", "value": {"doubleValue": "NaN"}},
                {"key": "empty", "value": {}}
            ],
            "status": null,
            "foo": {"unknown": ["fields", "are", "ignored"]}
        }]}]}]}"#;
        let rows = decode(Some(JSON), None, body.as_bytes(), INGESTED).unwrap();
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        assert_eq!(row.trace_id, TRACE);
        assert_eq!(row.kind, "client");
        assert_eq!(row.start, 1_714_564_800_000_000);
        assert_eq!(row.end, 1_714_564_801_500_000);
        assert_eq!(row.duration_ms, 1_500.0);
        assert_eq!(row.status, "unset");
        assert_eq!(row.service_name, None);
        assert_eq!(row.scope_name, None);
        assert_eq!(row.resource_attributes, "{}");
        assert_eq!(
            row.attributes,
            r#"{"attempt":3,"big":-9007199254740993,"empty":null,"ratio":"NaN"}"#
        );
    }

    #[test]
    fn otlp_gzip_round_trip() {
        let body = gzip(&github_actions_request().encode_to_vec());
        let rows = decode(Some(PROTOBUF), Some("gzip"), &body, INGESTED).unwrap();
        assert_eq!(rows, expected_rows());
        let body = gzip(GITHUB_ACTIONS_JSON.as_bytes());
        let rows = decode(Some(JSON), Some("GZIP"), &body, INGESTED).unwrap();
        assert_eq!(rows, expected_rows());
    }

    #[test]
    fn otlp_gzip_bomb_is_too_large() {
        // 200 MB of zeros compress to about 200 kB; only the first 64 MiB are ever inflated.
        let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..200 {
            encoder.write_all(&zeros).unwrap();
        }
        let bomb = encoder.finish().unwrap();
        assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
        let err = decode(Some(PROTOBUF), Some("gzip"), &bomb, INGESTED).unwrap_err();
        assert_eq!(err, OtlpError::TooLarge);
        assert_eq!(err.status(), 413);
    }

    #[test]
    fn otlp_gzip_of_exactly_the_limit_is_decoded() {
        // 64 MiB of zeros is within the limit; it is then no protobuf (field number 0).
        let body = gzip(&vec![0u8; MAX_DECOMPRESSED]);
        let reason = malformed(decode(Some(PROTOBUF), Some("gzip"), &body, INGESTED));
        assert!(reason.contains("invalid OTLP/protobuf body"), "{reason}");
    }

    #[test]
    fn otlp_invalid_gzip_is_malformed() {
        let reason = malformed(decode(Some(PROTOBUF), Some("gzip"), b"not gzip", INGESTED));
        assert!(reason.starts_with("invalid gzip body"), "{reason}");
    }

    #[test]
    fn otlp_uncompressed_body_over_the_limit_is_too_large() {
        let body = vec![0u8; MAX_DECOMPRESSED + 1];
        assert_eq!(
            decode(Some(PROTOBUF), None, &body, INGESTED),
            Err(OtlpError::TooLarge)
        );
    }

    #[test]
    fn otlp_truncated_protobuf_is_malformed() {
        let body = github_actions_request().encode_to_vec();
        let reason = malformed(decode(
            Some(PROTOBUF),
            None,
            &body[..body.len() - 5],
            INGESTED,
        ));
        assert!(reason.starts_with("invalid OTLP/protobuf body"), "{reason}");
        let err = decode(Some(PROTOBUF), None, &body[..body.len() - 5], INGESTED).unwrap_err();
        assert_eq!(err.status(), 400);
    }

    #[test]
    fn otlp_invalid_json_is_malformed() {
        let reason = malformed(decode(Some(JSON), None, b"{\"resourceSpans\": [", INGESTED));
        assert!(reason.starts_with("invalid OTLP/JSON body"), "{reason}");
        let reason = malformed(decode(
            Some(JSON),
            None,
            br#"{"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": 1.5}]}]}]}"#,
            INGESTED,
        ));
        assert!(
            reason.contains("expected an unsigned 64-bit integer"),
            "{reason}"
        );
    }

    #[test]
    fn otlp_wrong_content_type_is_unsupported_media_type() {
        let body = github_actions_request().encode_to_vec();
        for content_type in [Some("text/plain"), Some("application/grpc"), None] {
            let err = decode(content_type, None, &body, INGESTED).unwrap_err();
            assert_eq!(
                err,
                OtlpError::UnsupportedMediaType(content_type.map(str::to_string))
            );
            assert_eq!(err.status(), 415);
            assert!(
                err.to_string()
                    .contains("send OTLP/HTTP as application/x-protobuf or application/json"),
                "{err}"
            );
        }
        let err = decode(Some(PROTOBUF), Some("br"), &body, INGESTED).unwrap_err();
        assert_eq!(err, OtlpError::UnsupportedEncoding("br".into()));
        assert_eq!(err.status(), 415);
        assert!(is_json(Some("Application/JSON ; charset=utf-8")));
        assert!(!is_json(Some(PROTOBUF)));
        assert!(!is_json(None));
    }

    #[test]
    fn otlp_invalid_ids_reject_the_request_naming_the_span() {
        let mut request = github_actions_request();
        request.resource_spans[0].scope_spans[0].spans[1].trace_id = vec![0; 16];
        let reason = malformed(decode(
            Some(PROTOBUF),
            None,
            &request.encode_to_vec(),
            INGESTED,
        ));
        assert_eq!(
            reason,
            "resource_spans[0].scope_spans[0].spans[1]: trace_id is all zeros, which is not a valid trace id"
        );

        let mut request = github_actions_request();
        request.resource_spans[0].scope_spans[0].spans[2].span_id = vec![1; 4];
        let reason = malformed(decode(
            Some(PROTOBUF),
            None,
            &request.encode_to_vec(),
            INGESTED,
        ));
        assert_eq!(
            reason,
            "resource_spans[0].scope_spans[0].spans[2]: span_id must be 8 bytes, got 4"
        );

        let mut request = github_actions_request();
        request.resource_spans[0].scope_spans[0].spans[0].span_id = vec![0; 8];
        let reason = malformed(decode(
            Some(PROTOBUF),
            None,
            &request.encode_to_vec(),
            INGESTED,
        ));
        assert!(reason.contains("span_id is all zeros"), "{reason}");

        let json = GITHUB_ACTIONS_JSON.replacen(TRACE, "00000000000000000000000000000000", 1);
        let reason = malformed(decode(Some(JSON), None, json.as_bytes(), INGESTED));
        assert!(
            reason.starts_with("resource_spans[0].scope_spans[0].spans[0]: trace_id is all zeros"),
            "{reason}"
        );
        let json = GITHUB_ACTIONS_JSON.replacen(TRACE, "S/kvNXezTaajzpKdDg5HNg==", 1);
        let reason = malformed(decode(Some(JSON), None, json.as_bytes(), INGESTED));
        assert!(
            reason.starts_with("resource_spans[0].scope_spans[0].spans[0]: traceId")
                && reason.contains("not base64"),
            "{reason}"
        );
    }

    #[test]
    fn otlp_end_before_start_keeps_both_times_and_clamps_duration() {
        let mut request = github_actions_request();
        let span = &mut request.resource_spans[0].scope_spans[0].spans[1];
        span.end_time_unix_nano = span.start_time_unix_nano - SEC;
        let rows = decode(Some(PROTOBUF), None, &request.encode_to_vec(), INGESTED).unwrap();
        assert_eq!(rows[1].start, 1_714_564_805_000_000);
        assert_eq!(rows[1].end, 1_714_564_804_000_000);
        assert_eq!(rows[1].duration_ms, 0.0);
    }

    #[test]
    fn otlp_span_attributes_win_over_resource_attributes() {
        let mut request = github_actions_request();
        request.resource_spans[0].scope_spans[0].spans[1]
            .attributes
            .push(s("vcs.ref.head.name", "feature/x"));
        request.resource_spans[0].scope_spans[0].spans[2]
            .attributes
            .push(kv("cicd.pipeline.run.id", V::IntValue(7)));
        let rows = decode(Some(PROTOBUF), None, &request.encode_to_vec(), INGESTED).unwrap();
        assert_eq!(rows[0].vcs_ref_head_name.as_deref(), Some("main"));
        assert_eq!(rows[1].vcs_ref_head_name.as_deref(), Some("feature/x"));
        assert_eq!(rows[2].cicd_pipeline_run_id.as_deref(), Some("7"));
    }

    #[test]
    fn otlp_attribute_values_to_json() {
        let value = |v: V| any_value_json(Some(AnyValue { value: Some(v) }));
        assert_eq!(value(V::StringValue("x".into())), serde_json::json!("x"));
        assert_eq!(value(V::BoolValue(true)), serde_json::json!(true));
        assert_eq!(value(V::IntValue(i64::MIN)), serde_json::json!(i64::MIN));
        assert_eq!(value(V::DoubleValue(0.25)), serde_json::json!(0.25));
        assert_eq!(value(V::DoubleValue(f64::NAN)), serde_json::json!("NaN"));
        assert_eq!(
            value(V::DoubleValue(f64::INFINITY)),
            serde_json::json!("Infinity")
        );
        assert_eq!(
            value(V::DoubleValue(f64::NEG_INFINITY)),
            serde_json::json!("-Infinity")
        );
        assert_eq!(
            value(V::BytesValue(b"foob".to_vec())),
            serde_json::json!("Zm9vYg==")
        );
        assert_eq!(any_value_json(None), Value::Null);
        let nested = V::KvlistValue(KeyValueList {
            values: vec![
                s("a", "b"),
                kv(
                    "list",
                    V::ArrayValue(ArrayValue {
                        values: vec![
                            AnyValue {
                                value: Some(V::IntValue(1)),
                            },
                            AnyValue { value: None },
                        ],
                    }),
                ),
            ],
        });
        assert_eq!(
            value(nested),
            serde_json::json!({"a": "b", "list": [1, null]})
        );
    }

    #[test]
    fn otlp_json_bytes_value_is_base64() {
        let body = r#"{"resourceSpans": [{"scopeSpans": [{"spans": [{
            "traceId": "4bf92f3577b34da6a3ce929d0e0e4736", "spanId": "00f067aa0ba902b7",
            "startTimeUnixNano": "1714565100000000000", "endTimeUnixNano": "1714565100500000000",
            "attributes": [
                {"key": "padded", "value": {"bytesValue": "Zm9vYg=="}},
                {"key": "unpadded", "value": {"bytesValue": "Zm9vYg"}},
                {"key": "nested", "value": {"kvlistValue": {"values": [
                    {"key": "k", "value": {"bytesValue": "AQID"}}
                ]}}}
            ]
        }]}]}]}"#;
        let rows = decode(Some(JSON), None, body.as_bytes(), INGESTED).unwrap();
        let attributes: Value = serde_json::from_str(&rows[0].attributes).unwrap();
        assert_eq!(
            attributes,
            serde_json::json!({"padded": "Zm9vYg==", "unpadded": "Zm9vYg==", "nested": {"k": "AQID"}})
        );
        let bad = body.replace("AQID", "A!ID");
        let reason = malformed(decode(Some(JSON), None, bad.as_bytes(), INGESTED));
        assert!(reason.contains("bytesValue is not base64"), "{reason}");
        let two = body.replace(
            r#""bytesValue": "AQID""#,
            r#""bytesValue": "AQID", "intValue": 1"#,
        );
        let reason = malformed(decode(Some(JSON), None, two.as_bytes(), INGESTED));
        assert!(reason.contains("more than one of"), "{reason}");
    }

    #[test]
    fn otlp_json_unknown_enum_name_is_malformed() {
        let json = GITHUB_ACTIONS_JSON.replace("SPAN_KIND_INTERNAL", "SPAN_KIND_FANCY");
        let reason = malformed(decode(Some(JSON), None, json.as_bytes(), INGESTED));
        assert!(
            reason
                .starts_with("resource_spans[0].scope_spans[0].spans[1]: kind \"SPAN_KIND_FANCY\""),
            "{reason}"
        );
    }

    #[test]
    fn otlp_base64_round_trip() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64::encode(plain.as_bytes()), encoded);
            assert_eq!(base64::decode(encoded).unwrap(), plain.as_bytes());
        }
        assert_eq!(base64::decode("-_8").unwrap(), [0xfb, 0xff]);
        assert_eq!(base64::decode("Z"), None);
        assert_eq!(base64::decode("Zm9=v"), None);
    }

    #[test]
    fn otlp_response_bodies() {
        assert_eq!(response_body(true), ("application/json", b"{}".to_vec()));
        assert_eq!(response_body(false), ("application/x-protobuf", Vec::new()));
        assert!(ExportTraceServiceResponse::decode(&response_body(false).1[..]).is_ok());
    }

    #[test]
    fn otlp_empty_request_has_no_rows() {
        assert_eq!(decode(Some(PROTOBUF), None, b"", INGESTED), Ok(Vec::new()));
        assert_eq!(decode(Some(JSON), None, b"{}", INGESTED), Ok(Vec::new()));
    }

    proptest! {
        #[test]
        fn otlp_decode_never_panics_on_arbitrary_bytes(
            body in proptest::collection::vec(any::<u8>(), 0..2048),
        ) {
            for content_type in [PROTOBUF, JSON] {
                let _ = decode(Some(content_type), None, &body, INGESTED);
                let _ = decode(Some(content_type), Some("gzip"), &body, INGESTED);
            }
        }

        #[test]
        fn otlp_decode_never_panics_on_damaged_requests(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut protobuf = github_actions_request().encode_to_vec();
            let mut json = GITHUB_ACTIONS_JSON.as_bytes().to_vec();
            for (at, byte) in &edits {
                let i = at.index(protobuf.len());
                protobuf[i] = *byte;
                let i = at.index(json.len());
                json[i] = *byte;
            }
            let _ = decode(Some(PROTOBUF), None, &protobuf, INGESTED);
            let _ = decode(Some(PROTOBUF), None, &protobuf[..cut.index(protobuf.len())], INGESTED);
            let _ = decode(Some(JSON), None, &json, INGESTED);
            let _ = decode(Some(JSON), None, &json[..cut.index(json.len())], INGESTED);
        }
    }
    #[test]
    fn requests_of_too_many_spans_are_refused_before_decoding_naming_the_limit() {
        let span = |i: u8| Span {
            trace_id: vec![1; 16],
            span_id: vec![i.max(1); 8],
            name: "s".into(),
            start_time_unix_nano: 1_700_000_000_000_000_000,
            end_time_unix_nano: 1_700_000_000_000_000_001,
            ..Default::default()
        };
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![
                    ScopeSpans {
                        spans: (0..3).map(span).collect(),
                        ..Default::default()
                    },
                    ScopeSpans {
                        spans: (3..5).map(span).collect(),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
        };
        let body = request.encode_to_vec();
        let err = decode_limited(Some(PROTOBUF), None, &body, INGESTED, 4).unwrap_err();
        assert_eq!(err, OtlpError::TooManySpans { spans: 5, max: 4 });
        assert_eq!(err.status(), 413);
        assert!(err.to_string().contains("--otlp-max-spans"), "{err}");
        assert_eq!(
            decode_limited(Some(PROTOBUF), None, &body, INGESTED, 5)
                .unwrap()
                .len(),
            5
        );
        let json = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{},{},{}]}]},{"scope_spans":[{"spans":[{}]}]}]}"#;
        let err = decode_limited(Some(JSON), None, json.as_bytes(), INGESTED, 3).unwrap_err();
        assert_eq!(err, OtlpError::TooManySpans { spans: 4, max: 3 });
    }
}
