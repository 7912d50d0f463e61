//! The [`Envelope`]: one received input on its way to the writer, through JetStream or an
//! in-process channel. It carries the raw bytes and what the receiver learnt from the transport
//! (the webhook's event name and delivery id), so that the writer normalises exactly what was
//! received and stores the original payload byte for byte.

use bytes::Bytes;
use cdlake_schemas::cdevents::{self, Rejection};
use cdlake_schemas::{Event, Origin, Span};

use crate::webhooks::{self, Normalised};

/// JetStream stream holding every received input.
pub const STREAM: &str = "CDLAKE";
/// Subjects of accepted inputs: `cdlake.events.<origin>.<subject>.<predicate>`.
pub const EVENTS_SUBJECTS: &str = "cdlake.events.>";
/// Subjects of inputs the receiver rejected, to be dead-lettered: `cdlake.dead.<origin>`.
pub const DEAD_SUBJECTS: &str = "cdlake.dead.>";

/// Message headers; `Nats-Msg-Id` (the event identity) lets JetStream drop re-publishes.
pub mod header {
    pub const ORIGIN: &str = "Cdlake-Origin";
    pub const KIND: &str = "Cdlake-Kind";
    pub const DELIVERY: &str = "Cdlake-Delivery";
    pub const SOURCE: &str = "Cdlake-Source";
    pub const RECEIVED_AT: &str = "Cdlake-Received-At";
    pub const REASON: &str = "Cdlake-Reason";
}

/// One received input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub origin: Origin,
    /// The webhook event name (`X-GitHub-Event`, `X-Gitlab-Event`); empty for CloudEvents.
    pub kind: String,
    /// The webhook delivery id; empty for CloudEvents (their identity is in the body).
    pub delivery: String,
    /// Where it came from, for dead-letter rows: `http:/webhooks/github`, `nats:<subject>` …
    pub source: String,
    /// When the receiver got it (µs since the epoch, UTC).
    pub received_at: i64,
    /// Set when the receiver already rejected it: the body is to be dead-lettered.
    pub rejected: Option<String>,
    /// The raw bytes.
    pub body: Bytes,
}

/// Parse an origin name (`cdevents`, `github`, `gitlab`, `otlp`).
pub fn parse_origin(s: &str) -> Option<Origin> {
    [
        Origin::CdEvents,
        Origin::Github,
        Origin::Gitlab,
        Origin::Otlp,
    ]
    .into_iter()
    .find(|o| o.as_str() == s)
}

impl Envelope {
    /// A CloudEvents/CDEvents input.
    pub fn cdevent(body: impl Into<Bytes>, source: &str, received_at: i64) -> Self {
        Envelope {
            origin: Origin::CdEvents,
            kind: String::new(),
            delivery: String::new(),
            source: source.to_string(),
            received_at,
            rejected: None,
            body: body.into(),
        }
    }

    /// A GitHub or GitLab webhook delivery received on an HTTP `route`.
    pub fn webhook(origin: Origin, kind: &str, delivery: &str, route: &str, body: Bytes) -> Self {
        Envelope {
            origin,
            kind: kind.to_string(),
            delivery: delivery.to_string(),
            source: format!("http:{route}"),
            received_at: crate::ingester::now_micros(),
            rejected: None,
            body,
        }
    }

    /// A batch of spans an OTLP receiver decoded, as a JSON array of `spans` rows. Its
    /// `delivery` is the digest of the spans' identities, the batch's `Nats-Msg-Id`.
    pub fn spans(spans: &[Span], route: &str, received_at: i64) -> Self {
        Envelope {
            origin: Origin::Otlp,
            kind: "spans".to_string(),
            delivery: crate::ingester::identity_digest(spans.iter().map(Span::identity)),
            source: format!("http:{route}"),
            received_at,
            rejected: None,
            body: serde_json::to_vec(spans)
                .expect("span rows serialise")
                .into(),
        }
    }

    /// Decode and normalise into an event row, stamped `ingested_at`. An event whose time is
    /// not plausible for when the receiver got it is rejected
    /// ([`cdlake_schemas::event::check_time`]).
    pub fn decode(&self, ingested_at: i64) -> Result<Normalised, Rejection> {
        let decoded = self.decode_unchecked(ingested_at)?;
        if let Normalised::Event(event) = &decoded {
            cdlake_schemas::event::check_time(event.time, self.received_at).map_err(Rejection)?;
        }
        Ok(decoded)
    }

    fn decode_unchecked(&self, ingested_at: i64) -> Result<Normalised, Rejection> {
        if let Some(reason) = &self.rejected {
            return Err(Rejection(reason.clone()));
        }
        match self.origin {
            Origin::Github | Origin::Gitlab => webhooks::normalise(
                self.origin,
                &self.kind,
                &self.delivery,
                &self.body,
                ingested_at,
            ),
            Origin::CdEvents => cdevents::parse(&self.body, self.origin, ingested_at)
                .map(|e| Normalised::Event(Box::new(e))),
            Origin::Otlp => Err(Rejection(
                "OTLP spans are not carried as events; send them to POST /v1/traces".into(),
            )),
        }
    }

    /// The JetStream subject of this input once decoded as `event` (or of its dead letter).
    pub fn subject(&self, event: Option<&Event>) -> String {
        if self.origin == Origin::Otlp && self.rejected.is_none() {
            return "cdlake.events.otlp.spans.batch".to_string();
        }
        match event {
            Some(e) => format!(
                "cdlake.events.{}.{}.{}",
                self.origin.as_str(),
                token(&e.subject),
                token(&e.predicate)
            ),
            None => format!("cdlake.dead.{}", self.origin.as_str()),
        }
    }
}

/// A NATS subject token: no dots, wildcards or whitespace, never empty.
fn token(s: &str) -> String {
    let t: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if t.is_empty() { "_".into() } else { t }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_safe_tokens() {
        let env = Envelope::cdevent(&b"{}"[..], "test", 0);
        let e = Event {
            subject: "pull request".into(),
            predicate: "a.b>*".into(),
            ..Event::default()
        };
        assert_eq!(
            env.subject(Some(&e)),
            "cdlake.events.cdevents.pull_request.a_b__"
        );
        assert_eq!(env.subject(None), "cdlake.dead.cdevents");
        assert_eq!(parse_origin("gitlab"), Some(Origin::Gitlab));
        assert_eq!(parse_origin("svn"), None);
    }

    #[test]
    fn a_receiver_rejection_stays_a_rejection() {
        let mut env = Envelope::cdevent(&b"{}"[..], "test", 0);
        env.rejected = Some("missing header".into());
        assert_eq!(env.decode(1), Err(Rejection("missing header".into())));
    }
}
