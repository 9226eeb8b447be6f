"""Python reverse proxies from PyPI that a user might pick instead: proxy.py and mitmproxy.

Each is configured the way its documentation shows for a reverse proxy, with
logging off. Neither speaks uwsgi, neither reloads on HUP, and proxy.py's
reverse proxy does not pass WebSocket upgrades (it answers them itself), so
those scenarios are "n/a" for them.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
import sys
from pathlib import Path

from bench import procs
from bench.proxies import REPO, Endpoints, Proxy
from bench.upstreams import Upstreams


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


class ProxyPy(Proxy):
    """proxy.py (PyPI `proxy.py`) with its reverse-proxy core and a one-route plugin.

    `--threaded`: the default threadless executor crashed here on the first
    request (FileNotFoundError from selectors.modify in proxy.py 2.4.10).
    `--num-acceptors` is the worker-process count.
    """

    name = "proxy.py"
    package = "proxy.py"

    def launch(self, workers: int, upstreams: Upstreams, port: int) -> procs.Process:
        argv = [
            sys.executable, "-m", "proxy",
            "--hostname", "127.0.0.1", "--port", str(port),
            "--enable-reverse-proxy",
            "--plugins", "bench.proxypy_plugin.ReverseToUpstream",
            "--threaded", "--num-acceptors", str(workers),
            "--backlog", "4096",
            "--log-level", "ERROR",
        ]
        env = {
            "BENCH_PROXYPY_UPSTREAM": f"http://127.0.0.1:{upstreams.http_port}",
            "PYTHONPATH": str(REPO),
        }
        return procs.start(f"proxy.py-{port}", argv, self.log_dir, env=env, cwd=REPO)

    def routes(self, port: int) -> Endpoints:
        return Endpoints(http=f"http://127.0.0.1:{port}")

    def version(self) -> str:
        return importlib.metadata.version(self.package)


class Mitmproxy(Proxy):
    """mitmproxy's `mitmdump` in reverse mode: one listener per upstream.

    Bodies are streamed (`stream_large_bodies=1`), as the other proxies do;
    mitmproxy otherwise buffers each body whole. It runs one process: the
    worker count does not apply.
    """

    name = "mitmproxy"
    package = "mitmproxy"
    single_process = True

    def __init__(self, work: Path, log_dir: Path) -> None:
        super().__init__(work, log_dir)
        self.ws_port = 0
        self.ws_bulk_port = 0

    def launch(self, workers: int, upstreams: Upstreams, port: int) -> procs.Process:
        self.ws_port = procs.free_port()
        self.ws_bulk_port = procs.free_port()
        mitmdump = shutil.which("mitmdump", path=str(Path(sys.executable).parent)) or "mitmdump"
        argv = [
            mitmdump,
            "--mode", f"reverse:http://127.0.0.1:{upstreams.http_port}@127.0.0.1:{port}",
            "--mode", f"reverse:http://127.0.0.1:{upstreams.ws_port}@127.0.0.1:{self.ws_port}",
            "--mode",
            f"reverse:http://127.0.0.1:{upstreams.ws_bulk_port}@127.0.0.1:{self.ws_bulk_port}",
            "--quiet",
            "--set", "stream_large_bodies=1",
            "--set", "connection_strategy=lazy",
            "--set", "keep_host_header=true",
            "--set", "termlog_verbosity=error",
            "--set", f"confdir={self.work / 'mitmproxy-conf'}",
        ]
        return procs.start(f"mitmproxy-{port}", argv, self.log_dir)

    def start(self, workers: int, upstreams: Upstreams) -> Endpoints:
        endpoints = super().start(workers, upstreams)
        assert self.process is not None
        procs.wait_for_port(self.ws_port, self.process)
        procs.wait_for_port(self.ws_bulk_port, self.process)
        return endpoints

    def routes(self, port: int) -> Endpoints:
        return Endpoints(http=f"http://127.0.0.1:{port}", ws=f"ws://127.0.0.1:{self.ws_port}/ws",
                         ws_bulk=f"ws://127.0.0.1:{self.ws_bulk_port}/wsbulk")

    def version(self) -> str:
        return importlib.metadata.version(self.package)
