//! The sources of input, one folder each with its HTTP route, authentication, normalisation
//! and tests: [`github`], [`gitlab`] (webhooks), [`cloudevents`] (`POST /api/v1/events`),
//! [`otlp`] (`POST /v1/traces`), and the alerting and incident tools ([`alertmanager`], also
//! Grafana Alerting; [`pagerduty`], [`opsgenie`], [`incidentio`]; see [`alerting`]). [`ALL`]
//! registers them: [`router`] serves each one's route, and an [`Envelope`] read back from the
//! stream is normalised by its origin's source ([`normalise`], [`ingest`]). Adding a source is
//! a folder and a line in [`ALL`].
//!
//! Each request is authenticated (GitHub's HMAC signature, GitLab's token, each incident
//! tool's scheme) before its body is parsed, bounded by a per-route body limit, decoded and normalised once, and handed to a
//! [`Sink`](crate::sink::Sink) with its event: JetStream (`cdlake receive`) or the in-process
//! writer (`cdlake standalone`). A 2xx answer means the sink confirmed the input: published and
//! acknowledged by JetStream, or committed to the store. Bad input is answered 4xx naming the
//! problem and is dead-lettered.

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::MethodRouter;
use cdlake_schemas::cdevents::Rejection;
use cdlake_schemas::{DeadLetter, Event, Origin, Span};

use crate::envelope::Envelope;
use crate::ingester::{Ingester, Outcome, Pushed, now_micros};

pub mod alerting;
pub mod alertmanager;
mod base64;
pub mod cloudevents;
pub mod github;
pub mod gitlab;
pub mod incidentio;
pub mod opsgenie;
pub mod otlp;
pub mod pagerduty;
mod receive;
mod webhook;

pub use alerting::IncidentRules;
pub use receive::{ApiError, Receivers, error};

/// What normalising is configured with (`cdlake.toml`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rules {
    /// Where incidents of the alerting and incident tools find their service and environment.
    pub incidents: IncidentRules,
    /// `[[services]]`: which service an event is of, where a rule names it.
    pub services: Vec<cdlake_schemas::services::ServiceRule>,
}

/// One source of input.
#[derive(Debug, Clone, Copy)]
pub struct Source {
    /// The `origin` of its rows.
    pub origin: Origin,
    /// Its HTTP route (`POST`).
    pub route: &'static str,
    /// The largest body its route reads.
    pub body_limit: usize,
    /// The route's handler.
    pub handler: fn() -> MethodRouter<Arc<Receivers>>,
    /// Decode and normalise one received input of this origin under the [`Rules`], stamped
    /// `ingested_at`.
    pub normalise: fn(&Envelope, &Rules, i64) -> Result<Normalised, Rejection>,
}

/// Every source.
pub const ALL: &[Source] = &[
    github::SOURCE,
    gitlab::SOURCE,
    cloudevents::SOURCE,
    otlp::SOURCE,
    alertmanager::SOURCE,
    alertmanager::GRAFANA,
    pagerduty::SOURCE,
    opsgenie::SOURCE,
    incidentio::SOURCE,
];

/// The receiver routes: `POST /webhooks/github`, `POST /webhooks/gitlab`, `POST /api/v1/events`,
/// `POST /v1/traces` (OTLP/HTTP, protobuf or JSON, optionally gzip),
/// `POST /webhooks/alertmanager` (also Grafana's), `POST /webhooks/pagerduty`,
/// `POST /webhooks/opsgenie`, `POST /webhooks/incidentio`. Sources sharing a route (Alertmanager
/// and Grafana) are served by the first one's handler.
pub fn router(receivers: Receivers) -> Router {
    ALL.iter()
        .enumerate()
        .filter(|(i, source)| !ALL[..*i].iter().any(|s| s.route == source.route))
        .fold(Router::new(), |router, (_, source)| {
            router.route(
                source.route,
                (source.handler)().layer(DefaultBodyLimit::max(source.body_limit)),
            )
        })
        .with_state(Arc::new(receivers))
}

/// The source of an origin.
fn source_of(origin: Origin) -> Option<&'static Source> {
    ALL.iter().find(|s| s.origin == origin)
}

/// Parse an origin name (`cdevents`, `github`, `gitlab`, `otlp`, `alertmanager`, …).
pub fn parse_origin(s: &str) -> Option<Origin> {
    ALL.iter().map(|s| s.origin).find(|o| o.as_str() == s)
}

/// The result of normalising one input.
#[derive(Debug, Clone, PartialEq)]
pub enum Normalised {
    /// One row for the `events` table.
    Event(Box<Event>),
    /// A GitHub `ping` (or GitLab equivalent test hook, if any): answered, not stored.
    Ping,
    /// Rows for the `spans` table (an OTLP receiver's batch).
    Spans(Vec<Span>),
}

/// Decode and normalise a received [`Envelope`] into rows stamped `ingested_at`. An event the
/// receiver already normalised ([`Envelope::normalised`]) is taken as it is; an event whose
/// time is not plausible for when the receiver got it is rejected
/// ([`cdlake_schemas::event::check_time`]). Normalised under the default [`Rules`]: the
/// receivers normalise with the configured ones ([`normalise_with`]) before publishing.
pub fn normalise(envelope: &Envelope, ingested_at: i64) -> Result<Normalised, Rejection> {
    normalise_with(envelope, &Rules::default(), ingested_at)
}

/// [`normalise`] under the given [`Rules`].
pub fn normalise_with(
    envelope: &Envelope,
    rules: &Rules,
    ingested_at: i64,
) -> Result<Normalised, Rejection> {
    if let Some(rejection) = &envelope.rejected {
        return Err(rejection.clone());
    }
    if envelope.normalised {
        let mut event: Event = serde_json::from_slice(&envelope.body)
            .map_err(|e| Rejection::malformed_json(format!("malformed normalised event: {e}")))?;
        event.ingested_at = ingested_at;
        return Ok(Normalised::Event(Box::new(event)));
    }
    let source = source_of(envelope.origin).ok_or_else(|| {
        Rejection::invalid(format!(
            "no source receives {} input",
            envelope.origin.as_str()
        ))
    })?;
    let mut normalised = (source.normalise)(envelope, rules, ingested_at)?;
    if let Normalised::Event(event) = &mut normalised {
        cdlake_schemas::event::check_time(event.time, envelope.received_at)
            .map_err(Rejection::invalid)?;
        cdlake_schemas::services::apply(&rules.services, event);
    }
    Ok(normalised)
}

/// Normalise a stored row again from its payload, as `cdlake rebuild --renormalise` does: the
/// row today's normaliser makes of it, with the row's `ingested_at`, its `event_id` standing
/// in for the delivery id it came with (a row stored under its fact normalises to itself),
/// and the service the first `[[services]]` rule of `rules` that holds for it names. A row no
/// normaliser makes again (the alerting tools split a delivery into several rows; a row
/// GitHub's normaliser cannot tell the event of, or that now normalises to no row) is kept as
/// stored, with only the rules applied; `None` for it when there are no rules.
pub fn renormalise(row: &Event, rules: &Rules) -> Option<Result<Event, Rejection>> {
    let mut again = match renormalised(row) {
        Some(Ok(event)) => event,
        Some(Err(rejection)) => return Some(Err(rejection)),
        None if rules.services.is_empty() => return None,
        None => row.clone(),
    };
    cdlake_schemas::services::apply(&rules.services, &mut again);
    Some(Ok(again))
}

/// The row the normalisers make of a stored row's payload; `None` where none does.
fn renormalised(row: &Event) -> Option<Result<Event, Rejection>> {
    let (at, payload) = (row.ingested_at, row.payload.as_bytes());
    let normalised = match parse_origin(&row.origin)? {
        Origin::CdEvents => {
            return Some(cdlake_schemas::cdevents::parse(
                payload,
                Origin::CdEvents,
                at,
            ));
        }
        Origin::Github => {
            let body: serde_json::Value = serde_json::from_slice(payload).ok()?;
            let kind = github::stored_kind(&row.event_type, &row.subject, &body)?;
            github::normalise(kind, &row.event_id, payload, at)
        }
        Origin::Gitlab => {
            let kind = row
                .event_type
                .strip_prefix("gitlab.")
                .and_then(|rest| rest.split('.').next())
                .unwrap_or_default();
            gitlab::normalise(kind, &row.event_id, payload, at)
        }
        _ => return None,
    };
    match normalised {
        Ok(Normalised::Event(mut event)) => {
            // A time the payload does not hold fell back to when the row was received (by the
            // receiver, which may be before `ingested_at`): keep it.
            if event.time == at {
                event.time = row.time;
            }
            Some(Ok(*event))
        }
        Ok(_) => None,
        Err(rejection) => Some(Err(rejection)),
    }
}

/// Normalise a received [`Envelope`] and push its rows, or dead-letter it with the reason
/// (stamped with the time the receiver got it). A batch of spans is `Accepted` when any span
/// is new, `Duplicate` when all were stored already.
pub async fn ingest(ingester: &mut Ingester, envelope: &Envelope) -> crate::Result<Outcome> {
    match normalise(envelope, now_micros()) {
        Ok(Normalised::Event(event)) => Ok(match ingester.push(*event).await? {
            Pushed::Accepted => Outcome::Accepted,
            Pushed::Duplicate => Outcome::Duplicate,
        }),
        Ok(Normalised::Ping) => Ok(Outcome::Ignored),
        Ok(Normalised::Spans(spans)) => {
            let mut any = false;
            for span in spans {
                any |= ingester.push_span(span).await? == Pushed::Accepted;
            }
            Ok(if any {
                Outcome::Accepted
            } else {
                Outcome::Duplicate
            })
        }
        Err(rejection) => {
            ingester.push_dead_letter(DeadLetter {
                received_at: envelope.received_at,
                origin: envelope.origin.as_str().to_string(),
                source: envelope.source.clone(),
                reason: rejection.message.clone(),
                payload: envelope.body.to_vec(),
            });
            Ok(Outcome::Rejected(rejection))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_origin_has_one_source() {
        for origin in [
            Origin::CdEvents,
            Origin::Github,
            Origin::Gitlab,
            Origin::Otlp,
            Origin::Alertmanager,
            Origin::Grafana,
            Origin::Pagerduty,
            Origin::Opsgenie,
            Origin::Incidentio,
        ] {
            assert_eq!(parse_origin(origin.as_str()), Some(origin));
            assert_eq!(ALL.iter().filter(|s| s.origin == origin).count(), 1);
        }
        assert_eq!(parse_origin("svn"), None);
    }

    #[test]
    fn a_receiver_rejection_stays_a_rejection() {
        let mut env = Envelope::cdevent(&b"{}"[..], "test", 0);
        env.rejected = Some(Rejection::missing("missing header"));
        assert_eq!(
            normalise(&env, 1),
            Err(Rejection::missing("missing header"))
        );
    }

    #[test]
    fn rejections_carry_their_class() {
        use cdlake_schemas::cdevents::Reason;
        let class = |body: &[u8]| {
            let env = Envelope::cdevent(body.to_vec(), "test", 0);
            normalise(&env, 1).unwrap_err().reason
        };
        assert_eq!(class(b"{"), Reason::MalformedJson);
        assert_eq!(class(b"\xff"), Reason::NotUtf8);
        assert_eq!(class(br#"{"a": 1}"#), Reason::NotCdevents);
        assert_eq!(class(br#"{"context": {}}"#), Reason::MissingField);
        let webhook = github::normalise("push", "d", b"{}", 0).unwrap_err();
        assert_eq!(webhook.reason, Reason::MissingField, "{webhook}");
        let name = github::normalise("a b", "d", b"{}", 0).unwrap_err();
        assert_eq!(name.reason, Reason::Invalid, "{name}");
        for reason in Reason::ALL {
            assert_eq!(Reason::parse(reason.as_str()), Some(reason));
        }
    }

    #[test]
    fn a_normalised_event_is_taken_as_it_is() {
        let event = Event {
            event_id: "1".into(),
            event_source: "/ci".into(),
            time: 1_767_225_600_000_000,
            ingested_at: 5,
            payload: "{\"x\": 1}".into(),
            ..Event::default()
        };
        let mut env = Envelope::cdevent(serde_json::to_vec(&event).unwrap(), "test", 0);
        env.normalised = true;
        let Ok(Normalised::Event(got)) = normalise(&env, 7) else {
            panic!("not taken");
        };
        assert_eq!(
            *got,
            Event {
                ingested_at: 7,
                ..event
            }
        );
        env.body = bytes::Bytes::from_static(b"{");
        let rejection = normalise(&env, 7).unwrap_err();
        assert_eq!(
            rejection.reason,
            cdlake_schemas::cdevents::Reason::MalformedJson
        );
        assert!(rejection.message.starts_with("malformed normalised event"));
    }
}
