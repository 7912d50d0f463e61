//! The terminal UI at 5,000 events/s: the work one event costs the UI (SSE parsing, JSON
//! decoding, the app update) plus a full redraw every 50 ms (the UI's coalescing interval),
//! measured on one core against the target rate. Prints JSON Lines; run by `scripts/bench`.
//! `BENCH_TUI_EVENTS` sets the number of events (default 200,000).

use std::time::Instant;

use cdlake_tui::sse::SseParser;
use cdlake_tui::{App, Msg};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

const TARGET_RATE: f64 = 5_000.0;
/// Events between two redraws at the target rate (one redraw every 50 ms).
const PER_REDRAW: usize = (TARGET_RATE as usize) / 20;

fn main() {
    let n: usize = std::env::var("BENCH_TUI_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    // The stream as `GET /api/v1/tail` sends it.
    let mut stream = Vec::new();
    for i in 0..n {
        let data = serde_json::json!({
            "event_id": format!("e-{i}"), "event_source": "/bench/ci",
            "event_type": "dev.cdevents.service.deployed.0.3.0",
            "subject": "service", "predicate": "deployed", "origin": "cdevents",
            "time": "2026-11-28T12:00:00.123456Z", "subject_id": format!("svc-{}", i % 40),
            "service": format!("svc-{}", i % 40), "environment": "prod-eu",
            "repository": "acme/shop", "outcome": if i % 9 == 0 { "failure" } else { "success" },
        });
        stream.extend_from_slice(format!("event: event\ndata: {data}\n\n").as_bytes());
    }
    for (w, h) in [(120u16, 40u16), (80, 24)] {
        let mut app = App::new("http://127.0.0.1:8080");
        app.update(Msg::Connected);
        let mut terminal = Terminal::new(TestBackend::new(w, h)).expect("terminal");
        let mut parser = SseParser::default();
        let mut events = Vec::new();
        let start = Instant::now();
        let mut handled = 0usize;
        let mut redraws = 0usize;
        // Chunks of the size a socket read returns.
        for chunk in stream.chunks(16 << 10) {
            parser.push(chunk, &mut events);
            for e in events.drain(..) {
                if let Ok(ev) = serde_json::from_str(&e.data) {
                    app.update(Msg::Tail(Box::new(ev)));
                    handled += 1;
                    if handled.is_multiple_of(PER_REDRAW) {
                        terminal
                            .draw(|f| cdlake_tui::ui::render(&app, f))
                            .expect("draw");
                        redraws += 1;
                    }
                }
            }
        }
        let secs = start.elapsed().as_secs_f64();
        let capacity = handled as f64 / secs;
        println!(
            "{}",
            serde_json::json!({
                "bench": "tui", "name": format!("live tail at {w}x{h}: events/s one core sustains, redrawing every 50 ms"),
                "events": handled, "redraws": redraws,
                "events_per_s": capacity.round(),
                "ratio_to_target": (capacity / TARGET_RATE * 100.0).round() / 100.0,
            })
        );
    }
}
