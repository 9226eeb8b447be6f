"""The real client address behind a trusted proxy: nginx's ngx_http_realip_module.

A server's `real_ip_from` lists the proxies (load balancers, CDNs) whose word
is taken for the client's address. Only when the connection's address is one
of them is `real_ip_header` read: for X-Forwarded-For-style lists (every
occurrence of the header, joined), without `real_ip_recursive` the last
address of the list; with it, the rightmost address that is not itself in
`real_ip_from`, walking from the right (the leftmost if all are trusted). An
invalid address ends the walk: nginx then keeps what it had, the connection's
address if it was the list's last element (ngx_http_get_forwarded_addr).
`real_ip_header = "proxy_protocol"` takes the PROXY header's address, once
per connection (workers/proxy_header_step.py).

The result is the request's client address (ClientConnection.client_*), for
ip_hash, the access log, X-Real-IP / X-Forwarded-For, uwsgi REMOTE_ADDR and
REMOTE_PORT, and the [status] allow list. It is decided per request: the
connection keeps its own address (`peer_*`), so the next request on it is
judged afresh. With `real_ip_from` empty there is no rule at all (Site.real_ip
is None), and a request pays one attribute check.
"""

from __future__ import annotations

import ipaddress
import re
from typing import TYPE_CHECKING

from workers.request_id import TrustedClients

if TYPE_CHECKING:
    from collections.abc import Callable

    from prefork_proxy.config import RealIp
    from workers.client import ClientConnection
    from workers.http1 import Request

PROXY_PROTOCOL = "proxy_protocol"
# nginx reads a list from its right end; spaces and commas separate its elements.
_SEPARATORS = re.compile(rb"[ ,]+")


class RealIpRule:
    """One server's realip settings (config.RealIp), ready for the data path."""

    __slots__ = ("trusted", "header", "environ_key", "recursive", "from_proxy_protocol")

    def __init__(self, settings: RealIp) -> None:
        self.trusted = TrustedClients(settings.real_ip_from)
        self.header = settings.real_ip_header.lower().encode("latin-1")
        self.environ_key = "HTTP_" + settings.real_ip_header.upper().replace("-", "_")
        self.recursive = settings.real_ip_recursive
        self.from_proxy_protocol = settings.real_ip_header == PROXY_PROTOCOL

    def trusts(self, address: str) -> bool:
        return self.trusted.trusts(address)

    def for_connection(self, address: str) -> RealIpRule | None:
        """The rule a connection from `address` applies to each of its requests:
        itself when the address is trusted and the address comes from a header."""
        if self.from_proxy_protocol or not self.trusts(address):
            return None
        return self

    def apply(self, conn: ClientConnection, request: Request) -> None:
        """Set the request's client address (`conn.client_*`) from its header, or
        back to the connection's own address."""
        header = self.header
        values = [value for name, value in request.headers if name.lower() == header]
        found = forwarded_address(values, self.trusts, self.recursive) if values else None
        if found is None:
            conn.client_addr, conn.client_ip, conn.client_port = (
                conn.peer_addr, conn.peer_ip, conn.peer_port)
        else:
            conn.client_addr, conn.client_port = found
            conn.client_ip = found[0].encode()

    def address_in_environ(self, address: str, environ: dict) -> str:
        """The client address of a WSGI request (the status listener): pywsgi has
        joined the header's occurrences with commas already."""
        if self.from_proxy_protocol or not self.trusts(address):
            return address
        value = environ.get(self.environ_key)
        found = (forwarded_address([value.encode("latin-1")], self.trusts, self.recursive)
                 if value else None)
        return address if found is None else found[0]


def forwarded_address(values: list[bytes], trusts: Callable[[str], bool],
                      recursive: bool) -> tuple[str, bytes] | None:
    """(address, port or b"") from a header's values, as nginx's
    ngx_http_get_forwarded_addr reads them from a trusted peer; None: keep the
    peer's address. `trusts` says whether an address is in real_ip_from."""
    elements = [item for value in values for item in _SEPARATORS.split(value) if item]
    found = None
    for element in reversed(elements):
        parsed = parse_address(element)
        if parsed is None:
            break  # nginx: an invalid element ends the walk; what was found stands
        found = parsed
        if not recursive or not trusts(parsed[0]):
            break
    return found


def parse_address(text: bytes) -> tuple[str, bytes] | None:
    """`addr`, `addr:port` (IPv4) or `[v6]:port`, as nginx's ngx_parse_addr_port;
    the address in its canonical form. None if it is not one."""
    port = b""
    bracketed = text.startswith(b"[")
    if bracketed:
        end = text.find(b"]")
        if end < 0:
            return None
        rest, text = text[end + 1:], text[1:end]
        if rest:
            if not rest.startswith(b":"):
                return None
            port = rest[1:]
    elif text.count(b":") == 1:
        text, _, port = text.partition(b":")
    if port and not (port.isdigit() and len(port) <= 5 and 0 < int(port) <= 65535):
        return None
    if b"%" in text:  # a scope names an interface of the sender, not an address
        return None
    try:
        address = ipaddress.ip_address(text.decode("ascii"))
    except ValueError:  # UnicodeDecodeError is a ValueError too
        return None
    if bracketed and address.version != 6:
        return None
    if port and port[:1] == b"0":
        port = b"%d" % int(port)
    return str(address), port
