//! Drawing: a pure function of the [`App`] state onto a ratatui frame. Works from 80x24 up.

use cdlake_wire::dora::{Figures, Group, Level};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, Borders, Cell, Clear, Paragraph, Row, Sparkline, Table, TableState, Wrap,
};

use crate::app::{App, DORA_COLUMNS, DoraData, Link, Load, RunDetail, Tab};
use crate::model::{self, PipelineRun, TailEvent};

/// Colour for an outcome: green success, red failure or error, yellow cancelled or skipped.
pub fn outcome_style(outcome: Option<&str>) -> Style {
    match outcome.map(str::to_ascii_lowercase).as_deref() {
        Some("success" | "succeeded" | "passed" | "ok") => Style::new().fg(Color::Green),
        Some("failure" | "failed" | "error" | "errored" | "timed_out" | "timeout") => {
            Style::new().fg(Color::Red)
        }
        Some("cancelled" | "canceled" | "skipped" | "aborted") => Style::new().fg(Color::Yellow),
        _ => Style::new(),
    }
}

fn level_style(level: Option<Level>) -> Style {
    match level {
        Some(Level::Elite) => Style::new().fg(Color::Green).bold(),
        Some(Level::High) => Style::new().fg(Color::Cyan),
        Some(Level::Medium) => Style::new().fg(Color::Yellow),
        Some(Level::Low) => Style::new().fg(Color::Red),
        None => Style::new().fg(Color::DarkGray),
    }
}

fn level_name(level: Option<Level>) -> &'static str {
    level.map_or("-", Level::as_str)
}

fn dim() -> Style {
    Style::new().fg(Color::DarkGray)
}

/// Draws the whole screen.
pub fn render(app: &App, frame: &mut Frame<'_>) {
    let banner = matches!(app.link, Link::Lost(_));
    let [top, banner_area, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(u16::from(banner)),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    tabs(app, frame, top);
    if let Link::Lost(why) = &app.link {
        let text = format!(" Connection lost: {why} · reconnecting… ");
        frame.render_widget(
            Paragraph::new(text).style(Style::new().bg(Color::Red).fg(Color::White).bold()),
            banner_area,
        );
    }
    match app.tab {
        Tab::Live => live(app, frame, body),
        Tab::Dora => dora(app, frame, body),
        Tab::Pipelines => pipelines(app, frame, body),
    }
    frame.render_widget(
        Paragraph::new(keys(app)).style(Style::new().bg(Color::DarkGray).fg(Color::White)),
        footer,
    );
    if app.help {
        help(frame, body);
    }
}

fn tabs(app: &App, frame: &mut Frame<'_>, area: Rect) {
    let mut spans = vec![Span::from(" cdlake ").bold()];
    for (i, tab) in Tab::ALL.iter().enumerate() {
        let label = format!(" {} {} ", i + 1, tab.title());
        spans.push(if *tab == app.tab {
            Span::styled(label, Style::new().bg(Color::Blue).fg(Color::White).bold())
        } else {
            Span::from(label)
        });
    }
    let status = match &app.link {
        Link::Connecting => Span::styled("○ connecting", Style::new().fg(Color::Yellow)),
        Link::Up => Span::styled("● connected", Style::new().fg(Color::Green)),
        Link::Lost(_) => Span::styled("✕ offline", Style::new().fg(Color::Red)),
    };
    let [left, right] =
        Layout::horizontal([Constraint::Min(0), Constraint::Length(14)]).areas(area);
    frame.render_widget(Line::from(spans), left);
    frame.render_widget(Line::from(status).right_aligned(), right);
}

fn keys(app: &App) -> String {
    let keys = if app.help {
        "Esc close help · q quit"
    } else if app.live.editing.is_some() && app.tab == Tab::Live {
        "type key=value terms · Enter apply · Esc cancel"
    } else {
        match app.tab {
            Tab::Live if app.live.detail.is_some() => {
                "↑↓ scroll · Esc back · Tab next · ? help · q quit"
            }
            Tab::Live => {
                "space pause · / filter · Enter payload · ↑↓ select · Tab next · ? help · q quit"
            }
            Tab::Dora => {
                "w window · e env · s sort · S reverse · r refresh · Tab next · ? help · q quit"
            }
            Tab::Pipelines if app.pipelines.open.is_some() => {
                "Esc back · r refresh · Tab next · ? help · q quit"
            }
            Tab::Pipelines => {
                "↑↓ select · Enter waterfall · r refresh · Tab next · ? help · q quit"
            }
        }
    };
    format!(" {keys}")
}

fn help(frame: &mut Frame<'_>, body: Rect) {
    let lines = [
        "1 2 3 / Tab / Shift-Tab   switch tabs",
        "q / Ctrl-C                quit",
        "?                         this help",
        "",
        "Live",
        "  space or p              pause / resume",
        "  /                       filter: service=checkout type=deployed",
        "                          keys: service env origin subject",
        "                          predicate type outcome run; a word",
        "                          matches any column; Esc clears",
        "  ↑↓ PgUp PgDn g          select      Enter  the payload",
        "DORA",
        "  w  window 7/30/90 days  s / ←→  sort column  S  reverse",
        "  e  by environment / by service      r  refresh",
        "Pipelines",
        "  ↑↓ Enter                a run's task waterfall; Esc back",
    ];
    let width = 62.min(body.width);
    let height = (lines.len() as u16 + 2).min(body.height);
    let area = Rect {
        x: body.x + (body.width - width) / 2,
        y: body.y + (body.height - height) / 2,
        width,
        height,
    };
    frame.render_widget(Clear, area);
    frame.render_widget(
        Paragraph::new(lines.iter().map(|l| Line::from(*l)).collect::<Vec<_>>())
            .block(Block::bordered().title(" Keys ")),
        area,
    );
}

// ---- Live ----

fn live(app: &App, frame: &mut Frame<'_>, area: Rect) {
    let live = &app.live;
    let filter_line = live.editing.is_some() || !live.filter.is_empty();
    let [header, filter_area, table_area] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Length(u16::from(filter_line)),
        Constraint::Min(0),
    ])
    .areas(area);

    // Header: rate sparkline on the left, counts per type on the right.
    let [rate_area, counts_area] =
        Layout::horizontal([Constraint::Length(32), Constraint::Min(0)]).areas(header);
    let [rate_text, spark] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(rate_area);
    let mut status = vec![
        Span::from(format!(" {}/s", live.rate())).bold(),
        Span::styled(format!("  {} events", live.total), dim()),
    ];
    if live.paused {
        status.push(Span::styled(
            format!("  PAUSED +{}", live.held.len()),
            Style::new().fg(Color::Yellow).bold(),
        ));
    }
    frame.render_widget(Line::from(status), rate_text);
    let data: Vec<u64> = live.rates.iter().copied().collect();
    let skip = data
        .len()
        .saturating_sub(usize::from(spark.width.saturating_sub(1)));
    frame.render_widget(
        Sparkline::default()
            .data(&data[skip..])
            .style(Style::new().fg(Color::Cyan)),
        Rect {
            x: spark.x + 1,
            width: spark.width.saturating_sub(1),
            ..spark
        },
    );
    let mut counts: Vec<(&String, &u64)> = live.counts.iter().collect();
    counts.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let mut spans = Vec::new();
    for (kind, n) in counts {
        spans.push(Span::from(kind.clone()));
        spans.push(Span::styled(format!(" {n}   "), Style::new().bold()));
    }
    if live.lagged > 0 {
        spans.push(Span::styled(
            format!("lagged: {} skipped", live.lagged),
            Style::new().fg(Color::Red),
        ));
    }
    frame.render_widget(
        Paragraph::new(Line::from(spans)).wrap(Wrap { trim: true }),
        counts_area,
    );

    if filter_line {
        let line = match &live.editing {
            Some(text) => {
                let mut spans = vec![
                    Span::from(" / ").bold(),
                    Span::from(text.clone()),
                    Span::from("█"),
                ];
                if let Some(e) = &live.filter_error {
                    spans.push(Span::styled(format!("  {e}"), Style::new().fg(Color::Red)));
                }
                Line::from(spans)
            }
            None => Line::from(vec![
                Span::styled(" filter: ", dim()),
                Span::from(live.filter_text.clone()).bold(),
                Span::styled("  (/ edit, Esc clear)", dim()),
            ]),
        };
        frame.render_widget(line, filter_area);
    }

    if let Some(d) = &live.detail {
        detail(d, frame, table_area);
        return;
    }

    let visible = usize::from(table_area.height.saturating_sub(1));
    let take = live.selected + visible + 1;
    let rows: Vec<Row<'_>> = live.rows().take(take).map(event_row).collect();
    if rows.is_empty() {
        let text = if live.ring.is_empty() {
            "Waiting for events… (newly stored events appear here)"
        } else {
            "No event matches the filter."
        };
        frame.render_widget(
            Paragraph::new(text)
                .style(dim())
                .block(Block::new().borders(Borders::TOP)),
            table_area,
        );
        return;
    }
    let table = Table::new(
        rows,
        [
            Constraint::Length(8),
            Constraint::Length(9),
            Constraint::Min(18),
            Constraint::Length(16),
            Constraint::Length(12),
            Constraint::Length(9),
        ],
    )
    .header(
        Row::new([
            "time",
            "origin",
            "type",
            "service",
            "environment",
            "outcome",
        ])
        .style(Style::new().bold().underlined()),
    )
    .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    let mut state = TableState::default().with_selected(Some(live.selected));
    frame.render_stateful_widget(table, table_area, &mut state);
}

fn event_row(e: &TailEvent) -> Row<'static> {
    let opt = |s: &Option<String>| s.clone().unwrap_or_default();
    Row::new([
        Cell::from(model::clock(&e.time)),
        Cell::from(e.origin.clone()),
        Cell::from(e.kind()),
        Cell::from(opt(&e.service)),
        Cell::from(opt(&e.environment)),
        Cell::from(opt(&e.outcome)),
    ])
    .style(outcome_style(e.outcome.as_deref()))
}

fn detail(d: &crate::app::Detail, frame: &mut Frame<'_>, area: Rect) {
    let title = format!(
        " {} · {} {} ",
        d.event.kind(),
        d.event.event_source,
        d.event.event_id
    );
    let block = Block::bordered().title(title);
    let p = match &d.body {
        Load::Ready(text) => Paragraph::new(text.as_str()).scroll((d.scroll, 0)),
        Load::Failed(e) => Paragraph::new(format!("Could not load the payload: {e}"))
            .style(Style::new().fg(Color::Red))
            .wrap(Wrap { trim: false }),
        Load::Idle | Load::Loading => Paragraph::new("Loading the payload…").style(dim()),
    };
    frame.render_widget(p.block(block), area);
}

// ---- DORA ----

fn loading<T>(load: &Load<T>, what: &str, frame: &mut Frame<'_>, area: Rect) -> bool {
    let text = match load {
        Load::Ready(_) => return false,
        Load::Idle | Load::Loading => Line::styled(format!(" Loading {what}…"), dim()),
        Load::Failed(e) => Line::styled(
            format!(" Could not load {what}: {e} (r retries)"),
            Style::new().fg(Color::Red),
        ),
    };
    frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: false }), area);
    true
}

fn pct(rate: Option<f64>) -> String {
    rate.map(|r| format!("{:.1}%", r * 100.0))
        .unwrap_or_else(|| "-".into())
}

fn per_day(f: &Figures) -> String {
    if f.deployment_frequency.deployments == 0 {
        "-".into()
    } else {
        format!("{:.2}", f.deployment_frequency.per_day)
    }
}

/// One figure's card: name, value, detail, level, and what it rests on by source or rule
/// (a line of its own, when there is something to say).
struct Card {
    name: &'static str,
    value: String,
    detail: String,
    level: Option<Level>,
    extra: Option<String>,
}

/// The five figures as cards.
fn figures(f: &Figures) -> [Card; 5] {
    let c = &f.change_failure_rate;
    let r = &f.rework_rate;
    [
        Card {
            name: "Deploy freq",
            value: format!("{}/day", per_day(f)),
            detail: format!("{} deploys", f.deployment_frequency.deployments),
            level: f.deployment_frequency.level,
            extra: None,
        },
        Card {
            name: "Lead time",
            value: model::duration(f.lead_time.median_seconds),
            detail: format!("{} changes", f.lead_time.changes),
            level: f.lead_time.level,
            // Changes that started elsewhere than `lead_time_start` says.
            extra: (f.lead_time.fell_back > 0)
                .then(|| format!("{} fell back", f.lead_time.fell_back)),
        },
        Card {
            name: "Change fail",
            value: pct(c.rate),
            detail: {
                let mut detail = format!("{}/{} failed", c.failed, c.deployments);
                if c.reverted > 0 {
                    detail.push_str(&format!(", {} reverted", c.reverted));
                }
                if c.failed_deployments > 0 {
                    detail.push_str(&format!(", {} attempts", c.failed_deployments));
                }
                detail
            },
            level: c.level,
            // What failed them: the incidents' tools, rollbacks, reverts.
            extra: c.sources().map(|s| format!("by {s}")),
        },
        Card {
            name: "Recovery",
            value: model::duration(f.recovery_time.median_seconds),
            detail: format!(
                "{} inc, {} open",
                f.recovery_time.incidents, f.recovery_time.open
            ),
            level: f.recovery_time.level,
            extra: None,
        },
        Card {
            name: "Rework",
            value: pct(r.rate),
            detail: {
                let mut detail = format!("{}/{} deploys", r.rework, r.deployments);
                // The rules that marked them, when another than DESIGN's did.
                if let Some(rules) = r.rules() {
                    detail.push_str(&format!(": {rules}"));
                }
                detail
            },
            level: None,
            extra: None,
        },
    ]
}

fn trend(groups: &[Group], i: usize) -> Vec<u64> {
    let mut weeks: Vec<&Group> = groups.iter().collect();
    weeks.sort_by(|a, b| a.week.cmp(&b.week));
    weeks
        .iter()
        .map(|g| {
            let f = &g.figures;
            let v = match i {
                0 => f.deployment_frequency.per_day * 100.0,
                1 => f.lead_time.median_seconds.unwrap_or(0.0) / 60.0,
                2 => f.change_failure_rate.rate.unwrap_or(0.0) * 1000.0,
                3 => f.recovery_time.median_seconds.unwrap_or(0.0) / 60.0,
                _ => f.rework_rate.rate.unwrap_or(0.0) * 1000.0,
            };
            if v.is_finite() && v > 0.0 {
                v.round() as u64
            } else {
                0
            }
        })
        .collect()
}

fn dora(app: &App, frame: &mut Frame<'_>, area: Rect) {
    let d = &app.dora;
    let [title, cards, table_area] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(7),
        Constraint::Min(0),
    ])
    .areas(area);
    let windows: Vec<Span<'_>> = crate::app::WINDOWS
        .iter()
        .flat_map(|w| {
            let s = format!(" {w}d ");
            [
                if *w == d.days {
                    Span::styled(s, Style::new().bg(Color::Blue).fg(Color::White).bold())
                } else {
                    Span::from(s)
                },
                Span::from(" "),
            ]
        })
        .collect();
    let mut line = vec![Span::from(" Window ").bold()];
    line.extend(windows);
    if let Load::Ready(data) = &d.data {
        let r = &data.by_service;
        // The definitions chosen in `[dora]`, where they are not DESIGN's.
        let rules: String = r
            .chosen_definitions()
            .into_iter()
            .map(|(what, value)| format!(" · {what}: {value}"))
            .collect();
        line.push(Span::styled(
            format!(
                " {} → {} · production: {}{rules}",
                short_date(&r.window.from),
                short_date(&r.window.to),
                r.production
            ),
            dim(),
        ));
    }
    frame.render_widget(Line::from(line), title);
    if loading(&d.data, "the DORA report", frame, cards) {
        return;
    }
    let Load::Ready(data) = &d.data else { return };
    dora_cards(data, frame, cards);
    dora_table(app, data, frame, table_area);
}

fn short_date(t: &str) -> String {
    t.chars().take(10).collect()
}

fn dora_cards(data: &DoraData, frame: &mut Frame<'_>, area: Rect) {
    let areas = Layout::horizontal([Constraint::Ratio(1, 5); 5]).split(area);
    let weeks = data.by_week.groups.as_deref().unwrap_or(&[]);
    for (i, card) in figures(&data.by_service.figures).into_iter().enumerate() {
        let block = Block::bordered().title(format!(" {} ", card.name));
        let inner = block.inner(areas[i]);
        frame.render_widget(block, areas[i]);
        let [v, s, l, x, t] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Length(1),
            Constraint::Length(1),
            Constraint::Length(u16::from(card.extra.is_some())),
            Constraint::Min(0),
        ])
        .areas(inner);
        frame.render_widget(Line::from(card.value).bold(), v);
        frame.render_widget(Line::styled(card.detail, dim()), s);
        let level_text = if i == 4 { "" } else { level_name(card.level) };
        frame.render_widget(Line::styled(level_text, level_style(card.level)), l);
        if let Some(extra) = card.extra {
            frame.render_widget(Line::styled(extra, dim()), x);
        }
        let data = trend(weeks, i);
        let skip = data.len().saturating_sub(usize::from(t.width));
        frame.render_widget(
            Sparkline::default()
                .data(&data[skip..])
                .style(Style::new().fg(Color::Cyan)),
            t,
        );
    }
}

/// The sort key of a group's column.
fn sort_key(g: &Group, col: usize) -> (Option<f64>, String) {
    let f = &g.figures;
    let name = g.key().to_string();
    let v = match col {
        0 => None,
        1 => Some(f.deployment_frequency.deployments as f64),
        2 => Some(f.deployment_frequency.per_day),
        3 => f.lead_time.median_seconds,
        4 => f.change_failure_rate.rate,
        5 => f.recovery_time.median_seconds,
        _ => f.rework_rate.rate,
    };
    (v, name)
}

/// The groups in the order the user chose; empty figures last either way.
pub fn sorted_groups(groups: &[Group], col: usize, descending: bool) -> Vec<&Group> {
    let mut v: Vec<&Group> = groups.iter().collect();
    v.sort_by(|a, b| {
        let (ka, na) = sort_key(a, col);
        let (kb, nb) = sort_key(b, col);
        let by_value = match (ka, kb) {
            (Some(x), Some(y)) => {
                let o = x.total_cmp(&y);
                if descending { o.reverse() } else { o }
            }
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        };
        let by_name = if col == 0 && descending {
            nb.cmp(&na)
        } else {
            na.cmp(&nb)
        };
        by_value.then(by_name)
    });
    v
}

fn dora_table(app: &App, data: &DoraData, frame: &mut Frame<'_>, area: Rect) {
    let d = &app.dora;
    // By service, or by environment (`e`): each environment as if it were production.
    let (key, groups) = data
        .by_service
        .breakdown()
        .unwrap_or(("service".to_string(), &[]));
    if groups.is_empty() {
        let what = if key == "environment" {
            " No deployments in this window."
        } else {
            " No production deployments in this window."
        };
        frame.render_widget(Paragraph::new(what).style(dim()), area);
        return;
    }
    let header = Row::new(DORA_COLUMNS.iter().enumerate().map(|(i, c)| {
        let c = if i == 0 { key.as_str() } else { c };
        if i == d.sort {
            Cell::from(format!("{c} {}", if d.descending { "▼" } else { "▲" }))
                .style(Style::new().fg(Color::Cyan))
        } else {
            Cell::from(c)
        }
    }))
    .style(Style::new().bold().underlined());
    let rows = sorted_groups(groups, d.sort, d.descending)
        .into_iter()
        .map(|g| {
            let f = &g.figures;
            Row::new([
                Cell::from(match g.key() {
                    "" => "(none)".to_string(),
                    name => name.to_string(),
                }),
                Cell::from(f.deployment_frequency.deployments.to_string()),
                Cell::from(per_day(f)).style(level_style(f.deployment_frequency.level)),
                Cell::from(model::duration(f.lead_time.median_seconds))
                    .style(level_style(f.lead_time.level)),
                Cell::from(pct(f.change_failure_rate.rate))
                    .style(level_style(f.change_failure_rate.level)),
                Cell::from(model::duration(f.recovery_time.median_seconds))
                    .style(level_style(f.recovery_time.level)),
                Cell::from(pct(f.rework_rate.rate)),
            ])
        })
        .collect::<Vec<_>>();
    let n = rows.len();
    let table = Table::new(
        rows,
        [
            Constraint::Min(14),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Length(10),
            Constraint::Length(8),
            Constraint::Length(10),
            Constraint::Length(8),
        ],
    )
    .header(header)
    .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    let mut state = TableState::default().with_selected(Some(d.selected.min(n.saturating_sub(1))));
    frame.render_stateful_widget(table, area, &mut state);
}

// ---- Pipelines ----

fn pipelines(app: &App, frame: &mut Frame<'_>, area: Rect) {
    let p = &app.pipelines;
    if let Some((run, detail)) = &p.open {
        waterfall(run, detail, frame, area);
        return;
    }
    if loading(&p.runs, "pipeline runs", frame, area) {
        return;
    }
    let Load::Ready(runs) = &p.runs else { return };
    if runs.is_empty() {
        frame.render_widget(
            Paragraph::new(" No pipeline runs stored yet.").style(dim()),
            area,
        );
        return;
    }
    let visible = usize::from(area.height.saturating_sub(1));
    let rows = runs
        .iter()
        .take(p.selected + visible + 1)
        .map(|r| {
            Row::new([
                Cell::from(model::short_time(r.start_us)),
                Cell::from(r.pipeline.clone().unwrap_or_default()),
                Cell::from(r.label()),
                Cell::from(r.outcome.clone().unwrap_or_else(|| "running".into())),
                Cell::from(model::duration(r.duration_seconds)),
                Cell::from(model::duration(r.queue_seconds)),
            ])
            .style(outcome_style(r.outcome.as_deref()))
        })
        .collect::<Vec<_>>();
    let table = Table::new(
        rows,
        [
            Constraint::Length(11),
            Constraint::Min(14),
            Constraint::Min(14),
            Constraint::Length(9),
            Constraint::Length(8),
            Constraint::Length(7),
        ],
    )
    .header(
        Row::new(["started", "pipeline", "run", "outcome", "duration", "queue"])
            .style(Style::new().bold().underlined()),
    )
    .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    let mut state = TableState::default().with_selected(Some(p.selected));
    frame.render_stateful_widget(table, area, &mut state);
}

/// One bar: `[label] [bar on the axis] [duration]`.
struct Bar {
    label: String,
    start: Option<i64>,
    end: Option<i64>,
    style: Style,
}

fn bars(bars: &[Bar], width: u16) -> Vec<Line<'static>> {
    let label_w = 18usize;
    let dur_w = 8usize;
    let axis = usize::from(width)
        .saturating_sub(label_w + dur_w + 2)
        .max(1);
    let t0 = bars.iter().filter_map(|b| b.start.or(b.end)).min();
    let t1 = bars.iter().filter_map(|b| b.end.or(b.start)).max();
    let (Some(t0), Some(t1)) = (t0, t1) else {
        return bars
            .iter()
            .map(|b| Line::from(format!("{:label_w$} (no times)", trim(&b.label, label_w))))
            .collect();
    };
    let span = (t1 - t0).max(1) as f64;
    let col = |t: i64| (((t - t0) as f64 / span) * axis as f64).floor() as usize;
    let mut lines = Vec::new();
    for b in bars {
        let (start, end) = match (b.start, b.end) {
            (Some(s), Some(e)) => (s, e.max(s)),
            (Some(s), None) => (s, t1),
            (None, Some(e)) => (e, e),
            (None, None) => (t0, t0),
        };
        let c0 = col(start).min(axis - 1);
        let c1 = col(end).clamp(c0 + 1, axis);
        let secs = match (b.start, b.end) {
            (Some(s), Some(e)) => Some((e - s) as f64 / 1e6),
            _ => None,
        };
        lines.push(Line::from(vec![
            Span::from(format!("{:label_w$} ", trim(&b.label, label_w))),
            Span::from(" ".repeat(c0)),
            Span::styled("█".repeat(c1 - c0), b.style),
            Span::from(" ".repeat(axis - c1)),
            Span::styled(format!(" {:>dur_w$}", model::duration(secs)), dim()),
        ]));
    }
    let total = (t1 - t0) as f64 / 1e6;
    lines.push(Line::styled(
        format!(
            "{:label_w$} 0{:>w$}",
            "",
            model::duration(Some(total)),
            w = axis.saturating_sub(1)
        ),
        dim(),
    ));
    lines
}

fn trim(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

fn waterfall(run: &PipelineRun, detail: &Load<RunDetail>, frame: &mut Frame<'_>, area: Rect) {
    let title = format!(
        " {} · run {} · {} · {} ",
        run.pipeline.as_deref().unwrap_or("pipeline"),
        run.label(),
        run.outcome.as_deref().unwrap_or("running"),
        model::duration(run.duration_seconds)
    );
    let block = Block::bordered()
        .title(title)
        .border_style(outcome_style(run.outcome.as_deref()));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if loading(detail, "task runs", frame, inner) {
        return;
    }
    let Load::Ready(d) = detail else { return };
    let mut lines = vec![Line::from(" Tasks").bold()];
    if d.tasks.is_empty() {
        lines.push(Line::styled(" no task runs recorded for this run", dim()));
    } else {
        let task_bars: Vec<Bar> = d
            .tasks
            .iter()
            .map(|t| Bar {
                label: t.task.clone().unwrap_or_else(|| t.task_run_id.clone()),
                start: t.start_us,
                end: t.end_us,
                style: match outcome_style(t.outcome.as_deref()) {
                    s if s == Style::new() => Style::new().fg(Color::Blue),
                    s => s,
                },
            })
            .collect();
        lines.extend(bars(&task_bars, inner.width));
    }
    lines.push(Line::from(""));
    lines.push(Line::from(" Spans").bold());
    if d.spans.is_empty() {
        lines.push(Line::styled(" no traces", dim()));
    } else {
        let span_bars: Vec<Bar> = d
            .spans
            .iter()
            .map(|s| Bar {
                label: s.name.clone(),
                start: s.start_us,
                end: s.end_us,
                style: if s
                    .status
                    .as_deref()
                    .is_some_and(|x| x.eq_ignore_ascii_case("error"))
                {
                    Style::new().fg(Color::Red)
                } else {
                    Style::new().fg(Color::Magenta)
                },
            })
            .collect();
        lines.extend(bars(&span_bars, inner.width));
    }
    frame.render_widget(Paragraph::new(lines), inner);
}
