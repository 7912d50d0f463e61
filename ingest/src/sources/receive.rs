//! What every receiver route shares: the secrets and the sink, the [`ApiError`] answers,
//! headers, and handing decoded envelopes to the sink.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cdlake_schemas::Origin;
use cdlake_schemas::cdevents::{Reason, Rejection};
use serde_json::json;

use super::{ALL, Normalised, Rules, normalise_with};
use crate::envelope::Envelope;
use crate::ingester::{Outcome, now_micros};
use crate::metrics::{self, Metrics};
use crate::sink::{Sink, SinkError};

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
    /// Bearer tokens or basic-auth passwords of `POST /webhooks/alertmanager` (Alertmanager's
    /// `http_config`, Grafana's webhook contact point); none and no Grafana secret: 404.
    pub alertmanager_tokens: Vec<String>,
    /// Grafana Alerting HMAC secrets, checked on `/webhooks/alertmanager` when Grafana signs.
    pub grafana_secrets: Vec<String>,
    /// PagerDuty Webhooks v3 signing secrets; none: `POST /webhooks/pagerduty` answers 404.
    pub pagerduty_secrets: Vec<String>,
    /// Bearer tokens or basic-auth passwords of `POST /webhooks/opsgenie`; none: 404.
    pub opsgenie_tokens: Vec<String>,
    /// incident.io signing secrets (`whsec_…`); none: `POST /webhooks/incidentio` answers 404.
    pub incidentio_secrets: Vec<String>,
    /// Spans one OTLP request may hold ([`super::otlp::DEFAULT_MAX_SPANS`]).
    pub otlp_max_spans: usize,
    /// What normalising is configured with.
    pub rules: Arc<Rules>,
    pub metrics: Arc<Metrics>,
}

/// A JSON error answer `{"error": …}`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

/// Why a receiver did not take a request, and the answer: a status and `{"error": …}` saying
/// what failed and what to do. Internal causes go to the log, not into the answer.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body could not be read: 413 past the route's limit, else the reader's status.
    #[error("reading the body of {route}: {rejection}")]
    Body {
        route: String,
        /// The route's limit, when it is a source's.
        limit: Option<usize>,
        rejection: BytesRejection,
    },
    /// No or a wrong signature or token (401).
    #[error("{0}")]
    Unauthorized(String),
    /// A receiver whose secret is not configured (404).
    #[error("{0}")]
    NotConfigured(&'static str),
    /// A header the route needs is missing, or the request is not what the route takes (400).
    #[error("{0}")]
    BadRequest(&'static str),
    /// An OTLP request refused (415, 413 or 400).
    #[error(transparent)]
    Otlp(#[from] super::otlp::OtlpError),
    /// The sink did not confirm the input (503, with Retry-After).
    #[error(transparent)]
    Unavailable(#[from] SinkError),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Body { rejection, .. } => rejection.status(),
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotConfigured(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Otlp(e) => {
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST)
            }
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            ApiError::Body {
                route,
                limit: Some(limit),
                ..
            } if status == StatusCode::PAYLOAD_TOO_LARGE => error(
                status,
                format!("the body exceeds the {} MB limit of {route}", *limit >> 20),
            ),
            ApiError::Body { rejection, .. } => {
                error(status, format!("reading the body: {rejection}"))
            }
            ApiError::Unavailable(e) => {
                tracing::error!(error = %e, cause = %e.source, "Input not confirmed by the sink.");
                let mut resp = error(status, e.message);
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                resp
            }
            other => error(status, other.to_string()),
        }
    }
}

/// The body of a request to a source's route, read within the route's limit
/// ([`super::Source::body_limit`]); past it the answer is a 413 naming the limit.
pub(super) struct Limited(pub(super) Bytes);

impl<S: Send + Sync> FromRequest<S> for Limited {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let route = req.uri().path().to_string();
        Bytes::from_request(req, state)
            .await
            .map(Limited)
            .map_err(|rejection| ApiError::Body {
                limit: ALL.iter().find(|s| s.route == route).map(|s| s.body_limit),
                route,
                rejection,
            })
    }
}

/// A header's trimmed value; `None` when absent, empty or not text.
pub(super) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

impl Receivers {
    /// A 401 answer, counted as a rejection of `origin`.
    pub(super) fn unauthorized(&self, origin: Origin, message: impl Into<String>) -> ApiError {
        self.metrics.inc(
            metrics::REJECTED,
            &[
                ("origin", origin.as_str()),
                ("reason", Reason::Unauthorized.as_str()),
            ],
        );
        ApiError::Unauthorized(message.into())
    }
}

/// Decode, answer pings, hand the rest to the sink with their events and answer with the
/// outcomes.
#[tracing::instrument(name = "receive", skip_all, fields(inputs = envelopes.len()))]
pub(super) async fn accept(r: &Receivers, envelopes: Vec<Envelope>) -> Response {
    let now = now_micros();
    let mut items = Vec::with_capacity(envelopes.len());
    let mut pings = 0usize;
    for mut env in envelopes {
        let origin = env.origin.as_str();
        r.metrics.inc(metrics::RECEIVED, &[("origin", origin)]);
        let normalised = normalise_with(&env, &r.rules, now).and_then(|n| match n {
            Normalised::Spans(_) => Err(Rejection::invalid(
                "OTLP spans are not carried as events; send them to POST /v1/traces",
            )),
            n => Ok(n),
        });
        match normalised {
            Ok(Normalised::Ping) => pings += 1,
            Ok(Normalised::Event(event)) => items.push((env, Some(event))),
            Ok(Normalised::Spans(_)) => {}
            Err(rejection) => {
                r.metrics.inc(
                    metrics::REJECTED,
                    &[("origin", origin), ("reason", rejection.reason.as_str())],
                );
                env.rejected = Some(rejection);
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
        .filter_map(|(i, (e, _))| e.rejected.as_ref().map(|r| (i, r.message.clone())))
        .collect();
    let outcomes = match r.sink.submit(items).await {
        Ok(o) => o,
        Err(e) if reasons.is_empty() => return ApiError::from(e).into_response(),
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
