//! GitLab webhooks: `POST /webhooks/gitlab`, authenticated by the `X-Gitlab-Token` being one of
//! the `--gitlab-token`s (compared in constant time), normalised by [`normalise`].

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{MethodRouter, post};
use cdlake_schemas::Origin;
use cdlake_schemas::cdevents::Rejection;
use subtle::ConstantTimeEq;

use super::receive::{ApiError, accept, header_str};
use super::{Normalised, Receivers, Source};
use crate::envelope::Envelope;

mod normalise;

pub use normalise::normalise;

/// The route.
pub const ROUTE: &str = "/webhooks/gitlab";
/// GitLab webhook bodies (25 MB, as GitHub).
pub const BODY_LIMIT: usize = 25 << 20;

pub(super) const SOURCE: Source = Source {
    origin: Origin::Gitlab,
    route: ROUTE,
    body_limit: BODY_LIMIT,
    handler: route,
    normalise: normalise_envelope,
};

fn route() -> MethodRouter<Arc<Receivers>> {
    post(receive)
}

fn normalise_envelope(env: &Envelope, ingested_at: i64) -> Result<Normalised, Rejection> {
    normalise(&env.kind, &env.delivery, &env.body, ingested_at)
}

async fn receive(
    State(r): State<Arc<Receivers>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = ApiError::body(ROUTE, BODY_LIMIT, body)?;
    if !r.gitlab_tokens.is_empty() {
        let Some(token) = header_str(&headers, "x-gitlab-token") else {
            return Err(r.unauthorized(
                Origin::Gitlab,
                "missing X-Gitlab-Token: set the webhook's secret token to one given with --gitlab-token",
            ));
        };
        let ok = r
            .gitlab_tokens
            .iter()
            .any(|t| bool::from(t.as_bytes().ct_eq(token.as_bytes())));
        if !ok {
            return Err(r.unauthorized(
                Origin::Gitlab,
                "X-Gitlab-Token does not match any configured token: check the webhook's secret token",
            ));
        }
    }
    let kind = header_str(&headers, "x-gitlab-event").unwrap_or_default();
    let delivery = header_str(&headers, "idempotency-key")
        .or_else(|| header_str(&headers, "x-gitlab-event-uuid"))
        .or_else(|| header_str(&headers, "x-gitlab-webhook-uuid"))
        .ok_or(ApiError::BadRequest(
            "missing X-Gitlab-Event-UUID (or Idempotency-Key) header: the delivery's identity",
        ))?;
    let env = Envelope::webhook(Origin::Gitlab, kind, delivery, ROUTE, body);
    Ok(accept(&r, vec![env]).await)
}

#[cfg(test)]
mod tests;
