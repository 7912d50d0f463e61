//! Prometheus metrics of a cdlake service, rendered as the text exposition format.
//!
//! A small registry of labelled counters and gauges; every service (receiver, ingester,
//! standalone) renders its own at `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Instant;

use crate::ingester::{FlushReport, Outcome};

/// How a metric behaves, for its `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// A metric's name, help text and kind.
#[derive(Debug, Clone, Copy)]
pub struct Def {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
}

macro_rules! defs {
    ($($id:ident = $name:literal, $kind:ident, $help:literal;)*) => {
        $(pub const $id: Def = Def { name: $name, help: $help, kind: Kind::$kind };)*
        /// Every metric, for exporters that register instruments up front.
        pub const ALL: &[Def] = &[$($id),*];
    };
}

defs! {
    RECEIVED = "cdlake_received_total", Counter, "Inputs received, by origin (one per event; a webhook delivery is one).";
    PUBLISHED = "cdlake_published_total", Counter, "Inputs published to JetStream and acknowledged by it, by origin.";
    COMMITTED = "cdlake_committed_events_total", Counter, "Events durably committed to the store.";
    DUPLICATE = "cdlake_duplicate_total", Counter, "Inputs dropped because their identity is already stored or buffered.";
    REJECTED = "cdlake_rejected_total", Counter, "Inputs rejected, by origin and reason class.";
    DEAD_LETTERED = "cdlake_dead_lettered_total", Counter, "Dead-letter rows durably committed to the store.";
    FLUSHES = "cdlake_flushes_total", Counter, "Flushes of the write buffer, by result (ok, error).";
    FLUSH_SECONDS = "cdlake_flush_seconds_total", Counter, "Time spent flushing the write buffer.";
    FLUSH_BYTES = "cdlake_flush_bytes_total", Counter, "Parquet bytes committed to the store.";
    FILES = "cdlake_files_committed_total", Counter, "Parquet files committed to the store.";
    PENDING_ROWS = "cdlake_buffer_rows", Gauge, "Rows buffered and not yet committed.";
    CONSUMER_PENDING = "cdlake_consumer_pending", Gauge, "Messages in the stream not yet delivered to the durable consumer.";
    REDELIVERED = "cdlake_redelivered_total", Counter, "JetStream messages delivered more than once.";
    ACKED = "cdlake_acked_total", Counter, "JetStream messages acknowledged after their commit.";
    LAST_COMMIT = "cdlake_last_commit_timestamp_seconds", Gauge, "Unix time of the last successful commit.";
    STORE_ERRORS = "cdlake_store_errors_total", Counter, "Failed flushes (the store refused a write); the rows stay buffered and are retried.";
    HTTP_REQUESTS = "cdlake_http_requests_total", Counter, "HTTP requests, by route and status.";
    RECONCILE_MISSED = "cdlake_reconcile_missed_total", Counter, "Facts a reconcile pulled from a provider's API that were not stored (the webhooks had missed them), by repository (a GitHub repository or a GitLab project) and kind.";
    RECONCILE_RUNS = "cdlake_reconcile_runs_total", Counter, "Reconcile passes over one repository, by result (ok, error).";
}

/// A metric's definition and its series by rendered label set (with the pairs kept).
type Family = (Def, BTreeMap<String, (Vec<(String, String)>, f64)>);

/// Labelled counters and gauges.
#[derive(Debug, Default)]
pub struct Metrics {
    values: Mutex<BTreeMap<&'static str, Family>>,
}

fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let mut s = String::from("{");
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let v = v
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = write!(s, "{k}=\"{v}\"");
    }
    s.push('}');
    s
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    fn update(&self, def: Def, pairs: &[(&str, &str)], f: impl FnOnce(&mut f64)) {
        let mut values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        let (_, series) = values
            .entry(def.name)
            .or_insert_with(|| (def, BTreeMap::new()));
        let entry = series.entry(labels(pairs)).or_insert_with(|| {
            (
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                0.0,
            )
        });
        f(&mut entry.1);
    }

    /// Every series of `def` now: its label pairs and value.
    pub fn series(&self, def: Def) -> Vec<(Vec<(String, String)>, f64)> {
        let values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        values
            .get(def.name)
            .map(|(_, s)| s.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Add `by` to a counter.
    pub fn add(&self, def: Def, pairs: &[(&str, &str)], by: f64) {
        self.update(def, pairs, |v| *v += by);
    }

    /// Add one to a counter.
    pub fn inc(&self, def: Def, pairs: &[(&str, &str)]) {
        self.add(def, pairs, 1.0);
    }

    /// Set a gauge.
    pub fn set(&self, def: Def, pairs: &[(&str, &str)], to: f64) {
        self.update(def, pairs, |v| *v = to);
    }

    /// The current value of one series (0 when never touched).
    pub fn get(&self, def: Def, pairs: &[(&str, &str)]) -> f64 {
        let values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        values
            .get(def.name)
            .and_then(|(_, s)| s.get(&labels(pairs)))
            .map(|(_, v)| *v)
            .unwrap_or(0.0)
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        let values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        for (name, (def, series)) in values.iter() {
            let kind = match def.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
            };
            let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} {kind}", def.help);
            for (labels, (_, v)) in series {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        }
        out
    }
}

/// Record the figures of a flush that began at `started`.
pub fn record_flush(metrics: &Metrics, started: Instant, result: &crate::Result<FlushReport>) {
    metrics.add(FLUSH_SECONDS, &[], started.elapsed().as_secs_f64());
    match result {
        Ok(report) => {
            metrics.inc(FLUSHES, &[("result", "ok")]);
            metrics.add(COMMITTED, &[], report.events as f64);
            metrics.add(DEAD_LETTERED, &[], report.dead_letters as f64);
            metrics.add(FLUSH_BYTES, &[], report.bytes as f64);
            metrics.add(FILES, &[], report.files.len() as f64);
            if report.events + report.dead_letters > 0 {
                metrics.set(
                    LAST_COMMIT,
                    &[],
                    chrono::Utc::now().timestamp_millis() as f64 / 1000.0,
                );
            }
        }
        Err(e) => {
            metrics.inc(FLUSHES, &[("result", "error")]);
            metrics.inc(STORE_ERRORS, &[]);
            tracing::error!(
                error = %e,
                "Committing to the store failed; the rows stay buffered and nothing is acknowledged. Retrying."
            );
        }
    }
}

/// Count one outcome.
pub fn record_outcome(metrics: &Metrics, origin: &str, outcome: &Outcome) {
    match outcome {
        Outcome::Accepted | Outcome::Ignored => {}
        Outcome::Duplicate => metrics.inc(DUPLICATE, &[("origin", origin)]),
        Outcome::Rejected(rejection) => metrics.inc(
            REJECTED,
            &[("origin", origin), ("reason", rejection.reason.as_str())],
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_labelled_series() {
        let m = Metrics::new();
        m.inc(RECEIVED, &[("origin", "github")]);
        m.inc(RECEIVED, &[("origin", "github")]);
        m.add(REJECTED, &[("origin", "cdevents"), ("reason", "a\"b")], 3.0);
        m.set(PENDING_ROWS, &[], 7.0);
        let text = m.render();
        assert!(
            text.contains("cdlake_received_total{origin=\"github\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("cdlake_rejected_total{origin=\"cdevents\",reason=\"a\\\"b\"} 3\n"));
        assert!(text.contains("# TYPE cdlake_buffer_rows gauge\ncdlake_buffer_rows 7\n"));
        assert_eq!(m.get(RECEIVED, &[("origin", "github")]), 2.0);
        assert_eq!(m.get(RECEIVED, &[("origin", "gitlab")]), 0.0);
    }
}
