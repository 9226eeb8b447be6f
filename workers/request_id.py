"""Request ids (nginx's $request_id): made once per request, sent upstream, logged.

With `request_id = true` every request gets an id: the client's own
X-Request-Id when the client's address is in `[status] trusted`, else a new
one (32 hex digits, a version-4 UUID's), which replaces whatever the client
sent, so that no outsider can write an id into our logs or an upstream's.
The id goes upstream as X-Request-Id (HTTP_X_REQUEST_ID for uwsgi_pass:
workers/headers.py, workers/uwsgi_packet.py), into the access log, the error
lines and the error pages.

Cost, measured here: uuid.uuid4().hex is 2.1 µs; 16 bytes of os.urandom()
shaped as a version-4 UUID, 0.9 µs; the same taken from a 4 KiB block read
once per 256 ids, 0.45 µs (`new_id`). Whether a client is trusted is decided
once per connection (ClientConnection), from a per-address cache.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prefork_proxy.config import Network
    from workers.client import ClientConnection
    from workers.http1 import Request

# RFC 9562 §5.4: the version nibble is 4 and the variant bits are 10.
_CLEARED = ~((0xF << 76) | (0x3 << 62)) & ((1 << 128) - 1)
_VERSION_4 = (0x4 << 76) | (0x2 << 62)
_BLOCK = 4096  # random bytes read at once: 256 ids per getrandom() call
# The client's X-Request-Id among a plain head's lines (http1.Request.lines).
_ID_LINE = re.compile(rb"\nx-request-id:[ \t]*([^\r]*)", re.IGNORECASE)
# Addresses whose trust is remembered; past this many the cache starts over.
_CACHED_ADDRESSES = 4096


def _ids() -> Iterator[str]:
    urandom, from_bytes = os.urandom, int.from_bytes
    while True:
        block = urandom(_BLOCK)
        for offset in range(0, _BLOCK, 16):
            yield "%032x" % (from_bytes(block[offset:offset + 16]) & _CLEARED | _VERSION_4)


_source = _ids()


def _restart() -> None:
    # A forked child must not hand out the ids left in its parent's block.
    global _source
    _source = _ids()


os.register_at_fork(after_in_child=_restart)


def new_id() -> str:
    """A new id: 32 lower-case hex digits, a random (version 4) UUID's."""
    return next(_source)


class TrustedClients:
    """`[status] trusted`: the client addresses whose own X-Request-Id is kept.

    Asked once per connection; each address is parsed once (cached), so a
    client that reconnects costs a dict look-up, not an ipaddress parse."""

    __slots__ = ("networks", "known")

    def __init__(self, networks: Iterable[Network]) -> None:
        self.networks = tuple(networks)
        self.known: dict[str, bool] = {}

    def trusts(self, address: str) -> bool:
        if not self.networks:
            return False
        trusted = self.known.get(address)
        if trusted is None:
            if len(self.known) >= _CACHED_ADDRESSES:
                self.known.clear()
            trusted = self.known[address] = self._decide(address)
        return trusted

    def _decide(self, address: str) -> bool:
        try:  # "unix:" (a unix socket) is no address: not trusted
            client = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if client.version == 6 and client.ipv4_mapped is not None:
            client = client.ipv4_mapped  # ::ffff:10.0.0.1 on a [::] listener is 10.0.0.1
        return any(client in network for network in self.networks)


def client_request_id(request: Request) -> bytes | None:
    """The client's own X-Request-Id (the first, trimmed), or None if it sent none."""
    if request.lines is not None:
        match = _ID_LINE.search(request.lines)
        value = match.group(1) if match is not None else None
    else:
        value = None
        for name, candidate in request.headers:
            if len(name) == 12 and name.lower() == b"x-request-id":
                value = candidate
                break
    if value is not None:
        value = value.rstrip(b" \t")
    return value or None


def assign(conn: ClientConnection, request: Request) -> None:
    """Give the request its id (`conn.request_id`), and say what goes upstream:
    `conn.forwarded_request_id` is our id, replacing the client's header, or None
    when the trusted client's own header passes as it came."""
    if conn.keeps_request_id:
        own = client_request_id(request)
        if own is not None:
            conn.request_id = own.decode("latin-1")
            conn.forwarded_request_id = None
            return
    request_id = next(_source)
    conn.request_id = request_id
    conn.forwarded_request_id = request_id.encode()
