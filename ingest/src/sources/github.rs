//! GitHub webhooks: `POST /webhooks/github`, authenticated by the `X-Hub-Signature-256` HMAC
//! of the body under one of the `--github-secret`s, normalised by [`normalise`].

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use cdlake_schemas::Origin;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::receive::{ApiError, Limited, accept, header_str};
use super::{Receivers, Source};
use crate::envelope::Envelope;

pub mod backfill;
mod fact;

pub(crate) use fact::stored_kind;
mod normalise;

pub use normalise::normalise;

/// The route.
pub const ROUTE: &str = "/webhooks/github";

pub(super) const SOURCE: Source = Source {
    origin: Origin::Github,
    route: ROUTE,
    // GitHub's documented maximum payload.
    body_limit: 25 << 20,
    handler: || post(receive),
    normalise: |env, _, at| normalise(&env.kind, &env.delivery, &env.body, at),
};

/// Whether `signature` (`sha256=<hex>`) is the HMAC-SHA256 of `body` under one of `secrets`.
/// The comparison is constant-time.
pub fn signature_ok(secrets: &[String], signature: &str, body: &[u8]) -> bool {
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

async fn receive(
    State(r): State<Arc<Receivers>>,
    headers: HeaderMap,
    Limited(body): Limited,
) -> Result<Response, ApiError> {
    if !r.github_secrets.is_empty() {
        let Some(sig) = header_str(&headers, "x-hub-signature-256") else {
            return Err(r.unauthorized(
                Origin::Github,
                "missing X-Hub-Signature-256: set the webhook's secret to one given with --github-secret",
            ));
        };
        if !signature_ok(&r.github_secrets, sig, &body) {
            return Err(r.unauthorized(
                Origin::Github,
                "X-Hub-Signature-256 does not match the body under any configured secret: check the webhook's secret",
            ));
        }
    }
    let kind = header_str(&headers, "x-github-event")
        .ok_or(ApiError::BadRequest("missing X-GitHub-Event header"))?;
    let delivery = header_str(&headers, "x-github-delivery")
        .ok_or(ApiError::BadRequest("missing X-GitHub-Delivery header"))?;
    let env = Envelope::webhook(Origin::Github, kind, delivery, ROUTE, body);
    Ok(accept(&r, vec![env]).await)
}

#[cfg(test)]
mod tests;
