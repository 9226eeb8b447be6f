"""The reload scenario: HUP every second under wrk load; failed requests and p99.

Two wrk processes load the proxy at once, one on keep-alive connections and
one opening a new connection per request, because a reload hurts each in its
own way (a keep-alive socket closed under a client; a queued connection
reset). A steady run without HUP gives the p99 to compare with. Failed requests
are non-2xx/3xx answers plus socket errors (connect, read, write, timeout).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from bench import wrk
from bench.proxies import Proxy


@dataclass(frozen=True)
class ReloadRun:
    reloads: int
    requests: int
    failed: int
    p99_ms: float           # keep-alive stream
    p99_close_ms: float     # new-connection stream
    command: str


def measure(proxy: Proxy, seconds: int, log_dir: Path, hup_every_second: bool) -> ReloadRun:
    assert proxy.endpoints.http is not None
    url = proxy.endpoints.http + "/"
    keepalive_argv = wrk.command(url, seconds, 1, 32)
    close_argv = wrk.command(url, seconds, 1, 8, headers=("Connection: close",))
    keepalive = wrk.start(keepalive_argv, log_dir)
    close = wrk.start(close_argv, log_dir)
    start = time.monotonic()
    reloads = 0
    if hup_every_second:
        for tick in range(seconds):
            pause = start + tick + 0.5 - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            if not (keepalive.alive() or close.alive()):
                break
            proxy.reload()
            reloads += 1
    steady, fresh = wrk.finish(keepalive, seconds), wrk.finish(close, seconds)
    if proxy.process is None or not proxy.process.alive():
        raise RuntimeError(f"{proxy.name} died during the reload run")
    return ReloadRun(
        reloads=reloads,
        requests=steady.requests + fresh.requests,
        failed=steady.failed + fresh.failed,
        p99_ms=steady.p99_ms,
        p99_close_ms=fresh.p99_ms,
        command=f"{steady.command} & {fresh.command}",
    )
