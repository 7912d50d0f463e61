//! The OTLP/JSON mapping, read into the [`proto`] messages: lowerCamelCase field names (the
//! proto's snake_case names are accepted too), trace and span ids as hex (not base64 as in
//! the generic protobuf JSON mapping), enums as integers or names, 64-bit integers as strings
//! or numbers, bytes as base64. Unknown fields are ignored; `null` is an absent field.

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

fn scalar<'de, D: Deserializer<'de>>(d: D, expecting: &'static str) -> Result<Scalar, D::Error> {
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
                crate::sources::base64::decode(&b).ok_or("bytesValue is not base64")?,
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
