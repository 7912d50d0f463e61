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
//! [limits]
//! memory_mb = 2048          # memory pool of the query engine
//! query_timeout_secs = 60
//! max_result_rows = 1000000  # larger results are refused: add LIMIT or aggregate
//! ```

use std::collections::BTreeMap;
use std::path::Path;

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
}

/// Limits of the query engine.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub memory_mb: usize,
    pub query_timeout_secs: u64,
    /// User queries returning more rows fail with an error (the answer would not fit a client).
    pub max_result_rows: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_mb: 4096,
            query_timeout_secs: 300,
            max_result_rows: 1_000_000,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            production: cdlake_schemas::DEFAULT_PRODUCTION_PATTERN.to_string(),
            teams: BTreeMap::new(),
            limits: Limits::default(),
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
}
