"""The terminal UI in a real terminal: how long an event takes from its POST being answered to
showing on the screen of `cdlake tui`, against a plain SSE client of the same tail.

`cdlake standalone` serves an empty store; `cdlake tui` runs in tmux (a terminal emulator: the
UI draws through its pseudo-terminal as it would in any terminal), and the screen is read with
`tmux capture-pane` every few milliseconds. The baseline shares nothing with the UI: a Python
client of `GET /api/v1/tail` (the stream the UI reads) timing each event's arrival. Each event is
a CDEvents `service.deployed` of its own service (`tuibench-NNNN`), posted at --rate per second.
Prints one JSON line, for scripts/bench.

    python3 benches/tui_terminal.py --cdlake target/release/cdlake [--events 300] [--rate 50]
"""

import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/healthz")
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit(f"cdlake standalone did not answer on port {port}")


def cdevent(i):
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {
        "context": {
            "specversion": "0.4.1",
            "id": f"tuibench-{i}",
            "source": "/bench/tui",
            "type": "dev.cdevents.service.deployed.0.2.0",
            "timestamp": now,
        },
        "subject": {
            "id": f"tuibench-{i:04d}",
            "source": "/bench/tui",
            "type": "service",
            "content": {
                "environment": {"id": "production", "source": "/bench"},
                "artifactId": f"pkg:oci/tuibench@{i}",
            },
        },
    }


class SseClient(threading.Thread):
    """The baseline: reads the tail as the UI does and notes when each bench event arrives."""

    def __init__(self, port, seen):
        super().__init__(daemon=True)
        self.port, self.seen = port, seen
        self.connected = threading.Event()

    def run(self):
        c = http.client.HTTPConnection("127.0.0.1", self.port)
        c.request("GET", "/api/v1/tail", headers={"Accept": "text/event-stream"})
        r = c.getresponse()
        self.connected.set()
        while True:
            line = r.fp.readline()
            if not line:
                return
            if line.startswith(b"data:"):
                try:
                    service = json.loads(line[5:]).get("service") or ""
                except ValueError:
                    continue
                if service.startswith("tuibench-"):
                    self.seen.setdefault(service, time.monotonic())


class Screen(threading.Thread):
    """Reads the terminal's screen every few milliseconds and notes when each service shows."""

    def __init__(self, tmux, seen):
        super().__init__(daemon=True)
        self.tmux, self.seen = tmux, seen
        self.stop = threading.Event()
        self.captures = 0

    def run(self):
        while not self.stop.is_set():
            text = subprocess.run(
                self.tmux + ["capture-pane", "-p", "-t", "bench"],
                capture_output=True,
                text=True,
            ).stdout
            at = time.monotonic()
            self.captures += 1
            for word in text.split():
                if word.startswith("tuibench-"):
                    self.seen.setdefault(word, at)
            time.sleep(0.002)


def quantiles(latencies):
    xs = sorted(latencies)
    if not xs:
        return None, None
    p99 = xs[min(len(xs) - 1, int(round(0.99 * (len(xs) - 1))))]
    return statistics.median(xs), p99


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cdlake", required=True)
    ap.add_argument("--events", type=int, default=300)
    ap.add_argument("--rate", type=float, default=50.0)
    ap.add_argument("--width", type=int, default=120)
    ap.add_argument("--height", type=int, default=40)
    args = ap.parse_args()
    if shutil.which("tmux") is None:
        sys.exit("tui_terminal.py needs tmux (Debian: apt-get install tmux)")

    work = tempfile.mkdtemp(prefix="cdlake-tui-bench.")
    port = free_port()
    server = subprocess.Popen(
        [args.cdlake, "standalone", "--store", os.path.join(work, "store"),
         "--listen", f"127.0.0.1:{port}", "--pg-listen", "off"],
        stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "standalone.log"), "w"),
    )
    tmux = ["tmux", "-L", f"cdlake-bench-{os.getpid()}", "-f", "/dev/null"]
    try:
        wait_ready(port)
        subprocess.run(
            tmux + ["new-session", "-d", "-s", "bench", "-x", str(args.width), "-y", str(args.height),
                    f"TERM=xterm-256color {args.cdlake} tui --url http://127.0.0.1:{port}"],
            check=True,
        )
        on_screen, on_stream, posted = {}, {}, {}
        sse = SseClient(port, on_stream)
        sse.start()
        sse.connected.wait(10)
        screen = Screen(tmux, on_screen)
        screen.start()
        time.sleep(2.0)  # the UI connects to the tail and draws its first frames
        # Each event is posted at its due time by one of several senders (a POST is answered
        # once its event is committed, which takes longer than the interval between events).
        interval = 1.0 / args.rate
        start = time.monotonic()
        local = threading.local()
        failures = []

        def send(i):
            due = start + i * interval
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            if not hasattr(local, "conn"):
                local.conn = http.client.HTTPConnection("127.0.0.1", port)
            local.conn.request("POST", "/api/v1/events", body=json.dumps(cdevent(i)),
                               headers={"Content-Type": "application/json"})
            resp = local.conn.getresponse()
            resp.read()
            if resp.status != 200:
                failures.append(resp.status)
            posted[f"tuibench-{i:04d}"] = time.monotonic()

        with ThreadPoolExecutor(max_workers=32) as pool:
            list(pool.map(send, range(args.events)))
        if failures:
            sys.exit(f"POST /api/v1/events answered {failures[:5]}")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (len(on_screen) < len(posted) or len(on_stream) < len(posted)):
            time.sleep(0.05)
        screen.stop.set()
        screen.join(5)
        ui = [on_screen[k] - t for k, t in posted.items() if k in on_screen]
        stream = [on_stream[k] - t for k, t in posted.items() if k in on_stream]
        ui_median, ui_p99 = quantiles(ui)
        sse_median, sse_p99 = quantiles(stream)
        capture_ms = 1000.0 * (time.monotonic() - start) / max(screen.captures, 1)
        print(json.dumps({
            "bench": "tui",
            "name": f"live tail in a real terminal ({args.width}x{args.height}, tmux): POST answered to on screen, {args.rate:g} events/s",
            "events": len(posted),
            "shown": len(ui),
            "streamed": len(stream),
            "median_ms": round(1000 * ui_median, 1) if ui_median is not None else None,
            "p99_ms": round(1000 * ui_p99, 1) if ui_p99 is not None else None,
            "baseline": "plain SSE client of /api/v1/tail",
            "baseline_median_ms": round(1000 * sse_median, 1) if sse_median is not None else None,
            "baseline_p99_ms": round(1000 * sse_p99, 1) if sse_p99 is not None else None,
            "ratio_to_baseline": round(ui_median / sse_median, 2) if ui_median and sse_median else None,
            "screen_read_every_ms": round(capture_ms, 1),
        }))
        if len(ui) < len(posted):
            sys.exit(f"only {len(ui)} of {len(posted)} events showed on the screen")
    finally:
        subprocess.run(tmux + ["kill-server"], capture_output=True)
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            sys.exit("cdlake standalone did not stop within 30 s of SIGTERM")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
