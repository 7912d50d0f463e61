//! The JSON that crosses cdlake's HTTP API, as plain types both ends share: the server
//! (`cdlake-query`) serialises them, the terminal UI (`cdlake-tui`) and other clients
//! deserialise them. Nothing here computes anything or depends on the engine, so a client
//! builds without DataFusion.
//!
//! - [`dora`]: the DORA report of `GET /api/v1/dora` and `cdlake dora --format json`
//!   (the contract `dora-report.schema.json`), its grouping and its levels.
//! - [`tail`]: one event of the live tail, `GET /api/v1/tail`.
//! - [`error`]: the body of every error answer, `{"error": …}`.

pub mod dora;
pub mod error;
pub mod tail;

pub use dora::{DoraReport, GroupBy, Level};
pub use error::ErrorBody;
pub use tail::TailEvent;
