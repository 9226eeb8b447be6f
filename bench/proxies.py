"""The proxies under test: one class each, the same routes, the same upstreams.

Every proxy exposes what it supports as `Endpoints`: an HTTP base URL (proxied
to the nginx upstream), a WebSocket URL (to the echo server) and a uwsgi URL (to
uWSGI); prefork-proxy and nginx also serve the real-traffic routes (/real/,
/pool/, /uwsgi1/). A route a proxy cannot serve is None, and its scenarios
report "n/a".
"""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from bench import nginx, procs
from bench.upstreams import Upstreams

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Endpoints:
    http: str | None = None   # base URL, e.g. http://127.0.0.1:PORT
    ws: str | None = None     # ws://127.0.0.1:PORT/ws (websockets echo server)
    uwsgi: str | None = None  # http://127.0.0.1:PORT/uwsgi/
    ws_bulk: str | None = None  # ws://127.0.0.1:PORT/wsbulk (bench/ws_blast.py)
    # The real-traffic scenarios, set for prefork-proxy and nginx only:
    real: str | None = None       # http://127.0.0.1:PORT/real/ (the HTTP upstream)
    pool: str | None = None       # http://127.0.0.1:PORT/pool/ (three servers, round robin)
    uwsgi_one: str | None = None  # http://127.0.0.1:PORT/uwsgi1/ (uWSGI, one process)


class Proxy:
    """A proxy the harness can start with N workers in front of `Upstreams`."""

    name: ClassVar[str]
    can_reload: ClassVar[bool] = False
    single_process: ClassVar[bool] = False  # one process whatever the worker count

    def __init__(self, work: Path, log_dir: Path) -> None:
        self.work = work
        self.log_dir = log_dir
        self.process: procs.Process | None = None
        self.endpoints = Endpoints()
        self.workers = 0

    def launch(self, workers: int, upstreams: Upstreams, port: int) -> procs.Process:
        raise NotImplementedError

    def routes(self, port: int) -> Endpoints:
        raise NotImplementedError

    def version(self) -> str:
        raise NotImplementedError

    def start(self, workers: int, upstreams: Upstreams) -> Endpoints:
        """Start and wait until a request goes through; raises procs.StartError."""
        port = procs.free_port()
        self.workers = workers
        self.process = self.launch(workers, upstreams, port)
        procs.wait_for_port(port, self.process)
        endpoints = self.routes(port)
        assert endpoints.http is not None
        wait_until_serving(endpoints.http + "/", self.process)
        self.endpoints = endpoints
        return endpoints

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def reload(self) -> None:
        assert self.process is not None
        self.process.signal(signal.SIGHUP)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid


def wait_until_serving(url: str, process: procs.Process, timeout: float = 20.0) -> None:
    """A listening socket is not enough: the master may bind long before a worker serves."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while time.monotonic() < deadline:
        if not process.alive():
            raise procs.StartError(f"{process.name} exited with status "
                                   f"{process.popen.returncode}: {process.cause()}\n"
                                   f"{process.log_tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError as error:
            last_error = str(error)
        time.sleep(0.1)
    raise procs.StartError(f"{process.name} did not serve {url} in {timeout:.0f}s: {last_error}"
                           f"\n{process.log_tail()}")


def full_routes(port: int) -> Endpoints:
    """Every route: prefork-proxy and nginx serve them all, the same way."""
    base = f"127.0.0.1:{port}"
    return Endpoints(f"http://{base}", f"ws://{base}/ws", f"http://{base}/uwsgi/",
                     f"ws://{base}/wsbulk", f"http://{base}/real/", f"http://{base}/pool/",
                     f"http://{base}/uwsgi1/")


class PreforkProxy(Proxy):
    name = "prefork-proxy"
    can_reload = True
    executable = REPO / ".venv" / "bin" / "prefork-proxy"

    def launch(self, workers: int, upstreams: Upstreams, port: int) -> procs.Process:
        directory = self.work / f"prefork-proxy-{port}"
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / "prefork-proxy.toml"
        config.write_text(f"""\
workers = {workers}
graceful_timeout = "30s"
access_log = "off"
pidfile = "{directory}/prefork-proxy.pid"
worker_connections = 10000
{self.extra_config()}
[upstream.app]
servers = ["127.0.0.1:{upstreams.http_port}"]
keepalive = 32

[upstream.pool]
servers = [{", ".join(f'"127.0.0.1:{p}"' for p in upstreams.pool_ports)}]
balance = "round_robin"
keepalive = 32

[[server]]
listen = ["127.0.0.1:{port}"]

  [[server.location]]
  path = "/"
  proxy_pass = "http://app"
  client_max_body_size = "0"

  [[server.location]]
  path = "/ws"
  proxy_pass = "127.0.0.1:{upstreams.ws_port}"
  read_timeout = "1h"

  [[server.location]]
  path = "/wsbulk"
  proxy_pass = "127.0.0.1:{upstreams.ws_bulk_port}"
  read_timeout = "1h"

  [[server.location]]
  path = "/uwsgi/"
  uwsgi_pass = "127.0.0.1:{upstreams.uwsgi_port}"

  [[server.location]]
  path = "/real/"
  proxy_pass = "http://app"

  [[server.location]]
  path = "/pool/"
  proxy_pass = "http://pool"

  [[server.location]]
  path = "/uwsgi1/"
  uwsgi_pass = "127.0.0.1:{upstreams.uwsgi_one_port}"
""")
        return procs.start(f"prefork-proxy-{port}", [str(self.executable), "-c", str(config)],
                           self.log_dir)

    def extra_config(self) -> str:
        """More top-level settings or tables (bench/metrics_cost.py adds [status])."""
        return ""

    def routes(self, port: int) -> Endpoints:
        return full_routes(port)

    def version(self) -> str:
        result = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, check=False)
        return f"git {result.stdout.strip() or 'unknown'}"


class Nginx(Proxy):
    name = "nginx"
    can_reload = True

    def launch(self, workers: int, upstreams: Upstreams, port: int) -> procs.Process:
        prefix = self.work / f"nginx-proxy-{port}"
        prefix.mkdir(parents=True, exist_ok=True)
        config = nginx.proxy_config(prefix, port, workers, upstreams.http_port,
                                    upstreams.ws_port, upstreams.uwsgi_port,
                                    upstreams.ws_bulk_port, upstreams.pool_ports,
                                    upstreams.uwsgi_one_port)
        return nginx.start(f"nginx-proxy-{port}", prefix, config, self.log_dir)

    def routes(self, port: int) -> Endpoints:
        return full_routes(port)

    def version(self) -> str:
        return nginx.version()
