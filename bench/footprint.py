"""The memory scenario: RSS idle, RSS under load, and RSS growth per idle WebSocket tunnel.

On a freshly started proxy: RSS of the master and of each worker at rest;
then the highest RSS of each during a keep-alive small-GET wrk run; then, after
a few warm-up tunnels, the workers' total RSS growth when N idle tunnels are
open (no pings, no traffic), divided by N.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench import procs, scenarios, wrk
from bench.memory import TreeRss, tree_rss
from bench.proxies import Proxy

SAMPLE_EVERY = 0.2


@dataclass(frozen=True)
class Footprint:
    idle: TreeRss
    load: TreeRss                   # the highest RSS each process reached under load
    tunnels: int                    # idle tunnels actually open for the growth figure
    per_tunnel: float | None        # bytes of worker RSS per idle tunnel
    tunnel_error: str | None = None


def measure(proxy: Proxy, load_seconds: float, tunnels: int, log_dir: Path) -> Footprint:
    time.sleep(0.5)
    idle = tree_rss(proxy.pid, proxy.single_process)
    load = rss_under_load(proxy, load_seconds, log_dir)
    opened, per_tunnel, error = 0, None, None
    if proxy.endpoints.ws is not None and tunnels > 0:
        try:
            opened, per_tunnel = tunnel_growth(proxy, tunnels, log_dir)
        except Exception as failure:  # noqa: BLE001 - the RSS figures still stand
            error = str(failure).strip().splitlines()[0][:200]
    return Footprint(idle, load, opened, per_tunnel, error)


def rss_under_load(proxy: Proxy, seconds: float, log_dir: Path) -> TreeRss:
    assert proxy.endpoints.http is not None
    load = wrk.start(wrk.command(proxy.endpoints.http + "/", seconds, 2, 64), log_dir)
    master_peak = 0
    worker_peaks: dict[int, int] = {}
    while load.alive():
        sample = tree_rss(proxy.pid, proxy.single_process)
        master_peak = max(master_peak, sample.master or 0)
        for pid, rss in sample.workers.items():
            worker_peaks[pid] = max(worker_peaks.get(pid, 0), rss)
        time.sleep(SAMPLE_EVERY)
    wrk.finish(load, seconds)
    return TreeRss(master_peak or None, worker_peaks)


def tunnel_growth(proxy: Proxy, tunnels: int, log_dir: Path) -> tuple[int, float]:
    """Open `tunnels` idle tunnels; return how many opened and worker RSS growth per tunnel."""
    assert proxy.endpoints.ws is not None
    warm = scenarios.ws_load_command("echo", proxy.endpoints.ws, 0.5, 10)
    scenarios.run_ws_load(warm, log_dir, timeout=30)
    time.sleep(0.5)
    before = tree_rss(proxy.pid, proxy.single_process).workers_total
    argv = [sys.executable, "-m", "bench.ws_load", "idle", proxy.endpoints.ws,
            "--tunnels", str(tunnels), "--hold", "600"]
    holder = procs.start(f"ws-idle-{proxy.pid}", argv, log_dir, cwd=scenarios.REPO)
    try:
        deadline = time.monotonic() + 60 + tunnels / 50
        opened = None
        while opened is None and holder.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
            opened = scenarios.read_json_line(holder)
        if not opened or not opened.get("open"):
            raise RuntimeError(f"idle tunnels did not open: {opened or holder.log_tail()}")
        time.sleep(1.0)  # let both ends finish their handshakes' allocations
        after = tree_rss(proxy.pid, proxy.single_process).workers_total
    finally:
        holder.stop()
    return opened["open"], (after - before) / opened["open"]
