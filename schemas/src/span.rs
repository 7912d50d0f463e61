//! The `spans` table: one row per OpenTelemetry span received over OTLP.
//!
//! Identity columns and times come from the span itself; the CI/CD and VCS semantic-convention
//! attributes (`cicd.*`, `vcs.*`) are lifted into columns of their own, looked up in the span's
//! attributes first and then in its resource's, so SQL can join spans to pipeline runs without
//! parsing JSON. All attributes are also kept whole, as JSON objects.

use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, Float64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;

/// One row of the `spans` table. Times are microseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Span {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// 16 lowercase hex digits; `None` for a root span.
    pub parent_span_id: Option<String>,
    pub name: String,
    /// `internal`, `server`, `client`, `producer`, `consumer` or `unspecified`.
    pub kind: String,
    pub start: i64,
    pub end: i64,
    /// `end - start` in milliseconds, never negative (a span ending before it starts has 0).
    pub duration_ms: f64,
    /// `unset`, `ok` or `error`.
    pub status: String,
    pub status_message: Option<String>,
    /// The resource attribute `service.name`.
    pub service_name: Option<String>,
    /// The instrumentation scope's name.
    pub scope_name: Option<String>,
    /// `cicd.pipeline.name`
    pub cicd_pipeline_name: Option<String>,
    /// `cicd.pipeline.run.id`
    pub cicd_pipeline_run_id: Option<String>,
    /// `cicd.pipeline.task.name`
    pub cicd_pipeline_task_name: Option<String>,
    /// `cicd.pipeline.task.run.id`
    pub cicd_pipeline_task_run_id: Option<String>,
    /// `cicd.pipeline.task.type`
    pub cicd_pipeline_task_type: Option<String>,
    /// `cicd.pipeline.result`
    pub cicd_pipeline_result: Option<String>,
    /// `cicd.pipeline.task.run.result`
    pub cicd_pipeline_task_run_result: Option<String>,
    /// `cicd.pipeline.run.url.full`
    pub cicd_pipeline_run_url: Option<String>,
    /// `vcs.repository.name`
    pub vcs_repository_name: Option<String>,
    /// `vcs.repository.url.full`
    pub vcs_repository_url: Option<String>,
    /// `vcs.ref.head.name`
    pub vcs_ref_head_name: Option<String>,
    /// `vcs.ref.head.revision`
    pub vcs_ref_head_revision: Option<String>,
    /// `vcs.change.id`
    pub vcs_change_id: Option<String>,
    /// All span attributes as one JSON object.
    pub attributes: String,
    /// All resource attributes as one JSON object.
    pub resource_attributes: String,
    /// The span's events as a JSON array of `{name, time, attributes}`; `None` when it has none.
    pub events: Option<String>,
    /// When cdlake received it.
    pub ingested_at: i64,
}

impl Span {
    /// The UTC date of the span's start: its partition.
    pub fn date(&self) -> chrono::NaiveDate {
        crate::event::micros_to_date(self.start)
    }

    /// The de-duplication key of this span: `(trace_id, span_id)`.
    pub fn identity(&self) -> u128 {
        crate::identity_key(&self.trace_id, &self.span_id)
    }
}

/// The semantic-convention attributes lifted into columns, as `(column, attribute key)`, in
/// column order.
pub const SEMCONV_COLUMNS: [(&str, &str); 13] = [
    ("cicd_pipeline_name", "cicd.pipeline.name"),
    ("cicd_pipeline_run_id", "cicd.pipeline.run.id"),
    ("cicd_pipeline_task_name", "cicd.pipeline.task.name"),
    ("cicd_pipeline_task_run_id", "cicd.pipeline.task.run.id"),
    ("cicd_pipeline_task_type", "cicd.pipeline.task.type"),
    ("cicd_pipeline_result", "cicd.pipeline.result"),
    (
        "cicd_pipeline_task_run_result",
        "cicd.pipeline.task.run.result",
    ),
    ("cicd_pipeline_run_url", "cicd.pipeline.run.url.full"),
    ("vcs_repository_name", "vcs.repository.name"),
    ("vcs_repository_url", "vcs.repository.url.full"),
    ("vcs_ref_head_name", "vcs.ref.head.name"),
    ("vcs_ref_head_revision", "vcs.ref.head.revision"),
    ("vcs_change_id", "vcs.change.id"),
];

impl Span {
    /// The semantic-convention columns in the order of [`SEMCONV_COLUMNS`].
    pub fn semconv(&self) -> [&Option<String>; 13] {
        [
            &self.cicd_pipeline_name,
            &self.cicd_pipeline_run_id,
            &self.cicd_pipeline_task_name,
            &self.cicd_pipeline_task_run_id,
            &self.cicd_pipeline_task_type,
            &self.cicd_pipeline_result,
            &self.cicd_pipeline_task_run_result,
            &self.cicd_pipeline_run_url,
            &self.vcs_repository_name,
            &self.vcs_repository_url,
            &self.vcs_ref_head_name,
            &self.vcs_ref_head_revision,
            &self.vcs_change_id,
        ]
    }

    /// The semantic-convention columns, mutably, in the order of [`SEMCONV_COLUMNS`].
    pub fn semconv_mut(&mut self) -> [&mut Option<String>; 13] {
        [
            &mut self.cicd_pipeline_name,
            &mut self.cicd_pipeline_run_id,
            &mut self.cicd_pipeline_task_name,
            &mut self.cicd_pipeline_task_run_id,
            &mut self.cicd_pipeline_task_type,
            &mut self.cicd_pipeline_result,
            &mut self.cicd_pipeline_task_run_result,
            &mut self.cicd_pipeline_run_url,
            &mut self.vcs_repository_name,
            &mut self.vcs_repository_url,
            &mut self.vcs_ref_head_name,
            &mut self.vcs_ref_head_revision,
            &mut self.vcs_change_id,
        ]
    }
}

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = vec![
        Field::new("trace_id", DataType::Utf8, false),
        Field::new("span_id", DataType::Utf8, false),
        Field::new("parent_span_id", DataType::Utf8, true),
        Field::new("name", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("start", ts_type(), false),
        Field::new("end", ts_type(), false),
        Field::new("duration_ms", DataType::Float64, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("status_message", DataType::Utf8, true),
        Field::new("service_name", DataType::Utf8, true),
        Field::new("scope_name", DataType::Utf8, true),
    ];
    fields.extend(
        SEMCONV_COLUMNS
            .iter()
            .map(|&(name, _)| Field::new(name, DataType::Utf8, true)),
    );
    fields.extend([
        Field::new("attributes", DataType::Utf8, false),
        Field::new("resource_attributes", DataType::Utf8, false),
        Field::new("events", DataType::Utf8, true),
        Field::new("ingested_at", ts_type(), false),
    ]);
    Arc::new(Schema::new(fields))
});

/// The Arrow schema of the `spans` table (without the `date` partition column).
pub fn spans_schema() -> SchemaRef {
    SCHEMA.clone()
}

/// Rows to one record batch of [`spans_schema`].
pub fn spans_to_batch(rows: &[Span]) -> Result<RecordBatch, ArrowError> {
    let n = rows.len();
    let strings = |f: &dyn Fn(&Span) -> Option<&str>| -> ArrayRef {
        let mut b = StringBuilder::with_capacity(n, n * 16);
        for r in rows {
            b.append_option(f(r));
        }
        Arc::new(b.finish())
    };
    let times = |f: &dyn Fn(&Span) -> i64| -> ArrayRef {
        let mut b = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
        for r in rows {
            b.append_value(f(r));
        }
        Arc::new(b.finish())
    };
    let mut duration = Float64Builder::with_capacity(n);
    for r in rows {
        duration.append_value(r.duration_ms);
    }
    let mut columns: Vec<ArrayRef> = vec![
        strings(&|r| Some(&r.trace_id)),
        strings(&|r| Some(&r.span_id)),
        strings(&|r| r.parent_span_id.as_deref()),
        strings(&|r| Some(&r.name)),
        strings(&|r| Some(&r.kind)),
        times(&|r| r.start),
        times(&|r| r.end),
        Arc::new(duration.finish()),
        strings(&|r| Some(&r.status)),
        strings(&|r| r.status_message.as_deref()),
        strings(&|r| r.service_name.as_deref()),
        strings(&|r| r.scope_name.as_deref()),
    ];
    for i in 0..SEMCONV_COLUMNS.len() {
        columns.push(strings(&|r| r.semconv()[i].as_deref()));
    }
    columns.extend([
        strings(&|r| Some(&r.attributes)),
        strings(&|r| Some(&r.resource_attributes)),
        strings(&|r| r.events.as_deref()),
        times(&|r| r.ingested_at),
    ]);
    RecordBatch::try_new(spans_schema(), columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float64Type, TimestampMicrosecondType};

    fn root() -> Span {
        Span {
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            span_id: "00f067aa0ba902b7".into(),
            name: "ci".into(),
            kind: "server".into(),
            start: 1_714_564_800_000_000,
            end: 1_714_564_812_500_000,
            duration_ms: 12_500.0,
            status: "ok".into(),
            service_name: Some("github-actions".into()),
            cicd_pipeline_name: Some("ci".into()),
            vcs_change_id: Some("42".into()),
            attributes: r#"{"cicd.pipeline.name":"ci"}"#.into(),
            resource_attributes: r#"{"service.name":"github-actions"}"#.into(),
            ingested_at: 1_714_564_900_000_000,
            ..Span::default()
        }
    }

    fn child() -> Span {
        Span {
            span_id: "b7ad6b7169203331".into(),
            parent_span_id: Some("00f067aa0ba902b7".into()),
            name: "build".into(),
            kind: "internal".into(),
            status: "error".into(),
            status_message: Some("exit code 1".into()),
            scope_name: Some("cdlake-test".into()),
            cicd_pipeline_name: None,
            cicd_pipeline_task_name: Some("build".into()),
            events: Some(
                r#"[{"name":"log","time":"2024-05-01T12:00:01Z","attributes":{}}]"#.into(),
            ),
            ..root()
        }
    }

    #[test]
    fn batch_has_the_schema_and_nulls_where_expected() {
        let batch = spans_to_batch(&[root(), child()]).unwrap();
        assert_eq!(batch.schema(), spans_schema());
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.num_columns(), 29);

        let s = |name: &str| {
            batch
                .column_by_name(name)
                .unwrap()
                .as_string::<i32>()
                .clone()
        };
        assert_eq!(s("trace_id").value(1), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(s("span_id").value(1), "b7ad6b7169203331");
        assert!(s("parent_span_id").is_null(0));
        assert_eq!(s("parent_span_id").value(1), "00f067aa0ba902b7");
        assert_eq!(s("kind").value(0), "server");
        assert!(s("status_message").is_null(0));
        assert_eq!(s("status_message").value(1), "exit code 1");
        assert!(s("scope_name").is_null(0));
        assert_eq!(s("cicd_pipeline_name").value(0), "ci");
        assert!(s("cicd_pipeline_name").is_null(1));
        assert!(s("cicd_pipeline_task_name").is_null(0));
        assert_eq!(s("cicd_pipeline_task_name").value(1), "build");
        assert_eq!(s("vcs_change_id").value(1), "42");
        assert_eq!(s("vcs_repository_name").null_count(), 2);
        assert!(s("events").is_null(0));
        assert!(s("events").is_valid(1));
        assert_eq!(s("attributes").null_count(), 0);

        let start = batch.column_by_name("start").unwrap();
        let start = start.as_primitive::<TimestampMicrosecondType>();
        assert_eq!(start.value(0), 1_714_564_800_000_000);
        let duration = batch.column_by_name("duration_ms").unwrap();
        assert_eq!(duration.as_primitive::<Float64Type>().value(0), 12_500.0);
    }

    #[test]
    fn empty_batch_has_the_schema() {
        let batch = spans_to_batch(&[]).unwrap();
        assert_eq!(batch.schema(), spans_schema());
        assert_eq!(batch.num_rows(), 0);
    }

    #[test]
    fn semconv_columns_follow_the_schema() {
        let schema = spans_schema();
        for (i, (name, _)) in SEMCONV_COLUMNS.iter().enumerate() {
            assert_eq!(schema.field(12 + i).name(), name);
        }
        let mut span = root();
        *span.semconv_mut()[12] = Some("7".into());
        assert_eq!(span.vcs_change_id.as_deref(), Some("7"));
    }

    #[test]
    fn date_and_identity() {
        let span = root();
        assert_eq!(span.date().to_string(), "2024-05-01");
        assert_eq!(
            span.identity(),
            crate::identity_key("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
        );
        assert_ne!(span.identity(), child().identity());
    }
}
