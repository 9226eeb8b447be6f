"""Host names in an upstream's `servers`: every address a name has is a peer.

nginx resolves a `server` name when it reads its config (and so on each
reload): each address becomes a peer with the same options, and a name that
does not resolve fails the config ("host not found in upstream"). Addresses are
asked with getaddrinfo for a stream socket, IPv4 and IPv6 alike, and kept in
the resolver's order without repeats. A worker resolves again at an upstream's
`resolve` interval with the same `addresses` (workers/peer_resolver.py).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from prefork_proxy.values import Address

if TYPE_CHECKING:
    from prefork_proxy.config import Peer

Lookup = Callable[..., list]


def is_name(address: Address) -> bool:
    """True for a host name, False for a unix path or an IP address."""
    if address.is_unix:
        return False
    try:
        ipaddress.ip_address(address.host)
    except ValueError:
        return True
    return False


def addresses(host: str, port: int, lookup: Lookup = socket.getaddrinfo) -> list[Address]:
    """The addresses of `host` (raises ValueError when it has none)."""
    try:
        found = lookup(host, port, 0, socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise ValueError(f"host not found: {host!r} ({getattr(exc, 'strerror', None) or exc})"
                         ) from None
    result: list[Address] = []
    for family, _, _, _, sockaddr in found:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        address = Address(sockaddr[0], port)
        if address not in result:
            result.append(address)
    if not result:
        raise ValueError(f"host not found: {host!r} has no IPv4 or IPv6 address")
    return result


def resolve_peers(peer: Peer, lookup: Lookup = socket.getaddrinfo) -> tuple[Peer, ...]:
    """`peer` itself for an address, else one peer per address of its host name."""
    if not is_name(peer.address):
        return (peer,)
    host = peer.address.host
    return tuple(replace(peer, address=address, name=host)
                 for address in addresses(host, peer.address.port, lookup))
