"""Worker health decisions: heartbeat deadlines, resource limits, respawn backoff.

Pure decisions over scoreboard slots and psutil samples, so the master loop
only has to act on them.
"""

from __future__ import annotations

import random

import psutil

from prefork_proxy.scoreboard import DRAINING, READY, STARTING, Slot


def heartbeat_overdue(slot: Slot, now: float, worker_timeout: float) -> bool:
    """A worker that has not written its heartbeat within worker_timeout is hung.

    A starting worker gets the same allowance, counted from its spawn time.
    """
    if slot.state not in (STARTING, READY, DRAINING):
        return False
    last = slot.heartbeat if slot.heartbeat else slot.started
    return now - last > worker_timeout


def is_ready(slot: Slot) -> bool:
    """Whether a worker's servers accept (a draining worker was ready before)."""
    return slot.state in (READY, DRAINING)


def requests_exhausted(slot: Slot, limit: int) -> bool:
    """max_requests: the worker served its share and should be recycled."""
    return limit > 0 and slot.requests >= limit


def request_limit(max_requests: int, jitter: int) -> int:
    """This worker's recycling threshold: max_requests plus up to `jitter` more,
    so that workers started together do not all recycle at once."""
    if max_requests <= 0:
        return 0
    return max_requests + (random.randint(0, jitter) if jitter > 0 else 0)


def sample_usage(pid: int) -> tuple[int, float]:
    """(RSS in bytes, CPU seconds) of a worker, or (0, 0.0) if it is gone."""
    try:
        process = psutil.Process(pid)
        with process.oneshot():
            times = process.cpu_times()
            return process.memory_info().rss, times.user + times.system
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return 0, 0.0


class RssWatch:
    """Flags a worker whose RSS stays above the limit for `samples` samples in a row,
    so that one short spike (a large header block, a burst of tunnels) does not
    recycle it."""

    def __init__(self, limit: int, samples: int = 3) -> None:
        self.limit, self.samples = limit, samples
        self.over: dict[int, int] = {}

    def over_limit(self, pid: int, rss: int) -> bool:
        if self.limit <= 0 or rss <= self.limit:
            self.over.pop(pid, None)
            return False
        self.over[pid] = self.over.get(pid, 0) + 1
        return self.over[pid] >= self.samples

    def forget(self, pid: int) -> None:
        self.over.pop(pid, None)


class RespawnBackoff:
    """Exponential backoff for workers that die soon after they start.

    A worker that lived `stable_after` seconds resets it, as does a clean start.
    """

    def __init__(self, first: float = 0.1, ceiling: float = 30.0, stable_after: float = 5.0):
        self.first, self.ceiling, self.stable_after = first, ceiling, stable_after
        self.delay = 0.0
        self.not_before = 0.0

    def worker_died(self, lived: float, now: float) -> float:
        """Record a worker's death; returns how long the next spawn must wait."""
        if lived >= self.stable_after:
            self.delay = 0.0
        else:
            self.delay = min(self.ceiling, self.delay * 2 if self.delay else self.first)
        self.not_before = now + self.delay
        return self.delay

    def may_spawn(self, now: float) -> bool:
        return now >= self.not_before
