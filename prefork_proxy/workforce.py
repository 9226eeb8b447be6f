"""The master's table of live workers: spawn, drain, signal, reap, count.

The master decides *when*; this module knows *how*: which signal drains a
worker, when it is SIGKILLed, how a worker's readiness is read from its
scoreboard slot.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Iterable, Iterator

from prefork_proxy import health
from prefork_proxy.children import WorkerProcess, fork_worker
from prefork_proxy.config import Config
from prefork_proxy.scoreboard import STARTING, Scoreboard

log = logging.getLogger("master")

# A fast stop (TERM/INT) gives workers this long before SIGKILL.
FAST_STOP_GRACE = 5.0


class Workforce:
    def __init__(self, scoreboard: Scoreboard, blocked_signals: Iterable[signal.Signals],
                 close_in_child: Iterable[int]) -> None:
        self.scoreboard = scoreboard
        self.workers: dict[int, WorkerProcess] = {}
        self.request_limits: dict[int, int] = {}
        self.blocked_signals = tuple(blocked_signals)
        self.close_in_child = tuple(close_in_child)

    def __len__(self) -> int:
        return len(self.workers)

    def __iter__(self) -> Iterator[WorkerProcess]:
        return iter(list(self.workers.values()))

    def spawn(self, number: int, generation: int, config: Config,
              sockets: dict[str, socket.socket]) -> bool:
        """Fork worker `number` of `generation`; False (logged) if fork() failed."""
        slot = self.scoreboard.claim(number, generation, time.monotonic())
        try:
            pid = fork_worker(config, sockets, self.scoreboard, slot, number, generation,
                              self.blocked_signals, self.close_in_child)
        except OSError as exc:
            self.scoreboard.release(slot)
            log.error("cannot fork worker %d: %s", number, exc)
            return False
        self.scoreboard.set_pid(slot, pid)
        self.workers[pid] = WorkerProcess(pid, number, generation, slot, time.monotonic())
        limit = health.request_limit(config.max_requests, config.max_requests_jitter)
        if limit:
            self.request_limits[pid] = limit
        return True

    def drain(self, worker: WorkerProcess, graceful_timeout: float) -> None:
        """Tell a worker to stop accepting and finish what it has in flight; it is
        SIGKILLed if still alive after `graceful_timeout`."""
        if worker.kill_at:
            return
        worker.retiring = True
        worker.kill_at = time.monotonic() + graceful_timeout
        kill(worker.pid, signal.SIGQUIT)

    def drain_generation(self, generation: int, graceful_timeout: float) -> None:
        for worker in self:
            if worker.generation == generation:
                self.drain(worker, graceful_timeout)

    def stop(self, worker: WorkerProcess, sig: signal.Signals, grace: float) -> None:
        """Send QUIT (drain) or TERM (stop now) with a SIGKILL deadline `grace` away."""
        deadline = time.monotonic() + grace
        worker.retiring = True
        worker.kill_at = min(worker.kill_at or deadline, deadline)
        kill(worker.pid, sig)

    def kill_overdue(self) -> None:
        now = time.monotonic()
        for worker in self:
            if worker.kill_at and now > worker.kill_at:
                log.warning("worker %d (pid %d) still running after its drain deadline; "
                            "killing it", worker.number, worker.pid)
                kill(worker.pid, signal.SIGKILL)
                worker.kill_at = now + 3600  # reaped shortly; don't repeat the message

    def reap(self) -> Iterator[tuple[int, int, WorkerProcess | None]]:
        """(pid, exit code, worker or None) for every child that exited; each
        exited worker's slot is released (its counts go to the retired slot)."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is not None:
                self.scoreboard.release(worker.slot)
                self.request_limits.pop(pid, None)
            yield pid, os.waitstatus_to_exitcode(status), worker

    def check_health(self, now: float, worker_timeout: float,
                     rss_watch: health.RssWatch | None) -> None:
        """SIGKILL workers whose heartbeat is overdue (they are replaced: their exit
        counts as a failure); with `rss_watch` (a sampling turn), record RSS and CPU
        and mark workers over max_worker_rss or max_requests as retiring, to be
        drained once their replacement is ready."""
        for worker in self:
            slot = self.scoreboard.read(worker.slot)
            if not worker.hung and health.heartbeat_overdue(slot, now, worker_timeout):
                log.error("worker %d (pid %d) sent no heartbeat for %.1fs (worker_timeout "
                          "%.1fs); killing it", worker.number, worker.pid,
                          now - max(slot.heartbeat, slot.started), worker_timeout)
                kill(worker.pid, signal.SIGKILL)
                worker.hung = True
                continue
            if worker.retiring or worker.kill_at or rss_watch is None:
                continue
            rss, cpu = health.sample_usage(worker.pid)
            self.scoreboard.set_usage(worker.slot, rss, cpu)
            if rss_watch.over_limit(worker.pid, rss):
                log.warning("worker %d (pid %d) RSS %d MiB is over max_worker_rss; recycling",
                            worker.number, worker.pid, rss >> 20)
                worker.retiring = True
                worker.recycled_for = "rss"
            elif health.requests_exhausted(slot, self.request_limits.get(worker.pid, 0)):
                log.info("worker %d (pid %d) served %d requests (max_requests); recycling",
                         worker.number, worker.pid, slot.requests)
                worker.retiring = True
                worker.recycled_for = "max_requests"

    # -- counting --------------------------------------------------------------
    def serving(self, generation: int) -> list[WorkerProcess]:
        """Workers of `generation` that are neither draining nor condemned."""
        return [w for w in self.workers.values()
                if w.generation == generation and not w.kill_at and not w.hung]

    def is_ready(self, worker: WorkerProcess) -> bool:
        return health.is_ready(self.scoreboard.read(worker.slot))

    def ready_count(self, generation: int) -> int:
        return sum(1 for w in self.serving(generation) if self.is_ready(w))

    def generations(self) -> set[int]:
        return {w.generation for w in self.workers.values()}

    def any_starting(self) -> bool:
        return any(self.scoreboard.read(w.slot).state == STARTING
                   for w in self.workers.values())


def kill(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
