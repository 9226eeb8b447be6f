"""Child processes of the harness: each in its own process group, all stopped on exit.

Every server the harness starts (upstreams, proxies, load tools) goes through
`start()`, which records it. `stop_all()` kills every recorded process group;
`__main__` calls it on normal exit, on Ctrl-C and on SIGTERM, so nothing is left
listening on the machine.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

# Upstreams run at a fixed, higher priority than everything measured, so that
# the proxy under test (nice 0), not the upstream, is what a run measures.
UPSTREAM_NICE = -5

_started: list[Process] = []


class StartError(RuntimeError):
    """A server did not come up; the message carries the tail of its log."""


class Process:
    """One started child, the leader of its own process group."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], log_path: Path) -> None:
        self.name = name
        self.popen = popen
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def cause(self) -> str:
        """The log line most likely to say why the process failed: the last error, else the last."""
        lines = [line.strip() for line in self.log_tail(40).splitlines() if line.strip()]
        errors = [line for line in lines if "Error" in line or "error" in line]
        return (errors or lines or ["(no output)"])[-1][:300]

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)

    def stop(self, grace: float = 5.0) -> None:
        """TERM the whole group, then KILL it if anything is left after `grace` seconds."""
        _signal_group(self.pid, signal.SIGTERM)
        if not self._wait_gone(grace):
            _signal_group(self.pid, signal.SIGKILL)
            self._wait_gone(2.0)
        if self in _started:
            _started.remove(self)

    def _wait_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # poll() reaps the leader; the group lives on while any member does.
            if self.popen.poll() is not None and not _group_exists(self.pid):
                return True
            time.sleep(0.05)
        return False


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def start(
    name: str,
    argv: Sequence[str],
    log_dir: Path,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    nice: int = 0,
) -> Process:
    """Start `argv` in a new session, its output in `log_dir/name.log`."""
    log_path = log_dir / f"{name}.log"
    full_env = dict(os.environ)
    full_env.update(env or {})

    def set_priority() -> None:
        if nice:
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, 0, nice)

    with open(log_path, "ab") as log:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=set_priority,
        )
    process = Process(name, popen, log_path)
    _started.append(process)
    return process


def stop_all() -> None:
    for process in reversed(list(_started)):
        process.stop(grace=3.0)


def free_port() -> int:
    """An ephemeral port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: Process, timeout: float = 15.0) -> None:
    """Return once 127.0.0.1:`port` accepts; raise StartError if `process` dies or stalls."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.alive():
            raise StartError(
                f"{process.name} exited with status {process.popen.returncode} before listening"
                f" on {port}: {process.cause()}\n{process.log_tail()}"
            )
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise StartError(f"{process.name} did not listen on {port} in {timeout:.0f}s: "
                     f"{process.cause()}\n{process.log_tail()}")


def raise_open_file_limit(wanted: int = 65536) -> int:
    """Raise RLIMIT_NOFILE (inherited by every child) for the 5,000-tunnel memory run."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for new_hard in (max(hard, wanted), hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, new_hard), new_hard))
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
