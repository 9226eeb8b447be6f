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
* Active health (prefork_proxy/health_board.py): with a `down` test, a peer the
  health checker marked DOWN is not chosen, even the only one of its upstream.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from prefork_proxy.config import Peer, Upstream
from prefork_proxy.metrics_board import PEER_BASE


class PeerState:
    __slots__ = ("peer", "index", "weight", "current", "fails", "window_start",
                 "down_until", "conns", "metric")

    def __init__(self, peer: Peer, index: int) -> None:
        self.peer, self.index, self.weight = peer, index, peer.weight
        self.current = 0
        self.fails = 0
        self.window_start = 0.0
        self.down_until = 0.0
        self.conns = 0
        self.metric = PEER_BASE  # its row in the worker's metrics block (workers/metrics.py)


class Balancer:
    def __init__(self, upstream: Upstream, down: Callable[[int], bool] | None = None) -> None:
        self.down = down  # the health board's test; None without health_check
        self.peers = [PeerState(peer, index) for index, peer in enumerate(upstream.peers)]
        self.primary = [state for state in self.peers if not state.peer.backup]
        self.backup = [state for state in self.peers if state.peer.backup]
        self.method = upstream.balance
        self.single = len(self.peers) == 1 and down is None

    def choose(self, tried: set[int], client_ip: bytes, now: float) -> int | None:
        """The index of the peer for the next try, or None when none is left."""
        if self.single:
            return None if tried else 0
        for group in (self.primary, self.backup):
            usable = [s for s in group if s.index not in tried and s.down_until <= now]
            if self.down is not None:
                usable = [s for s in usable if not self.down(s.index)]
            if not usable:
                continue
            if self.method == "ip_hash" and group is self.primary and not tried:
                choice = self._ip_hash(client_ip, now)
                if choice is not None:
                    return choice.index
            if self.method == "least_conn":
                best = min(s.conns / s.weight for s in usable)
                usable = [s for s in usable if s.conns / s.weight == best]
            return self._smooth_round_robin(usable).index
        return None

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

    def _ip_hash(self, client_ip: bytes, now: float) -> PeerState | None:
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
            if state.down_until <= now and not (self.down and self.down(state.index)):
                return state
        return None

    # -- passive health ------------------------------------------------------------
    def failed(self, index: int, now: float) -> bool:
        """Count a failure; True if the peer is now banned for fail_timeout."""
        state = self.peers[index]
        peer = state.peer
        if len(self.peers) == 1 or peer.max_fails == 0:
            return False
        if now - state.window_start > peer.fail_timeout:
            state.window_start, state.fails = now, 0
        state.fails += 1
        if state.fails >= peer.max_fails:
            state.down_until = now + peer.fail_timeout
            state.fails = 0
            return True
        return False

    def succeeded(self, index: int) -> None:
        self.peers[index].fails = 0
