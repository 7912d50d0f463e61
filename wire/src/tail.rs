//! One event of the live tail, `GET /api/v1/tail`: Server-Sent Events named `event` whose data
//! is a [`TailEvent`], and `lagged` whose data is [`Lagged`].

use serde::{Deserialize, Serialize};

/// A stored event row without its payload. Times are RFC 3339 with microseconds. A receiver
/// takes what it knows: every field has a default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TailEvent {
    pub event_id: String,
    pub event_source: String,
    pub event_type: String,
    pub subject: String,
    pub predicate: String,
    pub spec_version: String,
    pub origin: String,
    /// RFC 3339.
    pub time: String,
    /// RFC 3339.
    pub ingested_at: String,
    pub subject_id: Option<String>,
    pub service: Option<String>,
    pub environment: Option<String>,
    pub repository: Option<String>,
    pub change_id: Option<String>,
    pub artifact_id: Option<String>,
    pub pipeline: Option<String>,
    pub run_id: Option<String>,
    pub outcome: Option<String>,
    pub url: Option<String>,
    pub trace_id: Option<String>,
    pub span_id: Option<String>,
    pub chain_id: Option<String>,
    pub team: Option<String>,
    pub task: Option<String>,
}

impl TailEvent {
    /// `subject.predicate`, e.g. `service.deployed`.
    pub fn kind(&self) -> String {
        if self.subject.is_empty() && self.predicate.is_empty() {
            self.event_type.clone()
        } else {
            format!("{}.{}", self.subject, self.predicate)
        }
    }
}

/// The data of a `lagged` event: how many events the server skipped for a slow reader.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lagged {
    pub skipped: u64,
}
