"""Run the real uWSGI server (PyPI's `uwsgi`) as an upstream in tests.

`running_uwsgi(app, tmp_path)` starts

    uwsgi --socket 127.0.0.1:PORT (or a unix path) --wsgi-file APP --master
          --processes 2 --buffer-size 65535 --die-on-term

in its own process group, waits until the socket accepts, and kills the
group afterwards. `uwsgi_servers(dir)` is a factory that starts servers and
stops them all on exit, and `uwsgi_server` its pytest fixture form (import
it into a test module, or wrap `uwsgi_servers` in a fixture of your own).
Apps live in `uwsgi_apps/`.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from .nginx import free_port, wait_until_accepting

APPS = Path(__file__).parent / "uwsgi_apps"


def uwsgi_binary() -> str:
    """The uwsgi executable installed next to this Python (the venv's)."""
    return str(Path(sys.executable).with_name("uwsgi"))


@dataclass
class UwsgiServer:
    process: subprocess.Popen
    # "127.0.0.1:PORT" or an absolute unix socket path.
    socket: str
    log_path: Path

    @property
    def uwsgi_pass(self) -> str:
        """The value a location's `uwsgi_pass` takes for this server."""
        return f"unix:{self.socket}" if self.socket.startswith("/") else self.socket

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL the master and its workers at once (an upstream crashing)."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(10)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM the group (--die-on-term makes that a shutdown), then SIGKILL."""
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        except ProcessLookupError:
            pass


@contextmanager
def running_uwsgi(
    app: str | Path,
    workdir: Path,
    *,
    unix: bool = False,
    processes: int = 2,
    extra_args: tuple[str, ...] = (),
    timeout: float = 20.0,
) -> Iterator[UwsgiServer]:
    """Start uWSGI serving `app` (a path, or a file name in uwsgi_apps/); stop it on exit."""
    app_path = Path(app) if os.sep in str(app) else APPS / app
    workdir.mkdir(parents=True, exist_ok=True)
    if unix:
        # AF_UNIX paths are limited to 108 bytes; pytest's tmp paths can be long.
        socket = str(workdir / f"uwsgi-{os.getpid()}-{id(workdir)}.sock")
        if len(socket) > 100:
            socket = f"/tmp/uwsgi-{os.getpid()}-{id(workdir)}.sock"
        address: tuple[str, int] | str = socket
    else:
        port = free_port()
        socket = f"127.0.0.1:{port}"
        address = ("127.0.0.1", port)
    log_path = workdir / f"uwsgi-{Path(socket).name.replace(':', '-')}.log"
    command = [
        uwsgi_binary(), "--socket", socket, "--wsgi-file", str(app_path),
        "--master", "--processes", str(processes), "--buffer-size", "65535",
        "--die-on-term", "--need-app", "--chmod-socket=666", *extra_args,
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = UwsgiServer(process, socket, log_path)
    try:
        try:
            wait_until_accepting(address, process, timeout, "uwsgi")
        except RuntimeError as error:
            raise RuntimeError(f"{error}\n{server.log[-3000:]}") from None
        yield server
    finally:
        server.stop()
        if unix and os.path.exists(socket):
            os.unlink(socket)


@contextmanager
def uwsgi_servers(workdir: Path) -> Iterator[Callable[..., UwsgiServer]]:
    """A factory `start("hello.py", unix=False, ...)`; every server it started stops on exit."""
    counter = itertools.count()
    with ExitStack() as stack:

        def start(app: str | Path, **options: object) -> UwsgiServer:
            return stack.enter_context(
                running_uwsgi(app, workdir / f"uwsgi{next(counter)}", **options)
            )

        yield start


@pytest.fixture
def uwsgi_server(tmp_path: Path) -> Iterator[Callable[..., UwsgiServer]]:
    """Fixture form of `uwsgi_servers`: `uwsgi_server("hello.py")` -> a running UwsgiServer."""
    with uwsgi_servers(tmp_path) as start:
        yield start
