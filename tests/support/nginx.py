"""Run Debian's nginx as the reference in parity tests.

Give it the text of one or more `server { ... }` blocks (and optionally
more `http {}`-level directives); it writes a config in a prefix directory,
with the pid file, error log and temp paths inside it, starts
`nginx -p PREFIX -c CONF -g 'daemon off;'`, waits until the given ports
accept, and kills the whole process group afterwards.

    port = free_port()
    with running_nginx(f"server {{ listen 127.0.0.1:{port}; ... }}", tmp_path,
                       ports=[port]) as nginx:
        ...

`nginx_binary()` is None when nginx is not installed; tests skip then.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

_CONF = """\
{user}worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/temp/body;
    proxy_temp_path {prefix}/temp/proxy;
    fastcgi_temp_path {prefix}/temp/fastcgi;
    uwsgi_temp_path {prefix}/temp/uwsgi;
    scgi_temp_path {prefix}/temp/scgi;
{http_extra}
{servers}
}}
"""


def nginx_binary() -> str | None:
    """The nginx executable, or None when it is not installed."""
    return shutil.which("nginx") or next(
        (path for path in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.path.exists(path)),
        None,
    )


def free_port(host: str = "127.0.0.1") -> int:
    """An ephemeral port that was free a moment ago (the kernel picks it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


@dataclass
class NginxProcess:
    process: subprocess.Popen
    prefix: Path
    config_path: Path

    @property
    def error_log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM the process group (master and workers), then SIGKILL if needed."""
        _kill_group(self.process, timeout)


def _kill_group(process: subprocess.Popen, timeout: float) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout)
    except ProcessLookupError:
        pass


def wait_until_accepting(
    address: tuple[str, int] | str, process: subprocess.Popen, timeout: float, what: str
) -> None:
    """Poll until `address` (host, port) or a unix path accepts, or fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode} before accepting")
        try:
            if isinstance(address, str):
                with socket.socket(socket.AF_UNIX) as probe:
                    probe.settimeout(1.0)
                    probe.connect(address)
            else:
                socket.create_connection(address, timeout=1.0).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not accept on {address} in {timeout}s") from None
            time.sleep(0.02)


@contextmanager
def running_nginx(
    servers: str,
    prefix: Path,
    *,
    ports: Sequence[int] = (),
    http_extra: str = "",
    workers: int = 1,
    host: str = "127.0.0.1",
    timeout: float = 10.0,
) -> Iterator[NginxProcess]:
    """Start nginx with these server blocks under `prefix`; stop it on exit."""
    binary = nginx_binary()
    if binary is None:
        raise RuntimeError("nginx is not installed (scripts/install-system-packages.sh)")
    prefix.mkdir(parents=True, exist_ok=True)
    (prefix / "temp").mkdir(exist_ok=True)
    # As root, nginx's workers would run as "nobody" and could not reach a
    # test's private temp directory or unix sockets.
    user = "user root;\n" if os.geteuid() == 0 else ""
    config_path = prefix / "nginx.conf"
    config_path.write_text(
        _CONF.format(
            user=user, workers=workers, prefix=prefix, http_extra=http_extra, servers=servers
        )
    )
    process = subprocess.Popen(
        [binary, "-p", str(prefix), "-e", str(prefix / "error.log"),
         "-c", str(config_path), "-g", "daemon off;"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=open(prefix / "stderr.log", "wb"),  # noqa: SIM115 - kept for the process
        start_new_session=True,
    )  # fmt: skip
    nginx = NginxProcess(process, prefix, config_path)
    try:
        for port in ports:
            try:
                wait_until_accepting((host, port), process, timeout, "nginx")
            except RuntimeError as error:
                stderr = (prefix / "stderr.log").read_text(errors="replace")
                raise RuntimeError(f"{error}\n{stderr}\n{nginx.error_log[-2000:]}") from None
        yield nginx
    finally:
        nginx.stop()
