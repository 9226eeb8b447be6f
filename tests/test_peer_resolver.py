"""`resolve`: peers added and drained as a name's addresses change, with a fake
address source and a real Balancer (workers/peer_resolver.py).

A new address is a new peer with the name's options; a gone one leaves the
balancer's choice but keeps its index (a request in flight holds it) and its
idle connections are closed; one that comes back is its old peer again; a
failed resolution keeps what there is.
"""

from __future__ import annotations

import socket

import pytest

from prefork_proxy.config import Peer, Upstream
from prefork_proxy.peer_names import resolve_peers
from prefork_proxy.values import Address
from tests.support.exchange_fixtures import CLIENT_IP, NOW
from workers.balancing import Balancer
from workers.exchange import Tries
from workers.peer_resolver import PeerResolver, templates, update_peers

pytestmark = pytest.mark.timeout(30)


class FakeNames:
    """getaddrinfo over a table the test edits; a missing name fails."""

    def __init__(self, **table: list[str]) -> None:
        self.table = table

    def __call__(self, host: str, port: int, family: int, kind: int) -> list:
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET6 if ":" in ip else socket.AF_INET, kind, 6, "",
                 (ip, port)) for ip in self.table[host]]


class FakePool:
    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.balancer = Balancer(upstream)
        self.closed: list[set[int]] = []

    def close_idle_to(self, indexes: set[int]) -> None:
        self.closed.append(indexes)


def upstream(names: FakeNames, *servers: Peer, resolve: float = 30.0) -> Upstream:
    peers = tuple(peer for server in servers for peer in resolve_peers(server, names))
    return Upstream(name="app", peers=peers, resolve=resolve)


def chosen(balancer: Balancer, count: int = 6) -> set[str]:
    return {str(balancer.peers[balancer.choose(set(), CLIENT_IP, NOW)].peer.address)
            for _ in range(count)}


def test_templates_are_the_names_as_written_with_their_options() -> None:
    names = FakeNames(app=["10.0.0.1", "10.0.0.2"])
    made = upstream(names, Peer(Address("app", 80), weight=2), Peer(Address("10.0.0.9", 80)))
    assert templates(made.peers) == [Peer(Address("app", 80), weight=2, name="app")]


def test_a_new_address_becomes_a_peer_with_the_same_options() -> None:
    names = FakeNames(app=["10.0.0.1"])
    pool = FakePool(upstream(names, Peer(Address("app", 80), weight=3, max_fails=2)))
    names.table["app"] = ["10.0.0.1", "10.0.0.2"]
    PeerResolver(pool, names).refresh()
    peers = [state.peer for state in pool.balancer.peers]
    assert peers == [Peer(Address(ip, 80), weight=3, max_fails=2, name="app")
                     for ip in ("10.0.0.1", "10.0.0.2")]
    assert chosen(pool.balancer) == {"10.0.0.1:80", "10.0.0.2:80"}
    assert pool.balancer.single is False and pool.closed == []


def test_a_gone_address_drains_and_keeps_its_index() -> None:
    names = FakeNames(app=["10.0.0.1", "10.0.0.2"])
    pool = FakePool(upstream(names, Peer(Address("app", 80))))
    tries = Tries(pool.balancer, CLIENT_IP, b"GET")
    in_flight = tries.first(NOW)
    names.table["app"] = ["10.0.0.2"]
    PeerResolver(pool, names).refresh()
    assert chosen(pool.balancer) == {"10.0.0.2:80"}
    assert pool.closed == [{0}]  # its idle connections are closed
    assert len(pool.balancer.peers) == 2  # never deleted: indexes in flight stay valid
    assert pool.balancer.peers[in_flight].peer.address.port == 80
    pool.balancer.failed(0, NOW)  # a request in flight on it may still fail
    assert pool.balancer.single is False


def test_an_address_that_comes_back_is_its_old_peer() -> None:
    names = FakeNames(app=["10.0.0.1", "10.0.0.2"])
    pool = FakePool(upstream(names, Peer(Address("app", 80))))
    resolver = PeerResolver(pool, names)
    names.table["app"] = ["10.0.0.2"]
    resolver.refresh()
    names.table["app"] = ["10.0.0.1", "10.0.0.2"]
    resolver.refresh()
    assert len(pool.balancer.peers) == 2
    assert chosen(pool.balancer) == {"10.0.0.1:80", "10.0.0.2:80"}


def test_a_failed_resolution_keeps_the_addresses() -> None:
    names = FakeNames(app=["10.0.0.1", "10.0.0.2"])
    pool = FakePool(upstream(names, Peer(Address("app", 80))))
    del names.table["app"]
    PeerResolver(pool, names).refresh()
    assert chosen(pool.balancer) == {"10.0.0.1:80", "10.0.0.2:80"}


def test_addresses_written_as_such_and_backups_stay_apart() -> None:
    names = FakeNames(app=["10.0.0.1"], spare=["10.0.1.1"])
    pool = FakePool(upstream(names, Peer(Address("app", 80)), Peer(Address("10.0.0.9", 80)),
                             Peer(Address("spare", 80), backup=True)))
    names.table.update(app=["10.0.0.3"], spare=["10.0.1.2"])
    PeerResolver(pool, names).refresh()
    assert [str(s.peer.address) for s in pool.balancer.primary] == ["10.0.0.9:80",
                                                                    "10.0.0.3:80"]
    assert [str(s.peer.address) for s in pool.balancer.backup] == ["10.0.1.2:80"]


def test_a_single_peer_is_index_zero_only() -> None:
    names = FakeNames(app=["10.0.0.1"])
    pool = FakePool(upstream(names, Peer(Address("app", 80))))
    assert pool.balancer.single
    template = templates(pool.upstream.peers)[0]
    update_peers(pool.balancer, template, [Address("10.0.0.2", 80)])
    assert pool.balancer.single is False  # index 1 alone: chosen, not assumed
    assert Tries(pool.balancer, CLIENT_IP, b"GET").first(NOW) == 1
    update_peers(pool.balancer, template, [Address("10.0.0.1", 80)])
    assert pool.balancer.single is True


def test_without_resolve_or_names_no_greenlet_starts() -> None:
    names = FakeNames(app=["10.0.0.1"])
    resolver = PeerResolver(FakePool(upstream(names, Peer(Address("app", 80)), resolve=0)),
                            names)
    resolver.start()
    assert resolver.greenlet is None
    plain = PeerResolver(FakePool(Upstream("x", (Peer(Address("10.0.0.1", 80)),),
                                           resolve=5.0)), names)
    plain.start()
    assert plain.greenlet is None
