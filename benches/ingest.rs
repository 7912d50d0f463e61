//! Ingest limit ratio: events/s per core from JSON bytes to committed Parquet through cdlake's
//! real ingest path (decode, normalise, de-duplicate, batch, sort, encode, commit), against the
//! floor of the same work measured in the same run: `arrow-json` decoding the same bytes one
//! message at a time into an Arrow schema of the fields cdlake extracts, plus the raw payload,
//! then `ArrowWriter` with the same writer properties and the same commit.
//!
//! Run by `scripts/bench` (or `cargo bench -p cdlake-ingest --bench ingest`). Prints JSON Lines.
//! `BENCH_INGEST_EVENTS` sets the number of events (default 200,000); `BENCH_REPEAT` the runs
//! (best of, default 3).

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use arrow::json::ReaderBuilder;
use cdlake_demo::{DemoSpec, generate};
use cdlake_ingest::parquet::{EncodeOptions, encode, writer_properties};
use cdlake_ingest::{Ingester, IngesterConfig};
use cdlake_schemas::Origin;
use cdlake_schemas::store::Store;
use serde_json::json;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The CDEvents fields cdlake reads, as arrow-json sees them.
fn floor_schema() -> SchemaRef {
    let s = |n: &str| Field::new(n, DataType::Utf8, true);
    let context = Fields::from(vec![
        s("id"),
        s("source"),
        s("type"),
        s("timestamp"),
        s("version"),
        s("specversion"),
    ]);
    let content = Fields::from(vec![
        s("artifactId"),
        s("pipelineName"),
        s("outcome"),
        s("url"),
    ]);
    let subject = Fields::from(vec![
        s("id"),
        s("source"),
        s("type"),
        Field::new("content", DataType::Struct(content), true),
    ]);
    Arc::new(Schema::new(vec![
        Field::new("context", DataType::Struct(context), true),
        Field::new("subject", DataType::Struct(subject), true),
    ]))
}

/// arrow-json + ArrowWriter + commit: the floor.
async fn floor(events: &[String], store: &Store, batch_rows: usize) -> Duration {
    let schema = floor_schema();
    let mut out_fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    out_fields.push(Field::new("payload", DataType::Utf8, false));
    let out_schema: SchemaRef = Arc::new(Schema::new(out_fields));
    let props = writer_properties(&out_schema, "time", &EncodeOptions::default());
    let start = Instant::now();
    let mut decoder = ReaderBuilder::new(schema.clone())
        .with_batch_size(batch_rows)
        .build_decoder()
        .expect("decoder");
    let mut batches = Vec::new();
    for (file, chunk) in events.chunks(batch_rows).enumerate() {
        for e in chunk {
            decoder.decode(e.as_bytes()).expect("decode");
        }
        let decoded = decoder.flush().expect("flush").expect("rows");
        let payload: ArrayRef = Arc::new(StringArray::from_iter_values(chunk.iter()));
        let mut columns: Vec<ArrayRef> = decoded.columns().to_vec();
        columns.push(payload);
        batches.push(RecordBatch::try_new(out_schema.clone(), columns).expect("batch"));
        let bytes = encode(&out_schema, &batches, props.clone()).expect("encode");
        batches.clear();
        store
            .put_if_absent(&format!("floor/{file}.parquet"), bytes)
            .await
            .expect("commit");
    }
    start.elapsed()
}

/// cdlake's ingest path, one flush per `batch_rows` events as the default flush would.
async fn cdlake(events: &[String], store: &Store, batch_rows: usize) -> (Duration, u64) {
    let start = Instant::now();
    let mut ingester = Ingester::new(
        store.clone(),
        IngesterConfig {
            max_rows: batch_rows,
            ..IngesterConfig::default()
        },
    );
    for e in events {
        ingester
            .ingest(e.as_bytes(), Origin::CdEvents, "bench")
            .await
            .expect("ingest");
        if ingester.should_flush() {
            ingester.flush().await.expect("flush");
        }
    }
    ingester.flush().await.expect("flush");
    let elapsed = start.elapsed();
    let mut bytes = 0;
    for p in store.list_meta("events/").await.expect("list") {
        bytes += p.size;
    }
    (elapsed, bytes)
}

fn main() {
    let n = env_usize("BENCH_INGEST_EVENTS", 200_000);
    let repeat = env_usize("BENCH_REPEAT", 3).max(1);
    let batch_rows = IngesterConfig::default().max_rows;
    let spec = DemoSpec {
        target_events: n as u64,
        ..DemoSpec::default()
    };
    let end = chrono::DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z")
        .expect("time")
        .with_timezone(&chrono::Utc);
    let events: Vec<String> = generate(&spec, end).take(n).collect();
    let json_bytes: usize = events.iter().map(String::len).sum();
    eprintln!(
        "ingest bench: {} events, {:.0} bytes each on average, best of {repeat}",
        events.len(),
        json_bytes as f64 / events.len() as f64
    );
    // One core: a current-thread runtime, the blocking encode on the same thread's pool.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(1)
        .build()
        .expect("runtime");
    let (mut best_floor, mut best_cdlake, mut parquet_bytes) = (Duration::MAX, Duration::MAX, 0);
    for _ in 0..repeat {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path().to_str().expect("utf8")).expect("store");
        best_floor = best_floor.min(rt.block_on(floor(&events, &store, batch_rows)));
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path().to_str().expect("utf8")).expect("store");
        let (t, bytes) = rt.block_on(cdlake(&events, &store, batch_rows));
        best_cdlake = best_cdlake.min(t);
        parquet_bytes = bytes;
    }
    let rate = |d: Duration| events.len() as f64 / d.as_secs_f64();
    let (floor_rate, cdlake_rate) = (rate(best_floor), rate(best_cdlake));
    println!(
        "{}",
        json!({"bench": "ingest", "name": "floor: arrow-json + ArrowWriter (zstd 1)",
               "events_per_s": floor_rate.round(), "seconds": best_floor.as_secs_f64()})
    );
    println!(
        "{}",
        json!({"bench": "ingest", "name": "cdlake ingest path (decode, normalise, dedupe, sort, encode, commit)",
               "events_per_s": cdlake_rate.round(), "seconds": best_cdlake.as_secs_f64(),
               "ratio_to_floor": (cdlake_rate / floor_rate * 1000.0).round() / 1000.0})
    );
    println!(
        "{}",
        json!({"bench": "storage", "name": "Parquet bytes per event (JSON bytes per event)",
               "parquet_bytes_per_event": (parquet_bytes as f64 / events.len() as f64).round(),
               "json_bytes_per_event": (json_bytes as f64 / events.len() as f64).round(),
               "compression": ((json_bytes as f64 / parquet_bytes.max(1) as f64) * 10.0).round() / 10.0})
    );
}
