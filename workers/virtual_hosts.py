"""Which server of a listen address serves a request: its host, by server_name.

One listener per address (workers/worker.py); when several servers share it,
each request picks its Site by host with the address's `ServerNames`
(prefork_proxy/host_names.py, nginx's lookup order). The host is the absolute-form
target's when there is one, else Host's (RFC 9112 §3.2.2; http1.py has put it in
`Request.host` either way), normalised by `valid_host`. A request with no host
(HTTP/1.0 without Host; HTTP/1.1 without one is already a 400 in http1.py) goes
to the address's default server, as in nginx.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, TypeVar

from prefork_proxy.host_names import ServerNames, valid_host

if TYPE_CHECKING:
    from prefork_proxy.config import Server
    from workers.http1 import Request

T = TypeVar("T")
INVALID_HOST = object()  # what site_for answers for a host that is not one (400)


def address_names(default: Server, servers: Sequence[Server],
                  sites: Mapping[int, T]) -> ServerNames[T] | None:
    """The lookup of an address's servers, their Sites by id(server); None when
    the address has one server: every request goes to it, with no lookup."""
    if len(servers) == 1:
        return None
    return ServerNames(((server.names, sites[id(server)]) for server in servers),
                       sites[id(default)])


def site_for(names: ServerNames[T], request: Request) -> T | object:
    """The Site that serves `request`, or INVALID_HOST (nginx: 400)."""
    raw = request.host
    if not raw:
        return names.default
    host = valid_host(raw)
    if host is None:
        return INVALID_HOST
    return names.match(host)
