//! The query side of cdlake: DataFusion over the Parquet history in the store.
//!
//! [`Engine`] opens a `SessionContext` whose tables are listing tables over the store's
//! Hive-partitioned directories (`events/date=…/`, pruned by `date`), so files committed by
//! any ingester are visible to the next query. On top sit the SQL views of [`views`]
//! (`deployments`, `changes`, `incidents`, `pipeline_runs`, `task_runs`, `dora_*`), and the DORA
//! report of [`dora`], which reads those views for a window and computes the five figures and
//! their levels. Every protocol (CLI, HTTP, Postgres wire) is a thin adapter over the
//! [`QueryService`] trait; user SQL is read-only and runs under memory and time limits.

pub mod config;
pub mod dora;
pub mod engine;
pub mod format;
pub mod http;
pub mod pg;
mod table;
pub mod time;
pub mod views;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

pub use config::Config;
pub use dora::{DoraReport, DoraRequest, GroupBy};
pub use engine::Engine;

/// Errors of the query side. `Sql` is the user's to fix (a 400 over HTTP); the rest are ours.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Sql(String),
    #[error("query exceeded the time limit of {0} s")]
    Timeout(u64),
    #[error("invalid request: {0}")]
    BadRequest(String),
    #[error("query engine: {0}")]
    Engine(#[from] datafusion::error::DataFusionError),
    #[error(transparent)]
    Store(#[from] cdlake_schemas::store::StoreError),
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("formatting results: {0}")]
    Format(#[from] arrow::error::ArrowError),
}

impl Error {
    /// Whether the caller caused it (bad SQL, a refused statement, a bad parameter).
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            Error::Sql(_) | Error::BadRequest(_) | Error::Timeout(_)
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The answer to a SQL query.
#[derive(Debug, Clone)]
pub struct QueryResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

impl QueryResult {
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// What every query protocol adapter calls.
#[async_trait::async_trait]
pub trait QueryService: Send + Sync {
    /// Run one read-only SQL statement.
    async fn sql(&self, sql: &str) -> Result<QueryResult>;
    /// The DORA report for a window.
    async fn dora(&self, request: &DoraRequest) -> Result<DoraReport>;
}
