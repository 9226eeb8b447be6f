"""The master's side of the health checker: fork it, keep it, replace it, stop it.

The master says which generations want a checker (`keep`): the serving one and,
during a reload, the pending one, each with its own config and health board
(so, between a HUP and the hand-over, two checkers each write their own
generation's board; the new one starts from the old board's states). A checker
whose generation is no longer wanted is sent TERM and SIGKILLed after
STOP_GRACE; one that dies unasked is forked again (after a second if it lived
less than one, so a crash is no fork loop). Forking is the only work done in
the master; the checks themselves never run here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass

from prefork_proxy.config import Config
from prefork_proxy.health_board import HealthBoard

log = logging.getLogger("master")

STOP_GRACE = 3.0
RESTART_DELAY = 1.0  # after a checker that lived less than this


@dataclass
class CheckerProcess:
    pid: int
    generation: int
    started: float
    kill_at: float = 0.0  # once told to stop: its SIGKILL deadline


class HealthCheckers:
    def __init__(self, blocked_signals: Iterable[signal.Signals],
                 close_in_child: Iterable[int]) -> None:
        self.blocked_signals = tuple(blocked_signals)
        self.close_in_child = tuple(close_in_child)
        self.running: dict[int, CheckerProcess] = {}
        self.not_before = 0.0

    def __len__(self) -> int:
        return len(self.running)

    def pids(self) -> set[int]:
        return set(self.running)

    def keep(self, wanted: dict[int, Config], sockets: Iterable[socket.socket],
             carry_from: HealthBoard | None) -> None:
        """One live checker for each generation of `wanted` whose config has checks;
        none for any other. `carry_from`: the board a new checker starts from."""
        now = time.monotonic()
        for checker in list(self.running.values()):
            if not checker.kill_at and checker.generation not in wanted:
                _kill(checker.pid, signal.SIGTERM)
                checker.kill_at = now + STOP_GRACE
            elif checker.kill_at and now > checker.kill_at:
                log.warning("health checker (pid %d) still running; killing it", checker.pid)
                _kill(checker.pid, signal.SIGKILL)
                checker.kill_at = now + 3600  # reaped shortly
        live = {c.generation for c in self.running.values() if not c.kill_at}
        for generation, config in wanted.items():
            if (config.health_board is None or generation in live
                    or now < self.not_before):
                continue
            sockets = list(sockets)
            try:
                pid = self._fork(config, generation, sockets, carry_from)
            except OSError as exc:
                log.error("cannot fork the health checker: %s", exc)
                self.not_before = now + RESTART_DELAY
                return
            self.running[pid] = CheckerProcess(pid, generation, now)

    def reaped(self, pid: int, code: int) -> bool:
        """Whether `pid` was a checker; one that exited unasked is forked again by
        the next `keep`."""
        checker = self.running.pop(pid, None)
        if checker is None:
            return False
        if not checker.kill_at:
            now = time.monotonic()
            if now - checker.started < RESTART_DELAY:
                self.not_before = now + RESTART_DELAY
            how = f"signal {signal.Signals(-code).name}" if code < 0 else f"status {code}"
            log.warning("health checker (pid %d, gen %d) exited with %s; restarting it",
                        pid, checker.generation, how)
        return True

    def _fork(self, config: Config, generation: int, sockets: list[socket.socket],
              carry_from: HealthBoard | None) -> int:
        # Signals are blocked across fork() as for a worker (children.fork_worker):
        # a TERM sent while the child starts waits for its own handler.
        signals = list(self.blocked_signals)
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
        try:
            pid = os.fork()
        except OSError:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
            raise
        if pid:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
            return pid
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            for sig in signals:
                signal.signal(sig, signal.SIG_DFL)
            for fd in self.close_in_child:
                os.close(fd)
            for sock in sockets:  # it serves nothing: no listener stays open here
                sock.close()
            from prefork_proxy.health_checker import run_checker

            code = run_checker(config, generation, carry_from, signals)
        except BaseException:
            logging.getLogger("health").exception("the health checker crashed")
        finally:
            logging.shutdown()
            os._exit(code)


def _kill(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
