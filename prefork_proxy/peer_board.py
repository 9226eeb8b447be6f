"""The peer board: every upstream peer's state, shared by all workers (shared memory).

nginx keeps peer state per worker unless an upstream has a `zone`; here it is
always shared. One anonymous mmap, made by the master before it forks (beside
the scoreboard), with no locks: every cell has one writer.

Layout (P = MAX_PEERS peer slots, C = the scoreboard's slot count, one column
per scoreboard slot; column 0 is the master's "retired" column):

    header    u32 columns in use: 1 + the highest scoreboard slot claimed (master)
    conns     i32[P][C]  open upstream connections of column c's worker to peer p
    words     i64[P][C]  column c's failures of peer p:  (ms << 16) | n
                         n < BAN: n failures in the window that opened at ms
                         n == BAN: column c banned p at ms, for fail_timeout
    latency   f64[P]     an EWMA of p's response time, seconds (any worker: a lost
                         update drops one sample of an average, nothing more)

Times are CLOCK_MONOTONIC milliseconds, the same clock in every process. Per
peer: 4 + 8 bytes per column, 6 KiB with 512 columns; the whole map is 1.5 MiB
of address space, of which only the pages of configured peers' first columns
are ever touched. Readers sum (conns) or scan (bans) columns 0..in-use only:
with N workers and a reload in progress that is about 2N+1 cells per field.

When the master reaps a worker it zeroes the worker's column: its conns die
with it, and its failures and ban are folded into column 0, so a ban outlives
the worker that set it (a HUP replaces every worker). Peer slots are given by
the master per (upstream name, server address) at each config load: an
unchanged peer keeps its slot and state, a new one gets a zeroed slot, and a
removed peer's slot is reused only once no live generation has it.

max_conns is exact: a worker takes a connection to a peer that has max_conns
under an fcntl lock on the peer's byte of one shared file (released by the
kernel if the worker dies holding it); peers without max_conns take no lock.
"""

from __future__ import annotations

import fcntl
import mmap
import tempfile
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prefork_proxy.config import Config

MAX_PEERS = 256
BAN = 0xFFFF
COUNT_MASK = 0xFFFF
_HEADER = 64
_EWMA = 0.2  # weight of a new latency sample


def key_of(upstream: str, address: str) -> tuple[str, str]:
    return (upstream, address)


def config_peers(config: Config) -> list[tuple[str, str]]:
    """The (upstream, address) of every peer a config's locations use."""
    found: dict[tuple[str, str], None] = {}
    for server in config.servers:
        for location in server.locations:
            upstream = location.upstream
            if upstream is not None:
                for peer in upstream.peers:
                    found[key_of(upstream.name, str(peer.address))] = None
    return list(found)


def fold(kept: int, dead: int) -> int:
    """Column 0's word after a dead column's word is folded in: a ban wins (the
    latest one); failures add up, counted in the newer window."""
    if not dead:
        return kept
    if not kept:
        return dead
    kept_ban, dead_ban = kept & COUNT_MASK == BAN, dead & COUNT_MASK == BAN
    if kept_ban or dead_ban:
        if kept_ban and dead_ban:
            return max(kept, dead)
        return kept if kept_ban else dead
    count = min((kept & COUNT_MASK) + (dead & COUNT_MASK), BAN - 1)
    return (max(kept >> 16, dead >> 16) << 16) | count


class PeerBoard:
    def __init__(self, columns: int, peers: int = MAX_PEERS, shared_lock: bool = True) -> None:
        self.columns, self.peers = columns, peers
        cells = peers * columns
        self._conns_at = _HEADER
        self._words_at = _HEADER + ((cells * 4 + 7) // 8) * 8
        self._latency_at = self._words_at + cells * 8
        self.memory = mmap.mmap(-1, self._latency_at + peers * 8)
        view = memoryview(self.memory)
        self.header = view[:_HEADER].cast("I")
        self.conns = view[self._conns_at:self._conns_at + cells * 4].cast("i")
        self.words = view[self._words_at:self._latency_at].cast("q")
        self.latency = view[self._latency_at:].cast("d")
        self.header[0] = 1
        # The master's: (upstream, address) -> peer slot, and the last generation
        # whose config has it. Workers inherit a copy at fork.
        self.slots: dict[tuple[str, str], int] = {}
        self._last_generation: dict[int, int] = {}
        # Open as long as the board: every worker inherits the descriptor.
        self._lock = tempfile.TemporaryFile() if shared_lock else None  # noqa: SIM115

    # -- the master -------------------------------------------------------------------
    def assign(self, peers: list[tuple[str, str]], generation: int,
               alive: set[int]) -> None:
        """Give each peer of the config about to start (`generation`) its slot: the
        one it had, else a free one (zeroed). Slots of peers that no live
        generation's config has are freed first."""
        wanted = set(peers)
        for key, slot in list(self.slots.items()):
            if self._last_generation[slot] not in alive and key not in wanted:
                del self.slots[key]
                del self._last_generation[slot]
        used = set(self._last_generation)
        for key in peers:
            slot = self.slots.get(key)
            if slot is None:
                slot = self._free_slot(used)
                used.add(slot)
                self._clear_peer(slot)
                self.slots[key] = slot
            self._last_generation[slot] = generation

    def slot_for(self, upstream: str, address: str) -> int:
        """A peer's slot; one not assigned by the master (a unit test's board)
        gets the next free one."""
        key = key_of(upstream, address)
        slot = self.slots.get(key)
        if slot is None:
            slot = self._free_slot(set(self._last_generation))
            self.slots[key] = slot
            self._last_generation[slot] = 0
        return slot

    def _free_slot(self, used: set[int]) -> int:
        slot = next((s for s in range(self.peers) if s not in used), None)
        if slot is None:
            raise RuntimeError(f"peer board full ({self.peers} peers)")
        return slot

    def _clear_peer(self, slot: int) -> None:
        base = slot * self.columns
        for column in range(self.columns):
            self.conns[base + column] = 0
            self.words[base + column] = 0
        self.latency[slot] = 0.0

    def claimed(self, column: int) -> None:
        """A scoreboard slot was claimed: its column is read from now on."""
        self.clear_column(column)
        if column + 1 > self.header[0]:
            self.header[0] = column + 1

    def retire(self, column: int, in_use: int) -> None:
        """A worker died: zero its column (conns die, failures and bans fold into
        column 0); `in_use` is 1 + the highest live column left."""
        columns, words, conns = self.columns, self.words, self.conns
        for slot in self._last_generation:
            cell = slot * columns + column
            conns[cell] = 0
            if words[cell]:
                words[slot * columns] = fold(words[slot * columns], words[cell])
                words[cell] = 0
        self.header[0] = max(in_use, 1)

    def clear_column(self, column: int) -> None:
        for slot in range(self.peers):
            cell = slot * self.columns + column
            self.conns[cell] = 0
            self.words[cell] = 0

    # -- anyone -------------------------------------------------------------------------
    def in_use(self) -> int:
        return self.header[0]

    def total_conns(self, slot: int) -> int:
        base = slot * self.columns
        return sum(self.conns[base:base + self.header[0]])

    def observe(self, slot: int, seconds: float) -> None:
        """One response time into the peer's latency EWMA."""
        latency = self.latency
        old = latency[slot]
        latency[slot] = seconds if old == 0.0 else old + _EWMA * (seconds - old)

    def lock(self, slot: int) -> None:
        if self._lock is not None:
            fcntl.lockf(self._lock.fileno(), fcntl.LOCK_EX, 1, slot)

    def unlock(self, slot: int) -> None:
        if self._lock is not None:
            fcntl.lockf(self._lock.fileno(), fcntl.LOCK_UN, 1, slot)


# The board and column of this process, set by the worker at boot (attach);
# a Balancer made elsewhere (unit tests) gets a private board of its own.
_attached: tuple[PeerBoard, int] | None = None


def attach(board: PeerBoard, column: int) -> None:
    global _attached
    _attached = (board, column)


def attached() -> tuple[PeerBoard, int] | None:
    return _attached
