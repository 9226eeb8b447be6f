"""Servers that share a listen address: which is its default, and nginx's checks.

nginx ("How nginx processes a request"; ngx_http_add_listen): several servers
may listen on one address, and the Host of a request picks one of them by
server_name (prefork_proxy/host_names.py). The address's default server is the one
whose listen has `default_server`, else the first server listing it. Refused,
as nginx refuses them: two default servers on one address, one name in two
servers of an address, and servers that disagree on the parameters that belong
to the address (reuse_port, ssl, http2, proxy_protocol: there is one socket).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from prefork_proxy.host_names import name_key

if TYPE_CHECKING:
    from prefork_proxy.config import Listen, Server

# nginx: these belong to the socket, so every server of the address must agree.
ADDRESS_PARAMETERS = ("reuse_port", "ssl", "http2", "proxy_protocol")


def by_address(servers: Iterable[Server]) -> dict[str, tuple[Server, tuple[Server, ...]]]:
    """{address: (its default server, all its servers in file order)}."""
    listed: dict[str, list[tuple[Server, Listen]]] = {}
    for server in servers:
        for listen in server.listen:
            listed.setdefault(listen.key, []).append((server, listen))
    found = {}
    for key, pairs in listed.items():
        default = next((server for server, listen in pairs if listen.default_server),
                       pairs[0][0])
        found[key] = (default, tuple({id(server): server for server, _ in pairs}.values()))
    return found


def check(servers: Iterable[tuple[int, Server]]) -> list[tuple[str, str]]:
    """The (key, message) errors of servers sharing addresses; `servers` are
    (index in the file, server)."""
    errors: list[tuple[str, str]] = []
    first: dict[str, tuple[int, Listen]] = {}  # address -> (server index, its listen)
    defaults: dict[str, int] = {}
    names: dict[tuple[str, str], int] = {}  # (address, name key) -> server index
    repeated: set[tuple[int, int]] = set()  # (server, name) already reported
    for index, server in servers:
        for position, listen in enumerate(server.listen):
            where, address = f"server[{index}].listen[{position}]", listen.key
            if address in first:
                other, other_listen = first[address]
                if other == index:
                    errors.append((where, f"{address} is listed twice by this server"))
                    continue
                differing = [name for name in ADDRESS_PARAMETERS
                             if getattr(listen, name) != getattr(other_listen, name)]
                if differing:
                    errors.append((where, f"{address} is listed by server[{other}] with "
                                          f"other {', '.join(differing)}: those parameters "
                                          "belong to the address, its servers must agree"))
            else:
                first[address] = (index, listen)
            if listen.default_server:
                if address in defaults:
                    errors.append((where, f"{address} already has a default_server: "
                                          f"server[{defaults[address]}]"))
                else:
                    defaults[address] = index
            for number, name in enumerate(server.names):
                other = names.setdefault((address, name_key(name)), index)
                if other != index and (index, number) not in repeated:
                    repeated.add((index, number))
                    errors.append((f"server[{index}].server_name[{number}]",
                                   f"{name!r} is already a name of server[{other}] "
                                   f"on {address}"))
    return errors
