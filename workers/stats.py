"""This worker's counters, copied into its scoreboard slot by the heartbeat.

Plain attributes so the hot path pays one addition per event; the heartbeat
greenlet publishes them once a second.
"""

from __future__ import annotations


class WorkerStats:
    __slots__ = ("requests", "connections", "tunnels", "bytes_in", "bytes_out",
                 "upstream_errors")

    def __init__(self) -> None:
        self.requests = self.connections = self.tunnels = 0
        self.bytes_in = self.bytes_out = self.upstream_errors = 0

    def as_tuple(self) -> tuple[int, ...]:
        """In scoreboard.COUNTER_NAMES order."""
        return (self.requests, self.connections, self.tunnels, self.bytes_in,
                self.bytes_out, self.upstream_errors)


stats = WorkerStats()
