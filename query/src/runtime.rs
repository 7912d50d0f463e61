//! [`QueryRuntime`]: where every statement and report is planned and run.
//!
//! A tokio runtime of its own, apart from the one serving HTTP, webhooks and `/healthz`, so a
//! heavy query cannot starve them. Its threads have large stacks: parsing, planning,
//! optimising and evaluating recurse over the expression tree, and the guard bounds how deep
//! that tree may be ([`crate::guard`]), not how much stack each level takes. DataFusion's own
//! tasks (repartitioning, file reads) are spawned on this runtime too.
//!
//! [`QueryRuntime::run`] admits at most `limits.max_concurrent_queries` at once, runs the work
//! under the time limit (queueing included), and aborts it when the limit passes or the caller
//! goes away: DataFusion's operators yield between batches, so an aborted query stops using
//! CPU at its next batch. A panic in a query is answered as an error; the process goes on.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::{Error, Result};

/// Stack of the query runtime's threads (address space; pages are committed as used).
pub const QUERY_THREAD_STACK: usize = 64 << 20;

/// The runtime every query runs on.
pub struct QueryRuntime {
    runtime: Option<tokio::runtime::Runtime>,
    permits: Arc<Semaphore>,
    max_concurrent: usize,
}

impl std::fmt::Debug for QueryRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryRuntime")
            .field("max_concurrent", &self.max_concurrent)
            .finish_non_exhaustive()
    }
}

impl QueryRuntime {
    /// A runtime admitting `max_concurrent` queries at once.
    pub fn new(max_concurrent: usize) -> std::io::Result<Self> {
        // More threads than cores: a query whose operators do not yield for a while (a cross
        // join feeding an aggregate) keeps its thread busy until its next batch, even after its
        // timeout dropped it; the other threads keep serving everyone else meanwhile.
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads((4 * cores).max(8))
            .thread_name("cdlake-query")
            .thread_stack_size(QUERY_THREAD_STACK)
            .enable_all()
            .build()?;
        let max_concurrent = max_concurrent.max(1);
        Ok(Self {
            runtime: Some(runtime),
            permits: Arc::new(Semaphore::new(max_concurrent)),
            max_concurrent,
        })
    }

    /// Statements and reports admitted and running now (those waiting for a permit aside).
    pub fn running(&self) -> usize {
        self.max_concurrent - self.permits.available_permits()
    }

    /// Run `work` on the query runtime within `limit` (its `secs` is what the error says).
    /// Dropping the returned future (a cancel request, a closed connection) aborts the work.
    pub async fn run<T: Send + 'static>(
        &self,
        limit: Duration,
        work: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        let Some(runtime) = &self.runtime else {
            return Err(Error::internal(
                "the query runtime",
                "the server is shutting down",
            ));
        };
        let secs = limit.as_secs().max(1);
        let deadline = Instant::now() + limit;
        let permit = match tokio::time::timeout_at(deadline, self.permits.clone().acquire_owned())
            .await
        {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => {
                return Err(Error::internal(
                    "the query runtime",
                    "the admission queue is closed",
                ));
            }
            Err(_) => {
                return Err(Error::Limit {
                    limit: "max_concurrent_queries",
                    message: format!(
                        "{} queries were running for the whole time limit of {secs} s: retry later",
                        self.max_concurrent
                    ),
                });
            }
        };
        let mut task = AbortOnDrop(runtime.spawn(async move {
            let _permit = permit;
            work.await
        }));
        match tokio::time::timeout_at(deadline, &mut task.0).await {
            Err(_) => Err(Error::Timeout { secs }),
            Ok(Ok(result)) => result,
            Ok(Err(e)) if e.is_panic() => {
                tracing::error!(error = %e, "A query panicked; the service goes on.");
                Err(Error::internal("the query", "it panicked"))
            }
            Ok(Err(e)) => Err(Error::internal("the query", e)),
        }
    }
}

impl Drop for QueryRuntime {
    fn drop(&mut self) {
        // May be dropped inside an async context, where a blocking shutdown would panic.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_past_its_limit_is_aborted_and_a_panic_is_an_error() {
        let rt = QueryRuntime::new(2).expect("runtime");
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = ran.clone();
        let e = rt
            .run(Duration::from_millis(50), async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
                Ok(())
            })
            .await
            .expect_err("past the limit");
        assert!(matches!(e, Error::Timeout { .. }), "{e}");
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(
            !ran.load(std::sync::atomic::Ordering::SeqCst),
            "the work was aborted"
        );

        let e = rt
            .run(Duration::from_secs(5), async {
                if true {
                    panic!("boom");
                }
                Ok(())
            })
            .await
            .expect_err("a panic");
        assert_eq!(e.status(), 500);
        assert_eq!(
            rt.run(Duration::from_secs(5), async { Ok(7) }).await.ok(),
            Some(7),
            "the runtime goes on"
        );
    }

    #[tokio::test]
    async fn more_queries_than_permits_wait_and_then_fail_naming_the_limit() {
        let rt = Arc::new(QueryRuntime::new(1).expect("runtime"));
        let busy = {
            let rt = rt.clone();
            tokio::spawn(async move {
                rt.run(Duration::from_secs(5), async {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    Ok(())
                })
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let e = rt
            .run(Duration::from_millis(100), async { Ok(()) })
            .await
            .expect_err("no permit in time");
        assert!(
            e.to_string().contains("limits.max_concurrent_queries"),
            "{e}"
        );
        assert_eq!(e.status(), 503);
        busy.await.expect("task").expect("the first query ran");
        assert!(
            rt.run(Duration::from_secs(1), async { Ok(()) })
                .await
                .is_ok()
        );
    }
}
