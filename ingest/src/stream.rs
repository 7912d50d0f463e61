//! NATS JetStream: the [`Publisher`] of `cdlake receive` and the durable consumer of
//! `cdlake ingest`.
//!
//! Every input is one message on the stream `CDLAKE`: accepted ones on
//! `cdlake.events.<origin>.<subject>.<predicate>` with `Nats-Msg-Id` set to the event identity
//! (JetStream drops a re-publish within its duplicate window), rejected ones on
//! `cdlake.dead.<origin>` with the reason. The body is the event row the receiver normalised
//! (as JSON, marked by the `Cdlake-Normalised` header, so the ingester does not decode the
//! delivery again), the batch of span rows, or the raw input (dead letters, and messages other
//! tools publish); the headers carry what the receiver learnt from the transport. Ingesters
//! share the durable pull consumer `cdlake-ingest`; each acknowledges a message only after the
//! Parquet file holding it is durably committed, and sends progress acks while a commit is
//! slow or failing.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind, consumer::pull, stream};
use async_nats::{HeaderMap, Subject};
use bytes::Bytes;
use cdlake_schemas::cdevents::{Reason, Rejection};
use cdlake_schemas::{Event, Origin};
use futures::StreamExt;
use futures::future::BoxFuture;

use crate::envelope::{self, Envelope, header};
use crate::ingester::{Committer, FlushReport, Ingester, Outcome, Pending, now_micros};
use crate::metrics::{self, Metrics, record_flush, record_outcome};
use crate::retry::backoff;
use crate::sink::{Item, Sink, SinkError};
use crate::sources::parse_origin;

/// The durable consumer shared by every ingester.
pub const CONSUMER: &str = "cdlake-ingest";

/// Errors talking to NATS, with what to do about them.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(
        "cannot connect to NATS at {url}: {source}; start nats-server with JetStream (-js) or pass --nats"
    )]
    Connect {
        url: String,
        source: async_nats::ConnectError,
    },
    #[error("JetStream stream {STREAM}: {0}; is JetStream enabled on the server (nats-server -js)?", STREAM = envelope::STREAM)]
    Stream(#[source] jetstream::context::CreateStreamError),
    #[error("publishing to JetStream: {0}")]
    Publish(#[source] jetstream::context::PublishError),
    #[error("encoding a normalised event: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("JetStream consumer {CONSUMER}: {0}")]
    Consumer(#[source] jetstream::stream::ConsumerError),
    #[error("the commit task of the ingester failed: {0}")]
    Flush(#[source] tokio::task::JoinError),
    #[error(transparent)]
    Ingest(#[from] crate::Error),
}

/// Connect to NATS; the client reconnects by itself when the server comes back.
pub async fn connect(url: &str, name: &str) -> Result<async_nats::Client, StreamError> {
    async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5))
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Disconnected => {
                    tracing::warn!("Disconnected from NATS; reconnecting.")
                }
                async_nats::Event::Connected => tracing::info!("Connected to NATS."),
                other => tracing::debug!(event = %other, "NATS event."),
            }
        })
        .connect(url)
        .await
        .map_err(|source| StreamError::Connect {
            url: url.to_string(),
            source,
        })
}

/// The stream's configuration: file storage, a week of replayable history.
pub fn stream_config() -> stream::Config {
    stream::Config {
        name: envelope::STREAM.to_string(),
        subjects: vec![
            envelope::EVENTS_SUBJECTS.to_string(),
            envelope::DEAD_SUBJECTS.to_string(),
        ],
        storage: stream::StorageType::File,
        max_age: Duration::from_secs(7 * 24 * 3600),
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    }
}

/// Create the stream if missing.
pub async fn ensure_stream(js: &jetstream::Context) -> Result<stream::Stream, StreamError> {
    js.get_or_create_stream(stream_config())
        .await
        .map_err(StreamError::Stream)
}

/// Publishes received inputs to JetStream, awaiting every acknowledgement.
#[derive(Clone)]
pub struct Publisher {
    js: jetstream::Context,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

/// The hex identity key of an event: its `Nats-Msg-Id`.
pub fn message_id(event: &Event) -> String {
    format!("{:032x}", event.identity_key())
}

fn headers_of(env: &Envelope, event: Option<&Event>) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::ORIGIN, env.origin.as_str());
    h.insert(header::SOURCE, env.source.as_str());
    h.insert(header::RECEIVED_AT, env.received_at.to_string());
    if !env.kind.is_empty() {
        h.insert(header::KIND, env.kind.as_str());
    }
    if !env.delivery.is_empty() {
        h.insert(header::DELIVERY, env.delivery.as_str());
    }
    if let Some(rejection) = &env.rejected {
        // Header values are single lines.
        h.insert(header::REASON, rejection.message.replace(['\r', '\n'], " "));
        h.insert(header::REASON_CLASS, rejection.reason.as_str());
    }
    if let Some(e) = event {
        h.insert(header::NORMALISED, "event");
        h.insert("Nats-Msg-Id", message_id(e));
    } else if env.origin == Origin::Otlp && env.rejected.is_none() && !env.delivery.is_empty() {
        h.insert("Nats-Msg-Id", format!("spans-{}", env.delivery));
    }
    h
}

impl Publisher {
    /// A publisher on `client`, creating the stream if missing.
    pub async fn new(
        client: async_nats::Client,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StreamError> {
        let js = jetstream::new(client);
        ensure_stream(&js).await?;
        Ok(Publisher { js, metrics })
    }

    /// Publish each envelope (with its decoded event; `None` for a rejected one) and await
    /// every acknowledgement. An input JetStream reports as a duplicate is `Duplicate`.
    #[tracing::instrument(name = "publish", skip_all, fields(messages = items.len()))]
    pub async fn publish(&self, items: &[Item]) -> Result<Vec<Outcome>, StreamError> {
        let mut acks = Vec::with_capacity(items.len());
        for (env, event) in items {
            let subject = env.subject(event.as_deref());
            // An event the receiver normalised travels as that row: the ingester takes it as
            // it is instead of decoding and normalising the delivery again.
            let body = match event {
                Some(e) => Bytes::from(serde_json::to_vec(e).map_err(StreamError::Encode)?),
                None => env.body.clone(),
            };
            let ack = self
                .js
                .publish_with_headers(subject, headers_of(env, event.as_deref()), body)
                .await
                .map_err(StreamError::Publish)?;
            acks.push(ack);
        }
        let mut outcomes = Vec::with_capacity(items.len());
        for ((env, _), ack) in items.iter().zip(acks) {
            let ack = ack.await.map_err(StreamError::Publish)?;
            let origin = env.origin.as_str();
            outcomes.push(match &env.rejected {
                Some(reason) => Outcome::Rejected(reason.clone()),
                None if ack.duplicate => {
                    self.metrics.inc(metrics::DUPLICATE, &[("origin", origin)]);
                    Outcome::Duplicate
                }
                None => {
                    self.metrics.inc(metrics::PUBLISHED, &[("origin", origin)]);
                    Outcome::Accepted
                }
            });
        }
        Ok(outcomes)
    }
}

impl Sink for Publisher {
    fn submit(&self, items: Vec<Item>) -> BoxFuture<'_, Result<Vec<Outcome>, SinkError>> {
        Box::pin(async move {
            self.publish(&items).await.map_err(|e| {
                SinkError::new(
                    "JetStream did not acknowledge the input; retry later (input that was published meanwhile is answered as a duplicate)",
                    e,
                )
            })
        })
    }
}

/// The envelope a stream message carries. Messages published by other tools (no cdlake
/// headers) are CDEvents; the origin then comes from the subject.
pub fn envelope_of(subject: &str, headers: Option<&HeaderMap>, payload: Bytes) -> Envelope {
    // One pass over the headers: `HeaderMap::get` builds and validates a name per call.
    let (mut origin_h, mut kind, mut delivery, mut source, mut received, mut reason) =
        (None, None, None, None, None, None);
    let (mut normalised, mut class) = (None, None);
    for (name, values) in headers.into_iter().flat_map(|h| h.iter()) {
        let Some(value) = values.first().map(|v| v.as_str()).filter(|v| !v.is_empty()) else {
            continue;
        };
        let slot = match AsRef::<str>::as_ref(name) {
            n if n.eq_ignore_ascii_case(header::ORIGIN) => &mut origin_h,
            n if n.eq_ignore_ascii_case(header::KIND) => &mut kind,
            n if n.eq_ignore_ascii_case(header::DELIVERY) => &mut delivery,
            n if n.eq_ignore_ascii_case(header::SOURCE) => &mut source,
            n if n.eq_ignore_ascii_case(header::RECEIVED_AT) => &mut received,
            n if n.eq_ignore_ascii_case(header::REASON) => &mut reason,
            n if n.eq_ignore_ascii_case(header::NORMALISED) => &mut normalised,
            n if n.eq_ignore_ascii_case(header::REASON_CLASS) => &mut class,
            _ => continue,
        };
        *slot = Some(value);
    }
    let mut parts = subject.split('.');
    let (kind_token, origin_token) = (parts.nth(1), parts.next());
    let origin = origin_h
        .and_then(parse_origin)
        .or_else(|| origin_token.and_then(parse_origin))
        .unwrap_or(cdlake_schemas::Origin::CdEvents);
    let rejected = if kind_token == Some("dead") {
        Some(Rejection::new(
            class.and_then(Reason::parse).unwrap_or(Reason::Invalid),
            reason.unwrap_or("rejected by the receiver"),
        ))
    } else {
        None
    };
    Envelope {
        origin,
        kind: kind.unwrap_or_default().to_string(),
        delivery: delivery.unwrap_or_default().to_string(),
        source: source.map_or_else(|| format!("nats:{subject}"), str::to_string),
        received_at: received
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(now_micros),
        normalised: rejected.is_none() && normalised == Some("event"),
        rejected,
        body: payload,
    }
}

/// How the ingester consumes.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    pub durable: String,
    /// Redelivery after this long without an ack (progress acks extend it).
    pub ack_wait: Duration,
    /// Messages a consumer may hold unacknowledged; above the ingester's flush size.
    pub max_ack_pending: i64,
    /// Messages per pull request.
    pub batch: usize,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        ConsumerOptions {
            durable: CONSUMER.to_string(),
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 200_000,
            batch: 5_000,
        }
    }
}

async fn ensure_consumer(
    js: &jetstream::Context,
    options: &ConsumerOptions,
) -> Result<jetstream::consumer::Consumer<pull::Config>, StreamError> {
    let stream = ensure_stream(js).await?;
    stream
        .get_or_create_consumer(
            &options.durable,
            pull::Config {
                durable_name: Some(options.durable.clone()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: options.ack_wait,
                max_ack_pending: options.max_ack_pending,
                max_deliver: -1,
                ..Default::default()
            },
        )
        .await
        .map_err(StreamError::Consumer)
}

/// Publish `body` to each reply subject; returns how many could not be sent.
async fn reply_all(client: &async_nats::Client, replies: &[Subject], body: &'static [u8]) -> usize {
    let mut failed = 0;
    for reply in replies {
        let sent = client
            .publish(reply.clone(), Bytes::from_static(body))
            .await;
        failed += usize::from(sent.is_err());
    }
    failed
}

/// Acknowledge messages by their reply subjects (`+ACK`), then flush the connection so the
/// acks are on the wire. Returns how many could not be sent. An ack lost on the way only means
/// a redelivery, which the ingester recognises as a duplicate (by identity, in memory or in the
/// store) and acks again; a per-message confirmation would double the server's work for nothing.
async fn ack_all(client: &async_nats::Client, replies: &[Subject]) -> usize {
    let failed = reply_all(client, replies, b"+ACK").await;
    if client.flush().await.is_err() {
        tracing::warn!(
            "Flushing acknowledgements to NATS failed; unacknowledged messages will be redelivered."
        );
    }
    failed
}

/// Tell the server the messages (by reply subject) are still being worked on (`+WPI`), which
/// restarts their `ack_wait`.
async fn progress_all(client: &async_nats::Client, replies: &[Subject]) {
    reply_all(client, replies, b"+WPI").await;
}

/// A flush running beside the consumer: the rows it commits and the messages it acks after.
struct Flush {
    pending: Pending,
    messages: Vec<Subject>,
    result: crate::Result<FlushReport>,
}

/// Commit `pending` in a task of its own, sending progress acks for `messages` while the
/// commit takes long, and ack them once it succeeded. On failure both come back.
fn spawn_flush(
    client: async_nats::Client,
    committer: Committer,
    mut pending: Pending,
    mut messages: Vec<Subject>,
    metrics: Arc<Metrics>,
    ack_wait: Duration,
) -> tokio::task::JoinHandle<Flush> {
    let span = tracing::info_span!("consume", messages = messages.len());
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            let started = Instant::now();
            let result = {
                let commit = pending.commit(&committer);
                let mut commit = std::pin::pin!(commit);
                let mut progress = tokio::time::interval(ack_wait / 3);
                progress.tick().await;
                loop {
                    tokio::select! {
                        r = &mut commit => break r,
                        _ = progress.tick() => progress_all(&client, &messages).await,
                    }
                }
            };
            record_flush(&metrics, started, &result);
            if result.is_ok() {
                record_acks(&metrics, ack_all(&client, &messages).await, messages.len());
                messages.clear();
            }
            Flush {
                pending,
                messages,
                result,
            }
        },
        span,
    ))
}

/// Consume the stream into `ingester` until `shutdown` resolves, then commit and ack what is
/// buffered. Reconnects and re-creates the consumer by itself after broker restarts.
///
/// Commits run beside the consumer, one at a time: while a flush encodes and writes, the next
/// batch is pulled and decoded. A flush starts only after the previous one committed, so acks
/// follow commit order; a failed flush is retried alone, under the same file names, before
/// anything newer, and no input is taken until it succeeds.
pub async fn consume(
    client: async_nats::Client,
    mut ingester: Ingester,
    metrics: Arc<Metrics>,
    options: ConsumerOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StreamError> {
    let js = jetstream::new(client.clone());
    let mut shutdown = std::pin::pin!(shutdown);
    // Consumed messages whose rows are buffered in the ingester (or were duplicates).
    let mut waiting: Vec<Subject> = Vec::new();
    let mut running: Option<tokio::task::JoinHandle<Flush>> = None;
    // A flush that failed, with its messages, waiting for `retry_at`.
    let mut failed: Option<(Pending, Vec<Subject>)> = None;
    let mut failures = 0u32;
    let mut retry_at = Instant::now();
    let mut last_progress = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopping = false;
    let mut setup_failures = 0u32;
    let mut counts = Counts::default();
    'connect: while !stopping {
        let consumer = tokio::select! {
            c = ensure_consumer(&js, &options) => c,
            _ = &mut shutdown => break 'connect,
        };
        let mut messages = match consumer {
            Ok(c) => match c
                .stream()
                .max_messages_per_batch(options.batch)
                .heartbeat(Duration::from_secs(5))
                .expires(Duration::from_secs(30))
                .messages()
                .await
            {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "Cannot pull from JetStream; retrying.");
                    tokio::time::sleep(backoff(setup_failures)).await;
                    setup_failures += 1;
                    continue 'connect;
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "Cannot set up the JetStream consumer; retrying.");
                tokio::time::sleep(backoff(setup_failures)).await;
                setup_failures += 1;
                continue 'connect;
            }
        };
        setup_failures = 0;
        tracing::info!(consumer = %options.durable, "Consuming JetStream stream {}.", envelope::STREAM);
        loop {
            // While a commit fails, take no input (messages wait in the stream); while one
            // runs, take input until the buffer is full.
            let accepting = failed.is_none() && !(running.is_some() && ingester.is_full());
            tokio::select! {
                biased;
                _ = &mut shutdown, if !stopping => { stopping = true; }
                done = async { running.as_mut().expect("guarded").await }, if running.is_some() => {
                    running = None;
                    let done = done.map_err(StreamError::Flush)?;
                    match done.result {
                        Ok(report) => {
                            failures = 0;
                            ingester.absorb(&report);
                        }
                        Err(e) => {
                            retry_at = Instant::now() + backoff(failures);
                            failures += 1;
                            if stopping && failures > 5 {
                                return Err(e.into());
                            }
                            failed = Some((done.pending, done.messages));
                        }
                    }
                }
                next = messages.next(), if accepting && !stopping => match next {
                    Some(Ok(msg)) => {
                        let env = envelope_of(msg.subject.as_str(), msg.headers.as_ref(), msg.payload.clone());
                        if let Ok(info) = msg.info() {
                            counts.redelivered += u64::from(info.delivered > 1);
                            counts.consumer_pending = Some(info.pending);
                        }
                        counts.received(env.origin);
                        match crate::sources::ingest(&mut ingester, &env).await {
                            Ok(outcome) => {
                                if env.rejected.is_none() {
                                    record_outcome(&metrics, env.origin.as_str(), &outcome);
                                }
                                // Only the reply subject is kept, to acknowledge it: the
                                // body lives on in the decoded row.
                                match msg.message.reply {
                                    Some(reply) => waiting.push(reply),
                                    None => tracing::warn!("A message without a reply subject cannot be acknowledged."),
                                }
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "Reading the store for de-duplication failed; the message will be redelivered.");
                                let _ = msg.ack_with(AckKind::Nak(Some(Duration::from_secs(5)))).await;
                            }
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "Pulling from JetStream failed; re-creating the consumer.");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue 'connect;
                    }
                    None => continue 'connect,
                },
                _ = tick.tick() => {
                    counts.record(&metrics);
                    metrics.set(metrics::PENDING_ROWS, &[], ingester.pending_rows() as f64);
                }
            }
            let idle = running.is_none() && failed.is_none();
            if idle && ingester.pending_rows() == 0 && !waiting.is_empty() {
                // Everything consumed so far is already durable (duplicates, pings).
                record_acks(&metrics, ack_all(&client, &waiting).await, waiting.len());
                waiting.clear();
            }
            if running.is_none() && Instant::now() >= retry_at {
                let start = match failed.take() {
                    Some(retry) => Some(retry),
                    None if (stopping || ingester.should_flush())
                        && ingester.pending_rows() > 0 =>
                    {
                        counts.record(&metrics);
                        Some((ingester.take_pending(), std::mem::take(&mut waiting)))
                    }
                    None => None,
                };
                if let Some((pending, msgs)) = start {
                    running = Some(spawn_flush(
                        client.clone(),
                        ingester.committer(),
                        pending,
                        msgs,
                        metrics.clone(),
                        options.ack_wait,
                    ));
                }
            }
            if last_progress.elapsed() >= options.ack_wait / 3 {
                progress_all(&client, &waiting).await;
                if let Some((_, msgs)) = &failed {
                    progress_all(&client, msgs).await;
                }
                last_progress = Instant::now();
            }
            if stopping
                && ingester.pending_rows() == 0
                && waiting.is_empty()
                && running.is_none()
                && failed.is_none()
            {
                break 'connect;
            }
        }
    }
    counts.record(&metrics);
    tracing::info!("Ingester stopped; everything consumed is committed and acknowledged.");
    Ok(())
}

/// Per-message counters, added to the metrics a few times a second rather than per message.
#[derive(Default)]
struct Counts {
    received: Vec<(Origin, u64)>,
    redelivered: u64,
    consumer_pending: Option<u64>,
}

impl Counts {
    fn received(&mut self, origin: Origin) {
        match self.received.iter_mut().find(|(o, _)| *o == origin) {
            Some((_, n)) => *n += 1,
            None => self.received.push((origin, 1)),
        }
    }

    fn record(&mut self, metrics: &Metrics) {
        for (origin, n) in self.received.drain(..) {
            metrics.add(metrics::RECEIVED, &[("origin", origin.as_str())], n as f64);
        }
        if self.redelivered > 0 {
            metrics.add(
                metrics::REDELIVERED,
                &[],
                std::mem::take(&mut self.redelivered) as f64,
            );
        }
        if let Some(p) = self.consumer_pending.take() {
            metrics.set(metrics::CONSUMER_PENDING, &[], p as f64);
        }
    }
}

fn record_acks(metrics: &Metrics, failed: usize, total: usize) {
    if failed > 0 {
        tracing::warn!(
            failed,
            "Some acknowledgements failed; those messages will be redelivered and dropped as duplicates."
        );
    }
    metrics.add(metrics::ACKED, &[], total.saturating_sub(failed) as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_messages_are_cdevents_and_dead_subjects_carry_the_reason() {
        let env = envelope_of(
            "cdlake.events.gitlab.change.merged",
            None,
            Bytes::from_static(b"{}"),
        );
        assert_eq!(env.origin, cdlake_schemas::Origin::Gitlab);
        assert_eq!(env.rejected, None);
        assert_eq!(env.source, "nats:cdlake.events.gitlab.change.merged");

        let mut h = HeaderMap::new();
        h.insert(header::REASON, "malformed JSON: eof");
        h.insert(header::ORIGIN, "github");
        h.insert(header::RECEIVED_AT, "1700000000000000");
        let env = envelope_of("cdlake.dead.github", Some(&h), Bytes::from_static(b"{"));
        assert_eq!(env.origin, cdlake_schemas::Origin::Github);
        assert_eq!(
            env.rejected,
            Some(Rejection::new(Reason::Invalid, "malformed JSON: eof"))
        );
        h.insert(header::REASON_CLASS, "malformed_json");
        let env = envelope_of("cdlake.dead.github", Some(&h), Bytes::from_static(b"{"));
        assert_eq!(
            env.rejected,
            Some(Rejection::malformed_json("malformed JSON: eof"))
        );
        assert_eq!(env.received_at, 1_700_000_000_000_000);
    }
}
