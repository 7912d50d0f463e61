//! What the alerting and incident tools share on their way to `incident.*` rows:
//! [`super::alertmanager`] (also Grafana Alerting), [`super::pagerduty`], [`super::opsgenie`]
//! and [`super::incidentio`].
//!
//! Each tool's alert or incident becomes one incident (`subject_id`), and each of its
//! notifications one row: `incident.detected` when it fires or is opened, `incident.resolved`
//! when it is resolved or closed, `incident.acknowledged` kept as its own predicate, and any
//! other notification typed `<origin>.incident.<what>` (stored, not used by the DORA views).
//! A row's identity is what the tool repeats on a retry (PagerDuty's event id, incident.io's
//! `webhook-id`, an alert's fingerprint, start and state), so a redelivery is a duplicate.
//!
//! Service and environment come from the tool's own fields (Alertmanager's labels, PagerDuty's
//! service, incident.io's custom fields, Opsgenie's details and `key:value` tags), mapped by
//! the `[incidents]` table of `cdlake.toml` ([`IncidentRules`]). An incident that names no
//! environment is in `production` (configurable): a page from an alerting tool reports a
//! production problem unless it says otherwise, like an issue labelled `incident`.
//!
//! None of these tools signs the way GitHub does, so each route has its own check, and a route
//! whose secret is not configured answers 404: an incident source is opt-in.

use axum::http::HeaderMap;
use cdlake_schemas::{Event, Origin};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::base64;
use super::receive::header_str;
use super::webhook::{Meaning, token};

pub use cdlake_schemas::incidents::IncidentRules;

/// Where an incident's notification stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Phase {
    Detected,
    Acknowledged,
    Resolved,
    /// Any other notification (`priority_updated`, `addnote`, …): stored, typed
    /// `<origin>.incident.<what>`.
    Other(String),
}

/// One notification about an incident, before it is a row.
pub(super) struct Incident<'a> {
    pub(super) origin: Origin,
    /// `event_source`: the tool (and account, where the payload names one).
    pub(super) source: String,
    pub(super) event_id: String,
    /// The incident: `subject_id`.
    pub(super) incident_id: String,
    pub(super) phase: Phase,
    pub(super) time: i64,
    pub(super) service: Option<String>,
    pub(super) environment: Option<String>,
    pub(super) url: Option<String>,
    /// The raw payload, kept in the row.
    pub(super) payload: &'a str,
}

impl Incident<'_> {
    /// The `events` row, stamped `ingested_at`.
    pub(super) fn into_event(self, ingested_at: i64) -> Event {
        let origin = self.origin.as_str();
        let mut e = Event {
            event_id: self.event_id,
            event_source: self.source,
            spec_version: origin.to_string(),
            origin: origin.to_string(),
            time: self.time,
            ingested_at,
            subject_id: self.incident_id,
            service: self.service,
            environment: self.environment,
            url: self.url,
            payload: self.payload.to_string(),
            ..Event::default()
        };
        match self.phase {
            Phase::Detected => Meaning::IncidentDetected.set(&mut e),
            Phase::Resolved => Meaning::IncidentResolved.set(&mut e),
            Phase::Acknowledged => typed(&mut e, origin, "acknowledged"),
            Phase::Other(what) => typed(&mut e, origin, &what),
        }
        e
    }
}

fn typed(e: &mut Event, origin: &str, predicate: &str) {
    let predicate = match token(predicate).to_ascii_lowercase() {
        p if p.is_empty() => "received".to_string(),
        p => p,
    };
    e.event_type = format!("{origin}.incident.{predicate}");
    e.subject = "incident".into();
    e.predicate = predicate;
}

/// A time given as a number since the epoch, in seconds, milliseconds, microseconds or
/// nanoseconds (told apart by magnitude, as Opsgenie mixes milliseconds and nanoseconds in one
/// payload), to µs.
pub(super) fn epoch_number_micros(n: i64) -> Option<i64> {
    match n.unsigned_abs() {
        0 => None,
        a if a >= 100_000_000_000_000_000 => Some(n / 1_000),
        a if a >= 100_000_000_000_000 => Some(n),
        a if a >= 100_000_000_000 => n.checked_mul(1_000),
        _ => n.checked_mul(1_000_000),
    }
}

/// Whether the request carries one of `tokens`: `Authorization: Bearer <token>`, or HTTP Basic
/// auth whose password is one (any user name), as Alertmanager's `http_config`, Grafana's
/// webhook contact point and Opsgenie's custom headers send. Compared in constant time.
pub(super) fn token_ok(tokens: &[String], headers: &HeaderMap) -> bool {
    let Some(auth) = header_str(headers, "authorization") else {
        return false;
    };
    let (scheme, credentials) = auth.split_once(' ').unwrap_or((auth, ""));
    let credentials = credentials.trim();
    let presented = if scheme.eq_ignore_ascii_case("bearer") {
        credentials.as_bytes().to_vec()
    } else if scheme.eq_ignore_ascii_case("basic") {
        let Some(decoded) = base64::decode(credentials) else {
            return false;
        };
        match decoded.iter().position(|&b| b == b':') {
            Some(colon) => decoded[colon + 1..].to_vec(),
            None => return false,
        }
    } else {
        return false;
    };
    // An empty credential authenticates nothing, whatever is configured.
    !presented.is_empty()
        && tokens
            .iter()
            .filter(|t| !t.is_empty())
            .any(|t| bool::from(t.as_bytes().ct_eq(&presented)))
}

/// HMAC-SHA256 of `parts`, concatenated, under `key`.
pub(super) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// Whether `signature` (hex) is the HMAC-SHA256 of `parts` under one of `secrets`, compared in
/// constant time.
pub(super) fn hex_signature_ok(secrets: &[String], signature: &str, parts: &[&[u8]]) -> bool {
    let Ok(signature) = hex::decode(signature.trim()) else {
        return false;
    };
    // An empty secret would let anyone sign: it is never a key.
    !signature.is_empty()
        && secrets
            .iter()
            .filter(|s| !s.is_empty())
            .any(|secret| bool::from(hmac_sha256(secret.as_bytes(), parts).ct_eq(&signature)))
}

/// How far a signed timestamp may be from the receiver's clock: five minutes, as Standard
/// Webhooks recommends. Older deliveries are replays (or a clock far off).
pub(super) const SIGNATURE_TOLERANCE_SECS: i64 = 300;

/// Check a signed timestamp (Unix seconds) against `now` (µs): an error saying how far off it
/// is, for the 401.
pub(super) fn fresh(timestamp: &str, now_micros: i64, header: &str) -> Result<(), String> {
    let Ok(ts) = timestamp.trim().parse::<i64>() else {
        return Err(format!(
            "{header} is not a Unix time in seconds: {timestamp:?}"
        ));
    };
    // Checked: a hostile timestamp (i64::MIN) must not overflow.
    let off = (now_micros / 1_000_000).checked_sub(ts).unwrap_or(i64::MAX);
    if off.unsigned_abs() > SIGNATURE_TOLERANCE_SECS as u64 {
        return Err(format!(
            "{header} is {off} s from this server's clock (more than {SIGNATURE_TOLERANCE_SECS} s): a replayed delivery, or a clock to fix"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn auth(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn bearer_and_basic_auth_carry_the_token() {
        let tokens = vec!["old".to_string(), "s3cret".to_string()];
        assert!(token_ok(&tokens, &auth("Bearer s3cret")));
        assert!(token_ok(&tokens, &auth("bearer old")));
        // alertmanager:s3cret
        assert!(token_ok(
            &tokens,
            &auth("Basic YWxlcnRtYW5hZ2VyOnMzY3JldA==")
        ));
        assert!(!token_ok(&tokens, &auth("Bearer s3cre")));
        assert!(!token_ok(&tokens, &auth("Bearer")));
        // s3cret:x — the token as the user name is not the password.
        assert!(!token_ok(&tokens, &auth("Basic czNjcmV0Ong=")));
        assert!(!token_ok(&tokens, &auth("Basic !!!")));
        assert!(!token_ok(&tokens, &auth("Token s3cret")));
        assert!(!token_ok(&tokens, &HeaderMap::new()));
        assert!(!token_ok(&[], &auth("Bearer ")));
        // An empty configured token (a trailing comma in CDLAKE_…_TOKEN) opens nothing.
        let empty = vec![String::new(), "s3cret".to_string()];
        assert!(!token_ok(&empty, &auth("Bearer")));
        assert!(!token_ok(&empty, &auth("Basic Og==")));
        assert!(token_ok(&empty, &auth("Bearer s3cret")));
        // Nor does an empty secret sign.
        let sig = hex::encode(hmac_sha256(b"", &[b"body"]));
        assert!(!hex_signature_ok(&[String::new()], &sig, &[b"body"]));
        assert!(!hex_signature_ok(&["k".into()], "", &[b"body"]));
    }

    #[test]
    fn epoch_numbers_are_read_by_magnitude() {
        let micros = 1_502_709_956_288_000;
        assert_eq!(
            epoch_number_micros(1_502_709_956),
            Some(1_502_709_956_000_000)
        );
        assert_eq!(epoch_number_micros(1_502_709_956_288), Some(micros));
        assert_eq!(epoch_number_micros(micros), Some(micros));
        assert_eq!(epoch_number_micros(1_502_709_956_288_000_110), Some(micros));
        assert_eq!(epoch_number_micros(0), None);
    }

    #[test]
    fn stale_timestamps_are_refused_with_the_offset() {
        let now = 1_614_265_330 * 1_000_000;
        assert!(fresh("1614265330", now, "webhook-timestamp").is_ok());
        assert!(fresh("1614265030", now, "webhook-timestamp").is_ok());
        let stale = fresh("1614265029", now, "webhook-timestamp").unwrap_err();
        assert!(stale.contains("301 s"), "{stale}");
        let ahead = fresh("1614265631", now, "webhook-timestamp").unwrap_err();
        assert!(ahead.contains("-301 s"), "{ahead}");
        assert!(fresh("soon", now, "webhook-timestamp").is_err());
        assert!(fresh(&i64::MIN.to_string(), now, "webhook-timestamp").is_err());
        assert!(fresh(&i64::MAX.to_string(), now, "webhook-timestamp").is_err());
    }
}
