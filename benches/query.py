#!/usr/bin/env python3
"""Query benchmark (issue 7, item 3): `cdlake dora` and the Grafana panels against DuckDB
running the same definitions on the same Parquet files, in the same run.

    benches/query.py --store DIR --cdlake target/release/cdlake [--from T --to T] [--repeat 3]

What it does:

1. Runs `cdlake dora --format json` once (a warm-up that also pins the window: `--from`/`--to`
   may be relative, so every later run and the DuckDB side use the window that report printed).
2. Gets the SQL with `cdlake dora --print-sql` for that window: the views exactly as the engine
   creates them, and the statements `dora::report` runs.
3. DuckDB: `events` (and `spans`, `dead_letters`) over `DIR/<table>/*/*.parquet` with Hive
   partitioning (`date` as VARCHAR), projected onto cdlake's own table schema (columns the
   files lack are typed NULLs, as DataFusion fills them); an empty table where a table has no
   files yet. An empty `teams` table (key, team) as in query/src/engine.rs. Then every view,
   translated by the dialect rewrites of `VIEW_REWRITES` below.
4. Times, best of `--repeat`:
   - `cdlake dora --format json` (process wall time), overall and `--by service`;
   - DuckDB running the report's statements (all rows fetched) plus the report's aggregation in
     Python (a port of `report` in query/src/dora.rs), from a fresh in-memory database each
     time: the views are created outside the timing, every Parquet read is inside it;
   - every Grafana panel query (`rawSql` of dashboards/*.json, macros and "All" variables
     expanded for the same window) via `cdlake sql --format json` against DuckDB;
   - a `SELECT 1` baseline: the fixed cost of a cdlake process (start, open the store, define
     the views), which every cdlake figure includes and no DuckDB figure does.
5. Checks the engines agree: the DORA report's counts (deployments, changes, incidents, and
   the other figures) overall and per service, and each panel's row count; prints a `mismatch`
   line for each difference.

Output: JSON Lines on stdout, one per measurement:
    {"bench": "query", "name": "...", "cdlake_s": x, "duckdb_s": y, "ratio": x/y, "rows": n}
skipped panels as {"bench": "query", "name": "...", "skipped": "reason"}, and disagreements as
{"bench": "query", "name": "...", "mismatch": "what", "cdlake": a, "duckdb": b}.
Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import re
import subprocess
import sys
import time
from collections import defaultdict
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

try:
    import duckdb
except ImportError:  # pragma: no cover
    sys.exit("benches/query.py needs the duckdb package: pip install duckdb")

REPO = Path(__file__).resolve().parent.parent


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def emit(obj):
    print(json.dumps(obj), flush=True)


# ---- dialect rewrites (DataFusion SQL -> DuckDB SQL) -----------------------------------------
#
# Each rewrite keeps the meaning exactly; nothing else is changed. The session settings in
# `SESSION` belong to the same list: they make DuckDB evaluate as DataFusion does.

SESSION = [
    # DataFusion evaluates in UTC (timestamps are timestamp(us, "UTC")): date_trunc('week', ...),
    # CAST(ts AS DATE) and the string literals Grafana compares timestamps with must be read in
    # UTC too, not in the machine's zone.
    "SET TimeZone = 'UTC'",
    # DataFusion (and Postgres, which the panels are written for) divide integers by integers
    # as integers; DuckDB's `/` would return a DOUBLE.
    "SET integer_division = true",
    # (DuckDB's parquet_metadata_cache stays off, its default: creating the views binds them,
    # which reads the footers, and a cache would carry that read out of the timed part.)
]


def _matching_paren(sql: str, open_index: int) -> int:
    """Index of the `)` closing the `(` at `open_index` (no parentheses inside string literals
    in the SQL this is applied to)."""
    depth = 0
    for i in range(open_index, len(sql)):
        if sql[i] == "(":
            depth += 1
        elif sql[i] == ")":
            depth -= 1
            if depth == 0:
                return i
    raise ValueError(f"unbalanced parentheses at {open_index}")


# A column reference (optionally qualified, optionally quoted; NULL is no column), or
# coalesce(...) of them.
_COLUMN = r'(?!NULL\b)(?:[A-Za-z_]\w*\.)?(?:[A-Za-z_]\w*|"[^"]+")'
_TIMESTAMP_OPERAND = re.compile(
    rf"^\s*(?:{_COLUMN}|coalesce\(\s*{_COLUMN}(?:\s*,\s*{_COLUMN})*\s*\))\s*$", re.I
)


def rewrite_timestamp_casts(sql: str) -> str:
    """`CAST(<column> AS BIGINT)` -> `epoch_us(<column>)`, and the same for coalesce(columns).

    In the views and the report's statements, a cast of a column (or a coalesce of columns)
    to BIGINT is always a cast of a timestamp(us, UTC): DataFusion gives its microseconds since
    the epoch, DuckDB has no such cast (TIMESTAMP WITH TIME ZONE -> BIGINT is an error) and
    spells it `epoch_us`. Other casts to BIGINT (`CAST(NULL AS BIGINT)`,
    `CAST(row_number() OVER (...) AS BIGINT)`) are left alone: their operand is no column."""
    out, pos = [], 0
    pattern = re.compile(r"\bCAST\(", re.I)
    while True:
        m = pattern.search(sql, pos)
        if not m:
            out.append(sql[pos:])
            return "".join(out)
        open_index = m.end() - 1
        close = _matching_paren(sql, open_index)
        inner = sql[open_index + 1 : close]
        tail = re.search(r"\s+AS\s+BIGINT\s*$", inner, re.I)
        operand = inner[: tail.start()] if tail else None
        if operand is not None and _TIMESTAMP_OPERAND.match(operand):
            out.append(sql[pos : m.start()])
            out.append(f"epoch_us({rewrite_timestamp_casts(operand.strip())})")
        else:
            # Keep this CAST, rewrite what is inside it.
            out.append(sql[pos : open_index + 1])
            out.append(rewrite_timestamp_casts(inner))
            out.append(")")
        pos = close + 1


VIEW_REWRITES = [
    # 1. DataFusion's regexp_like(s, p) is DuckDB's regexp_matches(s, p): both test whether the
    #    pattern matches anywhere in s (unanchored; the production pattern anchors itself with
    #    ^...$), both accept the (?i) flag (Rust regex / RE2 syntax), both give NULL for NULL.
    ("regexp_like -> regexp_matches", lambda s: re.sub(r"\bregexp_like\(", "regexp_matches(", s, flags=re.I)),
    # 2. CAST(timestamp AS BIGINT) -> epoch_us(timestamp): see rewrite_timestamp_casts.
    ("CAST(timestamp AS BIGINT) -> epoch_us(timestamp)", rewrite_timestamp_casts),
    # 3. The ordered aggregate last_value(x ORDER BY ...) is DuckDB's last(x ORDER BY ...)
    #    (DuckDB's last_value is a window function only); both return the last row's value,
    #    NULL included, and both take FILTER (WHERE ...).
    ("last_value(x ORDER BY ...) -> last(x ORDER BY ...)", lambda s: re.sub(r"\blast_value\(", "last(", s, flags=re.I)),
]

PANEL_REWRITES = VIEW_REWRITES + [
    # 3. Byte length of a BINARY column: the panel hex-encodes it and halves the length
    #    (portable between Postgres and DataFusion); DuckDB's encode() takes text, not bytes,
    #    and octet_length(blob) is the byte length itself.
    (
        "octet_length(encode(x, 'hex')) / 2 -> octet_length(x)",
        lambda s: re.sub(
            r"octet_length\(\s*encode\(\s*([\w.]+)\s*,\s*'hex'\s*\)\s*\)\s*/\s*2",
            r"octet_length(\1)",
            s,
            flags=re.I,
        ),
    ),
]


def translate(sql: str, rewrites) -> str:
    for _, rewrite in rewrites:
        sql = rewrite(sql)
    return sql


# ---- cdlake -------------------------------------------------------------------------------


def run_cdlake(args_list, cdlake: str) -> tuple[float, str]:
    start = time.perf_counter()
    p = subprocess.run([cdlake, *args_list], capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if p.returncode != 0:
        raise RuntimeError(f"cdlake {' '.join(args_list[:2])} failed ({p.returncode}): {p.stderr.strip()[-2000:]}")
    return elapsed, p.stdout


def best_of(n: int, f):
    """(best seconds, result of the last run)."""
    best, result = math.inf, None
    for _ in range(n):
        elapsed, result = f()
        best = min(best, elapsed)
    return best, result


# ---- DuckDB setup --------------------------------------------------------------------------


def duck_type(arrow_type: str) -> str:
    t = arrow_type.strip()
    if t.startswith("Timestamp"):
        # Timestamp(µs, "UTC") or Timestamp(Microsecond, Some("UTC")): with a zone.
        return "TIMESTAMPTZ" if ("UTC" in t or "Some(" in t or '"' in t) else "TIMESTAMP"
    simple = {
        "Utf8": "VARCHAR", "Utf8View": "VARCHAR", "LargeUtf8": "VARCHAR",
        "Binary": "BLOB", "BinaryView": "BLOB", "LargeBinary": "BLOB",
        "Boolean": "BOOLEAN", "Int8": "TINYINT", "Int16": "SMALLINT", "Int32": "INTEGER",
        "Int64": "BIGINT", "UInt8": "UTINYINT", "UInt16": "USMALLINT", "UInt32": "UINTEGER",
        "UInt64": "UBIGINT", "Float32": "FLOAT", "Float64": "DOUBLE", "Date32": "DATE",
    }
    if t in simple:
        return simple[t]
    raise ValueError(f"no DuckDB type for Arrow {arrow_type}")


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class DuckSetup:
    """Everything needed to build a fresh DuckDB database over the store."""

    TABLES = ("events", "spans", "dead_letters")

    def __init__(self, store: str, schemas: dict, views: list, teams_columns=("key", "team")):
        self.store = store
        self.schemas = schemas  # table -> [(column, duckdb type)]
        self.views = [(name, translate(sql, VIEW_REWRITES)) for name, sql in views]
        self.teams_columns = teams_columns
        self.table_sql = {}
        probe = duckdb.connect()
        for stmt in SESSION:
            probe.execute(stmt)
        for table in self.TABLES:
            self.table_sql[table] = self._table_sql(probe, table)
        probe.close()
        self.view_errors = {}

    def _table_sql(self, con, table: str) -> str:
        columns = self.schemas.get(table, [])
        pattern = os.path.join(self.store, table, "*", "*.parquet")
        if not glob.glob(pattern):
            # No files: an empty table of cdlake's schema (DataFusion sees an empty table).
            cols = ", ".join(f"{quote(c)} {t}" for c, t in columns)
            return f"CREATE TABLE {table} ({cols})"
        source = (
            f"read_parquet('{pattern}', hive_partitioning = true, "
            f"hive_types = {{'date': VARCHAR}}, union_by_name = true)"
        )
        present = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
        projection = ", ".join(
            quote(c) if c in present else f"CAST(NULL AS {t}) AS {quote(c)}" for c, t in columns
        )
        return f"CREATE VIEW {table} AS SELECT {projection} FROM {source}"

    def connect(self):
        con = duckdb.connect()
        for stmt in SESSION:
            con.execute(stmt)
        for table in self.TABLES:
            con.execute(self.table_sql[table])
        key, team = self.teams_columns
        con.execute(f"CREATE TABLE teams ({quote(key)} VARCHAR NOT NULL, {quote(team)} VARCHAR NOT NULL)")
        for name, sql in self.views:
            if name in self.view_errors:
                continue
            try:
                con.execute(f"CREATE VIEW {name} AS {sql}")
            except duckdb.Error as e:
                self.view_errors[name] = str(e).splitlines()[0]
                log(f"  DuckDB cannot create view {name}: {self.view_errors[name]}")
        return con


# ---- the report's aggregation, ported from query/src/dora.rs ---------------------------------

DAY_US = 86_400_000_000


def percentile(values, p):
    if not values:
        return None
    v = sorted(values)
    rank = min(max(p, 0.0), 1.0) * (len(v) - 1)
    lo, hi = math.floor(rank), math.ceil(rank)
    return v[lo] + (v[hi] - v[lo]) * (rank - lo)


def figures(deps, leads, recoveries, open_count, days):
    n = len(deps)
    failed = sum(1 for d in deps if d[3])
    rework = sum(1 for d in deps if d[4])
    return {
        "deployments": n,
        "deploy_days": len({d[0] // DAY_US for d in deps}),  # distinct UTC dates
        "per_day": n / days if days > 0 else 0.0,
        "failed": failed,
        "rework": rework,
        "changes": len(leads),
        "lead_median": percentile(leads, 0.5),
        "lead_p90": percentile(leads, 0.9),
        "incidents": len(recoveries),
        "recovery_median": percentile(recoveries, 0.5),
        "recovery_p90": percentile(recoveries, 0.9),
        "open": open_count,
    }


def compute(by_service: bool, deps, dels, incs, w_from, w_to):
    """`report`'s `compute` for Key::Overall (by_service False) or GroupBy::Service.
    deps: (t, service, team, failed, rework); dels: (change_id, service, team, started,
    delivered); incs: (service, team, detected, resolved)."""
    contains = lambda t: w_from <= t < w_to  # noqa: E731
    key = (lambda service: service) if by_service else (lambda service: "")
    dep_groups = defaultdict(list)
    for d in deps:
        dep_groups[key(d[1])].append(d)
    first = {}
    for d in dels:
        k = (key(d[1]), d[0])
        e = first.get(k)
        if e is None or (d[4], d[1]) < (e[4], e[1]):
            first[k] = d
    lead_groups = defaultdict(list)
    for (k, _), d in first.items():
        if contains(d[4]):
            lead_groups[k].append(max((d[4] - d[3]) / 1e6, 0.0))
    rec_groups, open_groups = defaultdict(list), defaultdict(int)
    for service, _team, det, res in incs:
        k = key(service) if (service is not None or not by_service) else None
        if det is not None and res is not None and contains(res) and res >= det:
            if k is not None:
                rec_groups[k].append((res - det) / 1e6)
        elif det is not None and det < w_to and (res is None or res >= w_to):
            if k is not None:
                open_groups[k] += 1
    keys = set(dep_groups) | set(lead_groups) | set(rec_groups) | set(open_groups)
    if not by_service:
        keys.add("")
    days = (w_to - w_from) / 1e6 / 86_400.0
    return {
        k: figures(dep_groups.get(k, []), lead_groups.get(k, []), rec_groups.get(k, []), open_groups.get(k, 0), days)
        for k in sorted(keys)
    }


def duck_report(setup: DuckSetup, queries, by_service: bool, w_from: int, w_to: int):
    """The report on DuckDB: (seconds, rows fetched, figures, unlinked), timed from the first
    query to the aggregated figures."""
    con = setup.connect()
    translated = {name: translate(sql, VIEW_REWRITES) for name, sql in queries}
    start = time.perf_counter()
    rows = {name: con.execute(sql).fetchall() for name, sql in translated.items()}
    overall = compute(False, rows["deployments"], rows["deliveries"], rows["incidents"], w_from, w_to)
    groups = compute(True, rows["deployments"], rows["deliveries"], rows["incidents"], w_from, w_to) if by_service else None
    incs = rows["incidents"]
    unlinked = {
        "deployments_unknown_artifact": max(rows["deployments_unknown_artifact"][0][0] or 0, 0),
        "changes_not_delivered": max(rows["changes_not_delivered"][0][0] or 0, 0),
        "incidents_without_service": sum(1 for s, _, d, _ in incs if s is None and d is not None and w_from <= d < w_to),
        "incidents_without_detection": sum(1 for _, _, d, r in incs if d is None and r is not None and w_from <= r < w_to),
    }
    elapsed = time.perf_counter() - start
    con.close()
    return elapsed, sum(len(r) for r in rows.values()), overall, groups, unlinked


def cdlake_figures(f: dict) -> dict:
    """The same figures from a report (or group) of `cdlake dora --format json`."""
    df, lt, cfr, rt, rw = (f["deployment_frequency"], f["lead_time"], f["change_failure_rate"], f["recovery_time"], f["rework_rate"])
    return {
        "deployments": df["deployments"], "deploy_days": df["deploy_days"], "per_day": df["per_day"],
        "failed": cfr["failed"], "rework": rw["rework"],
        "changes": lt["changes"], "lead_median": lt["median_seconds"], "lead_p90": lt["p90_seconds"],
        "incidents": rt["incidents"], "recovery_median": rt["median_seconds"], "recovery_p90": rt["p90_seconds"],
        "open": rt["open"],
    }


def same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)
    return a == b


def check_report(name, report: dict, overall, groups, unlinked) -> int:
    """Mismatch lines for every figure that differs; returns how many."""
    mismatches = 0

    def compare(where, c, d):
        nonlocal mismatches
        for k in c:
            if not same(c[k], d.get(k)):
                mismatches += 1
                emit({"bench": "query", "name": name, "mismatch": f"{where}{k}", "cdlake": c[k], "duckdb": d.get(k)})

    compare("", cdlake_figures(report), overall[""])
    compare("unlinked.", report["unlinked"], unlinked)
    if groups is not None:
        c_groups = {g["service"]: cdlake_figures(g) for g in report.get("groups") or []}
        for service in sorted(set(c_groups) | set(groups)):
            if service not in c_groups or service not in groups:
                mismatches += 1
                emit({"bench": "query", "name": name, "mismatch": f"group {service}",
                      "cdlake": service in c_groups, "duckdb": service in groups})
                continue
            compare(f"{service}.", c_groups[service], groups[service])
    return mismatches


# ---- Grafana panels ------------------------------------------------------------------------


def rfc3339(t: datetime) -> str:
    """Go's RFC3339Nano in UTC, as Grafana's backend formats $__timeFrom() and friends."""
    base = t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    if t.microsecond:
        return f"{base}.{t.microsecond:06d}".rstrip("0") + "Z"
    return base + "Z"


def parse_rfc3339(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).astimezone(timezone.utc)


INTERVALS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def go_float(v: float) -> str:
    """Go's %v of a float64 (what Grafana prints for $__timeGroup's interval)."""
    if v == int(v) and abs(v) < 1e21:
        exp = len(str(int(abs(v)))) - 1
        if exp < 6:
            return str(int(v))
    r = repr(float(v))
    if "e" in r or abs(v) >= 1e6:
        m, e = f"{v:e}".split("e")
        m = m.rstrip("0").rstrip(".")
        return f"{m}e{'+' if int(e) >= 0 else '-'}{abs(int(e)):02d}"
    return r


def expand_macros(sql: str, t_from: datetime, t_to: datetime) -> str:
    """Grafana's PostgreSQL macro engine (TimescaleDB off) for the macros the dashboards use."""
    f, t = rfc3339(t_from), rfc3339(t_to)

    def macro(m):
        name, args = m.group(1), [a.strip(" ") for a in m.group(2).split(",")]
        a0 = args[0]
        if name == "__timeFilter":
            return f"{a0} BETWEEN '{f}' AND '{t}'"
        if name == "__timeFrom":
            return f"'{f}'"
        if name == "__timeTo":
            return f"'{t}'"
        if name in ("__timeGroup", "__timeGroupAlias"):
            iv = re.fullmatch(r"(\d+)(ms|s|m|h|d|w)", args[1].strip("'"))
            if not iv:
                raise ValueError(f"interval {args[1]}")
            s = go_float(int(iv.group(1)) * INTERVALS[iv.group(2)])
            group = f"floor(extract(epoch from {a0})/{s})*{s}"
            return group + (' AS "time"' if name == "__timeGroupAlias" else "")
        if name == "__time":
            return f'{a0} AS "time"'
        if name == "__timeEpoch":
            return f'extract(epoch from {a0}) as "time"'
        raise ValueError(f"macro ${name} is not expanded by this benchmark")

    return re.sub(r"\$([_a-zA-Z0-9]+)\(([^\)]*)\)", macro, sql)


def expand_variables(sql: str, variables: dict) -> str:
    """Template variables at their "All" value (`allValue`, inserted as it is)."""

    def var(m):
        name = m.group(1) or m.group(2) or m.group(3)
        return variables.get(name, m.group(0))

    return re.sub(r"\$\{(\w+)\}|\[\[(\w+)\]\]|\$(\w+)\b(?!\()", var, sql)


def panels(dashboards_dir: Path, t_from: datetime, t_to: datetime):
    """(name, expanded SQL) for every rawSql of every dashboard, or (name, None, reason)."""
    out = []
    for path in sorted(dashboards_dir.glob("*.json")):
        d = json.loads(path.read_text())
        variables = {}
        for v in (d.get("templating") or {}).get("list", []):
            if v.get("includeAll") and v.get("allValue") is not None:
                variables[v["name"]] = v["allValue"]
            elif v.get("current", {}).get("value") not in (None, [], "$__all"):
                cur = v["current"]["value"]
                variables[v["name"]] = ", ".join(f"'{x}'" for x in cur) if isinstance(cur, list) else str(cur)

        def walk(ps):
            for p in ps:
                walk(p.get("panels", []))
                targets = [t for t in p.get("targets", []) if t.get("rawSql")]
                for t in targets:
                    name = f"panel {path.stem}: {p.get('title', '?')}"
                    if len(targets) > 1:
                        name += f" [{t.get('refId', '?')}]"
                    try:
                        sql = expand_macros(expand_variables(t["rawSql"], variables), t_from, t_to)
                        out.append((name, sql, None))
                    except ValueError as e:
                        out.append((name, None, str(e)))

        walk(d.get("panels", []))
    seen = defaultdict(int)
    unique = []
    for name, sql, reason in out:
        seen[name] += 1
        unique.append((name if seen[name] == 1 else f"{name} #{seen[name]}", sql, reason))
    return unique


def duck_rows(con, sql):
    cur = con.execute(sql)
    cols = [c[0] for c in cur.description]
    return cols, cur.fetchall()


COMPARED = [0]  # single values compared (reported at the end)


def check_single_row(name, c_rows, cols, d_rows) -> int:
    """For one-row panels, compare the numeric values column by column (cdlake's JSON leaves
    out NULL fields; timestamps and strings are not compared)."""
    if len(c_rows) != 1 or len(d_rows) != 1:
        return 0

    def numeric(x):
        return isinstance(x, (int, float, Decimal)) and not isinstance(x, bool)

    mismatches = 0
    for col, dv in zip(cols, d_rows[0]):
        cv = c_rows[0].get(col)
        if (cv is not None and not numeric(cv)) or (dv is not None and not numeric(dv)):
            continue
        COMPARED[0] += 1
        if cv is None and dv is None:
            continue
        if cv is None or dv is None or not same(float(cv), float(dv)):
            mismatches += 1
            emit({"bench": "query", "name": name, "mismatch": f"value {col}", "cdlake": cv,
                  "duckdb": dv if dv is None else float(dv)})
    return mismatches


# ---- main ----------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", required=True, help="a local store directory")
    ap.add_argument("--cdlake", required=True, help="the cdlake binary (a release build for real figures)")
    ap.add_argument("--from", dest="from_", help="window start (as cdlake dora takes it)")
    ap.add_argument("--to", help="window end (as cdlake dora takes it; default now)")
    ap.add_argument("--repeat", type=int, default=3, help="best of N (default 3)")
    ap.add_argument("--production", help="the production pattern (passed to cdlake)")
    ap.add_argument("--dashboards", default=str(REPO / "dashboards"), help="Grafana dashboards directory")
    ap.add_argument("--no-panels", action="store_true", help="only the DORA report")
    ap.add_argument("--no-dora", action="store_true",
                    help="only the panels (scripts/bench times the DORA report against "
                         "benches/baseline_duckdb.py, which shares nothing with cdlake's views)")
    a = ap.parse_args()

    store = os.path.abspath(a.store)
    if not os.path.isdir(os.path.join(store, "events")):
        sys.exit(f"{store}: no events/ directory (a local store is needed: DuckDB reads the files)")
    if os.path.isdir(os.path.join(store, "_cdlake", "compactions")):
        log("warning: the store has compaction manifests; DuckDB does not read them, so during a "
            "compaction's grace period it sees compacted rows twice (the de-duplicated views are "
            "unaffected, panels over raw `events` are not)")
    common = ["--store", store] + (["--production", a.production] if a.production else [])
    window = (["--from", a.from_] if a.from_ else []) + (["--to", a.to] if a.to else [])

    # 1. Warm-up, and the window as cdlake resolved it.
    log("warm-up: cdlake dora --format json")
    _, out = run_cdlake(["dora", *common, *window, "--format", "json"], a.cdlake)
    w = json.loads(out)["window"]
    t_from, t_to = parse_rfc3339(w["from"]), parse_rfc3339(w["to"])
    window = ["--from", w["from"], "--to", w["to"]]
    w_from_us = int(t_from.timestamp()) * 1_000_000 + t_from.microsecond
    w_to_us = int(t_to.timestamp()) * 1_000_000 + t_to.microsecond
    log(f"window {w['from']} .. {w['to']} ({w['days']} days)")

    # 2. The SQL, and the schemas of the tables for DuckDB.
    _, out = run_cdlake(["dora", *common, *window, "--print-sql"], a.cdlake)
    printed = json.loads(out)
    _, out = run_cdlake(
        ["sql", *common, "--format", "json",
         "SELECT table_name, column_name, data_type FROM information_schema.columns "
         "WHERE table_name IN ('events', 'spans', 'dead_letters') ORDER BY table_name, ordinal_position"],
        a.cdlake,
    )
    schemas = defaultdict(list)
    for r in json.loads(out):
        schemas[r["table_name"]].append((r["column_name"], duck_type(r["data_type"])))

    # 3. DuckDB.
    setup = DuckSetup(store, schemas, printed["views"])
    setup.connect().close()  # finds views DuckDB cannot create (reported once)
    log(f"DuckDB {duckdb.__version__}; rewrites: " + "; ".join(n for n, _ in VIEW_REWRITES))

    mismatches = 0
    n = a.repeat

    # 4. The DORA report, overall and by service.
    reports = () if a.no_dora else (("dora", [], False), ("dora --by service", ["--by", "service"], True))
    for label, extra, by_service in reports:
        log(f"{label}: cdlake x{n}")
        c_s, out = best_of(n, lambda: run_cdlake(["dora", *common, *window, *extra, "--format", "json"], a.cdlake))
        report = json.loads(out)
        log(f"{label}: duckdb x{n}")
        best, result = math.inf, None
        for _ in range(n):
            elapsed, rows, overall, groups, unlinked = duck_report(setup, printed["queries"], by_service, w_from_us, w_to_us)
            best, result = min(best, elapsed), (rows, overall, groups, unlinked)
        rows, overall, groups, unlinked = result
        emit({"bench": "query", "name": label, "cdlake_s": round(c_s, 4), "duckdb_s": round(best, 4),
              "ratio": round(c_s / best, 2), "rows": rows})
        m = check_report(label, report, overall, groups, unlinked)
        mismatches += m
        f = overall[""]
        log(f"  {'agree' if m == 0 else f'{m} MISMATCHES'}: {f['deployments']} deployments, "
            f"{f['changes']} changes, {f['incidents']} incidents"
            + (f", {len(groups)} services" if groups is not None else ""))

    # 5. Baseline and Grafana panels.
    if not a.no_panels:
        todo = [("baseline: SELECT 1", "SELECT 1 AS one", None)] + panels(Path(a.dashboards), t_from, t_to)
        for name, sql, reason in todo:
            if sql is None:
                emit({"bench": "query", "name": name, "skipped": reason})
                continue
            duck_sql = translate(sql, PANEL_REWRITES)
            try:
                con = setup.connect()
                cols, d_rows = duck_rows(con, duck_sql)
                con.close()
            except duckdb.Error as e:
                reason = "DuckDB: " + str(e).splitlines()[0]
                log(f"{name}: skipped ({reason})")
                emit({"bench": "query", "name": name, "skipped": reason})
                continue
            try:
                c_s, out = best_of(n, lambda: run_cdlake(["sql", *common, "--format", "json", sql], a.cdlake))
            except RuntimeError as e:
                reason = "cdlake: " + str(e).splitlines()[-1][-300:]
                log(f"{name}: skipped ({reason})")
                emit({"bench": "query", "name": name, "skipped": reason})
                continue
            c_rows = json.loads(out)
            best = math.inf
            for _ in range(n):
                con = setup.connect()
                start = time.perf_counter()
                cols, d_rows = duck_rows(con, duck_sql)
                best = min(best, time.perf_counter() - start)
                con.close()
            emit({"bench": "query", "name": name, "cdlake_s": round(c_s, 4), "duckdb_s": round(best, 4),
                  "ratio": round(c_s / best, 2), "rows": len(d_rows)})
            log(f"{name}: cdlake {c_s:.3f}s duckdb {best:.3f}s rows {len(c_rows)}/{len(d_rows)}")
            if len(c_rows) != len(d_rows):
                mismatches += 1
                emit({"bench": "query", "name": name, "mismatch": "rows", "cdlake": len(c_rows), "duckdb": len(d_rows)})
            else:
                mismatches += check_single_row(name, c_rows, cols, d_rows)

    log(f"done: {mismatches} mismatch(es); {COMPARED[0]} single-row panel values compared")


if __name__ == "__main__":
    main()
