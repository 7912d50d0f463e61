//! A DORA report as text for people: an aligned table for terminals, Markdown for wikis.

use super::{DoraReport, Figures, Group, Level};

/// A duration in seconds as `3d 4h`, `2h 10m`, `45m`, `30s`.
pub fn human_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    let (d, h, m) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

fn level(l: Option<Level>) -> &'static str {
    l.map_or("-", Level::as_str)
}

fn pct(r: Option<f64>) -> String {
    r.map_or("-".to_string(), |r| format!("{:.1} %", r * 100.0))
}

fn spread(median: Option<f64>, p90: Option<f64>) -> String {
    match (median, p90) {
        (Some(m), Some(p)) => format!("median {}, p90 {}", human_duration(m), human_duration(p)),
        _ => "-".to_string(),
    }
}

/// Rows of (metric, value, level, based on) for one set of figures.
fn rows(f: &Figures) -> Vec<[String; 4]> {
    let df = &f.deployment_frequency;
    let lt = &f.lead_time;
    let cfr = &f.change_failure_rate;
    let rt = &f.recovery_time;
    let rw = &f.rework_rate;
    vec![
        [
            "Deployment frequency".into(),
            format!("{:.2}/day", df.per_day),
            level(df.level).into(),
            format!("{} deployments on {} days", df.deployments, df.deploy_days),
        ],
        [
            "Lead time for changes".into(),
            spread(lt.median_seconds, lt.p90_seconds),
            level(lt.level).into(),
            format!("{} changes", lt.changes),
        ],
        [
            "Change failure rate".into(),
            pct(cfr.rate),
            level(cfr.level).into(),
            cfr.basis(),
        ],
        [
            "Failed deployment recovery time".into(),
            spread(rt.median_seconds, rt.p90_seconds),
            level(rt.level).into(),
            format!("{} incidents resolved, {} open", rt.incidents, rt.open),
        ],
        ["Rework rate".into(), pct(rw.rate), "".into(), rw.basis()],
    ]
}

fn aligned(header: &[&str], body: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in body {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            s.push_str(c);
            if i + 1 < cells.len() {
                s.push_str(&" ".repeat(widths[i] - c.chars().count() + 2));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    out.push_str(&line(
        widths
            .iter()
            .map(|w| "─".repeat(*w))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect(),
    ));
    for r in body {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

fn group_rows(groups: &[Group]) -> Vec<Vec<String>> {
    groups
        .iter()
        .map(|g| {
            let f = &g.figures;
            let with_level = |value: String, l: Option<Level>| format!("{value} ({})", level(l));
            let duration = |s: Option<f64>| s.map_or("-".into(), human_duration);
            vec![
                g.label(),
                with_level(
                    format!("{:.2}", f.deployment_frequency.per_day),
                    f.deployment_frequency.level,
                ),
                with_level(duration(f.lead_time.median_seconds), f.lead_time.level),
                with_level(pct(f.change_failure_rate.rate), f.change_failure_rate.level),
                with_level(
                    duration(f.recovery_time.median_seconds),
                    f.recovery_time.level,
                ),
                pct(f.rework_rate.rate),
            ]
        })
        .collect()
}

const GROUP_COLUMNS: [&str; 5] = [
    "deploys/day",
    "lead time (median)",
    "change failure rate",
    "recovery (median)",
    "rework",
];

fn unlinked_lines(r: &DoraReport) -> Vec<String> {
    let u = &r.unlinked;
    [
        (
            u.deployments_unknown_artifact,
            "production deployments of artifacts not linked to a merged change",
        ),
        (
            u.changes_not_delivered,
            "merged changes not delivered to production by the window's end",
        ),
        (
            u.incidents_without_service,
            "production incidents with no service",
        ),
        (
            u.incidents_without_detection,
            "incidents resolved with no detected/reported event",
        ),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .collect()
}

/// The `[dora]` choices that are not DESIGN's: the failure window, the failure and rework
/// rules, where lead time starts.
fn window_note(r: &DoraReport) -> String {
    r.chosen_definitions()
        .into_iter()
        .map(|(what, value)| format!(", {what} {value}"))
        .collect()
}

/// The report as an aligned table.
pub fn table(r: &DoraReport) -> String {
    let mut out = format!(
        "DORA report  {} → {}  ({:.1} days, production = {}{})\n\n",
        r.window.from,
        r.window.to,
        r.window.days,
        r.production,
        window_note(r)
    );
    let body: Vec<Vec<String>> = rows(&r.figures).into_iter().map(Vec::from).collect();
    out.push_str(&aligned(&["metric", "value", "level", "based on"], &body));
    if let Some((key, groups)) = r.breakdown() {
        out.push('\n');
        let mut header = vec![key.as_str()];
        header.extend(GROUP_COLUMNS);
        out.push_str(&aligned(&header, &group_rows(groups)));
    }
    let notes = unlinked_lines(r);
    if !notes.is_empty() {
        out.push_str("\nNot linked:\n");
        for n in notes {
            out.push_str(&format!("  {n}\n"));
        }
    }
    out
}

fn md_row(cells: &[String]) -> String {
    format!(
        "| {} |\n",
        cells
            .iter()
            .map(|c| c.replace('|', "\\|"))
            .collect::<Vec<_>>()
            .join(" | ")
    )
}

/// The report as Markdown.
pub fn markdown(r: &DoraReport) -> String {
    let mut out = format!(
        "## DORA report\n\nWindow: {} → {} ({:.1} days). Production: `{}`{}.\n\n",
        r.window.from,
        r.window.to,
        r.window.days,
        r.production,
        window_note(r)
    );
    out.push_str("| metric | value | level | based on |\n|---|---|---|---|\n");
    for row in rows(&r.figures) {
        out.push_str(&md_row(&row));
    }
    if let Some((key, groups)) = r.breakdown() {
        let mut header = vec![key.to_string()];
        header.extend(GROUP_COLUMNS.iter().map(|s| s.to_string()));
        out.push('\n');
        out.push_str(&md_row(&header));
        out.push_str(&format!("|{}\n", "---|".repeat(header.len())));
        for row in group_rows(groups) {
            out.push_str(&md_row(&row));
        }
    }
    let notes = unlinked_lines(r);
    if !notes.is_empty() {
        out.push_str("\nNot linked:\n\n");
        for n in notes {
            out.push_str(&format!("- {n}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(human_duration(42.0), "42s");
        assert_eq!(human_duration(600.0), "10m");
        assert_eq!(human_duration(7800.0), "2h 10m");
        assert_eq!(
            human_duration(3.0 * 86_400.0 + 4.0 * 3600.0 + 59.0),
            "3d 4h"
        );
    }
}
