//! `cdlake backfill github` and `cdlake backfill gitlab`: history from GitHub's and GitLab's
//! REST APIs, written as the rows the webhooks would have written (see
//! `cdlake_ingest::backfill`, `cdlake_ingest::sources::{github, gitlab}::backfill`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use cdlake_ingest::backfill::{
    ApiClient, Backfill, BackfillError, History, KindCounts, Options, SharedCounts, headers,
};
use cdlake_ingest::sources::github::backfill::{self as github, check_repo};
use cdlake_ingest::sources::gitlab::backfill::{self as gitlab, check_project};
use cdlake_ingest::{Ingester, IngesterConfig};
use cdlake_schemas::services::ServiceRule;
use indicatif::{ProgressBar, ProgressStyle};

use super::StoreArgs;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    provider: Provider,
}

#[derive(Debug, clap::Subcommand)]
enum Provider {
    /// Pull requests, their commits' times, workflow runs and jobs (every attempt), deployments
    /// and their statuses, releases and issues labelled `incident`, through the REST API.
    Github(GithubArgs),
    /// Merge requests and their commits' times, pipelines and jobs, deployments, releases and
    /// incidents (issues of type incident or labelled `incident`), through the REST API (v4).
    Gitlab(GitlabArgs),
}

#[derive(Debug, clap::Args)]
struct GitlabArgs {
    #[command(flatten)]
    pull: PullArgs,
    /// A project, GROUP/NAME (subgroups too: GROUP/SUB/NAME); repeatable.
    #[arg(long = "project", required = true)]
    projects: Vec<String>,
    /// The GitLab: https://gitlab.com, or your instance's https://gitlab.example.com.
    #[arg(long, env = "GITLAB_URL", default_value = "https://gitlab.com")]
    url: String,
    /// The token (a personal, group or project access token with the `read_api` scope).
    #[arg(long, env = "GITLAB_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Times a request is retried after a 5xx answer or a dropped connection before the
    /// backfill stops (run it again to continue where it stopped).
    #[arg(long, default_value_t = 6)]
    retries: u32,
}

/// What a backfill of either provider takes.
#[derive(Debug, clap::Args)]
struct PullArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    rules: super::RulesArgs,
    /// Facts at or after this date (YYYY-MM-DD, UTC) or time (RFC 3339).
    #[arg(long)]
    since: String,
    /// Print the counts as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct GithubArgs {
    #[command(flatten)]
    pull: PullArgs,
    /// A repository, OWNER/NAME; repeatable.
    #[arg(long = "repo", required = true)]
    repos: Vec<String>,
    /// The REST root: https://api.github.com, or GitHub Enterprise's https://HOST/api/v3.
    #[arg(long, env = "GITHUB_API_URL", default_value = "https://api.github.com")]
    api_url: String,
    /// The token (a fine-grained token with read access to the repositories' contents,
    /// pull requests, actions, deployments and issues).
    #[arg(long, env = "GITHUB_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Times a request is retried after a 5xx answer or a dropped connection before the
    /// backfill stops (run it again to continue where it stopped).
    #[arg(long, default_value_t = 6)]
    retries: u32,
}

fn parse_since(since: &str) -> anyhow::Result<i64> {
    if let Ok(day) = chrono::NaiveDate::parse_from_str(since, "%Y-%m-%d") {
        let t = day.and_hms_opt(0, 0, 0).context("midnight")?.and_utc();
        return Ok(t.timestamp_micros());
    }
    chrono::DateTime::parse_from_rfc3339(since)
        .map(|t| t.timestamp_micros())
        .with_context(|| format!("--since {since:?} is not YYYY-MM-DD or an RFC 3339 time"))
}

/// What one backfill pulls.
#[derive(Debug, Clone)]
enum Target {
    /// A GitHub repository, OWNER/NAME.
    Github(String),
    /// A GitLab project, GROUP/NAME.
    Gitlab(String),
}

impl Target {
    fn name(&self) -> &str {
        match self {
            Target::Github(name) | Target::Gitlab(name) => name,
        }
    }
}

pub(crate) async fn run(args: Args) -> anyhow::Result<std::process::ExitCode> {
    let (client, targets, api_url, pull) = match args.provider {
        Provider::Github(args) => {
            for repo in &args.repos {
                check_repo(repo)?;
            }
            if args.token.is_none() {
                eprintln!(
                    "No GITHUB_TOKEN: unauthenticated requests are limited to 60 an hour and see only public repositories."
                );
            }
            let client = github_client(args.token.as_deref(), args.retries)?;
            let targets = args.repos.into_iter().map(Target::Github).collect();
            (client, targets, args.api_url, args.pull)
        }
        Provider::Gitlab(args) => {
            for project in &args.projects {
                check_project(project)?;
            }
            if args.token.is_none() {
                eprintln!(
                    "No GITLAB_TOKEN: unauthenticated requests see only public projects, and GitLab.com limits them more."
                );
            }
            let client = gitlab_client(args.token.as_deref(), args.retries)?;
            let targets = args.projects.into_iter().map(Target::Gitlab).collect();
            (client, targets, gitlab::api_root(&args.url), args.pull)
        }
    };
    backfill_all(&client, targets, &api_url, &pull).await
}

/// Backfill each target in turn, with a progress line, and print the counts.
async fn backfill_all(
    client: &ApiClient,
    targets: Vec<Target>,
    api_url: &str,
    pull_args: &PullArgs,
) -> anyhow::Result<std::process::ExitCode> {
    let store = &pull_args.store.open()?;
    let services = &pull_args.rules.services()?;
    let (since_text, json) = (&pull_args.since, pull_args.json);
    let since = parse_since(since_text)?;
    if since > cdlake_ingest::ingester::now_micros() {
        anyhow::bail!("--since {since_text} is in the future");
    }
    let options = Options {
        api_url: api_url.to_string(),
        since,
        cursor: "backfill",
    };
    let mut all: BTreeMap<String, BTreeMap<String, KindCounts>> = BTreeMap::new();
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    for target in &targets {
        let name = target.name().to_string();
        let counts = Arc::new(Mutex::new(BTreeMap::new()));
        let ticker = tokio::spawn(show_progress(
            bar.clone(),
            name.clone(),
            counts.clone(),
            client.status(),
        ));
        let (result, counts) = pull(client, store, &options, target, services, counts).await;
        ticker.abort();
        if let Err(e) = result {
            bar.finish_and_clear();
            print_counts(&name, &counts);
            return Err(anyhow::Error::new(e).context(format!(
                "backfilling {name} (what was committed stays; the same command continues from there)"
            )));
        }
        all.insert(name, counts);
    }
    bar.finish_and_clear();
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
    } else {
        for (name, counts) in &all {
            print_counts(name, counts);
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

type Counts = BTreeMap<String, KindCounts>;

/// Backfill one repository or project with its own writer, counting into `counts` as it
/// goes; the result and the final counts.
async fn pull(
    client: &ApiClient,
    store: &cdlake_schemas::store::Store,
    options: &Options,
    target: &Target,
    services: &[ServiceRule],
    counts: SharedCounts,
) -> (Result<(), BackfillError>, Counts) {
    let writer = IngesterConfig {
        services: services.to_vec(),
        ..IngesterConfig::default()
    };
    let mut ingester = Ingester::new(store.clone(), writer);
    let (ingester, shared) = (&mut ingester, counts.clone());
    let result = match target {
        Target::Github(repo) => {
            let history = github::Repository::new(&options.api_url, repo);
            let cursor = github::cursor_path(options.cursor, repo);
            run_history(client, ingester, store, options, history, cursor, shared).await
        }
        Target::Gitlab(project) => {
            let history = gitlab::Project::new(&options.api_url, project);
            let cursor = gitlab::cursor_path(options.cursor, project);
            run_history(client, ingester, store, options, history, cursor, shared).await
        }
    };
    let counts = counts.lock().unwrap_or_else(|e| e.into_inner()).clone();
    (result, counts)
}

/// Run the backfill of one [`History`].
async fn run_history<H: History>(
    client: &ApiClient,
    ingester: &mut Ingester,
    store: &cdlake_schemas::store::Store,
    options: &Options,
    history: Result<H, BackfillError>,
    cursor_path: String,
    counts: SharedCounts,
) -> Result<(), BackfillError> {
    Backfill {
        client,
        ingester,
        store,
        options,
        history: history?,
        cursor_path,
        counts,
    }
    .run()
    .await
}

/// A client of GitLab's REST API, with the token when there is one.
fn gitlab_client(token: Option<&str>, retries: u32) -> anyhow::Result<ApiClient> {
    let mut pairs = vec![("accept", "application/json")];
    let token = token.map(str::trim);
    if let Some(t) = token {
        pairs.push(("private-token", t));
    }
    let headers = headers(&pairs).map_err(|e| anyhow::anyhow!("GITLAB_TOKEN: {e}"))?;
    Ok(ApiClient::new(headers, retries)?)
}

/// A client of GitHub's REST API, with the token when there is one.
fn github_client(token: Option<&str>, retries: u32) -> anyhow::Result<ApiClient> {
    let mut pairs = vec![
        ("accept", "application/vnd.github+json"),
        ("x-github-api-version", "2022-11-28"),
    ];
    let auth = token.map(|t| format!("Bearer {}", t.trim()));
    if let Some(a) = &auth {
        pairs.push(("authorization", a));
    }
    let headers = headers(&pairs).map_err(|e| anyhow::anyhow!("GITHUB_TOKEN: {e}"))?;
    Ok(ApiClient::new(headers, retries)?)
}

/// Reconcile: a service re-pulls the last days of some repositories now and then, and adds
/// only what the webhooks missed (flags of `ingest` and `standalone`).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ReconcileArgs {
    /// Re-pull the last --reconcile-days of each --reconcile-repo this often (e.g. 6h; off by
    /// default); `/metrics` counts what the webhooks had missed
    /// (`cdlake_reconcile_missed_total`).
    #[arg(long, env = "CDLAKE_RECONCILE_EVERY")]
    reconcile_every: Option<String>,
    /// A GitHub repository to reconcile, OWNER/NAME; repeatable (the environment variable takes
    /// a comma-separated list).
    #[arg(
        long = "reconcile-repo",
        env = "CDLAKE_RECONCILE_REPOS",
        value_delimiter = ','
    )]
    reconcile_repos: Vec<String>,
    /// How many days back each reconcile pulls.
    #[arg(long, env = "CDLAKE_RECONCILE_DAYS", default_value_t = 3)]
    reconcile_days: u32,
    /// GitHub's REST root for the reconcile (GitHub Enterprise: https://HOST/api/v3).
    #[arg(
        long = "github-api-url",
        env = "GITHUB_API_URL",
        default_value = "https://api.github.com"
    )]
    github_api_url: String,
    /// The token the reconcile reads GitHub with.
    #[arg(long = "github-token", env = "GITHUB_TOKEN", hide_env_values = true)]
    github_token: Option<String>,
    /// A GitLab project to reconcile, GROUP/NAME; repeatable (the environment variable takes a
    /// comma-separated list).
    #[arg(
        long = "reconcile-project",
        env = "CDLAKE_RECONCILE_PROJECTS",
        value_delimiter = ','
    )]
    reconcile_projects: Vec<String>,
    /// The GitLab the reconcile reads (https://gitlab.com, or https://gitlab.example.com).
    #[arg(
        long = "gitlab-url",
        env = "GITLAB_URL",
        default_value = "https://gitlab.com"
    )]
    gitlab_url: String,
    /// The API token (`read_api`) the reconcile reads GitLab with; not the webhooks'
    /// --gitlab-token.
    #[arg(
        long = "gitlab-api-token",
        env = "GITLAB_TOKEN",
        hide_env_values = true
    )]
    gitlab_api_token: Option<String>,
}

impl ReconcileArgs {
    /// Start the periodic reconcile on `store`, counting into `metrics`; `None` when it is off.
    pub(crate) fn spawn(
        &self,
        store: cdlake_schemas::store::Store,
        metrics: Arc<cdlake_ingest::metrics::Metrics>,
        services: Vec<ServiceRule>,
    ) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
        let Some(every) = &self.reconcile_every else {
            if !self.reconcile_repos.is_empty() || !self.reconcile_projects.is_empty() {
                anyhow::bail!(
                    "--reconcile-repo and --reconcile-project need --reconcile-every (e.g. 6h)"
                );
            }
            return Ok(None);
        };
        let secs = cdlake_query::config::duration_secs(every)
            .filter(|s| *s > 0)
            .with_context(|| {
                format!("--reconcile-every {every:?} is not a duration such as 30m, 6h or 1d")
            })?;
        if self.reconcile_repos.is_empty() && self.reconcile_projects.is_empty() {
            anyhow::bail!(
                "--reconcile-every needs at least one --reconcile-repo OWNER/NAME or --reconcile-project GROUP/NAME"
            );
        }
        // Each target with the client and REST root it is read through.
        let mut targets = Vec::new();
        if !self.reconcile_repos.is_empty() {
            let client = Arc::new(github_client(self.github_token.as_deref(), 6)?);
            for repo in &self.reconcile_repos {
                check_repo(repo)?;
                let target = Target::Github(repo.clone());
                targets.push((target, client.clone(), self.github_api_url.clone()));
            }
        }
        if !self.reconcile_projects.is_empty() {
            let client = Arc::new(gitlab_client(self.gitlab_api_token.as_deref(), 6)?);
            for project in &self.reconcile_projects {
                check_project(project)?;
                let target = Target::Gitlab(project.clone());
                targets.push((target, client.clone(), gitlab::api_root(&self.gitlab_url)));
            }
        }
        let every = Duration::from_secs(secs as u64);
        let days = self.reconcile_days;
        Ok(Some(tokio::spawn(async move {
            // The first pass soon after the start, then one every interval.
            let mut wait = every.min(Duration::from_secs(60));
            loop {
                tokio::time::sleep(wait).await;
                wait = every;
                // From midnight (UTC) of the first day.
                let day = 86_400_000_000;
                let since = (cdlake_ingest::ingester::now_micros() - i64::from(days) * day)
                    .div_euclid(day)
                    * day;
                for (target, client, api_url) in &targets {
                    let options = Options {
                        api_url: api_url.clone(),
                        since,
                        cursor: "reconcile",
                    };
                    let (result, counts) =
                        pull(client, &store, &options, target, &services, Arc::default()).await;
                    let (name, provider) = match target {
                        Target::Github(name) => (name.as_str(), "GitHub"),
                        Target::Gitlab(name) => (name.as_str(), "GitLab"),
                    };
                    for (kind, c) in &counts {
                        metrics.add(
                            cdlake_ingest::metrics::RECONCILE_MISSED,
                            &[("repo", name), ("kind", kind)],
                            c.new as f64,
                        );
                    }
                    let missed: u64 = counts.values().map(|c| c.new).sum();
                    let result = match result {
                        Ok(()) => {
                            tracing::info!(repo = name, missed, "Reconciled with {provider}.");
                            "ok"
                        }
                        Err(e) => {
                            tracing::warn!(repo = name, missed, error = %e, "Reconcile with {provider} failed; the next pass continues.");
                            "error"
                        }
                    };
                    metrics.inc(
                        cdlake_ingest::metrics::RECONCILE_RUNS,
                        &[("result", result)],
                    );
                }
            }
        })))
    }
}

fn print_counts(repo: &str, counts: &BTreeMap<String, KindCounts>) {
    let total = |f: fn(&KindCounts) -> u64| counts.values().map(f).sum::<u64>();
    println!(
        "{repo}: {} new, {} already stored, {} before --since, {} rejected",
        total(|c| c.new),
        total(|c| c.stored),
        total(|c| c.before_since),
        total(|c| c.rejected)
    );
    for (kind, c) in counts {
        println!(
            "  {kind}: {} new, {} already stored, {} pages ({} unchanged)",
            c.new, c.stored, c.pages, c.unchanged_pages
        );
    }
    if total(|c| c.rejected) > 0 {
        eprintln!(
            "  rejected rows are dead letters: cdlake sql \"SELECT source, reason FROM dead_letters\""
        );
    }
}

async fn show_progress(
    bar: ProgressBar,
    repo: String,
    counts: Arc<Mutex<BTreeMap<String, KindCounts>>>,
    status: Arc<Mutex<cdlake_ingest::backfill::ApiStatus>>,
) {
    loop {
        let line = {
            let counts = counts.lock().unwrap_or_else(|e| e.into_inner());
            let s = status.lock().unwrap_or_else(|e| e.into_inner());
            let kinds: Vec<String> = counts
                .iter()
                .map(|(k, c)| format!("{k} {}+{}", c.new, c.stored))
                .collect();
            let now = chrono::Utc::now().timestamp();
            let limit = match (s.remaining, s.reset) {
                (Some(r), Some(reset)) => {
                    format!(
                        " · rate limit {r} left, resets in {}s",
                        (reset - now).max(0)
                    )
                }
                _ => String::new(),
            };
            let waiting = s
                .waiting
                .as_ref()
                .map(|(until, why)| format!(" · waiting {}s for {why}", (until - now).max(0)))
                .unwrap_or_default();
            format!(
                "{repo}: {} · {} requests ({} retried, {} unchanged){limit}{waiting}",
                kinds.join(", "),
                s.requests,
                s.retried,
                s.not_modified
            )
        };
        bar.set_message(line);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
