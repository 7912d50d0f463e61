//! Counting the spans of a request without decoding them: the request's skeleton, each span
//! skipped (protobuf: a slice of the body; JSON: ignored).

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
