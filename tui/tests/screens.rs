//! Whole screens as snapshots of a `TestBackend` fed by fixed data.

use cdlake_tui::app::{DoraData, Load, Msg, RunDetail};
use cdlake_tui::model::{PipelineRun, TailEvent, TaskRun};
use cdlake_tui::{App, ui};
use cdlake_wire::DoraReport;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

fn screen(app: &App, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).expect("terminal");
    t.draw(|f| ui::render(app, f)).expect("draw");
    t.backend().to_string()
}

fn press(app: &mut App, code: KeyCode) {
    app.key(KeyEvent::new(code, KeyModifiers::NONE));
}

fn ev(i: u32, kind: (&str, &str), service: &str, env: &str, outcome: Option<&str>) -> TailEvent {
    TailEvent {
        event_id: format!("<id-{i}>"),
        event_source: "/ci/example".into(),
        event_type: format!("dev.cdevents.{}.{}.0.3.0", kind.0, kind.1),
        subject: kind.0.into(),
        predicate: kind.1.into(),
        origin: if i.is_multiple_of(3) {
            "github"
        } else {
            "cdevents"
        }
        .into(),
        time: format!("2026-03-01T10:{:02}:{:02}Z", i / 60, i % 60),
        service: Some(service.into()),
        environment: Some(env.into()),
        outcome: outcome.map(str::to_string),
        ..TailEvent::default()
    }
}

fn live_app() -> App {
    let mut app = App::new("http://127.0.0.1:8080");
    app.update(Msg::Connected);
    app.tick(1_000);
    let kinds = [
        (("service", "deployed"), "checkout", "prod", None),
        (
            ("pipelinerun", "finished"),
            "checkout",
            "ci",
            Some("success"),
        ),
        (("taskrun", "finished"), "cart", "ci", Some("failure")),
        (("service", "deployed"), "cart", "staging", None),
        (("incident", "detected"), "cart", "prod", None),
        (
            ("pipelinerun", "finished"),
            "search",
            "ci",
            Some("cancelled"),
        ),
    ];
    for i in 0..24u32 {
        let (kind, svc, env, outcome) = kinds[i as usize % kinds.len()];
        app.update(Msg::Tail(Box::new(ev(i, kind, svc, env, outcome))));
        if i % 5 == 4 {
            app.tick(1_001 + u64::from(i) / 5);
        }
    }
    app.tick(1_010);
    app
}

#[test]
fn live_tab() {
    let app = live_app();
    insta::assert_snapshot!("live_80x24", screen(&app, 80, 24));
    insta::assert_snapshot!("live_120x40", screen(&app, 120, 40));
}

#[test]
fn live_filter() {
    let mut app = live_app();
    press(&mut app, KeyCode::Char('/'));
    for c in "service=cart type=deployed".chars() {
        press(&mut app, KeyCode::Char(c));
    }
    insta::assert_snapshot!("live_filter_typing", screen(&app, 80, 24));
    press(&mut app, KeyCode::Enter);
    insta::assert_snapshot!("live_filter_applied", screen(&app, 80, 24));
    press(&mut app, KeyCode::Char('/'));
    press(&mut app, KeyCode::Char(' '));
    press(&mut app, KeyCode::Char('x'));
    press(&mut app, KeyCode::Char('='));
    press(&mut app, KeyCode::Enter);
    insta::assert_snapshot!("live_filter_error", screen(&app, 80, 24));
}

#[test]
fn live_detail() {
    let mut app = live_app();
    press(&mut app, KeyCode::Down);
    press(&mut app, KeyCode::Enter);
    insta::assert_snapshot!("live_detail_loading", screen(&app, 80, 24));
    let (source, id) = app
        .live
        .detail
        .as_ref()
        .map(|d| (d.event.event_source.clone(), d.event.event_id.clone()))
        .expect("detail open");
    app.update(Msg::Payload {
        event_source: source,
        event_id: id,
        result: Ok(r#"{"context":{"id":"<id>","type":"dev.cdevents.incident.detected.0.2.0","timestamp":"<time>"},"subject":{"id":"INC-1","content":{"service":{"id":"cart"},"environment":{"id":"prod"}}}}"#.into()),
    });
    insta::assert_snapshot!("live_detail", screen(&app, 80, 24));
}

#[test]
fn live_paused_and_connection_lost() {
    let mut app = live_app();
    press(&mut app, KeyCode::Char(' '));
    app.update(Msg::Tail(Box::new(ev(
        99,
        ("service", "deployed"),
        "x",
        "prod",
        None,
    ))));
    app.update(Msg::Disconnected(
        "error sending request: connection refused".into(),
    ));
    insta::assert_snapshot!("live_connection_lost", screen(&app, 80, 24));
}

#[test]
fn help_overlay() {
    let mut app = live_app();
    press(&mut app, KeyCode::Char('?'));
    insta::assert_snapshot!("help", screen(&app, 80, 24));
}

fn dora_data() -> DoraData {
    let by_service: DoraReport = serde_json::from_str(include_str!("data/dora_by_service.json"))
        .expect("the by-service report");
    let by_week: DoraReport =
        serde_json::from_str(include_str!("data/dora_by_week.json")).expect("the weekly report");
    DoraData {
        by_service,
        by_week,
    }
}

#[test]
fn dora_tab() {
    let mut app = live_app();
    press(&mut app, KeyCode::Char('2'));
    insta::assert_snapshot!("dora_loading", screen(&app, 80, 24));
    app.update(Msg::Dora {
        days: 30,
        by_environment: false,
        result: Ok(Box::new(dora_data())),
    });
    insta::assert_snapshot!("dora_80x24", screen(&app, 80, 24));
    // Sort by the change failure rate, worst first.
    for _ in 0..4 {
        press(&mut app, KeyCode::Char('s'));
    }
    press(&mut app, KeyCode::Char('S'));
    insta::assert_snapshot!("dora_sorted_by_cfr", screen(&app, 120, 30));
}

fn runs() -> Vec<PipelineRun> {
    (0..6)
        .map(|i| PipelineRun {
            run_id: format!("run-{i}"),
            run_key: format!("github:acme/app:run-{i}:1"),
            attempt: Some(1 + (i as i64 == 4) as i64),
            pipeline: Some(["build", "deploy", "test"][i % 3].into()),
            outcome: [Some("success"), Some("failure"), None][i % 3].map(str::to_string),
            duration_seconds: Some(60.0 * (i as f64 + 1.5)),
            queue_seconds: Some(3.0 * i as f64),
            start_us: Some(1_772_359_200_000_000 - i as i64 * 600_000_000),
        })
        .collect()
}

#[test]
fn pipelines_tab_and_waterfall() {
    let mut app = live_app();
    press(&mut app, KeyCode::Char('3'));
    app.update(Msg::Pipelines(Ok(runs())));
    press(&mut app, KeyCode::Down);
    insta::assert_snapshot!("pipelines_80x24", screen(&app, 80, 24));
    press(&mut app, KeyCode::Enter);
    let t0 = 1_772_359_200_000_000i64;
    let s = 1_000_000i64;
    let task = |name: &str, a: i64, b: Option<i64>, outcome: Option<&str>| TaskRun {
        task_run_id: format!("<task-{name}>"),
        task: Some(name.into()),
        outcome: outcome.map(str::to_string),
        start_us: Some(t0 + a * s),
        end_us: b.map(|b| t0 + b * s),
    };
    app.update(Msg::Tasks {
        run_key: "github:acme/app:run-1:1".into(),
        result: Ok(RunDetail {
            tasks: vec![
                task("checkout", 0, Some(5), Some("success")),
                task("compile", 5, Some(65), Some("success")),
                task("unit-tests", 65, Some(80), Some("failure")),
                task("lint", 5, Some(20), Some("success")),
                task("publish", 80, None, None),
            ],
            spans: Vec::new(),
        }),
    });
    insta::assert_snapshot!("pipelines_waterfall", screen(&app, 80, 24));
}

/// The app on its DORA tab, showing `data` (asked for by service).
fn dora_tab_with(data: DoraData) -> App {
    let mut app = live_app();
    press(&mut app, KeyCode::Char('2'));
    app.update(Msg::Dora {
        days: 30,
        by_environment: false,
        result: Ok(Box::new(data)),
    });
    app
}

#[test]
fn the_dora_tab_shows_environments_when_asked() {
    let mut app = dora_tab_with(dora_data());
    press(&mut app, KeyCode::Char('e'));
    assert!(app.dora.by_environment);
    // The report by environment: its slices in `environments`, no `groups`.
    let mut data = dora_data();
    let r = &mut data.by_service;
    let mut slices = r.groups.take().unwrap();
    slices.truncate(2);
    for (slice, name) in slices.iter_mut().zip(["production", "staging"]) {
        slice.service = None;
        slice.environment = Some(name.to_string());
    }
    r.environments = Some(slices);
    // A late answer by service is not shown in the environments' place.
    app.update(Msg::Dora {
        days: 30,
        by_environment: false,
        result: Ok(Box::new(dora_data())),
    });
    assert!(!matches!(app.dora.data, Load::Ready(_)));
    app.update(Msg::Dora {
        days: 30,
        by_environment: true,
        result: Ok(Box::new(data)),
    });
    let text = screen(&app, 120, 30);
    let header = text
        .lines()
        .find(|l| l.contains("deploys") && l.contains("CFR"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(header.contains("environment"), "{text}");
    for name in ["production", "staging"] {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("\"{name} "))),
            "{text}"
        );
    }
    assert!(!text.contains("checkout "), "{text}");
}

#[test]
fn the_dora_tab_names_the_definitions_chosen_in_the_configuration() {
    let mut data = dora_data();
    let r = &mut data.by_service;
    r.failure_window = "24h".into();
    r.rework_rules = vec!["incident_open".into(), "after_failure".into()];
    r.lead_time_start = "merged".into();
    r.failure_rules = vec!["incident".into(), "revert".into()];
    r.figures.change_failure_rate.failed_deployments = 3;
    r.figures.change_failure_rate.reverted = 2;
    r.figures.rework_rate.by_rule =
        [("after_failure".to_string(), 2), ("revert".to_string(), 1)].into();
    r.figures.change_failure_rate.by_source =
        [("pagerduty".to_string(), 2), ("rollback".to_string(), 1)].into();
    r.figures.lead_time.fell_back = 4;
    let app = dora_tab_with(data);
    let text = screen(&app, 240, 30);
    assert!(text.contains("failure window: 24h"), "{text}");
    assert!(text.contains("failures: incident+revert"), "{text}");
    assert!(
        text.contains("rework: incident_open+after_failure"),
        "{text}"
    );
    assert!(text.contains("lead time from: merged"), "{text}");
    assert!(text.contains("2 reverted, 3 attempts"), "{text}");
    assert!(text.contains("after_failure 2, revert 1"), "{text}");
    // Failures by source and lead time's fallbacks, each on a line of its card.
    assert!(text.contains("by pagerduty 2, rollback 1"), "{text}");
    assert!(text.contains("4 fell back"), "{text}");
    // The defaults say nothing.
    let app = dora_tab_with(dora_data());
    let text = screen(&app, 200, 30);
    assert!(
        !text.contains("failure window") && !text.contains("rework:"),
        "{text}"
    );
    assert!(!text.contains("fell back"), "{text}");
}
