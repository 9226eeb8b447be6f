"""Start and stop the real processes a test needs, on ephemeral loopback ports.

`start_proxy(config_text)` writes the config, starts the real master as a
subprocess (`python -m prefork_proxy -c FILE`) and waits until every worker of
the first generation serves. Everything started is killed at teardown.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition: Callable[[], object], timeout: float = 10.0, interval: float = 0.02,
             message: str = "condition") -> object:
    """Poll `condition` until it returns something truthy; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class Process:
    """A subprocess in its own process group, with its output in a file."""

    def __init__(self, argv: list[str], log_path: Path, env: dict | None = None,
                 **popen: object) -> None:
        self.log_path = log_path
        self.log_file = open(log_path, "wb")  # noqa: SIM115
        self.popen = subprocess.Popen(argv, stdout=self.log_file, stderr=subprocess.STDOUT,
                                      start_new_session=True, env=env, cwd=ROOT, **popen)
        self.pid = self.popen.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """TERM the whole group, then KILL whatever is left."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.popen.wait(timeout)
                break
            except subprocess.TimeoutExpired:
                continue
        with _suppress():
            os.killpg(self.pid, signal.SIGKILL)  # workers left behind by a dead master
        self.log_file.close()


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], OSError)


class Proxy(Process):
    """The real prefork-proxy master."""

    def __init__(self, config_path: Path, log_path: Path, env: dict | None = None) -> None:
        super().__init__([sys.executable, "-m", "prefork_proxy", "-c", str(config_path)],
                         log_path, env=env)
        self.config_path = config_path

    def workers(self) -> list[psutil.Process]:
        try:
            children = psutil.Process(self.pid).children()
        except psutil.NoSuchProcess:
            return []
        return [c for c in children if _title(c).startswith("prefork-proxy: worker")]

    def worker_pids(self) -> set[int]:
        return {process.pid for process in self.workers()}

    def wait_serving(self, count: int = 1, timeout: float = 15.0) -> None:
        """Wait for `count` "is serving" lines (one per generation that took over)."""
        wait_for(lambda: self.log().count(" is serving") >= count or not self.alive(),
                 timeout, message="the proxy to serve")
        if not self.alive():
            raise AssertionError(f"proxy exited with {self.popen.returncode}:\n{self.log()}")


def _title(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


class Upstream(Process):
    """tests/support/http_upstream.py on a free port."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        super().__init__([sys.executable, str(ROOT / "tests/support/http_upstream.py"),
                          str(self.port)], log_path)
        wait_for(lambda: port_open(self.port), message="the upstream to listen")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"
