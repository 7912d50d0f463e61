//! The DORA levels as data: for each figure that has levels, the bounds of elite, high and
//! medium, and how a value is compared with them. This table is the one definition:
//!
//! - the report (`cdlake-query`'s `dora`) levels each figure with [`level_of`];
//! - the SQL view `dora_levels` is [`bands`] as rows, so dashboards and users level a figure
//!   by joining it (the "DORA levels" panel does);
//! - the stat panels' colour thresholds are [`grafana_steps`], checked by the dashboards test;
//! - the terminal UI and the HTML page show the level the report carries and take a figure's
//!   direction from [`Metric::higher_is_better`].

use serde::{Deserialize, Serialize};

use super::Level;

const HOUR: f64 = 3600.0;
const DAY: f64 = 24.0 * HOUR;

/// A figure that has levels (rework rate has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Deployments per day.
    DeploymentFrequency,
    /// Median seconds from a change's start to its delivery.
    LeadTime,
    /// Failed deployments / deployments.
    ChangeFailureRate,
    /// Median seconds from an incident's detection to its resolution.
    RecoveryTime,
}

impl Metric {
    pub const ALL: [Metric; 4] = [
        Metric::DeploymentFrequency,
        Metric::LeadTime,
        Metric::ChangeFailureRate,
        Metric::RecoveryTime,
    ];

    /// The figure's name: its field in the report's JSON and its `metric` in `dora_levels`.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::DeploymentFrequency => "deployment_frequency",
            Metric::LeadTime => "lead_time",
            Metric::ChangeFailureRate => "change_failure_rate",
            Metric::RecoveryTime => "recovery_time",
        }
    }

    /// What the levelled value is measured in.
    pub fn unit(self) -> &'static str {
        match self {
            Metric::DeploymentFrequency => "per_day",
            Metric::LeadTime | Metric::RecoveryTime => "seconds",
            Metric::ChangeFailureRate => "ratio",
        }
    }

    /// Whether a larger value is better.
    pub fn higher_is_better(self) -> bool {
        self.thresholds().compare == Compare::AtLeast
    }

    /// The metric's row of [`THRESHOLDS`].
    pub fn thresholds(self) -> &'static Thresholds {
        match self {
            Metric::DeploymentFrequency => &THRESHOLDS[0],
            Metric::LeadTime => &THRESHOLDS[1],
            Metric::ChangeFailureRate => &THRESHOLDS[2],
            Metric::RecoveryTime => &THRESHOLDS[3],
        }
    }
}

/// How a value meets a bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    /// `value >= bound`.
    AtLeast,
    /// `value < bound`.
    Below,
    /// `value <= bound`.
    AtMost,
}

impl Compare {
    fn meets(self, value: f64, bound: f64) -> bool {
        match self {
            Compare::AtLeast => value >= bound,
            Compare::Below => value < bound,
            Compare::AtMost => value <= bound,
        }
    }
}

/// The levels of one figure: a value is elite if it meets `elite`, else high if it meets
/// `high`, else medium if it meets `medium`, else low.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub metric: Metric,
    pub compare: Compare,
    pub elite: f64,
    pub high: f64,
    pub medium: f64,
}

impl Thresholds {
    /// The bound of `level` (none for low).
    pub fn bound(&self, level: Level) -> Option<f64> {
        match level {
            Level::Elite => Some(self.elite),
            Level::High => Some(self.high),
            Level::Medium => Some(self.medium),
            Level::Low => None,
        }
    }
}

/// The DORA levels of DESIGN.md (those of the DORA State of DevOps reports).
pub const THRESHOLDS: [Thresholds; 4] = [
    // On demand (daily or more), weekly, monthly.
    Thresholds {
        metric: Metric::DeploymentFrequency,
        compare: Compare::AtLeast,
        elite: 1.0,
        high: 1.0 / 7.0,
        medium: 1.0 / 30.0,
    },
    // Under a day, a week, a month.
    Thresholds {
        metric: Metric::LeadTime,
        compare: Compare::Below,
        elite: DAY,
        high: 7.0 * DAY,
        medium: 30.0 * DAY,
    },
    // 5 %, 10 %, 15 % or less.
    Thresholds {
        metric: Metric::ChangeFailureRate,
        compare: Compare::AtMost,
        elite: 0.05,
        high: 0.10,
        medium: 0.15,
    },
    // Under an hour, a day, a week.
    Thresholds {
        metric: Metric::RecoveryTime,
        compare: Compare::Below,
        elite: HOUR,
        high: DAY,
        medium: 7.0 * DAY,
    },
];

/// The level of `value` of `metric` (low for NaN).
pub fn level_of(metric: Metric, value: f64) -> Level {
    let t = metric.thresholds();
    Level::ALL
        .into_iter()
        .find(|&l| t.bound(l).is_some_and(|b| t.compare.meets(value, b)))
        .unwrap_or(Level::Low)
}

/// The values of a figure that earn a level: between `lower` and `upper` (`None`: unbounded),
/// each included or not. A row of the `dora_levels` view.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Band {
    pub metric: Metric,
    pub level: Level,
    pub lower: Option<f64>,
    pub lower_inclusive: bool,
    pub upper: Option<f64>,
    pub upper_inclusive: bool,
}

impl Band {
    pub fn contains(&self, value: f64) -> bool {
        let above = self
            .lower
            .is_none_or(|l| value > l || (self.lower_inclusive && value == l));
        let below = self
            .upper
            .is_none_or(|u| value < u || (self.upper_inclusive && value == u));
        above && below
    }
}

/// The four bands of every metric, best level first: the table [`level_of`] decides, as
/// ranges (the rows of the `dora_levels` view).
pub fn bands() -> Vec<Band> {
    let mut out = Vec::new();
    for t in &THRESHOLDS {
        let bounds = [None, Some(t.elite), Some(t.high), Some(t.medium), None];
        for (i, level) in Level::ALL.into_iter().enumerate() {
            // Level i lies between the bound of the level before it (exclusive of what meets
            // that one) and its own bound.
            let (better, own) = (bounds[i], bounds[i + 1]);
            let band = match t.compare {
                Compare::AtLeast => Band {
                    metric: t.metric,
                    level,
                    lower: own,
                    lower_inclusive: own.is_some(),
                    upper: better,
                    upper_inclusive: false,
                },
                Compare::Below => Band {
                    metric: t.metric,
                    level,
                    lower: better,
                    lower_inclusive: better.is_some(),
                    upper: own,
                    upper_inclusive: false,
                },
                Compare::AtMost => Band {
                    metric: t.metric,
                    level,
                    lower: better,
                    lower_inclusive: false,
                    upper: own,
                    upper_inclusive: own.is_some(),
                },
            };
            out.push(band);
        }
    }
    out
}

/// The smallest step Grafana's thresholds need above a bound a level includes (`value <=
/// bound`): a Grafana step colours values at or above its own value.
pub const GRAFANA_EPSILON: f64 = 1e-9;

/// A stat panel's threshold steps for `metric`, as Grafana applies them (a step colours the
/// values at or above it, the first step everything below): `(value, level)` with `None` for
/// the base step.
pub fn grafana_steps(metric: Metric) -> Vec<(Option<f64>, Level)> {
    let t = metric.thresholds();
    match t.compare {
        Compare::AtLeast => vec![
            (None, Level::Low),
            (Some(t.medium), Level::Medium),
            (Some(t.high), Level::High),
            (Some(t.elite), Level::Elite),
        ],
        Compare::Below => vec![
            (None, Level::Elite),
            (Some(t.elite), Level::High),
            (Some(t.high), Level::Medium),
            (Some(t.medium), Level::Low),
        ],
        Compare::AtMost => vec![
            (None, Level::Elite),
            (Some(t.elite + GRAFANA_EPSILON), Level::High),
            (Some(t.high + GRAFANA_EPSILON), Level::Medium),
            (Some(t.medium + GRAFANA_EPSILON), Level::Low),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_the_thresholds() {
        use Metric::*;
        assert_eq!(level_of(DeploymentFrequency, 1.0), Level::Elite);
        assert_eq!(level_of(DeploymentFrequency, 1.0 / 7.0), Level::High);
        assert_eq!(level_of(DeploymentFrequency, 0.05), Level::Medium);
        assert_eq!(level_of(DeploymentFrequency, 0.01), Level::Low);
        assert_eq!(level_of(ChangeFailureRate, 0.05), Level::Elite);
        assert_eq!(level_of(ChangeFailureRate, 0.1), Level::High);
        assert_eq!(level_of(ChangeFailureRate, 0.15), Level::Medium);
        assert_eq!(level_of(ChangeFailureRate, 0.16), Level::Low);
        assert_eq!(level_of(LeadTime, DAY - 1.0), Level::Elite);
        assert_eq!(level_of(LeadTime, DAY), Level::High);
        assert_eq!(level_of(LeadTime, 30.0 * DAY), Level::Low);
        assert_eq!(level_of(RecoveryTime, 3599.0), Level::Elite);
        assert_eq!(level_of(RecoveryTime, 7.0 * DAY), Level::Low);
        assert_eq!(level_of(RecoveryTime, f64::NAN), Level::Low);
        assert_eq!(level_of(DeploymentFrequency, f64::INFINITY), Level::Elite);
    }

    /// Around every bound, exactly one band holds a value, and it is the level of [`level_of`].
    #[test]
    fn bands_partition_the_values_as_level_of_decides() {
        let bands = bands();
        assert_eq!(bands.len(), 16);
        for t in &THRESHOLDS {
            let mut values = vec![0.0, -1.0, f64::INFINITY, 1e12];
            for b in [t.elite, t.high, t.medium] {
                values.extend([b, b.next_down(), b.next_up(), b * 0.5, b * 2.0]);
            }
            for v in values {
                let holding: Vec<&Band> = bands
                    .iter()
                    .filter(|b| b.metric == t.metric && b.contains(v))
                    .collect();
                assert_eq!(holding.len(), 1, "{:?} {v}: {holding:?}", t.metric);
                assert_eq!(
                    holding[0].level,
                    level_of(t.metric, v),
                    "{:?} {v}",
                    t.metric
                );
            }
        }
    }

    /// Grafana's rule (the highest step at or below the value) gives the same level, but
    /// within [`GRAFANA_EPSILON`] above an included bound.
    #[test]
    fn grafana_steps_colour_as_level_of_decides() {
        for t in &THRESHOLDS {
            let steps = grafana_steps(t.metric);
            let grafana = |v: f64| {
                steps
                    .iter()
                    .rev()
                    .find(|(s, _)| s.is_none_or(|s| v >= s))
                    .map(|(_, l)| *l)
                    .unwrap()
            };
            for b in [t.elite, t.high, t.medium] {
                for v in [
                    b,
                    b.next_down(),
                    b + 2.0 * GRAFANA_EPSILON,
                    b * 0.5,
                    b * 2.0,
                    0.0,
                ] {
                    assert_eq!(grafana(v), level_of(t.metric, v), "{:?} {v}", t.metric);
                }
            }
        }
    }

    #[test]
    fn directions() {
        assert!(Metric::DeploymentFrequency.higher_is_better());
        for m in [
            Metric::LeadTime,
            Metric::ChangeFailureRate,
            Metric::RecoveryTime,
        ] {
            assert!(!m.higher_is_better());
        }
        for m in Metric::ALL {
            assert_eq!(m.thresholds().metric, m);
        }
    }
}
