"""Bytes-only fixtures for the sans-IO exchange core (workers/exchange.py).

No socket, no process: a Request is made from bytes by workers/http1.py's
RequestReader, a Reply is fed upstream bytes and answers client bytes, and a
Balancer is built from prefork_proxy/config.py's dataclasses. h11 gives the
strict reference reading of what a client would receive.
"""

from __future__ import annotations

from collections.abc import Iterable

import h11

from prefork_proxy.config import Location, Peer, Upstream
from prefork_proxy.values import Address
from workers.balancing import Balancer
from workers.exchange import HTTP_CODEC, HttpCodec, Reply, UwsgiCodec
from workers.http1 import Request, RequestReader

GET_11 = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
GET_10 = b"GET / HTTP/1.0\r\n\r\n"
GET_10_KEEP_ALIVE = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
HEAD_11 = b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n"
CLIENT_IP = b"10.0.0.1"
NOW = 1000.0


def request(head: bytes) -> Request:
    """The Request a client's head makes (the head must be whole and valid)."""
    made = RequestReader().head_from(head)
    assert made is not None, head
    return made


def reply(head: bytes = GET_11, *, keep_alive: bool = True,
          codec: HttpCodec | UwsgiCodec = HTTP_CODEC, packet_size: int = 0) -> Reply:
    """A Reply to the request `head`, keep-alive permitted or not."""
    return Reply(request(head), keep_alive, codec, packet_size)


def feed(target: Reply, pieces: Iterable[bytes], *, close: bool = False) -> bytes:
    """Feed `pieces` as successive reads; with `close`, the upstream closes with the
    last of them (or, with no pieces, alone). Returns what went to the client."""
    pieces = list(pieces)
    out = []
    for index, piece in enumerate(pieces):
        out.append(target.feed(piece, close and index == len(pieces) - 1))
    if close and not pieces:
        out.append(target.closed())
    return b"".join(out)


def cut(data: bytes, positions: Iterable[int]) -> list[bytes]:
    """`data` cut at `positions` (any order, repeats give empty reads)."""
    points = sorted(positions)
    bounds = [0, *points, len(data)]
    return [data[start:end] for start, end in zip(bounds, bounds[1:], strict=False)]


def every_split(data: bytes) -> list[list[bytes]]:
    """`data` in two reads, cut at every byte position (the ends included)."""
    return [[data[:index], data[index:]] for index in range(len(data) + 1)]


# -- a client's reading of the reply: h11 -------------------------------------------

def h11_read(data: bytes, method: bytes = b"GET",
             eof: bool = False) -> tuple[h11.Response, bytes, bool]:
    """h11 (as an HTTP/1.1 client that sent `method /`) reads `data`, then the
    close with `eof`: the response, its body, and whether the body ended."""
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method=method, target="/", headers=[("Host", "a")]))
    client.send(h11.EndOfMessage())
    client.receive_data(data)
    if eof:
        client.receive_data(b"")
    response, body, ended = None, [], False
    while True:
        event = client.next_event()
        if event in (h11.NEED_DATA, h11.PAUSED) or isinstance(event, h11.ConnectionClosed):
            break
        if isinstance(event, h11.Response):
            response = event
        elif isinstance(event, h11.Data):
            body.append(event.data)
        elif isinstance(event, h11.EndOfMessage):
            ended = True
    assert response is not None, data
    return response, b"".join(body), ended


def h11_header(response: h11.Response, name: bytes) -> list[bytes]:
    """The values of header `name` (lower-case) h11 saw in `response`."""
    return [value for key, value in response.headers if key == name]


# -- configuration ---------------------------------------------------------------------

def upstream(*specs: str, name: str = "app", balance: str = "round_robin") -> Upstream:
    """upstream("a weight=2", "b", "c backup"): peers on 127.0.0.1:8000, 8001..."""
    peers = []
    for index, spec in enumerate(specs):
        _, *options = spec.split()
        values: dict = {"address": Address("127.0.0.1", 8000 + index)}
        for option in options:
            key, _, raw = option.partition("=")
            if key == "backup":
                values["backup"] = True
            elif key == "fail_timeout":
                values[key] = float(raw)
            else:
                values[key] = int(raw)
        peers.append(Peer(**values))
    return Upstream(name=name, peers=tuple(peers), balance=balance)


def balancer(*specs: str, balance: str = "round_robin") -> Balancer:
    return Balancer(upstream(*specs, balance=balance))


def location(path: str = "/", **settings: object) -> Location:
    """A proxy_pass location on a one-peer upstream `app`, with `settings`."""
    return Location(path=path, upstream=upstream("a"), **settings)


def header_lines(head: bytes) -> list[bytes]:
    """The header lines of a head (its first line and blank line left out)."""
    lines = head.split(b"\r\n")
    assert lines[-2:] == [b"", b""], head
    return lines[1:-2]


def lines_named(head: bytes, name: bytes) -> list[bytes]:
    """The header lines of a head named `name` (lower-case), as written."""
    return [line for line in header_lines(head) if line.partition(b":")[0].lower() == name]
