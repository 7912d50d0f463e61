//! Opsgenie outgoing webhooks (the Webhook integration's alert actions):
//! `POST /webhooks/opsgenie`. Opsgenie does not sign; the integration sends a custom
//! `Authorization` header, `Bearer <token>` or Basic with a password, checked against the
//! `--opsgenie-token`s. With none configured the route answers 404.
//!
//! Each alert (`alert.alertId`) is an incident: `Create` is `incident.detected` at `createdAt`,
//! `Acknowledge` `incident.acknowledged`, `Close` `incident.resolved`, any other action
//! `opsgenie.incident.<action>`, each at the alert's `updatedAt` (Opsgenie writes milliseconds
//! in one field and nanoseconds in another; both are read). Opsgenie sends no delivery id: a
//! row is identified by the alert, the action and `updatedAt`, which a retry repeats. The
//! service is `alert.details.service` or a `service:<name>` tag, the environment
//! `alert.details.environment` (or `env`) or an `env:<x>` / `environment:<x>` tag.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use cdlake_schemas::Origin;
use cdlake_schemas::cdevents::Rejection;
use serde_json::Value;

use super::alerting::{Incident, Phase, epoch_number_micros, token_ok};
use super::receive::{ApiError, Limited, accept, header_str};
use super::webhook::{at, environment_label, json_object, label_names, parse_time, str_at};
use super::{Normalised, Receivers, Rules, Source};
use crate::envelope::Envelope;

/// The route.
pub const ROUTE: &str = "/webhooks/opsgenie";

pub(super) const SOURCE: Source = Source {
    origin: Origin::Opsgenie,
    route: ROUTE,
    body_limit: 4 << 20,
    handler: || post(receive),
    normalise: |env, rules, at| normalise(&env.body, rules, at),
};

async fn receive(
    State(r): State<Arc<Receivers>>,
    headers: HeaderMap,
    Limited(body): Limited,
) -> Result<Response, ApiError> {
    if r.opsgenie_tokens.is_empty() {
        return Err(ApiError::NotConfigured(
            "POST /webhooks/opsgenie is off: start cdlake with --opsgenie-token and send it from the integration as a custom Authorization header (Bearer <token>)",
        ));
    }
    if !token_ok(&r.opsgenie_tokens, &headers) {
        return Err(r.unauthorized(
            Origin::Opsgenie,
            if header_str(&headers, "authorization").is_none() {
                "missing Authorization: add the custom header `Authorization: Bearer <token>` to the Opsgenie Webhook integration, with a token given with --opsgenie-token"
            } else {
                "Authorization does not carry any configured --opsgenie-token (Bearer token or basic-auth password)"
            },
        ));
    }
    let env = Envelope::webhook(Origin::Opsgenie, "", "", ROUTE, body);
    Ok(accept(&r, vec![env]).await)
}

/// A time field: a number since the epoch in any unit, or a string.
fn time_of(v: &Value, key: &str) -> Option<(i64, String)> {
    match v.get(key)? {
        Value::Number(n) => {
            let n = n.as_i64()?;
            Some((epoch_number_micros(n)?, n.to_string()))
        }
        Value::String(s) => Some((parse_time(s)?, s.trim().to_string())),
        _ => None,
    }
}

/// The value of a `<key>:<value>` tag.
fn tag<'a>(tags: Option<&'a Value>, key: &str) -> Option<&'a str> {
    label_names(tags).find_map(|t| {
        let (k, v) = t.split_once(':')?;
        (k.trim().eq_ignore_ascii_case(key))
            .then_some(v.trim())
            .filter(|v| !v.is_empty())
    })
}

/// Normalise one alert action.
pub fn normalise(body: &[u8], rules: &Rules, ingested_at: i64) -> Result<Normalised, Rejection> {
    let (text, value) = json_object(body, "Opsgenie")?;
    let action = str_at(&value, &["action"]).ok_or_else(|| {
        Rejection::missing("Opsgenie webhook has no `action`: send it from a Webhook integration")
    })?;
    let Some(alert) = at(&value, &["alert"]).filter(|a| a.is_object()) else {
        return Err(Rejection::missing("Opsgenie webhook has no `alert` object"));
    };
    let alert_id = str_at(alert, &["alertId"])
        .ok_or_else(|| Rejection::missing("Opsgenie alert has no `alertId`"))?;
    let phase = match action {
        "Create" => Phase::Detected,
        "Acknowledge" => Phase::Acknowledged,
        "Close" => Phase::Resolved,
        other => Phase::Other(other.to_string()),
    };
    let created = time_of(alert, "createdAt");
    let updated = time_of(alert, "updatedAt");
    let time = match phase {
        Phase::Detected => created.as_ref().or(updated.as_ref()),
        _ => updated.as_ref().or(created.as_ref()),
    }
    .map_or(ingested_at, |(t, _)| *t);
    let stamp = updated.or(created).map(|(_, raw)| raw).unwrap_or_default();
    let details = |key: &str| at(alert, &["details", key]).and_then(Value::as_str);
    let tags = at(alert, &["tags"]);
    let service = details("service").or_else(|| tag(tags, "service"));
    let environment = details("environment")
        .or_else(|| details("env"))
        .map(str::to_string)
        .or_else(|| environment_label(label_names(tags)));
    let incident = Incident {
        origin: Origin::Opsgenie,
        source: "opsgenie".into(),
        event_id: format!("{alert_id}/{action}/{stamp}"),
        incident_id: alert_id.to_string(),
        phase,
        time,
        service: service.and_then(|s| rules.incidents.service([s])),
        environment: rules.incidents.environment(environment.as_deref()),
        url: None,
        payload: text,
    };
    Ok(Normalised::Event(Box::new(
        incident.into_event(ingested_at),
    )))
}

#[cfg(test)]
mod tests;
