"""Choosing a peer: nginx's balancing methods and passive health, with no I/O.

* round_robin: smooth weighted round robin (ngx_http_upstream_round_robin.c):
  for each usable peer `current += weight`, pick the largest `current` (first on
  a tie), then `best.current -= total`. Picks interleave instead of bursting.
* least_conn: lowest conns/weight; ties go to round robin among the tied.
* ip_hash: the first three octets of an IPv4 address (all of an IPv6 one), with
  rehashing past peers that are down.
* Passive health: `max_fails` failures within `fail_timeout` ban a peer for
  `fail_timeout`; then live requests probe it. A single-peer upstream is never
  banned. Backup peers are used only when no primary peer is usable.
* Host-wide: a peer's connections, failures and bans live in the peer board
  (prefork_proxy/peer_board.py), one column per worker; least_conn compares
  every worker's connections summed, and a ban by one worker is seen by all at
  their next pick. `max_conns` makes a peer unusable while that many
  connections are open host-wide; `slow_start` ramps a peer's weight after a ban.
* Active health (prefork_proxy/health_board.py): with a `down` test, a peer the
  health checker marked DOWN is not chosen, even the only one of its upstream.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from prefork_proxy import peer_board
from prefork_proxy.config import Peer, Upstream
from prefork_proxy.metrics_board import PEER_BASE
from prefork_proxy.peer_board import BAN, COUNT_MASK, PeerBoard


class PeerState:
    """One peer as this worker sees it: its weight and round-robin `current` (its
    own), and its cells in the peer board (prefork_proxy/peer_board.py), shared
    by every worker: its own column's conns and failure word, read with the
    other columns when a peer is chosen."""

    __slots__ = ("peer", "index", "weight", "current", "metric", "board", "slot", "base",
                 "own", "conns_cells", "words", "fail_ms", "slow_ms", "max_conns", "load")

    def __init__(self, peer: Peer, index: int, board: PeerBoard, column: int,
                 slot: int) -> None:
        self.peer, self.index, self.weight = peer, index, peer.weight
        self.current = 0
        self.metric = PEER_BASE  # its row in the worker's metrics block (workers/metrics.py)
        self.board, self.slot = board, slot
        self.base = slot * board.columns
        self.own = self.base + column
        self.conns_cells, self.words = board.conns, board.words
        self.fail_ms = int(peer.fail_timeout * 1000)
        self.slow_ms = int(peer.slow_start * 1000)
        self.max_conns = peer.max_conns
        self.load = 0  # every worker's conns, summed at the last pick (least_conn, max_conns)

    # -- the pick (the hot path: a few reads of the columns in use) -------------------
    def usable(self, now_ms: int, in_use: int, count_load: bool) -> bool:
        """Not banned by any worker, and below max_conns host-wide."""
        base = self.base
        words = self.words[base:base + in_use]
        if any(words) and not self._unbanned(words, now_ms):
            return False
        if count_load or self.max_conns:
            self.load = load = sum(self.conns_cells[base:base + in_use])
            if self.max_conns and load >= self.max_conns:
                return False
        return True

    def _unbanned(self, words: memoryview, now_ms: int) -> bool:
        """False while a ban of any column lasts; after one, slow_start ramps the
        weight from ~0 to full (nginx Plus, HAProxy slowstart)."""
        recovered = 0
        for word in words:
            if word & COUNT_MASK == BAN:
                end = (word >> 16) + self.fail_ms
                if end > now_ms:
                    return False
                recovered = max(recovered, end)
        if self.slow_ms:
            self.weight = slow_start_weight(self.peer.weight, now_ms - recovered,
                                            self.slow_ms) if recovered else self.peer.weight
        return True

    def full(self, in_use: int) -> bool:
        return bool(self.max_conns) and sum(
            self.conns_cells[self.base:self.base + in_use]) >= self.max_conns

    # -- this worker's connections ------------------------------------------------------
    def acquire(self) -> bool:
        """Count a connection to the peer: False when max_conns is reached host-wide
        (exact: the check and the count are one step under the peer's lock)."""
        if not self.max_conns:
            self.conns_cells[self.own] += 1
            return True
        board = self.board
        board.lock(self.slot)
        try:
            if board.total_conns(self.slot) >= self.max_conns:
                return False
            self.conns_cells[self.own] += 1
            return True
        finally:
            board.unlock(self.slot)

    def release(self) -> None:
        self.conns_cells[self.own] -= 1

    # -- read by tests and the metrics gauges -----------------------------------------
    @property
    def conns(self) -> int:
        """This worker's open connections to the peer."""
        return self.conns_cells[self.own]

    @conns.setter
    def conns(self, count: int) -> None:
        self.conns_cells[self.own] = count

    @property
    def fails(self) -> int:
        """This worker's failures of the peer in its current window."""
        count = self.words[self.own] & COUNT_MASK
        return 0 if count == BAN else count

    @property
    def down_until(self) -> float:
        """The end of the latest ban by any worker (monotonic seconds), or 0.0."""
        base = self.base
        ends = [(word >> 16) + self.fail_ms
                for word in self.words[base:base + self.board.in_use()]
                if word & COUNT_MASK == BAN]
        return max(ends) / 1000 if ends else 0.0


def slow_start_weight(weight: int, since_ms: int, slow_ms: int) -> float:
    """The weight `since_ms` after a peer came back: linear from weight/100 to full."""
    if since_ms >= slow_ms or since_ms < 0:
        return weight
    return weight * max(since_ms / slow_ms, 0.01)


class Balancer:
    def __init__(self, upstream: Upstream, board: PeerBoard | None = None,
                 column: int = 1, down: Callable[[int], bool] | None = None) -> None:
        self.down = down  # the health board's test; None without health_check
        self.private_board: PeerBoard | None = None  # for new_peer
        if board is None:
            found = peer_board.attached()
            if found is not None:
                board, column = found
            else:  # no shared board (a unit test): a private one, this process alone
                board = PeerBoard(columns=2, peers=max(len(upstream.peers), 1),
                                  shared_lock=False)
                board.claimed(1)
        self.board, self.column = board, column
        self.header = board.header
        self.peers = [PeerState(peer, index, board, column,
                                board.slot_for(upstream.name, str(peer.address)))
                      for index, peer in enumerate(upstream.peers)]
        self.primary = [state for state in self.peers if not state.peer.backup]
        self.backup = [state for state in self.peers if state.peer.backup]
        self.method = upstream.balance
        self.least = self.method == "least_conn"
        # A pick sums every worker's conns: least_conn, or a peer with max_conns.
        self.counted = self.least or any(state.max_conns for state in self.peers)
        self.alone = len(self.peers) == 1  # never banned
        # The fast path of one peer: nothing to choose, unless max_conns may refuse it.
        self.single = self.alone and not self.peers[0].max_conns and down is None

    def new_peer(self, peer: Peer) -> PeerState:
        """A peer that `resolve` found while running (workers/peer_resolver.py). The
        master assigns the peer board's slots, at load and reload, so this one keeps
        its state in a board of this worker's own until the next reload makes it a
        configured peer with a shared slot."""
        if self.private_board is None:
            # The shared board's shape, so that a pick reads the same columns of
            # both; only this worker's column is ever written.
            self.private_board = PeerBoard(columns=self.board.columns, peers=64,
                                           shared_lock=False)
        board = self.private_board
        state = PeerState(peer, len(self.peers), board, self.column,
                          board.slot_for("", str(peer.address)))
        self.peers.append(state)
        return state

    def choose(self, tried: set[int], client_ip: bytes, now: float) -> int | None:
        """The index of the peer for the next try, or None when none is left."""
        if self.single:
            return None if tried else 0
        now_ms = int(now * 1000)
        in_use = self.header[0]
        least = self.least
        words = self.board.words
        counted = self.counted
        for group in (self.primary, self.backup):
            if counted:
                usable = [s for s in group
                          if s.index not in tried and s.usable(now_ms, in_use, least)]
            else:  # no conns to sum: one look at the peer's failure words
                usable = [s for s in group if s.index not in tried and (
                    not any(words[s.base:s.base + in_use]) or s.usable(now_ms, in_use, False))]
            if self.down is not None:
                usable = [s for s in usable if not self.down(s.index)]
            if not usable:
                continue
            if self.method == "ip_hash" and group is self.primary and not tried:
                choice = self._ip_hash(client_ip, now_ms, in_use)
                if choice is not None:
                    return choice.index
            if least:
                best = min(s.load / s.weight for s in usable)
                usable = [s for s in usable if s.load / s.weight == best]
            return self._smooth_round_robin(usable).index
        return None

    def waits_for_room(self, tried: set[int]) -> bool:
        """No peer was chosen because some are at max_conns (the request may queue)."""
        in_use = self.header[0]
        return any(s.full(in_use) for s in self.peers if s.index not in tried)

    @staticmethod
    def _smooth_round_robin(usable: list[PeerState]) -> PeerState:
        if len(usable) == 1:
            return usable[0]
        total = 0
        best = None
        for state in usable:
            state.current += state.weight
            total += state.weight
            if best is None or state.current > best.current:
                best = state
        best.current -= total
        return best

    def _ip_hash(self, client_ip: bytes, now_ms: int, in_use: int) -> PeerState | None:
        """nginx's ip_hash: hash = (hash * 113 + octet) % 6271 over the key bytes,
        then a weighted pick; up to 20 rehashes past peers that are down."""
        try:
            packed = ipaddress.ip_address(client_ip.decode()).packed
        except ValueError:
            return None
        key = packed[:3] if len(packed) == 4 else packed
        total = sum(state.weight for state in self.primary)
        hash_value = 89
        for _ in range(20):
            for octet in key:
                hash_value = (hash_value * 113 + octet) % 6271
            point = hash_value % total
            for state in self.primary:
                point -= state.weight
                if point < 0:
                    break
            if state.usable(now_ms, in_use, False) and not (self.down and self.down(state.index)):
                return state
        return None

    # -- passive health, counted host-wide ---------------------------------------------
    def failed(self, index: int, now: float) -> bool:
        """Count a failure in this worker's column; True if the peer is now banned for
        fail_timeout: max_fails failures within fail_timeout, summed over every
        worker's column (nginx's max_fails, with a zone)."""
        state = self.peers[index]
        peer = state.peer
        if self.alone or peer.max_fails == 0:
            return False
        now_ms = int(now * 1000)
        words, own, window = state.words, state.own, state.fail_ms
        word = words[own]
        count, start = word & COUNT_MASK, word >> 16
        if count == BAN and start + window > now_ms:
            return False  # banned already
        if count == BAN or not word or now_ms - start > window:
            start, count = now_ms, 0  # a new window opens
        count += 1
        total = count
        for cell in range(state.base, state.base + self.header[0]):
            other = words[cell]
            if cell != own and other & COUNT_MASK != BAN and now_ms - (other >> 16) <= window:
                total += other & COUNT_MASK
        if total >= peer.max_fails:
            words[own] = (now_ms << 16) | BAN
            return True
        words[own] = (start << 16) | min(count, BAN - 1)
        return False

    def succeeded(self, index: int) -> None:
        state = self.peers[index]
        word = state.words[state.own]
        if word and word & COUNT_MASK != BAN:  # a ban's mark stays: slow_start reads it
            state.words[state.own] = 0

    def observe(self, index: int, seconds: float) -> None:
        """A response time, into the peer's shared latency EWMA."""
        state = self.peers[index]
        state.board.observe(state.slot, seconds)
