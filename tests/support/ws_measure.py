"""Measure WebSocket tunnels side by side with nginx, in one run.

    .venv/bin/python -m tests.support.ws_measure [--seconds 5] [--rounds 3]
                                                  [--tunnels 100] [--idle 5000]

Starts, on loopback ephemeral ports: the raw echo upstream (`ws_raw`), the
`websockets` echo upstream (`ws_echo_server`), Debian's nginx configured as
its documentation shows (proxy_pass plus the three lines, default buffers,
one worker) and prefork-proxy (one worker). Then it reports:

* memory: the prefork-proxy worker's RSS growth per idle tunnel, with
  `--idle` tunnels open (target: at most 32 KB);
* bulk: echoed MB/s through one tunnel (target: at least 1.5x nginx);
* echo: round trips per second over `--tunnels` tunnels (target: 0.5x nginx);

and, for reference, what the peers do with no proxy in between. Bulk and echo
are each measured twice: with raw peers, so that the proxies are what is
measured, and with the `websockets` package at both ends. Proxies take turns
for `--rounds` rounds and the best round counts, which damps the noise of a
shared machine. Measurements only: nothing here is a pass/fail test.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.support import ws_load
from tests.support.nginx import running_nginx
from tests.support.processes import ROOT, Process, Proxy, free_port, port_open, wait_for

KB = 1024


def raise_file_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def start_module(module: str, prefix: Path) -> tuple[Process, int]:
    port = free_port()
    process = Process([sys.executable, "-m", module, str(port)], prefix / f"{module}.log")
    wait_for(lambda: port_open(port) or not process.alive(), message=f"{module} to listen")
    if not process.alive():
        raise RuntimeError(f"{module} exited:\n{process.log()}")
    return process, port


def nginx_servers(raw_port: int, echo_port: int, ports: tuple[int, int]) -> str:
    # nginx's WebSocket proxying as its documentation shows it: three lines.
    location = """\
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
        }}"""
    return "\n".join(
        f"    server {{\n        listen 127.0.0.1:{port} backlog=4096;\n"
        + location.format(upstream=upstream) + "\n    }"
        for port, upstream in zip(ports, (raw_port, echo_port), strict=True))


def proxy_config(raw_port: int, echo_port: int, ports: tuple[int, int], idle: int) -> str:
    servers = "".join(f"""
        [[server]]
        listen = ["127.0.0.1:{port}"]
          [[server.location]]
          path = "/"
          proxy_pass = "127.0.0.1:{upstream}"
        """ for port, upstream in zip(ports, (raw_port, echo_port), strict=True))
    return textwrap.dedent(f"""\
        workers = 1
        access_log = "off"
        worker_connections = {idle + 1000}
        """) + textwrap.dedent(servers)


@contextlib.contextmanager
def running_proxy(text: str, prefix: Path) -> Iterator[Proxy]:
    path = prefix / "prefork-proxy.toml"
    path.write_text(text)
    proxy = Proxy(path, prefix / "prefork-proxy.log")
    try:
        proxy.wait_serving()
        yield proxy
    finally:
        proxy.stop()


def worker_rss(proxy: Proxy) -> int:
    (worker,) = proxy.workers()
    return worker.memory_info().rss


def measure_memory(proxy: Proxy, port: int, idle: int) -> dict[str, float]:
    """RSS growth of the one worker per idle tunnel, after a warm-up."""
    for sock in ws_load.open_idle(port, 50):  # load lazy imports and pools first
        sock.close()
    time.sleep(1.0)  # let the worker finish closing those (measurement, not a test)
    before = worker_rss(proxy)
    sockets = ws_load.open_idle(port, idle)
    try:
        time.sleep(1.0)
        during = worker_rss(proxy)
    finally:
        for sock in sockets:
            sock.close()
    return {"rss_before_mb": before / KB / KB, "rss_with_idle_mb": during / KB / KB,
            "per_tunnel_kb": (during - before) / idle / KB}


def best_of(rounds: int, runs: dict[str, Callable[[], float]]) -> dict[str, float]:
    """Run each measurement once per round, taking turns; keep each one's best."""
    best: dict[str, float] = {}
    for _ in range(rounds):
        for name, run in runs.items():
            best[name] = max(best.get(name, 0.0), run())
    return best


def report(title: str, unit: str, figures: dict[str, float], target: float) -> None:
    ratio = figures["prefork-proxy"] / figures["nginx"]
    verdict = "meets" if ratio >= target else "MISSES"
    print(f"{title}: nginx {figures['nginx']:,.0f} {unit}, prefork-proxy "
          f"{figures['prefork-proxy']:,.0f} {unit}; ratio {ratio:.2f}x nginx ({verdict} the "
          f"{target}x target); the peers alone, no proxy: {figures['direct']:,.0f} {unit}",
          flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each run")
    parser.add_argument("--rounds", type=int, default=3, help="turns per proxy; best counts")
    parser.add_argument("--tunnels", type=int, default=100, help="tunnels in the echo run")
    parser.add_argument("--idle", type=int, default=5000, help="tunnels in the memory run")
    args = parser.parse_args(argv)

    limit = raise_file_limit()
    if limit < 2 * args.idle + 200:
        print(f"RLIMIT_NOFILE is {limit}: too low for {args.idle} idle tunnels", file=sys.stderr)
        return 1
    with contextlib.ExitStack() as stack:
        prefix = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ws-measure-")))
        raw, raw_port = start_module("tests.support.ws_raw", prefix)
        stack.callback(raw.stop)
        echo, echo_port = start_module("tests.support.ws_echo_server", prefix)
        stack.callback(echo.stop)
        nginx_ports = (free_port(), free_port())
        stack.enter_context(running_nginx(nginx_servers(raw_port, echo_port, nginx_ports),
                                          prefix / "nginx", ports=nginx_ports))
        ours = (free_port(), free_port())
        proxy = stack.enter_context(running_proxy(
            proxy_config(raw_port, echo_port, ours, args.idle), prefix))
        print(f"prefork-proxy {ROOT}, nginx 1 worker; {args.seconds}s runs, "
              f"best of {args.rounds}", flush=True)

        memory = measure_memory(proxy, ours[0], args.idle)
        verdict = "meets" if memory["per_tunnel_kb"] <= 32 else "MISSES"
        print(f"memory: worker RSS {memory['rss_before_mb']:.1f} MB -> "
              f"{memory['rss_with_idle_mb']:.1f} MB with {args.idle} idle tunnels: "
              f"{memory['per_tunnel_kb']:.1f} KB per tunnel ({verdict} the 32 KB target)",
              flush=True)

        seconds, rounds, tunnels = args.seconds, args.rounds, args.tunnels
        # "direct": the client talks to the upstream itself, the ceiling of these peers.
        ports = {"nginx": nginx_ports, "prefork-proxy": ours, "direct": (raw_port, echo_port)}
        report("bulk, raw peers", "MB/s", best_of(rounds, {
            name: (lambda p=p: ws_load.bulk_raw(p[0], seconds)) for name, p in ports.items()
        }), 1.5)
        report(f"echo over {tunnels} tunnels, raw peers", "round trips/s", best_of(rounds, {
            name: (lambda p=p: ws_load.echo_raw(p[0], tunnels, seconds))
            for name, p in ports.items()
        }), 0.5)
        report("bulk, websockets peers", "MB/s", best_of(rounds, {
            name: (lambda p=p: ws_load.bulk_websockets(p[1], seconds))
            for name, p in ports.items()
        }), 1.5)
        report(f"echo over {tunnels} tunnels, websockets peers", "round trips/s",
               best_of(rounds, {
                   name: (lambda p=p: ws_load.echo_websockets(p[1], tunnels, seconds))
                   for name, p in ports.items()
               }), 0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
