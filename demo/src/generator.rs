//! The simulation: a discrete-event agenda of actions over the organisation of
//! [`crate::catalogue`], rendering CDEvents JSON (with a writer of its own) into a time-ordered
//! outbox.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use chrono::{DateTime, FixedOffset, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::catalogue::*;
use crate::distributions::*;
use crate::{DAY, DemoSpec, HOUR, MIN, SEC};

// ---------------------------------------------------------------------------------------------
// A tiny JSON writer with a fixed key order (serde_json's map order depends on a cargo
// feature some other crate of the build may switch on; the output must not).
// ---------------------------------------------------------------------------------------------

pub(crate) enum J {
    S(String),
    O(Vec<(&'static str, J)>),
}

pub(crate) fn s(v: impl Into<String>) -> J {
    J::S(v.into())
}

pub(crate) fn o(fields: Vec<(&'static str, J)>) -> J {
    J::O(fields)
}

pub(crate) fn write_json(out: &mut String, j: &J) {
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

pub(crate) fn write_str(out: &mut String, v: &str) {
    pub(crate) const HEX: &[u8; 16] = b"0123456789abcdef";
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

// Probabilities of the change flow.
pub(crate) const P_ABANDON: f64 = 0.08;
pub(crate) const P_NO_CREATED: f64 = 0.015;
pub(crate) const P_REVIEWED: f64 = 0.92;
pub(crate) const P_REVIEW_BEFORE_ABANDON: f64 = 0.5;
pub(crate) const P_ERROR_GIVEN_FAILURE: f64 = 0.15;
pub(crate) const P_STAGING_INCIDENT: f64 = 0.002;
pub(crate) const P_REPORTED: f64 = 0.25;
pub(crate) const P_ROLLBACK: f64 = 0.35;
/// Of the incidents of the last seven days, the share still open when the history ends (older
/// ones are always resolved: an incident open for months would make every later deployment of
/// its service rework).
pub(crate) const P_NEVER_RESOLVED: f64 = 0.5;
/// The generated count falls a little short of the expectation (changes and runs cut off at
/// the ends of the window, skipped deployments): compensate.
pub(crate) const CALIBRATION: f64 = 1.025;

/// Expected events of one CI run of `s` (pipeline, tasks, suites, artifacts, staging).
pub(crate) fn expected_ci_events(s: &Service) -> f64 {
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
pub(crate) fn expected_change_events(r: &Repo, services: &[Service]) -> f64 {
    let ci: f64 = r
        .services
        .iter()
        .map(|&i| expected_ci_events(&services[i]))
        .sum();
    P_ABANDON * (2.0 + P_REVIEW_BEFORE_ABANDON)
        + (1.0 - P_ABANDON) * ((1.0 - P_NO_CREATED) + P_REVIEWED + 1.0 + ci)
}

/// Mean pull requests opened per average day in each repository, sized to `target_events`.
pub(crate) fn change_rates(spec: &DemoSpec, repos: &[Repo], services: &[Service]) -> Vec<f64> {
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

pub(crate) struct Timed<T> {
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
pub(crate) struct Queue<T> {
    heap: BinaryHeap<Timed<T>>,
    seq: u64,
}

impl<T> Queue<T> {
    pub(crate) fn new() -> Self {
        Queue {
            heap: BinaryHeap::new(),
            seq: 0,
        }
    }
    pub(crate) fn push(&mut self, t: i64, item: T) {
        self.seq += 1;
        self.heap.push(Timed {
            t,
            seq: self.seq,
            item,
        });
    }
    pub(crate) fn peek_time(&self) -> Option<i64> {
        self.heap.peek().map(|e| e.t)
    }
    pub(crate) fn pop(&mut self) -> Option<(i64, T)> {
        self.heap.pop().map(|e| (e.t, e.item))
    }
}

pub(crate) enum Action {
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
pub(crate) struct ServiceState {
    /// The newest published artifact by merge order.
    latest: Option<((i64, u64), String)>,
    /// An artifact rolled back: not deployed again.
    blocked: Option<String>,
    deployed: Vec<Option<String>>,
    previous: Vec<Option<String>>,
}

/// One event to render.
pub(crate) struct Ev<'a> {
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
pub(crate) struct Out {
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
    pub(crate) fn uuid(&mut self) -> String {
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

    pub(crate) fn timestamp(&mut self, t: i64) -> String {
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

    pub(crate) fn emit(&mut self, ev: Ev<'_>) {
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

pub(crate) struct Generator {
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
    pub(crate) fn new(spec: &DemoSpec, end: DateTime<Utc>, salt: u64) -> Self {
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

    pub(crate) fn run(&mut self, t: i64, action: Action) {
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
    pub(crate) fn on_day(&mut self, now: i64) {
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
    pub(crate) fn open_change(&mut self, r: usize, created: i64) {
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

    pub(crate) fn on_merge(&mut self, t: i64, r: usize, change: &str) {
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
    pub(crate) fn run_pipeline(&mut self, t0: i64, svc: usize, change: &str, key: (i64, u64)) {
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

    pub(crate) fn on_deploy(
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

    pub(crate) fn on_incident(&mut self, t: i64, svc: usize, env: Option<usize>, artifact: String) {
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

    pub(crate) fn on_rollback(&mut self, t: i64, svc: usize, env: usize, bad: String) {
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
