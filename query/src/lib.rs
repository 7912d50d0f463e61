//! The query side of cdlake: DataFusion over the Parquet history in the store.
//!
//! [`Engine`] opens a `SessionContext` whose tables are listing tables over the store's
//! Hive-partitioned directories (`events/date=…/`, pruned by `date`), so files committed by
//! any ingester are visible to the next query. On top sit the SQL views of [`views`]
//! (`deployments`, `changes`, `incidents`, `pipeline_runs`, `task_runs`, `dora_*`), and the DORA
//! report of [`dora`], which reads those views for a window and computes the five figures and
//! their levels. Every protocol (CLI, HTTP, Postgres wire) is a thin adapter over the
//! [`QueryService`] trait and the one checked path of [`engine`]: the [`guard`] refuses what is
//! not read-only or too large to plan safely, and every statement runs on the [`runtime`]
//! (large stacks, apart from the HTTP threads) within the memory, result and time limits of
//! [`config::Limits`], with the functions that could allocate without bound checked first
//! ([`functions`]).

pub mod config;
pub mod dora;
pub mod engine;
pub mod error;
pub mod format;
pub mod functions;
pub mod guard;
pub mod http;
pub mod percentile;
pub mod pg;
pub mod projection;
pub mod read_model;
pub mod runtime;
mod table;
pub mod time;
pub mod views;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

pub use config::Config;
pub use dora::{DoraReport, DoraRequest, GroupBy};
pub use engine::Engine;
pub use error::Error;

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
