//! The event model of cdlake, shared by ingest and query, which meet only here.
//!
//! Raw bytes from any source (a file, a webhook, a stream message) are parsed by
//! [`cdevents::parse`] into an [`Event`]: one normalised row of the `events` table, with the
//! CDEvents identity, the linking fields DORA needs (service, environment, repository, change,
//! artifact), pipeline fields, trace context and the original payload byte for byte. Input that
//! cannot become an event is a [`DeadLetter`] carrying the reason. [`event::events_to_batch`]
//! and [`dead_letter::dead_letters_to_batch`] turn rows into Arrow record batches of
//! [`events_schema`] and [`dead_letters_schema`]; [`paths`] owns where those batches live in the
//! object store (`events/date=YYYY-MM-DD/<file>.parquet`, Hive-partitioned by event date).

pub mod cdevents;
pub mod dead_letter;
pub mod event;
pub mod incidents;
pub mod lake;
pub mod paths;
pub mod services;
pub mod span;
pub mod store;

pub use dead_letter::{DeadLetter, dead_letters_schema};
pub use event::{Event, Origin, events_schema};
pub use span::{Span, spans_schema};

/// The production environment pattern of DESIGN.md, used unless configured otherwise.
pub const DEFAULT_PRODUCTION_PATTERN: &str = r"^(?i)(prod|production)([-_./].*)?$";

/// A 128-bit digest of an event identity `(event_source, event_id)`: the key of
/// de-duplication. Collisions are negligible at any realistic history size.
pub fn identity_key(event_source: &str, event_id: &str) -> u128 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update((event_source.len() as u64).to_le_bytes());
    h.update(event_source.as_bytes());
    h.update(event_id.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    u128::from_le_bytes(b)
}
