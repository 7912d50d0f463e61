//! The app's state and how it changes: pure, no I/O. Keys and [`Msg`]s from the client go in;
//! [`Request`]s for the client come out; `ui` draws whatever the state is.

use std::collections::{BTreeMap, VecDeque};

use cdlake_wire::DoraReport;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::model::{Filter, PipelineRun, Span, TailEvent, TaskRun, pretty_json};

/// How many events the live tab keeps.
pub const RING: usize = 10_000;
/// Seconds of history in the rate sparkline.
pub const RATE_SECONDS: usize = 60;

/// What the client tells the app.
#[derive(Debug, Clone)]
pub enum Msg {
    Connected,
    Disconnected(String),
    Tail(Box<TailEvent>),
    /// The server skipped this many events for this client.
    Lagged(u64),
    Payload {
        event_source: String,
        event_id: String,
        result: Result<String, String>,
    },
    Dora {
        days: u32,
        /// Whether the report was asked for by environment (else by service).
        by_environment: bool,
        result: Result<Box<DoraData>, String>,
    },
    Pipelines(Result<Vec<PipelineRun>, String>),
    Tasks {
        run_key: String,
        result: Result<RunDetail, String>,
    },
}

/// What the app asks the client for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Payload {
        event_source: String,
        event_id: String,
    },
    Dora {
        days: u32,
        /// The table by environment (every environment as if it were production), not by
        /// service.
        by_environment: bool,
    },
    Pipelines,
    Tasks {
        run_key: String,
    },
}

/// The DORA board's data: the window's report per service (or per environment, its
/// `environments`), and per week for the trends.
#[derive(Debug, Clone, PartialEq)]
pub struct DoraData {
    pub by_service: DoraReport,
    pub by_week: DoraReport,
}

/// A pipeline run's task runs and trace spans.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunDetail {
    pub tasks: Vec<TaskRun>,
    pub spans: Vec<Span>,
}

/// Data fetched on demand.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Load<T> {
    #[default]
    Idle,
    Loading,
    Ready(T),
    Failed(String),
}

impl<T> Load<T> {
    fn wants_fetch(&self) -> bool {
        matches!(self, Load::Idle | Load::Failed(_))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Live,
    Dora,
    Pipelines,
}

impl Tab {
    pub const ALL: [Tab; 3] = [Tab::Live, Tab::Dora, Tab::Pipelines];

    pub fn title(self) -> &'static str {
        match self {
            Tab::Live => "Live",
            Tab::Dora => "DORA",
            Tab::Pipelines => "Pipelines",
        }
    }

    fn index(self) -> usize {
        Tab::ALL.iter().position(|t| *t == self).unwrap_or(0)
    }
}

/// The state of the link to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    Connecting,
    Up,
    Lost(String),
}

/// An event's payload, opened from the live tab.
#[derive(Debug, Clone, PartialEq)]
pub struct Detail {
    pub event: TailEvent,
    pub body: Load<String>,
    pub scroll: u16,
}

/// The live tab.
#[derive(Debug, Clone, Default)]
pub struct Live {
    /// Newest first; at most [`RING`].
    pub ring: VecDeque<TailEvent>,
    /// Arrived while paused, newest last; at most [`RING`].
    pub held: VecDeque<TailEvent>,
    pub paused: bool,
    /// Index into the filtered rows.
    pub selected: usize,
    pub filter: Filter,
    pub filter_text: String,
    /// The filter line being typed, after `/`.
    pub editing: Option<String>,
    pub filter_error: Option<String>,
    pub counts: BTreeMap<String, u64>,
    pub total: u64,
    pub lagged: u64,
    /// Events per second, oldest first, the current second last.
    pub rates: VecDeque<u64>,
    pub second: u64,
    pub detail: Option<Detail>,
}

impl Live {
    /// The events the filter lets through, newest first.
    pub fn rows(&self) -> impl Iterator<Item = &TailEvent> {
        self.ring.iter().filter(|e| self.filter.matches(e))
    }

    /// The rate of the last complete second.
    pub fn rate(&self) -> u64 {
        let n = self.rates.len();
        if n >= 2 { self.rates[n - 2] } else { 0 }
    }

    fn push(&mut self, e: TailEvent) {
        *self.counts.entry(e.kind()).or_default() += 1;
        self.total += 1;
        if let Some(r) = self.rates.back_mut() {
            *r += 1;
        } else {
            self.rates.push_back(1);
        }
        if self.paused {
            if self.held.len() >= RING {
                self.held.pop_front();
            }
            self.held.push_back(e);
            return;
        }
        self.show(e);
    }

    fn show(&mut self, e: TailEvent) {
        if self.selected > 0 && self.filter.matches(&e) {
            self.selected += 1; // keep the same event under the cursor
        }
        self.ring.push_front(e);
        self.ring.truncate(RING);
        self.selected = self.selected.min(RING - 1);
    }

    fn resume(&mut self) {
        self.paused = false;
        while let Some(e) = self.held.pop_front() {
            self.show(e);
        }
    }
}

/// The DORA tab.
#[derive(Debug, Clone)]
pub struct Dora {
    pub days: u32,
    pub data: Load<Box<DoraData>>,
    /// Index into [`DORA_COLUMNS`].
    pub sort: usize,
    pub descending: bool,
    pub selected: usize,
    /// The table by environment instead of by service (`e`).
    pub by_environment: bool,
}

/// The per-service table's columns, in order.
pub const DORA_COLUMNS: [&str; 7] = [
    "service", "deploys", "per day", "lead p50", "CFR", "recovery", "rework",
];

pub const WINDOWS: [u32; 3] = [7, 30, 90];

/// The pipelines tab.
#[derive(Debug, Clone, Default)]
pub struct Pipelines {
    pub runs: Load<Vec<PipelineRun>>,
    pub selected: usize,
    /// The run opened as a waterfall.
    pub open: Option<(PipelineRun, Load<RunDetail>)>,
}

/// Everything on screen.
#[derive(Debug, Clone)]
pub struct App {
    pub url: String,
    pub tab: Tab,
    pub link: Link,
    pub live: Live,
    pub dora: Dora,
    pub pipelines: Pipelines,
    pub help: bool,
    pub quit: bool,
}

impl App {
    pub fn new(url: &str) -> App {
        App {
            url: url.to_string(),
            tab: Tab::Live,
            link: Link::Connecting,
            live: Live::default(),
            dora: Dora {
                days: 30,
                data: Load::Idle,
                sort: 0,
                descending: false,
                selected: 0,
                by_environment: false,
            },
            pipelines: Pipelines::default(),
            help: false,
            quit: false,
        }
    }

    /// A new second began at `unix_seconds`: roll the rate sparkline. True when it changed.
    pub fn tick(&mut self, unix_seconds: u64) -> bool {
        let live = &mut self.live;
        if live.second == unix_seconds && !live.rates.is_empty() {
            return false;
        }
        let gap = if live.rates.is_empty() {
            1
        } else {
            unix_seconds
                .saturating_sub(live.second)
                .clamp(1, RATE_SECONDS as u64)
        };
        for _ in 0..gap {
            live.rates.push_back(0);
        }
        while live.rates.len() > RATE_SECONDS {
            live.rates.pop_front();
        }
        live.second = unix_seconds;
        true
    }

    /// A message from the client.
    pub fn update(&mut self, msg: Msg) -> Vec<Request> {
        match msg {
            Msg::Connected => {
                let was_lost = matches!(self.link, Link::Lost(_));
                self.link = Link::Up;
                if was_lost {
                    return self.fetch_tab();
                }
            }
            Msg::Disconnected(why) => self.link = Link::Lost(why),
            Msg::Tail(e) => self.live.push(*e),
            Msg::Lagged(n) => self.live.lagged += n,
            Msg::Payload {
                event_source,
                event_id,
                result,
            } => {
                if let Some(d) = &mut self.live.detail
                    && d.event.event_source == event_source
                    && d.event.event_id == event_id
                {
                    d.body = match result {
                        Ok(p) => Load::Ready(pretty_json(&p)),
                        Err(e) => Load::Failed(e),
                    };
                }
            }
            Msg::Dora {
                days,
                by_environment,
                result,
            } => {
                if days == self.dora.days && by_environment == self.dora.by_environment {
                    self.dora.data = match result {
                        Ok(d) => Load::Ready(d),
                        Err(e) => Load::Failed(e),
                    };
                }
            }
            Msg::Pipelines(result) => {
                self.pipelines.runs = match result {
                    Ok(r) => Load::Ready(r),
                    Err(e) => Load::Failed(e),
                };
                let n = self.pipeline_count();
                self.pipelines.selected = self.pipelines.selected.min(n.saturating_sub(1));
            }
            Msg::Tasks { run_key, result } => {
                if let Some((run, detail)) = &mut self.pipelines.open
                    && run.run_key == run_key
                {
                    *detail = match result {
                        Ok(d) => Load::Ready(d),
                        Err(e) => Load::Failed(e),
                    };
                }
            }
        }
        Vec::new()
    }

    fn pipeline_count(&self) -> usize {
        match &self.pipelines.runs {
            Load::Ready(r) => r.len(),
            _ => 0,
        }
    }

    /// The current tab's data, when it has none yet (or failed).
    fn fetch_tab(&mut self) -> Vec<Request> {
        match self.tab {
            Tab::Live => Vec::new(),
            Tab::Dora if self.dora.data.wants_fetch() => self.fetch_dora(),
            Tab::Pipelines if self.pipelines.runs.wants_fetch() => self.fetch_pipelines(),
            _ => Vec::new(),
        }
    }

    fn fetch_dora(&mut self) -> Vec<Request> {
        self.dora.data = Load::Loading;
        vec![Request::Dora {
            days: self.dora.days,
            by_environment: self.dora.by_environment,
        }]
    }

    fn fetch_pipelines(&mut self) -> Vec<Request> {
        self.pipelines.runs = Load::Loading;
        vec![Request::Pipelines]
    }

    fn switch(&mut self, tab: Tab) -> Vec<Request> {
        self.tab = tab;
        self.fetch_tab()
    }

    /// A key press.
    pub fn key(&mut self, key: KeyEvent) -> Vec<Request> {
        if key.kind == KeyEventKind::Release {
            return Vec::new();
        }
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            self.quit = true;
            return Vec::new();
        }
        if let Some(line) = &mut self.live.editing {
            match key.code {
                KeyCode::Enter => {
                    let text = line.trim().to_string();
                    match Filter::parse(&text) {
                        Ok(f) => {
                            self.live.filter = f;
                            self.live.filter_text = text;
                            self.live.filter_error = None;
                            self.live.editing = None;
                            self.live.selected = 0;
                        }
                        Err(e) => self.live.filter_error = Some(e),
                    }
                }
                KeyCode::Esc => {
                    self.live.editing = None;
                    self.live.filter_error = None;
                }
                KeyCode::Backspace => {
                    line.pop();
                }
                KeyCode::Char(c) => line.push(c),
                _ => {}
            }
            return Vec::new();
        }
        if self.help {
            if matches!(key.code, KeyCode::Esc | KeyCode::Char('?') | KeyCode::Enter) {
                self.help = false;
            } else if key.code == KeyCode::Char('q') {
                self.quit = true;
            }
            return Vec::new();
        }
        match key.code {
            KeyCode::Char('q') => {
                self.quit = true;
                return Vec::new();
            }
            KeyCode::Char('?') => {
                self.help = true;
                return Vec::new();
            }
            KeyCode::Char('1') => return self.switch(Tab::Live),
            KeyCode::Char('2') => return self.switch(Tab::Dora),
            KeyCode::Char('3') => return self.switch(Tab::Pipelines),
            KeyCode::Tab => return self.switch(Tab::ALL[(self.tab.index() + 1) % 3]),
            KeyCode::BackTab => return self.switch(Tab::ALL[(self.tab.index() + 2) % 3]),
            _ => {}
        }
        match self.tab {
            Tab::Live => self.live_key(key.code),
            Tab::Dora => self.dora_key(key.code),
            Tab::Pipelines => self.pipelines_key(key.code),
        }
    }

    fn live_key(&mut self, code: KeyCode) -> Vec<Request> {
        let live = &mut self.live;
        if let Some(d) = &mut live.detail {
            match code {
                KeyCode::Esc | KeyCode::Enter | KeyCode::Backspace => live.detail = None,
                KeyCode::Down | KeyCode::Char('j') => d.scroll = d.scroll.saturating_add(1),
                KeyCode::Up | KeyCode::Char('k') => d.scroll = d.scroll.saturating_sub(1),
                KeyCode::PageDown => d.scroll = d.scroll.saturating_add(10),
                KeyCode::PageUp => d.scroll = d.scroll.saturating_sub(10),
                KeyCode::Home | KeyCode::Char('g') => d.scroll = 0,
                _ => {}
            }
            return Vec::new();
        }
        let last = || live.rows().count().saturating_sub(1);
        match code {
            KeyCode::Char(' ') | KeyCode::Char('p') => {
                if live.paused {
                    live.resume();
                } else {
                    live.paused = true;
                }
            }
            KeyCode::Char('/') => {
                live.editing = Some(live.filter_text.clone());
                live.filter_error = None;
            }
            KeyCode::Esc => {
                live.filter = Filter::default();
                live.filter_text.clear();
                live.selected = 0;
            }
            KeyCode::Down | KeyCode::Char('j') => {
                let last = last();
                live.selected = (live.selected + 1).min(last);
            }
            KeyCode::Up | KeyCode::Char('k') => live.selected = live.selected.saturating_sub(1),
            KeyCode::PageDown => {
                let last = last();
                live.selected = (live.selected + 10).min(last);
            }
            KeyCode::PageUp => live.selected = live.selected.saturating_sub(10),
            KeyCode::Home | KeyCode::Char('g') => live.selected = 0,
            KeyCode::Enter => {
                let selected = live.rows().nth(live.selected).cloned();
                if let Some(e) = selected {
                    let request = Request::Payload {
                        event_source: e.event_source.clone(),
                        event_id: e.event_id.clone(),
                    };
                    live.detail = Some(Detail {
                        event: e,
                        body: Load::Loading,
                        scroll: 0,
                    });
                    return vec![request];
                }
            }
            _ => {}
        }
        Vec::new()
    }

    fn dora_key(&mut self, code: KeyCode) -> Vec<Request> {
        let dora = &mut self.dora;
        match code {
            KeyCode::Char('w') => {
                let i = WINDOWS.iter().position(|d| *d == dora.days).unwrap_or(0);
                dora.days = WINDOWS[(i + 1) % WINDOWS.len()];
                return self.fetch_dora();
            }
            KeyCode::Char('r') => return self.fetch_dora(),
            KeyCode::Char('e') => {
                dora.by_environment = !dora.by_environment;
                dora.selected = 0;
                return self.fetch_dora();
            }
            KeyCode::Char('s') | KeyCode::Right => dora.sort = (dora.sort + 1) % DORA_COLUMNS.len(),
            KeyCode::Left => dora.sort = (dora.sort + DORA_COLUMNS.len() - 1) % DORA_COLUMNS.len(),
            KeyCode::Char('S') | KeyCode::Char('o') => dora.descending = !dora.descending,
            KeyCode::Down | KeyCode::Char('j') => dora.selected = dora.selected.saturating_add(1),
            KeyCode::Up | KeyCode::Char('k') => dora.selected = dora.selected.saturating_sub(1),
            _ => {}
        }
        Vec::new()
    }

    fn pipelines_key(&mut self, code: KeyCode) -> Vec<Request> {
        let n = self.pipeline_count();
        let p = &mut self.pipelines;
        if p.open.is_some() {
            match code {
                KeyCode::Esc | KeyCode::Backspace => p.open = None,
                KeyCode::Char('r') => {
                    if let Some((run, detail)) = &mut p.open {
                        *detail = Load::Loading;
                        return vec![Request::Tasks {
                            run_key: run.run_key.clone(),
                        }];
                    }
                }
                _ => {}
            }
            return Vec::new();
        }
        match code {
            KeyCode::Char('r') => return self.fetch_pipelines(),
            KeyCode::Down | KeyCode::Char('j') => {
                p.selected = (p.selected + 1).min(n.saturating_sub(1));
            }
            KeyCode::Up | KeyCode::Char('k') => p.selected = p.selected.saturating_sub(1),
            KeyCode::PageDown => p.selected = (p.selected + 10).min(n.saturating_sub(1)),
            KeyCode::PageUp => p.selected = p.selected.saturating_sub(10),
            KeyCode::Home | KeyCode::Char('g') => p.selected = 0,
            KeyCode::Enter => {
                if let Load::Ready(runs) = &p.runs
                    && let Some(run) = runs.get(p.selected)
                {
                    let run_key = run.run_key.clone();
                    p.open = Some((run.clone(), Load::Loading));
                    return vec![Request::Tasks { run_key }];
                }
            }
            _ => {}
        }
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press(app: &mut App, code: KeyCode) -> Vec<Request> {
        app.key(KeyEvent::new(code, KeyModifiers::NONE))
    }

    fn event(i: usize) -> TailEvent {
        TailEvent {
            event_id: format!("id-{i}"),
            event_source: "/src".into(),
            subject: "service".into(),
            predicate: if i.is_multiple_of(2) {
                "deployed"
            } else {
                "upgraded"
            }
            .into(),
            service: Some("checkout".into()),
            ..TailEvent::default()
        }
    }

    #[test]
    fn ring_is_bounded_and_newest_first() {
        let mut app = App::new("u");
        for i in 0..RING + 5 {
            app.update(Msg::Tail(Box::new(event(i))));
        }
        assert_eq!(app.live.ring.len(), RING);
        assert_eq!(app.live.ring[0].event_id, format!("id-{}", RING + 4));
        assert_eq!(app.live.total, (RING + 5) as u64);
    }

    #[test]
    fn pause_holds_events_until_resumed() {
        let mut app = App::new("u");
        app.update(Msg::Tail(Box::new(event(0))));
        press(&mut app, KeyCode::Char(' '));
        app.update(Msg::Tail(Box::new(event(1))));
        assert_eq!(app.live.ring.len(), 1);
        press(&mut app, KeyCode::Char(' '));
        assert_eq!(app.live.ring.len(), 2);
        assert_eq!(app.live.ring[0].event_id, "id-1");
    }

    #[test]
    fn filter_typing_and_errors() {
        let mut app = App::new("u");
        for i in 0..4 {
            app.update(Msg::Tail(Box::new(event(i))));
        }
        press(&mut app, KeyCode::Char('/'));
        for c in "type=deployed".chars() {
            press(&mut app, KeyCode::Char(c));
        }
        press(&mut app, KeyCode::Enter);
        assert_eq!(app.live.rows().count(), 2);
        press(&mut app, KeyCode::Char('/'));
        press(&mut app, KeyCode::Char(' '));
        press(&mut app, KeyCode::Char('x'));
        press(&mut app, KeyCode::Char('='));
        press(&mut app, KeyCode::Enter);
        assert!(app.live.filter_error.is_some());
        assert!(app.live.editing.is_some());
        press(&mut app, KeyCode::Esc);
        assert!(!app.quit);
        press(&mut app, KeyCode::Char('q'));
        assert!(app.quit);
    }

    #[test]
    fn enter_asks_for_the_payload() {
        let mut app = App::new("u");
        app.update(Msg::Tail(Box::new(event(7))));
        let r = press(&mut app, KeyCode::Enter);
        assert_eq!(
            r,
            vec![Request::Payload {
                event_source: "/src".into(),
                event_id: "id-7".into()
            }]
        );
        app.update(Msg::Payload {
            event_source: "/src".into(),
            event_id: "id-7".into(),
            result: Ok("{\"a\":1}".into()),
        });
        assert_eq!(
            app.live.detail.as_ref().map(|d| d.body.clone()),
            Some(Load::Ready("{\n  \"a\": 1\n}".into()))
        );
    }

    #[test]
    fn tabs_fetch_once_and_refetch_after_reconnect() {
        let mut app = App::new("u");
        assert_eq!(
            press(&mut app, KeyCode::Char('2')),
            vec![Request::Dora {
                days: 30,
                by_environment: false
            }]
        );
        assert_eq!(
            press(&mut app, KeyCode::Char('w')),
            vec![Request::Dora {
                days: 90,
                by_environment: false
            }]
        );
        assert_eq!(
            press(&mut app, KeyCode::Char('e')),
            vec![Request::Dora {
                days: 90,
                by_environment: true
            }]
        );
        assert_eq!(
            press(&mut app, KeyCode::Char('3')),
            vec![Request::Pipelines]
        );
        app.update(Msg::Pipelines(Err("down".into())));
        app.update(Msg::Disconnected("refused".into()));
        assert_eq!(app.update(Msg::Connected), vec![Request::Pipelines]);
    }

    #[test]
    fn rate_rolls_per_second() {
        let mut app = App::new("u");
        app.tick(100);
        for i in 0..5 {
            app.update(Msg::Tail(Box::new(event(i))));
        }
        app.tick(101);
        assert_eq!(app.live.rate(), 5);
        app.tick(200);
        assert_eq!(app.live.rates.len(), RATE_SECONDS);
        assert_eq!(app.live.rate(), 0);
    }
}
