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

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use chrono::{DateTime, FixedOffset, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const SEC: i64 = 1_000;
const MIN: i64 = 60 * SEC;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

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

// ---------------------------------------------------------------------------------------------
// CDEvents vocabulary
// ---------------------------------------------------------------------------------------------

/// The CDEvents spec version an emitting system speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spec {
    V041,
    V051,
}

/// The event types the demo emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    ChangeCreated,
    ChangeReviewed,
    ChangeMerged,
    ChangeAbandoned,
    PipelineQueued,
    PipelineStarted,
    PipelineFinished,
    TaskStarted,
    TaskFinished,
    SuiteStarted,
    SuiteFinished,
    ArtifactPackaged,
    ArtifactPublished,
    ServiceDeployed,
    ServiceUpgraded,
    ServiceRolledback,
    IncidentDetected,
    IncidentReported,
    IncidentResolved,
}

impl Kind {
    /// The full CDEvents type, with the type version each spec version defines (taken from
    /// the spec's conformance examples).
    fn event_type(self, spec: Spec) -> &'static str {
        use Kind::*;
        match (spec, self) {
            (Spec::V041, ChangeCreated) => "dev.cdevents.change.created.0.3.0",
            (Spec::V041, ChangeReviewed) => "dev.cdevents.change.reviewed.0.2.0",
            (Spec::V041, ChangeMerged) => "dev.cdevents.change.merged.0.2.0",
            (Spec::V041, ChangeAbandoned) => "dev.cdevents.change.abandoned.0.2.0",
            (Spec::V041, PipelineQueued) => "dev.cdevents.pipelinerun.queued.0.2.0",
            (Spec::V041, PipelineStarted) => "dev.cdevents.pipelinerun.started.0.2.0",
            (Spec::V041, PipelineFinished) => "dev.cdevents.pipelinerun.finished.0.2.0",
            (Spec::V041, TaskStarted) => "dev.cdevents.taskrun.started.0.2.0",
            (Spec::V041, TaskFinished) => "dev.cdevents.taskrun.finished.0.2.0",
            (Spec::V041, SuiteStarted) => "dev.cdevents.testsuiterun.started.0.2.0",
            (Spec::V041, SuiteFinished) => "dev.cdevents.testsuiterun.finished.0.2.0",
            (Spec::V041, ArtifactPackaged) => "dev.cdevents.artifact.packaged.0.2.0",
            (Spec::V041, ArtifactPublished) => "dev.cdevents.artifact.published.0.2.0",
            (Spec::V041, ServiceDeployed) => "dev.cdevents.service.deployed.0.2.0",
            (Spec::V041, ServiceUpgraded) => "dev.cdevents.service.upgraded.0.2.0",
            (Spec::V041, ServiceRolledback) => "dev.cdevents.service.rolledback.0.2.0",
            (Spec::V041, IncidentDetected) => "dev.cdevents.incident.detected.0.2.0",
            (Spec::V041, IncidentReported) => "dev.cdevents.incident.reported.0.2.0",
            (Spec::V041, IncidentResolved) => "dev.cdevents.incident.resolved.0.2.0",
            (Spec::V051, ChangeCreated) => "dev.cdevents.change.created.0.4.0",
            (Spec::V051, ChangeReviewed) => "dev.cdevents.change.reviewed.0.3.0",
            (Spec::V051, ChangeMerged) => "dev.cdevents.change.merged.0.3.0",
            (Spec::V051, ChangeAbandoned) => "dev.cdevents.change.abandoned.0.3.0",
            (Spec::V051, PipelineQueued) => "dev.cdevents.pipelinerun.queued.0.3.0",
            (Spec::V051, PipelineStarted) => "dev.cdevents.pipelinerun.started.0.3.0",
            (Spec::V051, PipelineFinished) => "dev.cdevents.pipelinerun.finished.0.3.0",
            (Spec::V051, TaskStarted) => "dev.cdevents.taskrun.started.0.3.0",
            (Spec::V051, TaskFinished) => "dev.cdevents.taskrun.finished.0.3.0",
            (Spec::V051, SuiteStarted) => "dev.cdevents.testsuiterun.started.0.3.0",
            (Spec::V051, SuiteFinished) => "dev.cdevents.testsuiterun.finished.0.3.0",
            (Spec::V051, ArtifactPackaged) => "dev.cdevents.artifact.packaged.0.3.0",
            (Spec::V051, ArtifactPublished) => "dev.cdevents.artifact.published.0.3.0",
            (Spec::V051, ServiceDeployed) => "dev.cdevents.service.deployed.0.3.0",
            (Spec::V051, ServiceUpgraded) => "dev.cdevents.service.upgraded.0.3.0",
            (Spec::V051, ServiceRolledback) => "dev.cdevents.service.rolledback.0.3.0",
            (Spec::V051, IncidentDetected) => "dev.cdevents.incident.detected.0.3.0",
            (Spec::V051, IncidentReported) => "dev.cdevents.incident.reported.0.3.0",
            (Spec::V051, IncidentResolved) => "dev.cdevents.incident.resolved.0.3.0",
        }
    }

    /// `subject.type`, written by v0.4.1 emitters only (v0.5.1 dropped it).
    fn subject_type(self) -> &'static str {
        use Kind::*;
        match self {
            ChangeCreated | ChangeReviewed | ChangeMerged | ChangeAbandoned => "change",
            PipelineQueued | PipelineStarted | PipelineFinished => "pipelineRun",
            TaskStarted | TaskFinished => "taskRun",
            SuiteStarted | SuiteFinished => "testSuiteRun",
            ArtifactPackaged | ArtifactPublished => "artifact",
            ServiceDeployed | ServiceUpgraded | ServiceRolledback => "service",
            IncidentDetected | IncidentReported | IncidentResolved => "incident",
        }
    }
}

/// The key of a pipeline or task run's link: v0.4.1 says `url`, v0.5.1 renamed it `uri`.
fn url_key(spec: Spec) -> &'static str {
    match spec {
        Spec::V041 => "url",
        Spec::V051 => "uri",
    }
}

// ---------------------------------------------------------------------------------------------
// A tiny JSON writer with a fixed key order (serde_json's map order depends on a cargo
// feature some other crate of the build may switch on; the output must not).
// ---------------------------------------------------------------------------------------------

enum J {
    S(String),
    O(Vec<(&'static str, J)>),
}

fn s(v: impl Into<String>) -> J {
    J::S(v.into())
}

fn o(fields: Vec<(&'static str, J)>) -> J {
    J::O(fields)
}

fn write_json(out: &mut String, j: &J) {
    match j {
        J::S(v) => write_str(out, v),
        J::O(fields) => {
            out.push('{');
            for (i, (k, v)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_str(out, k);
                out.push(':');
                write_json(out, v);
            }
            out.push('}');
        }
    }
}

fn write_str(out: &mut String, v: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let b = c as usize;
                out.push_str("\\u00");
                out.push(char::from(HEX[b >> 4]));
                out.push(char::from(HEX[b & 0xf]));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

// ---------------------------------------------------------------------------------------------
// Random helpers
// ---------------------------------------------------------------------------------------------

/// Uniform in `[lo, hi)`; `lo` when the range is empty.
fn between(rng: &mut ChaCha8Rng, lo: i64, hi: i64) -> i64 {
    if hi <= lo {
        lo
    } else {
        rng.random_range(lo..hi)
    }
}

fn uniform(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.random::<f64>()
}

fn chance(rng: &mut ChaCha8Rng, p: f64) -> bool {
    rng.random::<f64>() < p
}

/// A standard normal variate (Box–Muller).
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1 = 1.0 - rng.random::<f64>(); // (0, 1]
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A log-normal duration in milliseconds with the given median, clamped to `[lo, hi]`.
fn lognormal(rng: &mut ChaCha8Rng, median: i64, sigma: f64, lo: i64, hi: i64) -> i64 {
    let v = (median as f64) * (sigma * normal(rng)).exp();
    (v as i64).clamp(lo, hi)
}

fn poisson(rng: &mut ChaCha8Rng, lambda: f64) -> u64 {
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
fn time_of_day(rng: &mut ChaCha8Rng, weights: &[f64; 24]) -> i64 {
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

fn pick<'a, T>(rng: &mut ChaCha8Rng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

fn hex_digest(rng: &mut ChaCha8Rng) -> String {
    let [a, b, c, d]: [u64; 4] = rng.random();
    format!("{a:016x}{b:016x}{c:016x}{d:016x}")
}

/// Monday = 0 … Sunday = 6 of the UTC day holding `t` (1970-01-01 was a Thursday).
fn weekday(t: i64) -> i64 {
    (t.div_euclid(DAY) + 3).rem_euclid(7)
}

/// Moves `t` into working hours (weekdays 08:00–19:00 UTC) if it is outside them.
fn into_work_hours(rng: &mut ChaCha8Rng, t: i64) -> i64 {
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
const CHANGE_HOURS: [f64; 24] = [
    0.2, 0.1, 0.1, 0.1, 0.1, 0.2, 0.4, 0.9, 1.8, 2.8, 3.0, 3.0, 2.4, 2.8, 3.0, 3.0, 2.7, 2.1, 1.4,
    1.0, 0.8, 0.6, 0.4, 0.3,
];

/// When production deployments happen, by UTC hour.
const DEPLOY_HOURS: [f64; 24] = [
    0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.05, 0.2, 0.8, 2.0, 3.0, 3.0, 2.0, 2.5, 3.0, 3.0, 2.5, 1.2, 0.5,
    0.2, 0.1, 0.05, 0.0, 0.0,
];

const WEEKEND_FACTOR: f64 = 0.12;

// Probabilities of the change flow.
const P_ABANDON: f64 = 0.08;
const P_NO_CREATED: f64 = 0.015;
const P_REVIEWED: f64 = 0.92;
const P_REVIEW_BEFORE_ABANDON: f64 = 0.5;
const P_ERROR_GIVEN_FAILURE: f64 = 0.15;
const P_STAGING_INCIDENT: f64 = 0.002;
const P_REPORTED: f64 = 0.25;
const P_ROLLBACK: f64 = 0.35;
/// Of the incidents of the last seven days, the share still open when the history ends (older
/// ones are always resolved: an incident open for months would make every later deployment of
/// its service rework).
const P_NEVER_RESOLVED: f64 = 0.5;
/// The generated count falls a little short of the expectation (changes and runs cut off at
/// the ends of the window, skipped deployments): compensate.
const CALIBRATION: f64 = 1.025;

const PR_TITLES: [&str; 14] = [
    "Fix flaky test in {}",
    "Bump dependencies of {}",
    "Add retries to the {} client",
    "Refactor {} request handling",
    "Add metrics to {}",
    "Fix null pointer in {}",
    "Update {} API docs",
    "Speed up {} startup",
    "Add feature flag for new {} flow",
    "Remove dead code from {}",
    "Tune {} connection pool",
    "Handle timeouts in {}",
    "Migrate {} config to env vars",
    "Improve {} error messages",
];

const INCIDENT_DESCRIPTIONS: [&str; 9] = [
    "p99 latency above 800 ms",
    "HTTP 5xx error rate above 2 %",
    "pods crash-looping after rollout",
    "conversion rate dropped 30 %",
    "memory usage above 90 %",
    "consumer lag growing on the orders topic",
    "elevated timeouts to the database",
    "health checks failing in one zone",
    "elevated login failures",
];

// ---------------------------------------------------------------------------------------------
// The organisation
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Cadence {
    /// Several production deployments a weekday (Poisson mean).
    Elite(f64),
    /// About one a weekday.
    Daily,
    /// A deployment on a weekday with this probability (0.2–0.6: one to three a week).
    Weekly(f64),
    /// Rarely: a weekday with this small probability.
    Rare(f64),
}

impl Cadence {
    /// Expected deployment slots per calendar day.
    fn per_day(self) -> f64 {
        match self {
            Cadence::Elite(m) => (5.0 * m + 2.0 * 0.1 * m) / 7.0,
            Cadence::Daily => (5.0 * (0.9 + 0.15) + 2.0 * 0.05) / 7.0,
            Cadence::Weekly(q) | Cadence::Rare(q) => 5.0 * q / 7.0,
        }
    }

    /// Median time from opening a pull request to merging it, in the teams that ship so.
    fn review_median(self) -> i64 {
        match self {
            Cadence::Elite(_) => 3 * HOUR,
            Cadence::Daily => 6 * HOUR,
            Cadence::Weekly(_) => 8 * HOUR,
            Cadence::Rare(_) => 10 * HOUR,
        }
    }

    fn activity(self) -> f64 {
        match self {
            Cadence::Elite(_) => 1.8,
            Cadence::Daily => 1.0,
            Cadence::Weekly(_) => 0.7,
            Cadence::Rare(_) => 0.5,
        }
    }
}

/// The CI system of a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ci {
    /// Tekton, emitting CDEvents v0.4.1.
    Tekton,
    /// GitHub Actions through a CDEvents bridge, v0.5.1.
    Actions,
}

/// The production deployer of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deployer {
    /// Argo CD, v0.4.1, always `service.deployed`.
    Argo,
    /// Spinnaker, v0.5.1, `service.upgraded` once the service runs in the environment.
    Spinnaker,
}

impl Deployer {
    fn source(self) -> &'static str {
        match self {
            Deployer::Argo => "/argocd/prod",
            Deployer::Spinnaker => "/spinnaker/prod",
        }
    }
    fn spec(self) -> Spec {
        match self {
            Deployer::Argo => Spec::V041,
            Deployer::Spinnaker => Spec::V051,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Task {
    Checkout,
    Lint,
    Build,
    UnitTest,
    IntegrationTest,
    SastScan,
    DockerPush,
}

impl Task {
    fn name(self) -> &'static str {
        match self {
            Task::Checkout => "checkout",
            Task::Lint => "lint",
            Task::Build => "build",
            Task::UnitTest => "unit-test",
            Task::IntegrationTest => "integration-test",
            Task::SastScan => "sast-scan",
            Task::DockerPush => "docker-push",
        }
    }

    /// A plausible duration (ms); `factor` scales the heavy tasks per service.
    fn duration(self, rng: &mut ChaCha8Rng, factor: f64) -> i64 {
        let scaled = |d: i64| ((d as f64) * factor) as i64;
        match self {
            Task::Checkout => between(rng, 4 * SEC, 25 * SEC),
            Task::Lint => between(rng, 15 * SEC, 90 * SEC),
            Task::Build => scaled(lognormal(rng, 150 * SEC, 0.5, 30 * SEC, 15 * MIN)),
            Task::UnitTest => scaled(lognormal(rng, 180 * SEC, 0.6, 20 * SEC, 20 * MIN)),
            Task::IntegrationTest => scaled(lognormal(rng, 7 * MIN, 0.4, 2 * MIN, 25 * MIN)),
            Task::SastScan => between(rng, 60 * SEC, 240 * SEC),
            Task::DockerPush => between(rng, 15 * SEC, 120 * SEC),
        }
    }

    /// How likely a failing run fails in this task.
    fn failure_weight(self) -> f64 {
        match self {
            Task::Checkout => 0.0,
            Task::Lint => 2.0,
            Task::Build => 2.0,
            Task::UnitTest => 4.0,
            Task::IntegrationTest => 4.0,
            Task::SastScan => 1.0,
            Task::DockerPush => 1.0,
        }
    }
}

struct Service {
    name: String,
    team: String,
    repo: usize,
    cadence: Cadence,
    /// Probability that a production deployment is followed by an incident.
    fail: f64,
    /// Probability that a CI run fails.
    ci_fail: f64,
    envs: Vec<&'static str>,
    deployer: Deployer,
    tasks: Vec<Task>,
    build_factor: f64,
}

struct Repo {
    /// `acme/<name>`: also the repository id of change events.
    name: String,
    url: String,
    /// The context source of its change events.
    source: String,
    services: Vec<usize>,
    ci: Ci,
    weight: f64,
    /// Median time from opening a pull request to merging it.
    review_median: i64,
}

impl Repo {
    fn ci_spec(&self) -> Spec {
        match self.ci {
            Ci::Tekton => Spec::V041,
            Ci::Actions => Spec::V051,
        }
    }
    fn ci_source(&self) -> String {
        match self.ci {
            Ci::Tekton => "/tekton/ci".to_string(),
            Ci::Actions => format!("/github.com/{}/actions", self.name),
        }
    }
}

struct Named {
    name: &'static str,
    team: &'static str,
    cadence: Cadence,
    fail: f64,
    envs: &'static [&'static str],
    deployer: Deployer,
    ci: Ci,
    integration: bool,
}

const NAMED: [Named; 12] = [
    Named {
        name: "checkout",
        team: "storefront",
        cadence: Cadence::Elite(5.0),
        fail: 0.10,
        envs: &["production"],
        deployer: Deployer::Argo,
        ci: Ci::Actions,
        integration: true,
    },
    Named {
        name: "cart",
        team: "storefront",
        cadence: Cadence::Elite(4.0),
        fail: 0.08,
        envs: &["production"],
        deployer: Deployer::Argo,
        ci: Ci::Actions,
        integration: false,
    },
    Named {
        name: "payments",
        team: "payments",
        cadence: Cadence::Weekly(0.5),
        fail: 0.16,
        envs: &["prod-eu", "prod-us"],
        deployer: Deployer::Spinnaker,
        ci: Ci::Tekton,
        integration: true,
    },
    Named {
        name: "search",
        team: "growth",
        cadence: Cadence::Daily,
        fail: 0.10,
        envs: &["production"],
        deployer: Deployer::Argo,
        ci: Ci::Tekton,
        integration: false,
    },
    Named {
        name: "catalog",
        team: "growth",
        cadence: Cadence::Daily,
        fail: 0.12,
        envs: &["prod-eu"],
        deployer: Deployer::Argo,
        ci: Ci::Tekton,
        integration: false,
    },
    Named {
        name: "inventory",
        team: "platform",
        cadence: Cadence::Rare(0.05),
        fail: 0.22,
        envs: &["production"],
        deployer: Deployer::Spinnaker,
        ci: Ci::Tekton,
        integration: true,
    },
    Named {
        name: "auth",
        team: "platform",
        cadence: Cadence::Daily,
        fail: 0.08,
        envs: &["prod-eu", "prod-us"],
        deployer: Deployer::Argo,
        ci: Ci::Tekton,
        integration: false,
    },
    Named {
        name: "notifications",
        team: "platform",
        cadence: Cadence::Elite(3.5),
        fail: 0.14,
        envs: &["production"],
        deployer: Deployer::Argo,
        ci: Ci::Tekton,
        integration: false,
    },
    Named {
        name: "shipping",
        team: "payments",
        cadence: Cadence::Weekly(0.3),
        fail: 0.15,
        envs: &["prod-us"],
        deployer: Deployer::Spinnaker,
        ci: Ci::Tekton,
        integration: true,
    },
    Named {
        name: "pricing",
        team: "payments",
        cadence: Cadence::Daily,
        fail: 0.13,
        envs: &["production"],
        deployer: Deployer::Argo,
        ci: Ci::Actions,
        integration: false,
    },
    Named {
        name: "reviews",
        team: "storefront",
        cadence: Cadence::Weekly(0.4),
        fail: 0.11,
        envs: &["production"],
        deployer: Deployer::Argo,
        ci: Ci::Tekton,
        integration: false,
    },
    Named {
        name: "recommendations",
        team: "growth",
        cadence: Cadence::Rare(0.08),
        fail: 0.20,
        envs: &["production"],
        deployer: Deployer::Spinnaker,
        ci: Ci::Actions,
        integration: false,
    },
];

const MORE_TEAMS: [&str; 8] = [
    "fulfilment",
    "identity",
    "data",
    "mobile",
    "marketplace",
    "logistics",
    "ads",
    "support",
];

/// The organisation of a spec: services and their repositories.
fn build_org(spec: &DemoSpec, rng: &mut ChaCha8Rng) -> (Vec<Repo>, Vec<Service>) {
    let mut services = Vec::with_capacity(spec.services);
    let mut repos: Vec<Repo> = Vec::new();
    for i in 0..spec.services {
        let (name, team, cadence, fail, envs, deployer, ci, integration) = match NAMED.get(i) {
            Some(n) => (
                n.name.to_string(),
                n.team.to_string(),
                n.cadence,
                n.fail,
                n.envs.to_vec(),
                n.deployer,
                n.ci,
                n.integration,
            ),
            None => {
                let t = (i - NAMED.len()) / 3;
                let team = match MORE_TEAMS.get(t) {
                    Some(name) => (*name).to_string(),
                    None => format!("team-{:02}", t + 1),
                };
                let x = rng.random::<f64>();
                let cadence = if x < 0.2 {
                    Cadence::Elite(uniform(rng, 3.0, 7.0))
                } else if x < 0.55 {
                    Cadence::Daily
                } else if x < 0.9 {
                    Cadence::Weekly(uniform(rng, 0.2, 0.6))
                } else {
                    Cadence::Rare(uniform(rng, 0.03, 0.08))
                };
                let fail = match cadence {
                    Cadence::Elite(_) => uniform(rng, 0.05, 0.12),
                    _ => uniform(rng, 0.06, 0.22),
                };
                let y = rng.random::<f64>();
                let envs = if y < 0.65 {
                    vec!["production"]
                } else if y < 0.8 {
                    vec!["prod-eu", "prod-us"]
                } else if y < 0.9 {
                    vec!["prod-eu"]
                } else {
                    vec!["prod-us"]
                };
                let deployer = if chance(rng, 0.25) {
                    Deployer::Spinnaker
                } else {
                    Deployer::Argo
                };
                let ci = if chance(rng, 0.45) {
                    Ci::Actions
                } else {
                    Ci::Tekton
                };
                let integration = chance(rng, 0.4);
                (
                    format!("svc-{:03}", i + 1),
                    team,
                    cadence,
                    fail,
                    envs,
                    deployer,
                    ci,
                    integration,
                )
            }
        };
        let mut tasks = vec![Task::Checkout, Task::Build, Task::DockerPush];
        if integration {
            tasks.extend([Task::UnitTest, Task::IntegrationTest]);
        } else {
            let x = rng.random::<f64>();
            if x < 0.6 {
                tasks.extend([Task::Lint, Task::UnitTest]);
            } else if x < 0.85 {
                tasks.push(Task::UnitTest);
            } else {
                tasks.extend([Task::UnitTest, Task::SastScan]);
            }
        }
        tasks.sort();
        let ci_fail = uniform(rng, 0.04, 0.10);
        let build_factor = uniform(rng, 0.5, 2.0);
        let activity = cadence.activity() * uniform(rng, 0.8, 1.25);
        // The first two services share the monorepo acme/shop.
        let repo = if i == 1 {
            0
        } else {
            let repo_name = if i == 0 {
                "acme/shop".to_string()
            } else {
                format!("acme/{name}")
            };
            repos.push(Repo {
                url: format!("https://github.com/{repo_name}"),
                source: format!("/github.com/{repo_name}"),
                name: repo_name,
                services: Vec::new(),
                ci,
                weight: 0.0,
                review_median: i64::MAX,
            });
            repos.len() - 1
        };
        let r = &mut repos[repo];
        r.services.push(i);
        r.weight = r.weight.max(activity);
        r.review_median = r.review_median.min(cadence.review_median());
        services.push(Service {
            name,
            team,
            repo,
            cadence,
            fail,
            ci_fail,
            envs,
            deployer,
            tasks,
            build_factor,
        });
    }
    (repos, services)
}

/// Expected events of one CI run of `s` (pipeline, tasks, suites, artifacts, staging).
fn expected_ci_events(s: &Service) -> f64 {
    let n = s.tasks.len() as f64;
    let ok = 1.0 - s.ci_fail;
    let suite = if s.tasks.contains(&Task::IntegrationTest) {
        2.0
    } else {
        0.0
    };
    3.0 + 2.0 * n * (ok + s.ci_fail * 0.6)
        + suite * (ok + s.ci_fail * 0.5)
        + ok * (3.0 + P_STAGING_INCIDENT * 2.0)
}

/// Expected events of one pull request opened in `r`.
fn expected_change_events(r: &Repo, services: &[Service]) -> f64 {
    let ci: f64 = r
        .services
        .iter()
        .map(|&i| expected_ci_events(&services[i]))
        .sum();
    P_ABANDON * (2.0 + P_REVIEW_BEFORE_ABANDON)
        + (1.0 - P_ABANDON) * ((1.0 - P_NO_CREATED) + P_REVIEWED + 1.0 + ci)
}

/// Mean pull requests opened per average day in each repository, sized to `target_events`.
fn change_rates(spec: &DemoSpec, repos: &[Repo], services: &[Service]) -> Vec<f64> {
    if spec.days == 0 {
        return vec![0.0; repos.len()];
    }
    let per_day = spec.target_events as f64 / f64::from(spec.days) * CALIBRATION;
    let deploys: f64 = services
        .iter()
        .map(|s| s.cadence.per_day() * s.envs.len() as f64 * (1.0 + s.fail * 2.3))
        .sum();
    let per_change: f64 = repos
        .iter()
        .map(|r| r.weight * expected_change_events(r, services))
        .sum();
    let k = if per_change > 0.0 {
        (per_day - deploys).max(0.0) / per_change
    } else {
        0.0
    };
    repos.iter().map(|r| r.weight * k).collect()
}

// ---------------------------------------------------------------------------------------------
// The simulation: a discrete-event agenda of actions and an outbox of rendered events, both
// ordered by (time, sequence). An action at time t only renders events at times >= t, so an
// event can leave the outbox once no pending action is earlier than it: output is in time order.
// ---------------------------------------------------------------------------------------------

struct Timed<T> {
    t: i64,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Timed<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.t, self.seq) == (other.t, other.seq)
    }
}
impl<T> Eq for Timed<T> {}
impl<T> PartialOrd for Timed<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Timed<T> {
    /// Reversed, so that `BinaryHeap` pops the earliest first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.t, other.seq).cmp(&(self.t, self.seq))
    }
}

/// A min-heap by (time, insertion order).
struct Queue<T> {
    heap: BinaryHeap<Timed<T>>,
    seq: u64,
}

impl<T> Queue<T> {
    fn new() -> Self {
        Queue {
            heap: BinaryHeap::new(),
            seq: 0,
        }
    }
    fn push(&mut self, t: i64, item: T) {
        self.seq += 1;
        self.heap.push(Timed {
            t,
            seq: self.seq,
            item,
        });
    }
    fn peek_time(&self) -> Option<i64> {
        self.heap.peek().map(|e| e.t)
    }
    fn pop(&mut self) -> Option<(i64, T)> {
        self.heap.pop().map(|e| (e.t, e.item))
    }
}

enum Action {
    /// The start of a UTC day (or of the window): plan its pull requests and deployment
    /// slots.
    Day,
    Merge {
        repo: usize,
        change: String,
    },
    /// An artifact of `svc` is published and may be deployed from now on.
    ArtifactReady {
        svc: usize,
        key: (i64, u64),
        artifact: String,
    },
    /// A production deployment slot: `artifact` None picks the newest published artifact.
    Deploy {
        svc: usize,
        env: usize,
        artifact: Option<String>,
        chain: Option<String>,
    },
    /// An incident after a deployment; `env` None is staging.
    IncidentOpen {
        svc: usize,
        env: Option<usize>,
        artifact: String,
    },
    Rollback {
        svc: usize,
        env: usize,
        bad: String,
    },
}

#[derive(Default)]
struct ServiceState {
    /// The newest published artifact by merge order.
    latest: Option<((i64, u64), String)>,
    /// An artifact rolled back: not deployed again.
    blocked: Option<String>,
    deployed: Vec<Option<String>>,
    previous: Vec<Option<String>>,
}

/// One event to render.
struct Ev<'a> {
    t: i64,
    kind: Kind,
    spec: Spec,
    source: &'a str,
    subject: &'a str,
    content: Vec<(&'static str, J)>,
    chain: Option<&'a str>,
    team: Option<&'a str>,
}

/// Renders events into the time-ordered outbox; owns the identity generator.
struct Out {
    rng: ChaCha8Rng,
    queue: Queue<String>,
    ids: u64,
    id_mask: u64,
    /// The window `[start, end)` in milliseconds.
    start: i64,
    end: i64,
    offset: Option<FixedOffset>,
}

impl Out {
    /// A random-looking UUID (version 4 layout) whose last 48 bits are a permutation of a
    /// counter, so ids never repeat within a history (of fewer than 2^48 ids).
    fn uuid(&mut self) -> String {
        self.ids += 1;
        let r: u64 = self.rng.random();
        let v: u16 = self.rng.random();
        // A bijection of the 48-bit counter: odd multiplier, xor-shift, mask.
        const M48: u64 = 0xffff_ffff_ffff;
        let mut tail = self.ids.wrapping_mul(0x9e37_79b9_7f4b) & M48;
        tail ^= tail >> 24;
        tail ^= self.id_mask & M48;
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            r >> 32,
            (r >> 16) & 0xffff,
            r & 0x0fff,
            0x8000 | (v & 0x3fff),
            tail
        )
    }

    fn timestamp(&mut self, t: i64) -> String {
        let utc = DateTime::<Utc>::from_timestamp_millis(t).unwrap_or_default();
        let local = chance(&mut self.rng, 0.05);
        match self.offset {
            Some(off) if local => utc
                .with_timezone(&off)
                .format("%Y-%m-%dT%H:%M:%S%.3f%:z")
                .to_string(),
            _ => utc.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        }
    }

    fn emit(&mut self, ev: Ev<'_>) {
        if ev.t < self.start || ev.t >= self.end {
            return;
        }
        let id = self.uuid();
        let ts = self.timestamp(ev.t);
        let mut context = Vec::with_capacity(6);
        context.push(match ev.spec {
            Spec::V041 => ("version", s("0.4.1")),
            Spec::V051 => ("specversion", s("0.5.1")),
        });
        context.push(("id", s(id)));
        if let Some(chain) = ev.chain {
            context.push(("chainId", s(chain)));
        }
        context.push(("source", s(ev.source)));
        context.push(("type", s(ev.kind.event_type(ev.spec))));
        context.push(("timestamp", s(ts)));
        let mut subject = vec![("id", s(ev.subject))];
        if ev.spec == Spec::V041 {
            subject.push(("type", s(ev.kind.subject_type())));
        }
        subject.push(("content", o(ev.content)));
        let mut doc = vec![("context", o(context)), ("subject", o(subject))];
        if let Some(team) = ev.team {
            doc.push(("customData", o(vec![("team", s(team))])));
            doc.push(("customDataContentType", s("application/json")));
        }
        let mut text = String::with_capacity(512);
        write_json(&mut text, &o(doc));
        self.queue.push(ev.t, text);
    }
}

struct Generator {
    repos: Vec<Repo>,
    services: Vec<Service>,
    state: Vec<ServiceState>,
    next_pr: Vec<u64>,
    rates: Vec<f64>,
    day_norm: f64,
    rng: ChaCha8Rng,
    agenda: Queue<Action>,
    out: Out,
    runs: u64,
    jobs: u64,
    merges: u64,
    incidents: u64,
}

impl Generator {
    fn new(spec: &DemoSpec, end: DateTime<Utc>, salt: u64) -> Self {
        let mut setup = ChaCha8Rng::seed_from_u64(spec.seed);
        let (repos, services) = build_org(spec, &mut setup);
        let rates = change_rates(spec, &repos, &services);
        let next_pr = repos
            .iter()
            .map(|_| setup.random_range(100..3000))
            .collect();
        let state = services
            .iter()
            .map(|s| ServiceState {
                deployed: vec![None; s.envs.len()],
                previous: vec![None; s.envs.len()],
                ..ServiceState::default()
            })
            .collect();
        // [start, end) in whole milliseconds: round the start up and the end's bound up.
        let sub_ms = !end.timestamp_subsec_nanos().is_multiple_of(1_000_000);
        let end_ms = end.timestamp_millis() + i64::from(sub_ms);
        let start_ms = end.timestamp_millis() - i64::from(spec.days) * DAY + i64::from(sub_ms);
        let mut agenda = Queue::new();
        if spec.days > 0 && spec.services > 0 {
            // The simulation starts empty at the window's start, not at the start of that
            // day, so that no state comes from events outside the window.
            agenda.push(start_ms, Action::Day);
        }
        let mut out_rng = ChaCha8Rng::seed_from_u64(spec.seed ^ salt ^ 0x6364_6c61_6b65_6964);
        let id_mask = out_rng.random();
        Generator {
            repos,
            services,
            state,
            next_pr,
            rates,
            day_norm: 7.0 / (5.0 + 2.0 * WEEKEND_FACTOR),
            rng: ChaCha8Rng::seed_from_u64(
                spec.seed ^ salt.rotate_left(17) ^ 0x7369_6d75_6c61_7465,
            ),
            agenda,
            out: Out {
                rng: out_rng,
                queue: Queue::new(),
                ids: 0,
                id_mask,
                start: start_ms,
                end: end_ms,
                offset: FixedOffset::east_opt(5 * 3600 + 30 * 60),
            },
            runs: 0,
            jobs: 0,
            merges: 0,
            incidents: 0,
        }
    }

    fn run(&mut self, t: i64, action: Action) {
        match action {
            Action::Day => self.on_day(t),
            Action::Merge { repo, change } => self.on_merge(t, repo, &change),
            Action::ArtifactReady { svc, key, artifact } => {
                let st = &mut self.state[svc];
                if st.latest.as_ref().is_none_or(|(k, _)| *k < key) {
                    st.latest = Some((key, artifact));
                }
            }
            Action::Deploy {
                svc,
                env,
                artifact,
                chain,
            } => self.on_deploy(t, svc, env, artifact, chain),
            Action::IncidentOpen { svc, env, artifact } => self.on_incident(t, svc, env, artifact),
            Action::Rollback { svc, env, bad } => self.on_rollback(t, svc, env, bad),
        }
    }

    /// The day holding `now` (the day's start, or the window's start on the first day):
    /// its pull requests and deployment slots from `now` on.
    fn on_day(&mut self, now: i64) {
        let day = now.div_euclid(DAY) * DAY;
        let weekend = weekday(day) >= 5;
        let factor = self.day_norm * if weekend { WEEKEND_FACTOR } else { 1.0 };
        for r in 0..self.repos.len() {
            let n = poisson(&mut self.rng, self.rates[r] * factor);
            let mut times: Vec<i64> = (0..n)
                .map(|_| day + time_of_day(&mut self.rng, &CHANGE_HOURS))
                .collect();
            times.retain(|&t| t >= now);
            times.sort_unstable();
            for created in times {
                self.open_change(r, created);
            }
        }
        for svc in 0..self.services.len() {
            let slots = match self.services[svc].cadence {
                Cadence::Elite(m) => poisson(&mut self.rng, if weekend { 0.1 * m } else { m }),
                Cadence::Daily if weekend => u64::from(chance(&mut self.rng, 0.05)),
                Cadence::Daily => {
                    u64::from(chance(&mut self.rng, 0.9)) + u64::from(chance(&mut self.rng, 0.15))
                }
                Cadence::Weekly(q) | Cadence::Rare(q) => {
                    u64::from(!weekend && chance(&mut self.rng, q))
                }
            };
            for _ in 0..slots {
                let t = day + time_of_day(&mut self.rng, &DEPLOY_HOURS);
                if t < now {
                    continue;
                }
                self.agenda.push(
                    t,
                    Action::Deploy {
                        svc,
                        env: 0,
                        artifact: None,
                        chain: None,
                    },
                );
            }
        }
        if day + DAY < self.out.end {
            self.agenda.push(day + DAY, Action::Day);
        }
    }

    /// A pull request opened at `created`: its created, reviewed and abandoned events, or a
    /// merge to come.
    fn open_change(&mut self, r: usize, created: i64) {
        self.next_pr[r] += 1;
        let repo = &self.repos[r];
        let rng = &mut self.rng;
        let change = format!("{}#{}", repo.name, self.next_pr[r]);
        let repository = || {
            (
                "repository",
                o(vec![("id", s(&repo.name)), ("source", s(&repo.url))]),
            )
        };
        let svc_name = &self.services[*pick(rng, &repo.services)].name;
        let title = pick(rng, &PR_TITLES).replace("{}", svc_name);
        let abandoned = chance(rng, P_ABANDON);
        let no_created = !abandoned && chance(rng, P_NO_CREATED);
        let spec = Spec::V051;
        if !no_created {
            self.out.emit(Ev {
                t: created,
                kind: Kind::ChangeCreated,
                spec,
                source: &repo.source,
                subject: &change,
                content: vec![("description", s(title)), repository()],
                chain: None,
                team: None,
            });
        }
        if abandoned {
            let gone = created + lognormal(rng, 2 * DAY, 1.0, 30 * MIN, 30 * DAY);
            if chance(rng, P_REVIEW_BEFORE_ABANDON) {
                let reviewed =
                    created + (((gone - created) as f64) * uniform(rng, 0.1, 0.6)) as i64;
                self.out.emit(Ev {
                    t: reviewed,
                    kind: Kind::ChangeReviewed,
                    spec,
                    source: &repo.source,
                    subject: &change,
                    content: vec![repository()],
                    chain: None,
                    team: None,
                });
            }
            self.out.emit(Ev {
                t: gone,
                kind: Kind::ChangeAbandoned,
                spec,
                source: &repo.source,
                subject: &change,
                content: vec![repository()],
                chain: None,
                team: None,
            });
            return;
        }
        let mut merged = created + lognormal(rng, repo.review_median, 1.3, 5 * MIN, 21 * DAY);
        if chance(rng, 0.8) {
            merged = into_work_hours(rng, merged);
        }
        if !no_created && chance(rng, P_REVIEWED) {
            let lead = (merged - created) as f64;
            let reviewed = created + ((lead * uniform(rng, 0.2, 0.85)) as i64).max(MIN);
            if reviewed < merged {
                self.out.emit(Ev {
                    t: reviewed,
                    kind: Kind::ChangeReviewed,
                    spec,
                    source: &repo.source,
                    subject: &change,
                    content: vec![repository()],
                    chain: None,
                    team: None,
                });
            }
        }
        self.agenda.push(merged, Action::Merge { repo: r, change });
    }

    fn on_merge(&mut self, t: i64, r: usize, change: &str) {
        let repo = &self.repos[r];
        self.out.emit(Ev {
            t,
            kind: Kind::ChangeMerged,
            spec: Spec::V051,
            source: &repo.source,
            subject: change,
            content: vec![(
                "repository",
                o(vec![("id", s(&repo.name)), ("source", s(&repo.url))]),
            )],
            chain: None,
            team: None,
        });
        self.merges += 1;
        let key = (t, self.merges);
        // Every service of the repository builds (both of the monorepo's).
        for i in 0..self.repos[r].services.len() {
            let svc = self.repos[r].services[i];
            self.run_pipeline(t, svc, change, key);
        }
    }

    /// One CI run of `svc` for the merge of `change`: its pipeline, task and test-suite events
    /// and, when it succeeds, the artifact and its staging deployment.
    fn run_pipeline(&mut self, t0: i64, svc: usize, change: &str, key: (i64, u64)) {
        let s_ = &self.services[svc];
        let repo = &self.repos[s_.repo];
        let rng = &mut self.rng;
        let out = &mut self.out;
        let spec = repo.ci_spec();
        let source = repo.ci_source();
        let uk = url_key(spec);
        self.runs += 1;
        let pipeline = format!("build-{}", s_.name);
        let (run_id, run_url) = match repo.ci {
            Ci::Tekton => {
                let id = format!("{pipeline}-run-{:06}", self.runs);
                let url = format!("https://tekton.acme.example/#/namespaces/ci/pipelineruns/{id}");
                (id, url)
            }
            Ci::Actions => {
                let id = (7_300_000_000 + self.runs * 3).to_string();
                let url = format!("https://github.com/{}/actions/runs/{id}", repo.name);
                (id, url)
            }
        };
        let chain = out.uuid();
        let run_content = |outcome: Option<(&str, Option<String>)>| {
            let mut c = vec![("pipelineName", s(&pipeline)), (uk, s(&run_url))];
            if let Some((outcome, errors)) = outcome {
                c.push(("outcome", s(outcome)));
                if let Some(e) = errors {
                    c.push(("errors", s(e)));
                }
            }
            c
        };
        let queued = t0 + between(rng, 3 * SEC, 25 * SEC);
        out.emit(Ev {
            t: queued,
            kind: Kind::PipelineQueued,
            spec,
            source: &source,
            subject: &run_id,
            content: run_content(None),
            chain: Some(&chain),
            team: None,
        });
        let started = queued + lognormal(rng, 40 * SEC, 1.0, 3 * SEC, 20 * MIN);
        out.emit(Ev {
            t: started,
            kind: Kind::PipelineStarted,
            spec,
            source: &source,
            subject: &run_id,
            content: run_content(None),
            chain: Some(&chain),
            team: None,
        });
        // Which task fails, if the run fails.
        let failing = if chance(rng, s_.ci_fail) {
            let total: f64 = s_.tasks.iter().map(|t| t.failure_weight()).sum();
            let mut x = rng.random::<f64>() * total;
            let mut idx = s_.tasks.len() - 1;
            for (i, task) in s_.tasks.iter().enumerate() {
                let w = task.failure_weight();
                if x < w {
                    idx = i;
                    break;
                }
                x -= w;
            }
            let outcome = if chance(rng, P_ERROR_GIVEN_FAILURE) {
                "error"
            } else {
                "failure"
            };
            Some((idx, outcome))
        } else {
            None
        };
        let mut tt = started + between(rng, SEC, 5 * SEC);
        let mut run_outcome = ("success", None);
        for (i, task) in s_.tasks.iter().enumerate() {
            self.jobs += 1;
            let (job_id, job_url) = match repo.ci {
                Ci::Tekton => {
                    let id = format!("{run_id}-{}", task.name());
                    let url = format!("https://tekton.acme.example/#/namespaces/ci/taskruns/{id}");
                    (id, url)
                }
                Ci::Actions => {
                    let id = (21_000_000_000 + self.jobs * 7).to_string();
                    let url = format!("{run_url}/job/{id}");
                    (id, url)
                }
            };
            let task_content = |outcome: Option<&str>| {
                let mut c = vec![
                    ("taskName", s(task.name())),
                    (uk, s(&job_url)),
                    ("pipelineRun", o(vec![("id", s(&run_id))])),
                ];
                if let Some(outcome) = outcome {
                    c.push(("outcome", s(outcome)));
                }
                c
            };
            out.emit(Ev {
                t: tt,
                kind: Kind::TaskStarted,
                spec,
                source: &source,
                subject: &job_id,
                content: task_content(None),
                chain: Some(&chain),
                team: None,
            });
            let end = tt + task.duration(rng, s_.build_factor);
            let outcome = match failing {
                Some((idx, outcome)) if idx == i => outcome,
                _ => "success",
            };
            if *task == Task::IntegrationTest {
                let suite_id = format!("{run_id}-integration");
                let suite = || {
                    (
                        "testSuite",
                        o(vec![
                            ("id", s(format!("{}-integration", s_.name))),
                            ("name", s(format!("{} integration tests", s_.name))),
                        ]),
                    )
                };
                let env = || ("environment", o(vec![("id", s("ci"))]));
                out.emit(Ev {
                    t: tt + between(rng, 2 * SEC, 6 * SEC),
                    kind: Kind::SuiteStarted,
                    spec,
                    source: &source,
                    subject: &suite_id,
                    content: vec![
                        env(),
                        suite(),
                        ("trigger", o(vec![("type", s("pipeline"))])),
                    ],
                    chain: Some(&chain),
                    team: None,
                });
                // v0.4.1 test outcomes are pass/fail; v0.5.1 aligned them on success/failure.
                let suite_outcome = match (spec, outcome) {
                    (Spec::V041, "success") => "pass",
                    (Spec::V041, "failure") => "fail",
                    (_, other) => other,
                };
                let mut content = vec![("outcome", s(suite_outcome))];
                if outcome != "success" {
                    content.push(("severity", s("high")));
                    content.push(("reason", s("2 tests failed")));
                }
                content.push(env());
                content.push(suite());
                out.emit(Ev {
                    t: end - between(rng, SEC, 3 * SEC),
                    kind: Kind::SuiteFinished,
                    spec,
                    source: &source,
                    subject: &suite_id,
                    content,
                    chain: Some(&chain),
                    team: None,
                });
            }
            out.emit(Ev {
                t: end,
                kind: Kind::TaskFinished,
                spec,
                source: &source,
                subject: &job_id,
                content: task_content(Some(outcome)),
                chain: Some(&chain),
                team: None,
            });
            tt = end + between(rng, SEC, 6 * SEC);
            if outcome != "success" {
                run_outcome = (outcome, Some(format!("task {} failed", task.name())));
                break;
            }
        }
        let finished = tt;
        let success = run_outcome.0 == "success";
        out.emit(Ev {
            t: finished,
            kind: Kind::PipelineFinished,
            spec,
            source: &source,
            subject: &run_id,
            content: run_content(Some(run_outcome)),
            chain: Some(&chain),
            team: None,
        });
        if !success {
            return;
        }
        let artifact = format!("pkg:oci/{}@sha256%3A{}", s_.name, hex_digest(rng));
        let packaged = finished + between(rng, SEC, 4 * SEC);
        out.emit(Ev {
            t: packaged,
            kind: Kind::ArtifactPackaged,
            spec,
            source: &source,
            subject: &artifact,
            content: vec![(
                "change",
                o(vec![("id", s(change)), ("source", s(&repo.url))]),
            )],
            chain: Some(&chain),
            team: None,
        });
        let published = packaged + between(rng, 2 * SEC, 20 * SEC);
        out.emit(Ev {
            t: published,
            kind: Kind::ArtifactPublished,
            spec,
            source: &source,
            subject: &artifact,
            content: vec![("user", s("ci-bot"))],
            chain: Some(&chain),
            team: None,
        });
        let staged = published + between(rng, MIN, 6 * MIN);
        out.emit(Ev {
            t: staged,
            kind: Kind::ServiceDeployed,
            spec: Spec::V041,
            source: "/argocd/staging",
            subject: &s_.name,
            content: vec![
                ("environment", o(vec![("id", s("staging"))])),
                ("artifactId", s(&artifact)),
            ],
            chain: Some(&chain),
            team: None,
        });
        if chance(rng, P_STAGING_INCIDENT) {
            let at = staged + lognormal(rng, 20 * MIN, 0.8, 2 * MIN, 6 * HOUR);
            self.agenda.push(
                at,
                Action::IncidentOpen {
                    svc,
                    env: None,
                    artifact: artifact.clone(),
                },
            );
        }
        self.agenda
            .push(published, Action::ArtifactReady { svc, key, artifact });
    }

    fn on_deploy(
        &mut self,
        t: i64,
        svc: usize,
        env: usize,
        artifact: Option<String>,
        chain: Option<String>,
    ) {
        let s_ = &self.services[svc];
        let st = &mut self.state[svc];
        let artifact = match artifact {
            Some(a) => a,
            None => match &st.latest {
                Some((_, a)) if st.blocked.as_ref() != Some(a) => a.clone(),
                _ => return,
            },
        };
        if st.deployed[env].as_ref() == Some(&artifact) {
            return;
        }
        let chain = match chain {
            Some(c) => c,
            None => self.out.uuid(),
        };
        let kind = match (s_.deployer, &st.deployed[env]) {
            (Deployer::Spinnaker, Some(_)) => Kind::ServiceUpgraded,
            _ => Kind::ServiceDeployed,
        };
        self.out.emit(Ev {
            t,
            kind,
            spec: s_.deployer.spec(),
            source: s_.deployer.source(),
            subject: &s_.name,
            content: vec![
                ("environment", o(vec![("id", s(s_.envs[env]))])),
                ("artifactId", s(&artifact)),
            ],
            chain: Some(&chain),
            team: Some(&s_.team),
        });
        st.previous[env] = st.deployed[env].replace(artifact.clone());
        if chance(&mut self.rng, s_.fail) {
            let at = t + lognormal(&mut self.rng, 20 * MIN, 0.9, 2 * MIN, 8 * HOUR);
            self.agenda.push(
                at,
                Action::IncidentOpen {
                    svc,
                    env: Some(env),
                    artifact: artifact.clone(),
                },
            );
        }
        // The next region a little later, with the same artifact.
        if env + 1 < s_.envs.len() {
            let at = t + between(&mut self.rng, 15 * MIN, 45 * MIN);
            self.agenda.push(
                at,
                Action::Deploy {
                    svc,
                    env: env + 1,
                    artifact: Some(artifact),
                    chain: Some(chain),
                },
            );
        }
    }

    fn on_incident(&mut self, t: i64, svc: usize, env: Option<usize>, artifact: String) {
        let s_ = &self.services[svc];
        let rng = &mut self.rng;
        self.incidents += 1;
        let id = format!("INC-{}", 1000 + self.incidents);
        let env_name = env.map_or("staging", |e| s_.envs[e]);
        let reported = chance(rng, P_REPORTED);
        let (source, spec, kind) = if reported {
            ("/servicedesk", Spec::V041, Kind::IncidentReported)
        } else {
            ("/pagerduty", Spec::V051, Kind::IncidentDetected)
        };
        let description = *pick(rng, &INCIDENT_DESCRIPTIONS);
        let content = || {
            vec![
                ("description", s(description)),
                ("environment", o(vec![("id", s(env_name))])),
                ("service", o(vec![("id", s(&s_.name))])),
                ("artifactId", s(&artifact)),
            ]
        };
        let mut opened = content();
        if reported {
            opened.push((
                "ticketURI",
                s(format!("https://servicedesk.acme.example/browse/{id}")),
            ));
        }
        self.out.emit(Ev {
            t,
            kind,
            spec,
            source,
            subject: &id,
            content: opened,
            chain: None,
            team: Some(&s_.team),
        });
        let st = &self.state[svc];
        let rollback = match env {
            Some(e) => {
                st.deployed[e].as_ref() == Some(&artifact)
                    && st.previous[e].is_some()
                    && chance(rng, P_ROLLBACK)
            }
            None => false,
        };
        let resolved = if rollback {
            let at = t + between(rng, 4 * MIN, 30 * MIN);
            if let Some(e) = env {
                self.agenda.push(
                    at,
                    Action::Rollback {
                        svc,
                        env: e,
                        bad: artifact.clone(),
                    },
                );
            }
            at + between(rng, 5 * MIN, 45 * MIN)
        } else if reported {
            // Tickets wait for someone to close them.
            t + lognormal(rng, 8 * HOUR, 1.5, 30 * MIN, 10 * DAY)
        } else {
            t + lognormal(rng, 90 * MIN, 1.4, 10 * MIN, 5 * DAY)
        };
        let recent = t >= self.out.end - 7 * DAY;
        if !(recent && chance(rng, P_NEVER_RESOLVED)) {
            self.out.emit(Ev {
                t: resolved,
                kind: Kind::IncidentResolved,
                spec,
                source,
                subject: &id,
                content: content(),
                chain: None,
                team: Some(&s_.team),
            });
        }
    }

    fn on_rollback(&mut self, t: i64, svc: usize, env: usize, bad: String) {
        let s_ = &self.services[svc];
        let st = &mut self.state[svc];
        if st.deployed[env].as_ref() != Some(&bad) {
            return; // something newer went out meanwhile
        }
        let Some(previous) = st.previous[env].take() else {
            return;
        };
        let chain = self.out.uuid();
        self.out.emit(Ev {
            t,
            kind: Kind::ServiceRolledback,
            spec: s_.deployer.spec(),
            source: s_.deployer.source(),
            subject: &s_.name,
            content: vec![
                ("environment", o(vec![("id", s(s_.envs[env]))])),
                ("artifactId", s(&previous)),
            ],
            chain: Some(&chain),
            team: Some(&s_.team),
        });
        st.deployed[env] = Some(previous);
        st.blocked = Some(bad);
    }
}

impl Iterator for Generator {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        loop {
            match (self.out.queue.peek_time(), self.agenda.peek_time()) {
                (Some(e), Some(a)) if e <= a => return self.out.queue.pop().map(|(_, x)| x),
                (Some(_), None) => return self.out.queue.pop().map(|(_, x)| x),
                (_, Some(a)) if a >= self.out.end => {
                    // Nothing more can happen inside the window.
                    self.agenda.heap.clear();
                }
                (_, Some(_)) => {
                    if let Some((t, action)) = self.agenda.pop() {
                        self.run(t, action);
                    }
                }
                (None, None) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::OnceLock;

    use serde_json::Value;

    fn end() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-09-01T13:47:12.345678Z")
            .expect("valid time")
            .with_timezone(&Utc)
    }

    fn history() -> &'static Vec<String> {
        static H: OnceLock<Vec<String>> = OnceLock::new();
        H.get_or_init(|| generate(&DemoSpec::default(), end()).collect())
    }

    fn parsed() -> &'static Vec<Value> {
        static P: OnceLock<Vec<Value>> = OnceLock::new();
        P.get_or_init(|| {
            history()
                .iter()
                .map(|l| serde_json::from_str(l).expect("valid JSON"))
                .collect()
        })
    }

    fn str_at<'a>(v: &'a Value, path: &str) -> Option<&'a str> {
        v.pointer(path).and_then(Value::as_str)
    }

    fn ty(v: &Value) -> &str {
        str_at(v, "/context/type").unwrap_or("")
    }

    fn is(v: &Value, what: &str) -> bool {
        ty(v).starts_with(&format!("dev.cdevents.{what}."))
    }

    fn time(v: &Value) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(str_at(v, "/context/timestamp").expect("timestamp"))
            .expect("RFC 3339")
            .with_timezone(&Utc)
    }

    fn is_prod(env: &str) -> bool {
        env == "production" || env.starts_with("prod-")
    }

    #[test]
    fn deterministic() {
        let again: Vec<String> = generate(&DemoSpec::default(), end()).collect();
        assert!(again == *history(), "two runs differ");
        let other = DemoSpec {
            seed: 7,
            ..DemoSpec::default()
        };
        let first: Vec<String> = generate(&other, end()).take(1000).collect();
        assert!(first != history()[..1000], "the seed changes the history");
    }

    #[test]
    fn default_size() {
        let n = history().len() as u64;
        assert!((100_000..=200_000).contains(&n), "{n} events");
        let est = estimated_events(&DemoSpec::default());
        assert!(n.abs_diff(est) * 10 < est, "estimate {est} vs {n}");
    }

    #[test]
    fn well_formed_unique_in_window_and_ordered() {
        let end = end();
        let start = end - chrono::Duration::days(90);
        let mut ids = BTreeSet::new();
        let mut last = start;
        let mut offsets = 0;
        for v in parsed() {
            for f in ["id", "type", "source", "timestamp"] {
                assert!(str_at(v, &format!("/context/{f}")).is_some(), "{f}: {v}");
            }
            assert!(
                str_at(v, "/subject/id").is_some_and(|s| !s.is_empty()),
                "{v}"
            );
            assert!(v.pointer("/subject/content").is_some_and(Value::is_object));
            let id = str_at(v, "/context/id").unwrap_or("");
            assert!(ids.insert(id.to_string()), "duplicate id {id}");
            let t = time(v);
            assert!(t >= start && t < end, "{t} outside the window");
            assert!(t >= last, "out of order at {v}");
            last = t;
            let ts = str_at(v, "/context/timestamp").unwrap_or("");
            assert_eq!(ts.len(), if ts.ends_with('Z') { 24 } else { 29 }, "{ts}");
            if ts.ends_with("+05:30") {
                offsets += 1;
            }
        }
        let share = f64::from(offsets) / parsed().len() as f64;
        assert!((0.03..0.07).contains(&share), "offset share {share}");
    }

    #[test]
    fn spec_versions_mixed_and_shaped() {
        let mut v041 = 0usize;
        for v in parsed() {
            match (
                str_at(v, "/context/version"),
                str_at(v, "/context/specversion"),
            ) {
                (Some("0.4.1"), None) => {
                    v041 += 1;
                    assert!(str_at(v, "/subject/type").is_some(), "{v}");
                    assert!(v.pointer("/subject/content/uri").is_none(), "{v}");
                }
                (None, Some("0.5.1")) => {
                    assert!(v.pointer("/subject/type").is_none(), "{v}");
                    assert!(v.pointer("/subject/content/url").is_none(), "{v}");
                }
                _ => panic!("bad version fields: {v}"),
            }
        }
        let share = v041 as f64 / parsed().len() as f64;
        assert!((0.35..0.65).contains(&share), "v0.4.1 share {share}");
    }

    /// The type versions match the spec's conformance examples.
    #[test]
    fn type_versions_match_fixtures() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/cdevents");
        assert!(dir.is_dir(), "the fixtures are read from {}", dir.display());
        use Kind::*;
        let kinds = [
            ChangeCreated,
            ChangeReviewed,
            ChangeMerged,
            ChangeAbandoned,
            PipelineQueued,
            PipelineStarted,
            PipelineFinished,
            TaskStarted,
            TaskFinished,
            SuiteStarted,
            SuiteFinished,
            ArtifactPackaged,
            ArtifactPublished,
            ServiceDeployed,
            ServiceUpgraded,
            ServiceRolledback,
            IncidentDetected,
            IncidentReported,
            IncidentResolved,
        ];
        for (spec, folder) in [(Spec::V041, "v0.4.1"), (Spec::V051, "v0.5.1")] {
            for kind in kinds {
                let ty = kind.event_type(spec);
                let parts: Vec<&str> = ty.split('.').collect();
                let file = dir
                    .join(folder)
                    .join("conformance")
                    .join(format!("{}_{}.json", parts[2], parts[3]));
                let text = std::fs::read_to_string(&file).expect("fixture");
                let v: Value = serde_json::from_str(&text).expect("fixture JSON");
                assert_eq!(str_at(&v, "/context/type"), Some(ty), "{}", file.display());
            }
        }
    }

    #[test]
    fn the_mix_is_there() {
        let mut count: BTreeMap<String, usize> = BTreeMap::new();
        let mut prod_envs = BTreeSet::new();
        let mut created = BTreeSet::new();
        let mut merged = BTreeSet::new();
        let mut abandoned = BTreeSet::new();
        let (mut prod_deploys, mut prod_incidents, mut staging_incidents) = (0, 0, 0);
        let mut opened = BTreeSet::new();
        let mut resolved = BTreeSet::new();
        let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
        for v in parsed() {
            let t = ty(v);
            let short = t
                .trim_start_matches("dev.cdevents.")
                .rsplitn(4, '.')
                .last()
                .unwrap_or("")
                .to_string();
            *count.entry(short).or_default() += 1;
            let subject = str_at(v, "/subject/id").unwrap_or("").to_string();
            let env = str_at(v, "/subject/content/environment/id").unwrap_or("");
            if is(v, "change.created") {
                created.insert(subject.clone());
            }
            if is(v, "change.merged") {
                assert!(!abandoned.contains(&subject));
                merged.insert(subject.clone());
            }
            if is(v, "change.abandoned") {
                assert!(!merged.contains(&subject));
                abandoned.insert(subject.clone());
            }
            if is(v, "pipelinerun.finished") {
                let o = str_at(v, "/subject/content/outcome").unwrap_or("");
                *outcomes.entry(o.to_string()).or_default() += 1;
            }
            let deploy = is(v, "service.deployed")
                || is(v, "service.upgraded")
                || is(v, "service.rolledback");
            if deploy && is_prod(env) {
                prod_envs.insert(env.to_string());
                prod_deploys += 1;
                assert!(str_at(v, "/customData/team").is_some(), "{v}");
            }
            if is(v, "incident.detected") || is(v, "incident.reported") {
                assert!(str_at(v, "/customData/team").is_some(), "{v}");
                assert!(str_at(v, "/subject/content/service/id").is_some(), "{v}");
                opened.insert(subject.clone());
                if is_prod(env) {
                    prod_incidents += 1;
                } else {
                    assert_eq!(env, "staging");
                    staging_incidents += 1;
                }
            }
            if is(v, "incident.resolved") {
                assert!(opened.contains(&subject), "resolved before opened: {v}");
                resolved.insert(subject);
            }
        }
        for k in [
            "change.created",
            "change.reviewed",
            "change.merged",
            "change.abandoned",
            "pipelinerun.queued",
            "pipelinerun.started",
            "pipelinerun.finished",
            "taskrun.started",
            "taskrun.finished",
            "testsuiterun.started",
            "testsuiterun.finished",
            "artifact.packaged",
            "artifact.published",
            "service.deployed",
            "service.upgraded",
            "service.rolledback",
            "incident.detected",
            "incident.reported",
            "incident.resolved",
        ] {
            assert!(count.get(k).copied().unwrap_or(0) > 0, "no {k}: {count:?}");
        }
        let merged_only = merged.difference(&created).count();
        assert!(
            merged_only > 0 && merged_only * 20 < merged.len(),
            "{merged_only}"
        );
        let expected = BTreeSet::from(["prod-eu", "prod-us", "production"].map(String::from));
        assert_eq!(prod_envs, expected);
        let runs: usize = outcomes.values().sum();
        let failed = runs - outcomes.get("success").copied().unwrap_or(0);
        let rate = failed as f64 / runs as f64;
        assert!((0.04..0.10).contains(&rate), "CI failure rate {rate}");
        let cfr = f64::from(prod_incidents) / f64::from(prod_deploys);
        assert!(
            (0.06..0.15).contains(&cfr),
            "{prod_incidents}/{prod_deploys}"
        );
        assert!(staging_incidents > 0);
        let open = opened.difference(&resolved).count();
        assert!(
            open > 0 && open * 10 < opened.len(),
            "{open} open of {}",
            opened.len()
        );
    }

    #[test]
    fn monorepo_change_builds_both_services() {
        // change id -> services whose artifacts it built
        let mut built: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for v in parsed() {
            if !is(v, "artifact.packaged") {
                continue;
            }
            let change = str_at(v, "/subject/content/change/id").expect("change id");
            let purl = str_at(v, "/subject/id").expect("purl");
            let svc = purl
                .strip_prefix("pkg:oci/")
                .and_then(|p| p.split('@').next())
                .expect("oci purl");
            assert_eq!(
                str_at(v, "/subject/content/change/source"),
                Some(
                    format!(
                        "https://github.com/{}",
                        change.split('#').next().unwrap_or("")
                    )
                    .as_str()
                )
            );
            built.entry(change).or_default().insert(svc);
        }
        let both: BTreeSet<&str> = ["cart", "checkout"].into();
        let shop: Vec<_> = built
            .iter()
            .filter(|(c, _)| c.starts_with("acme/shop#"))
            .collect();
        assert!(!shop.is_empty());
        assert!(
            shop.iter().any(|(_, s)| **s == both),
            "no change built both"
        );
        assert!(
            built
                .iter()
                .filter(|(c, _)| !c.starts_with("acme/shop#"))
                .all(|(_, s)| s.len() == 1)
        );
    }

    #[test]
    fn deployments_use_published_artifacts() {
        let mut published = BTreeSet::new();
        for v in parsed() {
            if is(v, "artifact.published") {
                published.insert(str_at(v, "/subject/id").unwrap_or(""));
            }
            if is(v, "service.deployed") || is(v, "service.upgraded") {
                let a = str_at(v, "/subject/content/artifactId").expect("artifactId");
                assert!(published.contains(a), "deployed before published: {v}");
                let svc = str_at(v, "/subject/id").unwrap_or("");
                assert!(a.starts_with(&format!("pkg:oci/{svc}@sha256%3A")), "{v}");
            }
        }
    }

    #[test]
    fn small_and_empty_specs() {
        let empty = DemoSpec {
            days: 0,
            ..DemoSpec::default()
        };
        assert_eq!(generate(&empty, end()).count(), 0);
        assert_eq!(estimated_events(&empty), 0);
        let none = DemoSpec {
            services: 0,
            ..DemoSpec::default()
        };
        assert_eq!(generate(&none, end()).count(), 0);
        let one = DemoSpec {
            services: 1,
            days: 5,
            target_events: 2_000,
            ..DemoSpec::default()
        };
        assert!(generate(&one, end()).count() > 100);
    }
}
