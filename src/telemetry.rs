//! cdlake's own telemetry over OTLP: when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `…_METRICS_ENDPOINT`) is set, every service exports
//! its spans (receive → publish → consume → flush → commit) and its metrics (the same series
//! as `/metrics`) over OTLP/HTTP protobuf, as the OpenTelemetry SDK's environment variables
//! say (`OTEL_SERVICE_NAME`, `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_BSP_SCHEDULE_DELAY`,
//! `OTEL_METRIC_EXPORT_INTERVAL`, …). cdlake's own `POST /v1/traces` is such an endpoint, so a
//! cdlake can keep its own traces.

use std::sync::Arc;

use cdlake_ingest::metrics::{self, Kind, Metrics};
use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The trace exporter, flushed on drop (with the metric exporters [`observe`] started).
#[derive(Default)]
pub(crate) struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

static SERVICE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
static METERS: std::sync::Mutex<Vec<SdkMeterProvider>> = std::sync::Mutex::new(Vec::new());

fn configured(signal: &str) -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT".to_string(),
        format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"),
    ]
    .iter()
    .any(|v| std::env::var(v).is_ok_and(|s| !s.trim().is_empty()))
}

fn resource(service: &str) -> Resource {
    let name = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| service.to_string());
    Resource::builder()
        .with_service_name(name)
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Logs to standard error (`CDLAKE_LOG`, default `warn`), and spans over OTLP when an endpoint
/// is configured. `service` names the process (`cdlake-ingest`, …).
pub(crate) fn init(service: &str) -> Telemetry {
    let filter = || {
        let spec = std::env::var("CDLAKE_LOG").unwrap_or_else(|_| "warn".to_string());
        // The Delta kernel logs every snapshot it reads at INFO: quiet unless named.
        let spec = if spec.contains("buoyant_kernel") {
            spec
        } else {
            format!("{spec},buoyant_kernel=warn")
        };
        EnvFilter::try_new(spec).unwrap_or_else(|_| EnvFilter::new("warn"))
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter());
    let _ = SERVICE.set(service.to_string());
    let mut telemetry = Telemetry::default();
    let otel = if configured("TRACES") {
        match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
        {
            Ok(exporter) => {
                let provider = SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(resource(service))
                    .build();
                let tracer = provider.tracer("cdlake");
                telemetry.traces = Some(provider);
                // cdlake's own pipeline spans, whatever CDLAKE_LOG says.
                Some(
                    tracing_opentelemetry::layer()
                        .with_tracer(tracer)
                        .with_filter(EnvFilter::new(
                            "cdlake=info,cdlake_ingest=info,cdlake_query=info",
                        )),
                )
            }
            Err(e) => {
                eprintln!("warning: OTLP traces are off: {e}");
                None
            }
        }
    } else {
        None
    };
    tracing_subscriber::registry().with(fmt).with(otel).init();
    telemetry
}

/// Export `metrics` over OTLP too (each series of `/metrics`, with its labels), when an
/// endpoint is configured.
pub(crate) fn observe(metrics: &Arc<Metrics>) {
    {
        if !configured("METRICS") {
            return;
        }
        let exporter = match opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .build()
        {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "OTLP metrics are off.");
                return;
            }
        };
        let provider = SdkMeterProvider::builder()
            .with_periodic_exporter(exporter)
            .with_resource(resource(SERVICE.get().map_or("cdlake", String::as_str)))
            .build();
        let meter = provider.meter("cdlake");
        for def in metrics::ALL {
            let source = metrics.clone();
            let def = *def;
            let read = move || {
                source
                    .series(def)
                    .into_iter()
                    .map(|(labels, v)| {
                        let attrs: Vec<KeyValue> = labels
                            .into_iter()
                            .map(|(k, v)| KeyValue::new(k, v))
                            .collect();
                        (v, attrs)
                    })
                    .collect::<Vec<_>>()
            };
            match def.kind {
                Kind::Counter => {
                    meter
                        .f64_observable_counter(def.name)
                        .with_description(def.help)
                        .with_callback(move |o| {
                            for (v, attrs) in read() {
                                o.observe(v, &attrs);
                            }
                        })
                        .build();
                }
                Kind::Gauge => {
                    meter
                        .f64_observable_gauge(def.name)
                        .with_description(def.help)
                        .with_callback(move |o| {
                            for (v, attrs) in read() {
                                o.observe(v, &attrs);
                            }
                        })
                        .build();
                }
            }
        }
        METERS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(provider);
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.traces.take() {
            let _ = p.shutdown();
        }
        for m in METERS.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            let _ = m.shutdown();
        }
    }
}
