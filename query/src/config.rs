//! `cdlake.toml`: the settings that shape the answers (what is production, who owns what) and
//! the limits of the query engine. Flags override the file.
//!
//! ```toml
//! # Environments matching this (Rust regex syntax) are production.
//! production = '^(?i)(prod|production)([-_./].*)?$'
//!
//! [teams]            # service or repository → team; an event's customData.team wins
//! checkout = "storefront"
//! "acme/platform" = "platform"
//!
//! [limits]                  # every limit fails closed with a 4xx naming it
//! memory_mb = 2048          # memory pool of the query engine
//! query_timeout_secs = 60
//! max_result_rows = 1000000  # larger results are refused: add LIMIT or aggregate
//! max_result_mb = 256       # and results larger than this (Arrow, and as sent)
//!
//! [dora]
//! failure_window = "next_deployment"   # or a duration ("24h"): which deployments an incident fails
//! failures = ["incident", "rollback"]  # and/or "revert": what fails a deployment
//! rework = ["incident_open"]           # and/or "after_failure", "revert", "hotfix": which deployments are rework
//! hotfix_labels = ["hotfix"]           # labels that make a change a hotfix (any case)
//! lead_time_start = "created"          # or "first_commit", "merged": where lead time starts
//! bands = "design"                     # or a DORA report's year, "2021" to "2025": whose levels
//!
//! [incidents]               # alerting and incident tools: where service and environment are
//! service_labels = ["service", "app", "job"]
//! environment_labels = ["env", "environment", "namespace"]
//! default_environment = "production"
//! [incidents.services]      # a tool's service name or id → cdlake service
//! "API Service" = "api"
//!
//! [[services]]              # monorepos: which service an event is of (first rule that holds)
//! service = "billing"
//! repository = "acme/monorepo"
//! paths = ["services/billing/**"]   # and/or labels, workflows (globs), environment_prefix
//! ```
//!
//! [`Limits`] lists every limit with its default.

use std::collections::BTreeMap;
use std::path::Path;

use cdlake_wire::dora::levels::Benchmark;
use serde::Deserialize;

/// Errors loading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {source}")]
    Parse {
        path: String,
        source: toml::de::Error,
    },
    #[error("config: `production` is not a valid regular expression: {0}")]
    Production(regex::Error),
    #[error("config: limits.{0} must be greater than 0")]
    Limit(&'static str),
    #[error(
        "config: dora.failure_window {0:?} is neither \"next_deployment\" nor a duration from 1s to 366d such as \"30m\", \"24h\" or \"7d\""
    )]
    FailureWindow(String),
    #[error(
        "config: dora.rework names {0:?}, not a rework rule: use any of \"incident_open\", \"after_failure\", \"revert\" and \"hotfix\""
    )]
    ReworkRule(String),
    #[error(
        "config: dora.failures names {0:?}, not a failure rule: use any of \"incident\", \"rollback\" and \"revert\""
    )]
    FailureRule(String),
    #[error(
        "config: dora.failures is empty: name at least one of \"incident\", \"rollback\" and \"revert\" (the default is [\"incident\", \"rollback\"])"
    )]
    NoFailureRule,
    #[error(
        "config: dora.lead_time_start {0:?} is not a start: use \"first_commit\" (the first commit pushed to a change's branch, else as created), \"created\" (a change's creation, else its merge) or \"merged\""
    )]
    LeadTimeStart(String),
    #[error("config: dora.bands: {0}")]
    Bands(cdlake_wire::dora::levels::UnknownBenchmark),
    #[error("config: {0}")]
    ServiceRule(String),
}

/// The settings of `cdlake.toml`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The production environment pattern.
    pub production: String,
    /// Service or repository → team.
    pub teams: BTreeMap<String, String>,
    pub limits: Limits,
    /// Where incidents of the alerting and incident tools find their service and environment.
    pub incidents: cdlake_schemas::incidents::IncidentRules,
    /// Choices among the DORA definitions.
    pub dora: DoraRules,
    /// `[[services]]`: which service an event is of where its source cannot tell (applied
    /// when events are normalised).
    pub services: Vec<cdlake_schemas::services::ServiceRule>,
}

/// `[dora]`: choices among the DORA definitions.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DoraRules {
    /// Which production deployments an incident fails: `next_deployment` (the default, DESIGN's
    /// rule: the latest deployment of its service before it, up to the next one), or a
    /// duration (`30m`, `24h`, `7d`): every deployment of its service made in that long before it.
    pub failure_window: String,
    /// Which rules mark a deployment as rework: `incident_open` (the default, DESIGN's: made
    /// while an incident of its service was open) and `after_failure` (DORA 2024: the next
    /// deployment of its service after a failed one, within the failure window).
    pub rework: Vec<String>,
    /// What fails a production deployment: `incident` and `rollback` (the default, DESIGN's:
    /// an incident of its service, the next deployment being a rollback) and `revert` (it
    /// delivered a change that a change merged after that deployment reverts).
    pub failures: Vec<String>,
    /// Labels that make a change a hotfix (rework rule `hotfix`), compared without case.
    pub hotfix_labels: Vec<String>,
    /// Where lead time starts: `created` (the default, DESIGN's: the change's `created` time,
    /// its merge when it has none), `first_commit` (the earliest commit pushed to its branch,
    /// when no later than that; else as `created`) or `merged`.
    pub lead_time_start: String,
    /// Whose levels the report places its figures in: `design` (the default, DESIGN.md's) or
    /// the year of a DORA report, `2021` to `2024`; `2025`, which publishes no tiers, gives
    /// no levels.
    pub bands: String,
}

/// The rework rules `[dora] rework` may name.
pub const REWORK_RULES: [&str; 4] = ["incident_open", "after_failure", "revert", "hotfix"];

/// The failure rules `[dora] failures` may name.
pub const FAILURE_RULES: [&str; 3] = ["incident", "rollback", "revert"];

/// The default failure window.
pub const NEXT_DEPLOYMENT: &str = "next_deployment";

impl Default for DoraRules {
    fn default() -> Self {
        Self {
            failure_window: NEXT_DEPLOYMENT.into(),
            rework: vec!["incident_open".into()],
            failures: vec!["incident".into(), "rollback".into()],
            hotfix_labels: vec!["hotfix".into()],
            lead_time_start: "created".into(),
            bands: Benchmark::Design.as_str().into(),
        }
    }
}

impl DoraRules {
    /// Whose levels the report uses.
    pub fn benchmark(&self) -> Result<Benchmark, ConfigError> {
        self.bands.parse().map_err(ConfigError::Bands)
    }

    /// The options of the views.
    pub fn options(&self) -> Result<crate::views::DoraOptions, ConfigError> {
        for rule in &self.rework {
            if !REWORK_RULES.contains(&rule.as_str()) {
                return Err(ConfigError::ReworkRule(rule.clone()));
            }
        }
        for rule in &self.failures {
            if !FAILURE_RULES.contains(&rule.as_str()) {
                return Err(ConfigError::FailureRule(rule.clone()));
            }
        }
        if self.failures.is_empty() {
            return Err(ConfigError::NoFailureRule);
        }
        use crate::views::LeadTimeStart;
        let lead_time_start = match self.lead_time_start.trim() {
            "first_commit" => LeadTimeStart::FirstCommit,
            "created" => LeadTimeStart::Created,
            "merged" => LeadTimeStart::Merged,
            other => return Err(ConfigError::LeadTimeStart(other.to_string())),
        };
        Ok(crate::views::DoraOptions {
            lead_time_start,
            failure_window: self.failure_window_micros()?,
            rework_incident_open: self.rework.iter().any(|r| r == "incident_open"),
            rework_after_failure: self.rework.iter().any(|r| r == "after_failure"),
            rework_revert: self.rework.iter().any(|r| r == "revert"),
            rework_hotfix: self.rework.iter().any(|r| r == "hotfix"),
            failure_incident: self.failures.iter().any(|r| r == "incident"),
            failure_rollback: self.failures.iter().any(|r| r == "rollback"),
            failure_revert: self.failures.iter().any(|r| r == "revert"),
            hotfix_labels: self.hotfix_labels.clone(),
        })
    }

    /// The failure window in µs; `None` for `next_deployment`.
    pub fn failure_window_micros(&self) -> Result<Option<i64>, ConfigError> {
        let w = self.failure_window.trim();
        if w == NEXT_DEPLOYMENT {
            return Ok(None);
        }
        let bad = || ConfigError::FailureWindow(self.failure_window.clone());
        duration_secs(w)
            .and_then(|s| s.checked_mul(1_000_000))
            .filter(|&micros| micros > 0 && micros <= 366 * 86_400_000_000)
            .map(Some)
            .ok_or_else(bad)
    }
}

/// A duration as people write it, `<n><unit>` with unit `s`, `m`, `h`, `d` or `w` (`30m`,
/// `6h`, `7d`), in seconds.
pub fn duration_secs(text: &str) -> Option<i64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = text.split_at(split);
    let n: i64 = n.parse().ok()?;
    let unit_secs: i64 = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return None,
    };
    n.checked_mul(unit_secs)
}

/// Limits of the query engine. Each is enforced where the work happens, on every protocol
/// (HTTP, Postgres wire, the CLI), and a statement past one is refused with an error naming it
/// (`limits.<name>`), never answered by a crash or a stalled service.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// The query engine's memory pool (sorts, joins, aggregates, window functions), in MiB;
    /// past it a statement fails (no spilling to disk).
    pub memory_mb: usize,
    /// Wall-clock time of one statement or report, queueing included.
    pub query_timeout_secs: u64,
    /// User queries returning more rows fail with an error (the answer would not fit a client).
    pub max_result_rows: usize,
    /// Bytes of one result, in memory and as sent (JSON, CSV, Arrow IPC, Postgres rows), in MiB.
    pub max_result_mb: usize,
    /// Bytes of one SQL text, in KiB.
    pub max_statement_kb: usize,
    /// Operators of every kind in one statement (arithmetic, comparison, boolean, bitwise,
    /// casts, `IS`, `LIKE`, `BETWEEN`, `CASE`, function calls, …).
    pub max_operators: usize,
    /// How deep expressions and subqueries may nest in one statement.
    pub max_expression_depth: usize,
    /// Bytes one function call may produce for one batch of rows (`repeat`, `lpad`, `range`,
    /// `array_repeat`, `||`, …), in MiB: checked before the result is allocated.
    pub max_function_output_mb: usize,
    /// Statements and reports running at once; more wait (within their time limit).
    pub max_concurrent_queries: usize,
    /// Days one DORA report may span.
    pub max_report_days: u64,
    /// Groups one DORA report may have (`--by service|team|week`, or two of them).
    pub max_report_groups: usize,
    /// Environments one report by environment may have: each is a whole report of its own.
    pub max_report_environments: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_mb: 4096,
            query_timeout_secs: 300,
            max_result_rows: 1_000_000,
            max_result_mb: 256,
            max_statement_kb: 1024,
            max_operators: 2_000,
            max_expression_depth: 1_024,
            max_function_output_mb: 256,
            max_concurrent_queries: 8,
            max_report_days: 3_660,
            max_report_groups: 10_000,
            max_report_environments: 20,
        }
    }
}

impl Limits {
    /// The memory pool in bytes (at least 64 MiB).
    pub fn memory_bytes(&self) -> usize {
        self.memory_mb.max(64).saturating_mul(1 << 20)
    }

    /// The result size limit in bytes.
    pub fn result_bytes(&self) -> usize {
        self.max_result_mb.max(1).saturating_mul(1 << 20)
    }

    /// The per-call function output limit in bytes.
    pub fn function_output_bytes(&self) -> usize {
        self.max_function_output_mb.max(1).saturating_mul(1 << 20)
    }

    /// The statement text limit in bytes.
    pub fn statement_bytes(&self) -> usize {
        self.max_statement_kb.max(1).saturating_mul(1 << 10)
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            production: cdlake_schemas::DEFAULT_PRODUCTION_PATTERN.to_string(),
            teams: BTreeMap::new(),
            limits: Limits::default(),
            incidents: Default::default(),
            dora: DoraRules::default(),
            services: Vec::new(),
        }
    }
}

impl Config {
    /// Load `path`, or `./cdlake.toml` when no path is given and that file exists, or the
    /// defaults.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let implicit = Path::new("cdlake.toml");
        let path = match path {
            Some(p) => p,
            None if implicit.exists() => implicit,
            None => return Ok(Self::default()),
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse {
                path: path.display().to_string(),
                source,
            },
            other => other,
        })
    }

    /// Parse the text of a config file.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: "<text>".into(),
            source,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Check what a flag or file set.
    pub fn validate(&self) -> Result<(), ConfigError> {
        regex::Regex::new(&self.production).map_err(ConfigError::Production)?;
        self.dora.options()?;
        self.dora.benchmark()?;
        for rule in &self.services {
            rule.check().map_err(ConfigError::ServiceRule)?;
        }
        let l = &self.limits;
        for (name, value) in [
            ("query_timeout_secs", l.query_timeout_secs as usize),
            ("max_result_rows", l.max_result_rows),
            ("max_result_mb", l.max_result_mb),
            ("max_statement_kb", l.max_statement_kb),
            ("max_operators", l.max_operators),
            ("max_expression_depth", l.max_expression_depth),
            ("max_function_output_mb", l.max_function_output_mb),
            ("max_concurrent_queries", l.max_concurrent_queries),
            ("max_report_days", l.max_report_days as usize),
            ("max_report_groups", l.max_report_groups),
            ("max_report_environments", l.max_report_environments),
        ] {
            if value == 0 {
                return Err(ConfigError::Limit(name));
            }
        }
        Ok(())
    }

    /// Whether an environment id is production.
    pub fn is_production(&self, environment: &str) -> bool {
        regex::Regex::new(&self.production).is_ok_and(|r| r.is_match(environment))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_production_pattern_matches_the_design() {
        let c = Config::default();
        for yes in [
            "prod",
            "production",
            "PROD",
            "prod-eu",
            "production.us",
            "prod_1",
            "Prod/eu",
        ] {
            assert!(c.is_production(yes), "{yes}");
        }
        for no in ["staging", "preprod", "prod1", "productionx", "dev-prod", ""] {
            assert!(!c.is_production(no), "{no}");
        }
    }

    #[test]
    fn files_parse_and_errors_name_the_problem() {
        let c = Config::parse("production = '^live$'\n[teams]\ncheckout = 'storefront'\n").unwrap();
        assert!(c.is_production("live") && !c.is_production("prod"));
        assert_eq!(c.teams["checkout"], "storefront");
        assert!(
            Config::parse("production = '('")
                .unwrap_err()
                .to_string()
                .contains("regular expression")
        );
        assert!(
            Config::parse("colour = 1")
                .unwrap_err()
                .to_string()
                .contains("unknown field")
        );
    }

    #[test]
    fn bands_name_design_or_a_reports_year() {
        let bands = |v: &str| Config::parse(&format!("[dora]\nbands = '{v}'\n"));
        assert_eq!(
            Config::default().dora.benchmark().unwrap(),
            Benchmark::Design
        );
        assert_eq!(
            bands("2022").unwrap().dora.benchmark().unwrap(),
            Benchmark::Dora2022
        );
        let e = bands("elite").unwrap_err().to_string();
        assert!(e.contains("dora.bands") && e.contains("2024"), "{e}");
    }

    #[test]
    fn failure_windows_are_next_deployment_or_a_duration() {
        let window = |w: &str| {
            Config::parse(&format!("[dora]\nfailure_window = '{w}'\n"))
                .map(|c| c.dora.failure_window_micros().unwrap())
        };
        assert_eq!(
            Config::default().dora.failure_window_micros().unwrap(),
            None
        );
        assert_eq!(window("next_deployment").unwrap(), None);
        assert_eq!(window("24h").unwrap(), Some(86_400_000_000));
        assert_eq!(window("30m").unwrap(), Some(1_800_000_000));
        assert_eq!(window("7d").unwrap(), Some(604_800_000_000));
        for bad in [
            "",
            "24",
            "h",
            "0h",
            "-1h",
            "1y",
            "400d",
            "99999999999999999999s",
        ] {
            let e = window(bad).unwrap_err().to_string();
            assert!(e.contains("dora.failure_window"), "{bad}: {e}");
        }
        let incidents = Config::parse(
            "[incidents]\ndefault_environment = ''\n[incidents.services]\nPA2P440 = 'checkout'\n",
        )
        .unwrap()
        .incidents;
        assert_eq!(incidents.environment(None), None);
        assert_eq!(incidents.service(["PA2P440"]), Some("checkout".into()));
        assert!(Config::parse("[incidents]\nlabels = []\n").is_err());
        let services = Config::parse(
            "[[services]]\nservice = 'billing'\nrepository = 'acme/mono'\npaths = ['services/billing/**']\n\n[[services]]\nservice = 'search'\nworkflows = ['deploy-search*']\n",
        )
        .unwrap()
        .services;
        assert_eq!(
            services
                .iter()
                .map(|r| r.service.as_str())
                .collect::<Vec<_>>(),
            ["billing", "search"]
        );
        for (bad, says) in [
            ("[[services]]\nservice = 'billing'\n", "names no condition"),
            (
                "[[services]]\nrepository = 'acme/mono'\n",
                "missing field `service`",
            ),
            (
                "[[services]]\nservice = 'b'\npaths = ['']\n",
                "empty condition",
            ),
            (
                "[[services]]\nservice = 'b'\npath = 'x'\n",
                "unknown field `path`",
            ),
        ] {
            let e = Config::parse(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let dora = |toml: &str| Config::parse(&format!("[dora]\n{toml}\n")).map(|c| c.dora);
        let options = dora("rework = ['after_failure']\nlead_time_start = 'merged'")
            .unwrap()
            .options()
            .unwrap();
        assert!(options.rework_after_failure && !options.rework_incident_open);
        assert_eq!(options.lead_time_start, crate::views::LeadTimeStart::Merged);
        let e = dora("rework = ['fixes']").unwrap_err().to_string();
        assert!(
            e.contains("dora.rework") && e.contains("after_failure") && e.contains("hotfix"),
            "{e}"
        );
        let options = dora(
            "failures = ['revert']\nrework = ['revert', 'hotfix']\nhotfix_labels = ['urgent']",
        )
        .unwrap()
        .options()
        .unwrap();
        assert!(options.failure_revert && !options.failure_incident && !options.failure_rollback);
        assert!(options.rework_revert && options.rework_hotfix && !options.rework_incident_open);
        assert_eq!(options.hotfix_labels, ["urgent"]);
        let defaults = Config::default().dora.options().unwrap();
        assert!(defaults.failure_incident && defaults.failure_rollback && !defaults.failure_revert);
        let e = dora("failures = ['incidents']").unwrap_err().to_string();
        assert!(e.contains("dora.failures") && e.contains("revert"), "{e}");
        let e = dora("failures = []").unwrap_err().to_string();
        assert!(e.contains("dora.failures is empty"), "{e}");
        let options = dora("lead_time_start = 'first_commit'")
            .unwrap()
            .options()
            .unwrap();
        assert_eq!(
            options.lead_time_start,
            crate::views::LeadTimeStart::FirstCommit
        );
        let e = dora("lead_time_start = 'first_push'")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("dora.lead_time_start") && e.contains("first_commit"),
            "{e}"
        );
    }
}
