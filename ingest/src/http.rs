//! HTTP receivers: GitHub and GitLab webhooks and the CloudEvents endpoint.
//!
//! Each request is authenticated (GitHub's HMAC signature, GitLab's token) before its body is
//! parsed, bounded by a per-route body limit, decoded into [`Envelope`]s and handed to a
//! [`Sink`]: JetStream (`cdlake receive`) or the in-process writer (`cdlake standalone`). A 2xx
//! answer means the sink confirmed the input: published and acknowledged by JetStream, or
//! committed to the store. Bad input is answered 4xx naming the problem and is dead-lettered.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use cdlake_schemas::Origin;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::envelope::Envelope;
use crate::ingester::{Outcome, now_micros};
use crate::metrics::{self, Metrics};
use crate::sink::{Item, Sink};
use crate::webhooks::Normalised;

/// GitHub's documented maximum payload (25 MB).
pub const GITHUB_BODY_LIMIT: usize = 25 << 20;
/// GitLab webhook bodies (25 MB, as GitHub).
pub const GITLAB_BODY_LIMIT: usize = 25 << 20;
/// CloudEvents requests, single or batch.
pub const EVENTS_BODY_LIMIT: usize = 16 << 20;
/// OTLP/HTTP trace requests as sent (compressed or not).
pub const TRACES_BODY_LIMIT: usize = 16 << 20;
/// Spans per envelope: a JetStream message stays well under nats-server's 1 MB default.
const SPANS_PER_MESSAGE: usize = 250;

/// Secrets and the sink shared by the receiver routes.
#[derive(Debug, Clone)]
pub struct Receivers {
    /// Where accepted input goes: JetStream (`cdlake receive`) or the in-process writer
    /// (`cdlake standalone`).
    pub sink: Arc<dyn Sink>,
    /// Accepted GitHub webhook secrets (several during a rotation); none: signatures unchecked.
    pub github_secrets: Vec<String>,
    /// Accepted GitLab webhook tokens; none: tokens unchecked.
    pub gitlab_tokens: Vec<String>,
    /// Spans one OTLP request may hold ([`crate::otlp::DEFAULT_MAX_SPANS`]).
    pub otlp_max_spans: usize,
    pub metrics: Arc<Metrics>,
}

/// The receiver routes: `POST /webhooks/github`, `POST /webhooks/gitlab`, `POST /api/v1/events`,
/// `POST /v1/traces` (OTLP/HTTP, protobuf or JSON, optionally gzip).
pub fn router(receivers: Receivers) -> Router {
    Router::new()
        .route(
            "/webhooks/github",
            post(github).layer(DefaultBodyLimit::max(GITHUB_BODY_LIMIT)),
        )
        .route(
            "/webhooks/gitlab",
            post(gitlab).layer(DefaultBodyLimit::max(GITLAB_BODY_LIMIT)),
        )
        .route(
            "/api/v1/events",
            post(events).layer(DefaultBodyLimit::max(EVENTS_BODY_LIMIT)),
        )
        .route(
            "/v1/traces",
            post(traces).layer(DefaultBodyLimit::max(TRACES_BODY_LIMIT)),
        )
        .with_state(Arc::new(receivers))
}

/// A JSON error answer `{"error": …}`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

#[allow(clippy::result_large_err)] // the error is the answer, built once per request
fn body_or_error(
    body: Result<Bytes, BytesRejection>,
    route: &str,
    limit: usize,
) -> Result<Bytes, Response> {
    body.map_err(|e| {
        let status = e.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            error(
                status,
                format!("the body exceeds the {} MB limit of {route}", limit >> 20),
            )
        } else {
            error(status, format!("reading the body: {e}"))
        }
    })
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

fn unauthorized(r: &Receivers, origin: Origin, message: String) -> Response {
    r.metrics.inc(
        metrics::REJECTED,
        &[("origin", origin.as_str()), ("reason", "unauthorized")],
    );
    error(StatusCode::UNAUTHORIZED, message)
}

/// Whether `signature` (`sha256=<hex>`) is the HMAC-SHA256 of `body` under one of `secrets`.
/// The comparison is constant-time.
pub fn github_signature_ok(secrets: &[String], signature: &str, body: &[u8]) -> bool {
    let Some(hex_sig) = signature.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    secrets.iter().any(|secret| {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
            return false;
        };
        mac.update(body);
        mac.verify_slice(&sig).is_ok()
    })
}

async fn github(
    State(r): State<Arc<Receivers>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let route = "/webhooks/github";
    let body = match body_or_error(body, route, GITHUB_BODY_LIMIT) {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    if !r.github_secrets.is_empty() {
        let Some(sig) = header_str(&headers, "x-hub-signature-256") else {
            return unauthorized(
                &r,
                Origin::Github,
                "missing X-Hub-Signature-256: set the webhook's secret to one given with --github-secret".into(),
            );
        };
        if !github_signature_ok(&r.github_secrets, sig, &body) {
            return unauthorized(
                &r,
                Origin::Github,
                "X-Hub-Signature-256 does not match the body under any configured secret: check the webhook's secret".into(),
            );
        }
    }
    let Some(kind) = header_str(&headers, "x-github-event") else {
        return error(StatusCode::BAD_REQUEST, "missing X-GitHub-Event header");
    };
    let Some(delivery) = header_str(&headers, "x-github-delivery") else {
        return error(StatusCode::BAD_REQUEST, "missing X-GitHub-Delivery header");
    };
    let env = Envelope::webhook(Origin::Github, kind, delivery, route, body);
    accept(&r, vec![env]).await
}

async fn gitlab(
    State(r): State<Arc<Receivers>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let route = "/webhooks/gitlab";
    let body = match body_or_error(body, route, GITLAB_BODY_LIMIT) {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    if !r.gitlab_tokens.is_empty() {
        let Some(token) = header_str(&headers, "x-gitlab-token") else {
            return unauthorized(
                &r,
                Origin::Gitlab,
                "missing X-Gitlab-Token: set the webhook's secret token to one given with --gitlab-token".into(),
            );
        };
        let ok = r
            .gitlab_tokens
            .iter()
            .any(|t| bool::from(t.as_bytes().ct_eq(token.as_bytes())));
        if !ok {
            return unauthorized(
                &r,
                Origin::Gitlab,
                "X-Gitlab-Token does not match any configured token: check the webhook's secret token".into(),
            );
        }
    }
    let kind = header_str(&headers, "x-gitlab-event").unwrap_or_default();
    let Some(delivery) = header_str(&headers, "idempotency-key")
        .or_else(|| header_str(&headers, "x-gitlab-event-uuid"))
        .or_else(|| header_str(&headers, "x-gitlab-webhook-uuid"))
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "missing X-Gitlab-Event-UUID (or Idempotency-Key) header: the delivery's identity",
        );
    };
    let env = Envelope::webhook(Origin::Gitlab, kind, delivery, route, body);
    accept(&r, vec![env]).await
}

/// CloudEvents HTTP binding: binary mode (`ce-*` headers, the body is the data), batch mode
/// (`application/cloudevents-batch+json`, or any JSON array) and structured mode (one JSON
/// object: a CloudEvent or a bare CDEvent).
async fn events(
    State(r): State<Arc<Receivers>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let route = "/api/v1/events";
    let body = match body_or_error(body, route, EVENTS_BODY_LIMIT) {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let source = format!("http:{route}");
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
                return error(StatusCode::BAD_REQUEST, "the batch is an empty JSON array");
            }
            Ok(items) => items
                .iter()
                .map(|raw| {
                    Envelope::cdevent(Bytes::copy_from_slice(raw.get().as_bytes()), &source, now)
                })
                .collect(),
            Err(e) => {
                let mut env = Envelope::cdevent(body, &source, now);
                env.rejected = Some(format!(
                    "malformed JSON: a batch must be a JSON array of CloudEvents: {e}"
                ));
                vec![env]
            }
        }
    } else {
        vec![Envelope::cdevent(body, &source, now)]
    };
    accept(&r, envelopes).await
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
                    format!(
                        "the ce-{k} header is not a CloudEvents attribute: in binary mode the HTTP body is the event's data"
                    ),
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
        Err(e) => return rejected(body.clone(), source, now, format!("not valid UTF-8: {e}")),
    };
    if let Err(e) = serde_json::from_str::<&serde_json::value::RawValue>(text) {
        return rejected(
            body.clone(),
            source,
            now,
            format!(
                "malformed JSON: the body of a binary-mode CloudEvent must be the CDEvent as JSON: {e}"
            ),
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

/// `POST /v1/traces`: OTLP/HTTP spans into the `spans` table. Bad input is answered 4xx
/// naming the problem (415 for another media type, 413 past the limits, 400 for a malformed
/// request) and dead-lettered; nothing of a rejected request is stored as spans.
async fn traces(
    State(r): State<Arc<Receivers>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    const ROUTE: &str = "/v1/traces";
    let origin = Origin::Otlp.as_str();
    let body = match body_or_error(body, ROUTE, TRACES_BODY_LIMIT) {
        Ok(b) => b,
        Err(resp) => {
            r.metrics.inc(
                metrics::REJECTED,
                &[("origin", origin), ("reason", "too large")],
            );
            return resp;
        }
    };
    let content_type = header_str(&headers, header::CONTENT_TYPE.as_str());
    let json_answer = content_type.is_some_and(|c| c.contains("json"));
    let now = now_micros();
    let spans = match crate::otlp::decode_limited(
        content_type,
        header_str(&headers, header::CONTENT_ENCODING.as_str()),
        &body,
        now,
        r.otlp_max_spans,
    ) {
        Ok(spans) => spans,
        Err(e) => {
            let reason = e.to_string();
            r.metrics.inc(metrics::RECEIVED, &[("origin", origin)]);
            r.metrics.inc(
                metrics::REJECTED,
                &[
                    ("origin", origin),
                    ("reason", metrics::reason_class(&reason)),
                ],
            );
            let mut env = Envelope::spans(&[], ROUTE, now);
            env.rejected = Some(reason.clone());
            env.body = body;
            if let Err(err) = r.sink.submit(vec![(env, None)]).await {
                tracing::warn!(error = %err, cause = %err.source, "Could not dead-letter a rejected OTLP request.");
            }
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
            return error(status, reason);
        }
    };
    r.metrics
        .add(metrics::RECEIVED, &[("origin", origin)], spans.len() as f64);
    let items: Vec<Item> = spans
        .chunks(SPANS_PER_MESSAGE)
        .map(|chunk| (Envelope::spans(chunk, ROUTE, now), None))
        .collect();
    if !items.is_empty()
        && let Err(e) = r.sink.submit(items).await
    {
        tracing::error!(error = %e, cause = %e.source, "Input not confirmed by the sink.");
        let mut resp = error(StatusCode::SERVICE_UNAVAILABLE, e.message);
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return resp;
    }
    let (content_type, body) = crate::otlp::response_body(json_answer);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}

fn rejected(body: Bytes, source: &str, now: i64, reason: String) -> Envelope {
    let mut env = Envelope::cdevent(body, source, now);
    env.rejected = Some(reason);
    env
}

/// Decode, answer pings, hand the rest to the sink and answer with the outcomes.
#[tracing::instrument(name = "receive", skip_all, fields(inputs = envelopes.len()))]
async fn accept(r: &Receivers, envelopes: Vec<Envelope>) -> Response {
    let now = now_micros();
    let mut items = Vec::with_capacity(envelopes.len());
    let mut pings = 0usize;
    for mut env in envelopes {
        let origin = env.origin.as_str();
        r.metrics.inc(metrics::RECEIVED, &[("origin", origin)]);
        match env.decode(now) {
            Ok(Normalised::Ping) => pings += 1,
            Ok(Normalised::Event(event)) => items.push((env, Some(event))),
            Err(rejection) => {
                r.metrics.inc(
                    metrics::REJECTED,
                    &[
                        ("origin", origin),
                        ("reason", metrics::reason_class(&rejection.0)),
                    ],
                );
                env.rejected = Some(rejection.0);
                items.push((env, None));
            }
        }
    }
    if items.is_empty() && pings > 0 {
        return (StatusCode::OK, axum::Json(json!({ "pong": true }))).into_response();
    }
    let reasons: Vec<(usize, String)> = items
        .iter()
        .enumerate()
        .filter_map(|(i, (e, _))| e.rejected.clone().map(|r| (i, r)))
        .collect();
    let outcomes = match r.sink.submit(items).await {
        Ok(o) => o,
        Err(e) if reasons.is_empty() => {
            tracing::error!(error = %e, cause = %e.source, "Input not confirmed by the sink.");
        let mut resp = error(StatusCode::SERVICE_UNAVAILABLE, e.message);
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            return resp;
        }
        Err(e) => {
            // The answer is a 400 anyway; the dead letters are best effort.
            tracing::warn!(error = %e, cause = %e.source, "Could not dead-letter rejected input.");
            Vec::new()
        }
    };
    let accepted = outcomes.iter().filter(|o| **o == Outcome::Accepted).count();
    let duplicate = outcomes
        .iter()
        .filter(|o| **o == Outcome::Duplicate)
        .count();
    if reasons.is_empty() {
        return (
            StatusCode::OK,
            axum::Json(json!({ "accepted": accepted, "duplicate": duplicate })),
        )
            .into_response();
    }
    let rejected: Vec<_> = reasons
        .iter()
        .map(|(i, reason)| json!({ "index": i, "reason": reason }))
        .collect();
    let first = &reasons[0].1;
    let message = if reasons.len() == 1 {
        first.clone()
    } else {
        format!("{} inputs rejected; the first: {first}", reasons.len())
    };
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({
            "error": message,
            "accepted": accepted,
            "duplicate": duplicate,
            "rejected": rejected,
        })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn github_signatures_accept_any_configured_secret() {
        let body = br#"{"zen":"Keep it logically awesome."}"#;
        let secrets = vec!["old".to_string(), "new".to_string()];
        assert!(github_signature_ok(&secrets, &sign("old", body), body));
        assert!(github_signature_ok(&secrets, &sign("new", body), body));
        assert!(!github_signature_ok(&secrets, &sign("other", body), body));
        assert!(!github_signature_ok(&secrets, &sign("new", body), b"{}"));
        assert!(!github_signature_ok(&secrets, "sha1=abc", body));
        assert!(!github_signature_ok(&secrets, "sha256=zz", body));
    }

    #[test]
    fn binary_mode_becomes_structured_with_the_body_as_data() {
        let mut headers = HeaderMap::new();
        headers.insert("ce-specversion", HeaderValue::from_static("1.0"));
        headers.insert("ce-id", HeaderValue::from_static("42"));
        headers.insert("ce-source", HeaderValue::from_static("/ci"));
        headers.insert(
            "ce-type",
            HeaderValue::from_static("dev.cdevents.service.deployed.0.3.0"),
        );
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let body = Bytes::from_static(br#"{"context": {"id": "42"}, "subject": {"id": "cart"}}"#);
        let env = binary_mode(&headers, body, "test", 0);
        assert_eq!(env.rejected, None);
        let v: serde_json::Value = serde_json::from_slice(&env.body).unwrap();
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["source"], "/ci");
        assert_eq!(v["data"]["subject"]["id"], "cart");
        assert!(
            std::str::from_utf8(&env.body)
                .unwrap()
                .contains(r#""data":{"context": {"id": "42"}, "subject": {"id": "cart"}}"#)
        );

        let bad = binary_mode(&headers, Bytes::from_static(b"{nope"), "test", 0);
        assert!(bad.rejected.unwrap().starts_with("malformed JSON"));

        headers.insert("ce-data", HeaderValue::from_static("{}"));
        let body = Bytes::from_static(br#"{"context": {"id": "42"}}"#);
        let twice = binary_mode(&headers, body, "test", 0);
        assert!(twice.rejected.unwrap().contains("ce-data header"));
    }
}
