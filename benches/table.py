"""Prints scripts/bench's JSON Lines as one Markdown table (the README's Performance table)."""
import json
import sys

KEYS = [
    ("events_per_s", "events/s", "{:,.0f}"),
    ("sustained_events_per_s", "sustained events/s", "{:,.0f}"),
    ("ratio_to_floor", "ratio to floor", "{:.2f}"),
    ("ratio_to_baseline", "ratio to baseline", "{:.2f}"),
    ("ratio_to_target", "ratio to target", "{:.1f}"),
    ("p50_s", "p50 s", "{:.2f}"),
    ("median_ms", "median ms", "{:.0f}"),
    ("p99_ms", "p99 ms", "{:.0f}"),
    ("baseline_median_ms", "baseline median ms", "{:.0f}"),
    ("baseline_p99_ms", "baseline p99 ms", "{:.0f}"),
    ("p99_s", "p99 s", "{:.2f}"),
    ("peak_rss_mib", "peak RSS MiB", "{:.0f}"),
    ("cdlake_s", "cdlake s", "{:.3f}"),
    ("duckdb_s", "DuckDB s", "{:.3f}"),
    ("ratio", "cdlake / DuckDB", "{:.2f}"),
    ("small_cdlake_s", "cdlake s, a tenth of the events", "{:.3f}"),
    ("growth", "growth", "{:.2f}x"),
    ("cdlake_rss_mib", "cdlake peak RSS MiB", "{:.0f}"),
    ("duckdb_rss_mib", "DuckDB peak RSS MiB", "{:.0f}"),
    ("values", "values compared", "{:,}"),
    ("differing", "differing", "{:,}"),
    ("path", "differs at", "{}"),
    ("cdlake", "cdlake", "{}"),
    ("baseline", "baseline", "{}"),
    ("bytes_per_event", "bytes/event", "{:.1f}"),
    ("parquet_bytes_per_event", "Parquet bytes/event", "{:.0f}"),
    ("json_bytes_per_event", "JSON bytes/event", "{:.0f}"),
    ("compression", "JSON/Parquet", "{:.1f}x"),
    ("files", "files", "{:,}"),
    ("bytes", "bytes", "{:,}"),
    ("files_per_day", "files/day", "{:.2f}"),
    ("events", "events", "{:,}"),
    ("commits", "commits", "{:,}"),
    ("seconds", "seconds", "{:.2f}"),
    ("under_one_second", "under 1 s", "{}"),
    ("panels", "panels", "{:,}"),
    ("errors", "errors", "{:,}"),
    ("median_s", "median s", "{:.3f}"),
    ("p90_s", "p90 s", "{:.3f}"),
    ("total_s", "total s", "{:.1f}"),
    ("first_s", "first s", "{:.2f}"),
    ("slowest_s", "slowest s", "{:.2f}"),
    ("slowest", "slowest", "{}"),
    ("equal", "equal", "{:,}"),
    ("different", "different", "{:,}"),
    ("duckdb_build_s", "DuckDB views s", "{:.2f}"),
    ("duckdb_total_s", "DuckDB panels s", "{:.2f}"),
    ("cdlake_total_s", "cdlake panels s", "{:.2f}"),
    ("select1_s", "cdlake SELECT 1 s", "{:.3f}"),
    ("median_ratio", "median cdlake / DuckDB panel", "{:.1f}"),
    ("median_ratio_with_build", "median cdlake / (DuckDB panel + views)", "{:.2f}"),
    ("ratio_total", "cdlake total / DuckDB total with views", "{:.2f}"),
]


def cell(row):
    parts = []
    for key, label, fmt in KEYS:
        if key in row and row[key] is not None:
            try:
                parts.append(f"{label} {fmt.format(row[key])}")
            except (ValueError, TypeError):
                parts.append(f"{label} {row[key]}")
    return "; ".join(parts)


def main(path):
    print("| benchmark | what | figures |")
    print("|---|---|---|")
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            row = json.loads(line)
            print(f"| {row.get('bench', '')} | {row.get('name', '')} | {cell(row)} |")


if __name__ == "__main__":
    main(sys.argv[1])
