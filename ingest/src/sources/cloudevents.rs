//! CloudEvents: `POST /api/v1/events` in the CloudEvents HTTP binding's binary mode (`ce-*`
//! headers, the body is the data), batch mode (`application/cloudevents-batch+json`, or any
//! JSON array) and structured mode (one JSON object: a CloudEvent or a bare CDEvent),
//! normalised by [`cdlake_schemas::cdevents::parse`]. The route is not signed: it is behind the
//! service's bearer token.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::Response;
use axum::routing::post;
use cdlake_schemas::Origin;
use cdlake_schemas::cdevents::{self, Rejection};

use super::receive::{ApiError, Limited, accept, header_str};
use super::{Normalised, Receivers, Source};
use crate::envelope::Envelope;
use crate::ingester::now_micros;

/// The route.
pub const ROUTE: &str = "/api/v1/events";

pub(super) const SOURCE: Source = Source {
    origin: Origin::CdEvents,
    route: ROUTE,
    // Single or batch.
    body_limit: 16 << 20,
    handler: || post(receive),
    normalise: |env, _, at| {
        cdevents::parse(&env.body, env.origin, at).map(|e| Normalised::Event(Box::new(e)))
    },
};

async fn receive(
    State(r): State<Arc<Receivers>>,
    headers: HeaderMap,
    Limited(body): Limited,
) -> Result<Response, ApiError> {
    let source = format!("http:{ROUTE}");
    let now = now_micros();
    let content_type = header_str(&headers, header::CONTENT_TYPE.as_str())
        .unwrap_or("application/json")
        .to_ascii_lowercase();
    let envelopes = if header_str(&headers, "ce-specversion").is_some() {
        vec![binary_mode(&headers, body, &source, now)]
    } else if content_type.starts_with("application/cloudevents-batch+json")
        || body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[')
    {
        match serde_json::from_slice::<Vec<&serde_json::value::RawValue>>(&body) {
            Ok(items) if items.is_empty() => {
                return Err(ApiError::BadRequest("the batch is an empty JSON array"));
            }
            Ok(items) => items
                .iter()
                .map(|raw| {
                    Envelope::cdevent(Bytes::copy_from_slice(raw.get().as_bytes()), &source, now)
                })
                .collect(),
            Err(e) => vec![rejected(
                body,
                &source,
                now,
                Rejection::malformed_json(format!(
                    "malformed JSON: a batch must be a JSON array of CloudEvents: {e}"
                )),
            )],
        }
    } else {
        vec![Envelope::cdevent(body, &source, now)]
    };
    Ok(accept(&r, envelopes).await)
}

/// A binary-mode CloudEvent as the equivalent structured one: the attributes from the `ce-*`
/// headers, and the body, byte for byte, as `data`.
fn binary_mode(headers: &HeaderMap, body: Bytes, source: &str, now: i64) -> Envelope {
    let mut attrs = serde_json::Map::new();
    for (name, value) in headers {
        let name = name.as_str();
        let key = match name.strip_prefix("ce-") {
            // The body is the data; an attribute of that name would make a second `data`.
            Some(k @ ("data" | "data_base64")) => {
                return rejected(
                    body.clone(),
                    source,
                    now,
                    Rejection::invalid(format!(
                        "the ce-{k} header is not a CloudEvents attribute: in binary mode the HTTP body is the event's data"
                    )),
                );
            }
            Some(k) => k,
            None if name == "traceparent" || name == "tracestate" => name,
            None => continue,
        };
        if let Ok(v) = value.to_str() {
            attrs.insert(key.to_string(), v.into());
        }
    }
    if let Some(ct) = header_str(headers, header::CONTENT_TYPE.as_str()) {
        attrs.insert("datacontenttype".into(), ct.into());
    }
    let text = match std::str::from_utf8(&body) {
        Ok(t) => t,
        Err(e) => return rejected(body.clone(), source, now, Rejection::not_utf8(e)),
    };
    if let Err(e) = serde_json::from_str::<&serde_json::value::RawValue>(text) {
        return rejected(
            body.clone(),
            source,
            now,
            Rejection::malformed_json(format!(
                "malformed JSON: the body of a binary-mode CloudEvent must be the CDEvent as JSON: {e}"
            )),
        );
    }
    let mut structured = serde_json::Value::Object(attrs).to_string();
    structured.pop();
    if structured.len() > 1 {
        structured.push(',');
    }
    structured.push_str("\"data\":");
    structured.push_str(text.trim());
    structured.push('}');
    Envelope::cdevent(structured.into_bytes(), source, now)
}

/// An input the receiver refused, to be dead-lettered with its rejection.
fn rejected(body: Bytes, source: &str, now: i64, rejection: Rejection) -> Envelope {
    let mut env = Envelope::cdevent(body, source, now);
    env.rejected = Some(rejection);
    env
}

#[cfg(test)]
mod tests;
