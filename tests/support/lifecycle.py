"""Helpers for the lifecycle tests: client load, a NOTIFY_SOCKET, configs.

`Load` runs a few client threads against the proxy until told to stop (and
never longer than its deadline or request budget): some open a new connection
per request, some reuse one keep-alive connection. It records every failure.
`NotifySocket` is the datagram socket systemd would give the master.
"""

from __future__ import annotations

import http.client
import os
import select
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tests.support.configs import one_location
from tests.support.processes import Process, Proxy, wait_for

# A request on a reused keep-alive connection that the server closed between
# requests, sent before its FIN arrived, fails before any byte of the response:
# RFC 9112 §9.3.1 lets a client retry it (browsers, curl and urllib3 do), and
# no server can close an idle connection without that race. It is counted as
# `retried`; anything else is a failure.
_CLOSED_BETWEEN_REQUESTS = (http.client.RemoteDisconnected, ConnectionResetError,
                            BrokenPipeError)


def proxy_config(upstream_port: int, **settings: object) -> str:
    """A one-server config proxying / to the upstream; settings go at the top."""
    lines = []
    for key, value in settings.items():
        rendered = f'"{value}"' if isinstance(value, str) else str(value).lower() \
            if isinstance(value, bool) else str(value)
        lines.append(f"{key} = {rendered}")
    return one_location(f"127.0.0.1:{upstream_port}", top="\n".join(lines))


@dataclass
class Load:
    """Continuous GET load from `new_connection` + `keep_alive` threads."""

    port: int
    path: str = "/echo"
    new_connection: int = 2
    keep_alive: int = 2
    deadline: float = 90.0  # seconds: the load stops by itself after this
    budget: int = 200_000  # requests per thread at most
    ok: int = 0
    retried: int = 0
    failures: list[str] = field(default_factory=list)
    retry_causes: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        kinds = [False] * self.new_connection + [True] * self.keep_alive
        for keep in kinds:
            thread = threading.Thread(target=self._run, args=(keep,), daemon=True)
            thread.start()
            self.threads.append(thread)
        wait_for(lambda: self.ok >= 20 or self.failures, message="the load to start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(15)

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> None:
        """Wait until `count` more requests have succeeded."""
        target = self.ok + count
        wait_for(lambda: self.ok >= target or self.failures, timeout,
                 message=f"{count} more requests")

    def summary(self) -> str:
        return f"{self.ok} ok, {self.retried} retried {self.retry_causes[:3]}, " \
               f"{len(self.failures)} failed: {self.failures[:5]}"

    def _run(self, keep_alive: bool) -> None:
        end = time.monotonic() + self.deadline
        conn: http.client.HTTPConnection | None = None
        for _ in range(self.budget):
            if self.stopping.is_set() or time.monotonic() > end:
                break
            if conn is None or not keep_alive or _dropped(conn):
                if conn is not None:
                    conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            reused = conn.sock is not None
            try:
                status, body = _get(conn, self.path, keep_alive)
            except _CLOSED_BETWEEN_REQUESTS as exc:
                conn.close()
                if not reused:
                    self._fail(f"{type(exc).__name__}: {exc} (fresh connection)")
                    continue
                with self.lock:
                    self.retried += 1
                    self.retry_causes.append(f"{type(exc).__name__}: {exc}")
                try:
                    status, body = _get(conn, self.path, keep_alive)
                except (OSError, http.client.HTTPException) as exc2:
                    self._fail(f"retry: {type(exc2).__name__}: {exc2}")
                    conn.close()
                    continue
            except (OSError, http.client.HTTPException) as exc:
                self._fail(f"{type(exc).__name__}: {exc}")
                conn.close()
                continue
            if status != 200:
                self._fail(f"status {status}: {body[:200]!r}")
                continue
            with self.lock:
                self.ok += 1
        if conn is not None:
            conn.close()

    def _fail(self, what: str) -> None:
        with self.lock:
            self.failures.append(what)


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """Whether the server closed an idle keep-alive connection (a FIN is waiting):
    what urllib3 checks before it reuses a pooled connection."""
    return conn.sock is not None and bool(select.select([conn.sock], [], [], 0)[0])


def _get(conn: http.client.HTTPConnection, path: str, keep_alive: bool) -> tuple[int, bytes]:
    headers = {} if keep_alive else {"Connection": "close"}
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    return response.status, response.read()


def get(port: int, path: str = "/echo", timeout: float = 5.0) -> tuple[int, bytes]:
    """One request on a new connection: (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        return _get(conn, path, False)
    finally:
        conn.close()


class NotifySocket:
    """A NOTIFY_SOCKET for the master: collects the sd_notify datagrams it sends."""

    def __init__(self) -> None:
        # A short path: sun_path holds 108 bytes, and pytest's tmp paths can be long.
        self.directory = tempfile.mkdtemp(prefix="notify-", dir="/tmp")
        self.path = os.path.join(self.directory, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.05)
        self.messages: list[dict[str, str]] = []  # one dict per datagram, in order

    def env(self, **extra: str) -> dict[str, str]:
        return dict(os.environ, NOTIFY_SOCKET=self.path, **extra)

    def collect(self) -> list[dict[str, str]]:
        while True:
            try:
                data = self.sock.recv(4096)
            except (TimeoutError, BlockingIOError):
                return self.messages
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
            self.messages.append(fields)

    def wait(self, key: str, value: str | None = None, after: int = 0,
             timeout: float = 15.0) -> dict[str, str]:
        """The first message at index >= `after` that has `key` (equal to `value`)."""
        def find() -> dict[str, str] | None:
            for message in self.collect()[after:]:
                if key in message and (value is None or message[key] == value):
                    return message
            return None
        return wait_for(find, timeout, message=f"sd_notify {key}={value or '*'}")

    def close(self) -> None:
        self.sock.close()
        os.unlink(self.path)
        os.rmdir(self.directory)


def children_of(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children()
    except psutil.NoSuchProcess:
        return []


def worker_generations(pid: int) -> list[str]:
    """The "[gen N]" of every worker of master `pid`, from their titles."""
    titles = []
    for child in children_of(pid):
        try:
            title = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if title.startswith("prefork-proxy: worker"):
            titles.append(title.rsplit("[", 1)[-1].rstrip("]"))
    return sorted(titles)


# Execs the proxy as systemd would with one socket: the fd moved to 3,
# LISTEN_FDS=1 and LISTEN_PID set to the pid that execs (exec keeps the pid).
_ACTIVATION_LAUNCHER = """
import os, sys
os.dup2(int(sys.argv[1]), 3)
os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
os.execv(sys.executable, [sys.executable, "-m", "prefork_proxy", "-c", sys.argv[2]])
"""


class ActivatedProxy(Proxy):
    """The real master started with `listener` passed in by socket activation."""

    def __init__(self, config_path: Path, log_path: Path, listener: socket.socket,
                 env: dict | None = None) -> None:
        fd = listener.fileno()
        Process.__init__(self, [sys.executable, "-c", _ACTIVATION_LAUNCHER, str(fd),
                                str(config_path)], log_path, env=env, pass_fds=(fd,))
        self.config_path = config_path
