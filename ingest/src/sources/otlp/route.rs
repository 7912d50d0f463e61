//! `POST /v1/traces`: OTLP/HTTP spans into the `spans` table. Bad input is answered 4xx
//! naming the problem (415 for another media type, 413 past the limits, 400 for a malformed
//! request) and dead-lettered; nothing of a rejected request is stored as spans.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use cdlake_schemas::Origin;
use cdlake_schemas::cdevents::{Reason, Rejection};

use super::{decode_limited, response_body};
use crate::envelope::Envelope;
use crate::ingester::now_micros;
use crate::metrics;
use crate::sink::Item;
use crate::sources::receive::{ApiError, Limited, header_str};
use crate::sources::{Normalised, Receivers, Source};

/// The route.
pub const ROUTE: &str = "/v1/traces";
/// Spans per envelope: a JetStream message stays well under nats-server's 1 MB default.
const SPANS_PER_MESSAGE: usize = 250;

pub(in crate::sources) const SOURCE: Source = Source {
    origin: Origin::Otlp,
    route: ROUTE,
    // As sent (compressed or not).
    body_limit: 16 << 20,
    handler: || post(receive),
    normalise: spans_of,
};

/// The spans of a batch this route made ([`Envelope::spans`]).
fn spans_of(
    env: &Envelope,
    _: &crate::sources::Rules,
    _ingested_at: i64,
) -> Result<Normalised, Rejection> {
    serde_json::from_slice(&env.body)
        .map(Normalised::Spans)
        .map_err(|e| Rejection::invalid(format!("malformed span batch: {e}")))
}

async fn receive(
    State(r): State<Arc<Receivers>>,
    headers: HeaderMap,
    body: Result<Limited, ApiError>,
) -> Result<Response, ApiError> {
    let origin = Origin::Otlp.as_str();
    let Limited(body) = body.inspect_err(|_| {
        r.metrics.inc(
            metrics::REJECTED,
            &[("origin", origin), ("reason", Reason::TooLarge.as_str())],
        );
    })?;
    let content_type = header_str(&headers, header::CONTENT_TYPE.as_str());
    let json_answer = content_type.is_some_and(|c| c.contains("json"));
    let now = now_micros();
    let spans = match decode_limited(
        content_type,
        header_str(&headers, header::CONTENT_ENCODING.as_str()),
        &body,
        now,
        r.otlp_max_spans,
    ) {
        Ok(spans) => spans,
        Err(e) => {
            r.metrics.inc(metrics::RECEIVED, &[("origin", origin)]);
            r.metrics.inc(
                metrics::REJECTED,
                &[("origin", origin), ("reason", e.reason().as_str())],
            );
            let mut env = Envelope::spans(&[], ROUTE, now);
            env.rejected = Some(Rejection::new(e.reason(), e.to_string()));
            env.body = body;
            if let Err(err) = r.sink.submit(vec![(env, None)]).await {
                tracing::warn!(error = %err, cause = %err.source, "Could not dead-letter a rejected OTLP request.");
            }
            return Err(e.into());
        }
    };
    r.metrics
        .add(metrics::RECEIVED, &[("origin", origin)], spans.len() as f64);
    let items: Vec<Item> = spans
        .chunks(SPANS_PER_MESSAGE)
        .map(|chunk| (Envelope::spans(chunk, ROUTE, now), None))
        .collect();
    if !items.is_empty() {
        r.sink.submit(items).await?;
    }
    let (content_type, body) = response_body(json_answer);
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response())
}
