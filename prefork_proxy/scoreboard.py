"""The scoreboard: one fixed-size slot per worker in an anonymous shared mmap.

The master creates the map before it forks, so every worker shares it. Each
field has exactly one writer and there are no locks: a worker writes the
fields of its own slot, the master writes the identity fields when it assigns a
slot and the psutil samples (rss, cpu). Slot 0 is the "retired" slot: the master
adds an exiting worker's final counts to it, so totals never go backwards.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass

from prefork_proxy.metrics_board import MetricsBoard
from prefork_proxy.peer_board import PeerBoard

# pid, worker number, generation, state | heartbeat, started |
# requests, connections, tunnels, bytes_in, bytes_out, upstream_errors | rss, cpu
_LAYOUT = struct.Struct("<qIII4xdd6QQd")
SLOT_SIZE = 128
assert _LAYOUT.size <= SLOT_SIZE
MAX_SLOTS = 512
RETIRED = 0

# Slot states.
FREE, STARTING, READY, DRAINING = 0, 1, 2, 3

_STATE_OFFSET = 8 + 4 + 4
_HEARTBEAT_OFFSET = 8 + 4 * 3 + 4
_COUNTERS_OFFSET = _HEARTBEAT_OFFSET + 16
_COUNTERS = struct.Struct("<6Q")
_CONNECTIONS_OFFSET = _COUNTERS_OFFSET + 8  # the `connections` gauge, written live
_MASTER_FIELDS_OFFSET = _COUNTERS_OFFSET + _COUNTERS.size
_MASTER_FIELDS = struct.Struct("<Qd")
_GAUGES = ("connections", "tunnels")
_PID = struct.Struct("<q")
COUNTER_NAMES = ("requests", "connections", "tunnels", "bytes_in", "bytes_out", "upstream_errors")


@dataclass
class Slot:
    """A decoded copy of one slot."""

    index: int
    pid: int
    number: int
    generation: int
    state: int
    heartbeat: float
    started: float
    requests: int
    connections: int
    tunnels: int
    bytes_in: int
    bytes_out: int
    upstream_errors: int
    rss: int
    cpu: float


class Scoreboard:
    def __init__(self, slots: int = MAX_SLOTS) -> None:
        self.size = slots
        self.memory = mmap.mmap(-1, slots * SLOT_SIZE)
        # The detailed counters (by location, peer, duration): metrics_board.py.
        self.metrics = MetricsBoard(slots)
        # The upstream peers' shared state: a column per slot (peer_board.py).
        self.peers = PeerBoard(slots)

    # -- master side --------------------------------------------------------
    def claim(self, number: int, generation: int, now: float) -> int:
        """Find a free slot (never the retired one) and fill its identity fields.

        The pid is -1 until the master knows it (set_pid after fork).
        """
        for index in range(1, self.size):
            if struct.unpack_from("<q", self.memory, index * SLOT_SIZE)[0] == 0:
                _LAYOUT.pack_into(
                    self.memory, index * SLOT_SIZE,
                    -1, number, generation, STARTING, now, now,
                    0, 0, 0, 0, 0, 0, 0, 0.0,
                )
                self.metrics.clear(index)
                self.peers.claimed(index)
                return index
        raise RuntimeError("scoreboard full")

    def set_pid(self, index: int, pid: int) -> None:
        struct.pack_into("<q", self.memory, index * SLOT_SIZE, pid)

    def release(self, index: int) -> None:
        """Add a dead worker's counts to the retired slot and free its slot."""
        slot = self.read(index)
        retired = self.read(RETIRED)
        # Gauges (open connections and tunnels) die with the worker; counters add up.
        totals = [
            getattr(retired, name) + (0 if name in _GAUGES else getattr(slot, name))
            for name in COUNTER_NAMES
        ]
        _COUNTERS.pack_into(self.memory, RETIRED * SLOT_SIZE + _COUNTERS_OFFSET, *totals)
        self.memory[index * SLOT_SIZE:(index + 1) * SLOT_SIZE] = bytes(SLOT_SIZE)
        self.metrics.retire(index, into=RETIRED)
        live = [slot.index for slot in self.live_slots()]
        self.peers.retire(index, in_use=max(live, default=0) + 1)

    def set_usage(self, index: int, rss: int, cpu: float) -> None:
        _MASTER_FIELDS.pack_into(self.memory, index * SLOT_SIZE + _MASTER_FIELDS_OFFSET, rss, cpu)

    # -- worker side ---------------------------------------------------------
    def set_state(self, index: int, state: int) -> None:
        struct.pack_into("<I", self.memory, index * SLOT_SIZE + _STATE_OFFSET, state)

    def beat(self, index: int, now: float, counters: tuple[int, ...]) -> None:
        """Write the heartbeat time and this worker's counters (its own slot only)."""
        base = index * SLOT_SIZE
        struct.pack_into("<d", self.memory, base + _HEARTBEAT_OFFSET, now)
        _COUNTERS.pack_into(self.memory, base + _COUNTERS_OFFSET, *counters)

    def set_connections(self, index: int, count: int) -> None:
        """This worker's open connections, at each accept and close: its siblings
        read it to share a burst of new connections (workers/acceptor.py)."""
        struct.pack_into("<Q", self.memory, index * SLOT_SIZE + _CONNECTIONS_OFFSET, count)

    # -- anyone --------------------------------------------------------------
    def connections(self, index: int) -> int:
        return struct.unpack_from("<Q", self.memory, index * SLOT_SIZE + _CONNECTIONS_OFFSET)[0]

    def read(self, index: int) -> Slot:
        return Slot(index, *_LAYOUT.unpack_from(self.memory, index * SLOT_SIZE))

    def live_slots(self) -> list[Slot]:
        memory, pid = self.memory, _PID.unpack_from  # the pid alone first: most are free
        return [self.read(i) for i in range(1, self.size) if pid(memory, i * SLOT_SIZE)[0]]

    def totals(self) -> dict[str, int]:
        """Counters summed over live workers and the retired slot."""
        slots = [*self.live_slots(), self.read(RETIRED)]
        return {name: sum(getattr(slot, name) for slot in slots) for name in COUNTER_NAMES}
