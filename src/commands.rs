//! One module per subcommand, and the flag blocks they share.

pub(crate) mod backfill;
pub(crate) mod compact;
pub(crate) mod demo;
pub(crate) mod dora;
pub(crate) mod import;
pub(crate) mod ingest;
pub(crate) mod migrate;
pub(crate) mod rebuild;
pub(crate) mod receive;
pub(crate) mod serve;
pub(crate) mod sql;
pub(crate) mod standalone;
pub(crate) mod tui;

use std::path::PathBuf;

use anyhow::Context;
use cdlake_query::{Config, Engine};
use cdlake_schemas::lake::AsOf;
use cdlake_schemas::store::Store;

/// Where the history lives.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct StoreArgs {
    /// The store: a directory, file:// URL, or s3://bucket/prefix, gs://bucket/prefix,
    /// az://container/prefix (credentials and endpoint from the usual AWS_*, GOOGLE_*,
    /// AZURE_* environment variables).
    #[arg(long, env = "CDLAKE_STORE", default_value = "./cdlake-data")]
    pub(crate) store: String,
}

impl StoreArgs {
    pub(crate) fn open(&self) -> anyhow::Result<Store> {
        Store::open(&self.store).with_context(|| format!("opening the store {:?}", self.store))
    }
}

/// The NATS server with JetStream.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct NatsArgs {
    /// NATS server URL (JetStream enabled).
    #[arg(long, env = "CDLAKE_NATS", default_value = "nats://127.0.0.1:4222")]
    pub(crate) nats: String,
}

/// Webhook secrets.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct SecretArgs {
    /// GitHub webhook secret; repeat it to accept the old and the new one during a rotation
    /// (the environment variable takes a comma-separated list).
    #[arg(
        long = "github-secret",
        env = "CDLAKE_GITHUB_SECRET",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub(crate) github_secret: Vec<String>,
    /// GitLab webhook secret token; repeatable, like --github-secret.
    #[arg(
        long = "gitlab-token",
        env = "CDLAKE_GITLAB_TOKEN",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub(crate) gitlab_token: Vec<String>,
    /// Bearer token or basic-auth password of `POST /webhooks/alertmanager` (Alertmanager's
    /// `http_config`, Grafana's webhook contact point); repeatable. Without it (and without
    /// --grafana-secret) the route answers 404.
    #[arg(
        long = "alertmanager-token",
        env = "CDLAKE_ALERTMANAGER_TOKEN",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub(crate) alertmanager_token: Vec<String>,
    /// Grafana Alerting contact point HMAC secret: `X-Grafana-Alerting-Signature` is checked on
    /// `POST /webhooks/alertmanager` when sent; repeatable.
    #[arg(
        long = "grafana-secret",
        env = "CDLAKE_GRAFANA_SECRET",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub(crate) grafana_secret: Vec<String>,
    /// PagerDuty Webhooks v3 signing secret of `POST /webhooks/pagerduty`; repeatable. Without
    /// it the route answers 404.
    #[arg(
        long = "pagerduty-secret",
        env = "CDLAKE_PAGERDUTY_SECRET",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub(crate) pagerduty_secret: Vec<String>,
    /// Bearer token or basic-auth password of `POST /webhooks/opsgenie` (a custom header of the
    /// Opsgenie Webhook integration); repeatable. Without it the route answers 404.
    #[arg(
        long = "opsgenie-token",
        env = "CDLAKE_OPSGENIE_TOKEN",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub(crate) opsgenie_token: Vec<String>,
    /// incident.io webhook signing secret (`whsec_…`) of `POST /webhooks/incidentio`;
    /// repeatable. Without it the route answers 404.
    #[arg(
        long = "incidentio-secret",
        env = "CDLAKE_INCIDENTIO_SECRET",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub(crate) incidentio_secret: Vec<String>,
}

/// Limits of what one request to the receivers may hold.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ReceiverLimits {
    /// Spans one OTLP request (`POST /v1/traces`) may hold; larger requests get a 413.
    #[arg(
        long = "otlp-max-spans",
        env = "CDLAKE_OTLP_MAX_SPANS",
        default_value_t = cdlake_ingest::sources::otlp::DEFAULT_MAX_SPANS
    )]
    pub(crate) otlp_max_spans: usize,
}

impl Default for ReceiverLimits {
    fn default() -> Self {
        Self {
            otlp_max_spans: cdlake_ingest::sources::otlp::DEFAULT_MAX_SPANS,
        }
    }
}

impl SecretArgs {
    /// The receivers with these secrets, after checking them.
    pub(crate) fn receivers(
        &self,
        sink: std::sync::Arc<dyn cdlake_ingest::sink::Sink>,
        limits: &ReceiverLimits,
        metrics: std::sync::Arc<cdlake_ingest::Metrics>,
        rules: cdlake_ingest::sources::Rules,
    ) -> anyhow::Result<cdlake_ingest::sources::Receivers> {
        // An empty value (a trailing comma in a CDLAKE_… variable, `--x ''`) is no secret:
        // dropped, so a route given only empty ones stays off.
        let given = |values: &[String]| -> Vec<String> {
            values
                .iter()
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
                .map(str::to_string)
                .collect()
        };
        for secret in given(&self.incidentio_secret) {
            cdlake_ingest::sources::incidentio::secret_key(&secret)
                .map_err(|e| anyhow::anyhow!("--incidentio-secret: {e}"))?;
        }
        self.warn_if_open();
        Ok(cdlake_ingest::sources::Receivers {
            sink,
            github_secrets: self.github_secret.clone(),
            gitlab_tokens: self.gitlab_token.clone(),
            alertmanager_tokens: given(&self.alertmanager_token),
            grafana_secrets: given(&self.grafana_secret),
            pagerduty_secrets: given(&self.pagerduty_secret),
            opsgenie_tokens: given(&self.opsgenie_token),
            incidentio_secrets: given(&self.incidentio_secret),
            otlp_max_spans: limits.otlp_max_spans,
            rules: std::sync::Arc::new(rules),
            metrics,
        })
    }

    fn warn_if_open(&self) {
        if self.github_secret.is_empty() {
            tracing::warn!("No --github-secret: GitHub webhook signatures are not checked.");
        }
        if self.gitlab_token.is_empty() {
            tracing::warn!("No --gitlab-token: GitLab webhook tokens are not checked.");
        }
    }
}

/// The configuration file and the flags that override it.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ConfigArgs {
    /// cdlake.toml: production pattern, teams, limits (default: ./cdlake.toml if present).
    #[arg(long, env = "CDLAKE_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// The production environment pattern (a regular expression); overrides the config file.
    #[arg(long, env = "CDLAKE_PRODUCTION")]
    pub(crate) production: Option<String>,
}

/// The configuration file of a command that writes events and reads only its rules
/// (`[[services]]`), not the query settings.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RulesArgs {
    /// cdlake.toml, for its [[services]] rules (default: ./cdlake.toml if present).
    #[arg(long, env = "CDLAKE_CONFIG")]
    pub(crate) config: Option<PathBuf>,
}

impl RulesArgs {
    /// The `[[services]]` rules of the file.
    pub(crate) fn services(&self) -> anyhow::Result<Vec<cdlake_schemas::services::ServiceRule>> {
        Ok(Config::load(self.config.as_deref())?.services)
    }
}

/// What the normalisers are configured with: `[incidents]` and `[[services]]`.
pub(crate) fn rules(config: &Config) -> cdlake_ingest::sources::Rules {
    cdlake_ingest::sources::Rules {
        incidents: config.incidents.clone(),
        services: config.services.clone(),
    }
}

/// A writer's settings with the `[[services]]` of `config`.
pub(crate) fn ingester_config(config: &Config) -> cdlake_ingest::IngesterConfig {
    cdlake_ingest::IngesterConfig {
        services: config.services.clone(),
        ..cdlake_ingest::IngesterConfig::default()
    }
}

/// After a one-off writer's last commit: checkpoint each table whose log has grown enough
/// since its last checkpoint, so every later open reads the checkpoint, not every commit. A
/// failure loses nothing (the commits are there; opening reads them all), so it is a warning.
pub(crate) async fn checkpoint_when_done(ingester: &cdlake_ingest::Ingester) {
    match ingester.checkpoint_if_due().await {
        Ok(tables) => {
            for table in tables {
                tracing::info!(table = table.dir(), "Checkpointed the table's log.");
            }
        }
        Err(e) => eprintln!(
            "warning: could not checkpoint the store's log ({e}); nothing is lost, opening the store reads every commit until `cdlake compact` checkpoints it"
        ),
    }
}

impl ConfigArgs {
    pub(crate) fn load(&self) -> anyhow::Result<Config> {
        let mut config = Config::load(self.config.as_deref())?;
        if let Some(p) = &self.production {
            config.production = p.clone();
        }
        config.validate()?;
        Ok(config)
    }
}

/// The engine over the tables as they were at `as_of` (a version of `events` or a time), or at
/// their newest.
pub(crate) async fn engine_as_of(
    store: &StoreArgs,
    config: &ConfigArgs,
    as_of: Option<&str>,
) -> anyhow::Result<Engine> {
    let (store, config, as_of) = open_as_of(store, config, as_of)?;
    Ok(Engine::open_as_of(&store, config, as_of).await?)
}

/// [`engine_as_of`] for DORA reports only ([`Engine::open_for_reports`]).
pub(crate) async fn report_engine_as_of(
    store: &StoreArgs,
    config: &ConfigArgs,
    as_of: Option<&str>,
) -> anyhow::Result<Engine> {
    let (store, config, as_of) = open_as_of(store, config, as_of)?;
    Ok(Engine::open_for_reports(&store, config, as_of).await?)
}

/// The store, the configuration and the `--as-of` of a command that opens an engine.
fn open_as_of(
    store: &StoreArgs,
    config: &ConfigArgs,
    as_of: Option<&str>,
) -> anyhow::Result<(Store, Config, AsOf)> {
    let store = store.open()?;
    let as_of = match as_of {
        None => AsOf::Latest,
        Some(text) => AsOf::parse(text).ok_or_else(|| {
            anyhow::anyhow!(
                "--as-of {text:?} is neither a table version (42) nor a time (2026-11-30, 2026-11-30T12:00:00Z)"
            )
        })?,
    };
    Ok((store, config.load()?, as_of))
}

pub(crate) use cdlake_query::time::parse_time;
