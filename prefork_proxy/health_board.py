"""The health board: active check results in an anonymous shared mmap.

The master makes one per config, before it forks, for the upstreams that have
a `health_check` (`attach`); the health checker (prefork_proxy/health_checker.py)
is its only writer, and the workers' balancers read it (a peer whose cell says
DOWN is not chosen; UP, or no cell, is usable). One cell per (upstream name,
peer index) of that config: a state byte, HAProxy's health counter, and the
wall-clock time of the last state change. No lock: one writer, and a reader
needs only the state byte, which is written in one store.

This is the narrow interface the workers see (`down_test`): the peer board of
workers/balancing.py may take these cells over later.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prefork_proxy.config import Config

# A fresh cell (all zeros) is UNKNOWN: usable, as a peer starts UP (health_state.py).
UNKNOWN, UP, DOWN = 0, 1, 2
STATE_NAMES = {UNKNOWN: "unknown", UP: "UP", DOWN: "DOWN"}
CELL = struct.Struct("<BB6xd")  # state, health counter | last change (time.time())


class HealthBoard:
    def __init__(self, layout: dict[str, tuple[str, ...]]) -> None:
        """`layout`: {upstream name: its peers' addresses, in config order}."""
        self.layout = layout
        self.offsets: dict[str, int] = {}
        offset = 0
        for name, peers in layout.items():
            self.offsets[name] = offset
            offset += len(peers) * CELL.size
        self.map = mmap.mmap(-1, max(offset, mmap.PAGESIZE))

    @classmethod
    def for_config(cls, config: Config) -> HealthBoard | None:
        layout = {name: tuple(str(peer.address) for peer in upstream.peers)
                  for name, upstream in config.upstreams.items() if upstream.health_check}
        return cls(layout) if layout else None

    def _offset(self, upstream: str, index: int) -> int:
        return self.offsets[upstream] + index * CELL.size

    # -- the checker's side ---------------------------------------------------------
    def write(self, upstream: str, index: int, state: int, health: int,
              changed_at: float) -> None:
        CELL.pack_into(self.map, self._offset(upstream, index), state, health, changed_at)

    # -- the readers' side ----------------------------------------------------------
    def read(self, upstream: str, index: int) -> tuple[int, int, float]:
        """(state, health counter, last change) of one peer."""
        return CELL.unpack_from(self.map, self._offset(upstream, index))

    def down_test(self, upstream: str) -> Callable[[int], bool] | None:
        """index -> whether the check says DOWN, for a Balancer; None when the
        upstream has no check (the balancer then pays one attribute check)."""
        base = self.offsets.get(upstream)
        if base is None:
            return None
        cells = self.map
        size = CELL.size
        # A peer found later by `resolve` (workers/peer_resolver.py) has no cell: the
        # checker knows the config's peers only, so it counts as up.
        count = len(self.layout.get(upstream, ()))
        return lambda index: index < count and cells[base + index * size] == DOWN

    def find(self, upstream: str, address: str) -> int | None:
        """The index of `address` among `upstream`'s peers here, if it is one."""
        peers = self.layout.get(upstream, ())
        return peers.index(address) if address in peers else None


def attach(config: Config) -> Config:
    """`config` with its own board (None when no upstream is checked)."""
    return replace(config, health_board=HealthBoard.for_config(config))
