//! The random draws of the simulation: uniform, normal, log-normal and Poisson variates, and
//! working hours and the daily rhythm of changes and deployments.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::{DAY, HOUR};

// ---------------------------------------------------------------------------------------------
// Random helpers
// ---------------------------------------------------------------------------------------------

/// Uniform in `[lo, hi)`; `lo` when the range is empty.
pub(crate) fn between(rng: &mut ChaCha8Rng, lo: i64, hi: i64) -> i64 {
    if hi <= lo {
        lo
    } else {
        rng.random_range(lo..hi)
    }
}

pub(crate) fn uniform(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.random::<f64>()
}

pub(crate) fn chance(rng: &mut ChaCha8Rng, p: f64) -> bool {
    rng.random::<f64>() < p
}

/// A standard normal variate (Box–Muller).
pub(crate) fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1 = 1.0 - rng.random::<f64>(); // (0, 1]
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A log-normal duration in milliseconds with the given median, clamped to `[lo, hi]`.
pub(crate) fn lognormal(rng: &mut ChaCha8Rng, median: i64, sigma: f64, lo: i64, hi: i64) -> i64 {
    let v = (median as f64) * (sigma * normal(rng)).exp();
    (v as i64).clamp(lo, hi)
}

pub(crate) fn poisson(rng: &mut ChaCha8Rng, lambda: f64) -> u64 {
    if lambda.is_nan() || lambda <= 0.0 {
        0
    } else if lambda < 30.0 {
        let limit = (-lambda).exp();
        let mut k = 0;
        let mut p = rng.random::<f64>();
        while p > limit {
            k += 1;
            p *= rng.random::<f64>();
        }
        k
    } else {
        (lambda + lambda.sqrt() * normal(rng)).round().max(0.0) as u64
    }
}

/// A millisecond offset into a day, the hour drawn from `weights` (UTC hours 0–23).
pub(crate) fn time_of_day(rng: &mut ChaCha8Rng, weights: &[f64; 24]) -> i64 {
    let total: f64 = weights.iter().sum();
    let mut x = rng.random::<f64>() * total;
    let mut hour = 23;
    for (h, w) in weights.iter().enumerate() {
        if x < *w {
            hour = h;
            break;
        }
        x -= w;
    }
    hour as i64 * HOUR + between(rng, 0, HOUR)
}

pub(crate) fn pick<'a, T>(rng: &mut ChaCha8Rng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

pub(crate) fn hex_digest(rng: &mut ChaCha8Rng) -> String {
    let [a, b, c, d]: [u64; 4] = rng.random();
    format!("{a:016x}{b:016x}{c:016x}{d:016x}")
}

/// Monday = 0 … Sunday = 6 of the UTC day holding `t` (1970-01-01 was a Thursday).
pub(crate) fn weekday(t: i64) -> i64 {
    (t.div_euclid(DAY) + 3).rem_euclid(7)
}

/// Moves `t` into working hours (weekdays 08:00–19:00 UTC) if it is outside them.
pub(crate) fn into_work_hours(rng: &mut ChaCha8Rng, t: i64) -> i64 {
    let day = t.div_euclid(DAY) * DAY;
    let hour = (t - day) / HOUR;
    if weekday(day) < 5 && (8..19).contains(&hour) {
        return t;
    }
    let mut d = if hour >= 19 || weekday(day) >= 5 {
        day + DAY
    } else {
        day
    };
    while weekday(d) >= 5 {
        d += DAY;
    }
    d + 8 * HOUR + between(rng, 0, 3 * HOUR)
}

/// When pull requests are opened, by UTC hour.
pub(crate) const CHANGE_HOURS: [f64; 24] = [
    0.2, 0.1, 0.1, 0.1, 0.1, 0.2, 0.4, 0.9, 1.8, 2.8, 3.0, 3.0, 2.4, 2.8, 3.0, 3.0, 2.7, 2.1, 1.4,
    1.0, 0.8, 0.6, 0.4, 0.3,
];

/// When production deployments happen, by UTC hour.
pub(crate) const DEPLOY_HOURS: [f64; 24] = [
    0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.05, 0.2, 0.8, 2.0, 3.0, 3.0, 2.0, 2.5, 3.0, 3.0, 2.5, 1.2, 0.5,
    0.2, 0.1, 0.05, 0.0, 0.0,
];

pub(crate) const WEEKEND_FACTOR: f64 = 0.12;
