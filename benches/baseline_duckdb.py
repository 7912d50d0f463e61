#!/usr/bin/env python3
"""An independent DORA report: DuckDB over the raw `events` table, written from DESIGN.md.

    benches/baseline_duckdb.py --store DIR --from T --to T [--by service] [--production RE]

This shares nothing with cdlake's plan (no `--print-sql`, no cdlake views): every figure is
derived here from the raw events by the definitions of DESIGN.md ("DORA definitions (exact)"),
and printed in the shape of `cdlake dora --format json` (contracts/dora-report.schema.json),
so `benches/compare_dora.py` can check cdlake against it value by value and `scripts/bench` can
time both as whole processes.

Reading the store: `events` is a Delta Lake table (DIR/events, partitioned by `date`). The files
of its current snapshot come from the `deltalake` package (`DeltaTable.file_uris()`), never
from a directory listing (which would also see files a compaction removed and files of
uncommitted writes); DuckDB reads exactly those with `read_parquet([...])`.

How DESIGN's definitions are read (where DESIGN leaves a choice, the choice is said):
- Inputs: the events of subjects service, incident, change and artifact, de-duplicated by
  (event_source, event_id) (the earliest stored copy kept); `--assume-unique` skips that step,
  trusting DESIGN's store invariant (the identity is unique in the table at all times), which
  is what cdlake's views do. DESIGN de-duplicates all inputs
  first; since the identity includes no subject, de-duplicating the four subjects' rows is the
  same unless two events of different subjects share an identity (which the store forbids).
- Production: `environment` matches the production pattern (default DESIGN's
  `^(?i)(prod|production)([-_./].*)?$`); a missing environment is not production.
- Deployment: a `service.deployed`, `service.upgraded` or `service.rolledback` event in
  production; its service is its subject id. Deployments of a service are ordered by time;
  equal times by (event_source, event_id), so "next" is always defined.
- Deployment frequency: deployments with from <= time < to; per_day = deployments / window
  days; deploy_days = distinct UTC dates with one. Level by DESIGN's thresholds; with no
  deployment (per_day 0) the level is DESIGN's "else low".
- Change failure rate: D (of service S) failed when an incident.detected/reported event in
  production with service S (content.service.id) has a time in [D.time, next.time) (next = S's
  next deployment, any action, in or after the window; none: no upper bound), or when next is
  a rollback. Rate = failed / deployments in the window (null with none).
  An explicit link wins (README "Change failure rate", asked for by issue 16, on by default;
  `--time-rule-only` gives DESIGN's rule alone): a signal naming an artifact
  (content.artifactId) fails the latest production deployment of that artifact of its service
  at or before it instead, when there is one; otherwise the time rule applies to it.
- Lead time: changes are subject ids of `change.merged` events; m(C) the earliest merged time,
  repository the merged event's content.repository.id. artifact.packaged/published link the
  artifact (subject id) to content.change.id. A production deployed/upgraded event of artifact
  A, linked to a merged change C' of repository R, delivers every change C of R with
  m(C) <= m(C'). delivery(C) = earliest such deployment time (overall: over every service; by
  service: per service). start(C) = earliest `change.created` time, else m(C). A change counts
  where its delivery lies in the window; lead time = delivery - start, not clamped. Median and
  p90 interpolate linearly between ranks (the median of an even count is the mean of the two
  middle values; DESIGN names no method for p90).
- Recovery time: a production incident (subject id; production when any of its events is in
  production) with its earliest `resolved` in the window and a detected/reported event:
  resolved - earliest detected/reported (pairs with resolved before detected are left out).
  open = production incidents detected before `to` and not resolved before `to`.
- Rework: a deployment in the window made while an incident of the same service in
  production is open: detected <= D.time < resolved, or never resolved.
- By service: deployments and deliveries by the deployment's service, incidents by their
  content.service.id; a service is a group when it has any input in the window (deployments,
  delivered changes, recovered or open incidents).
- `unlinked` (DESIGN: "what could not be linked"): production deployments (not rollbacks) in
  the window whose artifact links to no merged change of a known repository; changes merged
  before `to` and not delivered by then; production incidents detected in the window with no
  service; production incidents resolved in the window with no detected/reported event.

Output: the report as JSON on stdout; `--timings` adds per-step seconds on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import date, datetime, timedelta, timezone

T0 = time.perf_counter()

try:
    import duckdb
    from deltalake import DeltaTable
except ImportError as e:  # pragma: no cover
    sys.exit(f"benches/baseline_duckdb.py needs duckdb and deltalake ({e}): pip install duckdb deltalake")

DEFAULT_PRODUCTION = "^(?i)(prod|production)([-_./].*)?$"
DAY_US = 86_400_000_000
REPORT_SUBJECTS = ("service", "incident", "change", "artifact")


# ---- levels (DESIGN.md) ----------------------------------------------------------------------

def frequency_level(per_day: float) -> str:
    if per_day >= 1:
        return "elite"
    if per_day >= 1 / 7:
        return "high"
    if per_day >= 1 / 30:
        return "medium"
    return "low"


def lead_time_level(median_s):
    if median_s is None:
        return None
    day = 86_400
    if median_s < day:
        return "elite"
    if median_s < 7 * day:
        return "high"
    if median_s < 30 * day:
        return "medium"
    return "low"


def failure_level(rate):
    if rate is None:
        return None
    if rate <= 0.05:
        return "elite"
    if rate <= 0.10:
        return "high"
    if rate <= 0.15:
        return "medium"
    return "low"


def recovery_level(median_s):
    if median_s is None:
        return None
    if median_s < 3600:
        return "elite"
    if median_s < 86_400:
        return "high"
    if median_s < 7 * 86_400:
        return "medium"
    return "low"


# ---- time ------------------------------------------------------------------------------------

def parse_time(s: str) -> datetime:
    """RFC 3339 (a `Z` or an offset) or a date (midnight UTC)."""
    s = s.strip()
    if len(s) == 10:
        return datetime.combine(date.fromisoformat(s), datetime.min.time(), tzinfo=timezone.utc)
    t = datetime.fromisoformat(s.replace("Z", "+00:00").replace("z", "+00:00"))
    if t.tzinfo is None:
        raise SystemExit(f"time {s!r} has no offset: write it as RFC 3339 (…Z)")
    return t.astimezone(timezone.utc)


def rfc3339(t: datetime) -> str:
    t = t.astimezone(timezone.utc)
    if t.microsecond:
        return t.strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0") + "Z"
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def micros(t: datetime) -> int:
    return (t - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)


# ---- the report ------------------------------------------------------------------------------

def snapshot_files(store: str) -> list[str]:
    """The Parquet files of the current snapshot of `events` (a Delta table)."""
    uris = DeltaTable(os.path.join(store, "events")).file_uris()
    return [u[len("file://"):] if u.startswith("file://") else u for u in uris]


def sql_list(values) -> str:
    return "[" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + "]"


def build(con, files: list[str], production: str, t_from: int, t_to: int, plain: bool,
          assume_unique: bool = False, explicit_link: bool = True):
    """Create the temp tables every figure reads."""
    pat = production.replace("'", "''")
    subjects = ", ".join(f"'{s}'" for s in REPORT_SUBJECTS)
    # The report's inputs, de-duplicated by identity (earliest stored copy first).
    if files:
        source = f"read_parquet({sql_list(files)}, hive_partitioning = true, union_by_name = true)"
    else:
        source = ("(SELECT NULL::VARCHAR AS event_source, NULL::VARCHAR AS event_id, NULL::VARCHAR AS subject,"
                  " NULL::VARCHAR AS predicate, NULL::TIMESTAMPTZ AS time, NULL::TIMESTAMPTZ AS ingested_at,"
                  " NULL::VARCHAR AS subject_id, NULL::VARCHAR AS service, NULL::VARCHAR AS environment,"
                  " NULL::VARCHAR AS repository, NULL::VARCHAR AS change_id, NULL::VARCHAR AS artifact_id"
                  " WHERE false)")
    con.execute(f"""
        CREATE TEMP TABLE ev AS
        SELECT event_source, event_id, subject, predicate, epoch_us(time) AS t, subject_id,
               service, environment, repository, change_id, artifact_id,
               coalesce(regexp_matches(environment, '{pat}'), false) AS prod
        FROM {source}
        WHERE subject IN ({subjects})
        {"" if assume_unique else
         "QUALIFY row_number() OVER (PARTITION BY event_source, event_id ORDER BY ingested_at) = 1"}
    """)
    # Production deployments, each with its service's next deployment.
    con.execute("""
        CREATE TEMP TABLE deps AS
        SELECT subject_id AS service, t, predicate AS action, artifact_id, event_source, event_id,
               lead(t) OVER w AS next_t, lead(predicate) OVER w AS next_action
        FROM ev
        WHERE subject = 'service' AND predicate IN ('deployed', 'upgraded', 'rolledback') AND prod
        WINDOW w AS (PARTITION BY subject_id ORDER BY t, event_source, event_id)
    """)
    # Incident signals (each detected/reported event in production with a service).
    con.execute("""
        CREATE TEMP TABLE signals AS
        SELECT service, t, artifact_id, event_source, event_id FROM ev
        WHERE subject = 'incident' AND predicate IN ('detected', 'reported') AND prod
          AND service IS NOT NULL
    """)
    # The explicit links: each signal naming an artifact, with the latest production deployment
    # of that artifact of its service at or before it (signals whose artifact was never deployed
    # there are not linked, and the time rule applies to them).
    con.execute(f"""
        CREATE TEMP TABLE linked AS
        SELECT s.event_source AS signal_source, s.event_id AS signal_id,
               d.event_source, d.event_id
        FROM (SELECT * FROM signals WHERE artifact_id IS NOT NULL AND {str(explicit_link).lower()}) s
        ASOF JOIN deps d ON d.service = s.service AND d.artifact_id = s.artifact_id AND s.t >= d.t
    """)
    # Production incidents.
    con.execute("""
        CREATE TEMP TABLE incidents AS
        SELECT subject_id AS incident, min(service) AS service,
               min(t) FILTER (WHERE predicate IN ('detected', 'reported')) AS detected,
               min(t) FILTER (WHERE predicate = 'resolved') AS resolved
        FROM ev WHERE subject = 'incident'
        GROUP BY subject_id
        HAVING bool_or(prod)
    """)
    # The window's deployments, failed and rework.
    con.execute(f"""
        CREATE TEMP TABLE wdeps AS
        SELECT d.service, d.t, d.action, d.artifact_id,
               coalesce(d.next_action = 'rolledback', false)
                 OR EXISTS (SELECT 1 FROM linked l
                            WHERE l.event_source = d.event_source AND l.event_id = d.event_id)
                 OR EXISTS (SELECT 1 FROM signals s
                            WHERE s.service = d.service AND s.t >= d.t
                              AND (d.next_t IS NULL OR s.t < d.next_t)
                              AND NOT EXISTS (SELECT 1 FROM linked l
                                              WHERE l.signal_source = s.event_source
                                                AND l.signal_id = s.event_id)) AS failed,
               EXISTS (SELECT 1 FROM incidents i
                       WHERE i.service = d.service AND i.detected <= d.t
                         AND (i.resolved IS NULL OR d.t < i.resolved)) AS rework
        FROM deps d
        WHERE d.t >= {t_from} AND d.t < {t_to}
    """)
    # Merged changes.
    con.execute("""
        CREATE TEMP TABLE changes AS
        SELECT subject_id AS change,
               min(t) FILTER (WHERE predicate = 'merged') AS merged,
               min(repository) FILTER (WHERE predicate = 'merged') AS repository,
               coalesce(min(t) FILTER (WHERE predicate = 'created'),
                        min(t) FILTER (WHERE predicate = 'merged')) AS start
        FROM ev WHERE subject = 'change'
        GROUP BY subject_id
        HAVING min(t) FILTER (WHERE predicate = 'merged') IS NOT NULL
    """)
    con.execute("""
        CREATE TEMP TABLE links AS
        SELECT DISTINCT subject_id AS artifact, change_id AS change FROM ev
        WHERE subject = 'artifact' AND predicate IN ('packaged', 'published') AND change_id IS NOT NULL
    """)
    # Each delivering deployment with its frontier m(C'). Only deployments before `to` can be a
    # delivery in (or before) the window, which is all the report asks.
    con.execute(f"""
        CREATE TEMP TABLE fronts AS
        SELECT d.service, d.t, c.repository, c.merged AS frontier
        FROM deps d
        JOIN links l ON l.artifact = d.artifact_id
        JOIN changes c ON c.change = l.change
        WHERE d.action <> 'rolledback' AND c.repository IS NOT NULL AND d.t < {t_to}
    """)
    if plain:
        # The definition as it reads: every (change, delivering deployment) pair, then the
        # earliest per service. Quadratic per repository; kept to check the fast form.
        con.execute("""
            CREATE TEMP TABLE deliveries AS
            SELECT c.change, f.service, min(f.t) AS delivered, any_value(c.start) AS start
            FROM changes c JOIN fronts f ON f.repository = c.repository AND f.frontier >= c.merged
            GROUP BY c.change, f.service
        """)
    else:
        # The same, in n log n: per (repository, service), the earliest deployment whose frontier
        # is >= f is a suffix minimum over frontiers; a change takes the one at the smallest
        # frontier >= m(C) (an ASOF join).
        con.execute("""
            CREATE TEMP TABLE deliveries AS
            WITH stairs AS (
              SELECT repository, service, frontier, min(delivered) AS delivered FROM (
                SELECT repository, service, frontier,
                       min(t) OVER (PARTITION BY repository, service ORDER BY frontier DESC) AS delivered
                FROM fronts)
              GROUP BY repository, service, frontier),
            pairs AS (SELECT DISTINCT repository, service FROM fronts),
            cs AS (SELECT c.change, c.repository, c.merged, c.start, p.service
                   FROM changes c JOIN pairs p ON p.repository = c.repository)
            SELECT cs.change, cs.service, s.delivered, cs.start
            FROM cs ASOF JOIN stairs s
              ON cs.repository = s.repository AND cs.service = s.service AND s.frontier >= cs.merged
        """)


def figures_from(dep, lead, rec, open_count, days):
    n, deploy_days, failed, rework = dep or (0, 0, 0, 0)
    changes, lead_med, lead_p90 = lead or (0, None, None)
    incidents, rec_med, rec_p90 = rec or (0, None, None)
    per_day = n / days if days > 0 else 0.0
    rate = lambda k: (k / n) if n else None  # noqa: E731
    return {
        "deployment_frequency": {"deployments": n, "deploy_days": deploy_days, "per_day": per_day,
                                 "level": frequency_level(per_day)},
        "lead_time": {"changes": changes, "median_seconds": lead_med, "p90_seconds": lead_p90,
                      "level": lead_time_level(lead_med)},
        "change_failure_rate": {"deployments": n, "failed": failed, "rate": rate(failed),
                                "level": failure_level(rate(failed))},
        "recovery_time": {"incidents": incidents, "median_seconds": rec_med, "p90_seconds": rec_p90,
                          "open": open_count, "level": recovery_level(rec_med)},
        "rework_rate": {"deployments": n, "rework": rework, "rate": rate(rework)},
    }


def keyed(rows):
    """Rows of (group key or None for the overall row, values…) as {key: values}."""
    return {r[0]: tuple(r[1:]) for r in rows}


def report(con, t_from: int, t_to: int, by_service: bool) -> tuple[dict, dict]:
    win = f"BETWEEN {t_from} AND {t_to - 1}"
    # GROUPING SETS give the overall row and one row per service (cheap: these tables are
    # small); the overall row is told apart by grouping(), not by a NULL key.
    sets = "GROUPING SETS ((), (service))"

    def grouped(sql):
        rows = con.execute(sql).fetchall()
        overall = {tuple(r[2:]) for r in rows if r[0] == 1}
        per = {r[1]: tuple(r[2:]) for r in rows if r[0] == 0}
        return (next(iter(overall)) if overall else None), per

    dep = grouped(f"""
        SELECT grouping(service), service, count(*), count(DISTINCT t // {DAY_US}),
               count(*) FILTER (WHERE failed), count(*) FILTER (WHERE rework)
        FROM wdeps GROUP BY {sets}""")
    # Overall lead time: each change at its earliest delivery over every service.
    lead_overall = con.execute(f"""
        SELECT count(*), quantile_cont(s, 0.5), quantile_cont(s, 0.9) FROM (
          SELECT (min(delivered) - any_value(start)) / 1e6 AS s FROM deliveries GROUP BY change
          HAVING min(delivered) {win})""").fetchone()
    lead_by = {}
    if by_service:
        lead_by = keyed(con.execute(f"""
            SELECT service, count(*), quantile_cont((delivered - start) / 1e6, 0.5),
                   quantile_cont((delivered - start) / 1e6, 0.9)
            FROM deliveries WHERE delivered {win} GROUP BY service""").fetchall())
    rec = grouped(f"""
        SELECT grouping(service), service, count(*), quantile_cont((resolved - detected) / 1e6, 0.5),
               quantile_cont((resolved - detected) / 1e6, 0.9)
        FROM incidents WHERE resolved {win} AND detected IS NOT NULL AND resolved >= detected
        GROUP BY {sets}""")
    opened = grouped(f"""
        SELECT grouping(service), service, count(*) FROM incidents
        WHERE detected < {t_to} AND (resolved IS NULL OR resolved >= {t_to})
        GROUP BY {sets}""")

    days = (t_to - t_from) / DAY_US
    overall = figures_from(dep[0], lead_overall if lead_overall[0] else None, rec[0],
                           opened[0][0] if opened[0] else 0, days)
    groups = None
    if by_service:
        # Incidents with no service belong to no group.
        for part in (dep[1], rec[1], opened[1]):
            part.pop(None, None)
        keys = sorted(set(dep[1]) | set(lead_by) | set(rec[1]) | set(opened[1]))
        groups = []
        for k in keys:
            g = {"service": k}
            g.update(figures_from(dep[1].get(k), lead_by.get(k), rec[1].get(k),
                                  (opened[1].get(k) or (0,))[0], days))
            groups.append(g)

    unlinked = {
        "deployments_unknown_artifact": con.execute("""
            SELECT count(*) FROM wdeps d WHERE d.action <> 'rolledback' AND NOT EXISTS (
              SELECT 1 FROM links l JOIN changes c ON c.change = l.change
              WHERE l.artifact = d.artifact_id AND c.repository IS NOT NULL)""").fetchone()[0],
        "changes_not_delivered": con.execute(f"""
            SELECT count(*) FROM changes c WHERE c.merged < {t_to}
              AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.change = c.change)""").fetchone()[0],
        "incidents_without_service": con.execute(f"""
            SELECT count(*) FROM incidents WHERE service IS NULL AND detected {win}""").fetchone()[0],
        "incidents_without_detection": con.execute(f"""
            SELECT count(*) FROM incidents WHERE detected IS NULL AND resolved {win}""").fetchone()[0],
    }
    return {"overall": overall, "groups": groups}, unlinked


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", required=True, help="a local store directory (holding events/)")
    ap.add_argument("--from", dest="from_", required=True, help="window start, RFC 3339 or a date")
    ap.add_argument("--to", required=True, help="window end (exclusive), RFC 3339 or a date")
    ap.add_argument("--by", choices=["service"], help="also report per service")
    ap.add_argument("--production", default=DEFAULT_PRODUCTION, help="the production pattern")
    ap.add_argument("--threads", type=int, help="DuckDB threads (default: every core)")
    ap.add_argument("--plain", action="store_true",
                    help="compute deliveries with the quadratic join as the definition reads (a check)")
    ap.add_argument("--assume-unique", action="store_true",
                    help="trust the store's identity invariant (DESIGN: unique in the table at all "
                         "times) and skip de-duplicating the inputs, as cdlake's views do")
    ap.add_argument("--time-rule-only", action="store_true",
                    help="DESIGN's time rule alone: no explicit artifact link (README's rule, on by default)")
    ap.add_argument("--timings", action="store_true", help="per-step seconds on stderr")
    args = ap.parse_args(argv)

    t_from, t_to = parse_time(args.from_), parse_time(args.to)
    if t_from >= t_to:
        sys.exit(f"the window is empty: from {rfc3339(t_from)} is not before to {rfc3339(t_to)}")
    steps = [("imports", time.perf_counter() - T0)]
    t = time.perf_counter()
    files = snapshot_files(args.store)
    steps.append((f"snapshot ({len(files)} files)", time.perf_counter() - t))

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    if args.threads:
        con.execute(f"SET threads = {args.threads}")
    t = time.perf_counter()
    f, to = micros(t_from), micros(t_to)
    build(con, files, args.production, f, to, args.plain, args.assume_unique,
          not args.time_rule_only)
    steps.append(("inputs", time.perf_counter() - t))
    t = time.perf_counter()
    figures, unlinked = report(con, f, to, args.by == "service")
    steps.append(("figures", time.perf_counter() - t))

    out = {"window": {"from": rfc3339(t_from), "to": rfc3339(t_to), "days": (to - f) / DAY_US}}
    out.update(figures["overall"])
    if figures["groups"] is not None:
        out["groups"] = figures["groups"]
    out["unlinked"] = unlinked
    out["production"] = args.production
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")
    if args.timings:
        for name, s in steps:
            print(f"baseline_duckdb: {name}: {s:.3f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
