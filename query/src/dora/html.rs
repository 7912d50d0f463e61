//! A DORA report as one self-contained HTML page for management: the five figures with their
//! levels and the change against the previous period of the same length, weekly trend charts
//! as inline SVG, the per-group table, and what the figures rest on. No scripts, no fonts, no
//! network: it can be mailed or attached to a wiki as it is.

use std::fmt::Write;

use super::render::human_duration;
use super::{DoraReport, Figures, Group, Level, Metric as Levelled};

/// The inputs of the page: the report (with groups), the same-length period before it, and the
/// report by week for the trend charts.
#[derive(Debug, Clone, Copy)]
pub struct HtmlReport<'a> {
    pub current: &'a DoraReport,
    pub previous: Option<&'a DoraReport>,
    pub weekly: Option<&'a DoraReport>,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn capitalised(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

fn level_badge(l: Option<Level>) -> String {
    match l {
        Some(l) => format!("<span class=\"lvl {0}\">{0}</span>", l.as_str()),
        None => "<span class=\"lvl none\">no level</span>".to_string(),
    }
}

/// One headline figure: its display value and the number compared across periods.
struct Metric {
    name: &'static str,
    value: fn(&Figures) -> Option<f64>,
    show: fn(f64) -> String,
    level: fn(&Figures) -> Option<Level>,
    basis: fn(&Figures) -> String,
    /// The levelled figure it is, whose direction the levels table gives (rework rate has no
    /// levels; less is better).
    levelled: Option<Levelled>,
}

impl Metric {
    /// Whether a larger value is better (for the colour of the change).
    fn higher_is_better(&self) -> bool {
        self.levelled.is_some_and(Levelled::higher_is_better)
    }
}

fn pct(v: f64) -> String {
    format!("{:.1} %", v * 100.0)
}

const METRICS: [Metric; 5] = [
    Metric {
        name: "Deployment frequency",
        value: |f| Some(f.deployment_frequency.per_day),
        show: |v| format!("{v:.2} / day"),
        level: |f| f.deployment_frequency.level,
        basis: |f| {
            format!(
                "{} deployments on {} days",
                f.deployment_frequency.deployments, f.deployment_frequency.deploy_days
            )
        },
        levelled: Some(Levelled::DeploymentFrequency),
    },
    Metric {
        name: "Lead time for changes",
        value: |f| f.lead_time.median_seconds,
        show: human_duration,
        level: |f| f.lead_time.level,
        basis: |f| match f.lead_time.fell_back {
            0 => format!("median of {} changes", f.lead_time.changes),
            n => format!(
                "median of {} changes ({n} fell back to a later start)",
                f.lead_time.changes
            ),
        },
        levelled: Some(Levelled::LeadTime),
    },
    Metric {
        name: "Change failure rate",
        value: |f| f.change_failure_rate.rate,
        show: pct,
        level: |f| f.change_failure_rate.level,
        basis: |f| f.change_failure_rate.basis(),
        levelled: Some(Levelled::ChangeFailureRate),
    },
    Metric {
        name: "Failed deployment recovery time",
        value: |f| f.recovery_time.median_seconds,
        show: human_duration,
        level: |f| f.recovery_time.level,
        basis: |f| {
            format!(
                "median of {} incidents, {} open",
                f.recovery_time.incidents, f.recovery_time.open
            )
        },
        levelled: Some(Levelled::RecoveryTime),
    },
    Metric {
        name: "Rework rate",
        value: |f| f.rework_rate.rate,
        show: pct,
        level: |_| None,
        basis: |f| f.rework_rate.basis(),
        levelled: None,
    },
];

fn delta(m: &Metric, now: Option<f64>, before: Option<f64>) -> String {
    match (now, before) {
        (Some(n), Some(b)) if (n - b).abs() > f64::EPSILON => {
            let better = (n > b) == m.higher_is_better();
            let arrow = if n > b { "▲" } else { "▼" };
            format!(
                "<div class=\"delta {}\">{arrow} from {} in the previous period</div>",
                if better { "good" } else { "bad" },
                (m.show)(b)
            )
        }
        (Some(_), Some(_)) => {
            "<div class=\"delta\">unchanged from the previous period</div>".into()
        }
        (_, None) => "<div class=\"delta\">no data for the previous period</div>".into(),
        (None, Some(_)) => String::new(),
    }
}

/// A small line chart of weekly values (gaps where a week has no value).
fn sparkline(values: &[(String, Option<f64>)], show: fn(f64) -> String) -> String {
    let (w, h, pad) = (320.0, 90.0, 14.0);
    let known: Vec<f64> = values.iter().filter_map(|(_, v)| *v).collect();
    if known.is_empty() {
        return "<svg class=\"spark\" viewBox=\"0 0 320 90\" role=\"img\"><text x=\"160\" y=\"50\" text-anchor=\"middle\">no data</text></svg>".into();
    }
    let max = known
        .iter()
        .cloned()
        .fold(0.0_f64, f64::max)
        .max(f64::MIN_POSITIVE);
    let n = values.len().max(2) as f64;
    let x = |i: usize| pad + i as f64 * (w - 2.0 * pad) / (n - 1.0);
    let y = |v: f64| h - pad - v / max * (h - 2.0 * pad);
    let mut svg = format!("<svg class=\"spark\" viewBox=\"0 0 {w} {h}\" role=\"img\">");
    let _ = write!(
        svg,
        "<line x1=\"{pad}\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\" class=\"axis\"/>",
        h - pad,
        w - pad
    );
    let mut path = String::new();
    let mut pen_down = false;
    for (i, (week, v)) in values.iter().enumerate() {
        match v {
            Some(v) => {
                let _ = write!(
                    path,
                    "{}{:.1},{:.1} ",
                    if pen_down { "L" } else { "M" },
                    x(i),
                    y(*v)
                );
                let _ = write!(
                    svg,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\"><title>{}: {}</title></circle>",
                    x(i),
                    y(*v),
                    esc(week),
                    esc(&show(*v))
                );
                pen_down = true;
            }
            None => pen_down = false,
        }
    }
    let _ = write!(svg, "<path d=\"{}\" class=\"line\"/>", path.trim_end());
    let _ = write!(
        svg,
        "<text x=\"{pad}\" y=\"10\" class=\"max\">max {}</text>",
        esc(&show(max))
    );
    if let (Some((first, _)), Some((last, _))) = (values.first(), values.last()) {
        let _ = write!(
            svg,
            "<text x=\"{pad}\" y=\"{h}\" class=\"wk\">{}</text>",
            esc(first)
        );
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{h}\" text-anchor=\"end\" class=\"wk\">{}</text>",
            w - pad,
            esc(last)
        );
    }
    svg.push_str("</svg>");
    svg
}

fn group_rows(groups: &[Group]) -> String {
    let mut out = String::new();
    for g in groups {
        let f = &g.figures;
        let cell = |m: &Metric| -> String {
            let v = (m.value)(f).map_or("–".to_string(), m.show);
            let l = (m.level)(f).map_or(String::new(), |l| {
                format!(" <span class=\"lvl {0}\">{0}</span>", l.as_str())
            });
            format!("<td>{}{l}</td>", esc(&v))
        };
        let _ = write!(out, "<tr><th>{}</th>", esc(&g.label()));
        for m in &METRICS {
            out.push_str(&cell(m));
        }
        out.push_str("</tr>\n");
    }
    out
}

const STYLE: &str = "body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#1d2330;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}.sub{color:#5b6375;margin-top:0}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(200px,1fr));gap:12px;margin:1.2rem 0}
.card{border:1px solid #d8dce6;border-radius:8px;padding:12px 14px}.card h3{font-size:.85rem;margin:0;color:#5b6375;font-weight:600}
.val{font-size:1.5rem;font-weight:700;margin:.3rem 0}.basis,.delta{font-size:.8rem;color:#5b6375}.delta.good{color:#17803d}.delta.bad{color:#b42318}
.lvl{font-size:.72rem;padding:1px 7px;border-radius:10px;font-weight:600;text-transform:uppercase}
.elite{background:#d3f3df;color:#0f6b33}.high{background:#dcebff;color:#1d4f9c}.medium{background:#fff1c9;color:#8a5b00}.low{background:#ffd9d6;color:#a3231a}.none{background:#eceef3;color:#5b6375}
.trends{display:grid;grid-template-columns:repeat(auto-fit,minmax(330px,1fr));gap:12px}.spark{width:100%;height:auto}
.spark .line{fill:none;stroke:#3461c1;stroke-width:2}.spark circle{fill:#3461c1}.spark .axis{stroke:#c9ced9}.spark text{font-size:9px;fill:#5b6375}
table{border-collapse:collapse;width:100%;font-size:.9rem}th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #e6e9f0}thead th{color:#5b6375;font-weight:600}
footer{margin-top:2rem;font-size:.8rem;color:#5b6375}";

/// Render the page.
pub fn html(r: HtmlReport<'_>) -> String {
    let cur = r.current;
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>DORA report {} – {}</title><style>{STYLE}</style></head><body>",
        esc(&cur.window.from),
        esc(&cur.window.to)
    );
    let _ = write!(
        out,
        "<h1>DORA report</h1><p class=\"sub\">{} → {} ({:.0} days). Production environments match <code>{}</code>. An incident fails {}. Failure rules: {}; rework rules: {}; lead time starts at: {}. Levels: {}.</p>",
        esc(&cur.window.from),
        esc(&cur.window.to),
        cur.window.days,
        esc(&cur.production),
        if cur.failure_window == "next_deployment" {
            "the latest deployment of its service before it".to_string()
        } else {
            format!(
                "every deployment of its service in the {} before it",
                esc(&cur.failure_window)
            )
        },
        esc(&cur.failure_rules.join(", ")),
        esc(&cur.rework_rules.join(", ")),
        esc(&cur.lead_time_start),
        match cur.bands.as_str() {
            "design" => "DESIGN.md's".to_string(),
            "2025" => "none (DORA 2025 publishes no tiers)".to_string(),
            year => format!("as DORA's {} report tabulated them", esc(year)),
        },
    );
    out.push_str("<section class=\"cards\">");
    for m in &METRICS {
        let now = (m.value)(&cur.figures).filter(|_| {
            m.name != "Deployment frequency" || cur.figures.deployment_frequency.deployments > 0
        });
        let before = r.previous.and_then(|p| (m.value)(&p.figures));
        let _ = write!(
            out,
            "<div class=\"card\"><h3>{}</h3><div class=\"val\">{}</div>{}<div class=\"basis\">{}</div>{}</div>",
            m.name,
            esc(&now.map_or("no data".to_string(), m.show)),
            if m.name == "Rework rate" {
                String::new()
            } else {
                level_badge((m.level)(&cur.figures))
            },
            esc(&(m.basis)(&cur.figures)),
            delta(m, now, before)
        );
    }
    out.push_str("</section>");

    if let Some(weekly) = r.weekly.and_then(|w| w.groups.as_deref()) {
        out.push_str("<h2>Weekly trend</h2><section class=\"trends\">");
        for m in &METRICS {
            let series: Vec<(String, Option<f64>)> = weekly
                .iter()
                .map(|g| (g.key().to_string(), (m.value)(&g.figures)))
                .collect();
            let _ = write!(
                out,
                "<div class=\"card\"><h3>{}</h3>{}</div>",
                m.name,
                sparkline(&series, m.show)
            );
        }
        out.push_str("</section>");
    }

    if let Some((key, groups)) = cur.breakdown().filter(|(_, g)| !g.is_empty()) {
        let _ = write!(
            out,
            "<h2>By {key}</h2><table><thead><tr><th>{}</th>",
            capitalised(&key)
        );
        for m in &METRICS {
            let _ = write!(out, "<th>{}</th>", m.name);
        }
        out.push_str("</tr></thead><tbody>");
        out.push_str(&group_rows(groups));
        out.push_str("</tbody></table>");
    }

    let f = &cur.figures;
    let u = &cur.unlinked;
    out.push_str("<h2>What the figures rest on</h2><ul>");
    for line in [
        format!(
            "{} production deployments, on {} distinct days",
            f.deployment_frequency.deployments, f.deployment_frequency.deploy_days
        ),
        format!(
            "{} changes delivered to production in the window",
            f.lead_time.changes
        ),
        format!(
            "{} production incidents resolved in the window, {} still open at its end",
            f.recovery_time.incidents, f.recovery_time.open
        ),
        format!(
            "{} production deployments of artifacts not linked to a merged change (they deliver no lead time)",
            u.deployments_unknown_artifact
        ),
        format!(
            "{} merged changes not delivered to production by the window's end",
            u.changes_not_delivered
        ),
        format!(
            "{} production incidents with no service (no deployment can own them)",
            u.incidents_without_service
        ),
        format!(
            "{} incidents resolved with no detected or reported event",
            u.incidents_without_detection
        ),
    ] {
        let _ = write!(out, "<li>{}</li>", esc(&line));
    }
    out.push_str("</ul><footer>Definitions: deployments are production <code>service.deployed/upgraded/rolledback</code> events; a deployment failed when a production incident of its service was detected before the service's next deployment or the next deployment was a rollback; lead time runs from a change's creation (or merge) to the first production deployment of an artifact built from it or from a later change of the same repository; medians interpolate between the two middle values. Generated by cdlake.</footer></body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparklines_break_at_missing_weeks_and_escape_labels() {
        let svg = sparkline(
            &[
                ("2026-W01".into(), Some(1.0)),
                ("2026-W02".into(), None),
                ("<W03>".into(), Some(3.0)),
            ],
            |v| format!("{v}"),
        );
        assert_eq!(svg.matches("<circle").count(), 2);
        assert_eq!(
            svg.matches('M').count(),
            2,
            "a gap starts a new segment: {svg}"
        );
        assert!(svg.contains("&lt;W03&gt;") && !svg.contains("<W03>"));
        assert!(sparkline(&[], |v| format!("{v}")).contains("no data"));
    }
}
