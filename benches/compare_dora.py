#!/usr/bin/env python3
"""`cdlake dora` against an independent DuckDB report (benches/baseline_duckdb.py): every value
compared, and both timed as whole processes.

    benches/compare_dora.py --store DIR --cdlake BIN [--to T] [--days 30 | --from T]
                            [--by overall|service|both] [--repeat N]

The window is fixed, never "now": `--to` defaults to the end of the demo history recorded in
the store (`_cdlake/demo.json`, written by `cdlake demo`), `--from` to `--days` before it.
For each report (overall, and `--by service`):

1. runs `cdlake dora --store DIR --from F --to T [--by service] --format json` and
   `python benches/baseline_duckdb.py --store DIR --from F --to T [--by service]`, each as a
   separate process, best of `--repeat` (0: compare only, untimed), with each process's wall
   time and peak RSS;
2. compares the two reports value by value: the window, the five figures overall, each
   service's group (a group on one side only is a difference), the `unlinked` counts and the
   production pattern. Numbers agree within a relative 1e-9 (both sides compute seconds from
   the same microseconds; only float rounding may differ).

Output, JSON Lines on stdout:
    {"bench": "query", "name": "dora …", "cdlake_s": x, "duckdb_s": y, "ratio": x/y, …}
    {"bench": "dora-agreement", "name": "dora …", "path": "groups[checkout].lead_time.changes",
     "cdlake": a, "baseline": b}                                   (one per differing value)
    {"bench": "dora-agreement", "name": "dora …", "values": n, "differing": k}
Progress goes to stderr. Exit status 1 when a value differs (unless --allow-differences).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def emit(obj):
    print(json.dumps(obj), flush=True)


def parse_rfc3339(s: str) -> datetime:
    t = datetime.fromisoformat(s.replace("Z", "+00:00"))
    if t.tzinfo is None:
        raise SystemExit(f"time {s!r} has no offset")
    return t.astimezone(timezone.utc)


def rfc3339(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def demo_end(store: str) -> datetime:
    """The end of the demo history recorded in the store (the only one, or the latest)."""
    path = os.path.join(store, "_cdlake", "demo.json")
    try:
        with open(path) as f:
            anchors = json.load(f)
    except FileNotFoundError:
        raise SystemExit(f"{path} not found: give --to (the store holds no demo history)")
    if not anchors:
        raise SystemExit(f"{path} records no demo history: give --to")
    ends = sorted(parse_rfc3339(v) for v in anchors.values())
    if len(ends) > 1:
        log(f"{path} records {len(ends)} demo histories; using the latest end")
    return ends[-1]


def run_measured(cmd: list[str]) -> tuple[float, int, str]:
    """Run a process to its end: (wall seconds, its own peak RSS in KiB via wait4, stdout)."""
    start = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Read both pipes to the end (threads avoid a deadlock on a full pipe), then reap.
    bufs = {}

    def drain(name, pipe):
        bufs[name] = pipe.read()

    threads = [threading.Thread(target=drain, args=(n, s)) for n, s in (("out", p.stdout), ("err", p.stderr))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _, status, usage = os.wait4(p.pid, 0)
    elapsed = time.perf_counter() - start
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        err = bufs["err"].decode(errors="replace")
        raise RuntimeError(f"{' '.join(cmd[:3])} … exited with {p.returncode}:\n{err[-3000:]}")
    return elapsed, usage.ru_maxrss, bufs["out"].decode()


def best_of(n: int, cmd: list[str]):
    best, rss, out = math.inf, 0, None
    for _ in range(max(n, 1)):
        s, kb, out = run_measured(cmd)
        if s < best:
            best, rss = s, kb
    return best, rss, out


# ---- comparison ------------------------------------------------------------------------------

FIGURES = {
    "deployment_frequency": ["deployments", "deploy_days", "per_day", "level"],
    "lead_time": ["changes", "median_seconds", "p90_seconds", "level"],
    "change_failure_rate": ["deployments", "failed", "rate", "level"],
    "recovery_time": ["incidents", "median_seconds", "p90_seconds", "open", "level"],
    "rework_rate": ["deployments", "rework", "rate"],
}
UNLINKED = ["deployments_unknown_artifact", "changes_not_delivered", "incidents_without_service",
            "incidents_without_detection"]


def same(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return a == b


class Diff:
    def __init__(self):
        self.values = 0
        self.differences = []

    def check(self, path, c, b):
        self.values += 1
        if not same(c, b):
            self.differences.append((path, c, b))

    def figures(self, prefix, c: dict, b: dict):
        for fig, fields in FIGURES.items():
            cf, bf = c.get(fig) or {}, b.get(fig) or {}
            for k in fields:
                self.check(f"{prefix}{fig}.{k}", cf.get(k, "<missing>"), bf.get(k, "<missing>"))


def compare(cdlake: dict, baseline: dict, by_service: bool) -> Diff:
    d = Diff()
    for k in ("from", "to", "days"):
        d.check(f"window.{k}", cdlake["window"].get(k), baseline["window"].get(k))
    d.figures("", cdlake, baseline)
    if by_service:
        cg = {g.get("service"): g for g in cdlake.get("groups") or []}
        bg = {g.get("service"): g for g in baseline.get("groups") or []}
        for svc in sorted(set(cg) | set(bg), key=str):
            if svc not in cg or svc not in bg:
                d.check(f"groups[{svc}]", "present" if svc in cg else "absent",
                        "present" if svc in bg else "absent")
                continue
            d.figures(f"groups[{svc}].", cg[svc], bg[svc])
    cu, bu = cdlake.get("unlinked") or {}, baseline.get("unlinked") or {}
    for k in UNLINKED:
        d.check(f"unlinked.{k}", cu.get(k, "<missing>"), bu.get(k, "<missing>"))
    d.check("production", cdlake.get("production"), baseline.get("production"))
    return d


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", required=True, help="a local store directory")
    ap.add_argument("--cdlake", required=True, help="the cdlake binary")
    ap.add_argument("--python", default=sys.executable, help="Python with duckdb and deltalake (default: this one)")
    ap.add_argument("--to", help="window end, RFC 3339 (default: the demo history's end in the store)")
    ap.add_argument("--from", dest="from_", help="window start, RFC 3339 (default: --days before --to)")
    ap.add_argument("--days", type=float, default=30, help="window length when --from is not given (default 30)")
    ap.add_argument("--by", choices=["overall", "service", "both"], default="both")
    ap.add_argument("--production", help="the production pattern (given to both)")
    ap.add_argument("--repeat", type=int, default=0, help="time each process, best of N (0: compare only)")
    ap.add_argument("--allow-differences", action="store_true", help="exit 0 even when values differ")
    ap.add_argument("--assume-unique", action="store_true",
                    help="the baseline trusts the store's identity invariant (no de-duplication), as cdlake does")
    a = ap.parse_args()

    store = os.path.abspath(a.store)
    t_to = parse_rfc3339(a.to) if a.to else demo_end(store)
    t_from = parse_rfc3339(a.from_) if a.from_ else t_to - timedelta(days=a.days)
    window = ["--from", rfc3339(t_from), "--to", rfc3339(t_to)]
    prod = ["--production", a.production] if a.production else []
    log(f"window {window[1]} .. {window[3]}")

    reports = {"overall": [("dora", [])], "service": [("dora --by service", ["--by", "service"])]}
    reports["both"] = reports["overall"] + reports["service"]
    differing = 0
    for name, by in reports[a.by]:
        label = f"{name} ({(t_to - t_from) / timedelta(days=1):g} days)"
        c_cmd = [a.cdlake, "dora", "--store", store, *prod, *window, *by, "--format", "json"]
        unique = ["--assume-unique"] if a.assume_unique else []
        b_cmd = [a.python, str(HERE / "baseline_duckdb.py"), "--store", store, *prod, *window, *by, *unique]
        c_s, c_kb, c_out = best_of(a.repeat, c_cmd)
        b_s, b_kb, b_out = best_of(a.repeat, b_cmd)
        if a.repeat > 0:
            emit({"bench": "query", "name": f"{label}: cdlake vs DuckDB from DESIGN (whole processes)",
                  "cdlake_s": round(c_s, 4), "duckdb_s": round(b_s, 4), "ratio": round(c_s / b_s, 2),
                  "cdlake_rss_mib": round(c_kb / 1024), "duckdb_rss_mib": round(b_kb / 1024)})
            log(f"{label}: cdlake {c_s:.3f} s ({c_kb // 1024} MiB), DuckDB {b_s:.3f} s ({b_kb // 1024} MiB), "
                f"ratio {c_s / b_s:.2f}")
        d = compare(json.loads(c_out), json.loads(b_out), bool(by))
        for path, c, b in d.differences:
            emit({"bench": "dora-agreement", "name": label, "path": path, "cdlake": c, "baseline": b})
        emit({"bench": "dora-agreement", "name": label, "values": d.values, "differing": len(d.differences)})
        log(f"{label}: {d.values} values compared, {len(d.differences)} differ")
        differing += len(d.differences)
    sys.exit(1 if differing and not a.allow_differences else 0)


if __name__ == "__main__":
    main()
