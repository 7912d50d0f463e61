//! The in-process writer of `cdlake standalone`: receivers hand it envelopes through a channel
//! and get their outcomes back once the rows are durably committed, so a 2xx answer means the
//! events are in the store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::HashSet;

use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use crate::ingester::{FlushReport, Ingester, Outcome, Pending, Pushed};
use crate::metrics::{self, Metrics, record_flush, record_outcome};
use crate::retry::backoff;
use crate::sink::{Item, Sink, SinkError};

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

impl Sink for WriterHandle {
    fn submit(&self, items: Vec<Item>) -> BoxFuture<'_, Result<Vec<Outcome>, SinkError>> {
        Box::pin(async move {
            WriterHandle::submit(self, items).await.map_err(|e| {
                let message = match e {
                    WriteError::StoreUnavailable(_) => {
                        "the store is not accepting writes; retry later (input that was stored meanwhile is answered as a duplicate)"
                    }
                    WriteError::Stopped => "cdlake is shutting down; retry against a running cdlake",
                };
                SinkError::new(message, e)
            })
        })
    }
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

/// Commits running at once: a batch spread over thousands of partitions takes seconds to
/// commit, and a webhook arriving meanwhile must not wait for it.
const MAX_IN_FLIGHT: usize = 4;

/// A buffer this large is committed without waiting for the commit interval.
const LARGE_ROWS: usize = 5_000;
const LARGE_PARTITIONS: usize = 64;

/// A caller waiting for its answer.
struct Waiting {
    since: Instant,
    outcomes: Vec<Outcome>,
    reply: Reply,
    /// Its rows are in a commit (or it had none to commit).
    taken: bool,
    /// Commits it waits for: the one holding its rows, and those that were running when it
    /// arrived (a row it duplicated may be in one of them).
    deps: HashSet<u64>,
}

/// A commit running beside the writer.
struct Flush {
    id: u64,
    pending: Pending,
    result: crate::Result<FlushReport>,
}

async fn run(
    mut ingester: Ingester,
    metrics: Arc<Metrics>,
    options: WriterOptions,
    mut rx: mpsc::Receiver<Job>,
) -> crate::Result<()> {
    let mut waiting: Vec<Waiting> = Vec::new();
    let mut commits = Commits::default();
    let mut failures = 0u32;
    let mut retry_at: Option<Instant> = None;
    let mut last_error = String::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut open = true;
    while open || ingester.pending_rows() > 0 || !waiting.is_empty() || !commits.flushes.is_empty()
    {
        tokio::select! {
            job = rx.recv(), if open => match job {
                Some(job) => {
                    if failures > 0 && ingester.pending_rows() >= options.max_buffered_rows {
                        let _ = job.reply.send(Err(WriteError::StoreUnavailable(last_error.clone())));
                        continue;
                    }
                    // A large submission goes into a commit of its own: what callers before
                    // it sent is committed first, not held back by its many rows or dates.
                    if job.envelopes.len() >= LARGE_PARTITIONS
                        && ingester.pending_rows() > 0
                        && failures == 0
                        && commits.flushes.len() < MAX_IN_FLIGHT
                    {
                        commits.start(&mut ingester, &metrics, &mut waiting);
                    }
                    let before = ingester.pending_rows();
                    let started = Instant::now();
                    let ingested = ingest_all(&mut ingester, &metrics, job.envelopes).await;
                    tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, "Buffered a submission.");
                    match ingested {
                        Ok(outcomes) => {
                            // A duplicate may be of a row still being committed: its answer
                            // waits for the commits running now. New rows wait for their own.
                            let duplicates = outcomes.contains(&Outcome::Duplicate);
                            waiting.push(Waiting {
                                since: Instant::now(),
                                outcomes,
                                reply: job.reply,
                                taken: ingester.pending_rows() == before,
                                deps: if duplicates { commits.running.clone() } else { HashSet::new() },
                            });
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "Reading the store for de-duplication failed.");
                            let _ = job.reply.send(Err(WriteError::StoreUnavailable(e.to_string())));
                        }
                    }
                }
                None => open = false,
            },
            Some(done) = commits.flushes.join_next(), if !commits.flushes.is_empty() => {
                let done = match done {
                    Ok(done) => done,
                    Err(e) => {
                        // A commit task panicked: its rows are lost to this process; its
                        // callers are told to retry (a retry of what did land is a duplicate).
                        tracing::error!(error = %e, "A commit task failed; its callers are answered with an error.");
                        if let Some(id) = commits.tasks.remove(&e.id()) {
                            commits.running.remove(&id);
                            let (failed, keep): (Vec<_>, Vec<_>) =
                                waiting.drain(..).partition(|w| w.deps.contains(&id));
                            waiting = keep;
                            for w in failed {
                                let _ = w.reply.send(Err(WriteError::StoreUnavailable(
                                    "the commit failed unexpectedly".into(),
                                )));
                            }
                        }
                        continue;
                    }
                };
                commits.tasks.retain(|_, id| *id != done.id);
                commits.running.remove(&done.id);
                match done.result {
                    Ok(report) => {
                        failures = 0;
                        retry_at = None;
                        ingester.absorb(&report);
                        for w in &mut waiting {
                            w.deps.remove(&done.id);
                        }
                    }
                    Err(e) => {
                        last_error = e.to_string();
                        retry_at = Some(Instant::now() + backoff(failures));
                        failures += 1;
                        ingester.restore(done.pending);
                        for w in &mut waiting {
                            if w.deps.remove(&done.id) && w.taken {
                                // Its rows are buffered again: committed by a later flush.
                                w.taken = false;
                            }
                        }
                        if !open && failures > 5 {
                            tracing::error!(
                                rows = ingester.pending_rows(),
                                "Giving up at shutdown: the store still fails; these rows were never acknowledged."
                            );
                            for w in waiting.drain(..) {
                                let _ = w.reply.send(Err(WriteError::StoreUnavailable(last_error.clone())));
                            }
                            commits.flushes.shutdown().await;
                            return Err(e);
                        }
                    }
                }
                metrics.set(metrics::PENDING_ROWS, &[], ingester.pending_rows() as f64);
            },
            _ = tick.tick() => {}
        }
        // Answer those whose rows are committed, and, while the store fails, those that
        // waited too long (their rows stay buffered; a retry is a duplicate).
        let (ready, keep): (Vec<_>, Vec<_>) = waiting
            .drain(..)
            .partition(|w| w.taken && w.deps.is_empty());
        waiting = keep;
        for w in ready {
            let _ = w.reply.send(Ok(w.outcomes));
        }
        if failures > 0 {
            let (late, keep): (Vec<_>, Vec<_>) = waiting
                .drain(..)
                .partition(|w| w.since.elapsed() >= options.answer_timeout);
            waiting = keep;
            for w in late {
                let _ = w
                    .reply
                    .send(Err(WriteError::StoreUnavailable(last_error.clone())));
            }
        }
        // A large batch (rows, or dates: a commit spread over many partitions takes seconds)
        // is committed at once, so what arrives after it goes into a commit of its own.
        let large = ingester.pending_rows() >= LARGE_ROWS
            || ingester.pending_partitions() >= LARGE_PARTITIONS;
        let due = !open
            || large
            || ingester.should_flush()
            || waiting
                .iter()
                .any(|w| !w.taken && w.since.elapsed() >= options.commit_interval);
        let ready = retry_at.is_none_or(|t| Instant::now() >= t);
        if due && ready && ingester.pending_rows() > 0 && commits.flushes.len() < MAX_IN_FLIGHT {
            commits.start(&mut ingester, &metrics, &mut waiting);
        }
    }
    Ok(())
}

/// The commits running beside the writer, by id.
#[derive(Default)]
struct Commits {
    flushes: JoinSet<Flush>,
    /// The ids of the commits running now.
    running: HashSet<u64>,
    tasks: std::collections::HashMap<tokio::task::Id, u64>,
    next_id: u64,
}

impl Commits {
    /// Commit what the ingester buffered, beside the writer; the callers whose rows it takes
    /// wait for it.
    fn start(&mut self, ingester: &mut Ingester, metrics: &Arc<Metrics>, waiting: &mut [Waiting]) {
        let id = self.next_id;
        self.next_id += 1;
        self.running.insert(id);
        for w in waiting.iter_mut().filter(|w| !w.taken) {
            w.taken = true;
            w.deps.insert(id);
        }
        let pending = ingester.take_pending();
        let committer = ingester.committer();
        let metrics = metrics.clone();
        let handle = self.flushes.spawn(async move {
            let mut pending = pending;
            let started = Instant::now();
            let result = pending.commit(&committer).await;
            record_flush(&metrics, started, &result);
            Flush {
                id,
                pending,
                result,
            }
        });
        self.tasks.insert(handle.id(), id);
    }
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
            None => crate::sources::ingest(ingester, &env).await?,
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
