//! The SQL views over the `events` table, one definition each, in dependency order.
//!
//! Everything DORA needs is a view, so a definition and its answer can be checked in SQL
//! (`tests/slt/*.slt`) and queried by users and dashboards:
//!
//! - `events_unique`: `events` itself, kept for the queries and dashboards that name it. Identity
//!   (event_source, event_id) is unique in `events` as an invariant of the store (every cdlake
//!   writer checks the identities of its date partition before it commits, and a duplicate
//!   carries the same event time, so the same partition); compaction removes any duplicate a
//!   writer that checks nothing committed. No view de-duplicates the history at query time.
//! - `report_events`: the events of the DORA subjects (service, incident, change, artifact,
//!   branch, and GitHub's `deployment_status` and GitLab's `deployment` attempts), without the
//!   payload. The DORA views read it, so it can be computed once per statement.
//! - `run_events`: the pipeline and task run events, narrow (the columns `pipeline_runs` and
//!   `task_runs` read). A statement reaching it reads it through its read model.
//! - `deployment_failures`: production and other deployment attempts that failed (GitHub
//!   `deployment_status` failure or error, GitLab deployment failed), apart from deployments.
//! - `deployments`, `changes`, `artifacts`, `artifact_changes`, `incidents`, `pipeline_runs`,
//!   `task_runs`: one row per subject, with the times of its predicates.
//! - `production_deployments`: production deployments in order per service (`seq`), with the
//!   next one's time and action; `deployment_frontiers`: each production deployment (not a
//!   rollback) with the merge time of each change its artifact links to, read from
//!   `production_links` (each production deployment event with its artifact's links and their
//!   changes' repository and merge time, where `production_deployments` also takes each
//!   artifact's change). The pairings below read them several times each, so statements hold
//!   them.
//! - `dora_deployments`: each production deployment with its next deployment, whether it
//!   failed (an incident for its service detected in `[time, next_time)`, or in the failure
//!   window after it; an incident naming an artifact fails the latest deployment of that
//!   artifact before it instead; or the next is a rollback; with `[dora] failures` naming
//!   `revert`, it delivered a change that a later merged change reverts) and whether it is
//!   rework (made while an incident of the service was open; with `[dora] rework` also the
//!   next deployment after a failed one, or one delivering a revert or a hotfix), with the
//!   `rework_rule` that marked it.
//! - `dora_change_deliveries`: each change with its delivery per service (trunk order: a
//!   deployment of an artifact built from change C′ delivers every change of the repository
//!   merged no later than C′, except a change of other services: `change_services`, which
//!   `[[services]]` rules fill in a monorepo); `dora_changes`: each merged change with its earliest delivery and
//!   lead time; `dora_incidents`: production incidents with their recovery time.
//! - `dora_levels`: the DORA levels as data, one row per figure and level with the range of
//!   values that earns it (`metric`, `unit`, `level`, `lower`, `lower_inclusive`, `upper`,
//!   `upper_inclusive`; a NULL bound is unbounded): [`cdlake_wire::dora::levels`], the table
//!   the report levels with. A dashboard levels a figure by joining it.
//! - `dora_benchmarks`: the same bands for every benchmark with tiers, named by `bands`
//!   (`design`, `2021`, `2022`, `2023`, `2024`) with their `source`: a dashboard levels by a
//!   report's year with `WHERE bands = '2024'`.
//! - `pipeline_traces`, `pipeline_critical_path`, `lead_time_breakdown`: pipeline runs joined
//!   with their OpenTelemetry traces (`spans`), and where lead time goes.
//!
//! Pairings use sorted sweeps (running `max`/`min`/`sum` windows over a union of the two sides)
//! instead of range joins, so they cost a sort, not a product.

use cdlake_schemas::event::EVENT_COLUMNS;
use cdlake_wire::dora::levels;

/// Rows that tie an artifact to the change it was built from: artifact events carrying a
/// change, and merged changes carrying their merge commit as an artifact (GitHub and GitLab
/// deliveries: a deployment of that commit then delivers the change).
macro_rules! artifact_link {
    () => {
        "(subject = 'artifact' OR (subject = 'change' AND predicate = 'merged' AND artifact_id IS NOT NULL))"
    };
}
const ARTIFACT_LINK: &str = artifact_link!();

/// The subjects the DORA views read (through `report_events`).
pub const REPORT_SUBJECTS: &[&str] = &[
    "service",
    "incident",
    "change",
    "artifact",
    "branch",
    "deployment_status",
    "deployment",
];

/// The subjects the pairing views (`dora_deployments`, `dora_change_deliveries`, …) read.
const DORA_SUBJECTS: &[&str] = &["service", "incident", "change", "artifact", "branch"];

/// The subjects `deployments`, and the views of production deployments over it, read.
const DEPLOYMENT_SUBJECTS: &[&str] = &["service", "artifact", "change", "branch"];

/// Whether a GitHub `deployment_status` or GitLab `deployment` row is a failed deployment
/// attempt: GitHub's `failure` and `error` states, GitLab's `failed` status.
const DEPLOYMENT_FAILED: &str =
    "subject IN ('deployment_status', 'deployment') AND outcome IN ('failure', 'error', 'failed')";

/// The views that read `report_events`, directly or through other views, with the subjects
/// they read from it. A statement naming some of them is answered with `report_events`
/// computed once for the statement, for those subjects only ([`crate::Engine::sql`]).
pub const REPORT_VIEWS: &[(&str, &[&str])] = &[
    ("report_events", REPORT_SUBJECTS),
    ("change_pushes", &["change", "branch"]),
    ("change_services", &["change", "branch"]),
    ("change_facts", &["change"]),
    ("artifact_facts", &["artifact", "change"]),
    ("change_reverts", &["change"]),
    ("reverted_artifacts", &["artifact", "change"]),
    ("changes", &["change", "artifact", "branch"]),
    ("artifact_changes", &["artifact", "change"]),
    ("artifacts", &["artifact", "change", "branch"]),
    ("deployments", DEPLOYMENT_SUBJECTS),
    ("incident_facts", &["incident"]),
    ("incidents", &["incident"]),
    ("deployment_frontiers", DEPLOYMENT_SUBJECTS),
    ("production_events", &["service"]),
    ("production_links", DEPLOYMENT_SUBJECTS),
    ("production_artifact_changes", DEPLOYMENT_SUBJECTS),
    ("production_changes", DEPLOYMENT_SUBJECTS),
    ("incident_signals", &["incident"]),
    ("prior_signal_deployments", &["service", "incident"]),
    ("production_deployments", DEPLOYMENT_SUBJECTS),
    ("delivery_pairs", DEPLOYMENT_SUBJECTS),
    ("delivery_reach", DORA_SUBJECTS),
    ("dora_deployments", DORA_SUBJECTS),
    ("dora_change_deliveries", DORA_SUBJECTS),
    ("dora_changes", DORA_SUBJECTS),
    ("lead_time_breakdown", DORA_SUBJECTS),
    ("dora_incidents", &["incident"]),
    ("deployment_failures", &["deployment_status", "deployment"]),
];

/// The views the DORA report computes once and holds for all its statements
/// ([`crate::Engine::dora`]): each is read by several of its statements or other views.
pub const REPORT_HELD_VIEWS: &[&str] = &[
    "change_pushes",
    "change_services",
    "change_reverts",
    "reverted_artifacts",
    "changes",
    "artifact_changes",
    "artifacts",
    "deployments",
    "incidents",
    "incident_signals",
    "prior_signal_deployments",
    "production_events",
    "production_links",
    "deployment_frontiers",
    "production_deployments",
    "delivery_pairs",
    "delivery_reach",
    "dora_change_deliveries",
    "dora_deployments",
];

/// The distinct non-NULL `origin`s of a group, sorted and joined with commas (NULL for none):
/// `string_agg(DISTINCT origin, ',' ORDER BY origin)`, which DataFusion computes with an
/// accumulator per group (a quarter of a second for 8,600 failed deployments); `array_agg` has
/// one for all groups.
const DISTINCT_ORIGINS: &str = "array_to_string(array_sort(array_distinct(
                        array_agg(origin) FILTER (WHERE origin IS NOT NULL))), ',')";

/// `count(DISTINCT subject_id)` of a group, through `array_agg` for the same reason.
const DISTINCT_INCIDENTS: &str = "CAST(coalesce(cardinality(array_distinct(
                        array_agg(subject_id) FILTER (WHERE subject_id IS NOT NULL))), 0) AS BIGINT)";

/// The views the DORA report's statements ([`crate::dora::report_queries`]) read.
pub const REPORT_READS: &[&str] = &[
    "production_events",
    "artifact_facts",
    "change_facts",
    "dora_deployments",
    "dora_change_deliveries",
    "dora_incidents",
    "changes",
    "artifact_changes",
    "deployment_failures",
    "delivery_pairs",
    "delivery_reach",
];

/// The views among `definitions` that `relations` read, directly or through other views (a
/// view reads another when its definition names it as a word; a false positive only costs a
/// statement a view computed that it did not need).
pub fn reachable(
    definitions: &[(&'static str, String)],
    relations: &[String],
) -> Vec<&'static str> {
    let mut reached: Vec<&'static str> = Vec::new();
    let mut todo: Vec<&str> = relations.iter().map(String::as_str).collect();
    while let Some(name) = todo.pop() {
        let Some((view, body)) = definitions.iter().find(|(v, _)| *v == name) else {
            continue;
        };
        if reached.contains(view) {
            continue;
        }
        reached.push(view);
        for (other, _) in definitions {
            if other != view && !reached.contains(other) && names_word(body, other) {
                todo.push(other);
            }
        }
    }
    reached
}

/// The views among `definitions` (in dependency order) that are among `names` or read one of
/// them, directly or through other views: one pass, each view's body searched for the names
/// found so far.
pub fn readers_of(
    definitions: &[(&'static str, String)],
    names: &[&'static str],
) -> Vec<&'static str> {
    let mut found: Vec<&'static str> = Vec::new();
    for (view, body) in definitions {
        if names.contains(view) || found.iter().any(|f| names_word(body, f)) {
            found.push(view);
        }
    }
    found
}

/// Whether `text` holds `word` with no identifier character on either side.
fn names_word(text: &str, word: &str) -> bool {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(word).any(|(i, _)| {
        !text[..i].chars().next_back().is_some_and(is_ident)
            && !text[i + word.len()..].chars().next().is_some_and(is_ident)
    })
}

/// `events` of the given subjects without the payload: the definition of `report_events` (with
/// every one of [`REPORT_SUBJECTS`]). Identities are unique in `events` (see the module's
/// documentation), so nothing is de-duplicated here.
pub fn report_events_sql(subjects: &[&str]) -> String {
    report_events_sql_without(subjects, &[])
}

/// The columns of `events` that no DORA view reads: the report holds `report_events` without
/// them ([`report_events_sql_without`]), so it decodes and keeps less. A view that came to read
/// one would fail to be defined over the report's rows, not read NULLs.
pub const REPORT_UNREAD_COLUMNS: &[&str] = &[
    "event_type",
    "spec_version",
    "ingested_at",
    "pipeline",
    "run_id",
    "trace_id",
    "span_id",
    "chain_id",
    "task",
    "attempt",
];

/// [`report_events_sql`] without the columns in `omit` (and without `payload` at all when
/// `omit` is not empty).
pub fn report_events_sql_without(subjects: &[&str], omit: &[&str]) -> String {
    let subjects: Vec<String> = subjects.iter().map(|s| format!("'{s}'")).collect();
    format!(
        "SELECT {report_cols}, date FROM events WHERE subject IN ({subjects})",
        report_cols = EVENT_COLUMNS
            .iter()
            .filter(|c| !omit.contains(c) && (omit.is_empty() || **c != "payload"))
            .map(|&c| match c {
                "payload" => "CAST(NULL AS VARCHAR) AS payload",
                c => c,
            })
            .collect::<Vec<_>>()
            .join(", "),
        subjects = subjects.join(", "),
    )
}

/// The columns `pipeline_runs` and `task_runs` read, with `date`: `run_events`, and its read
/// model.
const RUN_COLUMNS: &[&str] = &[
    "subject",
    "predicate",
    "subject_id",
    "time",
    "origin",
    "repository",
    "run_id",
    "attempt",
    "pipeline",
    "task",
    "trace_id",
    "artifact_id",
    "outcome",
    "url",
    "event_source",
    "event_id",
    "date",
];

/// `run_events`: the pipeline and task run events, narrow (what `pipeline_runs` and
/// `task_runs` read).
pub fn run_events_sql() -> String {
    format!(
        "SELECT {} FROM events WHERE subject IN ('pipelinerun', 'taskrun')",
        RUN_COLUMNS.join(", ")
    )
}

/// The columns an entity projection (`crate::projection`) keeps beside its view's: the
/// entity's identity as one value (`_key`), and the first and last month (`YYYY-MM`) of the
/// `events` dates its rows came from.
pub const PROJECTION_COLUMNS: [&str; 3] = ["_key", "_first_month", "_last_month"];

/// An identity of several columns as one text, unambiguous: each part as its length, `:` and
/// its text (the empty text `0:`), or `-` when NULL, the parts joined by `/`.
pub fn identity_key(parts: &[&str]) -> String {
    let parts: Vec<String> = parts
        .iter()
        .map(|p| {
            format!(
                "CASE WHEN {p} IS NULL THEN '-' ELSE concat(CAST(character_length(CAST({p} AS VARCHAR)) AS VARCHAR), ':', CAST({p} AS VARCHAR)) END"
            )
        })
        .collect();
    format!("concat_ws('/', {})", parts.join(", "))
}

/// The identity of a pipeline run attempt (`pipeline_runs`), over its columns or `run_events`'.
pub const PIPELINE_RUN_IDENTITY: [&str; 4] = ["origin", "repository", "run_id", "attempt"];

/// The identity of a task run (`task_runs`) over `run_events`' columns.
pub const TASK_RUN_IDENTITY: [&str; 3] = ["origin", "repository", "subject_id"];

/// The extra aggregates and columns of a projection's form of a view (`projection`), or none.
///
/// `identity` names the grouped columns of the source rows, so `_key` is computed in the group
/// from the same expression a reader applies to the source rows ([`identity_key`]).
fn projection_parts(projection: bool, identity: &[&str]) -> (String, &'static str) {
    if !projection {
        return (String::new(), "");
    }
    (
        format!(
            ", {} AS _key, min(date) AS _first_date, max(date) AS _last_date",
            identity_key(identity)
        ),
        ", _key, substr(CAST(_first_date AS VARCHAR), 1, 7) AS _first_month, substr(CAST(_last_date AS VARCHAR), 1, 7) AS _last_month",
    )
}

/// The identity of a change (`change_facts`) over `report_events`' columns.
pub const CHANGE_IDENTITY: [&str; 1] = ["change_id"];

/// The identity of an artifact (`artifact_facts`) over `report_events`' columns.
pub const ARTIFACT_IDENTITY: [&str; 1] = ["artifact_id"];

/// The identity of an event (`production_events`).
pub const EVENT_IDENTITY: [&str; 2] = ["event_source", "event_id"];

/// The `report_events` rows `production_events` keeps: a `service` event deploying, upgrading
/// or rolling back in an environment the `production` pattern matches.
pub fn production_event_rows(production: &str) -> String {
    let pat = production.replace('\'', "''");
    format!(
        "subject = 'service' AND predicate IN ({DEPLOYING})
         AND regexp_like(environment, '{pat}') AND service IS NOT NULL"
    )
}

/// `production_events` over `source` (rows of `report_events`' columns): the production
/// deployment events as they are; with `projection`, also the columns of
/// [`PROJECTION_COLUMNS`], each row its own (an event is its own entity: its identity is unique
/// in `events`, and rows are not grouped, so the projection answers as the view does even where
/// another writer broke that invariant).
pub fn production_events_sql(source: &str, production: &str, projection: bool) -> String {
    let rows = production_event_rows(production);
    let extra = if projection {
        format!(
            ", {} AS _key, substr(CAST(date AS VARCHAR), 1, 7) AS _first_month,
                    substr(CAST(date AS VARCHAR), 1, 7) AS _last_month",
            identity_key(&EVENT_IDENTITY)
        )
    } else {
        String::new()
    };
    format!(
        "SELECT time, service, environment, predicate, artifact_id, repository, team,
                event_source, event_id, date{extra}
         FROM {source} WHERE {rows}"
    )
}

/// The identity of an incident (`incident_facts`) over `report_events`' columns.
pub const INCIDENT_IDENTITY: [&str; 1] = ["subject_id"];

/// The `report_events` rows `incident_facts` reads.
pub const INCIDENT_ROWS: &str = "subject = 'incident'";

/// Whether `col` names an environment the `production` pattern matches (false for none).
fn is_production(col: &str, production: &str) -> String {
    let pat = production.replace('\'', "''");
    format!("coalesce(regexp_like({col}, '{pat}'), false)")
}

/// `incident_facts` over `source` (rows of `report_events`' columns): a row per incident from
/// its own events (its service, repository and environment, whether it is in an environment the
/// `production` pattern matches, when it was detected, acknowledged and resolved, whether it
/// was canceled); with `projection`, also the columns of [`PROJECTION_COLUMNS`].
pub fn incident_facts_sql(source: &str, production: &str, projection: bool) -> String {
    let (inner, outer) = projection_parts(projection, &INCIDENT_IDENTITY);
    format!(
        "SELECT incident_id, service, repository, environment, production, detected_at,
                resolved_at, event_team, events, origin, acknowledged_at, canceled{outer}
         FROM (SELECT subject_id AS incident_id, min(service) AS service, min(repository) AS repository,
                      coalesce(min(CASE WHEN predicate IN ('detected', 'reported') THEN environment END),
                               min(environment)) AS environment,
                      bool_or({production}) AS production,
                      min(CASE WHEN predicate IN ('detected', 'reported') THEN time END) AS detected_at,
                      min(CASE WHEN predicate = 'resolved' THEN time END) AS resolved_at,
                      max(team) AS event_team, count(*) AS events,
                      min(origin) AS origin,
                      min(CASE WHEN predicate = 'acknowledged' THEN time END) AS acknowledged_at,
                      bool_or({CANCELED}) AS canceled{inner}
               FROM {source} WHERE {INCIDENT_ROWS} GROUP BY subject_id)",
        production = is_production("environment", production),
    )
}

/// The `report_events` rows `change_facts` reads.
pub const CHANGE_ROWS: &str = "subject = 'change' AND change_id IS NOT NULL";

/// The `report_events` rows `artifact_facts` reads.
pub const ARTIFACT_ROWS: &str = ARTIFACT_LINK;

/// `change_facts` over `source` (rows of `report_events`' columns): a row per change from its
/// own events (its times, team, labels, hotfix by `hotfix_labels`, revert); with `projection`,
/// also the columns of [`PROJECTION_COLUMNS`].
pub fn change_facts_sql(source: &str, hotfix_labels: &[String], projection: bool) -> String {
    let (inner, outer) = projection_parts(projection, &CHANGE_IDENTITY);
    format!(
        "SELECT change_id, repository, created_at, merged_at, abandoned_at, event_team, events,
                labels, hotfix, revert, reverts, branch{outer}
         FROM (SELECT change_id, min(repository) AS repository,
                      min(CASE WHEN predicate = 'created' THEN time END) AS created_at,
                      min(CASE WHEN predicate = 'merged' THEN time END) AS merged_at,
                      min(CASE WHEN predicate = 'abandoned' THEN time END) AS abandoned_at,
                      max(team) AS event_team, count(*) AS events,
                      last_value(labels ORDER BY time, event_id) FILTER (WHERE labels IS NOT NULL) AS labels,
                      bool_or({hotfix}) AS hotfix,
                      bool_or(reverts IS NOT NULL) AS revert,
                      max(reverts) AS reverts,
                      max(CASE WHEN predicate IN ('created', 'merged', 'abandoned') THEN branch END) AS branch{inner}
               FROM {source} WHERE {CHANGE_ROWS}
               GROUP BY change_id)",
        hotfix = has_label("labels", hotfix_labels),
    )
}

/// `artifact_facts` over `source` (rows of `report_events`' columns): a row per artifact from
/// its own events and the merges that name it (the change it was built from, when it was
/// packaged and published); with `projection`, also the columns of [`PROJECTION_COLUMNS`].
pub fn artifact_facts_sql(source: &str, projection: bool) -> String {
    let (inner, outer) = projection_parts(projection, &ARTIFACT_IDENTITY);
    format!(
        "SELECT artifact_id, change_id, packaged_at, published_at{outer}
         FROM (SELECT artifact_id, min(change_id) AS change_id,
                      min(CASE WHEN predicate = 'packaged' THEN time END) AS packaged_at,
                      min(CASE WHEN predicate = 'published' THEN time END) AS published_at{inner}
               FROM {source} WHERE {ARTIFACT_ROWS} GROUP BY artifact_id)"
    )
}

/// The identity of an artifact's link to a change (`artifact_changes`).
pub const ARTIFACT_CHANGE_IDENTITY: [&str; 2] = ["artifact_id", "change_id"];

/// The `report_events` rows `artifact_changes` reads.
pub const ARTIFACT_CHANGE_ROWS: &str = concat!(artifact_link!(), " AND change_id IS NOT NULL");

/// `artifact_changes` over `source` (rows of `report_events`' columns): each artifact with
/// each change an event links it to, once; with `projection`, also the columns of
/// [`PROJECTION_COLUMNS`].
pub fn artifact_changes_sql(source: &str, projection: bool) -> String {
    let (inner, outer) = projection_parts(projection, &ARTIFACT_CHANGE_IDENTITY);
    format!(
        "SELECT artifact_id, change_id{outer}
         FROM (SELECT artifact_id, change_id{inner} FROM {source}
               WHERE {ARTIFACT_CHANGE_ROWS} GROUP BY artifact_id, change_id)"
    )
}

/// The identity of a row of `production_links`: its production event and linked change.
pub const PRODUCTION_LINK_IDENTITY: [&str; 3] = ["d.event_source", "d.event_id", "l.change_id"];

/// `production_links` over the relations `events` (`production_events`' rows), `links`
/// (`artifact_changes`') and `changes` (`change_facts`'): each production deployment event
/// (rollbacks too, a row per row of `events`) with each change its artifact links to (a row
/// per link), and that change's `repository` and `merged_at` where `changes` has a row for it
/// (`known`). With `projection`, also the columns of [`PROJECTION_COLUMNS`] (the months are
/// those of the event: the projection is read only where no month changed since it was
/// written, see `crate::projection::Entity::inputs`).
pub fn production_links_sql(events: &str, links: &str, changes: &str, projection: bool) -> String {
    let extra = if projection {
        format!(
            ", {} AS _key, substr(CAST(d.date AS VARCHAR), 1, 7) AS _first_month,
                    substr(CAST(d.date AS VARCHAR), 1, 7) AS _last_month",
            identity_key(&PRODUCTION_LINK_IDENTITY)
        )
    } else {
        String::new()
    };
    format!(
        "SELECT d.time, d.service, d.predicate, d.artifact_id, l.change_id, c.repository,
                c.merged_at, c.change_id IS NOT NULL AS known{extra}
         FROM {events} d
         JOIN {links} l ON l.artifact_id = d.artifact_id
         LEFT JOIN {changes} c ON c.change_id = l.change_id"
    )
}

/// `pipeline_runs` over `source` (rows of `run_events`' columns); with `projection`, also the
/// columns of [`PROJECTION_COLUMNS`].
pub fn pipeline_runs_sql(source: &str, projection: bool) -> String {
    let (inner, outer) = projection_parts(projection, &PIPELINE_RUN_IDENTITY);
    format!(
        "SELECT run_id, pipeline, queued_at, started_at, finished_at, outcome, url,
                {duration} AS duration_seconds, {queue} AS queue_seconds, events,
                trace_id, artifact_id, origin, repository, attempt, {run_key} AS run_key,
                {failed} AS failed{outer}
         FROM (SELECT origin, repository, run_id, attempt,
                      max(pipeline) AS pipeline, max(trace_id) AS trace_id,
                      max(artifact_id) AS artifact_id,
                      min(CASE WHEN predicate = 'queued' THEN time END) AS queued_at,
                      min(CASE WHEN predicate = 'started' THEN time END) AS started_at,
                      max(CASE WHEN predicate = 'finished' THEN time END) AS finished_at,
                      last_value(outcome ORDER BY time, event_id) FILTER (WHERE predicate = 'finished') AS outcome,
                      max(url) AS url, count(*) AS events{inner}
               FROM {source} WHERE {filter}
               GROUP BY origin, repository, run_id, attempt)",
        duration = secs("finished_at", "coalesce(started_at, queued_at)"),
        queue = secs("started_at", "queued_at"),
        run_key = RUN_KEY,
        failed = RUN_FAILED,
        filter = PIPELINE_RUN_ROWS,
    )
}

/// The `run_events` rows `pipeline_runs` reads.
pub const PIPELINE_RUN_ROWS: &str = "subject = 'pipelinerun' AND run_id IS NOT NULL";

/// The `run_events` rows `task_runs` reads.
pub const TASK_RUN_ROWS: &str = "subject = 'taskrun'";

/// `task_runs` over `source` (rows of `run_events`' columns); with `projection`, also the
/// columns of [`PROJECTION_COLUMNS`].
pub fn task_runs_sql(source: &str, projection: bool) -> String {
    let (inner, outer) = projection_parts(projection, &TASK_RUN_IDENTITY);
    format!(
        "SELECT task_run_id, run_id, task, started_at, finished_at, outcome, url,
                {duration} AS duration_seconds, origin, repository, attempt, {run_key} AS run_key,
                {failed} AS failed{outer}
         FROM (SELECT origin, repository, subject_id AS task_run_id, max(run_id) AS run_id,
                      max(attempt) AS attempt, max(task) AS task,
                      min(CASE WHEN predicate = 'started' THEN time END) AS started_at,
                      max(CASE WHEN predicate = 'finished' THEN time END) AS finished_at,
                      last_value(outcome ORDER BY time, event_id) FILTER (WHERE predicate = 'finished') AS outcome,
                      max(url) AS url{inner}
               FROM {source} WHERE {filter}
               GROUP BY origin, repository, subject_id)",
        duration = secs("finished_at", "started_at"),
        run_key = RUN_KEY,
        failed = RUN_FAILED,
        filter = TASK_RUN_ROWS,
    )
}

/// A pipeline run's identity as one value (`pipeline_runs.run_key`, `task_runs.run_key`):
/// origin, repository, run id and attempt, the missing ones empty.
const RUN_KEY: &str = "concat_ws(':', origin, coalesce(repository, ''), coalesce(run_id, ''), coalesce(CAST(attempt AS VARCHAR), ''))";

/// Whether a run's outcome is a failure, in the words of the senders: CDEvents `failure` and
/// `error`, GitHub's `failure`, `timed_out` and `startup_failure`, GitLab's `failed`. NULL while
/// the run has no outcome; cancelled and skipped runs did not fail.
const RUN_FAILED: &str =
    "outcome IN ('failure', 'error', 'failed', 'timed_out', 'startup_failure')";

/// Whether an incident event says the incident was none: declined in triage, merged into
/// another, or canceled (incident.io's status categories, CDEvents-style predicates). An
/// incident with such an event counts in no DORA figure; the `incidents` view keeps it, marked
/// `canceled`.
const CANCELED: &str = "predicate IN ('canceled', 'cancelled', 'declined', 'merged')";

/// How long before a run attempt's recorded start its trace may begin (clocks of the CI system
/// and of the span exporter differ): a trace joined by `cicd.pipeline.run.id` belongs to the
/// latest attempt of that run begun no later than this after the trace's start, else to the
/// earliest. One minute, in µs.
const TRACE_SLACK_MICROS: i64 = 60_000_000;

/// Seconds between two timestamp(µs) expressions, as a float.
fn secs(later: &str, earlier: &str) -> String {
    format!("(CAST({later} AS BIGINT) - CAST({earlier} AS BIGINT)) / 1000000.0")
}

/// The predicates of a `service` event that deploys: `deployments`' rows.
const DEPLOYING: &str = "'deployed', 'upgraded', 'rolledback'";

/// Each merged change with each service of `pairs` (`repository`, `service`, and the columns
/// `extra` names) that deploys from its repository and may deliver it: a change named for a
/// service (`change_services`) that deploys from its repository only by the services it is
/// named for; a change named for no such service (no name, or only names no deployment of its
/// repository carries) by every service's.
fn delivery_reach(extra: &str) -> String {
    format!(
        "SELECT p.repository, p.service, c.change_id, c.merged_at, c.started_at, c.team,
                c.started_from{extra}
         FROM changes c JOIN pairs p ON p.repository = c.repository
         LEFT JOIN (SELECT DISTINCT cs.change_id, sp.repository FROM change_services cs
                    JOIN pairs sp ON sp.service = cs.service) scoped
           ON scoped.change_id = c.change_id AND scoped.repository = c.repository
         LEFT JOIN change_services cs ON cs.change_id = c.change_id AND cs.service = p.service
         WHERE c.merged_at IS NOT NULL AND (scoped.change_id IS NULL OR cs.change_id IS NOT NULL)"
    )
}

/// What [`delivered_before`] computes, from the held `delivery_pairs`: the least `before`
/// of every (repository, service) pair, when each has one (NULL when one has none, or when
/// there is no pair).
const DELIVERED_BEFORE_SQL: &str = "SELECT CASE WHEN bool_and(before IS NOT NULL)
                                   THEN min(CAST(before AS BIGINT)) END AS bound FROM delivery_pairs";

/// The merge time (µs) up to which every change of a repository some service deploys from
/// was delivered before the report's window, by every service that may deliver it: as a
/// scalar subquery over `delivery_pairs` ([`DELIVERED_BEFORE_SQL`]), which the engine
/// replaces by its value before it plans the view that reads it
/// (`crate::engine::bind_bounds`), so a filter on it skips the row groups of `change_facts`
/// (sorted by `merged_at`) merged before. The view means the same unreplaced.
///
/// Why it is exact: a change C of repository R merged at m ≤ the least `before` of every pair
/// is merged no later than the greatest frontier each service S deploying from R deployed
/// before the window (`before(R, S)` ≥ m), so it is delivered before the window to each
/// service that may deliver it: it counts in no window figure, and not among the changes not
/// delivered by the window's end (its `until` ≥ `before` ≥ m, and a change of a repository with
/// pairs has at least one service that may deliver it).
pub fn delivered_before() -> String {
    format!("({DELIVERED_BEFORE_SQL})")
}

/// The scalar subqueries view definitions read as bounds, each with the SQL of its value (one
/// row, one BIGINT column): see [`delivered_before`].
pub fn bounds() -> [(String, &'static str); 1] {
    [(delivered_before(), DELIVERED_BEFORE_SQL)]
}

/// The definition of `dora_levels`: [`levels::bands`] as rows.
pub fn dora_levels_sql() -> String {
    let rows: Vec<String> = levels::bands()
        .iter()
        .map(|b| format!("({})", band_row(b)))
        .collect();
    // Columns named by the alias list, not `column1`…: DuckDB names VALUES columns `col0`…,
    // and the panels' baseline runs this definition there.
    format!(
        "SELECT metric, unit, level, lower, lower_inclusive, upper, upper_inclusive
         FROM (VALUES {}) AS v(metric, unit, level, lower, lower_inclusive, upper, upper_inclusive)",
        rows.join(",\n                      ")
    )
}

/// The definition of `dora_benchmarks`: the bands of every benchmark with tiers
/// ([`levels::Benchmark::bands`]), named by `bands` (`design`, `2021`…`2024`) and with their
/// `source`.
pub fn dora_benchmarks_sql() -> String {
    let rows: Vec<String> = levels::Benchmark::ALL
        .into_iter()
        .flat_map(|b| {
            b.bands().into_iter().map(move |band| {
                format!("('{}', '{}', {})", b.as_str(), b.source(), band_row(&band))
            })
        })
        .collect();
    format!(
        "SELECT bands, source, metric, unit, level, lower, lower_inclusive, upper, upper_inclusive
         FROM (VALUES {}) AS v(bands, source, metric, unit, level, lower, lower_inclusive, upper, upper_inclusive)",
        rows.join(",\n                      ")
    )
}

/// A band's columns as SQL values: metric, unit, level, lower, lower_inclusive, upper,
/// upper_inclusive (without the parentheses, so a caller can put columns before them).
fn band_row(b: &levels::Band) -> String {
    let num = |v: Option<f64>| match v {
        // `{:?}` writes the shortest text that reads back as the same double (`1.0`, `0.05`).
        Some(v) => format!("CAST({v:?} AS DOUBLE)"),
        None => "CAST(NULL AS DOUBLE)".to_string(),
    };
    format!(
        "'{}', '{}', '{}', {}, {}, {}, {}",
        b.metric.as_str(),
        b.metric.unit(),
        b.level.as_str(),
        num(b.lower),
        b.lower_inclusive,
        num(b.upper),
        b.upper_inclusive,
    )
}

/// The choices among DORA's definitions that shape the views (`[dora]` in `cdlake.toml`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoraOptions {
    /// `None` is DESIGN's rule (an incident fails the latest production deployment of its
    /// service before it, up to the next deployment); `Some(µs)` (`failure_window = "24h"`)
    /// fails every production deployment of its service made in that long before it.
    pub failure_window: Option<i64>,
    /// Rework rule `incident_open` (DESIGN's): made while an incident of the service is open.
    pub rework_incident_open: bool,
    /// Rework rule `after_failure` (DORA 2024): the next deployment of the service after a
    /// failed one (within the failure window when it is a duration).
    pub rework_after_failure: bool,
    /// Where lead time starts (`[dora] lead_time_start`).
    pub lead_time_start: LeadTimeStart,
    /// Failure rule `incident` (DESIGN's): an incident of the service fails a deployment.
    pub failure_incident: bool,
    /// Failure rule `rollback` (DESIGN's): a deployment whose next one is a rollback failed.
    pub failure_rollback: bool,
    /// Failure rule `revert`: a deployment that delivered a change a later merged change
    /// reverts failed.
    pub failure_revert: bool,
    /// Rework rule `revert`: the deployment delivers a merged revert.
    pub rework_revert: bool,
    /// Rework rule `hotfix`: the deployment delivers a change labelled as a hotfix.
    pub rework_hotfix: bool,
    /// The labels that mark a change as a hotfix, compared without case (`changes.hotfix`).
    pub hotfix_labels: Vec<String>,
}

impl Default for DoraOptions {
    fn default() -> Self {
        Self {
            failure_window: None,
            rework_incident_open: true,
            rework_after_failure: false,
            lead_time_start: LeadTimeStart::Created,
            failure_incident: true,
            failure_rollback: true,
            failure_revert: false,
            rework_revert: false,
            rework_hotfix: false,
            hotfix_labels: vec!["hotfix".into()],
        }
    }
}

/// Where a change's lead time starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeadTimeStart {
    /// The earliest commit pushed to the change's branch (`changes.first_commit_at`) when it is
    /// no later than its creation, else as `Created`.
    FirstCommit,
    /// Its `created` time, its merge when it has none (DESIGN's rule).
    Created,
    /// Its merge.
    Merged,
}

/// Whether a `labels` value (a JSON array of strings) holds one of `labels`, without case:
/// each label is looked for as a whole JSON string.
fn has_label(column: &str, labels: &[String]) -> String {
    let tests: Vec<String> = labels
        .iter()
        .filter_map(|l| serde_json::to_string(&l.to_lowercase()).ok())
        .map(|quoted| {
            format!(
                "strpos(lower({column}), '{}') > 0",
                quoted.replace('\'', "''")
            )
        })
        .collect();
    if tests.is_empty() {
        return "false".into();
    }
    format!("coalesce({}, false)", tests.join(" OR "))
}

/// `CREATE VIEW` statements for every view, in order. `production` is the production pattern.
pub fn definitions(production: &str) -> Vec<(&'static str, String)> {
    definitions_with(production, DoraOptions::default())
}

/// [`definitions`] with the given [`DoraOptions`].
pub fn definitions_with(production: &str, options: DoraOptions) -> Vec<(&'static str, String)> {
    definitions_for(production, options, None)
}

/// A report's window, `[from, to)` in µs since the epoch: the rows the report reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportWindow {
    pub from: i64,
    pub to: i64,
}

/// Whether the views with `options` can be computed for a window ([`definitions_for`]): every
/// rule but `after_failure`, which fails a deployment by the one before it, however old.
pub fn windowable(options: &DoraOptions) -> bool {
    !options.rework_after_failure
}

/// Whether a rule of `options` reads what each deployment delivered (`dora_change_deliveries`,
/// and the revert and hotfix flags of `changes`).
fn reads_deliveries(options: &DoraOptions) -> bool {
    options.failure_revert || options.rework_revert || options.rework_hotfix
}

/// Whether the DORA report over `window` with `options` holds `changes` (computes it whole,
/// once): not when it reads the window's views ([`windowable`]) and no rule reads what each
/// deployment delivered, for then only `delivery_reach` reads it, and only the changes merged
/// after [`delivered_before`], which a scan of `change_facts` finds without reading the others.
pub fn report_holds_changes(options: &DoraOptions, window: Option<ReportWindow>) -> bool {
    window.is_none() || !windowable(options) || reads_deliveries(options)
}

/// [`definitions_with`], or with `window`, the pairing views as the DORA report over that
/// window reads them, which pair only what the window's figures can depend on:
///
/// - `production_deployments`: those made from the window's start on (numbered from there; the
///   report reads no deployment before it, and the next one of each is among them);
/// - `incident_signals`: those from the window's start on (a signal before it is owned by a
///   deployment before it);
/// - `dora_deployments`: the window's deployments failed by those signals, a signal naming an
///   artifact being linked when the artifact was deployed at or before it at any time (the
///   deployments before the window among `production_events`);
/// - `dora_change_deliveries`: the deliveries before the window's end of the changes delivered
///   in the window: a change is delivered in the window to a service exactly when it was merged
///   after every frontier that service deployed before the window (`delivery_reach`'s `before`)
///   and no later than one it deployed before the window's end (`until`). `delivery_pairs`
///   (each repository and service with its `before` and `until`) and `delivery_reach` (the
///   changes merged after [`delivered_before`] with the services that may deliver them) are
///   defined only over a window.
///
/// Every other view is the same; `dora_changes` and the views over it are then not whole.
/// When `options` cannot be computed for a window ([`windowable`]), the whole history's.
pub fn definitions_for(
    production: &str,
    options: DoraOptions,
    window: Option<ReportWindow>,
) -> Vec<(&'static str, String)> {
    let window = window.filter(|_| windowable(&options));
    let failure_window = options.failure_window;
    let by_delivery = reads_deliveries(&options);
    let pat = production.replace('\'', "''");
    let is_prod = |col: &str| is_production(col, production);
    let cols = EVENT_COLUMNS.join(", ");
    let mut v: Vec<(&'static str, String)> = Vec::new();

    v.push(("events_unique", format!("SELECT {cols}, date FROM events")));

    v.push(("report_events", report_events_sql(REPORT_SUBJECTS)));

    v.push(("run_events", run_events_sql()));

    v.push(("dora_levels", dora_levels_sql()));
    v.push(("dora_benchmarks", dora_benchmarks_sql()));

    // The pushes to a change's branch while it was open (after the branch's previous change
    // ended, up to its own merge or abandonment), with the earliest commit each records and the
    // service a `[[services]]` rule gave it.
    v.push((
        "change_pushes",
        "SELECT b.change_id, p.service, min(p.first_commit_at) AS first_commit_at
         FROM (SELECT change_id, repository, branch, ended,
                      lag(ended) OVER (PARTITION BY repository, branch
                                       ORDER BY ended ASC NULLS LAST, change_id) AS prev_ended
               FROM (SELECT change_id, min(repository) AS repository, max(branch) AS branch,
                            coalesce(min(CASE WHEN predicate = 'merged' THEN time END),
                                     min(CASE WHEN predicate = 'abandoned' THEN time END)) AS ended
                     FROM report_events
                     WHERE subject = 'change' AND change_id IS NOT NULL AND branch IS NOT NULL
                       AND predicate IN ('created', 'merged', 'abandoned')
                     GROUP BY change_id)) b
         JOIN report_events p
           ON p.subject IN ('change', 'branch')
          AND (p.first_commit_at IS NOT NULL OR p.service IS NOT NULL)
          AND p.repository = b.repository AND p.branch = b.branch
          AND (b.ended IS NULL OR p.time <= b.ended)
          AND (b.prev_ended IS NULL OR p.time > b.prev_ended)
         GROUP BY b.change_id, p.service"
            .to_string(),
    ));

    // The services a change is of, where anything says: its own events' service (its
    // creation, merge or abandonment), or that of a push to its branch (both set by
    // `[[services]]` rules; a CDEvents change may name one).
    v.push((
        "change_services",
        "SELECT DISTINCT change_id, service FROM (
           SELECT change_id, service FROM report_events
           WHERE subject = 'change' AND change_id IS NOT NULL AND service IS NOT NULL
             AND predicate IN ('created', 'merged', 'abandoned')
           UNION ALL
           SELECT change_id, service FROM change_pushes WHERE service IS NOT NULL)"
            .to_string(),
    ));

    // Each change's and each artifact's facts from its own events, before any pairing: kept
    // whole as projections (`crate::projection`).
    v.push((
        "change_facts",
        change_facts_sql("report_events", &options.hotfix_labels, false),
    ));
    v.push(("artifact_facts", artifact_facts_sql("report_events", false)));

    // The changes that revert something, with what they name (a change, or the artifact or
    // commit it was built as), and the artifacts among those with the change each was built
    // from: what `changes` looks a revert's change up in. Views of their own, held, so that the
    // lookup builds its table on the few reverts (whose count the planner then knows), not on
    // every artifact. `revert` (true for each change naming something it reverts) is tested
    // first: the statistics of a row group with none skip it.
    v.push((
        "change_reverts",
        "SELECT change_id, reverts FROM change_facts WHERE revert AND reverts <> ''".to_string(),
    ));
    v.push((
        "reverted_artifacts",
        "SELECT DISTINCT r.reverts AS artifact_id, a.change_id
         FROM change_reverts r
         JOIN artifact_facts a ON a.artifact_id = r.reverts
         WHERE a.change_id IS NOT NULL"
            .to_string(),
    ));

    v.push((
        "changes",
        format!(
            "SELECT c.change_id, c.repository, c.created_at, c.merged_at, c.abandoned_at,
                    {started} AS started_at,
                    {review} AS review_seconds,
                    coalesce(c.event_team, t.team) AS team, c.events,
                    {started_from} AS started_from,
                    c.labels, c.hotfix, c.revert,
                    coalesce(r.change_id, nullif(c.reverts, '')) AS reverts,
                    c.branch, fc.first_commit_at
             FROM change_facts c
             LEFT JOIN teams t ON t.key = c.repository
             LEFT JOIN reverted_artifacts r ON r.artifact_id = c.reverts
             LEFT JOIN (SELECT change_id, min(first_commit_at) AS first_commit_at FROM change_pushes
                        GROUP BY change_id) fc
               ON fc.change_id = c.change_id",
            review = secs("c.merged_at", "coalesce(c.created_at, c.merged_at)"),
            started = match options.lead_time_start {
                LeadTimeStart::Merged => "c.merged_at",
                LeadTimeStart::Created => "coalesce(c.created_at, c.merged_at)",
                LeadTimeStart::FirstCommit => {
                    "CASE WHEN fc.first_commit_at <= coalesce(c.created_at, c.merged_at)
                          THEN fc.first_commit_at ELSE coalesce(c.created_at, c.merged_at) END"
                }
            },
            started_from = match options.lead_time_start {
                LeadTimeStart::Merged => "CASE WHEN c.merged_at IS NOT NULL THEN 'merged' END",
                LeadTimeStart::Created => {
                    "CASE WHEN c.created_at IS NOT NULL THEN 'created' WHEN c.merged_at IS NOT NULL THEN 'merged' END"
                }
                LeadTimeStart::FirstCommit => {
                    "CASE WHEN fc.first_commit_at <= coalesce(c.created_at, c.merged_at) THEN 'first_commit'
                          WHEN c.created_at IS NOT NULL THEN 'created' WHEN c.merged_at IS NOT NULL THEN 'merged' END"
                }
            },
        ),
    ));

    v.push((
        "artifact_changes",
        artifact_changes_sql("report_events", false),
    ));

    v.push((
        "artifacts",
        "SELECT a.artifact_id, a.change_id, c.repository, a.packaged_at, a.published_at
         FROM artifact_facts a
         LEFT JOIN changes c ON c.change_id = a.change_id"
            .to_string(),
    ));

    // The production deployment events (a `service` event deploying, upgrading or rolling back
    // in a production environment), as they are: what `production_deployments` pairs, and what
    // the report looks signals' artifacts up in. Kept as a projection (`crate::projection`).
    v.push((
        "production_events",
        production_events_sql("report_events", production, false),
    ));

    // Each production deployment event with each change its artifact links to, and that
    // change's repository and merge time where `change_facts` has it: the one join of the
    // production deployments with every artifact's links and every change's facts, which the
    // frontiers and the production deployments read. Kept as a projection (`crate::projection`)
    // read where no month changed since it was written; held where it is derived.
    v.push((
        "production_links",
        production_links_sql(
            "production_events",
            "artifact_changes",
            "change_facts",
            false,
        ),
    ));

    // The links of the artifacts deployed to production (`artifact_changes`' rows of the
    // artifacts of `production_events`), for statements: the views read `production_links`.
    v.push((
        "production_artifact_changes",
        "SELECT DISTINCT artifact_id, change_id FROM production_links".to_string(),
    ));

    // The facts of the changes those links name (`change_facts`' change, repository and merge
    // time), for statements: the views read `production_links`.
    v.push((
        "production_changes",
        "SELECT DISTINCT change_id, repository, merged_at FROM production_links WHERE known"
            .to_string(),
    ));

    // A deployment is a `service` event deploying, upgrading or rolling back, with its
    // artifact's change and repository. `production_deployments` takes the production ones
    // from `production_events` (not from `deployments`), so that the report and the panels
    // over production pair only those, and join only their artifacts.
    // `artifacts` and `changes` name the relations an artifact's change and a change's
    // repository are looked up in.
    let deployment_rows = |source: &str,
                           artifacts: &str,
                           changes: &str,
                           url: &str,
                           filter: &str| {
        format!(
            "SELECT e.time, e.service, e.environment, e.predicate AS action, e.artifact_id,
                    {prod} AS production, coalesce(c.repository, e.repository) AS repository, a.change_id,
                    coalesce(e.team, ts.team, tr.team) AS team,
                    e.event_source, e.event_id, {url} AS url, e.date
             FROM {source} e
             LEFT JOIN {artifacts} a ON a.artifact_id = e.artifact_id
             LEFT JOIN {changes} c ON c.change_id = a.change_id
             LEFT JOIN teams ts ON ts.key = e.service
             LEFT JOIN teams tr ON tr.key = coalesce(c.repository, e.repository)
             WHERE {filter}",
            prod = is_prod("e.environment"),
        )
    };
    v.push((
        "deployments",
        deployment_rows(
            "report_events",
            "artifact_facts",
            "change_facts",
            "e.url",
            &format!("e.subject = 'service' AND e.predicate IN ({DEPLOYING})"),
        ),
    ));

    // Deployment attempts that failed: not deployments (they delivered nothing), shown apart.
    v.push((
        "deployment_failures",
        format!(
            "SELECT e.time, e.service, e.environment, {prod} AS production, e.origin, e.outcome,
                    e.artifact_id, e.url, coalesce(e.team, t.team) AS team, e.event_source, e.event_id, e.date,
                    e.repository
             FROM report_events e LEFT JOIN teams t ON t.key = e.service
             WHERE {DEPLOYMENT_FAILED}",
            prod = is_prod("e.environment"),
        ),
    ));

    // Each incident's facts from its own events, kept whole as a projection, and the incident
    // with its team and recovery time.
    v.push((
        "incident_facts",
        incident_facts_sql("report_events", production, false),
    ));
    v.push((
        "incidents",
        format!(
            "SELECT i.incident_id, i.service, i.environment, i.production, i.detected_at, i.resolved_at,
                    {recovery} AS recovery_seconds,
                    coalesce(i.event_team, t.team) AS team, i.events,
                    i.origin, i.acknowledged_at, i.canceled, i.repository
             FROM incident_facts i
             LEFT JOIN teams t ON t.key = i.service",
            recovery = secs("i.resolved_at", "i.detected_at"),
        ),
    ));

    // A run is identified by where it ran (origin, repository), its id and its attempt (a
    // GitHub re-run keeps the run id): each attempt is a row, its outcome that of its last
    // `finished` event (by time, then event id, so arrival order does not matter). `run_key`
    // writes the identity as one value, to join task runs and traces with.
    v.push(("pipeline_runs", pipeline_runs_sql("run_events", false)));
    v.push(("task_runs", task_runs_sql("run_events", false)));

    // Each production deployment (not a rollback) with the repository and merge time of each
    // merged change its artifact links to: the frontiers of trunk order. A view of its own,
    // held, because `dora_change_deliveries` reads it three times.
    v.push((
        "deployment_frontiers",
        "SELECT service, time, repository, merged_at AS frontier, artifact_id
         FROM production_links
         WHERE predicate <> 'rolledback' AND merged_at IS NOT NULL AND repository IS NOT NULL"
            .to_string(),
    ));

    // Production deployments in order per service (`seq`), each with the next one's time and
    // action: what `dora_deployments` pairs signals and incidents with. A view of its own,
    // held, because `dora_deployments` reads it five times. Over a window, those from its
    // start on.
    let deployed = |e: &str| match window {
        None => "true".to_string(),
        Some(w) => format!("CAST({e}time AS BIGINT) >= {}", w.from),
    };
    v.push((
        "production_deployments",
        format!(
            "SELECT time, service, environment, action, artifact_id, repository, change_id, team,
                    event_source, event_id, date,
                    CAST(row_number() OVER (PARTITION BY service ORDER BY time, event_source, event_id) AS BIGINT) AS seq,
                    lead(time) OVER (PARTITION BY service ORDER BY time, event_source, event_id) AS next_time,
                    lead(action) OVER (PARTITION BY service ORDER BY time, event_source, event_id) AS next_action
             FROM ({rows})",
            rows = deployment_rows(
                "production_events",
                // The change of each artifact these deployments deployed: the least of its
                // links, which `production_links` has for each of these deployments (sorted by
                // time, so a window's are read alone).
                &format!(
                    "(SELECT artifact_id, min(change_id) AS change_id FROM production_links
                      WHERE {} GROUP BY artifact_id)",
                    deployed("")
                ),
                // A change's repository as `change_facts` has it: that of those links.
                &format!(
                    "(SELECT DISTINCT change_id, repository FROM production_links
                      WHERE known AND {})",
                    deployed("")
                ),
                "CAST(NULL AS VARCHAR)",
                &deployed("e."),
            ),
        ),
    ));

    // Over a window: each repository and service deploying from it, with that service's
    // greatest frontier before the window (`before`) and before its end (`until`), and the
    // least `before` of the repository's services (NULL unless each has one).
    if let Some(w) = window {
        v.push((
            "delivery_pairs",
            format!(
                "SELECT repository, service, before, until,
                        CASE WHEN bool_and(before IS NOT NULL) OVER (PARTITION BY repository)
                             THEN min(before) OVER (PARTITION BY repository) END AS least_before
                 FROM (SELECT repository, service,
                              max(CASE WHEN CAST(time AS BIGINT) < {from} THEN frontier END) AS before,
                              max(CASE WHEN CAST(time AS BIGINT) < {to} THEN frontier END) AS until
                       FROM deployment_frontiers GROUP BY repository, service)",
                from = w.from,
                to = w.to,
            ),
        ));
        // Each merged change with each service that deploys from its repository and may
        // deliver it (as `dora_change_deliveries` scopes them), with that pair's `before` and
        // `until`. Only the changes merged after their repository's `least_before` (and so after
        // [`delivered_before`], which a scan prunes by): every earlier one was delivered
        // before the window by every service that may deliver it, so none is delivered in it.
        v.push((
            "delivery_reach",
            format!(
                "WITH pairs AS (SELECT * FROM delivery_pairs)
                 {reach}
                   AND (p.least_before IS NULL OR c.merged_at > p.least_before)
                   AND CAST(c.merged_at AS BIGINT) > coalesce({bound}, {MIN})",
                reach = delivery_reach(", p.before, p.until"),
                bound = delivered_before(),
                MIN = i64::MIN,
            ),
        ));
    }

    // Delivery of each merged change per service, by trunk order: by the production
    // deployments (not rollbacks) of `dora_deployments`, read from `production_events`
    // (through `deployment_frontiers`) so that `dora_deployments` can fail a deployment by what
    // it delivered; to the services that may deliver it ([`delivery_reach`]).
    v.push((
        "dora_change_deliveries",
        format!(
            "WITH dep AS (SELECT f.service, f.time, f.repository, f.frontier FROM deployment_frontiers{dep_where}),
             {reach}
             stream AS (
               SELECT repository, service, change_id, merged_at AS k, 1 AS kind,
                      CASE WHEN false THEN merged_at END AS time, started_at, merged_at, team,
                      started_from
               FROM {reached}
               UNION ALL
               SELECT repository, service, CAST(NULL AS VARCHAR), frontier, 0, time,
                      CASE WHEN false THEN time END, CASE WHEN false THEN time END, CAST(NULL AS VARCHAR),
                      CAST(NULL AS VARCHAR)
               FROM dep),
             swept AS (
               SELECT change_id, repository, service, started_at, merged_at, team, kind, started_from,
                      min(time) OVER (PARTITION BY repository, service ORDER BY k DESC, kind
                                      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS delivered_at
               FROM stream)
             SELECT s.change_id, s.repository, s.service, s.started_at, s.merged_at, s.delivered_at,
                    greatest({lead}, 0.0) AS lead_time_seconds,
                    coalesce(s.team, ts.team, tr.team) AS team, s.started_from
             FROM swept s
             LEFT JOIN teams ts ON ts.key = s.service
             LEFT JOIN teams tr ON tr.key = s.repository
             WHERE s.kind = 1 AND s.delivered_at IS NOT NULL",
            lead = secs("s.delivered_at", "s.started_at"),
            // Over a window, those before its end, but for the frontiers no later than their
            // repository's `least_before`: every change they deliver was merged no later, and
            // `delivery_reach` holds none of those.
            dep_where = match window {
                None => " f".to_string(),
                Some(w) => format!(
                    " f JOIN delivery_pairs p ON p.repository = f.repository AND p.service = f.service
                      WHERE CAST(f.time AS BIGINT) < {}
                        AND (p.least_before IS NULL OR f.frontier > p.least_before)",
                    w.to
                ),
            },
            reach = match window {
                None => format!(
                    "pairs AS (SELECT DISTINCT repository, service FROM dep),
             reach AS ({}),",
                    delivery_reach("")
                ),
                Some(_) => String::new(),
            },
            // Over a window, the changes delivered in it, with each service that delivers them
            // before its end.
            reached = match window {
                None => "reach",
                Some(_) => {
                    "delivery_reach WHERE merged_at <= until AND change_id IN (
                   SELECT change_id FROM delivery_reach
                   WHERE merged_at <= until AND (before IS NULL OR merged_at > before))"
                }
            },
        ),
    ));

    // The signals of production incidents of a service that were not canceled: each
    // `detected` or `reported` event, which `dora_deployments` pairs with deployments. A view
    // of its own, held, because `dora_deployments` reads it five times. Over a window, those
    // from its start on.
    v.push((
        "incident_signals",
        format!(
            "SELECT service, time, artifact_id, subject_id, event_source, event_id, origin
             FROM report_events
             WHERE subject = 'incident' AND predicate IN ('detected', 'reported')
               AND service IS NOT NULL AND regexp_like(environment, '{pat}'){from}
               AND subject_id NOT IN (SELECT incident_id FROM incidents WHERE canceled)",
            from = match window {
                None => String::new(),
                Some(w) => format!(" AND CAST(time AS BIGINT) >= {}", w.from),
            },
        ),
    ));

    // Over a window: each service and artifact a signal of the window names that the service
    // deployed to production before the window, with its first such time (a signal linked to
    // one of those deployments fails none of the window's). A view of its own, held, because
    // `dora_deployments` reads it twice, and it reads every production deployment before the
    // window.
    if let Some(w) = window {
        v.push((
            "prior_signal_deployments",
            format!(
                "SELECT service, artifact_id, min(time) AS time FROM production_events
                 WHERE CAST(time AS BIGINT) < {}
                   AND artifact_id IN (SELECT artifact_id FROM incident_signals)
                 GROUP BY service, artifact_id",
                w.from
            ),
        ));
    }

    // Production deployments, with failure (incident signal owned by the deployment, or the
    // next deployment is a rollback) and rework (an incident of the service open at the time).
    // A signal naming an artifact is `linked` to the latest deployment of that artifact at or
    // before it: the largest `seq` among them, a service's deployments being numbered in time
    // order. A signal is one event, so its columns group as its identity does.
    v.push((
        "dora_deployments",
        format!(
            "WITH d AS (
               SELECT time, service, environment, action, artifact_id, repository, change_id, team,
                      event_source, event_id, date, seq, next_time, next_action
               FROM production_deployments),
             all_signals AS (
               SELECT service, time, artifact_id, subject_id, event_source, event_id, origin
               FROM incident_signals),
             linked AS (
               SELECT s.service, max(d.seq) AS seq, s.subject_id, s.event_source, s.event_id, s.origin
               FROM all_signals s
               JOIN {links} d ON d.service = s.service AND d.artifact_id = s.artifact_id AND d.time <= s.time
               GROUP BY s.event_source, s.event_id, s.service, s.subject_id, s.origin),
             signals AS (
               SELECT service, time, subject_id, origin FROM all_signals s
               WHERE NOT EXISTS (SELECT 1 FROM linked l
                                 WHERE l.event_source = s.event_source AND l.event_id = s.event_id)),
             owners AS (
               SELECT service, kind, subject_id, origin,
                      max(seq) OVER (PARTITION BY service ORDER BY time, kind
                                     ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS owner
               FROM (SELECT service, time, 0 AS kind, seq, CAST(NULL AS VARCHAR) AS subject_id,
                            CAST(NULL AS VARCHAR) AS origin FROM d
                     UNION ALL
                     SELECT service, time, 1 AS kind, CAST(NULL AS BIGINT) AS seq, subject_id, origin
                     FROM signals) m),
             failed AS (
               SELECT service, seq, {incidents} AS incidents,
                      {origins} AS origins FROM (
                 {failed}
                 UNION ALL
                 SELECT service, seq, subject_id, origin FROM linked)
               GROUP BY service, seq),
             open_incidents AS (
               SELECT service, detected_at, resolved_at FROM incidents
               WHERE production AND NOT canceled AND service IS NOT NULL AND detected_at IS NOT NULL
                 AND (resolved_at IS NULL OR resolved_at > detected_at)),
             sweep AS (
               SELECT service, kind, seq,
                      sum(delta) OVER (PARTITION BY service ORDER BY time, kind
                                       ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS open_count
               FROM (SELECT service, detected_at AS time, 0 AS kind, 1 AS delta, CAST(NULL AS BIGINT) AS seq FROM open_incidents
                     UNION ALL
                     SELECT service, resolved_at AS time, 1 AS kind, -1 AS delta, CAST(NULL AS BIGINT) AS seq
                     FROM open_incidents WHERE resolved_at IS NOT NULL
                     UNION ALL
                     SELECT service, time, 2 AS kind, 0 AS delta, seq FROM d) s),
             {delivered}
             res AS (
               SELECT d.time, d.service, d.environment, d.action, d.artifact_id, d.repository, d.change_id,
                      d.team, d.next_time, d.next_action,
                      (({incident_failure}) OR ({rollback_failure}) OR ({revert_failure})) AS failed,
                      nullif(concat_ws(',', CASE WHEN {incident_failure} THEN f.origins END,
                                       CASE WHEN {rollback_failure} THEN 'rollback' END,
                                       CASE WHEN {revert_failure} THEN 'revert' END), '') AS failed_by,
                      coalesce(f.incidents, 0) AS incidents,
                      coalesce(w.open_count > 0, false) AS incident_open,
                      d.event_source, d.event_id, d.date, d.seq,
                      {reverted} AS reverted, {delivers_revert} AS delivers_revert,
                      {delivers_hotfix} AS delivers_hotfix
               FROM d
               LEFT JOIN failed f ON f.service = d.service AND f.seq = d.seq
               JOIN sweep w ON w.kind = 2 AND w.service = d.service AND w.seq = d.seq
               {delivered_join}),
             ranked AS (
               SELECT time, service, environment, action, artifact_id, repository, change_id, team,
                      next_time, next_action, failed, incidents, incident_open, event_source, event_id, date,
                      reverted, delivers_revert, delivers_hotfix, failed_by,
                      coalesce(lag(failed) OVER (PARTITION BY service ORDER BY seq), false) AS after_failed,
                      lag(time) OVER (PARTITION BY service ORDER BY seq) AS prev_time
               FROM res)
             SELECT time, service, environment, action, artifact_id, repository, change_id, team,
                    next_time, next_action, failed, incidents,
                    ({incident_rule}) OR ({after_rule}) OR ({revert_rule}) OR ({hotfix_rule}) AS rework,
                    event_source, event_id, date,
                    CASE WHEN {incident_rule} THEN 'incident_open'
                         WHEN {after_rule} THEN 'after_failure'
                         WHEN {revert_rule} THEN 'revert'
                         WHEN {hotfix_rule} THEN 'hotfix' END AS rework_rule,
                    reverted, failed_by
             FROM ranked",
            // Over a window, a signal is linked also by a deployment of its artifact before it
            // (which then fails none of the window's): whether one is at or before the signal,
            // so the first of each service and artifact.
            links = match window {
                None => "d",
                Some(_) => {
                    "(SELECT service, artifact_id, time, seq FROM d
                 UNION ALL
                 SELECT service, artifact_id, time, CAST(NULL AS BIGINT) FROM prior_signal_deployments)"
                }
            },
            delivered = if by_delivery {
                "delivered AS (
               SELECT d.service, d.seq,
                      bool_or(c.revert) AS delivers_revert,
                      bool_or(c.hotfix) AS delivers_hotfix
               FROM dora_change_deliveries cd
               JOIN changes c ON c.change_id = cd.change_id
               JOIN d ON d.service = cd.service AND d.time = cd.delivered_at
               WHERE c.revert OR c.hotfix
               GROUP BY d.service, d.seq),
             reverted AS (
               SELECT DISTINCT d.service, d.seq
               FROM changes r
               JOIN dora_change_deliveries cd ON cd.change_id = r.reverts
               JOIN d ON d.service = cd.service AND d.time = cd.delivered_at
               WHERE r.merged_at > cd.delivered_at),"
            } else {
                ""
            },
            delivered_join = if by_delivery {
                "LEFT JOIN delivered dv ON dv.service = d.service AND dv.seq = d.seq
               LEFT JOIN reverted rv ON rv.service = d.service AND rv.seq = d.seq"
            } else {
                ""
            },
            reverted = if options.failure_revert { "rv.seq IS NOT NULL" } else { "CAST(NULL AS BOOLEAN)" },
            delivers_revert = if by_delivery { "coalesce(dv.delivers_revert, false)" } else { "false" },
            delivers_hotfix = if by_delivery { "coalesce(dv.delivers_hotfix, false)" } else { "false" },
            incident_failure = if options.failure_incident { "f.seq IS NOT NULL" } else { "false" },
            origins = DISTINCT_ORIGINS,
            incidents = DISTINCT_INCIDENTS,
            rollback_failure = if options.failure_rollback {
                "coalesce(d.next_action = 'rolledback', false)"
            } else {
                "false"
            },
            revert_failure = if options.failure_revert { "rv.seq IS NOT NULL" } else { "false" },
            revert_rule = if options.rework_revert { "delivers_revert" } else { "false" },
            hotfix_rule = if options.rework_hotfix { "delivers_hotfix" } else { "false" },
            incident_rule = if options.rework_incident_open {
                "incident_open"
            } else {
                "false"
            },
            after_rule = match (options.rework_after_failure, failure_window) {
                (false, _) => "false".to_string(),
                (true, None) => "after_failed".to_string(),
                (true, Some(w)) => format!(
                    "after_failed AND CAST(time AS BIGINT) - CAST(prev_time AS BIGINT) < {w}"
                ),
            },
            failed = match failure_window {
                None => "SELECT service, owner AS seq, subject_id, origin FROM owners
               WHERE kind = 1 AND owner IS NOT NULL"
                    .to_string(),
                Some(w) => format!(
                    "SELECT d.service, d.seq, s.subject_id, s.origin
               FROM d JOIN signals s ON s.service = d.service
                AND CAST(s.time AS BIGINT) >= CAST(d.time AS BIGINT)
                AND CAST(s.time AS BIGINT) < CAST(d.time AS BIGINT) + {w}"
                ),
            },
        ),
    ));

    // Each merged change with its earliest delivery (the first service by name among those
    // delivering it at that instant): two grouped passes and a join, not a sort of every
    // delivery by change.
    v.push((
        "dora_changes",
        format!(
            "SELECT c.change_id, c.repository, c.created_at, c.merged_at, c.started_at, d.delivered_at,
                    d.service AS delivered_by,
                    CASE WHEN d.delivered_at IS NOT NULL THEN greatest({lead}, 0.0) END AS lead_time_seconds, c.team,
                    c.started_from
             FROM changes c
             LEFT JOIN (SELECT e.change_id, e.delivered_at, min(cd.service) AS service
                        FROM (SELECT change_id, min(delivered_at) AS delivered_at
                              FROM dora_change_deliveries GROUP BY change_id) e
                        JOIN dora_change_deliveries cd
                          ON cd.change_id = e.change_id AND cd.delivered_at = e.delivered_at
                        GROUP BY e.change_id, e.delivered_at) d
               ON d.change_id = c.change_id
             WHERE c.merged_at IS NOT NULL",
            lead = secs("d.delivered_at", "c.started_at"),
        ),
    ));

    // Each pipeline run with its trace: by trace id (the W3C `traceparent` of the run's
    // CloudEvents, or the OpenTelemetry Collector's deterministic id for GitHub Actions, which
    // the GitHub normaliser sets), else by the spans' `cicd.pipeline.run.id`.
    v.push((
        "pipeline_traces",
        format!(
            "WITH t AS (
               SELECT trace_id, min(start) AS trace_start, max(\"end\") AS trace_end,
                      count(*) AS spans, max(cicd_pipeline_run_id) AS pipeline_run_id,
                      sum(CASE WHEN name LIKE 'queue-%' THEN {span_secs} ELSE 0.0 END) AS task_queue_seconds,
                      count(CASE WHEN status = 'error' THEN 1 END) AS error_spans
               FROM spans GROUP BY trace_id),
             by_trace AS (
               SELECT r.run_key, t.trace_id, 'trace_id' AS joined_by
               FROM pipeline_runs r JOIN t ON t.trace_id = r.trace_id),
             by_run AS (
               SELECT run_key, trace_id, 'cicd.pipeline.run.id' AS joined_by FROM (
                 SELECT r.run_key, t.trace_id,
                        row_number() OVER (PARTITION BY t.trace_id
                                           ORDER BY CASE WHEN r.begun <= t.begun THEN 0 ELSE 1 END,
                                                    CASE WHEN r.begun <= t.begun THEN r.begun END DESC,
                                                    r.begun, r.run_key) AS pick
                 FROM (SELECT run_key, run_id, CAST(coalesce(started_at, queued_at, finished_at) AS BIGINT) AS begun
                       FROM pipeline_runs) r
                 JOIN (SELECT trace_id, pipeline_run_id,
                              CAST(trace_start AS BIGINT) + {slack} AS begun FROM t) t
                   ON t.pipeline_run_id = r.run_id
                 WHERE r.run_key NOT IN (SELECT run_key FROM by_trace)
                   AND t.trace_id NOT IN (SELECT trace_id FROM by_trace))
               WHERE pick = 1),
             links AS (SELECT * FROM by_trace UNION ALL SELECT * FROM by_run)
             SELECT r.run_id, r.pipeline, r.queued_at, r.started_at, r.finished_at, r.outcome,
                    r.duration_seconds, r.queue_seconds, l.trace_id, l.joined_by,
                    t.trace_start, t.trace_end, {trace_secs} AS trace_seconds, t.spans,
                    t.task_queue_seconds, t.error_spans, r.artifact_id,
                    r.origin, r.repository, r.attempt, r.run_key
             FROM links l
             JOIN pipeline_runs r ON r.run_key = l.run_key
             JOIN t ON t.trace_id = l.trace_id",
            span_secs = secs("\"end\"", "start"),
            trace_secs = secs("t.trace_end", "t.trace_start"),
            slack = TRACE_SLACK_MICROS,
        ),
    ));

    // The critical path of each trace: from the root span, repeatedly the child that ends
    // last; its spans are what the run's duration waits on. `queued` marks queue spans (the
    // OpenTelemetry Collector names them `queue-<job>`).
    v.push((
        "pipeline_critical_path",
        format!(
            "WITH RECURSIVE last_child AS (
               SELECT trace_id, parent_span_id, span_id, name, start, \"end\" FROM (
                 SELECT trace_id, parent_span_id, span_id, name, start, \"end\",
                        row_number() OVER (PARTITION BY trace_id, parent_span_id
                                           ORDER BY \"end\" DESC, start DESC, span_id) AS r
                 FROM spans WHERE parent_span_id IS NOT NULL) c
               WHERE r = 1),
             path AS (
               SELECT trace_id, span_id, name, start, \"end\", 0 AS depth
               FROM spans WHERE parent_span_id IS NULL
               UNION ALL
               SELECT c.trace_id, c.span_id, c.name, c.start, c.\"end\", p.depth + 1
               FROM path p JOIN last_child c ON c.trace_id = p.trace_id AND c.parent_span_id = p.span_id
               WHERE p.depth < 64)
             SELECT pt.run_id, p.trace_id, p.depth, p.span_id, p.name, p.start, p.\"end\",
                    {span_secs} AS duration_seconds, p.name LIKE 'queue-%' AS queued
             FROM path p LEFT JOIN pipeline_traces pt ON pt.trace_id = p.trace_id",
            span_secs = secs("p.\"end\"", "p.start"),
        ),
    ));

    // Where each delivered change's lead time went: review (start → merge), build (merge →
    // artifact), wait (artifact → delivery), and the pipeline time of the runs that built its
    // merge commit (traced time where a trace joins, else the run's own duration).
    v.push((
        "lead_time_breakdown",
        format!(
            "WITH built AS (
               SELECT l.change_id, min(coalesce(a.packaged_at, a.published_at)) AS artifact_at
               FROM artifact_changes l JOIN artifacts a ON a.artifact_id = l.artifact_id
               GROUP BY l.change_id),
             runs AS (
               SELECT l.change_id,
                      min(CASE WHEN r.outcome = 'success' THEN r.finished_at END) AS first_green_at,
                      sum(coalesce(pt.trace_seconds, r.duration_seconds)) AS pipeline_seconds,
                      count(*) AS pipeline_runs
               FROM artifact_changes l
               JOIN pipeline_runs r ON r.artifact_id = l.artifact_id
               LEFT JOIN pipeline_traces pt ON pt.run_key = r.run_key
               GROUP BY l.change_id),
             c AS (
               SELECT c.change_id, c.repository, c.delivered_by AS service, c.started_at,
                      c.merged_at, coalesce(b.artifact_at, r.first_green_at) AS artifact_at,
                      c.delivered_at, c.lead_time_seconds, r.pipeline_seconds, r.pipeline_runs,
                      c.team
               FROM dora_changes c
               LEFT JOIN built b ON b.change_id = c.change_id
               LEFT JOIN runs r ON r.change_id = c.change_id
               WHERE c.delivered_at IS NOT NULL)
             SELECT change_id, repository, service, started_at, merged_at, artifact_at,
                    delivered_at, lead_time_seconds,
                    greatest({review}, 0.0) AS review_seconds,
                    CASE WHEN artifact_at IS NOT NULL THEN greatest({build}, 0.0) END AS build_seconds,
                    greatest({wait}, 0.0) AS wait_seconds,
                    pipeline_seconds, coalesce(pipeline_runs, 0) AS pipeline_runs, team
             FROM c",
            review = secs("merged_at", "started_at"),
            build = secs("artifact_at", "merged_at"),
            wait = secs("delivered_at", "coalesce(artifact_at, merged_at)"),
        ),
    ));

    v.push((
        "dora_incidents",
        "SELECT incident_id, service, environment, team, detected_at, resolved_at,
                CASE WHEN recovery_seconds >= 0 THEN recovery_seconds END AS recovery_seconds,
                repository
         FROM incidents WHERE production AND NOT canceled"
            .to_string(),
    ));

    v
}

/// The names of every view, for catalogs and documentation.
pub fn names() -> Vec<&'static str> {
    definitions(cdlake_schemas::DEFAULT_PRODUCTION_PATTERN)
        .into_iter()
        .map(|(n, _)| n)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reached(names: &[&str]) -> Vec<&'static str> {
        let definitions = definitions(cdlake_schemas::DEFAULT_PRODUCTION_PATTERN);
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut r = reachable(&definitions, &names);
        r.sort_unstable();
        r
    }

    #[test]
    fn a_statement_reaches_the_views_its_views_read() {
        assert_eq!(
            reached(&["dora_changes"]),
            [
                "artifact_changes",
                "artifact_facts",
                "change_facts",
                "change_pushes",
                "change_reverts",
                "change_services",
                "changes",
                "deployment_frontiers",
                "dora_change_deliveries",
                "dora_changes",
                "production_events",
                "production_links",
                "report_events",
                "reverted_artifacts",
            ]
        );
        assert_eq!(
            reached(&["incidents"]),
            ["incident_facts", "incidents", "report_events"]
        );
        // Tables and unknown names reach nothing.
        assert!(reached(&["events", "spans", "nothing"]).is_empty());
    }

    #[test]
    fn the_readers_of_a_view_are_the_views_that_reach_it() {
        let definitions = definitions(cdlake_schemas::DEFAULT_PRODUCTION_PATTERN);
        for (name, _) in &definitions {
            let reaching: Vec<&str> = definitions
                .iter()
                .map(|(v, _)| *v)
                .filter(|v| reachable(&definitions, &[v.to_string()]).contains(name))
                .collect();
            assert_eq!(readers_of(&definitions, &[name]), reaching, "{name}");
        }
    }

    #[test]
    fn a_view_name_inside_another_name_is_not_a_reference() {
        assert!(names_word("FROM changes c", "changes"));
        assert!(names_word("(changes)", "changes"));
        assert!(!names_word("FROM dora_changes", "changes"));
        assert!(!names_word("FROM changes_2", "changes"));
    }
}
