//! A seeded, fully deterministic synthetic history of CDEvents, used by `cdlake demo`.
//!
//! [`generate`] simulates a small software organisation (the fictitious "acme") over a number
//! of days: services spread over GitHub repositories (one of them, `acme/shop`, a monorepo
//! holding `checkout` and `cart`), owned by teams. Pull requests are opened, reviewed and merged
//! (or abandoned) mostly in working hours; every merge runs a CI pipeline per service of the
//! repository (pipeline, task and test-suite runs, about 7 % failing) whose successful runs
//! package and publish an OCI artifact linked to the change, deployed to `staging` minutes later.
//! Each service ships to production (`production`, `prod-eu`, `prod-us`) at its own cadence,
//! from several times a day to once a month, always the newest published artifact, so one
//! deployment delivers a batch of changes. About one production deployment in ten is followed
//! by an incident (detected or reported), sometimes by a rollback, and usually by a resolution
//! minutes to days later. Events come in CDEvents v0.4.1 and v0.5.1 forms by emitting system,
//! with some timestamps written with a `+05:30` offset, and `customData.team` on production
//! deployments and incidents. The same [`DemoSpec`] and end instant always give the same
//! events byte for byte; they are produced lazily, in time order, in bounded memory, so a
//! history of ten million events never sits in memory.
//!
//! The crate is split as the simulation is: `catalogue` (what the organisation is made of),
//! `distributions` (the random draws) and `generator` (the simulation and its rendering).

use chrono::{DateTime, Utc};

mod catalogue;
mod distributions;
mod generator;
#[cfg(test)]
mod tests;

use distributions::{WEEKEND_FACTOR, weekday};
use generator::Generator;

pub(crate) const SEC: i64 = 1_000;
pub(crate) const MIN: i64 = 60 * SEC;
pub(crate) const HOUR: i64 = 60 * MIN;
pub(crate) const DAY: i64 = 24 * HOUR;

/// The shape of a demo history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoSpec {
    /// Seed of the random generator: the same spec and end give the same history.
    pub seed: u64,
    /// Length of the history in days, ending at the `end` given to [`generate`].
    pub days: u32,
    /// Number of services (named ones first, then `svc-013`, `svc-014`, …).
    pub services: usize,
    /// About how many events the whole history holds; the daily volume scales with it.
    pub target_events: u64,
}

impl Default for DemoSpec {
    fn default() -> Self {
        DemoSpec {
            seed: 42,
            days: 90,
            services: 12,
            target_events: 120_000,
        }
    }
}

/// Every event of the history ending at `end` (exclusive), as CDEvents JSON text (one compact
/// JSON object per item), in time order.
///
/// The history covers `[end - spec.days, end)`. Events are simulated and rendered lazily, day
/// by day, so memory stays bounded whatever `target_events` is.
pub fn generate(spec: &DemoSpec, end: DateTime<Utc>) -> impl Iterator<Item = String> + use<> {
    Generator::new(spec, end, 0)
}

/// Like [`generate`], for the same organisation (services, repositories, teams) but another
/// course of events: `salt` re-seeds the simulation and the event ids. `cdlake demo` uses it for
/// the live trickle after the history, so live events never collide with historical ones.
pub fn generate_salted(
    spec: &DemoSpec,
    end: DateTime<Utc>,
    salt: u64,
) -> impl Iterator<Item = String> + use<> {
    Generator::new(spec, end, salt)
}

/// The spec of a live trickle starting at `start`: one day of the same organisation with about
/// `per_day` events, weekends included (the simulation's weekend dip is compensated, so a demo
/// run on a Saturday still moves).
pub fn live_spec(spec: &DemoSpec, per_day: u64, start: DateTime<Utc>) -> DemoSpec {
    let weekend = weekday(start.timestamp_millis().div_euclid(DAY) * DAY) >= 5;
    let target = if weekend {
        (per_day as f64 / WEEKEND_FACTOR) as u64
    } else {
        per_day
    };
    DemoSpec {
        days: 1,
        target_events: target,
        ..spec.clone()
    }
}

/// An estimate of how many events [`generate`] yields, for a progress bar.
///
/// The generator sizes its daily volume from `target_events`, so this is `target_events` for
/// any non-empty spec (the real count is within a few per cent of it at realistic sizes).
pub fn estimated_events(spec: &DemoSpec) -> u64 {
    if spec.days == 0 || spec.services == 0 {
        0
    } else {
        spec.target_events
    }
}
