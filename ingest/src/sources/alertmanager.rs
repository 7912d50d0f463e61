//! Prometheus Alertmanager's webhook (payload version 4) and Grafana Alerting's webhook contact
//! point (the same shape plus extras, version 1): `POST /webhooks/alertmanager`.
//!
//! Authentication: `Authorization: Bearer <token>` or HTTP Basic auth whose password is one of
//! the `--alertmanager-token`s, as Alertmanager's `http_config` (and Grafana's contact point)
//! send; or, when `--grafana-secret` is set and the request carries
//! `X-Grafana-Alerting-Signature`, Grafana's HMAC-SHA256 (hex) of the body, or of
//! `<timestamp>:<body>` when `X-Grafana-Alerting-Timestamp` is sent (then at most five minutes
//! old). With neither configured the route answers 404.
//!
//! A notification is a group of alerts; each alert is an incident, identified by its
//! fingerprint and start (`<fingerprint>@<startsAt>`; the fingerprint computed from the labels
//! as Alertmanager does when the sender omits it). A firing alert is `incident.detected` at
//! its `startsAt`, a resolved one `incident.resolved` at its `endsAt` (the receiver's clock when
//! the sender gives none). Alertmanager repeats a firing notification every `repeat_interval`:
//! the repeat has the same identity, so it is a duplicate. The receiver splits a group into one
//! input per alert, each kept as the group's fields with that one alert. Rows from Grafana
//! (signed, or carrying `orgId`) have origin `grafana`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use bytes::Bytes;
use cdlake_schemas::Origin;
use cdlake_schemas::cdevents::Rejection;
use serde_json::Value;
use serde_json::value::RawValue;

use super::alerting::{Incident, Phase, fresh, hex_signature_ok, token_ok};
use super::receive::{ApiError, Limited, accept, header_str};
use super::webhook::{at, json_object, parse_time, str_at};
use super::{Normalised, Receivers, Rules, Source};
use crate::envelope::Envelope;
use crate::ingester::now_micros;

/// The route.
pub const ROUTE: &str = "/webhooks/alertmanager";

/// A group of many alerts is large; Alertmanager sends all of a group's alerts at once unless
/// `max_alerts` is set.
const BODY_LIMIT: usize = 16 << 20;

pub(super) const SOURCE: Source = Source {
    origin: Origin::Alertmanager,
    route: ROUTE,
    body_limit: BODY_LIMIT,
    handler: || post(receive),
    normalise: |env, rules, at| normalise(Origin::Alertmanager, &env.body, rules, at),
};

/// Grafana Alerting: the same route and handler.
pub(super) const GRAFANA: Source = Source {
    origin: Origin::Grafana,
    normalise: |env, rules, at| normalise(Origin::Grafana, &env.body, rules, at),
    ..SOURCE
};

/// Bytes the group fields may take, copied into every alert of a split group.
const SPLIT_BUDGET: usize = 64 << 20;

/// The group fields an alert keeps when all of them would not fit [`SPLIT_BUDGET`].
const SMALL_GROUP_FIELDS: &[&str] = &[
    "version",
    "status",
    "receiver",
    "externalURL",
    "groupKey",
    "orgId",
    "truncatedAlerts",
];

/// Grafana's default signature header, and the timestamp header its tests use.
const GRAFANA_SIGNATURE: &str = "x-grafana-alerting-signature";
const GRAFANA_TIMESTAMP: &str = "x-grafana-alerting-timestamp";

async fn receive(
    State(r): State<Arc<Receivers>>,
    headers: HeaderMap,
    Limited(body): Limited,
) -> Result<Response, ApiError> {
    if r.alertmanager_tokens.is_empty() && r.grafana_secrets.is_empty() {
        return Err(ApiError::NotConfigured(
            "POST /webhooks/alertmanager is off: start cdlake with --alertmanager-token (the bearer token or basic-auth password of Alertmanager's http_config or Grafana's contact point) or --grafana-secret",
        ));
    }
    let signed_by_grafana = authenticate(&r, &headers, &body)?;
    let grafana = signed_by_grafana
        || header_str(&headers, "user-agent").is_some_and(|ua| ua.starts_with("Grafana"));
    let envelopes = split(&body)
        .map(|(from_grafana, alerts)| {
            let origin = if grafana || from_grafana {
                Origin::Grafana
            } else {
                Origin::Alertmanager
            };
            alerts
                .into_iter()
                .map(|alert| Envelope::webhook(origin, "", "", ROUTE, alert))
                .collect()
        })
        // What cannot be split is normalised whole, and rejected with the reason.
        .unwrap_or_else(|_| vec![Envelope::webhook(Origin::Alertmanager, "", "", ROUTE, body)]);
    Ok(accept(&r, envelopes).await)
}

/// Check the Grafana signature when one is sent and Grafana secrets are configured, else the
/// token. `Ok(true)`: Grafana's signature authenticated the request.
fn authenticate(r: &Receivers, headers: &HeaderMap, body: &[u8]) -> Result<bool, ApiError> {
    let signature = header_str(headers, GRAFANA_SIGNATURE);
    if let (false, Some(signature)) = (r.grafana_secrets.is_empty(), signature) {
        let ok = match header_str(headers, GRAFANA_TIMESTAMP) {
            Some(ts) => {
                fresh(ts, now_micros(), "X-Grafana-Alerting-Timestamp")
                    .map_err(|m| r.unauthorized(Origin::Grafana, m))?;
                hex_signature_ok(&r.grafana_secrets, signature, &[ts.as_bytes(), b":", body])
            }
            None => hex_signature_ok(&r.grafana_secrets, signature, &[body]),
        };
        return if ok {
            Ok(true)
        } else {
            Err(r.unauthorized(
                Origin::Grafana,
                "X-Grafana-Alerting-Signature does not match the body under any configured secret: check the contact point's HMAC secret against --grafana-secret",
            ))
        };
    }
    if token_ok(&r.alertmanager_tokens, headers) {
        return Ok(false);
    }
    Err(r.unauthorized(
        Origin::Alertmanager,
        if r.alertmanager_tokens.is_empty() {
            "missing X-Grafana-Alerting-Signature: set the contact point's HMAC secret to one given with --grafana-secret"
        } else if header_str(headers, "authorization").is_none() {
            "missing Authorization: set http_config.authorization.credentials (Bearer) or basic_auth.password in Alertmanager's webhook_config to one given with --alertmanager-token"
        } else {
            "Authorization does not carry any configured --alertmanager-token (Bearer token or basic-auth password)"
        },
    ))
}

/// Split a group notification into one body per alert: the group's other fields with
/// `"alerts": [<that alert>]`, each alert's bytes as sent. Also says whether the group is
/// Grafana's (it carries `orgId`).
fn split(body: &[u8]) -> Result<(bool, Vec<Bytes>), ()> {
    let text = std::str::from_utf8(body).map_err(drop)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let group: BTreeMap<String, Box<RawValue>> = serde_json::from_str(text).map_err(drop)?;
    let alerts: Vec<Box<RawValue>> =
        serde_json::from_str(group.get("alerts").ok_or(())?.get()).map_err(drop)?;
    if alerts.is_empty() {
        return Err(());
    }
    let fields = |keep: &dyn Fn(&str) -> bool| -> Result<String, ()> {
        let mut common = String::from("{");
        for (key, value) in group.iter().filter(|(k, _)| *k != "alerts" && keep(k)) {
            common.push_str(&serde_json::to_string(key).map_err(drop)?);
            common.push(':');
            common.push_str(value.get());
            common.push(',');
        }
        Ok(common)
    };
    // Each alert keeps the group's fields, unless that would multiply a large group (Grafana's
    // `message` renders every alert): then only the small identifying ones, or none.
    let fits = |common: &str| common.len().saturating_mul(alerts.len()) <= SPLIT_BUDGET;
    let mut common = fields(&|_| true)?;
    if !fits(&common) {
        common = fields(&|k| SMALL_GROUP_FIELDS.contains(&k))?;
    }
    if !fits(&common) {
        common = String::from("{");
    }
    let bodies = alerts
        .iter()
        .map(|alert| Bytes::from(format!("{common}\"alerts\":[{}]}}", alert.get())))
        .collect();
    Ok((group.contains_key("orgId"), bodies))
}

/// Normalise one alert (a group notification holding exactly one alert, as the receiver
/// splits them) into its incident row.
pub fn normalise(
    origin: Origin,
    body: &[u8],
    rules: &Rules,
    ingested_at: i64,
) -> Result<Normalised, Rejection> {
    let tool = if origin == Origin::Grafana {
        "Grafana Alerting"
    } else {
        "Alertmanager"
    };
    let (text, group) = json_object(body, tool)?;
    let alert = match at(&group, &["alerts"]).and_then(Value::as_array) {
        Some(alerts) if alerts.len() == 1 => &alerts[0],
        Some(alerts) if alerts.is_empty() => {
            return Err(Rejection::invalid(format!(
                "{tool} notification has no alerts"
            )));
        }
        Some(alerts) => {
            return Err(Rejection::invalid(format!(
                "{tool} input holds {} alerts; the receiver splits a notification into one input per alert",
                alerts.len()
            )));
        }
        None => {
            return Err(Rejection::missing(format!(
                "{tool} notification has no `alerts` array: is this a webhook_config (payload version 4) or a Grafana webhook contact point?"
            )));
        }
    };
    let status = str_at(alert, &["status"])
        .or_else(|| str_at(&group, &["status"]))
        .ok_or_else(|| Rejection::missing(format!("{tool} alert has no `status`")))?;
    let phase = match status {
        "firing" => Phase::Detected,
        "resolved" => Phase::Resolved,
        other => {
            return Err(Rejection::invalid(format!(
                "{tool} alert status {other:?} is neither \"firing\" nor \"resolved\""
            )));
        }
    };
    let starts = str_at(alert, &["startsAt"])
        .and_then(real_time)
        .ok_or_else(|| Rejection::missing(format!("{tool} alert has no valid `startsAt`")))?;
    let labels = at(alert, &["labels"])
        .filter(|l| l.is_object())
        .or_else(|| at(&group, &["commonLabels"]))
        .and_then(Value::as_object);
    let label = |names: &[String]| {
        names
            .iter()
            .find_map(|n| labels?.get(n)?.as_str().filter(|v| !v.trim().is_empty()))
    };
    let fingerprint = str_at(alert, &["fingerprint"])
        .map(str::to_string)
        .unwrap_or_else(|| fingerprint(labels));
    let incident_id = format!("{fingerprint}@{}", rfc3339(starts));
    let time = match phase {
        Phase::Resolved => str_at(alert, &["endsAt"])
            .and_then(real_time)
            .filter(|&end| end >= starts)
            .unwrap_or(ingested_at),
        _ => starts,
    };
    let incident = Incident {
        origin,
        source: origin.as_str().to_string(),
        event_id: format!("{incident_id}/{status}"),
        incident_id,
        phase,
        time,
        service: label(&rules.incidents.service_labels).and_then(|s| rules.incidents.service([s])),
        environment: rules
            .incidents
            .environment(label(&rules.incidents.environment_labels)),
        url: str_at(alert, &["generatorURL"]).map(str::to_string),
        payload: text,
    };
    Ok(Normalised::Event(Box::new(
        incident.into_event(ingested_at),
    )))
}

/// µs since the epoch as RFC 3339 UTC, with as many fraction digits as it has.
fn rfc3339(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| micros.to_string())
}

/// A time Alertmanager writes, or `None` for its zero time (`0001-01-01T00:00:00Z`: not set).
fn real_time(s: &str) -> Option<i64> {
    parse_time(s).filter(|&t| t > 0)
}

/// An alert's fingerprint as Alertmanager computes it from its labels: FNV-1a (64 bit) over
/// the labels sorted by name, each name and value followed by the byte 0xff; 16 hex digits.
pub fn fingerprint(labels: Option<&serde_json::Map<String, Value>>) -> String {
    const OFFSET: u64 = 14_695_981_039_346_656_037;
    const PRIME: u64 = 1_099_511_628_211;
    let mut pairs: Vec<(&str, &str)> = labels
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)))
        .collect();
    pairs.sort_unstable();
    let mut hash = OFFSET;
    for (name, value) in pairs {
        for part in [name.as_bytes(), &[0xff], value.as_bytes(), &[0xff]] {
            for &b in part {
                hash ^= u64::from(b);
                hash = hash.wrapping_mul(PRIME);
            }
        }
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests;
