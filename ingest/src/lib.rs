//! The ingest path of cdlake: raw bytes in, durable Parquet in the object store out.
//!
//! Input arrives as records (a line of a JSON Lines file, an element of a JSON array, an HTTP
//! body, a stream message; [`records`] splits files). Each record is decoded and normalised by
//! `cdlake_schemas::cdevents` into an event row, or becomes a dead-letter row with its reason.
//! The [`Ingester`] de-duplicates rows by their identity (event source and id) against what it
//! has seen and what each touched date partition already holds, buffers them per date, and
//! flushes when the buffer reaches its row, byte or age limit: each partition's rows are
//! sorted by time, encoded as one zstd Parquet file with statistics ([`parquet`]), and
//! committed under a name derived from the rows' identities with a create-if-absent put, so a
//! retried flush cannot store anything twice and a file appears whole or not at all.

pub mod backfill;
pub mod compact;
pub mod envelope;
pub mod ingester;
pub mod metrics;
pub mod migrate;
pub mod parquet;
pub mod records;
pub mod renormalise;
pub mod retry;
pub mod sink;
pub mod sources;
pub mod stream;
#[cfg(test)]
mod test_support;
pub mod writer;

pub use envelope::Envelope;
pub use ingester::{FlushReport, Ingester, IngesterConfig, Outcome, Pushed};
pub use metrics::Metrics;

/// Errors of the ingest path. Bad input is never an error here: it is a dead-letter row.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("encoding Parquet for {path}: {source}")]
    EncodeParquet {
        path: String,
        source: ::parquet::errors::ParquetError,
    },
    #[error("reading existing identities from {path}: {source}")]
    ReadParquet {
        path: String,
        source: ::parquet::errors::ParquetError,
    },
    #[error("building a record batch: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error(transparent)]
    Store(#[from] cdlake_schemas::store::StoreError),
    #[error(transparent)]
    Lake(#[from] cdlake_schemas::lake::LakeError),
    #[error("committing to the store: {0}")]
    Commit(Box<cdlake_schemas::lake::CommitError>),
    #[error("ingest task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
