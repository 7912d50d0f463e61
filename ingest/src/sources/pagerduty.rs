//! PagerDuty Webhooks v3: `POST /webhooks/pagerduty`, authenticated by `X-PagerDuty-Signature`
//! (one or more comma-separated `v1=<hex>`, the HMAC-SHA256 of the body under the
//! subscription's signing secret; several during a rotation) against the
//! `--pagerduty-secret`s. With none configured the route answers 404.
//!
//! One event per request, `{"event": {id, event_type, resource_type, occurred_at, data}}`; its
//! `id` is the row's `event_id`, so a retry is a duplicate. `incident.triggered` is
//! `incident.detected`, `incident.acknowledged` `incident.acknowledged`, `incident.resolved`
//! `incident.resolved`, any other incident event `pagerduty.incident.<what>` (for example
//! `reopened`, `priority_updated`), all of the incident `data.id` at `occurred_at`. The service
//! is the PagerDuty service's name, or what `[incidents.services]` maps its name or id to.
//! Events of other resources are stored as `pagerduty.<resource>.<what>`; `pagey.ping` is
//! answered and not stored.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use cdlake_schemas::Origin;
use cdlake_schemas::cdevents::Rejection;

use super::alerting::{Incident, Phase, hex_signature_ok};
use super::receive::{ApiError, Limited, accept, header_str};
use super::webhook::{at, json_object, str_at, time_at, token};
use super::{Normalised, Receivers, Rules, Source};
use crate::envelope::Envelope;

/// The route.
pub const ROUTE: &str = "/webhooks/pagerduty";

pub(super) const SOURCE: Source = Source {
    origin: Origin::Pagerduty,
    route: ROUTE,
    // PagerDuty's own SDK reads at most 2 MB.
    body_limit: 4 << 20,
    handler: || post(receive),
    normalise: |env, rules, at| normalise(&env.body, rules, at),
};

/// Whether `header` (`v1=<hex>[,v1=<hex>…]`) holds the HMAC-SHA256 of `body` under one of
/// `secrets`. Entries of other versions are skipped.
pub fn signature_ok(secrets: &[String], header: &str, body: &[u8]) -> bool {
    header
        .split(',')
        .filter_map(|s| s.trim().strip_prefix("v1="))
        .any(|sig| hex_signature_ok(secrets, sig, &[body]))
}

async fn receive(
    State(r): State<Arc<Receivers>>,
    headers: HeaderMap,
    Limited(body): Limited,
) -> Result<Response, ApiError> {
    if r.pagerduty_secrets.is_empty() {
        return Err(ApiError::NotConfigured(
            "POST /webhooks/pagerduty is off: start cdlake with --pagerduty-secret (the webhook subscription's signing secret)",
        ));
    }
    let Some(signature) = header_str(&headers, "x-pagerduty-signature") else {
        return Err(r.unauthorized(
            Origin::Pagerduty,
            "missing X-PagerDuty-Signature: send Webhooks v3 from a subscription whose signing secret is given with --pagerduty-secret",
        ));
    };
    if !signature_ok(&r.pagerduty_secrets, signature, &body) {
        return Err(r.unauthorized(
            Origin::Pagerduty,
            "X-PagerDuty-Signature does not match the body under any configured secret: check the subscription's signing secret against --pagerduty-secret",
        ));
    }
    let delivery = header_str(&headers, "x-webhook-id").unwrap_or_default();
    let env = Envelope::webhook(Origin::Pagerduty, "", delivery, ROUTE, body);
    Ok(accept(&r, vec![env]).await)
}

/// Normalise one Webhooks v3 delivery.
pub fn normalise(body: &[u8], rules: &Rules, ingested_at: i64) -> Result<Normalised, Rejection> {
    let (text, value) = json_object(body, "PagerDuty")?;
    let Some(event) = at(&value, &["event"]).filter(|e| e.is_object()) else {
        return Err(Rejection::missing(
            "PagerDuty webhook has no `event` object: send it from a Webhooks v3 subscription",
        ));
    };
    let event_type = str_at(event, &["event_type"])
        .ok_or_else(|| Rejection::missing("PagerDuty event has no `event_type`"))?;
    if event_type == "pagey.ping" {
        return Ok(Normalised::Ping);
    }
    let id =
        str_at(event, &["id"]).ok_or_else(|| Rejection::missing("PagerDuty event has no `id`"))?;
    let (resource, what) = event_type
        .split_once('.')
        .unwrap_or((event_type, "received"));
    let resource = str_at(event, &["resource_type"]).unwrap_or(resource);
    let time = time_at(event, &["occurred_at"]).unwrap_or(ingested_at);
    let data = at(event, &["data"]);
    let data_str = |path: &[&str]| data.and_then(|d| str_at(d, path));
    if resource != "incident" {
        let mut e = Incident {
            origin: Origin::Pagerduty,
            source: "pagerduty".into(),
            event_id: id.to_string(),
            incident_id: data_str(&["id"]).unwrap_or(id).to_string(),
            phase: Phase::Other(what.to_string()),
            time,
            service: None,
            environment: None,
            url: data_str(&["html_url"]).map(str::to_string),
            payload: text,
        }
        .into_event(ingested_at);
        let resource = token(resource);
        e.event_type = format!("pagerduty.{resource}.{}", e.predicate);
        e.subject = resource;
        return Ok(Normalised::Event(Box::new(e)));
    }
    let incident_id = data_str(&["id"])
        .ok_or_else(|| Rejection::missing("PagerDuty incident event has no `data.id`"))?;
    let phase = match what {
        "triggered" => Phase::Detected,
        "acknowledged" => Phase::Acknowledged,
        "resolved" => Phase::Resolved,
        other => Phase::Other(other.to_string()),
    };
    let incident = Incident {
        origin: Origin::Pagerduty,
        source: "pagerduty".into(),
        event_id: id.to_string(),
        incident_id: incident_id.to_string(),
        phase,
        time,
        service: rules.incidents.service(
            [
                data_str(&["service", "summary"]),
                data_str(&["service", "id"]),
            ]
            .into_iter()
            .flatten(),
        ),
        environment: rules.incidents.environment(None),
        url: data_str(&["html_url"]).map(str::to_string),
        payload: text,
    };
    Ok(Normalised::Event(Box::new(
        incident.into_event(ingested_at),
    )))
}

#[cfg(test)]
mod tests;
