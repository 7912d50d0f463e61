#!/usr/bin/env python3
"""Every panel of `dashboards/` through psql against a running `cdlake serve`, one pass in
dashboard order, as Grafana loads them: the wall time of each panel's query as a whole psql
process, and the server's peak RSS.

    benches/panels_serve.py --store DIR --cdlake BIN --from T --to T [--port 25433]

The first panel pays for the views it holds; the panels after it over the same snapshot take
them from it (`cdlake_held_views_total`). Output, one JSON line on stdout:
    {"bench": "query", "name": "…", "panels": n, "errors": k, "median_s": …, "p90_s": …,
     "total_s": …, "first_s": …, "slowest_s": …, "slowest": "…", "peak_rss_mib": …}
A panel that fails is named on stderr and counted in `errors`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import time
import urllib.request
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def load_panels():
    """The panel list and Grafana's macro expansion of benches/query.py (one definition)."""
    spec = importlib.util.spec_from_file_location("query_bench", REPO / "benches" / "query.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.panels


def wait_healthy(url: str, seconds: float = 60.0) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"cdlake serve did not answer {url} within {seconds:.0f} s")


def peak_rss_mib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024)
    except OSError:
        return None
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--cdlake", required=True, help="the cdlake binary (a release build for real figures)")
    ap.add_argument("--from", dest="from_", required=True, help="window start, RFC 3339")
    ap.add_argument("--to", required=True, help="window end, RFC 3339")
    ap.add_argument("--port", type=int, default=25433, help="Postgres port (HTTP on port + 1)")
    ap.add_argument("--dashboards", default=str(REPO / "dashboards"))
    a = ap.parse_args()
    parse = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))
    server = subprocess.Popen(
        [a.cdlake, "serve", "--store", a.store, "--listen", f"127.0.0.1:{a.port + 1}",
         "--pg-listen", f"127.0.0.1:{a.port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(f"http://127.0.0.1:{a.port + 1}/healthz")
        times: list[tuple[float, str]] = []
        errors = 0
        for name, sql, reason in load_panels()(Path(a.dashboards), parse(a.from_), parse(a.to)):
            if sql is None:
                print(f"skipped {name}: {reason}", file=sys.stderr)
                continue
            started = time.time()
            p = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(a.port), "-U", "cdlake",
                                "-d", "cdlake", "-Atc", sql], capture_output=True, text=True)
            took = time.time() - started
            if p.returncode != 0:
                errors += 1
                print(f"error {name}: {p.stderr.strip()[:300]}", file=sys.stderr)
            times.append((took, name))
            print(f"{took:7.3f} s  {name}", file=sys.stderr, flush=True)
        rss = peak_rss_mib(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    if not times:
        raise SystemExit("no panel ran")
    ts = sorted(t for t, _ in times)
    slowest = max(times)
    print(json.dumps({
        "bench": "query",
        "name": "every dashboard panel through psql against cdlake serve, one pass (first computes the held views)",
        "panels": len(ts), "errors": errors,
        "median_s": round(statistics.median(ts), 3), "p90_s": round(ts[int(0.9 * (len(ts) - 1))], 3),
        "total_s": round(sum(ts), 2), "first_s": round(times[0][0], 3),
        "slowest_s": round(slowest[0], 3), "slowest": slowest[1], "peak_rss_mib": rss,
    }))


if __name__ == "__main__":
    main()
