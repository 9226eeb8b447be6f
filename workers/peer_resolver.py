"""An upstream's host names resolved again while the worker runs (`resolve = "30s"`).

The config resolved every name of `servers` when it was read
(prefork_proxy/peer_names.py). With `resolve` set, each worker asks again at
that interval, in a greenlet of its own: getaddrinfo goes through gevent's
resolver (its thread pool), so the loop never blocks and no callback waits.

What changes (`update_peers`, pure: a Balancer and address lists in, no I/O):

* a new address of a name becomes a peer with the name's options, for new
  requests (an address seen before and drained comes back as its old peer);
* an address that is gone drains: it leaves the balancer's primary or backup
  list, so no new request picks it, and its idle pooled connections are
  closed; requests in flight on it finish. A peer's index never changes nor is
  reused (a Tries in flight holds indexes): peers are never deleted;
* a name that does not resolve keeps its current addresses (nginx too keeps
  the last answer when a resolution fails).

Peers added at run time are counted in the metrics' "other" row (the board's
peer names are fixed when the config is read).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import gevent
from gevent import socket as gsocket

from prefork_proxy.peer_names import addresses
from workers.metrics import recorder

if TYPE_CHECKING:
    from prefork_proxy.config import Peer
    from prefork_proxy.values import Address
    from workers.balancing import Balancer
    from workers.upstreams import UpstreamPool

log = logging.getLogger("worker")


def templates(peers: tuple[Peer, ...]) -> list[Peer]:
    """The named servers of an upstream as written: one Peer per name and options,
    its address the name's (host name, port)."""
    found: list[Peer] = []
    for peer in peers:
        template = _template_of(peer)
        if template is not None and template not in found:
            found.append(template)
    return found


def _template_of(peer: Peer) -> Peer | None:
    if peer.name is None:
        return None
    return replace(peer, address=replace(peer.address, host=peer.name))


def start_all(pools: list[UpstreamPool]) -> list[PeerResolver]:
    """A running resolver for each pool whose upstream has `resolve` and a name."""
    resolvers = [PeerResolver(pool) for pool in pools]
    for resolver in resolvers:
        resolver.start()
    return [resolver for resolver in resolvers if resolver.greenlet is not None]


def update_peers(balancer: Balancer, template: Peer,
                 current: list[Address]) -> tuple[list[int], list[int]]:
    """Make the addresses of `template`'s name `current`: returns the indexes of the
    peers added (or back) and of those now draining."""
    active = {id(state) for state in (*balancer.primary, *balancer.backup)}
    mine = [state for state in balancer.peers if _template_of(state.peer) == template]
    added, removed = [], []
    for state in mine:
        if id(state) in active and state.peer.address not in current:
            removed.append(state.index)
    known = {state.peer.address: state for state in mine}
    for address in current:
        state = known.get(address)
        if state is None:
            state = balancer.new_peer(replace(template, address=address))
            added.append(state.index)
        elif id(state) not in active:
            added.append(state.index)
    if not added and not removed:
        return added, removed
    gone = set(removed)
    keep = [state for state in balancer.peers
            if (id(state) in active and state.index not in gone) or state.index in added]
    balancer.primary = [state for state in keep if not state.peer.backup]
    balancer.backup = [state for state in keep if state.peer.backup]
    # A single peer is always index 0 (Tries.first); any other set is balanced.
    balancer.alone = len(keep) == 1
    balancer.single = (balancer.alone and keep[0].index == 0 and not keep[0].max_conns
                       and balancer.down is None)
    return added, removed


class PeerResolver:
    """Resolves a pool's named servers every `upstream.resolve` seconds."""

    def __init__(self, pool: UpstreamPool,
                 lookup: Callable[..., list] = gsocket.getaddrinfo) -> None:
        self.pool = pool
        self.lookup = lookup
        self.templates = templates(pool.upstream.peers)
        self.greenlet: gevent.Greenlet | None = None

    def start(self) -> None:
        upstream = self.pool.upstream
        if self.templates and upstream.resolve > 0:
            log.info("upstream %s: %s resolved every %gs", upstream.name,
                     ", ".join(template.address.host for template in self.templates),
                     upstream.resolve)
            self.greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        if self.greenlet is not None:
            self.greenlet.kill(block=False)

    def _run(self) -> None:
        while True:
            gevent.sleep(self.pool.upstream.resolve)
            self.refresh()

    def refresh(self) -> None:
        """Resolve each name once and apply what changed."""
        pool = self.pool
        for template in self.templates:
            host, port = template.address.host, template.address.port
            try:
                current = addresses(host, port, self.lookup)
            except ValueError as exc:
                log.warning("upstream %s: %s; its addresses are kept", pool.upstream.name, exc)
                continue
            added, removed = update_peers(pool.balancer, template, current)
            for index in added:
                state = pool.balancer.peers[index]
                state.metric = recorder.peer_row(pool.upstream.name, str(state.peer.address))
                log.info("upstream %s: %s is %s", pool.upstream.name, state.peer.address, host)
            for index in removed:
                log.info("upstream %s: %s is no longer %s; draining", pool.upstream.name,
                         pool.balancer.peers[index].peer.address, host)
            if removed:
                pool.close_idle_to(set(removed))
