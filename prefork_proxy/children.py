"""Forking one worker: what the child does between fork() and the gevent hub.

The master calls `fork_worker`; the child resets the master's signal handling,
closes what it must not hold (the wake-up pipe, listeners its config does not
name) and runs `workers.worker.run_worker`, which is imported only here, after
fork, so that the master never imports gevent (DESIGN.md, Processes).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from prefork_proxy.config import Config
from prefork_proxy.scoreboard import STARTING, Scoreboard

# A worker that cannot start (a failed privilege drop, an import error) exits
# with this, so that the master tells a boot failure from a crash (DESIGN.md,
# reload rule 7).
EXIT_BOOT_FAILURE = 3


@dataclass
class WorkerProcess:
    """The master's record of one forked worker."""

    pid: int
    number: int
    generation: int
    slot: int
    started: float
    retiring: bool = False  # to be drained once a replacement is ready
    kill_at: float = 0.0  # SIGKILL deadline once it drains or is stopped; 0 = serving
    hung: bool = False  # SIGKILLed for a missed heartbeat: its exit is a failure
    # Why it is recycled, for the restart counters (metrics_board.RESTART_REASONS):
    # "rss", "max_requests", "reload"; "" when it is not replaced (a stop, a TTOU).
    recycled_for: str = ""


def fork_worker(config: Config, sockets: dict[str, socket.socket], scoreboard: Scoreboard,
                slot: int, number: int, generation: int, signals: Iterable[signal.Signals],
                close_fds: Iterable[int]) -> int:
    """Fork a worker and return its pid (in the master only; the child never returns).

    `signals` are blocked across fork() and stay blocked in the child until the
    worker has installed its own handlers, so that a QUIT sent to a worker that
    is still starting drains it instead of killing it with the default action.
    """
    signals = list(signals)
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        pid = os.fork()
    except OSError:  # EAGAIN, ENOMEM: the master goes on with its signals unblocked
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        raise
    if pid:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        return pid
    code = EXIT_BOOT_FAILURE
    try:
        signal.set_wakeup_fd(-1)
        for sig in signals:
            signal.signal(sig, signal.SIG_DFL)
        for fd in close_fds:
            os.close(fd)
        # A listener this generation does not serve must not stay open here: once
        # the master closes its copy, the kernel would still queue connections on
        # it that nobody accepts.
        mine = {key: sockets[key] for key in config.listens}
        for key, sock in sockets.items():
            if key not in mine:
                sock.close()
        from workers.worker import BootError, run_worker

        try:
            code = run_worker(config, mine, scoreboard, slot, number, generation, signals)
        except BootError as exc:
            logging.getLogger("worker").error("worker %d could not start: %s", number, exc)
            code = EXIT_BOOT_FAILURE
    except BaseException:
        started = scoreboard.read(slot).state != STARTING
        logging.getLogger("worker").exception(
            "worker %d %s", number, "crashed" if started else "could not start")
        code = 1 if started else EXIT_BOOT_FAILURE
    finally:
        logging.shutdown()
        os._exit(code)
