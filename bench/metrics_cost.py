"""What metrics collection costs: the same proxy with the status listener off, and
on with a scraper reading /metrics every second, in one run.

`python -m bench.metrics_cost [--runs 3] [--seconds 10]` starts the bench's
upstreams (bench/upstreams.py) and two prefork-proxy masters configured alike
but for `[status]`, then runs wrk on the real-traffic routes against each in
turn (interleaved, rotated), and prints the median requests/s of both and
their ratio, and the workers' CPU time per request (user + system, read with
psutil around each run: on this shared machine the steadier figure). The
counters are written by every request either way; what the listener adds is
the scrape: a snapshot of the shared memory rendered as Prometheus text once
a second, by whichever worker accepts it. Loopback only;
every run is bounded by --seconds.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import urllib.request
from pathlib import Path

import psutil

from bench import procs, wrk
from bench.proxies import PreforkProxy
from bench.upstreams import start_upstreams

ROUTES = (("bare GET, keep-alive", "real", ()), ("three-server pool", "pool", ()))


class PreforkProxyWithStatus(PreforkProxy):
    name = "prefork-proxy, status listener on"

    def __init__(self, work: Path, log_dir: Path) -> None:
        super().__init__(work, log_dir)
        self.status_port = procs.free_port()

    def extra_config(self) -> str:
        return f'[status]\nlisten = "127.0.0.1:{self.status_port}"\n'


def _workers_cpu(master_pid: int) -> float:
    return sum(sum(child.cpu_times()[:2]) for child in psutil.Process(master_pid).children())


class Scraper:
    """Reads /metrics once a second, as Prometheus would (a short scrape interval)."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.stopped = threading.Event()
        self.scrapes = 0
        self.bytes = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Scraper:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join(5)

    def _run(self) -> None:
        while not self.stopped.wait(1.0):
            with urllib.request.urlopen(self.url, timeout=5) as reply:
                self.bytes += len(reply.read())
            self.scrapes += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="metrics-cost-"))
    logs = work / "logs"
    logs.mkdir()
    upstreams = start_upstreams(work, logs)
    off, on = PreforkProxy(work, logs), PreforkProxyWithStatus(work, logs)
    try:
        endpoints = {off: off.start(2, upstreams), on: on.start(2, upstreams)}
        rates: dict[tuple[str, str], list[float]] = {}
        cpu: dict[tuple[str, str], list[float]] = {}
        scrapes = 0
        for run in range(args.runs):
            for name, route, headers in ROUTES:
                for proxy in ((off, on) if run % 2 == 0 else (on, off)):
                    url = getattr(endpoints[proxy], route)
                    before = _workers_cpu(proxy.pid)
                    if proxy is on:
                        with Scraper(on.status_port) as scraper:
                            result = wrk.run(url, args.seconds, 2, 64, logs, headers)
                        scrapes += scraper.scrapes
                    else:
                        result = wrk.run(url, args.seconds, 2, 64, logs, headers)
                    assert result.failed == 0, result
                    spent = _workers_cpu(proxy.pid) - before
                    rates.setdefault((name, proxy.name), []).append(result.requests_per_second)
                    cpu.setdefault((name, proxy.name), []).append(
                        1e6 * spent / max(result.requests, 1))
        print(f"{args.runs} runs of {args.seconds:g} s, interleaved; {scrapes} scrapes of "
              f"/metrics during the 'on' runs")
        for name, _, _ in ROUTES:
            off_rate = statistics.median(rates[(name, off.name)])
            on_rate = statistics.median(rates[(name, on.name)])
            off_cpu = statistics.median(cpu[(name, off.name)])
            on_cpu = statistics.median(cpu[(name, on.name)])
            print(f"{name}: off {off_rate:,.0f} req/s, on + scraper {on_rate:,.0f} req/s, "
                  f"ratio {on_rate / off_rate:.3f}; worker CPU per request off "
                  f"{off_cpu:.1f} µs, on {on_cpu:.1f} µs ({on_cpu / off_cpu - 1:+.1%})")
    finally:
        on.stop()
        off.stop()
        upstreams.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
