//! The DORA report: the five figures of DESIGN.md for a window `[from, to)`, overall and per
//! group, with the level of each and what the figures rest on.
//!
//! The pairing work (which deployment failed, which deployment delivered which change, how long
//! an incident lasted) is done by the `dora_*` views; this module selects the rows of the
//! window, groups them, and computes counts, rates, medians and p90s. Percentiles interpolate
//! linearly between the two nearest ranks (`percentile_cont`), so the median of an even count
//! is the mean of the two middle values. The levels are the table of [`levels`], the one the
//! `dora_levels` view and the dashboards read.

use std::collections::{BTreeMap, BTreeSet};

use arrow::array::{Array, BooleanArray, Int64Array, RecordBatch, StringArray};
use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};

use crate::{Engine, Error, Result};

pub mod html;
pub mod render;

pub use cdlake_wire::dora::levels::{self, Metric, level_of};
pub use cdlake_wire::dora::{
    ChangeFailureRate, DeploymentFrequency, DoraReport, Figures, Group, GroupBy, LeadTime, Level,
    RecoveryTime, ReworkRate, UnknownGrouping, Unlinked, Window,
};

impl From<UnknownGrouping> for Error {
    fn from(e: UnknownGrouping) -> Self {
        Error::BadRequest(e.to_string())
    }
}

impl From<levels::UnknownBenchmark> for Error {
    fn from(e: levels::UnknownBenchmark) -> Self {
        Error::BadRequest(e.to_string())
    }
}

/// A report request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoraRequest {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub by: Option<GroupBy>,
    /// A second key (`--by service,week`): each group is a value of both.
    pub then_by: Option<GroupBy>,
}

/// `service`, `week`, `service,week`: one grouping key or two, as `--by` and `by=` take them.
pub fn parse_by(text: &str) -> Result<(Option<GroupBy>, Option<GroupBy>)> {
    let keys = text
        .split(',')
        .map(|k| k.trim().parse::<GroupBy>())
        .collect::<std::result::Result<Vec<_>, _>>()?;
    match keys.as_slice() {
        [a] => Ok((Some(*a), None)),
        [a, b] => Ok((Some(*a), Some(*b))),
        _ => Err(Error::BadRequest(format!(
            "grouping {text:?} names {} keys: name one or two, such as service or service,week",
            keys.len()
        ))),
    }
}

impl DoraRequest {
    /// The grouping keys, in order (none: overall only).
    pub fn keys(&self) -> Vec<GroupBy> {
        self.by.into_iter().chain(self.then_by).collect()
    }
}

// ---- figures ------------------------------------------------------------------------------

const DAY: f64 = 86_400.0;

/// The `p` quantile (0..=1) of `values`, interpolating linearly between closest ranks.
pub fn percentile(values: &mut [f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = p.clamp(0.0, 1.0) * (values.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    if lo == hi {
        return Some(values[lo]);
    }
    Some(values[lo] + (values[hi] - values[lo]) * (rank - lo as f64))
}

// ---- the rows the figures are computed from -------------------------------------------------

#[derive(Debug, Clone)]
struct Deployment {
    time: i64,
    service: String,
    team: Option<String>,
    repository: Option<String>,
    failed: bool,
    rework: bool,
    rework_rule: Option<String>,
    rollback: bool,
    /// Failed by the revert rule.
    reverted: bool,
    /// What failed it: the origins of the incidents that did, `rollback`, `revert`.
    failed_by: Vec<String>,
}

/// A production deployment attempt that failed (not a deployment).
#[derive(Debug, Clone)]
struct FailedAttempt {
    time: i64,
    service: Option<String>,
    team: Option<String>,
    repository: Option<String>,
}

#[derive(Debug, Clone)]
struct Delivery {
    change_id: String,
    service: String,
    team: Option<String>,
    repository: Option<String>,
    started: i64,
    delivered: i64,
    /// Where its lead time started (`created`, `merged`).
    started_from: Option<String>,
}

#[derive(Debug, Clone)]
struct Incident {
    service: Option<String>,
    team: Option<String>,
    repository: Option<String>,
    detected: Option<i64>,
    resolved: Option<i64>,
}

impl Deployment {
    fn keys(&self) -> Keys<'_> {
        Keys::new(
            Some(&self.service),
            self.team.as_deref(),
            self.repository.as_deref(),
        )
    }
}

impl FailedAttempt {
    fn keys(&self) -> Keys<'_> {
        Keys::new(
            self.service.as_deref(),
            self.team.as_deref(),
            self.repository.as_deref(),
        )
    }
}

impl Delivery {
    fn keys(&self) -> Keys<'_> {
        Keys::new(
            Some(&self.service),
            self.team.as_deref(),
            self.repository.as_deref(),
        )
    }
}

impl Incident {
    fn keys(&self) -> Keys<'_> {
        Keys::new(
            self.service.as_deref(),
            self.team.as_deref(),
            self.repository.as_deref(),
        )
    }
}

/// Separates the values of a grouping of two keys in a group's key.
const KEY_SEP: char = '\u{1f}';

const NO_TEAM: &str = "unassigned";

fn week_of(micros: i64) -> String {
    let d = micros_to_date(micros);
    let w = d.iso_week();
    format!("{}-W{:02}", w.year(), w.week())
}

fn micros_to_date(micros: i64) -> NaiveDate {
    DateTime::from_timestamp_micros(micros)
        .unwrap_or_default()
        .date_naive()
}

/// What a row is grouped by.
#[derive(Clone, Copy)]
struct Keys<'a> {
    service: Option<&'a str>,
    team: Option<&'a str>,
    repository: Option<&'a str>,
}

impl<'a> Keys<'a> {
    fn new(service: Option<&'a str>, team: Option<&'a str>, repository: Option<&'a str>) -> Self {
        Self {
            service,
            team,
            repository,
        }
    }
}

/// The group of a row under `keys` (their values joined by [`KEY_SEP`]; `""` with no key,
/// overall); `None` when the row has no value for one (a service-less incident by service, a
/// deployment of no known repository by repository).
fn key_of(keys: &[GroupBy], row: Keys<'_>, time: i64) -> Option<String> {
    let mut parts = Vec::with_capacity(keys.len());
    for key in keys {
        parts.push(match key {
            GroupBy::Service => row.service?.to_string(),
            GroupBy::Team => row.team.unwrap_or(NO_TEAM).to_string(),
            GroupBy::Repository => row.repository?.to_string(),
            GroupBy::Week => week_of(time),
            // Environments are whole reports of their own ([`by_environment`]).
            GroupBy::Environment => return None,
        });
    }
    Some(parts.join(&KEY_SEP.to_string()))
}

struct Window2 {
    from: i64,
    to: i64,
}

impl Window2 {
    fn contains(&self, t: i64) -> bool {
        self.from <= t && t < self.to
    }
    fn days(&self) -> f64 {
        (self.to - self.from) as f64 / 1e6 / DAY
    }
    /// The ISO weeks the window overlaps.
    fn weeks(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut t = self.from;
        while t < self.to {
            out.push(week_of(t));
            t += 86_400_000_000;
        }
        if self.to > self.from {
            out.push(week_of(self.to - 1));
        }
        out.dedup();
        out
    }

    /// Days of the window within the ISO week labelled `week` (for per-week rates).
    fn days_in_week(&self, week: &str) -> f64 {
        let parsed = week
            .split_once("-W")
            .and_then(|(y, w)| Some((y.parse::<i32>().ok()?, w.parse::<u32>().ok()?)))
            .and_then(|(y, w)| NaiveDate::from_isoywd_opt(y, w, chrono::Weekday::Mon));
        let Some(monday) = parsed else {
            return self.days();
        };
        let start = Utc
            .from_utc_datetime(&monday.and_hms_opt(0, 0, 0).unwrap_or_default())
            .timestamp_micros();
        let end = start + 7 * 86_400_000_000;
        ((end.min(self.to) - start.max(self.from)).max(0)) as f64 / 1e6 / DAY
    }
}

/// What one group's figures are computed from.
struct GroupInput<'a> {
    deps: &'a [&'a Deployment],
    leads: Vec<f64>,
    fell_back: u64,
    recoveries: Vec<f64>,
    open: u64,
    failed_attempts: u64,
    /// The group's days in the window.
    days: f64,
}

fn figures(input: GroupInput<'_>, bands: levels::Benchmark) -> Figures {
    let GroupInput {
        deps,
        mut leads,
        fell_back,
        mut recoveries,
        open,
        failed_attempts,
        days,
    } = input;
    let n = deps.len() as u64;
    let deploy_days = deps
        .iter()
        .map(|d| micros_to_date(d.time))
        .collect::<BTreeSet<_>>()
        .len() as u64;
    let per_day = if days > 0.0 { n as f64 / days } else { 0.0 };
    let failed = deps.iter().filter(|d| d.failed).count() as u64;
    let rework = deps.iter().filter(|d| d.rework).count() as u64;
    let rate = |k: u64| (n > 0).then(|| k as f64 / n as f64);
    let lead_median = percentile(&mut leads, 0.5);
    let rec_median = percentile(&mut recoveries, 0.5);
    Figures {
        deployment_frequency: DeploymentFrequency {
            deployments: n,
            deploy_days,
            per_day,
            // The window always has days: no deployments in it is a frequency of 0, "low"
            // (DESIGN: "else low"), not a figure without input.
            level: (days > 0.0)
                .then(|| bands.level_of(Metric::DeploymentFrequency, per_day))
                .flatten(),
        },
        lead_time: LeadTime {
            changes: leads.len() as u64,
            median_seconds: lead_median,
            p90_seconds: percentile(&mut leads, 0.9),
            level: lead_median.and_then(|m| bands.level_of(Metric::LeadTime, m)),
            fell_back,
        },
        change_failure_rate: ChangeFailureRate {
            deployments: n,
            failed,
            rate: rate(failed),
            level: rate(failed).and_then(|r| bands.level_of(Metric::ChangeFailureRate, r)),
            rollbacks: deps.iter().filter(|d| d.rollback).count() as u64,
            reverted: deps.iter().filter(|d| d.reverted).count() as u64,
            by_source: deps
                .iter()
                .filter(|d| d.failed)
                .flat_map(|d| &d.failed_by)
                .fold(BTreeMap::new(), |mut m, source| {
                    *m.entry(source.clone()).or_default() += 1;
                    m
                }),
            failed_deployments: failed_attempts,
        },
        recovery_time: RecoveryTime {
            incidents: recoveries.len() as u64,
            median_seconds: rec_median,
            p90_seconds: percentile(&mut recoveries, 0.9),
            open,
            level: rec_median.and_then(|m| bands.level_of(Metric::RecoveryTime, m)),
        },
        rework_rate: ReworkRate {
            deployments: n,
            rework,
            rate: rate(rework),
            by_rule: deps
                .iter()
                .filter(|d| d.rework)
                .fold(BTreeMap::new(), |mut m, d| {
                    *m.entry(d.rework_rule.clone().unwrap_or_default())
                        .or_default() += 1;
                    m
                }),
        },
    }
}

// ---- reading the views ---------------------------------------------------------------------

fn col<'a, T: 'static>(b: &'a RecordBatch, name: &str) -> Result<&'a T> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| {
            Error::internal(
                "reading the report's rows",
                format!("column {name} missing or of another type"),
            )
        })
}

/// A string column as `Utf8`, whichever string type the engine produced (it reads Parquet
/// strings as `Utf8View`).
fn strings(b: &RecordBatch, name: &str) -> Result<StringArray> {
    let c = b.column_by_name(name).ok_or_else(|| {
        Error::internal(
            "reading the report's rows",
            format!("column {name} missing"),
        )
    })?;
    let c = arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8)?;
    Ok(c.as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .unwrap_or_else(|| StringArray::from(Vec::<&str>::new())))
}

fn opt_str(a: &StringArray, i: usize) -> Option<String> {
    a.is_valid(i).then(|| a.value(i).to_string())
}

fn opt_i64(a: &Int64Array, i: usize) -> Option<i64> {
    a.is_valid(i).then(|| a.value(i))
}

/// The SQL statements a report runs for a request, as [`report`] runs them. The grouping is
/// applied to the rows afterwards, so the statements depend only on the window (and, by
/// repository, find the repository of incidents that name none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportQueries {
    /// Production deployments in the window, with failure and rework.
    pub deployments: String,
    /// Deliveries of changes per service, delivered before the window's end.
    pub deliveries: String,
    /// Production incidents resolved in, open at the end of, or detected in the window.
    pub incidents: String,
    /// Count of the window's deployments whose artifact links to no known merged change.
    pub deployments_unknown_artifact: String,
    /// Count of changes merged before the window's end and not delivered by then.
    pub changes_not_delivered: String,
    /// Production deployment attempts that failed, in the window.
    pub failed_deployments: String,
}

impl ReportQueries {
    /// The statements by name, in the order [`report`] runs them.
    pub fn named(&self) -> Vec<(&'static str, &str)> {
        vec![
            ("deployments", self.deployments.as_str()),
            ("deliveries", self.deliveries.as_str()),
            ("incidents", self.incidents.as_str()),
            (
                "deployments_unknown_artifact",
                self.deployments_unknown_artifact.as_str(),
            ),
            ("changes_not_delivered", self.changes_not_delivered.as_str()),
            ("failed_deployments", self.failed_deployments.as_str()),
        ]
    }
}

/// By repository, an incident that names none is of the repository of the last production
/// deployment of its service at or before its detection (the deployment live when it began):
/// a sweep per service over its deployments of a known repository and its incidents, in time
/// order (a deployment before an incident of the same instant), each incident taking the
/// latest deployment before it. No range join: the cost is a sort of those services'
/// deployments, whatever the number of incidents. `production_deployments` numbers each
/// service's deployments in time order (`seq`, the rows of `dora_deployments`), so the latest
/// known one is the largest `seq` among them.
const INCIDENT_LIVE_REPOSITORY: &str = ",
             known AS (
               SELECT service, time, repository, seq FROM (
                 SELECT e.service, e.time, coalesce(c.repository, e.repository) AS repository,
                        CAST(row_number() OVER (PARTITION BY e.service
                                                ORDER BY e.time, e.event_source, e.event_id) AS BIGINT) AS seq
                 FROM production_events e
                 LEFT JOIN artifact_facts a ON a.artifact_id = e.artifact_id
                 LEFT JOIN change_facts c ON c.change_id = a.change_id
                 WHERE e.service IN (SELECT service FROM i WHERE repository IS NULL))
               WHERE repository IS NOT NULL),
             live AS (
               SELECT m.incident_id, k.repository FROM (
                 SELECT service, kind, incident_id,
                        max(seq) OVER (PARTITION BY service ORDER BY time, kind
                                       ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS owner
                 FROM (SELECT service, time, 0 AS kind, seq, CAST(NULL AS VARCHAR) AS incident_id
                       FROM known
                       UNION ALL
                       SELECT service, detected_at, 1, CAST(NULL AS BIGINT), incident_id FROM i
                       WHERE repository IS NULL AND service IS NOT NULL
                         AND detected_at IS NOT NULL)) m
               JOIN known k ON k.service = m.service AND k.seq = m.owner
               WHERE m.kind = 1)";

/// The SQL statements [`report`] runs for `req` (the views they read are
/// [`crate::views::definitions`]; `windowed`, [`crate::views::definitions_for`] the window).
pub fn report_queries(req: &DoraRequest, windowed: bool) -> ReportQueries {
    let by_repository = req.keys().contains(&GroupBy::Repository);
    let w = Window2 {
        from: req.from.timestamp_micros(),
        to: req.to.timestamp_micros(),
    };
    ReportQueries {
        deployments: format!(
            "SELECT CAST(time AS BIGINT) AS t, service, team, repository, failed, rework, rework_rule, action = 'rolledback' AS rollback,
                    coalesce(reverted, false) AS reverted, failed_by FROM dora_deployments
         WHERE CAST(time AS BIGINT) >= {} AND CAST(time AS BIGINT) < {}",
            w.from, w.to
        ),
        deliveries: format!(
            // A change counts at its earliest delivery (within a group): one with no delivery
            // in the window counts in none, so only the deliveries of changes delivered in the
            // window are read.
            "SELECT change_id, service, team, repository, CAST(started_at AS BIGINT) AS started, CAST(delivered_at AS BIGINT) AS delivered, started_from
         FROM dora_change_deliveries WHERE CAST(delivered_at AS BIGINT) < {to}
           AND change_id IN (SELECT change_id FROM dora_change_deliveries
                             WHERE CAST(delivered_at AS BIGINT) >= {from} AND CAST(delivered_at AS BIGINT) < {to})",
            from = w.from,
            to = w.to
        ),
        incidents: format!(
            "WITH i AS (
               SELECT incident_id, service, team, detected_at, resolved_at, repository FROM dora_incidents
               WHERE (CAST(resolved_at AS BIGINT) >= {from} AND CAST(resolved_at AS BIGINT) < {to})
                  OR (CAST(detected_at AS BIGINT) < {to} AND (resolved_at IS NULL OR CAST(resolved_at AS BIGINT) >= {to}))
                  OR (CAST(detected_at AS BIGINT) >= {from} AND CAST(detected_at AS BIGINT) < {to})){live}
             SELECT i.service, i.team, CAST(i.detected_at AS BIGINT) AS detected,
                    CAST(i.resolved_at AS BIGINT) AS resolved, {repository} AS repository
             FROM i{live_join}",
            from = w.from,
            to = w.to,
            live = if by_repository { INCIDENT_LIVE_REPOSITORY } else { "" },
            repository = if by_repository { "coalesce(i.repository, l.repository)" } else { "i.repository" },
            live_join = if by_repository { " LEFT JOIN live l ON l.incident_id = i.incident_id" } else { "" },
        ),
        deployments_unknown_artifact: if windowed {
            // An artifact that links to a merged change of a repository has frontiers
            // (`deployment_frontiers` holds each production deployment's, this one's too).
            format!(
                "SELECT count(*) FROM dora_deployments
                 WHERE action <> 'rolledback'
                   AND CAST(time AS BIGINT) >= {from} AND CAST(time AS BIGINT) < {to}
                   AND (artifact_id IS NULL
                        OR artifact_id NOT IN (SELECT artifact_id FROM deployment_frontiers))",
                from = w.from,
                to = w.to
            )
        } else {
            format!(
            // Only the window's artifacts are looked up in the links, not every link's change.
            "WITH d AS (SELECT artifact_id FROM dora_deployments
                        WHERE action <> 'rolledback'
                          AND CAST(time AS BIGINT) >= {from} AND CAST(time AS BIGINT) < {to})
             SELECT count(*) FROM d
                 LEFT JOIN (SELECT DISTINCT l.artifact_id
                            FROM (SELECT DISTINCT artifact_id FROM d) x
                            JOIN artifact_changes l ON l.artifact_id = x.artifact_id
                            JOIN changes c ON c.change_id = l.change_id
                            WHERE c.merged_at IS NOT NULL AND c.repository IS NOT NULL) k
                   ON k.artifact_id = d.artifact_id
                 WHERE k.artifact_id IS NULL",
            from = w.from,
            to = w.to
        )
        },
        changes_not_delivered: if windowed {
            // Over the window's views: with no service that deployed a frontier at or after
            // its merge before the window's end. Those of a repository no service deploys
            // from, counted from the facts; and those `delivery_reach` holds with none of its
            // services' `until` at or after their merge. Every other change (of a repository
            // with services, merged before `delivery_reach`'s bound) was delivered before the
            // window ([`crate::views::delivered_before`]).
            format!(
                "SELECT (SELECT count(*) FROM change_facts
                         WHERE CAST(merged_at AS BIGINT) < {to}
                           AND (repository IS NULL
                                OR repository NOT IN (SELECT repository FROM delivery_pairs)))
                      + (SELECT count(*) FROM (
                           SELECT change_id FROM delivery_reach
                           WHERE CAST(merged_at AS BIGINT) < {to}
                           GROUP BY change_id
                           HAVING NOT bool_or(coalesce(merged_at <= until, false))))",
                to = w.to
            )
        } else {
            // `dora_changes` with no delivery before the window's end, without ranking every
            // change's deliveries first.
            format!(
                "SELECT count(*) FROM changes c WHERE CAST(c.merged_at AS BIGINT) < {to}
                 AND NOT EXISTS (SELECT 1 FROM dora_change_deliveries d
                                 WHERE d.change_id = c.change_id AND CAST(d.delivered_at AS BIGINT) < {to})",
                to = w.to
            )
        },
        failed_deployments: format!(
            "SELECT CAST(time AS BIGINT) AS t, service, team, repository FROM deployment_failures
         WHERE production AND CAST(time AS BIGINT) >= {} AND CAST(time AS BIGINT) < {}",
            w.from, w.to
        ),
    }
}

async fn deployments(engine: &Engine, sql: &str) -> Result<Vec<Deployment>> {
    let mut out = Vec::new();
    for b in engine.internal(sql).await?.batches {
        let (t, s, team) = (
            col::<Int64Array>(&b, "t")?,
            &strings(&b, "service")?,
            &strings(&b, "team")?,
        );
        let repository = &strings(&b, "repository")?;
        let rule = &strings(&b, "rework_rule")?;
        let (f, r, rb) = (
            col::<BooleanArray>(&b, "failed")?,
            col::<BooleanArray>(&b, "rework")?,
            col::<BooleanArray>(&b, "rollback")?,
        );
        let rv = col::<BooleanArray>(&b, "reverted")?;
        let by = &strings(&b, "failed_by")?;
        for i in 0..b.num_rows() {
            out.push(Deployment {
                time: t.value(i),
                service: s.value(i).to_string(),
                team: opt_str(team, i),
                repository: opt_str(repository, i),
                failed: f.is_valid(i) && f.value(i),
                rework: r.is_valid(i) && r.value(i),
                rework_rule: opt_str(rule, i),
                rollback: rb.is_valid(i) && rb.value(i),
                reverted: rv.is_valid(i) && rv.value(i),
                failed_by: opt_str(by, i)
                    .map(|s| s.split(',').map(str::to_string).collect())
                    .unwrap_or_default(),
            });
        }
    }
    Ok(out)
}

async fn failed_attempts(engine: &Engine, sql: &str) -> Result<Vec<FailedAttempt>> {
    let mut out = Vec::new();
    for b in engine.internal(sql).await?.batches {
        let (t, s, team) = (
            col::<Int64Array>(&b, "t")?,
            &strings(&b, "service")?,
            &strings(&b, "team")?,
        );
        let repository = &strings(&b, "repository")?;
        for i in 0..b.num_rows() {
            out.push(FailedAttempt {
                time: t.value(i),
                service: opt_str(s, i),
                team: opt_str(team, i),
                repository: opt_str(repository, i),
            });
        }
    }
    Ok(out)
}

async fn deliveries(engine: &Engine, sql: &str) -> Result<Vec<Delivery>> {
    let mut out = Vec::new();
    for b in engine.internal(sql).await?.batches {
        let (c, s, team) = (
            &strings(&b, "change_id")?,
            &strings(&b, "service")?,
            &strings(&b, "team")?,
        );
        let (st, dl) = (
            col::<Int64Array>(&b, "started")?,
            col::<Int64Array>(&b, "delivered")?,
        );
        let from = &strings(&b, "started_from")?;
        let repository = &strings(&b, "repository")?;
        for i in 0..b.num_rows() {
            out.push(Delivery {
                change_id: c.value(i).to_string(),
                service: s.value(i).to_string(),
                team: opt_str(team, i),
                repository: opt_str(repository, i),
                started: st.value(i),
                delivered: dl.value(i),
                started_from: opt_str(from, i),
            });
        }
    }
    Ok(out)
}

async fn incidents(engine: &Engine, sql: &str) -> Result<Vec<Incident>> {
    let mut out = Vec::new();
    for b in engine.internal(sql).await?.batches {
        let (s, team) = (&strings(&b, "service")?, &strings(&b, "team")?);
        let repository = &strings(&b, "repository")?;
        let (d, r) = (
            col::<Int64Array>(&b, "detected")?,
            col::<Int64Array>(&b, "resolved")?,
        );
        for i in 0..b.num_rows() {
            out.push(Incident {
                service: opt_str(s, i),
                team: opt_str(team, i),
                repository: opt_str(repository, i),
                detected: opt_i64(d, i),
                resolved: opt_i64(r, i),
            });
        }
    }
    Ok(out)
}

async fn count(engine: &Engine, sql: &str) -> Result<u64> {
    let r = engine.internal(sql).await?;
    Ok(r.batches
        .first()
        .and_then(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .map(|a| a.value(0))
        })
        .unwrap_or(0)
        .max(0) as u64)
}

/// Check a request against the report limits before any work: a window that is not empty,
/// at most `limits.max_report_days` long, and (by week) at most `limits.max_report_groups`
/// weeks.
pub fn check_request(req: &DoraRequest, limits: &crate::config::Limits) -> Result<()> {
    if req.from >= req.to {
        return Err(Error::BadRequest(format!(
            "the window is empty: from {} is not before to {}",
            req.from, req.to
        )));
    }
    let days = (req.to - req.from).num_seconds() as f64 / DAY;
    if days > limits.max_report_days as f64 {
        return Err(Error::Limit {
            limit: "max_report_days",
            message: format!(
                "the window spans {days:.0} days, more than the {} a report may: shorten it",
                limits.max_report_days
            ),
        });
    }
    match (req.by, req.then_by) {
        (None, Some(_)) => {
            return Err(Error::BadRequest(
                "a second grouping key needs a first: --by service,week".into(),
            ));
        }
        (Some(a), Some(b)) if a == b => {
            return Err(Error::BadRequest(format!(
                "grouping by {} twice: name two different keys, such as service,week",
                a.as_str()
            )));
        }
        (Some(a), Some(b)) if a == GroupBy::Environment || b == GroupBy::Environment => {
            return Err(Error::BadRequest(
                "environment is a grouping of its own: it combines with no other key".into(),
            ));
        }
        _ => {}
    }
    if req.keys().contains(&GroupBy::Week) {
        let weeks = (days / 7.0).ceil() as usize + 1;
        if weeks > limits.max_report_groups {
            return Err(too_many_groups(weeks, limits));
        }
    }
    Ok(())
}

fn too_many_groups(groups: usize, limits: &crate::config::Limits) -> Error {
    Error::Limit {
        limit: "max_report_groups",
        message: format!(
            "the report would have {groups} groups, more than the {} it may: shorten the window or group differently",
            limits.max_report_groups
        ),
    }
}

/// Compute the report (on the query runtime: [`Engine::dora`] is the entry point), pairing
/// only what the window's figures depend on ([`crate::views::definitions_for`]).
pub async fn report(engine: &Engine, req: &DoraRequest) -> Result<DoraReport> {
    report_over(engine, req, Pairing::Window).await
}

/// What the report's pairing views pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pairing {
    /// What the window's figures depend on, where the `[dora]` rules allow
    /// ([`crate::views::windowable`]); else the whole history.
    Window,
    /// The whole history, as the views users query do: the reference for [`Pairing::Window`].
    WholeHistory,
}

/// [`report`], pairing as `pairing` says.
pub async fn report_over(
    engine: &Engine,
    req: &DoraRequest,
    pairing: Pairing,
) -> Result<DoraReport> {
    check_request(req, &engine.config().limits)?;
    if req.by == Some(GroupBy::Environment) {
        return Box::pin(by_environment(engine, req, pairing)).await;
    }
    let w = Window2 {
        from: req.from.timestamp_micros(),
        to: req.to.timestamp_micros(),
    };
    let options = engine
        .config()
        .dora
        .options()
        .map_err(|e| Error::BadRequest(e.to_string()))?;
    let window = (pairing == Pairing::Window && crate::views::windowable(&options)).then_some(
        crate::views::ReportWindow {
            from: w.from,
            to: w.to,
        },
    );
    let queries = report_queries(req, window.is_some());
    let engine = &engine.for_report(window).await?;
    let started = std::time::Instant::now();
    let deps = deployments(engine, &queries.deployments).await?;
    let dels = deliveries(engine, &queries.deliveries).await?;
    let incs = incidents(engine, &queries.incidents).await?;
    let attempts = failed_attempts(engine, &queries.failed_deployments).await?;

    let unlinked = Unlinked {
        deployments_unknown_artifact: count(engine, &queries.deployments_unknown_artifact).await?,
        changes_not_delivered: count(engine, &queries.changes_not_delivered).await?,
        incidents_without_service: incs
            .iter()
            .filter(|i| i.service.is_none() && i.detected.is_some_and(|d| w.contains(d)))
            .count() as u64,
        incidents_without_detection: incs
            .iter()
            .filter(|i| i.detected.is_none() && i.resolved.is_some_and(|r| w.contains(r)))
            .count() as u64,
    };

    tracing::debug!(
        seconds = started.elapsed().as_secs_f64(),
        "Ran the report's statements over the views held."
    );

    let bands = engine.config().dora.benchmark()?;
    let compute = |key: &[GroupBy]| -> BTreeMap<String, Figures> {
        let mut dep_groups: BTreeMap<String, Vec<&Deployment>> = BTreeMap::new();
        for d in &deps {
            if let Some(k) = key_of(key, d.keys(), d.time) {
                dep_groups.entry(k).or_default().push(d);
            }
        }
        // Each change counts once per group, at its earliest delivery within that group; by
        // week, in the week of its earliest delivery (within the other key's group).
        // A hash map: a change id compares slowly (long, with shared prefixes), and the order
        // does not matter (each group's lead times are sorted for their percentiles).
        let mut first: std::collections::HashMap<(String, &str), &Delivery> =
            std::collections::HashMap::new();
        let but_week: Vec<GroupBy> = key
            .iter()
            .copied()
            .filter(|k| *k != GroupBy::Week)
            .collect();
        for d in &dels {
            if let Some(k) = key_of(&but_week, d.keys(), d.delivered) {
                let e = first.entry((k, d.change_id.as_str())).or_insert(d);
                if (d.delivered, &d.service) < (e.delivered, &e.service) {
                    *e = d;
                }
            }
        }
        let mut lead_groups: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        let mut fell_back_groups: BTreeMap<String, u64> = BTreeMap::new();
        let start = engine.config().dora.lead_time_start.trim();
        for (_, d) in first {
            if !w.contains(d.delivered) {
                continue;
            }
            let Some(k) = key_of(key, d.keys(), d.delivered) else {
                continue;
            };
            if d.started_from.as_deref() != Some(start) {
                *fell_back_groups.entry(k.clone()).or_default() += 1;
            }
            lead_groups
                .entry(k)
                .or_default()
                .push(((d.delivered - d.started) as f64 / 1e6).max(0.0));
        }
        let mut rec_groups: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        let mut open_groups: BTreeMap<String, u64> = BTreeMap::new();
        for i in &incs {
            match (i.detected, i.resolved) {
                (Some(d), Some(r)) if w.contains(r) && r >= d => {
                    if let Some(k) = key_of(key, i.keys(), r) {
                        rec_groups.entry(k).or_default().push((r - d) as f64 / 1e6);
                    }
                }
                (Some(d), r) if d < w.to && r.is_none_or(|r| r >= w.to) => {
                    if let Some(k) = key_of(key, i.keys(), d) {
                        *open_groups.entry(k).or_default() += 1;
                    }
                }
                _ => {}
            }
        }
        let mut attempt_groups: BTreeMap<String, u64> = BTreeMap::new();
        for a in &attempts {
            if let Some(k) = key_of(key, a.keys(), a.time) {
                *attempt_groups.entry(k).or_default() += 1;
            }
        }
        let keys: BTreeSet<String> = dep_groups
            .keys()
            .chain(lead_groups.keys())
            .chain(rec_groups.keys())
            .chain(open_groups.keys())
            .chain(attempt_groups.keys())
            .cloned()
            .chain(key.is_empty().then(String::new))
            .chain(match key {
                // A weekly trend has every week of the window, with or without input.
                [GroupBy::Week] => w.weeks(),
                _ => Vec::new(),
            })
            .collect();
        let week_at = key.iter().position(|k| *k == GroupBy::Week);
        keys.into_iter()
            .map(|k| {
                let days = match week_at {
                    Some(i) => w.days_in_week(k.split(KEY_SEP).nth(i).unwrap_or_default()),
                    None => w.days(),
                };
                let input = GroupInput {
                    deps: dep_groups.get(&k).map(Vec::as_slice).unwrap_or_default(),
                    leads: lead_groups.remove(&k).unwrap_or_default(),
                    fell_back: fell_back_groups.get(&k).copied().unwrap_or(0),
                    recoveries: rec_groups.remove(&k).unwrap_or_default(),
                    open: open_groups.get(&k).copied().unwrap_or(0),
                    failed_attempts: attempt_groups.get(&k).copied().unwrap_or(0),
                    days,
                };
                let f = figures(input, bands);
                (k, f)
            })
            .collect()
    };

    let figures = compute(&[])
        .remove("")
        .ok_or_else(|| Error::internal("computing the report", "no overall figures"))?;
    let keys = req.keys();
    let groups = (!keys.is_empty()).then(|| compute(&keys));
    if let Some(g) = &groups
        && g.len() > engine.config().limits.max_report_groups
    {
        return Err(too_many_groups(g.len(), &engine.config().limits));
    }
    let groups = groups.map(|groups| {
        groups
            .into_iter()
            .map(|(k, figures)| {
                let mut group = Group::of(figures);
                for (key, value) in keys.iter().zip(k.split(KEY_SEP)) {
                    *group.slot(*key) = Some(value.to_string());
                }
                group
            })
            .collect::<Vec<_>>()
    });
    tracing::debug!(
        seconds = started.elapsed().as_secs_f64(),
        "Computed the figures from the statements' rows."
    );
    // The contract keys `groups` by service, team or week: groups by repository go apart.
    let (groups, repositories) = if keys.contains(&GroupBy::Repository) {
        (None, groups)
    } else {
        (groups, None)
    };
    Ok(DoraReport {
        window: Window {
            from: req
                .from
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            to: req.to.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            days: w.days(),
        },
        figures,
        groups,
        environments: None,
        repositories,
        unlinked,
        production: engine.config().production.clone(),
        failure_window: engine.config().dora.failure_window.trim().to_string(),
        rework_rules: engine.config().dora.rework.clone(),
        failure_rules: engine.config().dora.failures.clone(),
        lead_time_start: engine.config().dora.lead_time_start.trim().to_string(),
        bands: bands.as_str().to_string(),
        by: (!keys.is_empty()).then(|| {
            keys.iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(",")
        }),
    })
}

/// The report with `environments`: the production figures, then for every environment a
/// production or other deployment went to in the window, the report as if that environment
/// (exactly, by name) were production. Each is a whole report, so each figure keeps its
/// definition: an incident fails a deployment of its environment, a change's lead time runs
/// to its first deployment there.
async fn by_environment(
    engine: &Engine,
    req: &DoraRequest,
    pairing: Pairing,
) -> Result<DoraReport> {
    // The rows are the same for every slice: read them once.
    let engine = &engine.with_report_rows().await?;
    let overall = DoraRequest {
        by: None,
        then_by: None,
        ..req.clone()
    };
    let mut report_all = Box::pin(report_over(engine, &overall, pairing)).await?;
    let sql = format!(
        "SELECT DISTINCT environment FROM events
         WHERE subject = 'service' AND predicate IN ('deployed', 'upgraded', 'rolledback')
           AND environment IS NOT NULL AND service IS NOT NULL
           AND date >= '{}' AND date <= '{}'
           AND CAST(time AS BIGINT) >= {} AND CAST(time AS BIGINT) < {}
         ORDER BY environment",
        req.from.date_naive(),
        req.to.date_naive(),
        req.from.timestamp_micros(),
        req.to.timestamp_micros(),
    );
    let mut environments = Vec::new();
    for b in engine.internal(&sql).await?.batches {
        let names = strings(&b, "environment")?;
        environments.extend((0..b.num_rows()).filter_map(|i| opt_str(&names, i)));
    }
    let limits = &engine.config().limits;
    if environments.len() > limits.max_report_environments {
        return Err(Error::Limit {
            limit: "max_report_environments",
            message: format!(
                "{} environments were deployed to in the window, more than the {} a report by environment may cover (each is a report of its own): shorten the window or raise the limit",
                environments.len(),
                limits.max_report_environments
            ),
        });
    }
    let mut slices = Vec::new();
    for environment in environments {
        let exactly = engine.with_production(format!("^{}$", regex::escape(&environment)));
        let r = Box::pin(report_over(&exactly, &overall, pairing)).await?;
        slices.push(Group {
            environment: Some(environment),
            ..Group::of(r.figures)
        });
    }
    report_all.environments = Some(slices);
    report_all.by = Some(GroupBy::Environment.as_str().to_string());
    Ok(report_all)
}

/// A window ending at `to` and reaching back `days`.
pub fn last_days(to: DateTime<Utc>, days: i64) -> (DateTime<Utc>, DateTime<Utc>) {
    (to - Duration::days(days), to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_and_the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(percentile(&mut [], 0.5), None);
        assert_eq!(percentile(&mut [4.0], 0.9), Some(4.0));
        assert_eq!(percentile(&mut [4.0, 1.0, 3.0, 2.0], 0.5), Some(2.5));
        assert_eq!(percentile(&mut [3.0, 1.0, 2.0], 0.5), Some(2.0));
        // p90 of 1..=11: rank 9 → the tenth value.
        let mut v: Vec<f64> = (1..=11).map(f64::from).collect();
        assert_eq!(percentile(&mut v, 0.9), Some(10.0));
        let mut v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert!((percentile(&mut v, 0.9).unwrap() - 9.1).abs() < 1e-9);
    }

    #[test]
    fn the_report_holds_every_view_its_statements_read() {
        // `Engine::for_report` holds the views `REPORT_READS` reach: every view a statement
        // reads, with any grouping, over the window's views or the whole history's, must be
        // among them, or it would be computed per statement.
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let (from, to) = (t("2026-01-01T00:00:00Z"), t("2026-01-31T00:00:00Z"));
        let window = crate::views::ReportWindow {
            from: from.timestamp_micros(),
            to: to.timestamp_micros(),
        };
        for windowed in [false, true] {
            let definitions = crate::views::definitions_for(
                cdlake_schemas::DEFAULT_PRODUCTION_PATTERN,
                crate::views::DoraOptions::default(),
                windowed.then_some(window),
            );
            let reads: Vec<String> = crate::views::REPORT_READS
                .iter()
                .map(|r| r.to_string())
                .collect();
            let held = crate::views::reachable(&definitions, &reads);
            for by in [None, Some(GroupBy::Service), Some(GroupBy::Repository)] {
                let req = DoraRequest {
                    from,
                    to,
                    by,
                    then_by: None,
                };
                for (name, sql) in report_queries(&req, windowed).named() {
                    let words: Vec<String> = sql
                        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .filter(|w| !w.is_empty())
                        .map(str::to_string)
                        .collect();
                    for view in crate::views::reachable(&definitions, &words) {
                        assert!(
                            held.contains(&view),
                            "statement {name} (by {by:?}, windowed {windowed}) reads {view}, which the report does not reach"
                        );
                    }
                }
            }
            // And the report does not compute the views it does not read.
            assert!(!held.contains(&"deployments"));
            assert!(!held.contains(&"artifacts"));
            // Only the window's report reads `delivery_reach`, which only it defines.
            assert_eq!(held.contains(&"delivery_reach"), windowed);
        }
    }

    #[test]
    fn weeks_are_iso_weeks_clipped_to_the_window() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().timestamp_micros();
        assert_eq!(week_of(t("2026-01-01T12:00:00Z")), "2026-W01");
        assert_eq!(week_of(t("2025-12-29T00:00:00Z")), "2026-W01");
        let w = Window2 {
            from: t("2026-01-01T00:00:00Z"),
            to: t("2026-01-15T00:00:00Z"),
        };
        assert_eq!(w.days_in_week("2026-W01"), 4.0);
        assert_eq!(w.days_in_week("2026-W02"), 7.0);
        assert_eq!(w.days_in_week("2026-W03"), 3.0);
        assert_eq!(w.weeks(), vec!["2026-W01", "2026-W02", "2026-W03"]);
    }
}
