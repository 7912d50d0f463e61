#!/usr/bin/env python3
"""A check of benches/baseline_duckdb.py on a hand-made store whose report is computed by hand
from DESIGN.md's definitions (below), so the baseline is trusted before cdlake is compared
with it.

    python benches/baseline_selftest.py        # exit 0 when every value is as expected
    python benches/baseline_selftest.py --cdlake BIN   # also cdlake's report of the same history

The store is a Delta table written with the `deltalake` package, with a duplicate delivery and
a row deleted after it was written (its file is still on disk but not in the snapshot).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

HERE = Path(__file__).resolve().parent
COLUMNS = ["event_id", "event_source", "event_type", "subject", "predicate", "spec_version", "origin",
           "time", "ingested_at", "subject_id", "service", "environment", "repository", "change_id",
           "artifact_id", "pipeline", "run_id", "outcome", "url", "trace_id", "span_id", "chain_id",
           "team", "task", "payload"]


def ts(s: str) -> datetime:
    return datetime.fromisoformat(s).replace(tzinfo=timezone.utc)


def event(eid, subject, predicate, t, subject_id, *, source="test", ingested=None, **fields):
    row = {c: None for c in COLUMNS}
    row.update(event_id=eid, event_source=source, subject=subject, predicate=predicate,
               event_type=f"dev.cdevents.{subject}.{predicate}.0.3.0", spec_version="0.5.1",
               origin="cdevents", time=ts(t), ingested_at=ts(ingested or t), subject_id=subject_id,
               payload="{}", **fields)
    row["date"] = row["time"].strftime("%Y-%m-%d")
    return row


def history():
    dep = lambda eid, t, svc, env, art, pred="deployed", **kw: event(  # noqa: E731
        eid, "service", pred, t, svc, service=svc, environment=env, artifact_id=art, **kw)
    inc = lambda eid, pred, t, iid, svc, env, art=None: event(  # noqa: E731
        eid, "incident", pred, t, iid, service=svc, environment=env, artifact_id=art)
    chg = lambda eid, pred, t, cid, repo: event(eid, "change", pred, t, cid, change_id=cid, repository=repo)  # noqa: E731
    art = lambda eid, pred, t, aid, cid: event(eid, "artifact", pred, t, aid, artifact_id=aid, change_id=cid)  # noqa: E731
    return [
        # Repository r: c1 (created and merged), c2, c3 (created and merged), c4, c5 (never delivered).
        chg("c1-created", "created", "2026-01-01T00:00:00", "c1", "r"),
        chg("c1-merged", "merged", "2026-01-05T00:00:00", "c1", "r"),
        chg("c2-merged", "merged", "2026-01-09T00:00:00", "c2", "r"),
        chg("c3-created", "created", "2026-01-11T00:00:00", "c3", "r"),
        chg("c3-merged", "merged", "2026-01-11T12:00:00", "c3", "r"),
        chg("c4-merged", "merged", "2026-01-14T00:00:00", "c4", "r"),
        chg("c5-merged", "merged", "2026-01-16T00:00:00", "c5", "r"),
        art("art1-packaged", "packaged", "2026-01-09T01:00:00", "art1", "c2"),
        art("art2-published", "published", "2026-01-11T13:00:00", "art2", "c3"),
        art("art3-packaged", "packaged", "2026-01-14T01:00:00", "art3", "c4"),
        # Service a: D1 delivers c1 and c2, D2 delivers c3, D3 a rollback, D4 (prod-eu) delivers c4.
        dep("d1", "2026-01-11T10:00:00", "a", "production", "art1"),
        dep("d1", "2026-01-11T10:00:00", "a", "production", "art1", ingested="2026-01-11T10:05:00"),  # duplicate
        dep("d2", "2026-01-12T10:00:00", "a", "production", "art2"),
        dep("d3", "2026-01-13T10:00:00", "a", "production", "art1", pred="rolledback"),
        dep("d4", "2026-01-15T10:00:00", "a", "prod-eu", "art3", pred="upgraded"),
        dep("staging", "2026-01-10T12:00:00", "a", "staging", "art3"),  # not production
        dep("preprod", "2026-01-16T12:00:00", "a", "preprod", "art3"),  # not production
        dep("bogus", "2026-01-17T12:00:00", "a", "production", "art3"),  # deleted below
        # i1 makes D2 failed (D2's next is also a rollback); i2 (never resolved) makes D3 failed
        # and D4 rework; i5 is staging; i4 has no service.
        inc("i1-d", "detected", "2026-01-12T12:00:00", "i1", "a", "production"),
        inc("i1-r", "resolved", "2026-01-12T14:00:00", "i1", "a", "production"),
        inc("i2-r", "reported", "2026-01-15T09:00:00", "i2", "a", "prod"),
        inc("i5-d", "detected", "2026-01-11T12:00:00", "i5", "a", "staging"),
        inc("i4-d", "detected", "2026-01-12T00:00:00", "i4", None, "production"),
        inc("i4-r", "resolved", "2026-01-12T01:00:00", "i4", None, "production"),
        # Service c: Dc1 fails by its next being a rollback alone; Dc2 (the rollback) does not own
        # i6, detected at Dc3's very time, which Dc3 owns (and is rework for being open then).
        dep("dc1", "2026-01-14T00:00:00", "c", "production", "artC"),
        dep("dc2", "2026-01-14T06:00:00", "c", "production", "artC", pred="rolledback"),
        dep("dc3", "2026-01-16T00:00:00", "c", "production", "artC"),
        inc("i6-d", "detected", "2026-01-16T00:00:00", "i6", "c", "production"),
        inc("i6-r", "resolved", "2026-01-16T00:30:00", "i6", "c", "production"),
        # Service b: a deployment before the window delivering cb1; incident i3 resolved in it.
        chg("cb1-merged", "merged", "2026-01-08T00:00:00", "cb1", "rb"),
        art("artB", "packaged", "2026-01-08T01:00:00", "artB", "cb1"),
        dep("db", "2026-01-09T00:00:00", "b", "production", "artB"),
        inc("i3-d", "detected", "2026-01-08T00:00:00", "i3", "b", "production"),
        inc("i3-r", "resolved", "2026-01-11T00:00:00", "i3", "b", "production"),
        # Service e: i7 names artE1, deployed by De1 before the window, so the explicit link
        # (README; on by default) fails De1, not De2 (in the window), which DESIGN's time rule
        # alone would fail (checked with --time-rule-only). Neither artifact links to a change.
        dep("de1", "2026-01-09T00:00:00", "e", "production", "artE1"),
        dep("de2", "2026-01-18T00:00:00", "e", "production", "artE2"),
        inc("i7-d", "detected", "2026-01-18T06:00:00", "i7", "e", "production", "artE1"),
        inc("i7-r", "resolved", "2026-01-18T07:00:00", "i7", "e", "production"),
    ]


def table(rows):
    ts_type = pa.timestamp("us", tz="UTC")
    fields = [pa.field(c, ts_type if c in ("time", "ingested_at") else pa.string()) for c in COLUMNS]
    fields.append(pa.field("date", pa.string()))
    return pa.Table.from_pylist(rows, schema=pa.schema(fields))


def lin(values, p):
    v = sorted(values)
    rank = p * (len(v) - 1)
    lo, hi = math.floor(rank), math.ceil(rank)
    return v[lo] + (v[hi] - v[lo]) * (rank - lo)


# What DESIGN's definitions give for the window [2026-01-10, 2026-01-20), by hand.
H = 3600
LEADS = [10 * 86400 + 10 * H, 2 * 86400 + 10 * H, 86400 + 10 * H, 86400 + 10 * H]  # c1, c2, c3, c4
RECOVERIES = [2 * H, 3 * 86400, H, H // 2, H]  # i1, i3, i4, i6, i7
EXPECTED = {
    "deployment_frequency": {"deployments": 8, "deploy_days": 7, "per_day": 0.8, "level": "high"},
    "lead_time": {"changes": 4, "median_seconds": 165600.0, "p90_seconds": lin(LEADS, 0.9), "level": "high"},
    "change_failure_rate": {"deployments": 8, "failed": 4, "rate": 4 / 8, "level": "low"},
    # Elite is "< 1 hour": a median of exactly one hour is high.
    "recovery_time": {"incidents": 5, "median_seconds": 3600.0, "p90_seconds": lin(RECOVERIES, 0.9),
                      "open": 1, "level": "high"},
    "rework_rate": {"deployments": 8, "rework": 2, "rate": 2 / 8},
}
NO_LEAD = {"changes": 0, "median_seconds": None, "p90_seconds": None, "level": None}
EXPECTED_GROUPS = {
    "a": {
        "deployment_frequency": {"deployments": 4, "deploy_days": 4, "per_day": 0.4, "level": "high"},
        "lead_time": EXPECTED["lead_time"],
        "change_failure_rate": {"deployments": 4, "failed": 2, "rate": 0.5, "level": "low"},
        "recovery_time": {"incidents": 1, "median_seconds": 7200.0, "p90_seconds": 7200.0, "open": 1,
                          "level": "high"},
        "rework_rate": {"deployments": 4, "rework": 1, "rate": 0.25},
    },
    "b": {
        # DESIGN: "elite per_day >= 1, …, else low": no deployment is per_day 0, low.
        "deployment_frequency": {"deployments": 0, "deploy_days": 0, "per_day": 0.0, "level": "low"},
        "lead_time": NO_LEAD,
        "change_failure_rate": {"deployments": 0, "failed": 0, "rate": None, "level": None},
        "recovery_time": {"incidents": 1, "median_seconds": 259200.0, "p90_seconds": 259200.0, "open": 0,
                          "level": "medium"},
        "rework_rate": {"deployments": 0, "rework": 0, "rate": None},
    },
    "c": {
        "deployment_frequency": {"deployments": 3, "deploy_days": 2, "per_day": 0.3, "level": "high"},
        "lead_time": NO_LEAD,
        "change_failure_rate": {"deployments": 3, "failed": 2, "rate": 2 / 3, "level": "low"},
        "recovery_time": {"incidents": 1, "median_seconds": 1800.0, "p90_seconds": 1800.0, "open": 0,
                          "level": "elite"},
        "rework_rate": {"deployments": 3, "rework": 1, "rate": 1 / 3},
    },
    "e": {
        "deployment_frequency": {"deployments": 1, "deploy_days": 1, "per_day": 0.1, "level": "medium"},
        "lead_time": NO_LEAD,
        "change_failure_rate": {"deployments": 1, "failed": 0, "rate": 0.0, "level": "elite"},
        "recovery_time": {"incidents": 1, "median_seconds": 3600.0, "p90_seconds": 3600.0, "open": 0,
                          "level": "high"},
        "rework_rate": {"deployments": 1, "rework": 0, "rate": 0.0},
    },
}
# DESIGN's time rule alone (--time-rule-only): i7 fails De2, in the window.
EXPECTED_TIME_RULE = {"change_failure_rate": {"deployments": 8, "failed": 5, "rate": 5 / 8, "level": "low"}}
EXPECTED_TIME_RULE_E = {"change_failure_rate": {"deployments": 1, "failed": 1, "rate": 1.0, "level": "low"}}
EXPECTED_UNLINKED = {"deployments_unknown_artifact": 3, "changes_not_delivered": 1,
                     "incidents_without_service": 1, "incidents_without_detection": 0}


# CDEvents v0.5.1 type versions of the events above.
TYPE_VERSION = {("change", "created"): "0.4.0"}


def cdevent(row) -> dict:
    """The CDEvent a row of history() stands for (what `cdlake import` reads)."""
    subject, predicate = row["subject"], row["predicate"]
    content = {}
    if row["environment"] is not None:
        content["environment"] = {"id": row["environment"]}
    if subject == "service" and row["artifact_id"] is not None:
        content["artifactId"] = row["artifact_id"]
    if subject == "incident" and row["service"] is not None:
        content["service"] = {"id": row["service"]}
    if subject == "incident" and row["artifact_id"] is not None:
        content["artifactId"] = row["artifact_id"]
    if subject == "change" and row["repository"] is not None:
        content["repository"] = {"id": row["repository"]}
    if subject == "artifact" and row["change_id"] is not None:
        content["change"] = {"id": row["change_id"]}
    version = TYPE_VERSION.get((subject, predicate), "0.3.0")
    return {
        "context": {"specversion": "0.5.1", "id": row["event_id"], "source": row["event_source"],
                    "type": f"dev.cdevents.{subject}.{predicate}.{version}",
                    "timestamp": row["time"].strftime("%Y-%m-%dT%H:%M:%SZ")},
        "subject": {"id": row["subject_id"], "source": row["event_source"], "content": content},
    }


def check(got, want, path, errors):
    if isinstance(want, dict):
        for k, v in want.items():
            check((got or {}).get(k, "<missing>"), v, f"{path}.{k}", errors)
    elif isinstance(want, float) and isinstance(got, (int, float)):
        if not math.isclose(got, want, rel_tol=1e-12):
            errors.append(f"{path}: got {got}, want {want}")
    elif got != want:
        errors.append(f"{path}: got {got!r}, want {want!r}")


def check_report(got, tag, errors):
    check(got, {"window": {"from": "2026-01-10T00:00:00Z", "to": "2026-01-20T00:00:00Z", "days": 10.0}},
          f"{tag}report", errors)
    check(got, EXPECTED, f"{tag}report", errors)
    check(got.get("unlinked"), EXPECTED_UNLINKED, f"{tag}unlinked", errors)
    groups = {g["service"]: g for g in got.get("groups", [])}
    if sorted(groups) != sorted(EXPECTED_GROUPS):
        errors.append(f"{tag}groups: got {sorted(groups)}, want {sorted(EXPECTED_GROUPS)}")
    for svc, want in EXPECTED_GROUPS.items():
        check(groups.get(svc), want, f"{tag}groups[{svc}]", errors)


def run_json(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{cmd[0]} failed:\n{p.stderr}")
    return json.loads(p.stdout)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cdlake", help="also import the same history (as CDEvents) with this cdlake "
                                     "and check its `dora --by service` against the same values")
    a = ap.parse_args()
    window = ["--from", "2026-01-10", "--to", "2026-01-20T00:00:00Z", "--by", "service"]
    errors, cdlake_errors = [], []
    with tempfile.TemporaryDirectory() as store:
        events = str(Path(store) / "events")
        rows = history()
        write_deltalake(events, table(rows[:20]), partition_by=["date"])
        write_deltalake(events, table(rows[20:]), partition_by=["date"], mode="append")
        DeltaTable(events).delete("event_id = 'bogus'")
        for plain in ([], ["--plain"]):
            got = run_json([sys.executable, str(HERE / "baseline_duckdb.py"), "--store", store, *window, *plain])
            check_report(got, "plain " if plain else "", errors)
        got = run_json([sys.executable, str(HERE / "baseline_duckdb.py"), "--store", store, *window,
                        "--time-rule-only"])
        check(got, EXPECTED_TIME_RULE, "time-rule-only report", errors)
        e = next((g for g in got.get("groups", []) if g["service"] == "e"), None)
        check(e, EXPECTED_TIME_RULE_E, "time-rule-only groups[e]", errors)
    if a.cdlake:
        with tempfile.TemporaryDirectory() as store:
            lines = Path(store) / "history.jsonl"
            lines.write_text("".join(json.dumps(cdevent(r)) + "\n" for r in history() if r["event_id"] != "bogus"))
            imported = subprocess.run([a.cdlake, "import", "--store", f"{store}/s", str(lines)],
                                      capture_output=True, text=True)
            if imported.returncode != 0:
                sys.exit(f"cdlake import failed:\n{imported.stderr}")
            print(f"cdlake import: {imported.stdout.strip()}")
            got = run_json([a.cdlake, "dora", "--store", f"{store}/s", *window, "--format", "json"])
            check_report(got, "cdlake ", cdlake_errors)
            # The baseline over cdlake's own store of the same history.
            got = run_json([sys.executable, str(HERE / "baseline_duckdb.py"), "--store", f"{store}/s", *window])
            check_report(got, "baseline over cdlake's store: ", errors)
    for e in errors + cdlake_errors:
        print(e)
    print(f"baseline_selftest: baseline {'FAILED, ' + str(len(errors)) + ' value(s)' if errors else 'ok'}"
          + (f"; cdlake: {len(cdlake_errors)} value(s) differ from the hand-computed report" if a.cdlake else ""))
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
