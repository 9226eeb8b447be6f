"""This worker's metrics: what the hot path adds up, published to its metrics-board block.

A request adds to a private list (a few increments: a list item costs less
than half of a shared memoryview item, measured), and the heartbeat copies
the list into the worker's block of the metrics board
(prefork_proxy/metrics_board.py), shared memory that only this worker writes,
once a second with the rest of its scoreboard slot (`publish`). So /metrics
is at most a second behind, as the scoreboard's counters are. The gauges (a
peer's open connections, whether this worker skips it) are set at the same
moment. Until `bind` runs (a test that drives a connection without a
worker), nothing is published.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from time import monotonic as _monotonic
from typing import TYPE_CHECKING

from prefork_proxy.metrics_board import (
    BLOCK_FIELDS,
    DURATION_BUCKETS,
    FAILURE_CAUSES,
    HIST_BASE,
    HIST_SUM,
    LOC_BASE,
    PEER_ACTIVE,
    PEER_BASE,
    PEER_DOWN,
    PEER_FAILURES,
    PEER_FIELDS,
    PEER_RESPONSES,
    PEER_TIME_US,
    STATUS_CLASSES,
    MetricsBoard,
    location_name,
    peer_name,
    server_label,
)

if TYPE_CHECKING:
    from prefork_proxy.config import Config
    from workers.upstreams import UpstreamPool

_CAUSE_INDEX = {cause: PEER_FAILURES + index for index, cause in enumerate(FAILURE_CAUSES)}
_CLASSES = len(STATUS_CLASSES)


class Recorder:
    __slots__ = ("block", "shared", "locations", "peers")

    def __init__(self) -> None:
        self.block: list[int] = [0] * BLOCK_FIELDS
        self.shared: memoryview | None = None  # this worker's block on the board
        self.locations: dict[int, int] = {}  # id(Location) -> its row in the block
        self.peers: dict[str, int] = {}  # peer name -> its row

    def bind(self, board: MetricsBoard, slot: int, config: Config) -> None:
        """Publish into `slot`'s block from now on, with the master's name indices."""
        self.shared = board.block(slot)
        locations, peers = board.names(location=True), board.names(location=False)
        for server in config.servers:
            listen = server_label(server)
            for location in server.locations:
                index = locations.get(location_name(listen, location.path), 0)
                self.locations[id(location)] = LOC_BASE + index * _CLASSES
        self.peers = {name: PEER_BASE + index * PEER_FIELDS for name, index in peers.items()}

    def location_row(self, location: object) -> int:
        return self.locations.get(id(location), LOC_BASE)

    def peer_row(self, upstream: str, address: str) -> int:
        return self.peers.get(peer_name(upstream, address), PEER_BASE)

    # -- the hot path ------------------------------------------------------------------
    def request(self, location_row: int, status: int, seconds: float) -> None:
        """One request ended with `status` after `seconds` (the access log's line)."""
        if not 100 <= status <= 599:
            return  # no answer was made (the client went before one)
        block = self.block
        block[location_row + status // 100 - 1] += 1
        block[HIST_BASE + bisect_left(DURATION_BUCKETS, seconds)] += 1
        block[HIST_SUM] += int(seconds * 1e6)

    def upstream_response(self, peer_row: int) -> None:
        """A reply head came from the peer."""
        self.block[peer_row + PEER_RESPONSES] += 1

    def upstream_time(self, peer_row: int, seconds: float) -> None:
        """The peer answered for `seconds`, once per reply head (upstream_response)."""
        self.block[peer_row + PEER_TIME_US] += int(seconds * 1e6)

    def upstream_failure(self, peer_row: int, cause: str) -> None:
        self.block[peer_row + _CAUSE_INDEX.get(cause, _CAUSE_INDEX["reset"])] += 1

    # -- the heartbeat -----------------------------------------------------------------
    def publish(self, pools: list[UpstreamPool]) -> None:
        """Set the gauges, then copy everything to the shared block (one memcpy)."""
        self._set_gauges(pools)
        if self.shared is not None:
            self.shared[:] = array("Q", self.block)

    def _set_gauges(self, pools: list[UpstreamPool]) -> None:
        """Each peer's open connections and down state, as this worker sees them."""
        block = self.block
        now = _monotonic()
        for pool in pools:
            for state in pool.balancer.peers:
                row = state.metric
                if row == PEER_BASE:
                    continue  # "other": gauges of several peers would be mixed
                block[row + PEER_ACTIVE] = max(state.conns, 0)
                block[row + PEER_DOWN] = 1 if state.down_until > now else 0


recorder = Recorder()
