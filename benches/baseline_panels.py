#!/usr/bin/env python3
"""Every Grafana panel, cdlake against an independent DuckDB implementation of DESIGN's views.

    benches/baseline_panels.py --store DIR --cdlake BIN --from T --to T [--via sql|psql]
                               [--repeat N] [--production RE] [--config cdlake.toml]

`benches/query.py` runs the panels on DuckDB over cdlake's own view SQL (`--print-sql`), so its
DuckDB figures share cdlake's plan and its mistakes. This file shares nothing with that plan: it
never asks cdlake for SQL and copies nothing from query/src/views.rs. Every view and table the
dashboards read is written here from DESIGN.md (the event model, "DORA definitions (exact)",
and the list of what SQL sees); where DESIGN names a view or a column but does not define it,
from README.md's description of it ("What SQL sees", "DORA, exactly"), the documented contract,
never the implementation. Then every panel's `rawSql` (dashboards/*.json, variables at "All"
and Grafana's macros expanded for the window by benches/query.py's `panels()`, imported, not
copied) runs on DuckDB over these views and through cdlake, and the two answers are compared
row by row.

Reading the store: the Parquet files of the current Delta snapshot of `events` (and
`dead_letters`) from the `deltalake` package (benches/baseline_duckdb.py's `snapshot_files`,
imported), read with `read_parquet([...])`, `date` as text as cdlake shows it. Nothing else of
the store (read models, projections, held views) is read.

The views (DuckDB tables built once, before any panel; that time is reported apart):
- events: the snapshot's rows; `dead_letters` likewise (an empty table of the Delta schema
  when it has no file). `teams`: the `[teams]` of `--config` (empty without one).
- Production: `environment` matches the production pattern (default DESIGN's); no environment
  is not production. Team of a row: its own `team` (customData.team) wins, then `[teams]` of its
  service, then of its repository (DESIGN: "an event's customData.team overrides it").
- Inputs are not de-duplicated at query time: DESIGN makes (event_source, event_id) unique in
  the table at all times (a store invariant); `--dedupe` de-duplicates them anyway (earliest
  `ingested_at` kept). Entity attributes taken "from the events" (an incident's service, a
  run's pipeline …) are those of its earliest event that has one, by (time, event_source,
  event_id); a run's outcome, url and pipeline those of its latest.
- changes: one row per change (subject id). merged_at = its earliest `change.merged` time,
  repository = that merged event's repository (DESIGN: content.repository.id of the merge),
  created_at = its earliest `change.created`; started_at = created_at, else merged_at
  (`started_from` 'created' / 'merged'; DESIGN's start; README's `first_commit` start is a
  non-default option and is not implemented).
- Links: every artifact.packaged/published with a change id links the artifact (subject id) to
  that change.
- deployments: every service.deployed/upgraded/rolledback event, any environment; service =
  subject id, action = predicate, `production` by the pattern; its change and repository =
  the linked merged change with the latest merge (ties: the smallest change id).
- dora_deployments: the production deployments; next = the service's next production
  deployment ordered by (time, event_source, event_id) (any action); failed when an
  incident.detected/reported event in production naming the service has a time in
  [time, next_time) (no next: unbounded), or next is a rollback (DESIGN); `incidents` = the
  distinct incidents of such events; rework (the only default rule, `incident_open`) when an
  incident of the service in production is open: detected_at <= time < resolved_at or never
  resolved (DESIGN's rework rate); rework_rule 'incident_open' or NULL; `failed_by` = the
  distinct origins of the failing incidents sorted, then 'rollback', comma-separated (NULL when
  not failed); `reverted` NULL (the revert rule is off by default). README's "explicit link"
  (an incident naming an artifact, CDEvents content.artifactId, fails the latest production
  deployment of that artifact of its service at or before it, instead of the one the time rule
  picks; issue 16 asked for it) extends DESIGN: on by default, as in cdlake;
  `--time-rule-only` gives DESIGN's time rule alone.
- incidents: one row per incident (subject id): service/environment/team/repository of its
  earliest event having one; production when any of its events is in production;
  detected_at = earliest detected/reported, resolved_at = earliest resolved (README: "first
  resolution"), acknowledged_at = earliest acknowledged; canceled when it has a declined, merged
  or canceled event (README: "incidents that were none"); recovery_seconds = resolved_at -
  detected_at (NULL when either is missing or canceled; may be negative); origin = the origin of
  its earliest detected/reported event (else of its earliest event); `events` its event count.
  Canceled incidents fail no deployment and make no rework.
- dora_incidents: the production incidents that are not canceled, recovery_seconds NULL when
  negative (a resolution before the detection is no recovery).
- dora_change_deliveries: a production deployed/upgraded (not rolledback) deployment D of
  artifact A, linked to a merged change C' of repository R, delivers every change C of R with
  m(C) <= m(C') (DESIGN's trunk order); one row per (change, service) with the earliest such D
  of that service (`delivered_at`), lead_time_seconds = delivered_at - started_at (not clamped);
  team = the change's own team, else `[teams]` of its repository. README's monorepo rules
  (`change_services`) are not implemented: every service delivers (the demo's changes name no
  service, where README says the same).
- dora_changes: every merged change with its earliest delivery over all services
  (`delivered_at`, `delivered_by` the service, ties the smallest) and its lead time.
- deployment_failures: the deployment attempts that failed (README: GitHub deployment_status
  failure or error, GitLab deployment failed): rows of subject deployment_status/deployment with
  those outcomes (as ingest stores them).
- dora_levels: DESIGN's levels as data (`lower`, `upper`, inclusive or not; unbounded NULL).
- pipeline_runs / task_runs: one row per run attempt, identified by (origin, repository,
  run id, attempt) (DESIGN's run identity): a pipeline run's id is its run_id (else subject id),
  a task run is also told apart by its subject id (`task_run_id`) and belongs to the pipeline
  run `run_id`; `run_key` joins the two. queued/started = the earliest such event, finished_at
  and outcome = the latest `finished` by time; failed = outcome failure/error (CDEvents),
  failure/timed_out/startup_failure (GitHub), failed (GitLab), else false; duration_seconds =
  finished_at - started_at, queue_seconds = started_at - queued_at (NULL without both).

Panels: DuckDB runs the panel text as it is, except for `duck_panel_sql` below (dialect only).
Comparison: the full result sets, order-insensitive unless the panel ends with ORDER BY … LIMIT
(then in order; rows tied on the ORDER BY key may come in any order, and the tied rows that the
LIMIT cuts may differ); values by DuckDB's column type: floats with relative tolerance 1e-9,
timestamps as UTC microseconds, '' as NULL (CSV cannot tell them apart).

Timing: DuckDB builds the views once (`duckdb_build_s`), then each panel is timed on its own
(best of `--repeat`, every row fetched). cdlake: each panel as a whole `cdlake sql --format csv`
process (`--via sql`: it opens the store and computes the views the panel needs, so compare it
with DuckDB's panel + build; `select1_s` is the fixed cost of a process), or as a whole `psql`
process against one `cdlake serve` (`--via psql`: held views computed by the first panel).

Output: per panel on stderr (equal / DIFFERENT with the first differing row of each side,
rows and seconds of both engines); one JSON line on stdout at the end:
    {"bench": "query", "name": "…", "panels", "equal", "different", "errors", "duckdb_build_s",
     "duckdb_total_s", "cdlake_total_s", "select1_s", "median_ratio", "median_ratio_with_build"}
The exit status is 0 unless `--strict` and a panel differs or fails.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import io
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path

try:
    import duckdb
except ImportError:  # pragma: no cover
    sys.exit("benches/baseline_panels.py needs duckdb and deltalake: pip install duckdb deltalake")

REPO = Path(__file__).resolve().parent.parent


def _load(name: str, file: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benches" / file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


QUERY = _load("query_bench", "query.py")  # panels(): the dashboards' SQL, macros expanded
BASE = _load("baseline_duckdb_bench", "baseline_duckdb.py")  # snapshot_files(), parse_time()

DEFAULT_PRODUCTION = BASE.DEFAULT_PRODUCTION


def log(*args):
    print(*args, file=sys.stderr, flush=True)


# ---- the store's tables -------------------------------------------------------------------------

# `events` as DESIGN's event model (plus README's later columns); a column no file has is NULL.
EVENT_COLUMNS = [
    ("event_id", "VARCHAR"), ("event_source", "VARCHAR"), ("event_type", "VARCHAR"),
    ("subject", "VARCHAR"), ("predicate", "VARCHAR"), ("spec_version", "VARCHAR"),
    ("origin", "VARCHAR"), ("time", "TIMESTAMPTZ"), ("ingested_at", "TIMESTAMPTZ"),
    ("subject_id", "VARCHAR"), ("service", "VARCHAR"), ("environment", "VARCHAR"),
    ("repository", "VARCHAR"), ("change_id", "VARCHAR"), ("artifact_id", "VARCHAR"),
    ("pipeline", "VARCHAR"), ("run_id", "VARCHAR"), ("outcome", "VARCHAR"), ("url", "VARCHAR"),
    ("trace_id", "VARCHAR"), ("span_id", "VARCHAR"), ("chain_id", "VARCHAR"), ("team", "VARCHAR"),
    ("task", "VARCHAR"), ("payload", "VARCHAR"), ("attempt", "BIGINT"), ("labels", "VARCHAR"),
    ("reverts", "VARCHAR"), ("branch", "VARCHAR"), ("first_commit_at", "TIMESTAMPTZ"),
    ("date", "VARCHAR"),
]
DEAD_LETTER_COLUMNS = [
    ("received_at", "TIMESTAMPTZ"), ("origin", "VARCHAR"), ("source", "VARCHAR"),
    ("reason", "VARCHAR"), ("payload", "BLOB"), ("date", "VARCHAR"),
]


def delta_files(store: str, table: str) -> list[str]:
    if not os.path.isdir(os.path.join(store, table, "_delta_log")):
        return []
    if table == "events":
        return BASE.snapshot_files(store)
    from deltalake import DeltaTable

    uris = DeltaTable(os.path.join(store, table)).file_uris()
    return [u[len("file://"):] if u.startswith("file://") else u for u in uris]


def table_sql(con, name: str, files: list[str], columns) -> str:
    """A view over the snapshot's files projected on `columns`, or an empty table."""
    if not files:
        cols = ", ".join(f'"{c}" {t}' for c, t in columns)
        return f"CREATE TABLE {name} ({cols})"
    source = (f"read_parquet({BASE.sql_list(files)}, hive_partitioning = true, "
              "hive_types = {'date': VARCHAR}, union_by_name = true)")
    present = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
    projection = ", ".join(f'"{c}"' if c in present else f'CAST(NULL AS {t}) AS "{c}"' for c, t in columns)
    return f"CREATE VIEW {name} AS SELECT {projection} FROM {source}"


def teams_rows(config: str | None) -> list[tuple[str, str]]:
    if not config:
        return []
    import tomllib

    with open(config, "rb") as f:
        return sorted((str(k), str(v)) for k, v in (tomllib.load(f).get("teams") or {}).items())


# ---- the views, from DESIGN.md ------------------------------------------------------------------

# Entity attributes: of the earliest event having one (first), or of the latest (last).
FIRST = "ORDER BY time, event_source, event_id"
LAST = "ORDER BY time DESC, event_source DESC, event_id DESC"


def view_statements(production: str, dedupe: bool, explicit_link: bool = False) -> list[tuple[str, str]]:
    pat = production.replace("'", "''")
    failed_outcome = """coalesce(CASE origin
        WHEN 'github' THEN outcome IN ('failure', 'timed_out', 'startup_failure')
        WHEN 'gitlab' THEN outcome = 'failed'
        ELSE outcome IN ('failure', 'error') END, false)"""
    return [
        # The DORA subjects' rows, narrow.
        ("r", f"""
            SELECT event_source, event_id, subject, predicate, origin, time, subject_id, service,
                   environment, repository, change_id, artifact_id, team, url, outcome, date,
                   coalesce(regexp_matches(environment, '{pat}'), false) AS production
            FROM events
            WHERE subject IN ('service', 'incident', 'change', 'artifact', 'deployment_status', 'deployment')
            {"QUALIFY row_number() OVER (PARTITION BY event_source, event_id ORDER BY ingested_at) = 1" if dedupe else ""}"""),
        ("changes", f"""
            SELECT g.*, coalesce(g.created_at, g.merged_at) AS started_at,
                   CASE WHEN g.created_at IS NOT NULL THEN 'created' ELSE 'merged' END AS started_from,
                   coalesce(g.own_team, t.team) AS team
            FROM (
              SELECT subject_id AS change_id,
                     min(time) FILTER (WHERE predicate = 'created') AS created_at,
                     min(time) FILTER (WHERE predicate = 'merged') AS merged_at,
                     first(repository {FIRST}) FILTER (WHERE predicate = 'merged' AND repository IS NOT NULL) AS repository,
                     first(team {FIRST}) FILTER (WHERE team IS NOT NULL) AS own_team
              FROM r WHERE subject = 'change' GROUP BY subject_id) g
            LEFT JOIN teams t ON t.key = g.repository"""),
        ("links", """
            SELECT DISTINCT subject_id AS artifact_id, change_id FROM r
            WHERE subject = 'artifact' AND predicate IN ('packaged', 'published') AND change_id IS NOT NULL"""),
        # Each artifact's merged changes: the latest merge per repository is its frontier.
        ("artifact_frontiers", """
            SELECT l.artifact_id, c.repository, max(c.merged_at) AS frontier,
                   arg_min(c.change_id, (-epoch_us(c.merged_at), c.change_id)) AS change_id
            FROM links l JOIN changes c ON c.change_id = l.change_id
            WHERE c.merged_at IS NOT NULL
            GROUP BY l.artifact_id, c.repository"""),
        ("deployments", """
            SELECT d.time, d.subject_id AS service, d.environment, d.predicate AS action, d.artifact_id,
                   d.production, a.repository, a.change_id,
                   coalesce(d.team, ts.team, tr.team) AS team,
                   d.event_source, d.event_id, d.url, d.date
            FROM r d
            LEFT JOIN (SELECT artifact_id, arg_min(repository, (-epoch_us(frontier), change_id)) AS repository,
                              arg_min(change_id, (-epoch_us(frontier), change_id)) AS change_id
                       FROM artifact_frontiers WHERE repository IS NOT NULL GROUP BY artifact_id) a
              ON a.artifact_id = d.artifact_id
            LEFT JOIN teams ts ON ts.key = d.subject_id
            LEFT JOIN teams tr ON tr.key = coalesce(a.repository, d.repository)
            WHERE d.subject = 'service' AND d.predicate IN ('deployed', 'upgraded', 'rolledback')"""),
        ("incidents", f"""
            SELECT g.incident_id, g.service, g.environment, g.production, g.detected_at, g.resolved_at,
                   CASE WHEN NOT g.canceled THEN (epoch_us(g.resolved_at) - epoch_us(g.detected_at)) / 1e6 END
                     AS recovery_seconds,
                   coalesce(g.own_team, t.team) AS team, g.events, g.origin, g.acknowledged_at, g.canceled,
                   g.repository
            FROM (
              SELECT subject_id AS incident_id,
                     first(service {FIRST}) FILTER (WHERE service IS NOT NULL) AS service,
                     first(environment {FIRST}) FILTER (WHERE environment IS NOT NULL) AS environment,
                     first(repository {FIRST}) FILTER (WHERE repository IS NOT NULL) AS repository,
                     first(team {FIRST}) FILTER (WHERE team IS NOT NULL) AS own_team,
                     bool_or(production) AS production,
                     min(time) FILTER (WHERE predicate IN ('detected', 'reported')) AS detected_at,
                     min(time) FILTER (WHERE predicate = 'resolved') AS resolved_at,
                     min(time) FILTER (WHERE predicate = 'acknowledged') AS acknowledged_at,
                     bool_or(predicate IN ('declined', 'merged', 'canceled')) AS canceled,
                     count(*) AS events,
                     first(origin ORDER BY predicate NOT IN ('detected', 'reported'), time, event_source, event_id)
                       AS origin
              FROM r WHERE subject = 'incident' GROUP BY subject_id) g
            LEFT JOIN teams t ON t.key = g.service"""),
        # Production deployments with their service's next one.
        ("pdeps", """
            SELECT *, lead(time) OVER w AS next_time, lead(action) OVER w AS next_action
            FROM deployments WHERE production
            WINDOW w AS (PARTITION BY service ORDER BY time, event_source, event_id)"""),
        # Each production detected/reported event naming a service, of an incident not canceled.
        ("signals", """
            SELECT s.subject_id AS incident_id, s.service, s.time, i.origin, s.artifact_id,
                   s.event_source AS signal_source, s.event_id AS signal_id
            FROM r s JOIN incidents i ON i.incident_id = s.subject_id
            WHERE s.subject = 'incident' AND s.predicate IN ('detected', 'reported') AND s.production
              AND s.service IS NOT NULL AND NOT i.canceled"""),
        # Which deployment each signal fails: DESIGN's time rule; with --explicit-link, a signal
        # naming an artifact fails the latest production deployment of that artifact of its
        # service at or before it instead, when there is one (README's "explicit link").
        ("failing", """
            WITH linked AS (
              SELECT s.signal_source, s.signal_id, s.incident_id, s.origin, d.event_source, d.event_id
              FROM (SELECT * FROM signals WHERE artifact_id IS NOT NULL AND """ + ("true" if explicit_link else "false") + """) s
              ASOF JOIN pdeps d ON d.service = s.service AND d.artifact_id = s.artifact_id AND s.time >= d.time)
            SELECT event_source, event_id, incident_id, origin FROM linked
            UNION ALL
            SELECT d.event_source, d.event_id, s.incident_id, s.origin
            FROM pdeps d JOIN signals s
              ON s.service = d.service AND s.time >= d.time AND (d.next_time IS NULL OR s.time < d.next_time)
            WHERE NOT EXISTS (SELECT 1 FROM linked l WHERE l.signal_source = s.signal_source AND l.signal_id = s.signal_id)"""),
        ("dora_deployments", """
            WITH hits AS (
              SELECT event_source, event_id, count(DISTINCT incident_id) AS incidents,
                     array_to_string(list_sort(list_distinct(list(origin))), ',') AS origins
              FROM failing GROUP BY event_source, event_id),
            opened AS (
              SELECT DISTINCT d.event_source, d.event_id
              FROM pdeps d JOIN incidents i
                ON i.service = d.service AND i.production AND NOT i.canceled
               AND i.detected_at <= d.time AND (i.resolved_at IS NULL OR d.time < i.resolved_at))
            SELECT d.time, d.service, d.environment, d.action, d.artifact_id, d.repository, d.change_id,
                   d.team, d.next_time, d.next_action,
                   h.event_id IS NOT NULL OR coalesce(d.next_action = 'rolledback', false) AS failed,
                   coalesce(h.incidents, 0) AS incidents,
                   o.event_id IS NOT NULL AS rework,
                   CASE WHEN o.event_id IS NOT NULL THEN 'incident_open' END AS rework_rule,
                   CAST(NULL AS BOOLEAN) AS reverted,
                   nullif(concat_ws(',', h.origins,
                                    CASE WHEN d.next_action = 'rolledback' THEN 'rollback' END), '') AS failed_by,
                   d.event_source, d.event_id, d.date
            FROM pdeps d
            LEFT JOIN hits h ON h.event_source = d.event_source AND h.event_id = d.event_id
            LEFT JOIN opened o ON o.event_source = d.event_source AND o.event_id = d.event_id"""),
        ("dora_incidents", """
            SELECT incident_id, service, environment, team, detected_at, resolved_at,
                   CASE WHEN recovery_seconds >= 0 THEN recovery_seconds END AS recovery_seconds, repository
            FROM incidents WHERE production AND NOT canceled"""),
        # Each delivering deployment: its service, time and, per repository, its frontier m(C').
        ("fronts", """
            SELECT d.service, d.time, f.repository, f.frontier
            FROM deployments d JOIN artifact_frontiers f ON f.artifact_id = d.artifact_id
            WHERE d.production AND d.action <> 'rolledback' AND f.repository IS NOT NULL"""),
        # delivery(C) per service = min time over its fronts of C's repository with frontier >=
        # m(C): one pass per (repository, service) over fronts and changes by key descending,
        # a front before a change at the same key (m(C) = m(C') delivers), keeping the running
        # minimum time.
        ("dora_change_deliveries", """
            WITH pairs AS (SELECT DISTINCT repository, service FROM fronts),
            items AS (
              SELECT repository, service, frontier AS k, 0 AS kind, time AS t, CAST(NULL AS VARCHAR) AS change_id
              FROM fronts
              UNION ALL
              SELECT c.repository, p.service, c.merged_at, 1, CAST(NULL AS TIMESTAMPTZ), c.change_id
              FROM changes c JOIN pairs p ON p.repository = c.repository
              WHERE c.merged_at IS NOT NULL),
            run AS (
              SELECT change_id, service, kind,
                     min(t) OVER (PARTITION BY repository, service ORDER BY k DESC, kind
                                  ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS delivered_at
              FROM items)
            SELECT c.change_id, c.repository, run.service, c.started_at, c.merged_at, run.delivered_at,
                   (epoch_us(run.delivered_at) - epoch_us(c.started_at)) / 1e6 AS lead_time_seconds,
                   c.team, c.started_from
            FROM run JOIN changes c ON c.change_id = run.change_id
            WHERE run.kind = 1 AND run.delivered_at IS NOT NULL"""),
        ("dora_changes", """
            SELECT c.change_id, c.repository, c.created_at, c.merged_at, c.started_at,
                   f.delivered_at, f.delivered_by,
                   (epoch_us(f.delivered_at) - epoch_us(c.started_at)) / 1e6 AS lead_time_seconds,
                   c.team, c.started_from
            FROM changes c
            LEFT JOIN (SELECT change_id, min(delivered_at) AS delivered_at,
                              arg_min(service, (epoch_us(delivered_at), service)) AS delivered_by
                       FROM dora_change_deliveries GROUP BY change_id) f ON f.change_id = c.change_id
            WHERE c.merged_at IS NOT NULL"""),
        ("deployment_failures", """
            SELECT d.time, d.service, d.environment, d.production, d.origin, d.outcome, d.artifact_id, d.url,
                   coalesce(d.team, ts.team, tr.team) AS team, d.event_source, d.event_id, d.date, d.repository
            FROM r d
            LEFT JOIN teams ts ON ts.key = d.service
            LEFT JOIN teams tr ON tr.key = d.repository
            WHERE d.subject IN ('deployment_status', 'deployment')
              AND ((d.origin = 'github' AND d.outcome IN ('failure', 'error'))
                OR (d.origin = 'gitlab' AND d.outcome = 'failed'))"""),
        # DESIGN's levels; units: per day, seconds, a ratio.
        ("dora_levels", """
            SELECT * FROM (VALUES
              ('deployment_frequency', 'per_day', 'elite',  1.0,        true,  NULL,       false),
              ('deployment_frequency', 'per_day', 'high',   1.0 / 7,    true,  1.0,        false),
              ('deployment_frequency', 'per_day', 'medium', 1.0 / 30,   true,  1.0 / 7,    false),
              ('deployment_frequency', 'per_day', 'low',    NULL,       false, 1.0 / 30,   false),
              ('lead_time',            'seconds', 'elite',  NULL,       false, 86400.0,    false),
              ('lead_time',            'seconds', 'high',   86400.0,    true,  604800.0,   false),
              ('lead_time',            'seconds', 'medium', 604800.0,   true,  2592000.0,  false),
              ('lead_time',            'seconds', 'low',    2592000.0,  true,  NULL,       false),
              ('change_failure_rate',  'ratio',   'elite',  NULL,       false, 0.05,       true),
              ('change_failure_rate',  'ratio',   'high',   0.05,       false, 0.10,       true),
              ('change_failure_rate',  'ratio',   'medium', 0.10,       false, 0.15,       true),
              ('change_failure_rate',  'ratio',   'low',    0.15,       false, NULL,       false),
              ('recovery_time',        'seconds', 'elite',  NULL,       false, 3600.0,     false),
              ('recovery_time',        'seconds', 'high',   3600.0,     true,  86400.0,    false),
              ('recovery_time',        'seconds', 'medium', 86400.0,    true,  604800.0,   false),
              ('recovery_time',        'seconds', 'low',    604800.0,   true,  NULL,       false))
              AS v(metric, unit, level, lower, lower_inclusive, upper, upper_inclusive)"""),
        # Pipeline and task run events, one row per run attempt.
        ("run_events", """
            SELECT subject, predicate, origin, repository, attempt, time, event_source, event_id,
                   coalesce(run_id, CASE WHEN subject = 'pipelinerun' THEN subject_id END) AS run_id,
                   subject_id, pipeline, task, outcome, url, trace_id, artifact_id
            FROM events WHERE subject IN ('pipelinerun', 'taskrun')"""),
        ("pipeline_runs", f"""
            SELECT run_id, pipeline, queued_at, started_at, finished_at, outcome, url,
                   (epoch_us(finished_at) - epoch_us(started_at)) / 1e6 AS duration_seconds,
                   (epoch_us(started_at) - epoch_us(queued_at)) / 1e6 AS queue_seconds,
                   events, trace_id, artifact_id, origin, repository, attempt,
                   concat_ws('|', origin, coalesce(repository, ''), run_id, coalesce(CAST(attempt AS VARCHAR), '')) AS run_key,
                   {failed_outcome} AS failed
            FROM (
              SELECT origin, repository, run_id, attempt,
                     first(pipeline {LAST}) FILTER (WHERE pipeline IS NOT NULL) AS pipeline,
                     min(time) FILTER (WHERE predicate = 'queued') AS queued_at,
                     min(time) FILTER (WHERE predicate = 'started') AS started_at,
                     max(time) FILTER (WHERE predicate = 'finished') AS finished_at,
                     first(outcome {LAST}) FILTER (WHERE predicate = 'finished') AS outcome,
                     first(url {LAST}) FILTER (WHERE url IS NOT NULL) AS url,
                     first(trace_id {LAST}) FILTER (WHERE trace_id IS NOT NULL) AS trace_id,
                     first(artifact_id {LAST}) FILTER (WHERE artifact_id IS NOT NULL) AS artifact_id,
                     count(*) AS events
              FROM run_events WHERE subject = 'pipelinerun'
              GROUP BY origin, repository, run_id, attempt)"""),
        ("task_runs", f"""
            SELECT task_run_id, run_id, task, started_at, finished_at, outcome, url,
                   (epoch_us(finished_at) - epoch_us(started_at)) / 1e6 AS duration_seconds,
                   origin, repository, attempt,
                   concat_ws('|', origin, coalesce(repository, ''), run_id, coalesce(CAST(attempt AS VARCHAR), '')) AS run_key,
                   {failed_outcome} AS failed
            FROM (
              SELECT origin, repository, run_id, subject_id AS task_run_id, attempt,
                     first(task {LAST}) FILTER (WHERE task IS NOT NULL) AS task,
                     min(time) FILTER (WHERE predicate = 'started') AS started_at,
                     max(time) FILTER (WHERE predicate = 'finished') AS finished_at,
                     first(outcome {LAST}) FILTER (WHERE predicate = 'finished') AS outcome,
                     first(url {LAST}) FILTER (WHERE url IS NOT NULL) AS url
              FROM run_events WHERE subject = 'taskrun'
              GROUP BY origin, repository, run_id, subject_id, attempt)"""),
    ]


SESSION = [
    # Timestamps are UTC (date_trunc('week', …), CAST(… AS DATE), the macros' literals).
    "SET TimeZone = 'UTC'",
    # Postgres (the panels' dialect) and DataFusion divide integers as integers. The views above
    # never divide two integers.
    "SET integer_division = true",
]


def build(store: str, production: str, teams, dedupe: bool, threads: int | None, explicit_link: bool = False):
    """A DuckDB database holding every view as a table; (connection, seconds, per-view seconds)."""
    con = duckdb.connect()
    for stmt in SESSION:
        con.execute(stmt)
    if threads:
        con.execute(f"SET threads = {threads}")
    start = time.perf_counter()
    con.execute(table_sql(con, "events", delta_files(store, "events"), EVENT_COLUMNS))
    con.execute(table_sql(con, "dead_letters", delta_files(store, "dead_letters"), DEAD_LETTER_COLUMNS))
    con.execute("CREATE TABLE teams (key VARCHAR, team VARCHAR)")
    if teams:
        con.executemany("INSERT INTO teams VALUES (?, ?)", teams)
    steps = []
    for name, sql in view_statements(production, dedupe, explicit_link):
        t = time.perf_counter()
        con.execute(f"CREATE TEMP TABLE {name} AS {sql}")
        steps.append((name, time.perf_counter() - t))
    return con, time.perf_counter() - start, steps


# ---- panels -----------------------------------------------------------------------------------


def duck_panel_sql(sql: str) -> str:
    """The panel text for DuckDB; the only rewrite is a dialect one, the meaning is kept:
    `octet_length(encode(x, 'hex')) / 2` (the byte length of a BINARY column, written so for
    Postgres and DataFusion; DuckDB's encode() takes text, not bytes) -> `octet_length(x)`."""
    return re.sub(r"octet_length\(\s*encode\(\s*([\w.]+)\s*,\s*'hex'\s*\)\s*\)\s*/\s*2",
                  r"octet_length(\1)", sql, flags=re.I)


def order_limit(sql: str):
    """(ORDER BY key expressions, limit) when the statement ends with ORDER BY … LIMIT n."""
    m = re.search(r"\bORDER\s+BY\s+([^()]+?)\s+LIMIT\s+(\d+)\s*;?\s*$", sql, re.I | re.S)
    if not m:
        return None
    keys = []
    for part in m.group(1).split(","):
        expr = re.sub(r"\s+(ASC|DESC)\b.*$", "", part.strip(), flags=re.I | re.S).strip()
        keys.append(expr.split(".")[-1].strip('"').lower())
    return keys, int(m.group(2))


# ---- values -----------------------------------------------------------------------------------

_TS = re.compile(r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?\s*(Z|[+-]\d{2}(?::?\d{2})?)?$")
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def ts_micros(v) -> int | str:
    if isinstance(v, datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=timezone.utc)
        d = v - EPOCH
        return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds
    m = _TS.match(str(v).strip())
    if not m:
        return str(v)
    day, hh, mm, ss, frac, zone = m.groups()
    y, mo, dd = (int(x) for x in day.split("-"))
    us = int((frac or "").ljust(6, "0")[:6] or 0)
    t = datetime(y, mo, dd, int(hh), int(mm), int(ss), us, tzinfo=timezone.utc)
    offset = 0
    if zone and zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        offset = sign * (int(digits[:2]) * 3600 + int(digits[2:4] or 0) * 60)
    return ts_micros(t) - offset * 1_000_000


def kind_of(duck_type: str) -> str:
    t = duck_type.upper()
    if t.startswith("TIMESTAMP"):
        return "ts"
    if t in ("BOOLEAN",):
        return "bool"
    if t == "DATE":
        return "date"
    if any(t.startswith(p) for p in ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT",
                                     "USMALLINT", "UINTEGER", "UBIGINT", "FLOAT", "DOUBLE", "DECIMAL", "REAL")):
        return "num"
    return "text"


def canon(v, kind: str):
    """A value of either side as comparable Python: None, int µs, float, bool or str."""
    if v is None or (isinstance(v, str) and v == ""):
        return None
    if kind == "ts":
        return ts_micros(v)
    if kind == "num":
        if isinstance(v, bool):
            return float(v)
        if isinstance(v, (int, float, Decimal)):
            return float(v)
        try:
            return float(v)
        except ValueError:
            return str(v)
    if kind == "bool":
        if isinstance(v, bool):
            return v
        s = str(v).strip().lower()
        return True if s in ("true", "t", "1") else False if s in ("false", "f", "0") else s
    if kind == "date":
        return v.isoformat() if isinstance(v, date) else str(v)[:10]
    if isinstance(v, (datetime, date)):
        return v.isoformat()
    return str(v)


def same_value(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return a == b


def same_row(a, b) -> bool:
    return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))


def largest_gap(c_rows, d_rows) -> str:
    """The largest relative difference between paired numbers, when only numbers differ."""
    worst = 0.0
    for a, b in zip(c_rows, d_rows):
        for x, y in zip(a, b):
            if isinstance(x, float) and isinstance(y, float):
                if x != y:
                    worst = max(worst, abs(x - y) / max(abs(x), abs(y)))
            elif x != y:
                return ""
    return f"\n    only numbers differ; the largest relative difference is {worst:.2g}"


def sort_key(row):
    out = []
    for v in row:
        if v is None:
            out.append((0, 0))
        elif isinstance(v, bool):
            out.append((1, float(v)))
        elif isinstance(v, (int, float)):
            out.append((1, float(f"{v:.9g}")))
        else:
            out.append((2, str(v)))
    return out


def show(row) -> str:
    return "(" + ", ".join("NULL" if v is None else repr(v) for v in row) + ")"


def compare(cols, c_rows, d_rows, ordered):
    """(equal, note): note names the first difference, or the ties the LIMIT cut."""
    if len(c_rows) != len(d_rows):
        note = f"rows {len(c_rows)} (cdlake) vs {len(d_rows)} (duckdb)"
    else:
        note = None
    if ordered is None:
        cs, ds = sorted(c_rows, key=sort_key), sorted(d_rows, key=sort_key)
        for i, (a, b) in enumerate(zip(cs, ds)):
            if not same_row(a, b):
                return False, ((note + "; " if note else "") + f"first differing row (sorted) {i}:\n      cdlake {show(a)}\n"
                               f"      duckdb {show(b)}" + ("" if note else largest_gap(cs, ds)))
        if note:
            extra = cs[len(ds):] or ds[len(cs):]
            side = "cdlake" if len(cs) > len(ds) else "duckdb"
            return False, note + f"; first extra row of {side}: {show(extra[0])}"
        return True, None
    keys, limit = ordered
    names = [c.lower() for c in cols]
    idx = [names.index(k) for k in keys] if all(k in names for k in keys) else None
    if idx is None:
        for i, (a, b) in enumerate(zip(c_rows, d_rows)):
            if not same_row(a, b):
                return False, (f"first differing row {i} (in order):\n      cdlake {show(a)}\n      duckdb {show(b)}"
                           + ("" if note else largest_gap(c_rows, d_rows)))
        return (note is None), note
    key = lambda row: tuple(row[i] for i in idx)  # noqa: E731
    # The ORDER BY keys must come in the same sequence.
    for i, (a, b) in enumerate(zip(c_rows, d_rows)):
        if not same_row(key(a), key(b)):
            return False, (f"first differing row {i} (in order):\n      cdlake {show(a)}\n      duckdb {show(b)}"
                           + ("" if note else largest_gap(c_rows, d_rows)))
    if note:
        return False, note

    # Rows tied on the key: the same multiset, except the tie group the LIMIT cuts.
    def groups(rows):
        out, start = [], 0
        for i in range(1, len(rows) + 1):
            if i == len(rows) or not same_row(key(rows[i]), key(rows[start])):
                out.append(rows[start:i])
                start = i
        return out

    cg, dg = groups(c_rows), groups(d_rows)
    for n, (a, b) in enumerate(zip(cg, dg)):
        last_cut = n == len(cg) - 1 and len(c_rows) == limit
        sa, sb = sorted(a, key=sort_key), sorted(b, key=sort_key)
        for x, y in zip(sa, sb):
            if not same_row(x, y):
                if last_cut:
                    return True, f"the {len(a)} rows tied on the last key at the LIMIT differ (either is right)"
                return False, (f"first differing row of ORDER BY key {show(key(a[0]))}:\n      cdlake {show(x)}\n"
                               f"      duckdb {show(y)}" + largest_gap(c_rows, d_rows))
    return True, None


# ---- cdlake -----------------------------------------------------------------------------------


class CdlakeSql:
    """Each statement as a whole `cdlake sql --format csv` process."""

    def __init__(self, binary, store, production, config):
        self.cmd = [binary, "sql", "--store", store, "--format", "csv"]
        if production:
            self.cmd += ["--production", production]
        if config:
            self.cmd += ["--config", os.path.abspath(config)]
        # No ./cdlake.toml by accident: run in an empty directory.
        self.cwd = tempfile.mkdtemp(prefix="baseline-panels-")

    def run(self, sql):
        start = time.perf_counter()
        p = subprocess.run([*self.cmd, sql], capture_output=True, text=True, cwd=self.cwd)
        elapsed = time.perf_counter() - start
        if p.returncode != 0:
            raise RuntimeError((p.stderr.strip() or p.stdout.strip())[-400:])
        return elapsed, p.stdout

    def close(self):
        os.rmdir(self.cwd)


class CdlakePsql(CdlakeSql):
    """Each statement as a whole `psql --csv` process against one `cdlake serve`."""

    def __init__(self, binary, store, production, config, port):
        super().__init__(binary, store, production, config)
        cmd = [binary, "serve", "--store", store, "--listen", f"127.0.0.1:{port + 1}",
               "--pg-listen", f"127.0.0.1:{port}"]
        if production:
            cmd += ["--production", production]
        if config:
            cmd += ["--config", os.path.abspath(config)]
        self.server = subprocess.Popen(cmd, cwd=self.cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.cmd = ["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "cdlake", "-d", "cdlake",
                    "--csv", "-X", "-q", "-c"]
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port + 1}/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline or self.server.poll() is not None:
                self.close()
                raise SystemExit("cdlake serve did not become healthy")
            time.sleep(0.1)

    def close(self):
        self.server.terminate()
        self.server.wait(timeout=30)
        super().close()


def parse_csv(text: str):
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return [], []
    return rows[0], rows[1:]


# ---- main -------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", required=True, help="a local store directory")
    ap.add_argument("--cdlake", required=True, help="the cdlake binary (a release build for real figures)")
    ap.add_argument("--from", dest="from_", required=True, help="window start, RFC 3339")
    ap.add_argument("--to", required=True, help="window end, RFC 3339")
    ap.add_argument("--via", choices=["sql", "psql"], default="sql",
                    help="cdlake's answers from one `cdlake sql` process per panel (default) or psql against `cdlake serve`")
    ap.add_argument("--port", type=int, default=25435, help="Postgres port of `--via psql` (HTTP on port + 1)")
    ap.add_argument("--repeat", type=int, default=1, help="best of N for both engines (default 1)")
    ap.add_argument("--production", help=f"the production pattern (default {DEFAULT_PRODUCTION})")
    ap.add_argument("--config", help="cdlake.toml: its [teams] for the baseline, and passed to cdlake")
    ap.add_argument("--dedupe", action="store_true", help="de-duplicate the DORA inputs by identity at query time")
    ap.add_argument("--time-rule-only", action="store_true",
                    help="DESIGN's time rule alone, without README's explicit link (an incident naming an artifact "
                         "fails the latest production deployment of that artifact of its service at or before it)")
    ap.add_argument("--explicit-link", action="store_true", help=argparse.SUPPRESS)  # the default since 2026-12-05
    ap.add_argument("--threads", type=int, help="DuckDB threads (default: every core)")
    ap.add_argument("--dashboards", default=str(REPO / "dashboards"))
    ap.add_argument("--only", help="only the panels whose name contains this")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a panel differs or fails")
    a = ap.parse_args()

    store = os.path.abspath(a.store)
    t_from, t_to = BASE.parse_time(a.from_), BASE.parse_time(a.to)
    todo = QUERY.panels(Path(a.dashboards), t_from, t_to)
    if a.only:
        todo = [p for p in todo if a.only in p[0]]
    n = max(a.repeat, 1)

    # cdlake first (then its server, with `--via psql`, is gone before DuckDB runs).
    log(f"cdlake ({a.via}): {len(todo)} panels")
    engine = (CdlakePsql(a.cdlake, store, a.production, a.config, a.port) if a.via == "psql"
              else CdlakeSql(a.cdlake, store, a.production, a.config))
    c_results = {}
    try:
        select1 = min(engine.run("SELECT 1 AS one")[0] for _ in range(n))
        for name, sql, reason in todo:
            if sql is None:
                continue
            try:
                best, out = math.inf, None
                for _ in range(n):
                    elapsed, out = engine.run(sql)
                    best = min(best, elapsed)
                c_results[name] = (best, parse_csv(out), None)
            except RuntimeError as e:
                c_results[name] = (None, None, str(e).splitlines()[-1] if str(e) else "failed")
    finally:
        engine.close()

    log("duckdb: building the views")
    con, build_s, steps = build(store, a.production or DEFAULT_PRODUCTION, teams_rows(a.config), a.dedupe, a.threads,
                                not a.time_rule_only)
    log(f"duckdb {duckdb.__version__}: views built in {build_s:.3f} s (" +
        ", ".join(f"{k} {s:.2f}" for k, s in steps) + ")")

    equal = different = errors = 0
    c_total = d_total = 0.0
    ratios, ratios_build, differing = [], [], []
    for name, sql, reason in todo:
        if sql is None:
            errors += 1
            log(f"[error]     {name}: not expanded ({reason})")
            continue
        c_s, c_out, c_err = c_results[name]
        duck_sql = duck_panel_sql(sql)
        try:
            best = math.inf
            for _ in range(n):
                start = time.perf_counter()
                cur = con.execute(duck_sql)
                d_rows = cur.fetchall()
                best = min(best, time.perf_counter() - start)
            cols = [c[0] for c in cur.description]
            kinds = [kind_of(str(c[1])) for c in cur.description]
            d_s = best
        except duckdb.Error as e:
            errors += 1
            log(f"[error]     {name}: DuckDB: {str(e).splitlines()[0]}")
            continue
        if c_err is not None:
            errors += 1
            log(f"[error]     {name}: cdlake: {c_err}")
            continue
        c_cols, c_text = c_out
        c_total += c_s
        d_total += d_s
        ratios.append(c_s / max(d_s, 1e-6))
        ratios_build.append(c_s / (d_s + build_s))
        timing = f"rows {len(c_text)}/{len(d_rows)}; cdlake {c_s:.3f} s, duckdb {d_s:.4f} s"
        if c_text and len(c_cols) != len(cols):
            different += 1
            differing.append(name)
            log(f"[DIFFERENT] {name}: columns {c_cols} (cdlake) vs {cols} (duckdb); {timing}")
            continue
        c_rows = [tuple(canon(v, k) for v, k in zip(row, kinds)) for row in c_text]
        d_canon = [tuple(canon(v, k) for v, k in zip(row, kinds)) for row in d_rows]
        ok, note = compare(cols, c_rows, d_canon, order_limit(sql))
        if ok:
            equal += 1
            log(f"[equal]     {name}: {timing}" + (f" ({note})" if note else ""))
        else:
            different += 1
            differing.append(name)
            log(f"[DIFFERENT] {name}: {timing}\n    {note}")
    con.close()

    log(f"{equal} equal, {different} different, {errors} errors; DuckDB views {build_s:.2f} s + panels "
        f"{d_total:.2f} s; cdlake panels {c_total:.2f} s ({a.via}; SELECT 1 takes {select1:.3f} s)")
    for name in differing:
        log(f"  different: {name}")
    print(json.dumps({
        "bench": "query",
        "name": f"every panel: cdlake ({'cdlake sql' if a.via == 'sql' else 'psql to cdlake serve'}, a process "
                "per panel) against an independent DuckDB implementation of DESIGN's views, row by row",
        "panels": len(todo), "equal": equal, "different": different, "errors": errors,
        "duckdb_build_s": round(build_s, 3), "duckdb_total_s": round(d_total, 3),
        "cdlake_total_s": round(c_total, 3), "select1_s": round(select1, 3),
        "median_ratio": round(statistics.median(ratios), 2) if ratios else None,
        "median_ratio_with_build": round(statistics.median(ratios_build), 2) if ratios_build else None,
        "ratio_total": round(c_total / (build_s + d_total), 2) if (build_s + d_total) > 0 else None,
    }), flush=True)
    if a.strict and (different or errors):
        sys.exit(1)


if __name__ == "__main__":
    main()
