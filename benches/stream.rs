//! Streaming: sustained events/s from a real `nats-server` JetStream through a real
//! `cdlake ingest` process into Parquet, and publish-to-queryable latency at a fixed rate.
//!
//! Needs `nats-server` on the PATH and a `cdlake` binary (`CDLAKE_BIN`, default
//! `target/release/cdlake`). Run by `scripts/bench`. Prints JSON Lines.
//!
//! - Throughput: `BENCH_STREAM_EVENTS` (default 300,000) events are published first, then
//!   `cdlake ingest` starts with default settings and drains the backlog; the rate is events
//!   over the time from its start to its last commit (start-up included), and the sustained
//!   rate from its first commit to its last. Peak RSS is the process's `VmHWM`.
//! - Baseline: the same backlog drained by a plain JetStream pull consumer in this process, on
//!   one thread: batches of 5,000 messages decoded by arrow-json into the CDEvents fields plus the
//!   payload, one Parquet file per batch (cdlake's encoder settings) written to local disk, then
//!   every message acknowledged. It is streaming ingest without normalising, de-duplication,
//!   date partitions or Delta commits; cdlake's rate is quoted as a ratio to it.
//! - Latency: with the ingester running, `BENCH_RATE` (default 10,000) events/s for
//!   `BENCH_SECONDS` (default 20) s, each carrying its publish time as its event time; the
//!   latency of an event is its file's commit time (the file's mtime) minus that time.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use async_nats::HeaderMap;
use async_nats::jetstream;
use bytes::Bytes;
use serde_json::json;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn event(i: u64, micros: i64) -> String {
    let t = chrono::DateTime::from_timestamp_micros(micros).expect("time");
    json!({
        "context": {"version": "0.4.1", "id": format!("bench-{i}"), "source": "/bench/ci",
                    "type": "dev.cdevents.pipelinerun.finished.0.1.1",
                    "timestamp": t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)},
        "subject": {"id": format!("run-{i}"), "source": "/bench/ci", "type": "pipelineRun",
                    "content": {"pipelineName": format!("build-{}", i % 50), "outcome": "success",
                                "url": format!("https://ci.example/runs/{i}")}},
        "customData": {"team": format!("team-{}", i % 9), "note": "x".repeat(600)}
    })
    .to_string()
}

async fn publish(
    js: &jetstream::Context,
    i: u64,
    body: String,
) -> jetstream::context::PublishAckFuture {
    let mut h = HeaderMap::new();
    h.insert("Cdlake-Origin", "cdevents");
    h.insert("Nats-Msg-Id", format!("bench-{i}").as_str());
    js.publish_with_headers(
        "cdlake.events.cdevents.pipelinerun.finished",
        h,
        Bytes::from(body),
    )
    .await
    .expect("publish")
}

async fn metric(port: u16, name: &str) -> f64 {
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return 0.0;
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = s
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    let mut text = String::new();
    let _ = s.read_to_string(&mut text).await;
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn start_ingest(bin: &Path, store: &Path, nats: &str, metrics_port: u16) -> Killed {
    Killed(
        Command::new(bin)
            .args(["ingest", "--store"])
            .arg(store)
            .args(["--nats", nats, "--metrics-listen"])
            .arg(format!("127.0.0.1:{metrics_port}"))
            .args(["--compact-every-secs", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start cdlake ingest"),
    )
}

/// Wait until `n` events are committed. Returns when the first commit was seen (with the
/// count then) and when the last one was, or `None` after `limit`.
async fn wait_committed(port: u16, n: f64, limit: Duration) -> Option<((Instant, f64), Instant)> {
    let start = Instant::now();
    let mut first = None;
    while start.elapsed() < limit {
        let committed = metric(port, "cdlake_committed_events_total").await;
        if committed > 0.0 && first.is_none() {
            first = Some((Instant::now(), committed));
        }
        if committed >= n {
            return Some((first.expect("seen above"), Instant::now()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Every stored event's latency: its file's mtime minus its event time (µs).
fn latencies(store: &Path) -> Vec<f64> {
    use arrow::array::{Array, TimestampMicrosecondArray};
    use parquet::arrow::ProjectionMask;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let mut out = Vec::new();
    let mut stack = vec![store.join("events")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path: PathBuf = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "parquet") {
                continue;
            }
            let mtime = entry
                .metadata()
                .and_then(|m| m.modified())
                .expect("mtime")
                .duration_since(SystemTime::UNIX_EPOCH)
                .expect("after 1970")
                .as_micros() as i64;
            let file = std::fs::File::open(&path).expect("open");
            let builder = ParquetRecordBatchReaderBuilder::try_new(file).expect("parquet");
            let idx = builder
                .parquet_schema()
                .columns()
                .iter()
                .position(|c| c.name() == "time")
                .expect("time column");
            let mask = ProjectionMask::leaves(builder.parquet_schema(), [idx]);
            for b in builder.with_projection(mask).build().expect("reader") {
                let b = b.expect("batch");
                let t = b
                    .column(0)
                    .as_any()
                    .downcast_ref::<TimestampMicrosecondArray>()
                    .expect("timestamps");
                for i in 0..t.len() {
                    out.push((mtime - t.value(i)) as f64 / 1e6);
                }
            }
        }
    }
    out
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// The CDEvents fields the baseline decodes, as arrow-json sees them.
fn baseline_schema() -> arrow::datatypes::SchemaRef {
    use arrow::datatypes::{DataType, Field, Fields, Schema};
    let s = |n: &str| Field::new(n, DataType::Utf8, true);
    let context = Fields::from(vec![
        s("id"),
        s("source"),
        s("type"),
        s("timestamp"),
        s("version"),
    ]);
    let content = Fields::from(vec![s("pipelineName"), s("outcome"), s("url")]);
    let subject = Fields::from(vec![
        s("id"),
        s("source"),
        s("type"),
        Field::new("content", DataType::Struct(content), true),
    ]);
    std::sync::Arc::new(Schema::new(vec![
        Field::new("context", DataType::Struct(context), true),
        Field::new("subject", DataType::Struct(subject), true),
    ]))
}

/// Drain `n` messages of the stream with a plain pull consumer of its own (see the module
/// documentation); the time from its creation to the last acknowledgement.
async fn baseline(js: &jetstream::Context, n: u64, out: &Path) -> Duration {
    use arrow::array::{ArrayRef, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use cdlake_ingest::parquet::{EncodeOptions, encode, writer_properties};
    use futures::StreamExt;
    std::fs::create_dir_all(out).expect("baseline dir");
    let schema = baseline_schema();
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("payload", DataType::Utf8, false));
    let out_schema = std::sync::Arc::new(Schema::new(fields));
    let props = writer_properties(&out_schema, "time", &EncodeOptions::default());
    let started = Instant::now();
    let stream = js
        .get_stream(cdlake_ingest::stream::stream_config().name)
        .await
        .expect("stream");
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some("bench-baseline".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            max_ack_pending: 20_000,
            ..Default::default()
        })
        .await
        .expect("consumer");
    let mut decoder = arrow::json::ReaderBuilder::new(schema.clone())
        .with_batch_size(5_000)
        .build_decoder()
        .expect("decoder");
    let (mut done, mut file) = (0u64, 0u64);
    while done < n {
        let mut batch = consumer
            .fetch()
            .max_messages(5_000)
            .expires(Duration::from_secs(1))
            .messages()
            .await
            .expect("fetch");
        let mut messages = Vec::new();
        while let Some(m) = batch.next().await {
            messages.push(m.expect("message"));
        }
        if messages.is_empty() {
            continue;
        }
        for m in &messages {
            decoder.decode(&m.payload).expect("decode");
        }
        let decoded = decoder.flush().expect("flush").expect("rows");
        let payload: ArrayRef = std::sync::Arc::new(StringArray::from_iter_values(
            messages.iter().map(|m| String::from_utf8_lossy(&m.payload)),
        ));
        let mut columns = decoded.columns().to_vec();
        columns.push(payload);
        let rows = RecordBatch::try_new(out_schema.clone(), columns).expect("batch");
        let bytes = encode(&out_schema, &[rows], props.clone()).expect("encode");
        std::fs::write(out.join(format!("{file}.parquet")), bytes).expect("write");
        file += 1;
        for m in &messages {
            m.ack().await.expect("ack");
        }
        done += messages.len() as u64;
    }
    started.elapsed()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let bin = PathBuf::from(
        std::env::var("CDLAKE_BIN").unwrap_or_else(|_| "target/release/cdlake".into()),
    );
    assert!(
        bin.exists(),
        "no cdlake binary at {}: set CDLAKE_BIN",
        bin.display()
    );
    let n = env_u64("BENCH_STREAM_EVENTS", 300_000);
    let rate = env_u64("BENCH_RATE", 10_000);
    let seconds = env_u64("BENCH_SECONDS", 20);
    let dir = tempfile::tempdir().expect("tempdir");
    let nats_port = free_port();
    let _nats = Killed(
        Command::new("nats-server")
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &nats_port.to_string(),
                "-sd",
            ])
            .arg(dir.path().join("nats"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server on the PATH"),
    );
    let url = format!("nats://127.0.0.1:{nats_port}");
    let client = cdlake_ingest::stream::connect(&url, "bench")
        .await
        .expect("nats");
    let js = jetstream::new(client);
    cdlake_ingest::stream::ensure_stream(&js)
        .await
        .expect("stream");

    // Throughput: a backlog drained by a fresh ingester.
    eprintln!("stream bench: publishing {n} events");
    let now = chrono::Utc::now().timestamp_micros();
    let mut acks = Vec::new();
    for i in 0..n {
        acks.push(publish(&js, i, event(i, now - 3_600_000_000 + i as i64)).await);
        if acks.len() >= 5_000 {
            for a in acks.drain(..) {
                a.await.expect("ack");
            }
        }
    }
    for a in acks.drain(..) {
        a.await.expect("ack");
    }
    let store = dir.path().join("store");
    let port = free_port();
    eprintln!("stream bench: draining with cdlake ingest");
    let started = Instant::now();
    let ingest = start_ingest(&bin, &store, &url, port);
    let ((first, at_first), last) = wait_committed(port, n as f64, Duration::from_secs(600))
        .await
        .unwrap_or_else(|| panic!("cdlake ingest did not commit {n} events in 10 minutes"));
    let drain = last - started;
    // From the first commit on: start-up and the first batch's wait left out.
    let sustained = (n as f64 - at_first) / (last - first).as_secs_f64().max(1e-3);
    let rss = peak_rss_mib(ingest.0.id());
    drop(ingest);
    eprintln!("stream bench: draining the same backlog with the baseline consumer");
    let floor = baseline(&js, n, &dir.path().join("baseline")).await;
    let floor_rate = n as f64 / floor.as_secs_f64();
    let cdlake_rate = n as f64 / drain.as_secs_f64();
    println!(
        "{}",
        json!({"bench": "stream", "name": "baseline: plain JetStream pull consumer → arrow-json → Parquet, one thread",
               "events": n, "events_per_s": floor_rate.round()})
    );
    println!(
        "{}",
        json!({"bench": "stream", "name": "JetStream backlog → cdlake ingest → Parquet",
               "events": n, "events_per_s": cdlake_rate.round(),
               "sustained_events_per_s": sustained.round(),
               "ratio_to_baseline": (cdlake_rate / floor_rate * 100.0).round() / 100.0,
               "peak_rss_mib": rss.round()})
    );

    // Latency at a fixed rate.
    let store = dir.path().join("latency");
    let port = free_port();
    let ingest = start_ingest(&bin, &store, &url, port);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let total = rate * seconds;
    eprintln!("stream bench: {rate} events/s for {seconds} s");
    let start = Instant::now();
    let mut acks = Vec::new();
    for k in 0..total {
        let due = Duration::from_secs_f64(k as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        let i = n + k;
        let micros = chrono::Utc::now().timestamp_micros();
        acks.push(publish(&js, i, event(i, micros)).await);
        if acks.len() >= 1_000 {
            for a in acks.drain(..) {
                a.await.expect("ack");
            }
        }
    }
    for a in acks.drain(..) {
        a.await.expect("ack");
    }
    let achieved = total as f64 / start.elapsed().as_secs_f64();
    assert!(
        wait_committed(port, total as f64, Duration::from_secs(120))
            .await
            .is_some(),
        "not every event was committed"
    );
    let rss = peak_rss_mib(ingest.0.id());
    drop(ingest);
    let mut l = latencies(&store);
    l.sort_by(f64::total_cmp);
    println!(
        "{}",
        json!({"bench": "stream", "name": format!("publish → queryable at {rate} events/s"),
               "events": l.len(), "achieved_rate": achieved.round(),
               "p50_s": (quantile(&l, 0.5) * 1000.0).round() / 1000.0,
               "p99_s": (quantile(&l, 0.99) * 1000.0).round() / 1000.0,
               "peak_rss_mib": rss.round()})
    );
}
