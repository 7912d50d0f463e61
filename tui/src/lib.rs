//! cdlake's terminal UI over the HTTP API of `cdlake serve` or `standalone`.
//!
//! Data flows one way through three parts. The client (`client`) runs in its own tasks: one
//! follows `GET /api/v1/tail` (Server-Sent Events, parsed by `sse`) and reconnects by itself,
//! another answers requests with `POST /api/v1/sql` and `GET /api/v1/dora`; both send
//! [`Msg`]s down a channel. The [`App`] (`app`) is pure state: keys and messages change it
//! and it answers with [`Request`]s for the client. `ui` draws the state, with no I/O, so the
//! screens are tested as snapshots of a `TestBackend`. The loop here coalesces redraws (at
//! most one every 50 ms however fast events arrive) and keeps a bounded ring of events.

pub mod app;
pub mod client;
pub mod model;
pub mod sse;
pub mod ui;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ratatui::crossterm::event::{self, Event};
use tokio::sync::mpsc;

pub use app::{App, Msg, Request};
pub use client::{Connection, Error, Result};

/// Runs the UI until the user quits; the terminal is restored on return and on panic.
pub async fn run(conn: Connection) -> std::io::Result<()> {
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .map_err(std::io::Error::other)?;
    let (msg_tx, msg_rx) = mpsc::channel::<Msg>(16_384);
    let (req_tx, req_rx) = mpsc::unbounded_channel::<Request>();
    let tail = tokio::spawn(client::tail(http.clone(), conn.clone(), msg_tx.clone()));
    let serve = tokio::spawn(client::serve(http, conn.clone(), req_rx, msg_tx));

    // Terminal input on a thread of its own: crossterm's read blocks.
    let (key_tx, key_rx) = mpsc::unbounded_channel::<Event>();
    std::thread::spawn(move || {
        while let Ok(ev) = event::read() {
            if key_tx.send(ev).is_err() {
                break;
            }
        }
    });

    // Installs a panic hook that restores the terminal before the panic is printed.
    let mut terminal = ratatui::try_init()?;
    let result = event_loop(&mut terminal, App::new(conn.url()), msg_rx, key_rx, req_tx).await;
    ratatui::restore();
    tail.abort();
    serve.abort();
    result
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Most messages handled between two looks at the keyboard.
const BATCH: usize = 50_000;

async fn event_loop(
    terminal: &mut ratatui::DefaultTerminal,
    mut app: App,
    mut msgs: mpsc::Receiver<Msg>,
    mut keys: mpsc::UnboundedReceiver<Event>,
    requests: mpsc::UnboundedSender<Request>,
) -> std::io::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    app.tick(unix_seconds());
    let mut draw = true;
    let mut changed = false;
    loop {
        if draw {
            terminal.draw(|f| ui::render(&app, f))?;
            draw = false;
            changed = false;
        }
        tokio::select! {
            biased;
            ev = keys.recv() => {
                match ev {
                    Some(Event::Key(key)) => {
                        for r in app.key(key) {
                            let _ = requests.send(r);
                        }
                    }
                    Some(Event::Resize(..)) => terminal.autoresize()?,
                    Some(_) => {}
                    None => app.quit = true,
                }
                draw = true;
            }
            _ = tick.tick() => {
                draw = app.tick(unix_seconds()) || changed;
            }
            msg = msgs.recv() => {
                let Some(msg) = msg else { break };
                let mut next = Some(msg);
                let mut n = 0;
                while let Some(m) = next {
                    for r in app.update(m) {
                        let _ = requests.send(r);
                    }
                    n += 1;
                    next = if n < BATCH { msgs.try_recv().ok() } else { None };
                }
                // Drawn on the next tick: many messages, one frame.
                changed = true;
            }
        }
        if app.quit {
            break;
        }
    }
    Ok(())
}
