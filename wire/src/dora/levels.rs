//! The DORA levels as data: for each figure that has levels, the bounds of elite, high and
//! medium, and how a value is compared with them. This table is the one definition:
//!
//! - the report (`cdlake-query`'s `dora`) levels each figure with [`Benchmark::level_of`]
//!   (DESIGN's table is [`Benchmark::Design`]; [`level_of`] is its shorthand), and other
//!   report years' tables sit beside it ([`Benchmark`]);
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
    Benchmark::Design
        .level_of(metric, value)
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
    Benchmark::Design.bands()
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

/// The published levels a report's figures are placed in (`cdlake dora --bands`, `[dora]
/// bands`, `bands=` on the HTTP API, the `dora_benchmarks` view).
///
/// Each year's State of DevOps report names its tiers by clusters of respondents and describes
/// each tier by a range per figure ("between one day and one week"). cdlake reads a tier as
/// met by a figure at least as good as the worst edge of its range (a lead time "between one
/// day and one week" is met below a week), and gives a figure the best tier it meets, else
/// the report's lowest. Where a report gives a middle tier the same or a better range than
/// the tier above it (2021's medium change failure rate, 16-30 % as high's; 2024's medium
/// change failure rate, 10 % against high's 20 %, and medium recovery time, under a day as
/// high's), that tier cannot be told apart by that figure alone and is never given for it. A
/// lowest tier with the range of the one above (2023's deployment frequency and lead time)
/// is still what a figure meeting no better tier gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Benchmark {
    /// DESIGN.md's levels (the default; the same bounds as the 2023 report's).
    #[default]
    Design,
    /// Accelerate State of DevOps 2021.
    Dora2021,
    /// Accelerate State of DevOps 2022 (no elite tier).
    Dora2022,
    /// Accelerate State of DevOps 2023.
    Dora2023,
    /// Accelerate State of DevOps 2024.
    Dora2024,
    /// DORA 2025 (State of AI-assisted Software Development): no tiers, so no level.
    Dora2025,
}

/// A `--bands` value that names no benchmark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownBenchmark(pub String);

impl std::fmt::Display for UnknownBenchmark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "unknown bands {:?}: use design (DESIGN.md's levels, the default), 2021, 2022, 2023, 2024 or 2025",
            self.0
        )
    }
}

impl std::error::Error for UnknownBenchmark {}

impl std::str::FromStr for Benchmark {
    type Err = UnknownBenchmark;
    fn from_str(s: &str) -> Result<Self, UnknownBenchmark> {
        Benchmark::ALL
            .into_iter()
            .find(|b| b.as_str() == s.trim())
            .ok_or_else(|| UnknownBenchmark(s.to_string()))
    }
}

/// The bounds a figure meets for each tier, best first (elite, high, medium): `None` where the
/// report has no such tier. A figure that meets none is low.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tiers {
    pub metric: Metric,
    pub compare: Compare,
    pub bounds: [Option<f64>; 3],
}

const WEEK: f64 = 7.0 * DAY;
const MONTH: f64 = 30.0 * DAY;
const SIX_MONTHS: f64 = 6.0 * MONTH;

/// Per benchmark with tiers, the bounds of each figure in [`Metric::ALL`] order: deployment
/// frequency (per day, at least), lead time (seconds, below), change failure rate (ratio, at
/// most), recovery time (seconds, below). A month is 30 days, as in DESIGN.md.
const YEARS: [(Benchmark, [[Option<f64>; 3]; 4]); 4] = [
    (
        // Elite: on-demand (multiple deploys per day), lead time < 1 hour, 0-15 %, restore
        // < 1 hour. High: once per week to once per month, 1 day to 1 week, 16-30 %, < 1 day.
        // Medium: once per month to once every 6 months, 1 to 6 months, 16-30 %, 1 day to 1
        // week. Low: fewer than once per 6 months, > 6 months, 16-30 %, > 6 months.
        Benchmark::Dora2021,
        [
            [Some(1.0), Some(1.0 / 30.0), Some(DAY / SIX_MONTHS)],
            [Some(HOUR), Some(WEEK), Some(SIX_MONTHS)],
            [Some(0.15), Some(0.30), Some(0.30)],
            [Some(HOUR), Some(DAY), Some(WEEK)],
        ],
    ),
    (
        // No elite. High: on-demand (multiple deploys per day), 1 day to 1 week, 0-15 %,
        // < 1 day. Medium: once per week to once per month, 1 week to 1 month, 16-30 %, 1 day
        // to 1 week. Low: once per month to once every 6 months, 1 to 6 months, 46-60 %, 1
        // week to 1 month.
        Benchmark::Dora2022,
        [
            [None, Some(1.0), Some(1.0 / 30.0)],
            [None, Some(WEEK), Some(MONTH)],
            [None, Some(0.15), Some(0.30)],
            [None, Some(DAY), Some(WEEK)],
        ],
    ),
    (
        // Elite: on demand, < 1 day, 5 %, < 1 hour. High: once per day to once per week, 1 day
        // to 1 week, 10 %, < 1 day. Medium: once per week to once per month, 1 week to 1
        // month, 15 %, 1 day to 1 week. Low: once per week to once per month, 1 week to 1
        // month, 64 %, 1 month to 6 months.
        Benchmark::Dora2023,
        [
            [Some(1.0), Some(1.0 / 7.0), Some(1.0 / 30.0)],
            [Some(DAY), Some(WEEK), Some(MONTH)],
            [Some(0.05), Some(0.10), Some(0.15)],
            [Some(HOUR), Some(DAY), Some(WEEK)],
        ],
    ),
    (
        // Elite: on demand, < 1 day, 5 %, < 1 hour. High: once per day to once per week, 1 day
        // to 1 week, 20 %, < 1 day. Medium: once per week to once per month, 1 week to 1
        // month, 10 %, < 1 day. Low: once per month to once every 6 months, 1 to 6 months,
        // 40 %, 1 week to 1 month.
        Benchmark::Dora2024,
        [
            [Some(1.0), Some(1.0 / 7.0), Some(1.0 / 30.0)],
            [Some(DAY), Some(WEEK), Some(MONTH)],
            [Some(0.05), Some(0.20), Some(0.10)],
            [Some(HOUR), Some(DAY), Some(DAY)],
        ],
    ),
];

impl Benchmark {
    pub const ALL: [Benchmark; 6] = [
        Benchmark::Design,
        Benchmark::Dora2021,
        Benchmark::Dora2022,
        Benchmark::Dora2023,
        Benchmark::Dora2024,
        Benchmark::Dora2025,
    ];

    /// Its name in flags, the config, the report's `bands` and the `dora_benchmarks` view.
    pub fn as_str(self) -> &'static str {
        match self {
            Benchmark::Design => "design",
            Benchmark::Dora2021 => "2021",
            Benchmark::Dora2022 => "2022",
            Benchmark::Dora2023 => "2023",
            Benchmark::Dora2024 => "2024",
            Benchmark::Dora2025 => "2025",
        }
    }

    /// Where its levels come from, for people.
    pub fn source(self) -> &'static str {
        match self {
            Benchmark::Design => "DESIGN.md",
            Benchmark::Dora2021 => {
                "Accelerate State of DevOps 2021, software delivery performance table"
            }
            Benchmark::Dora2022 => {
                "Accelerate State of DevOps 2022, software delivery performance table"
            }
            Benchmark::Dora2023 => {
                "Accelerate State of DevOps 2023, software delivery performance table"
            }
            Benchmark::Dora2024 => {
                "Accelerate State of DevOps 2024, software delivery performance table"
            }
            Benchmark::Dora2025 => "DORA 2025 publishes no tiers",
        }
    }

    /// The bounds of `metric`'s tiers; `None` for a benchmark without tiers (2025).
    pub fn tiers(self, metric: Metric) -> Option<Tiers> {
        let t = metric.thresholds();
        let bounds = match self {
            Benchmark::Design => [Some(t.elite), Some(t.high), Some(t.medium)],
            Benchmark::Dora2025 => return None,
            year => {
                let (_, table) = YEARS.iter().find(|(b, _)| *b == year)?;
                let i = Metric::ALL.iter().position(|&m| m == metric)?;
                table[i]
            }
        };
        Some(Tiers {
            metric,
            compare: t.compare,
            bounds,
        })
    }

    /// The level of `value` of `metric`: the best tier it meets, else low; `None` for a
    /// benchmark without tiers.
    pub fn level_of(self, metric: Metric, value: f64) -> Option<Level> {
        let tiers = self.tiers(metric)?;
        Some(
            Level::ALL
                .into_iter()
                .zip(tiers.bounds)
                .find(|&(_, b)| b.is_some_and(|b| tiers.compare.meets(value, b)))
                .map_or(Level::Low, |(l, _)| l),
        )
    }

    /// The bands of every metric, best level first, leaving out a tier no value can reach (the
    /// rows of `dora_benchmarks` for this benchmark).
    pub fn bands(self) -> Vec<Band> {
        let mut out = Vec::new();
        for metric in Metric::ALL {
            let Some(tiers) = self.tiers(metric) else {
                continue;
            };
            // The bound of the values better tiers have taken: at or above it (AtLeast), below
            // it (Below), at or below it (AtMost).
            let mut taken: Option<f64> = None;
            for (level, bound) in Level::ALL.into_iter().zip(tiers.bounds) {
                let Some(b) = bound else { continue };
                let reaches = taken.is_none_or(|t| match tiers.compare {
                    Compare::AtLeast => b < t,
                    Compare::Below | Compare::AtMost => b > t,
                });
                if !reaches {
                    continue;
                }
                out.push(band(metric, level, tiers.compare, taken, Some(b)));
                taken = Some(b);
            }
            out.push(band(metric, Level::Low, tiers.compare, taken, None));
        }
        out
    }
}

/// The band between the bound of the better tiers (`taken`) and a tier's own bound (`None`:
/// the lowest tier, unbounded on its worse side).
fn band(
    metric: Metric,
    level: Level,
    compare: Compare,
    taken: Option<f64>,
    own: Option<f64>,
) -> Band {
    match compare {
        Compare::AtLeast => Band {
            metric,
            level,
            lower: own,
            lower_inclusive: own.is_some(),
            upper: taken,
            upper_inclusive: false,
        },
        Compare::Below => Band {
            metric,
            level,
            lower: taken,
            lower_inclusive: taken.is_some(),
            upper: own,
            upper_inclusive: false,
        },
        Compare::AtMost => Band {
            metric,
            level,
            lower: taken,
            lower_inclusive: false,
            upper: own,
            upper_inclusive: own.is_some(),
        },
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

    /// DESIGN's levels are the 2023 report's: the two benchmarks level every value alike.
    #[test]
    fn design_levels_are_the_2023_reports() {
        for m in Metric::ALL {
            assert_eq!(
                Benchmark::Design.tiers(m).unwrap().bounds,
                Benchmark::Dora2023.tiers(m).unwrap().bounds,
                "{m:?}"
            );
            for v in [0.0, 0.05, 0.1, 0.5, 1.0, 3600.0, DAY, 40.0 * DAY] {
                assert_eq!(Benchmark::Design.level_of(m, v), Some(level_of(m, v)));
            }
        }
        assert_eq!(bands(), Benchmark::Dora2023.bands());
    }

    /// Values placed by hand from each report's table.
    #[test]
    fn each_year_levels_as_its_report_tabulates() {
        use Benchmark::*;
        use Level::*;
        use Metric::*;
        let cases = [
            // 2021: elite deploys on demand; weekly is high, every two months medium.
            (Dora2021, DeploymentFrequency, 1.0 / 7.0, High),
            (Dora2021, DeploymentFrequency, 1.0 / 60.0, Medium),
            (Dora2021, DeploymentFrequency, 1.0 / 200.0, Low),
            // Lead time: elite under an hour; a day is high, two months medium.
            (Dora2021, LeadTime, 3599.0, Elite),
            (Dora2021, LeadTime, DAY, High),
            (Dora2021, LeadTime, 60.0 * DAY, Medium),
            (Dora2021, LeadTime, 200.0 * DAY, Low),
            // 0-15 % elite; high, medium and low all 16-30 %: above 30 % is low.
            (Dora2021, ChangeFailureRate, 0.15, Elite),
            (Dora2021, ChangeFailureRate, 0.2, High),
            (Dora2021, ChangeFailureRate, 0.31, Low),
            (Dora2021, RecoveryTime, 2.0 * DAY, Medium),
            // 2022 has no elite: deploying many times a day is high.
            (Dora2022, DeploymentFrequency, 5.0, High),
            (Dora2022, DeploymentFrequency, 0.5, Medium),
            (Dora2022, LeadTime, 60.0, High),
            (Dora2022, LeadTime, 10.0 * DAY, Medium),
            (Dora2022, ChangeFailureRate, 0.0, High),
            (Dora2022, ChangeFailureRate, 0.4, Low),
            (Dora2022, RecoveryTime, 3.0 * DAY, Medium),
            (Dora2022, RecoveryTime, 8.0 * DAY, Low),
            // 2024: high's 20 % is worse than medium's 10 %, so 8 % is high, 25 % low.
            (Dora2024, ChangeFailureRate, 0.05, Elite),
            (Dora2024, ChangeFailureRate, 0.08, High),
            (Dora2024, ChangeFailureRate, 0.2, High),
            (Dora2024, ChangeFailureRate, 0.25, Low),
            // High and medium both recover in under a day; two days is low.
            (Dora2024, RecoveryTime, 3599.0, Elite),
            (Dora2024, RecoveryTime, 3600.0, High),
            (Dora2024, RecoveryTime, 2.0 * DAY, Low),
            (Dora2024, DeploymentFrequency, 1.0 / 10.0, Medium),
        ];
        for (b, m, v, want) in cases {
            assert_eq!(b.level_of(m, v), Some(want), "{b:?} {m:?} {v}");
        }
        for m in Metric::ALL {
            assert_eq!(Dora2025.level_of(m, 1.0), None);
            assert_eq!(Dora2022.level_of(m, 0.0).map(|l| l != Elite), Some(true));
        }
        assert!(Dora2025.bands().is_empty());
        // Tiers no value reaches are left out of the bands.
        let levels = |b: Benchmark, m: Metric| -> Vec<Level> {
            b.bands()
                .iter()
                .filter(|x| x.metric == m)
                .map(|x| x.level)
                .collect()
        };
        assert_eq!(levels(Dora2024, ChangeFailureRate), [Elite, High, Low]);
        assert_eq!(levels(Dora2021, ChangeFailureRate), [Elite, High, Low]);
        assert_eq!(levels(Dora2022, LeadTime), [High, Medium, Low]);
        assert_eq!(levels(Dora2024, RecoveryTime), [Elite, High, Low]);
    }

    /// Around every bound of every benchmark, exactly one band holds a value, and it is the
    /// benchmark's level.
    #[test]
    fn every_benchmarks_bands_partition_the_values_as_it_levels() {
        for b in Benchmark::ALL {
            let bands = b.bands();
            for m in Metric::ALL {
                let Some(tiers) = b.tiers(m) else { continue };
                let mut values = vec![0.0, -1.0, f64::INFINITY, 1e12];
                for x in tiers.bounds.into_iter().flatten() {
                    values.extend([x, x.next_down(), x.next_up(), x * 0.5, x * 2.0]);
                }
                for v in values {
                    let holding: Vec<&Band> = bands
                        .iter()
                        .filter(|x| x.metric == m && x.contains(v))
                        .collect();
                    assert_eq!(holding.len(), 1, "{b:?} {m:?} {v}: {holding:?}");
                    assert_eq!(Some(holding[0].level), b.level_of(m, v), "{b:?} {m:?} {v}");
                }
            }
            assert_eq!(b.as_str().parse::<Benchmark>(), Ok(b));
        }
        assert!(
            "2020"
                .parse::<Benchmark>()
                .unwrap_err()
                .to_string()
                .contains("2024")
        );
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
