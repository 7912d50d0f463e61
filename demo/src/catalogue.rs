//! What the demo organisation is made of: the CDEvents vocabulary it speaks (event types by
//! spec version), its services, repositories, teams, CI systems and deployers, and the texts
//! of its pull requests and incidents.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::distributions::*;
use crate::{DemoSpec, HOUR, MIN, SEC};

// ---------------------------------------------------------------------------------------------
// CDEvents vocabulary
// ---------------------------------------------------------------------------------------------

/// The CDEvents spec version an emitting system speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Spec {
    V041,
    V051,
}

/// The event types the demo emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
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
    pub(crate) fn event_type(self, spec: Spec) -> &'static str {
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
    pub(crate) fn subject_type(self) -> &'static str {
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
pub(crate) fn url_key(spec: Spec) -> &'static str {
    match spec {
        Spec::V041 => "url",
        Spec::V051 => "uri",
    }
}

pub(crate) const PR_TITLES: [&str; 14] = [
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

pub(crate) const INCIDENT_DESCRIPTIONS: [&str; 9] = [
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
pub(crate) enum Cadence {
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
    pub(crate) fn per_day(self) -> f64 {
        match self {
            Cadence::Elite(m) => (5.0 * m + 2.0 * 0.1 * m) / 7.0,
            Cadence::Daily => (5.0 * (0.9 + 0.15) + 2.0 * 0.05) / 7.0,
            Cadence::Weekly(q) | Cadence::Rare(q) => 5.0 * q / 7.0,
        }
    }

    /// Median time from opening a pull request to merging it, in the teams that ship so.
    pub(crate) fn review_median(self) -> i64 {
        match self {
            Cadence::Elite(_) => 3 * HOUR,
            Cadence::Daily => 6 * HOUR,
            Cadence::Weekly(_) => 8 * HOUR,
            Cadence::Rare(_) => 10 * HOUR,
        }
    }

    pub(crate) fn activity(self) -> f64 {
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
pub(crate) enum Ci {
    /// Tekton, emitting CDEvents v0.4.1.
    Tekton,
    /// GitHub Actions through a CDEvents bridge, v0.5.1.
    Actions,
}

/// The production deployer of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Deployer {
    /// Argo CD, v0.4.1, always `service.deployed`.
    Argo,
    /// Spinnaker, v0.5.1, `service.upgraded` once the service runs in the environment.
    Spinnaker,
}

impl Deployer {
    pub(crate) fn source(self) -> &'static str {
        match self {
            Deployer::Argo => "/argocd/prod",
            Deployer::Spinnaker => "/spinnaker/prod",
        }
    }
    pub(crate) fn spec(self) -> Spec {
        match self {
            Deployer::Argo => Spec::V041,
            Deployer::Spinnaker => Spec::V051,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Task {
    Checkout,
    Lint,
    Build,
    UnitTest,
    IntegrationTest,
    SastScan,
    DockerPush,
}

impl Task {
    pub(crate) fn name(self) -> &'static str {
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
    pub(crate) fn duration(self, rng: &mut ChaCha8Rng, factor: f64) -> i64 {
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
    pub(crate) fn failure_weight(self) -> f64 {
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

pub(crate) struct Service {
    pub(crate) name: String,
    pub(crate) team: String,
    pub(crate) repo: usize,
    pub(crate) cadence: Cadence,
    /// Probability that a production deployment is followed by an incident.
    pub(crate) fail: f64,
    /// Probability that a CI run fails.
    pub(crate) ci_fail: f64,
    pub(crate) envs: Vec<&'static str>,
    pub(crate) deployer: Deployer,
    pub(crate) tasks: Vec<Task>,
    pub(crate) build_factor: f64,
}

pub(crate) struct Repo {
    /// `acme/<name>`: also the repository id of change events.
    pub(crate) name: String,
    pub(crate) url: String,
    /// The context source of its change events.
    pub(crate) source: String,
    pub(crate) services: Vec<usize>,
    pub(crate) ci: Ci,
    pub(crate) weight: f64,
    /// Median time from opening a pull request to merging it.
    pub(crate) review_median: i64,
}

impl Repo {
    pub(crate) fn ci_spec(&self) -> Spec {
        match self.ci {
            Ci::Tekton => Spec::V041,
            Ci::Actions => Spec::V051,
        }
    }
    pub(crate) fn ci_source(&self) -> String {
        match self.ci {
            Ci::Tekton => "/tekton/ci".to_string(),
            Ci::Actions => format!("/github.com/{}/actions", self.name),
        }
    }
}

pub(crate) struct Named {
    pub(crate) name: &'static str,
    pub(crate) team: &'static str,
    pub(crate) cadence: Cadence,
    pub(crate) fail: f64,
    pub(crate) envs: &'static [&'static str],
    pub(crate) deployer: Deployer,
    pub(crate) ci: Ci,
    pub(crate) integration: bool,
}

pub(crate) const NAMED: [Named; 12] = [
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

pub(crate) const MORE_TEAMS: [&str; 8] = [
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
pub(crate) fn build_org(spec: &DemoSpec, rng: &mut ChaCha8Rng) -> (Vec<Repo>, Vec<Service>) {
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
