"""The upstreams every proxy is measured against, started once per lineup.

* HTTP: a dedicated nginx (1 worker, keep-alive on) serving a small fixed body,
  a 1 MiB static file and a PUT sink on tmpfs. It is fast, so the proxy's own
  cost is what shows.
* WebSocket: the `websockets` package's echo server (bench/ws_echo.py) for
  round trips and idle tunnels, and bench/ws_blast.py, a raw-socket WebSocket
  peer that streams pre-built frames at memory speed, for bulk throughput.
* uwsgi: the real uWSGI server, `--master --processes 2`, on bench/uwsgi_app.py,
  and a second one with `--processes 1` for the slow-client figure: while one
  reply is being sent, that process can answer no one else.
* The three-server pool: two more listening ports of the same HTTP nginx, so
  the pool costs the upstream nothing more than one server does.

All of them run at `procs.UPSTREAM_NICE`, a fixed priority above the proxies.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from bench import nginx, procs

BENCH_DIR = Path(__file__).resolve().parent
UWSGI = Path(sys.executable).with_name("uwsgi")
ONE_MIB = 1 << 20


@dataclass
class Upstreams:
    http_port: int
    ws_port: int
    uwsgi_port: int
    ws_bulk_port: int
    pool_ports: tuple[int, int, int] = (0, 0, 0)   # the HTTP nginx again, three ports
    uwsgi_one_port: int = 0                        # uWSGI with one process
    processes: list[procs.Process] = field(default_factory=list)
    dav_root: Path | None = None

    def stop(self) -> None:
        for process in self.processes:
            process.stop()
        if self.dav_root is not None:
            shutil.rmtree(self.dav_root, ignore_errors=True)


def _tmpfs_dir() -> Path:
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="bench-dav-", dir=base))


def start_uwsgi(name: str, port: int, processes: int, log_dir: Path) -> procs.Process:
    argv = [
        str(UWSGI),
        "--socket", f"127.0.0.1:{port}",
        "--wsgi-file", str(BENCH_DIR / "uwsgi_app.py"),
        "--master", "--processes", str(processes),
        "--disable-logging", "--die-on-term", "--listen", "1024",
    ]
    return procs.start(name, argv, log_dir, nice=procs.UPSTREAM_NICE)


def start_upstreams(work: Path, log_dir: Path) -> Upstreams:
    """Start the three upstreams and wait until each one accepts."""
    files = work / "files"
    files.mkdir(parents=True, exist_ok=True)
    (files / "1m.bin").write_bytes(os.urandom(ONE_MIB))
    (files / "10m.bin").write_bytes(os.urandom(10 * ONE_MIB))
    dav_root = _tmpfs_dir()
    for sub in ("upload", "tmp"):
        (dav_root / sub).mkdir(exist_ok=True)
    for path in (dav_root, dav_root / "upload", dav_root / "tmp", files):
        path.chmod(0o777)  # nginx workers run as nobody when started as root

    upstreams = Upstreams(procs.free_port(), procs.free_port(), procs.free_port(),
                          procs.free_port(), dav_root=dav_root)
    upstreams.pool_ports = (upstreams.http_port, procs.free_port(), procs.free_port())
    upstreams.uwsgi_one_port = procs.free_port()
    http = nginx.start(
        "upstream-nginx",
        work / "upstream-nginx",
        nginx.upstream_config(work / "upstream-nginx", upstreams.http_port, files, dav_root,
                              upstreams.pool_ports[1:]),
        log_dir,
        nice=procs.UPSTREAM_NICE,
    )
    upstreams.processes.append(http)
    ws = procs.start(
        "upstream-ws-echo",
        [sys.executable, "-m", "bench.ws_echo", str(upstreams.ws_port)],
        log_dir,
        cwd=BENCH_DIR.parent,
        nice=procs.UPSTREAM_NICE,
    )
    upstreams.processes.append(ws)
    blast = procs.start(
        "upstream-ws-blast",
        [sys.executable, "-m", "bench.ws_blast", "serve", str(upstreams.ws_bulk_port)],
        log_dir,
        cwd=BENCH_DIR.parent,
        nice=procs.UPSTREAM_NICE,
    )
    upstreams.processes.append(blast)
    uwsgi = start_uwsgi("upstream-uwsgi", upstreams.uwsgi_port, 2, log_dir)
    upstreams.processes.append(uwsgi)
    uwsgi_one = start_uwsgi("upstream-uwsgi-one", upstreams.uwsgi_one_port, 1, log_dir)
    upstreams.processes.append(uwsgi_one)
    for process, port in ((http, upstreams.http_port), (ws, upstreams.ws_port),
                          (uwsgi, upstreams.uwsgi_port), (blast, upstreams.ws_bulk_port),
                          (uwsgi_one, upstreams.uwsgi_one_port),
                          *((http, extra) for extra in upstreams.pool_ports[1:])):
        procs.wait_for_port(port, process)
    return upstreams

