"""Health decisions: heartbeat deadlines, RSS and request limits, respawn backoff."""

from __future__ import annotations

import os
import subprocess
import sys

from prefork_proxy import health
from prefork_proxy.scoreboard import DRAINING, FREE, READY, STARTING, Slot


def slot(state: int = READY, heartbeat: float = 0.0, started: float = 0.0,
         requests: int = 0) -> Slot:
    return Slot(1, 100, 1, 1, state, heartbeat, started, requests, 0, 0, 0, 0, 0, 0, 0.0)


def test_a_recent_heartbeat_is_not_overdue():
    assert not health.heartbeat_overdue(slot(heartbeat=100.0), now=129.0, worker_timeout=30)


def test_a_heartbeat_older_than_worker_timeout_is_overdue():
    assert health.heartbeat_overdue(slot(heartbeat=100.0), now=130.5, worker_timeout=30)
    assert health.heartbeat_overdue(slot(DRAINING, heartbeat=100.0), 130.5, 30)


def test_a_starting_worker_is_timed_from_its_spawn():
    assert not health.heartbeat_overdue(slot(STARTING, started=100.0), 110.0, 30)
    assert health.heartbeat_overdue(slot(STARTING, started=100.0), 131.0, 30)


def test_a_free_slot_is_never_overdue():
    assert not health.heartbeat_overdue(slot(FREE), 1e9, 30)


def test_readiness_is_ready_or_draining():
    assert health.is_ready(slot(READY)) and health.is_ready(slot(DRAINING))
    assert not health.is_ready(slot(STARTING)) and not health.is_ready(slot(FREE))


def test_rss_must_stay_over_the_limit_for_three_samples():
    watch = health.RssWatch(limit=100)
    assert [watch.over_limit(1, 150) for _ in range(3)] == [False, False, True]
    assert not watch.over_limit(2, 150)
    assert not watch.over_limit(2, 90)  # one sample under the limit starts again
    assert [watch.over_limit(2, 150) for _ in range(3)] == [False, False, True]


def test_no_rss_limit_never_recycles():
    watch = health.RssWatch(limit=0)
    assert not any(watch.over_limit(1, 1 << 40) for _ in range(10))


def test_forget_drops_a_dead_workers_history():
    watch = health.RssWatch(limit=100)
    watch.over_limit(1, 150)
    watch.over_limit(1, 150)
    watch.forget(1)
    assert not watch.over_limit(1, 150)


def test_request_limit_adds_jitter_within_bounds():
    assert health.request_limit(0, 50) == 0
    assert health.request_limit(100, 0) == 100
    limits = {health.request_limit(100, 10) for _ in range(200)}
    assert limits <= set(range(100, 111)) and len(limits) > 1


def test_requests_exhausted_at_the_limit():
    assert not health.requests_exhausted(slot(requests=99), 100)
    assert health.requests_exhausted(slot(requests=100), 100)
    assert not health.requests_exhausted(slot(requests=10**6), 0)


def test_backoff_doubles_for_workers_that_die_young_up_to_a_ceiling():
    backoff = health.RespawnBackoff(first=0.1, ceiling=1.0, stable_after=5.0)
    delays = [backoff.worker_died(lived=0.5, now=10.0) for _ in range(6)]
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert not backoff.may_spawn(10.5) and backoff.may_spawn(11.0)


def test_backoff_resets_after_a_worker_that_lived():
    backoff = health.RespawnBackoff(first=0.1, stable_after=5.0)
    backoff.worker_died(0.1, 0.0)
    backoff.worker_died(0.1, 0.0)
    assert backoff.worker_died(lived=60.0, now=100.0) == 0.0
    assert backoff.may_spawn(100.0)
    assert backoff.worker_died(0.1, 100.0) == 0.1


def test_sample_usage_reads_a_live_process_and_tolerates_a_dead_one():
    rss, cpu = health.sample_usage(os.getpid())
    assert rss > 1 << 20 and cpu > 0
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert health.sample_usage(child.pid) == (0, 0.0)
