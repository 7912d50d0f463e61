//! The [`Envelope`]: one received input on its way to the writer, through JetStream or an
//! in-process channel. It carries the raw bytes and what the receiver learnt from the transport
//! (the webhook's event name and delivery id), so that what was received is normalised once
//! ([`crate::sources::normalise`]) and the original payload stored byte for byte.

use bytes::Bytes;
use cdlake_schemas::cdevents::Rejection;
use cdlake_schemas::{Event, Origin, Span};

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
    /// The class of the reason ([`cdlake_schemas::cdevents::Reason::as_str`]).
    pub const REASON_CLASS: &str = "Cdlake-Reason-Class";
    /// Set (to `event`) when the body is the event row the receiver normalised, as JSON.
    pub const NORMALISED: &str = "Cdlake-Normalised";
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
    pub rejected: Option<Rejection>,
    /// The body is the event row the receiver normalised (as JSON), not the raw input: the
    /// ingester takes it as it is (read from the stream's [`header::NORMALISED`]).
    pub normalised: bool,
    /// The raw bytes.
    pub body: Bytes,
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
            normalised: false,
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
            normalised: false,
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
            normalised: false,
            body: serde_json::to_vec(spans)
                .expect("span rows serialise")
                .into(),
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
    }
}
