"""A dashboard tab left open: how much the worker pushing to it grows.

`python -m bench.dashboard_soak [--seconds 600]` starts the real master (two
workers, a status listener, loopback ports only), opens the dashboard in
headless Chromium (Debian's `/usr/bin/chromium`, launched as the tests launch
it), finds the worker serving the page's /ws (the page shows the pushes'
`served_by` as `#served-by[data-pid]`), and reads that worker's RSS with
psutil after a warm-up and again at the end. The figure: it grows by less
than 1 MiB in 10 minutes. The page's own side (JS heap, DOM nodes) is printed
too. Bounded in time: warm-up + --seconds, then everything started is stopped.

Exit status 1 when the growth is 1 MiB or more, or when the page's socket moved
to another worker during the run (the figure would then be meaningless).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import FrameType

import psutil

from bench import procs
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS

REPO = Path(__file__).resolve().parent.parent
BOUND = 1 << 20  # the figure: less than 1 MiB
PAGE_STATE = """() => ({
  servedBy: Number(document.getElementById("served-by").dataset.pid || 0),
  connection: document.getElementById("connection").textContent,
  workers: document.querySelectorAll("#workers tbody tr.worker").length,
  nodes: document.getElementsByTagName("*").length,
  heap: performance.memory ? performance.memory.usedJSHeapSize : 0,
})"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard_soak",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0,
                        help="how long the tab stays open after the warm-up (default 600)")
    parser.add_argument("--warmup", type=float, default=30.0,
                        help="seconds before the first RSS sample (default 30)")
    parser.add_argument("--every", type=float, default=60.0,
                        help="seconds between the progress lines (default 60)")
    parser.add_argument("--workers", type=int, default=2)
    return parser.parse_args(argv)


def write_config(directory: Path, workers: int, status_port: int) -> Path:
    config = directory / "dashboard-soak.toml"
    # The proxied location is never used: the page is the only client.
    config.write_text(f"""\
workers = {workers}
access_log = "off"

[status]
listen = "127.0.0.1:{status_port}"

[[server]]
listen = ["127.0.0.1:{procs.free_port()}"]
  [[server.location]]
  path = "/"
  proxy_pass = "127.0.0.1:{procs.free_port()}"
""")
    return config


def status(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status.json", timeout=5) as reply:
        return json.load(reply)


def wait_workers(port: int, count: int, master: procs.Process, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not master.alive():
            raise procs.StartError(f"the master exited: {master.cause()}")
        workers = status(port)["workers"]
        if sum(worker["state"] == "serving" for worker in workers) >= count:
            return
        time.sleep(0.2)
    raise procs.StartError(f"{count} workers did not serve in {timeout:.0f}s")


def mib(value: float) -> str:
    return f"{value / (1 << 20):.2f} MiB"


def soak(args: argparse.Namespace, work: Path) -> int:
    from playwright.sync_api import sync_playwright

    status_port = procs.free_port()
    config = write_config(work, args.workers, status_port)
    master = procs.start("prefork-proxy", [sys.executable, "-m", "prefork_proxy", "-c",
                                           str(config)], work, cwd=REPO)
    procs.wait_for_port(status_port, master)
    wait_workers(status_port, args.workers, master)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                             headless=True)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(f"http://127.0.0.1:{status_port}/", timeout=30_000)
            page.locator("#served-by[data-pid]").wait_for(timeout=30_000)
            started = time.monotonic()
            page.wait_for_timeout(args.warmup * 1000)  # the page's own clock keeps it live
            first = page.evaluate(PAGE_STATE)
            worker = psutil.Process(first["servedBy"])
            rss_start = worker.memory_info().rss
            print(f"dashboard soak: worker {worker.pid} pushes to the page; "
                  f"RSS after {args.warmup:.0f} s warm-up: {mib(rss_start)}", flush=True)

            end = time.monotonic() + args.seconds
            while (left := end - time.monotonic()) > 0:
                page.wait_for_timeout(min(args.every, left) * 1000)
                now = page.evaluate(PAGE_STATE)
                rss = worker.memory_info().rss
                print(f"  {time.monotonic() - started:5.0f} s: RSS {mib(rss)} "
                      f"({(rss - rss_start) / 1024:+.0f} KiB), page {now['connection']}, "
                      f"{now['workers']} worker rows, {now['nodes']} DOM nodes, "
                      f"JS heap {mib(now['heap'])}", flush=True)
            last = page.evaluate(PAGE_STATE)
            rss_end = worker.memory_info().rss
        finally:
            browser.close()

    growth = rss_end - rss_start
    moved = last["servedBy"] != first["servedBy"]
    print(f"worker {worker.pid} RSS: {mib(rss_start)} -> {mib(rss_end)} over "
          f"{args.seconds:.0f} s: {growth / 1024:+.0f} KiB "
          f"({'under' if growth < BOUND else 'NOT under'} the 1 MiB bound)")
    print(f"page: DOM nodes {first['nodes']} -> {last['nodes']}, "
          f"JS heap {mib(first['heap'])} -> {mib(last['heap'])}")
    if moved:
        print(f"the page's socket moved to worker {last['servedBy']}: the figure does not hold")
    return 1 if moved or growth >= BOUND else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    work = Path(tempfile.mkdtemp(prefix="dashboard-soak-"))
    try:
        return soak(args, work)
    finally:
        procs.stop_all()
        print(f"logs: {work}")


if __name__ == "__main__":
    sys.exit(main())
