"""A keep-alive HTTP/1.1 upstream that sends more bytes than its framing says (a subprocess).

    python -m tests.support.hostile_upstream PORT

Every answer carries the request's `X-Client-Token` in an `X-Client-Token`
header and, where a body is allowed, `token=TOKEN` at the start of its body.
The hostile paths then send EXTRA bytes, a complete fake response
(`X-Client-Token: POISON`, body `POISON`), which belong to no request: a proxy
that pools the connection with those bytes waiting gives them to the next
client as its answer. RFC 9112 §6.3: the framing, not the bytes at hand, ends
a message; nginx closes an upstream connection that sent more.

  /                 honest: a small Content-Length body
  /cl-short         Content-Length shorter than what follows (EXTRA in the same send)
  /cl-big           a 20,000-byte Content-Length body (over an 8 KiB read), EXTRA
                    in the same send
  /at-8k?end=N      head and body exactly N bytes (default 8192, the size of a
                    proxy's first read of a reply), EXTRA in the same send: it starts
                    exactly at the read boundary, so it waits in the socket
  /chunked-64k?end=N  a chunked reply whose last chunk ends exactly at byte N
                    (default 65536, a 64 KiB read), EXTRA in the same send
                    (`&later=1` on either: EXTRA in a separate send, just after)
  /head-body        to HEAD: a head, then EXTRA as the body it announced; to
                    anything else: honest
  /204-body         a 204, then EXTRA
  /304-body         a 304, then EXTRA

Requests are read by their Content-Length (the load sends none). The upstream
uses one thread per connection and answers until the peer closes.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
from urllib.parse import parse_qs, urlsplit

EXTRA = (b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nX-Client-Token: POISON\r\n\r\n"
         b"POISON\n")
MAX_HEAD = 65536


def honest_body(token: bytes, size: int = 0) -> bytes:
    """`token=TOKEN\\n`, padded with dots to `size` bytes when that is longer."""
    body = b"token=" + token + b"\n"
    return body + b"." * max(0, size - len(body))


def _head(status: bytes, token: bytes, framing: bytes) -> bytes:
    return (b"HTTP/1.1 " + status + b"\r\nX-Client-Token: " + token + b"\r\n" + framing
            + b"\r\n")


def _length_reply(token: bytes, size: int = 0) -> bytes:
    body = honest_body(token, size)
    return _head(b"200 OK", token, b"Content-Length: %d\r\n" % len(body)) + body


def _exact_length_reply(token: bytes, end: int) -> bytes:
    """A Content-Length reply of exactly `end` bytes, head included."""
    size = end
    while True:  # the head's length depends on the digits of the body's length
        head = _head(b"200 OK", token, b"Content-Length: %d\r\n" % size)
        wanted = end - len(head)
        if wanted == size:
            return head + honest_body(token, size)
        size = wanted


def _exact_chunked_reply(token: bytes, end: int) -> bytes:
    """A chunked reply whose last chunk (`0\\r\\n\\r\\n`) ends exactly at byte `end`."""
    head = _head(b"200 OK", token, b"Transfer-Encoding: chunked\r\n")
    first = honest_body(token)
    first_chunk = b"%x\r\n" % len(first) + first + b"\r\n"
    last = b"0\r\n\r\n"
    room = end - len(head) - len(first_chunk) - len(last)
    size = room
    while True:  # the filler chunk's size line depends on its own size
        wanted = room - len(b"%x\r\n\r\n" % size)
        if wanted == size:
            break
        size = wanted
    filler = b"%x\r\n" % size + b"." * size + b"\r\n"
    reply = head + first_chunk + filler + last
    assert len(reply) == end, (len(reply), end)
    return reply


def _then_extra(reply: bytes, query: dict[str, list[str]]) -> list[bytes]:
    # One send: the extras are in the proxy's socket buffer when the reply ends, so a
    # proxy can see them before it pools the connection. `later` sends them apart, a
    # moment after: a race that no proxy wins every time (nginx included), since the
    # bytes may arrive after the next request went out.
    return [reply, EXTRA] if "later" in query else [reply + EXTRA]


def answer(method: bytes, target: str, token: bytes) -> list[bytes]:
    """The sends (in order) that answer one request."""
    parts = urlsplit(target)
    query = parse_qs(parts.query)
    path = parts.path
    if path == "/cl-short":
        return [_length_reply(token) + EXTRA]
    if path == "/cl-big":
        return [_length_reply(token, 20000) + EXTRA]
    if path == "/at-8k":
        return _then_extra(_exact_length_reply(token, int(query.get("end", ["8192"])[0])),
                           query)
    if path == "/chunked-64k":
        return _then_extra(_exact_chunked_reply(token, int(query.get("end", ["65536"])[0])),
                           query)
    if path == "/head-body" and method == b"HEAD":
        return [_head(b"200 OK", token, b"Content-Length: %d\r\n" % len(EXTRA)) + EXTRA]
    if path == "/204-body":
        return [_head(b"204 No Content", token, b"") + EXTRA]
    if path == "/304-body":
        return [_head(b"304 Not Modified", token, b'ETag: "hostile"\r\n') + EXTRA]
    return [_length_reply(token)]


def _parse_head(head: bytes) -> tuple[bytes, str, bytes, int]:
    lines = head.split(b"\r\n")
    method, target, _version = lines[0].split(b" ", 2)
    token, length = b"none", 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"x-client-token":
            token = value.strip()
        elif name == b"content-length":
            length = int(value.strip())
    return method, target.decode("latin-1"), token, length


def serve_connection(sock: socket.socket) -> None:
    """Answer the requests of one connection until the peer closes or resets it."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # Room for a whole reply and its EXTRA in one write. With the default send buffer
    # a 72 KiB reply's sendall() can be cut at a page boundary that is the reply's own
    # end: EXTRA then leaves in a later write, once the proxy has read the reply,
    # which is the `later` race (no proxy wins it every time), not the "one send" case.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
    with sock, contextlib.suppress(OSError):
        buffer = b""
        while True:
            end = buffer.find(b"\r\n\r\n")
            while end < 0:
                if len(buffer) > MAX_HEAD:
                    return
                data = sock.recv(65536)
                if not data:
                    return
                buffer += data
                end = buffer.find(b"\r\n\r\n")
            method, target, token, length = _parse_head(buffer[:end])
            buffer = buffer[end + 4:]
            while len(buffer) < length:
                data = sock.recv(65536)
                if not data:
                    return
                buffer += data
            buffer = buffer[length:]
            for piece in answer(method, target, token):
                sock.sendall(piece)


def serve(port: int) -> None:
    listener = socket.create_server(("127.0.0.1", port), backlog=1024)
    while True:
        sock, _address = listener.accept()
        threading.Thread(target=serve_connection, args=(sock,), daemon=True).start()


if __name__ == "__main__":
    serve(int(sys.argv[1]))
