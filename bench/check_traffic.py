"""`python -m bench.check_traffic`: active-check requests per interval per peer, by worker count.

Three upstreams (small HTTP servers here that count the requests they get, the
checks being all of them: no client sends any) behind prefork-proxy with
`health_check = { path = "/healthz", interval = "0.5s" }`, with 2 workers and
then 4. One checker process runs the checks for the host, so the figure must
be 1.0 check per interval per peer whatever the worker count (DESIGN: N workers
must not mean N times the check traffic).
"""

from __future__ import annotations

import argparse
import http.server
import socketserver
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench import procs
from bench.proxies import REPO

INTERVAL = 0.5


class _Counting(http.server.BaseHTTPRequestHandler):
    counts: dict[int, int]
    lock = threading.Lock()

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        with self.lock:
            port = self.server.server_address[1]
            self.counts[port] = self.counts.get(port, 0) + 1
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


def measure(workers: int, seconds: float, work: Path) -> float:
    _Counting.counts = {}
    servers = [_Server(("127.0.0.1", 0), _Counting) for _ in range(3)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    ports = [server.server_address[1] for server in servers]
    listen = procs.free_port()
    config = work / f"check-{workers}.toml"
    config.write_text(f"""\
workers = {workers}
access_log = "off"
[upstream.app]
servers = [{", ".join(f'"127.0.0.1:{port}"' for port in ports)}]
health_check = {{ path = "/healthz", interval = "{INTERVAL}s", timeout = "0.4s" }}
[[server]]
listen = ["127.0.0.1:{listen}"]
  [[server.location]]
  path = "/"
  proxy_pass = "http://app"
""")
    process = procs.start(f"check-{workers}", [str(REPO / ".venv/bin/prefork-proxy"), "-c",
                                                str(config)], work)
    try:
        procs.wait_for_port(listen, process)
        time.sleep(2 * INTERVAL)  # the checker's first round
        before = dict(_Counting.counts)
        time.sleep(seconds)
        after = dict(_Counting.counts)
    finally:
        process.stop()
        for server in servers:
            server.shutdown()
            server.server_close()
    checks = sum(after.get(port, 0) - before.get(port, 0) for port in ports)
    return checks / (seconds / INTERVAL) / len(ports)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.check_traffic",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-checks-"))
    try:
        for workers in (2, 4):
            per = measure(workers, args.seconds, work)
            print(f"workers = {workers}: {per:.2f} checks per {INTERVAL:g} s interval per peer "
                  f"(3 peers, {args.seconds:g} s)")
    finally:
        procs.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
