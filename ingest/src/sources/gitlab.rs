//! GitLab webhooks: `POST /webhooks/gitlab`, authenticated by the `X-Gitlab-Token` being one of
//! the `--gitlab-token`s (compared in constant time), normalised by [`normalise`].

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use cdlake_schemas::Origin;
use subtle::ConstantTimeEq;

use super::receive::{ApiError, Limited, accept, header_str};
use super::{Receivers, Source};
use crate::envelope::Envelope;

pub mod backfill;
mod fact;
mod normalise;

pub use normalise::normalise;

/// The route.
pub const ROUTE: &str = "/webhooks/gitlab";

pub(super) const SOURCE: Source = Source {
    origin: Origin::Gitlab,
    route: ROUTE,
    // As GitHub's.
    body_limit: 25 << 20,
    handler: || post(receive),
    normalise: |env, _, at| normalise(&env.kind, &env.delivery, &env.body, at),
};

async fn receive(
    State(r): State<Arc<Receivers>>,
    headers: HeaderMap,
    Limited(body): Limited,
) -> Result<Response, ApiError> {
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
