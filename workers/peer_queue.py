"""The wait for a peer below max_conns: an upstream's queue, in this worker (HAProxy's).

When every usable peer of an upstream is at its max_conns (counted host-wide,
workers/balancing.py) a request waits here, first in first out, without a
greenlet: the queue is polled in a callback when a connection to the upstream
is let go in this worker, and on a short timer for those let go in the other
workers. At most `queue` requests wait in a worker, each at most
`queue_timeout`; one that cannot wait, or waits too long, is answered 503 with
`Retry-After: 1` by the driver (HAProxy answers 503 when its queue is full or
its queue timeout passes; nginx Plus's `queue` too).
"""

from __future__ import annotations

from collections import deque
from time import monotonic
from typing import TYPE_CHECKING

from gevent import get_hub

if TYPE_CHECKING:
    from prefork_proxy.config import Upstream
    from workers.driver import Driver
    from workers.exchange import Tries

# How often a non-empty queue looks again for a release in another worker.
POLL_INTERVAL = 0.01


class PeerQueue:
    __slots__ = ("limit", "timeout", "waiting", "loop", "timer", "scheduled")

    def __init__(self, upstream: Upstream) -> None:
        self.limit, self.timeout = upstream.queue, upstream.queue_timeout
        self.waiting: deque[tuple[Driver, Tries, float]] = deque()
        self.loop = get_hub().loop
        self.timer = None
        self.scheduled = False

    def wait(self, driver: Driver) -> bool:
        """Queue the driver's request; False when `queue` requests already wait."""
        if len(self.waiting) >= self.limit:
            return False
        self.waiting.append((driver, driver.tries, monotonic() + self.timeout))
        if self.timer is None:
            self.timer = self.loop.timer(POLL_INTERVAL, POLL_INTERVAL)
        if not self.timer.active:
            self.timer.start(self.poll)
        return True

    def released(self) -> None:
        """A connection to the upstream was let go in this worker: poll, after the
        callback that let it go."""
        if self.waiting and not self.scheduled:
            self.scheduled = True
            self.loop.run_callback(self.poll)

    def poll(self) -> None:
        """Start the waiting requests that a peer has room for now, in order; answer
        those whose queue_timeout has passed."""
        self.scheduled = False
        waiting = self.waiting
        now = monotonic()
        while waiting:
            driver, tries, deadline = waiting[0]
            if not (driver.queued and driver.tries is tries):  # gone (client closed)
                waiting.popleft()
                continue
            if deadline <= now:
                waiting.popleft()
                driver.queue_timed_out()
                continue
            index = tries.balancer.choose(tries.tried, tries.client_ip, now)
            if index is None:
                break
            waiting.popleft()
            tries.peer_index = index
            driver.queue_ready()
        # Past the head (no room now), others may have waited too long.
        for entry in [entry for entry in waiting if entry[2] <= now]:
            waiting.remove(entry)
            driver, tries, _ = entry
            if driver.queued and driver.tries is tries:
                driver.queue_timed_out()
        if not waiting and self.timer is not None:
            self.timer.stop()
