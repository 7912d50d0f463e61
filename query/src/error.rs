//! The query side's errors, and what each means to a client: an HTTP status and a Postgres
//! SQLSTATE, decided here once for every protocol.
//!
//! Most errors are the caller's to fix (bad SQL, a refused statement, a limit reached) and are
//! answered 4xx with a message naming the problem. [`Error::Internal`] is cdlake's own failure:
//! its answer says what failed and what to do, and the underlying error goes to the log.

use datafusion::error::DataFusionError;

/// Errors of the query side.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The statement is not valid SQL, names what does not exist, or does not type-check.
    #[error("{message}")]
    Sql {
        message: String,
        sqlstate: &'static str,
    },
    /// The statement would write, change settings, or read something other than the store.
    #[error(
        "cdlake SQL is read-only: {what} is refused (only queries such as SELECT, EXPLAIN and SHOW are allowed)"
    )]
    ReadOnly { what: String },
    /// A limit of `[limits]` in `cdlake.toml` was reached.
    #[error("{message} (limits.{limit})")]
    Limit {
        limit: &'static str,
        message: String,
    },
    /// The statement or report ran past `limits.query_timeout_secs`.
    #[error("query exceeded the time limit of {secs} s (limits.query_timeout_secs)")]
    Timeout { secs: u64 },
    /// An operator ran past the memory pool.
    #[error("query exceeded the memory limit of {mb} MB (limits.memory_mb): {detail}")]
    Memory { mb: usize, detail: String },
    /// Evaluating the statement failed on the data: a division by zero, a failed cast, an
    /// overflow.
    #[error("{0}")]
    Execution(String),
    /// A parameter of a request is wrong (a time, a grouping).
    #[error("invalid request: {0}")]
    BadRequest(String),
    /// cdlake failed: `what` says what, for the answer; `source` is for the log.
    #[error("{what}: {source}")]
    Internal {
        what: &'static str,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Store(#[from] cdlake_schemas::store::StoreError),
    /// The store's tables could not be opened or read.
    #[error(transparent)]
    Lake(#[from] cdlake_schemas::lake::LakeError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// A limit reached inside the engine (by a bounded function), carried through DataFusion as an
/// external error and turned back into [`Error::Limit`].
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message} (limits.{limit})")]
pub struct LimitExceeded {
    pub limit: &'static str,
    pub message: String,
}

impl From<LimitExceeded> for Error {
    fn from(e: LimitExceeded) -> Self {
        Error::Limit {
            limit: e.limit,
            message: e.message,
        }
    }
}

impl From<LimitExceeded> for DataFusionError {
    fn from(e: LimitExceeded) -> Self {
        DataFusionError::External(Box::new(e))
    }
}

/// DataFusion failing in cdlake's own work (opening tables, defining views); a user's
/// statement is classified by [`Error::from_datafusion`] instead.
impl From<DataFusionError> for Error {
    fn from(e: DataFusionError) -> Self {
        Error::internal("the query engine", e)
    }
}

impl From<arrow::error::ArrowError> for Error {
    fn from(e: arrow::error::ArrowError) -> Self {
        Error::internal("handling query results", e)
    }
}

impl Error {
    /// The error of a result past `limits.max_result_mb`.
    pub(crate) fn result_too_large(max_result_mb: usize) -> Self {
        Error::Limit {
            limit: "max_result_mb",
            message: format!(
                "the result is larger than {max_result_mb} MiB: add a LIMIT, select fewer columns or aggregate"
            ),
        }
    }

    /// An internal error with what failed.
    pub fn internal(
        what: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error::Internal {
            what,
            source: source.into(),
        }
    }

    /// Whether the caller caused it (bad SQL, a refused statement, a limit, a bad parameter).
    pub fn is_user_error(&self) -> bool {
        !matches!(
            self,
            Error::Internal { .. } | Error::Store(_) | Error::Lake(_) | Error::Config(_)
        )
    }

    /// The HTTP status of the answer.
    pub fn status(&self) -> u16 {
        match self {
            Error::Limit { limit, .. } if *limit == "max_concurrent_queries" => 503,
            // Refused whatever it says, like Postgres's 42501 (insufficient_privilege).
            Error::ReadOnly { .. } => 403,
            e if e.is_user_error() => 400,
            Error::Store(_) | Error::Lake(_) => 503,
            _ => 500,
        }
    }

    /// The Postgres SQLSTATE of the answer.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            Error::Sql { sqlstate, .. } => sqlstate,
            Error::ReadOnly { .. } => "42501",
            Error::Limit { limit, .. } => match *limit {
                "max_operators" | "max_expression_depth" | "max_statement_kb" => "54001",
                "max_concurrent_queries" => "53300",
                _ => "54000",
            },
            Error::Timeout { .. } => "57014",
            Error::Memory { .. } => "53200",
            Error::Execution(_) => "22000",
            Error::BadRequest(_) => "22023",
            Error::Internal { .. } | Error::Store(_) | Error::Lake(_) | Error::Config(_) => "XX000",
        }
    }

    /// The message for the client: the whole message for the caller's errors; for cdlake's
    /// own failures what failed and what to do, without internals (they are logged).
    pub fn client_message(&self) -> String {
        match self {
            Error::Internal { what, .. } => format!(
                "{what} failed inside cdlake; the server log has the details. Retry, and report it if it persists"
            ),
            Error::Store(_) => "the store could not be read; the server log has the details. Check the store and retry".to_string(),
            Error::Lake(e @ cdlake_schemas::lake::LakeError::LegacyLayout { .. }) => e.to_string(),
            Error::Lake(_) => "the store's tables could not be read; the server log has the details. Check the store and retry".to_string(),
            Error::Config(e) => e.to_string(),
            e => e.to_string(),
        }
    }

    /// Log a failure that is cdlake's own (not the caller's), once, where it is answered.
    pub fn log_if_internal(&self) {
        if !self.is_user_error() {
            tracing::error!(error = %self, "Query failed.");
        }
    }

    /// Classify an error DataFusion returned for a user's statement.
    pub fn from_datafusion(e: DataFusionError, limits: &crate::config::Limits) -> Self {
        let text = e.strip_backtrace();
        if text.contains("DDL not supported")
            || text.contains("DML not supported")
            || text.contains("Statement not supported")
        {
            return Error::ReadOnly {
                what: format!("this statement ({text})"),
            };
        }
        let sql = |sqlstate| Error::Sql {
            message: text.clone(),
            sqlstate,
        };
        match e.find_root() {
            DataFusionError::ResourcesExhausted(_) => Error::Memory {
                mb: limits.memory_mb.max(64),
                detail: text,
            },
            DataFusionError::External(inner) => match inner.downcast_ref::<LimitExceeded>() {
                Some(limit) => limit.clone().into(),
                None => match inner.downcast_ref::<arrow::error::ArrowError>() {
                    Some(_) => Error::Execution(text),
                    None => Error::internal("running the query", e),
                },
            },
            DataFusionError::SQL(..) => sql("42601"),
            DataFusionError::Plan(message) if message.contains("not found") => sql("42P01"),
            DataFusionError::Plan(_) | DataFusionError::SchemaError(..) => sql("42000"),
            DataFusionError::NotImplemented(_) => sql("0A000"),
            DataFusionError::Execution(_) | DataFusionError::ArrowError(..) => {
                Error::Execution(text)
            }
            DataFusionError::ExecutionJoin(_) => Error::internal("a query task", e),
            _ => Error::internal("running the query", e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Limits;

    #[test]
    fn user_errors_are_4xx_with_their_message_and_ours_are_5xx_without_internals() {
        let limits = Limits::default();
        let e =
            Error::from_datafusion(DataFusionError::Plan("table 'x' not found".into()), &limits);
        assert_eq!((e.status(), e.sqlstate()), (400, "42P01"));
        assert!(e.client_message().contains("table 'x' not found"));

        let e = Error::from_datafusion(DataFusionError::ResourcesExhausted("sort".into()), &limits);
        assert_eq!((e.status(), e.sqlstate()), (400, "53200"));
        assert!(e.client_message().contains("limits.memory_mb"));

        let limit: DataFusionError = LimitExceeded {
            limit: "max_function_output_mb",
            message: "repeat would produce 2 GB".into(),
        }
        .into();
        let e = Error::from_datafusion(limit.context("evaluating"), &limits);
        assert_eq!((e.status(), e.sqlstate()), (400, "54000"));
        assert!(e.client_message().contains("limits.max_function_output_mb"));

        let e = Error::from_datafusion(
            DataFusionError::Internal("secret /var/lib/cdlake path".into()),
            &limits,
        );
        assert_eq!((e.status(), e.sqlstate()), (500, "XX000"));
        assert!(
            !e.client_message().contains("/var/lib"),
            "{}",
            e.client_message()
        );

        let e = Error::from_datafusion(
            DataFusionError::Plan("DDL not supported: CreateMemoryTable".into()),
            &limits,
        );
        assert_eq!(e.sqlstate(), "42501");
        assert!(e.to_string().starts_with("cdlake SQL is read-only"));
    }
}
