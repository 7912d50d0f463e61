//! incident.io webhooks: `POST /webhooks/incidentio`, signed the Standard Webhooks way (incident.io
//! sends through Svix): `webhook-signature` holds space-separated `v1,<base64>` HMAC-SHA256s
//! of `<webhook-id>.<webhook-timestamp>.<body>` under the secret (`whsec_<base64 key>`), checked
//! against the `--incidentio-secret`s; `webhook-timestamp` may be at most five minutes from
//! the receiver's clock, so a captured delivery cannot be replayed later. The `svix-*` header
//! names are read too. With no secret configured the route answers 404.
//!
//! The body is `{"event_type": T, T: payload}`; `webhook-id` is the row's `event_id` (a retry
//! repeats it). For `public_incident.*` events the incident is `payload.id`: created, or an
//! update while its status category is `triage`, `live` or `paused`, is `incident.detected` at
//! the incident's `created_at`; an update in `learning` or `closed` is `incident.resolved` at
//! `updated_at`; in `declined`, `merged` or `canceled` it is `incidentio.incident.<category>`.
//! The service and environment are the first value of the custom fields whose names contain
//! `[incidents] incidentio_service_field` / `incidentio_environment_field` (catalog entry name,
//! option or text). Other event types (`private_incident.*`, `public_alert.*`, …) are stored as
//! `incidentio.<kind>.<what>`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use cdlake_schemas::Origin;
use cdlake_schemas::cdevents::Rejection;
use serde_json::Value;
use subtle::ConstantTimeEq;

use super::alerting::{Incident, Phase, fresh, hmac_sha256};
use super::base64;
use super::receive::{ApiError, Limited, accept, header_str};
use super::webhook::{at, json_object, str_at, time_at, token};
use super::{Normalised, Receivers, Rules, Source};
use crate::envelope::Envelope;
use crate::ingester::now_micros;

/// The route.
pub const ROUTE: &str = "/webhooks/incidentio";

pub(super) const SOURCE: Source = Source {
    origin: Origin::Incidentio,
    route: ROUTE,
    body_limit: 4 << 20,
    handler: || post(receive),
    normalise: |env, rules, at| normalise(&env.delivery, &env.body, rules, at),
};

/// The key of a signing secret: the base64 after `whsec_`; an error saying what is wrong,
/// for the command line.
pub fn secret_key(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret
        .trim()
        .strip_prefix("whsec_")
        .unwrap_or(secret.trim());
    base64::decode(encoded)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| "an incident.io signing secret is `whsec_` and base64: copy it from the webhook endpoint's settings".to_string())
}

/// Whether `signatures` (space-separated `v1,<base64>`) holds the signature of `id`,
/// `timestamp` and `body` under one of `secrets`. Compared in constant time.
pub fn signature_ok(
    secrets: &[String],
    id: &str,
    timestamp: &str,
    body: &[u8],
    signatures: &str,
) -> bool {
    let presented: Vec<Vec<u8>> = signatures
        .split_whitespace()
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(base64::decode)
        .collect();
    secrets
        .iter()
        .filter_map(|s| secret_key(s).ok())
        .any(|key| {
            let mac = hmac_sha256(
                &key,
                &[id.as_bytes(), b".", timestamp.as_bytes(), b".", body],
            );
            presented.iter().any(|p| bool::from(mac.ct_eq(p)))
        })
}

/// A header under its Standard Webhooks name or its Svix one.
fn either<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    header_str(headers, &format!("webhook-{name}"))
        .or_else(|| header_str(headers, &format!("svix-{name}")))
}

async fn receive(
    State(r): State<Arc<Receivers>>,
    headers: HeaderMap,
    Limited(body): Limited,
) -> Result<Response, ApiError> {
    if r.incidentio_secrets.is_empty() {
        return Err(ApiError::NotConfigured(
            "POST /webhooks/incidentio is off: start cdlake with --incidentio-secret (the endpoint's whsec_… signing secret)",
        ));
    }
    let (Some(id), Some(timestamp), Some(signatures)) = (
        either(&headers, "id"),
        either(&headers, "timestamp"),
        either(&headers, "signature"),
    ) else {
        return Err(r.unauthorized(
            Origin::Incidentio,
            "missing webhook-id, webhook-timestamp or webhook-signature: send it from an incident.io webhook endpoint whose signing secret is given with --incidentio-secret",
        ));
    };
    fresh(timestamp, now_micros(), "webhook-timestamp")
        .map_err(|m| r.unauthorized(Origin::Incidentio, m))?;
    if !signature_ok(&r.incidentio_secrets, id, timestamp, &body, signatures) {
        return Err(r.unauthorized(
            Origin::Incidentio,
            "webhook-signature does not match under any configured secret: check the endpoint's signing secret against --incidentio-secret",
        ));
    }
    let env = Envelope::webhook(Origin::Incidentio, "", id, ROUTE, body);
    Ok(accept(&r, vec![env]).await)
}

/// The first value of the first custom field whose name contains `field` (case-insensitive):
/// a catalog entry's name, an option's value or text.
fn custom_field<'a>(incident: &'a Value, field: &str) -> Option<&'a str> {
    let field = field.trim().to_lowercase();
    if field.is_empty() {
        return None;
    }
    at(incident, &["custom_field_entries"])?
        .as_array()?
        .iter()
        .filter(|entry| {
            str_at(entry, &["custom_field", "name"])
                .is_some_and(|n| n.to_lowercase().contains(&field))
        })
        .find_map(|entry| {
            at(entry, &["values"])?.as_array()?.iter().find_map(|v| {
                str_at(v, &["value_catalog_entry", "name"])
                    .or_else(|| str_at(v, &["value_option", "value"]))
                    .or_else(|| str_at(v, &["value_text"]))
            })
        })
}

/// Normalise one delivery; `delivery` is its `webhook-id`.
pub fn normalise(
    delivery: &str,
    body: &[u8],
    rules: &Rules,
    ingested_at: i64,
) -> Result<Normalised, Rejection> {
    let (text, value) = json_object(body, "incident.io")?;
    let delivery = delivery.trim();
    if delivery.is_empty() {
        return Err(Rejection::missing(
            "incident.io delivery has no id: send the webhook-id header",
        ));
    }
    let event_type = str_at(&value, &["event_type"])
        .ok_or_else(|| Rejection::missing("incident.io webhook has no `event_type`"))?;
    let payload = at(&value, &[event_type]).filter(|p| p.is_object());
    let (kind, what) = event_type
        .split_once('.')
        .unwrap_or((event_type, "received"));
    let incident = match (kind, payload) {
        ("public_incident", Some(incident)) => incident,
        _ => {
            let mut e = Incident {
                origin: Origin::Incidentio,
                source: "incidentio".into(),
                event_id: delivery.to_string(),
                incident_id: payload
                    .and_then(|p| str_at(p, &["id"]))
                    .unwrap_or(delivery)
                    .to_string(),
                phase: Phase::Other(what.to_string()),
                time: payload
                    .and_then(|p| time_at(p, &["updated_at"]))
                    .unwrap_or(ingested_at),
                service: None,
                environment: None,
                url: payload
                    .and_then(|p| str_at(p, &["permalink"]))
                    .map(str::to_string),
                payload: text,
            }
            .into_event(ingested_at);
            let kind = token(kind);
            e.event_type = format!("incidentio.{kind}.{}", e.predicate);
            e.subject = kind;
            return Ok(Normalised::Event(Box::new(e)));
        }
    };
    let id = str_at(incident, &["id"]).ok_or_else(|| {
        Rejection::missing(format!("incident.io {event_type} has no incident `id`"))
    })?;
    let category = str_at(incident, &["incident_status", "category"]).unwrap_or("live");
    let created = time_at(incident, &["created_at"]);
    let updated = time_at(incident, &["updated_at"]);
    let (phase, time) = match category {
        "learning" | "closed" => (Phase::Resolved, updated.or(created)),
        "declined" | "merged" | "canceled" | "cancelled" => {
            (Phase::Other(category.to_string()), updated.or(created))
        }
        _ => (Phase::Detected, created.or(updated)),
    };
    let incident = Incident {
        origin: Origin::Incidentio,
        source: "incidentio".into(),
        event_id: delivery.to_string(),
        incident_id: id.to_string(),
        phase,
        time: time.unwrap_or(ingested_at),
        service: custom_field(incident, &rules.incidents.incidentio_service_field)
            .and_then(|s| rules.incidents.service([s])),
        environment: rules.incidents.environment(custom_field(
            incident,
            &rules.incidents.incidentio_environment_field,
        )),
        url: str_at(incident, &["permalink"]).map(str::to_string),
        payload: text,
    };
    Ok(Normalised::Event(Box::new(
        incident.into_event(ingested_at),
    )))
}

#[cfg(test)]
mod tests;
