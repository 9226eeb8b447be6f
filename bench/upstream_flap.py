"""`python -m bench.upstream_flap`: failed requests while one upstream of three flaps.

Three upstreams (each a one-worker nginx answering a small fixed body on its own
port); one of them is killed (SIGKILL to its process group: no goodbye to open
connections) and started again every 2 s, while wrk loads the proxy (-t2 -c32).
Each proxy runs 2 workers with a keep-alive pool and its default retry rule
(`proxy_next_upstream error timeout`): prefork-proxy, then nginx. Printed per
proxy: requests, failed (non-2xx + socket errors, as wrk counts them), restarts.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from bench import nginx, procs, wrk
from bench.proxies import wait_until_serving

REPO = Path(__file__).resolve().parent.parent


def _upstream_config(prefix: Path, port: int) -> str:
    return nginx.main_block(prefix, 1) + f"""\
http {{
{nginx.http_common(prefix)}
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{port} backlog=4096 reuseport;
        location / {{ return 200 "ok {port}\\n"; }}
    }}
}}
"""


class FlappingUpstream:
    def __init__(self, work: Path, log_dir: Path, index: int) -> None:
        self.port = procs.free_port()
        self.prefix = work / f"upstream-{index}"
        self.log_dir = log_dir
        self.index = index
        self.starts = 0
        self.process: procs.Process | None = None

    def start(self) -> None:
        self.starts += 1
        self.process = nginx.start(f"upstream-{self.index}-{self.starts}", self.prefix,
                                   _upstream_config(self.prefix, self.port), self.log_dir,
                                   nice=procs.UPSTREAM_NICE)
        procs.wait_for_port(self.port, self.process)

    def kill(self) -> None:
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.stop(grace=2.0)  # reaps it
            self.process = None


def _prefork_proxy(work: Path, log_dir: Path, port: int, ports: list[int]) -> procs.Process:
    config = work / "prefork-proxy.toml"
    servers = ", ".join(f'"127.0.0.1:{p}"' for p in ports)
    config.write_text(f"""\
workers = 2
access_log = "off"
worker_connections = 10000
[upstream.flap]
servers = [{servers}]
keepalive = 32
[[server]]
listen = ["127.0.0.1:{port}"]
  [[server.location]]
  path = "/"
  proxy_pass = "http://flap"
""")
    return procs.start("prefork-proxy", [sys.executable, "-m", "prefork_proxy", "-c",
                                         str(config)], log_dir, cwd=REPO,
                       env={"PYTHONPATH": str(REPO)})


def _nginx(work: Path, log_dir: Path, port: int, ports: list[int]) -> procs.Process:
    prefix = work / "nginx-proxy"
    servers = "".join(f"        server 127.0.0.1:{p};\n" for p in ports)
    config = nginx.main_block(prefix, 2) + f"""\
http {{
{nginx.http_common(prefix)}
    upstream flap {{
{servers}        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://flap;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""
    return nginx.start("nginx-proxy", prefix, config, log_dir)


def run_one(name: str, launch: object, upstreams: list[FlappingUpstream], work: Path,
            log_dir: Path, seconds: float) -> tuple[wrk.WrkResult, int]:
    """Start the proxy, load it while upstream 0 flaps, stop it."""
    for upstream in upstreams:
        if upstream.process is None:
            upstream.start()
    port = procs.free_port()
    process = launch(work, log_dir, port, [upstream.port for upstream in upstreams])
    try:
        procs.wait_for_port(port, process)
        wait_until_serving(f"http://127.0.0.1:{port}/", process)
        load = wrk.start(wrk.command(f"http://127.0.0.1:{port}/", seconds, 2, 32), log_dir)
        flapping = upstreams[0]
        restarts = 0
        started = time.monotonic()
        # On a fixed schedule: killed at 1, 3, 5... s, started again at 2, 4, 6... s
        # (a kill waits for its process group to be gone, which may take a moment).
        while started + 2 * restarts + 2 < started + seconds - 1.0:
            _sleep_until(started + 2 * restarts + 1)
            flapping.kill()
            _sleep_until(started + 2 * restarts + 2)
            flapping.start()
            restarts += 1
        return wrk.finish(load, seconds), restarts
    finally:
        process.stop()


def _sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.upstream_flap",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each load run")
    parser.add_argument("--proxies", nargs="+", default=["prefork-proxy", "nginx"],
                        choices=["prefork-proxy", "nginx"])
    args = parser.parse_args(argv)
    launchers = {"prefork-proxy": _prefork_proxy, "nginx": _nginx}
    work = Path(tempfile.mkdtemp(prefix="bench-flap-"))
    log_dir = work / "logs"
    log_dir.mkdir()
    upstreams = [FlappingUpstream(work, log_dir, index) for index in range(3)]
    try:
        print(f"one upstream of three killed and restarted every 2 s; wrk -t2 -c32 "
              f"-d{args.seconds:g}s; 2 workers each (logs: {log_dir})")
        print(f"{'proxy':<15}{'requests':>10}{'failed':>8}{'non-2xx':>9}{'socket':>8}"
              f"{'restarts':>10}")
        for name in args.proxies:
            result, restarts = run_one(name, launchers[name], upstreams, work, log_dir,
                                       args.seconds)
            print(f"{name:<15}{result.requests:>10}{result.failed:>8}{result.non_2xx:>9}"
                  f"{result.socket_errors:>8}{restarts:>10}")
    finally:
        procs.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
