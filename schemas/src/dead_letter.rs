//! The `dead_letters` table: input that could not become an event, with the reason and the
//! raw bytes, so nothing received is ever silently dropped.

use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, BinaryBuilder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;

/// One rejected input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// When cdlake received it (µs since the epoch, UTC); also its partition date.
    pub received_at: i64,
    /// `cdevents`, `github`, `gitlab`, `otlp`.
    pub origin: String,
    /// Where it came from, e.g. `import:events.jsonl:12` or an HTTP route.
    pub source: String,
    /// Why it was rejected, in words a user can act on.
    pub reason: String,
    /// The raw bytes as received.
    pub payload: Vec<u8>,
}

impl DeadLetter {
    /// The UTC date of `received_at`: its partition.
    pub fn date(&self) -> chrono::NaiveDate {
        crate::event::micros_to_date(self.received_at)
    }
}

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new(
            "received_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("origin", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("payload", DataType::Binary, false),
    ]))
});

/// The Arrow schema of the `dead_letters` table (without the `date` partition column).
pub fn dead_letters_schema() -> SchemaRef {
    SCHEMA.clone()
}

/// Rows to one record batch of [`dead_letters_schema`].
pub fn dead_letters_to_batch(rows: &[DeadLetter]) -> Result<RecordBatch, ArrowError> {
    let mut received = TimestampMicrosecondBuilder::with_capacity(rows.len()).with_timezone("UTC");
    let (mut origin, mut source, mut reason) = (
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    let mut payload = BinaryBuilder::new();
    for r in rows {
        received.append_value(r.received_at);
        origin.append_value(&r.origin);
        source.append_value(&r.source);
        reason.append_value(&r.reason);
        payload.append_value(&r.payload);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(received.finish()),
        Arc::new(origin.finish()),
        Arc::new(source.finish()),
        Arc::new(reason.finish()),
        Arc::new(payload.finish()),
    ];
    RecordBatch::try_new(dead_letters_schema(), columns)
}
