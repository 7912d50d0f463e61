//! The DORA report as JSON (`GET /api/v1/dora`, `cdlake dora --format json`): the five figures
//! of DESIGN.md for a window `[from, to)`, overall and per group, with the level of each and
//! what the figures rest on. The field names are the contract `dora-report.schema.json`.

use serde::{Deserialize, Serialize};

pub mod levels;

/// How to group a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    Service,
    Team,
    Week,
    /// The repository of a deployment's change (else of its event), of a change, of an
    /// incident (its own, else that of the last production deployment of its service before
    /// it was detected); its groups are the report's `repositories`.
    Repository,
    /// Every environment deployed to in the window, each reported as if it were production
    /// (its slices are the report's `environments`, not `groups`).
    Environment,
}

impl GroupBy {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::Service => "service",
            GroupBy::Team => "team",
            GroupBy::Week => "week",
            GroupBy::Repository => "repository",
            GroupBy::Environment => "environment",
        }
    }
}

/// A grouping that is not `service`, `team`, `week`, `repository` or `environment`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownGrouping(pub String);

impl std::fmt::Display for UnknownGrouping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "unknown grouping {:?}: use service, team, week, repository or environment",
            self.0
        )
    }
}

impl std::error::Error for UnknownGrouping {}

impl std::str::FromStr for GroupBy {
    type Err = UnknownGrouping;
    fn from_str(s: &str) -> Result<Self, UnknownGrouping> {
        match s {
            "service" => Ok(Self::Service),
            "team" => Ok(Self::Team),
            "week" => Ok(Self::Week),
            "repository" => Ok(Self::Repository),
            "environment" => Ok(Self::Environment),
            other => Err(UnknownGrouping(other.to_string())),
        }
    }
}

/// A DORA level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Elite,
    High,
    Medium,
    Low,
}

impl Level {
    /// Every level, best first.
    pub const ALL: [Level; 4] = [Level::Elite, Level::High, Level::Medium, Level::Low];

    /// The level's name, as the JSON spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Elite => "elite",
            Level::High => "high",
            Level::Medium => "medium",
            Level::Low => "low",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub from: String,
    pub to: String,
    pub days: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentFrequency {
    pub deployments: u64,
    pub deploy_days: u64,
    pub per_day: f64,
    pub level: Option<Level>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeadTime {
    pub changes: u64,
    pub median_seconds: Option<f64>,
    pub p90_seconds: Option<f64>,
    pub level: Option<Level>,
    /// Of `changes`, how many started elsewhere than `lead_time_start` says (a change with no
    /// `created` event starts at its merge).
    #[serde(default)]
    pub fell_back: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeFailureRate {
    pub deployments: u64,
    pub failed: u64,
    pub rate: Option<f64>,
    pub level: Option<Level>,
    /// Of `deployments`, how many were rollbacks (a rollback fails the deployment before it).
    #[serde(default)]
    pub rollbacks: u64,
    /// Production deployment attempts that failed (GitHub `deployment_status` failure or
    /// error, GitLab deployment failed) in the window: shown apart, not deployments and not
    /// change failures.
    #[serde(default)]
    pub failed_deployments: u64,
    /// Of `failed`, how many delivered a change that a later merged change reverts (counted
    /// with `[dora] failures` naming `revert`).
    #[serde(default)]
    pub reverted: u64,
    /// Of `failed`, how many each source failed: the tool that reported a failing incident
    /// (its `origin`: `alertmanager`, `pagerduty`, `cdevents`, `github`, …), `rollback` or
    /// `revert`. A deployment failed by two sources counts under both.
    #[serde(default)]
    pub by_source: std::collections::BTreeMap<String, u64>,
}

impl ChangeFailureRate {
    /// What the rate rests on, for people: `2 of 7 deployments failed`, and the rollbacks,
    /// what failed them and the failed attempts (apart from the rate) when there are any.
    pub fn basis(&self) -> String {
        let plural =
            |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let mut out = format!("{} of {} deployments failed", self.failed, self.deployments);
        if self.rollbacks > 0 {
            out.push_str(&format!(
                "; {}",
                plural(self.rollbacks, "rollback", "rollbacks")
            ));
        }
        if self.reverted > 0 {
            out.push_str(&format!("; {} reverted", self.reverted));
        }
        if let Some(sources) = self.sources() {
            out.push_str(&format!("; failed by {sources}"));
        }
        if self.failed_deployments > 0 {
            out.push_str(&format!(
                "; {} apart",
                plural(
                    self.failed_deployments,
                    "failed deployment attempt",
                    "failed deployment attempts"
                )
            ));
        }
        out
    }

    /// The failures by source, for people (`pagerduty 2, rollback 1`); `None` when none failed.
    pub fn sources(&self) -> Option<String> {
        (!self.by_source.is_empty()).then(|| {
            self.by_source
                .iter()
                .map(|(source, n)| format!("{source} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecoveryTime {
    pub incidents: u64,
    pub median_seconds: Option<f64>,
    pub p90_seconds: Option<f64>,
    /// Production incidents detected before the window's end and not resolved by then.
    pub open: u64,
    pub level: Option<Level>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReworkRate {
    pub deployments: u64,
    pub rework: u64,
    pub rate: Option<f64>,
    /// Rework by the rule that marked it (`incident_open`, `after_failure`).
    #[serde(default)]
    pub by_rule: std::collections::BTreeMap<String, u64>,
}

impl ReworkRate {
    /// What the rate rests on, for people: `59 of 382 deployments during an open incident`
    /// under the default rule, else the count by rule (`3 of 5 deployments: after_failure 2,
    /// incident_open 1`).
    pub fn basis(&self) -> String {
        match self.rules() {
            None => format!(
                "{} of {} deployments during an open incident",
                self.rework, self.deployments
            ),
            Some(rules) => format!(
                "{} of {} deployments: {rules}",
                self.rework, self.deployments
            ),
        }
    }

    /// The count by rule (`after_failure 2, incident_open 1`), when a rule other than DESIGN's
    /// `incident_open` marked some; `None` otherwise.
    pub fn rules(&self) -> Option<String> {
        if self.by_rule.keys().all(|rule| rule == "incident_open") {
            return None;
        }
        let rules: Vec<String> = self
            .by_rule
            .iter()
            .map(|(rule, n)| format!("{rule} {n}"))
            .collect();
        Some(rules.join(", "))
    }
}

/// The five figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    pub deployment_frequency: DeploymentFrequency,
    pub lead_time: LeadTime,
    pub change_failure_rate: ChangeFailureRate,
    pub recovery_time: RecoveryTime,
    pub rework_rate: ReworkRate,
}

/// One group of a grouped report; exactly one of the keys is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub service: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub team: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub week: Option<String>,
    /// In the report's `repositories`: the repository the figures are of.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub repository: Option<String>,
    /// In the report's `environments`: the environment the figures are of.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub environment: Option<String>,
    #[serde(flatten)]
    pub figures: Figures,
}

impl Group {
    /// A group of no key yet, with these figures.
    pub fn of(figures: Figures) -> Self {
        Self {
            service: None,
            team: None,
            week: None,
            repository: None,
            environment: None,
            figures,
        }
    }

    /// The slot of a key.
    pub fn slot(&mut self, key: GroupBy) -> &mut Option<String> {
        match key {
            GroupBy::Service => &mut self.service,
            GroupBy::Team => &mut self.team,
            GroupBy::Week => &mut self.week,
            GroupBy::Repository => &mut self.repository,
            GroupBy::Environment => &mut self.environment,
        }
    }

    /// Every key the group has, in the order service, team, repository, week, environment.
    pub fn keys(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("service", &self.service),
            ("team", &self.team),
            ("repository", &self.repository),
            ("week", &self.week),
            ("environment", &self.environment),
        ]
        .into_iter()
        .filter_map(|(name, v)| v.as_deref().map(|v| (name, v)))
    }

    /// The group's name for people: its keys' values, `checkout · 2026-W05` when it has two.
    pub fn label(&self) -> String {
        self.keys().map(|(_, v)| v).collect::<Vec<_>>().join(" · ")
    }

    pub fn key(&self) -> &str {
        self.service
            .as_deref()
            .or(self.team.as_deref())
            .or(self.repository.as_deref())
            .or(self.week.as_deref())
            .or(self.environment.as_deref())
            .unwrap_or_default()
    }
}

/// Inputs that could not be linked, so an empty or surprising figure explains itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Unlinked {
    /// Production deployments in the window (not rollbacks) whose artifact is not linked to a
    /// known merged change: they deliver nothing for lead time.
    pub deployments_unknown_artifact: u64,
    /// Changes merged before the window's end that no production deployment delivered by then.
    pub changes_not_delivered: u64,
    /// Production incidents detected in the window with no service: no deployment can own them.
    pub incidents_without_service: u64,
    /// Production incidents resolved in the window with no detected/reported event.
    pub incidents_without_detection: u64,
}

/// A DORA report (the JSON of `cdlake dora --format json` and `GET /api/v1/dora`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DoraReport {
    pub window: Window,
    #[serde(flatten)]
    pub figures: Figures,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub groups: Option<Vec<Group>>,
    /// With `--by environment`: the five figures of every environment deployed to in the
    /// window, each computed as if that environment (exactly, by name) were production. Not in
    /// `groups`, whose items the contract keys by service, team or week.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub environments: Option<Vec<Group>>,
    /// With `--by repository` (alone or with another key, `repository,week`): the groups, keyed
    /// by `repository`. Not in `groups`, whose items the contract keys by service, team or week.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub repositories: Option<Vec<Group>>,
    pub unlinked: Unlinked,
    /// The production pattern the report used.
    pub production: String,
    /// Which production deployments an incident fails (`[dora] failure_window`):
    /// `next_deployment`, or a duration such as `24h`.
    #[serde(default = "next_deployment")]
    pub failure_window: String,
    /// The rules that mark rework (`[dora] rework`).
    #[serde(default = "incident_open")]
    pub rework_rules: Vec<String>,
    /// The rules that fail a deployment (`[dora] failures`).
    #[serde(default = "incident_and_rollback")]
    pub failure_rules: Vec<String>,
    /// Where lead time starts (`[dora] lead_time_start`): `first_commit`, `created` or `merged`.
    #[serde(default = "created")]
    pub lead_time_start: String,
    /// Whose levels the figures are placed in (`--bands`, `[dora] bands`): `design`
    /// (DESIGN.md's, the default) or a DORA report's year, `2021` to `2024`; `2025`, which
    /// publishes no tiers, leaves every level null.
    #[serde(default = "design")]
    pub bands: String,
    /// The grouping asked for (`service`, `service,week`, `environment`), when one was.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub by: Option<String>,
}

fn design() -> String {
    levels::Benchmark::Design.as_str().into()
}

fn created() -> String {
    "created".into()
}

impl DoraReport {
    /// The report's breakdown, whichever it has: the name of its keys (`service`, `team`,
    /// `week`, `repository`, `environment`, or two joined as `service · week`) and its items.
    pub fn breakdown(&self) -> Option<(String, &[Group])> {
        if let Some(environments) = &self.environments {
            return Some(("environment".to_string(), environments));
        }
        let groups = self.groups.as_deref().or(self.repositories.as_deref())?;
        // The keys asked for; else those the first group has.
        let names: Vec<&str> = match &self.by {
            Some(by) => by.split(',').collect(),
            None => groups
                .first()
                .map(|g| g.keys().map(|(name, _)| name).collect())
                .unwrap_or_default(),
        };
        let key = if names.is_empty() {
            "week".to_string()
        } else {
            names.join(" · ")
        };
        Some((key, groups))
    }

    /// The `[dora]` choices of the report that are not DESIGN's definitions, as (what, value):
    /// `("failure window", "24h")`, `("failures", "incident+revert")`, `("rework", …)`,
    /// `("lead time from", "first_commit")`. Empty under the defaults.
    pub fn chosen_definitions(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.failure_window != "next_deployment" {
            out.push(("failure window", self.failure_window.clone()));
        }
        if self.failure_rules != ["incident", "rollback"] {
            out.push(("failures", self.failure_rules.join("+")));
        }
        if self.rework_rules != ["incident_open"] {
            out.push(("rework", self.rework_rules.join("+")));
        }
        if self.lead_time_start != "created" {
            out.push(("lead time from", self.lead_time_start.clone()));
        }
        if self.bands != levels::Benchmark::Design.as_str() {
            out.push(("levels of", format!("DORA {}", self.bands)));
        }
        out
    }
}

fn incident_and_rollback() -> Vec<String> {
    vec!["incident".into(), "rollback".into()]
}

fn incident_open() -> Vec<String> {
    vec!["incident_open".into()]
}

fn next_deployment() -> String {
    "next_deployment".into()
}
