//! Where accepted input goes: a [`Sink`] confirms a submission once it is durable. The
//! in-process writer of `cdlake standalone` ([`crate::writer::WriterHandle`]) confirms once the
//! rows are committed to the store; the JetStream publisher of `cdlake receive`
//! ([`crate::stream::Publisher`]) once the stream acknowledged every message. The receivers
//! ([`crate::sources`]) know only this trait.

use cdlake_schemas::Event;
use futures::future::BoxFuture;

use crate::envelope::Envelope;
use crate::ingester::Outcome;

/// An envelope, with its event when the receiver already decoded and normalised it (so it is
/// not decoded again); `None` for a rejected one.
pub type Item = (Envelope, Option<Box<Event>>);

/// Why a sink did not confirm a submission: `message` says what failed and what to do (it is
/// the answer to the client); `source` is the cause, for the log.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SinkError {
    pub message: &'static str,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl SinkError {
    pub fn new(
        message: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        SinkError {
            message,
            source: source.into(),
        }
    }
}

/// A destination for received input.
pub trait Sink: Send + Sync + std::fmt::Debug {
    /// Hand over items; resolves with one outcome each once they are durable.
    fn submit(&self, items: Vec<Item>) -> BoxFuture<'_, Result<Vec<Outcome>, SinkError>>;
}
