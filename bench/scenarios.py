"""The throughput scenarios: what load each one sends, through which route, and its unit.

HTTP scenarios use wrk (`--latency` gives p50/p90/p99); WebSocket round trips
use bench/ws_load.py (the `websockets` client) and bulk throughput uses
bench/ws_blast.py. A scenario measures one proxy for one run and returns its
number; a route the proxy does not serve raises NotApplicable.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench import mixing, procs, wrk, ws_blast
from bench.proxies import Proxy
from bench.results import Latency

REPO = Path(__file__).resolve().parent.parent


class NotApplicable(Exception):
    """The proxy has no such feature (no uwsgi, no WebSocket, no reload)."""


@dataclass(frozen=True)
class Measurement:
    value: float
    latency: Latency | None = None
    command: str = ""
    failed: int = 0     # requests that got a non-2xx/3xx answer or a socket error
    requests: int = 0
    note: str = ""      # said beside the figure (e.g. a wait cut off at its bound)


@dataclass(frozen=True)
class WrkScenario:
    key: str
    title: str
    unit: str
    route: str                         # "http" or "uwsgi": an Endpoints field
    path: str
    threads: int
    connections: int
    headers: tuple[str, ...] = ()
    script: Path | None = None
    mib_per_request: float | None = None  # set: report MiB/s instead of requests/s
    min_seconds: float = 0.0   # long enough for a slow proxy to finish a few requests

    def url(self, proxy: Proxy) -> str:
        base = getattr(proxy.endpoints, self.route)
        if base is None:
            raise NotApplicable(f"no {self.route} route")
        return base.rstrip("/") + self.path if self.path else base

    def measure(self, proxy: Proxy, seconds: float, log_dir: Path) -> Measurement:
        result = wrk.run(self.url(proxy), max(seconds, self.min_seconds), self.threads,
                         self.connections, log_dir, self.headers, self.script)
        if result.requests == 0:
            raise RuntimeError(f"no request completed ({result.failed} failed)")
        value = result.requests_per_second
        if self.mib_per_request is not None:
            value *= self.mib_per_request
        latency = [result.p50_ms, result.p90_ms, result.p99_ms]
        return Measurement(value, latency, result.command, result.failed, result.requests)


@dataclass(frozen=True)
class WsScenario:
    key: str
    title: str
    unit: str
    mode: str           # ws_load mode
    field: str          # the JSON field that holds the figure
    tunnels: int = 1

    def measure(self, proxy: Proxy, seconds: float, log_dir: Path) -> Measurement:
        if proxy.endpoints.ws is None:
            raise NotApplicable("no WebSocket tunnelling")
        argv = ws_load_command(self.mode, proxy.endpoints.ws, seconds, self.tunnels)
        result = run_ws_load(argv, log_dir, timeout=seconds + 60)
        return Measurement(result[self.field], None, " ".join(argv[1:]))


@dataclass(frozen=True)
class WsBulkScenario:
    key: str
    title: str
    unit: str
    direction: str      # "down" (upstream -> client) or "up" (client -> upstream)

    def measure(self, proxy: Proxy, seconds: float, log_dir: Path) -> Measurement:
        if proxy.endpoints.ws_bulk is None:
            raise NotApplicable("no WebSocket tunnelling")
        stream = ws_blast.down if self.direction == "down" else ws_blast.up
        url = proxy.endpoints.ws_bulk
        return Measurement(stream(url, seconds), None,
                           f"bench.ws_blast.{self.direction}({url!r}, {seconds:g})")


@dataclass(frozen=True)
class MixingScenario:
    """Wrong answers of concurrent clients in front of a hostile upstream (bench/mixing.py).

    The proxy of the lineup gives its kind and worker count; the scenario starts its
    own of that kind in front of a fresh hostile upstream for each run.
    """

    key: str
    title: str
    unit: str
    clients: int

    def measure(self, proxy: Proxy, seconds: float, log_dir: Path) -> Measurement:
        if proxy.name not in mixing.PROXIES:
            raise NotApplicable("measured for prefork-proxy and nginx")
        tally = mixing.measure(proxy.name, proxy.workers, proxy.work, log_dir, seconds,
                               self.clients)
        if tally.requests == 0:
            raise RuntimeError(f"no request completed: {tally.samples[:1]}")
        command = (f"bench.mixing.run_clients(port, {seconds:g}, clients={self.clients}) "
                   f"through {' '.join(r.method + ' ' + r.target for r in mixing.REQUESTS)}")
        return Measurement(tally.wrong, None, command, tally.failed, tally.requests)


def ws_load_command(mode: str, url: str, seconds: float, tunnels: int) -> list[str]:
    return [sys.executable, "-m", "bench.ws_load", mode, url,
            "--seconds", str(seconds), "--tunnels", str(tunnels)]


def read_json_line(process: procs.Process) -> dict | None:
    for line in reversed(process.log_path.read_text(errors="replace").splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return None


def run_ws_load(argv: list[str], log_dir: Path, timeout: float) -> dict:
    process = procs.start(f"ws-load-{argv[3]}-{time.monotonic_ns()}", argv, log_dir, cwd=REPO)
    deadline = time.monotonic() + timeout
    while process.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.stop()
    result = read_json_line(process)
    if result is None or "error" in result:
        raise RuntimeError(f"ws_load failed: {result or process.log_tail()}")
    return result


UPLOAD_MIB = 10

WRK_SCENARIOS = [
    WrkScenario("small_get_keepalive", "Small GET, keep-alive", "requests/s", "http", "/",
                threads=2, connections=64),
    WrkScenario("small_get_close", "Small GET, new connection per request", "requests/s", "http",
                "/", threads=2, connections=32, headers=("Connection: close",)),
    WrkScenario("response_1mib", "1 MiB response", "MiB/s", "http", "/1m",
                threads=2, connections=16, mib_per_request=1.0),
    WrkScenario("upload_10mib", "10 MiB upload (PUT)", "MiB/s", "http", "/upload/body",
                threads=2, connections=4, script=wrk.UPLOAD_SCRIPT,
                mib_per_request=UPLOAD_MIB, min_seconds=3),
    WrkScenario("uwsgi_hello", "uwsgi hello world (uWSGI, 2 processes)", "requests/s", "uwsgi",
                "", threads=2, connections=32),
    WrkScenario("uwsgi_varied", "uwsgi hello world, no head repeated (bench/varied.lua)",
                "requests/s", "uwsgi", "", threads=2, connections=32, script=wrk.VARIED_SCRIPT),
]

WS_SCENARIOS: list[WsScenario | WsBulkScenario] = [
    WsBulkScenario("ws_bulk_down", "WebSocket bulk, one tunnel, upstream to client", "MB/s",
                   "down"),
    WsBulkScenario("ws_bulk_up", "WebSocket bulk, one tunnel, client to upstream", "MB/s", "up"),
    WsScenario("ws_echo_100", "WebSocket echo, 100 tunnels", "round trips/s", "echo",
               "round_trips_per_s", tunnels=100),
]

# Scaling: the keep-alive small GET again, on a lineup started with one worker.
SCALING = WrkScenario("small_get_keepalive_1w", "Small GET, keep-alive, 1 worker", "requests/s",
                      "http", "/", threads=2, connections=64)

# Cross-client mixing: every kind of excess in tests/support/hostile_upstream.py at once.
MIXING = MixingScenario("cross_client_mixing", "Cross-client mixing, hostile upstream, "
                        f"{mixing.CLIENTS} clients", "wrong answers", clients=mixing.CLIENTS)
