//! The in-process writer of `cdlake standalone`: receivers hand it envelopes through a channel
//! and get their outcomes back once the rows are durably committed, so a 2xx answer means the
//! events are in the store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::envelope::Envelope;
use cdlake_schemas::Event;

use crate::ingester::{FlushReport, Ingester, Outcome, Pushed};
use crate::metrics::{self, Metrics};

/// When the writer commits and how long it lets callers wait.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Commit at most this long after the first waiting caller arrived.
    pub commit_interval: Duration,
    /// While the store fails, answer callers that waited this long with an error (their rows
    /// stay buffered and are committed when the store recovers; a retry is a duplicate).
    pub answer_timeout: Duration,
    /// While the store fails, refuse new input once this many rows are buffered.
    pub max_buffered_rows: usize,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            commit_interval: Duration::from_millis(500),
            answer_timeout: Duration::from_secs(8),
            max_buffered_rows: 500_000,
        }
    }
}

/// Why a submission was not confirmed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// The store is failing; the input may still be committed later, retry to be sure.
    #[error("the store is not accepting writes ({0}); retry later")]
    StoreUnavailable(String),
    /// The writer has stopped (the service is shutting down).
    #[error("the writer has stopped; retry against a running cdlake")]
    Stopped,
}

type Reply = oneshot::Sender<Result<Vec<Outcome>, WriteError>>;

/// An envelope, with its event when the receiver already decoded it (so it is not parsed twice).
pub type Item = (Envelope, Option<Box<Event>>);

struct Job {
    envelopes: Vec<Item>,
    reply: Reply,
}

/// A handle to submit envelopes to the writer task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("envelopes", &self.envelopes.len())
            .finish()
    }
}

impl WriterHandle {
    /// Submit envelopes; resolves with one outcome each once they are durably committed.
    pub async fn submit(&self, envelopes: Vec<Item>) -> Result<Vec<Outcome>, WriteError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job { envelopes, reply })
            .await
            .map_err(|_| WriteError::Stopped)?;
        rx.await.map_err(|_| WriteError::Stopped)?
    }
}

/// Flush `ingester`, recording the flush's figures; on success, the rows are durable.
pub(crate) async fn flush_recorded(
    ingester: &mut Ingester,
    metrics: &Metrics,
) -> crate::Result<FlushReport> {
    let started = Instant::now();
    let result = ingester.flush().await;
    record_flush(metrics, started, &result);
    metrics.set(metrics::PENDING_ROWS, &[], ingester.pending_rows() as f64);
    result
}

/// Record the figures of a flush that began at `started`.
pub(crate) fn record_flush(
    metrics: &Metrics,
    started: Instant,
    result: &crate::Result<FlushReport>,
) {
    metrics.add(metrics::FLUSH_SECONDS, &[], started.elapsed().as_secs_f64());
    match result {
        Ok(report) => {
            metrics.inc(metrics::FLUSHES, &[("result", "ok")]);
            metrics.add(metrics::COMMITTED, &[], report.events as f64);
            metrics.add(metrics::DEAD_LETTERED, &[], report.dead_letters as f64);
            metrics.add(metrics::FLUSH_BYTES, &[], report.bytes as f64);
            metrics.add(metrics::FILES, &[], report.files.len() as f64);
            if report.events + report.dead_letters > 0 {
                metrics.set(
                    metrics::LAST_COMMIT,
                    &[],
                    chrono::Utc::now().timestamp_millis() as f64 / 1000.0,
                );
            }
        }
        Err(e) => {
            metrics.inc(metrics::FLUSHES, &[("result", "error")]);
            metrics.inc(metrics::STORE_ERRORS, &[]);
            tracing::error!(
                error = %e,
                "Committing to the store failed; the rows stay buffered and nothing is acknowledged. Retrying."
            );
        }
    }
}

/// Count one outcome.
pub(crate) fn record_outcome(metrics: &Metrics, origin: &str, outcome: &Outcome) {
    match outcome {
        Outcome::Accepted | Outcome::Ignored => {}
        Outcome::Duplicate => metrics.inc(metrics::DUPLICATE, &[("origin", origin)]),
        Outcome::Rejected(reason) => metrics.inc(
            metrics::REJECTED,
            &[
                ("origin", origin),
                ("reason", metrics::reason_class(reason)),
            ],
        ),
    }
}

/// Back-off between retries of a failing store: 0.5 s doubling to 30 s.
pub(crate) fn backoff(failures: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << failures.min(6))).min(Duration::from_secs(30))
}

/// Start the writer task. It ends when every handle is dropped, after a last flush.
pub fn spawn(
    ingester: Ingester,
    metrics: Arc<Metrics>,
    options: WriterOptions,
) -> (WriterHandle, JoinHandle<crate::Result<()>>) {
    let (tx, rx) = mpsc::channel(1024);
    let task = tokio::spawn(run(ingester, metrics, options, rx));
    (WriterHandle { tx }, task)
}

struct Waiting {
    since: Instant,
    outcomes: Vec<Outcome>,
    reply: Reply,
}

async fn run(
    mut ingester: Ingester,
    metrics: Arc<Metrics>,
    options: WriterOptions,
    mut rx: mpsc::Receiver<Job>,
) -> crate::Result<()> {
    let mut waiting: Vec<Waiting> = Vec::new();
    let mut failures = 0u32;
    let mut retry_at: Option<Instant> = None;
    let mut last_error = String::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut open = true;
    while open || ingester.pending_rows() > 0 || !waiting.is_empty() {
        if open {
            tokio::select! {
                job = rx.recv() => match job {
                    Some(job) => {
                        if failures > 0 && ingester.pending_rows() >= options.max_buffered_rows {
                            let _ = job.reply.send(Err(WriteError::StoreUnavailable(last_error.clone())));
                            continue;
                        }
                        match ingest_all(&mut ingester, &metrics, job.envelopes).await {
                            Ok(outcomes) if ingester.pending_rows() == 0 => {
                                let _ = job.reply.send(Ok(outcomes));
                            }
                            Ok(outcomes) => waiting.push(Waiting {
                                since: Instant::now(),
                                outcomes,
                                reply: job.reply,
                            }),
                            Err(e) => {
                                tracing::error!(error = %e, "Reading the store for de-duplication failed.");
                                let _ = job.reply.send(Err(WriteError::StoreUnavailable(e.to_string())));
                            }
                        }
                    }
                    None => open = false,
                },
                _ = tick.tick() => {}
            }
        } else if retry_at.is_some() {
            tick.tick().await;
        }
        let due = !open
            || ingester.should_flush()
            || waiting
                .first()
                .is_some_and(|w| w.since.elapsed() >= options.commit_interval);
        if !due || retry_at.is_some_and(|t| Instant::now() < t) {
            continue;
        }
        match flush_recorded(&mut ingester, &metrics).await {
            Ok(_) => {
                failures = 0;
                retry_at = None;
                for w in waiting.drain(..) {
                    let _ = w.reply.send(Ok(w.outcomes));
                }
            }
            Err(e) => {
                last_error = e.to_string();
                retry_at = Some(Instant::now() + backoff(failures));
                failures += 1;
                let (late, keep): (Vec<_>, Vec<_>) = waiting
                    .drain(..)
                    .partition(|w| w.since.elapsed() >= options.answer_timeout);
                waiting = keep;
                for w in late {
                    let _ = w
                        .reply
                        .send(Err(WriteError::StoreUnavailable(last_error.clone())));
                }
                if !open && failures > 5 {
                    tracing::error!(
                        rows = ingester.pending_rows(),
                        "Giving up at shutdown: the store still fails; these rows were never acknowledged."
                    );
                    for w in waiting.drain(..) {
                        let _ = w
                            .reply
                            .send(Err(WriteError::StoreUnavailable(last_error.clone())));
                    }
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

async fn ingest_all(
    ingester: &mut Ingester,
    metrics: &Metrics,
    envelopes: Vec<Item>,
) -> crate::Result<Vec<Outcome>> {
    let mut outcomes = Vec::with_capacity(envelopes.len());
    for (env, event) in envelopes {
        let outcome = match event {
            Some(event) => match ingester.push(*event).await? {
                Pushed::Accepted => Outcome::Accepted,
                Pushed::Duplicate => Outcome::Duplicate,
            },
            None => ingester.ingest_envelope(&env).await?,
        };
        // Rejections the receiver made are counted there.
        if env.rejected.is_none() {
            record_outcome(metrics, env.origin.as_str(), &outcome);
        }
        outcomes.push(outcome);
    }
    metrics.set(metrics::PENDING_ROWS, &[], ingester.pending_rows() as f64);
    Ok(outcomes)
}
