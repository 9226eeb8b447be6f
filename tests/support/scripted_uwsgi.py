"""A fake uwsgi peer that answers with scripted bytes, for what real uWSGI won't do.

Real uWSGI always answers a WSGI app with an HTTP status line; this peer
sends a CGI-style head, a malformed reply, or nothing at all (to make a
proxy time out). It reads each request as uWSGI does (the 4-byte header,
the vars block, then exactly CONTENT_LENGTH body bytes), records it, and
answers with `reply`, closing afterwards. One thread per connection; all
of them stop with the peer.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class ReceivedRequest:
    modifier1: int
    modifier2: int
    variables: list[tuple[bytes, bytes]]
    body: bytes

    @property
    def environ(self) -> dict[bytes, bytes]:
        return dict(self.variables)


def parse_vars(block: bytes) -> list[tuple[bytes, bytes]]:
    """Decode a uwsgi vars block into (key, value) pairs, in order."""
    pairs, offset = [], 0
    while offset < len(block):
        (key_length,) = struct.unpack_from("<H", block, offset)
        key = block[offset + 2 : offset + 2 + key_length]
        offset += 2 + key_length
        (value_length,) = struct.unpack_from("<H", block, offset)
        value = block[offset + 2 : offset + 2 + value_length]
        offset += 2 + value_length
        pairs.append((key, value))
    return pairs


def _read_exactly(connection: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = connection.recv(min(size - len(data), 1 << 20))
        if not chunk:
            raise ConnectionError("peer closed mid-request")
        data += chunk
    return bytes(data)


@dataclass
class ScriptedUwsgi:
    """Listen on 127.0.0.1 (ephemeral port); answer each request with `reply`.

    `reply=None` never answers: the connection is held open until `stop()`.
    `reset` answers the request with a TCP reset instead (a server that dies).
    `reply_for` makes each reply from its request, in place of `reply`.
    `split_at` sends the reply in two writes, that many bytes first, the rest
    after `pause` seconds: a reply the proxy reads in two pieces. `hold_open`
    keeps the connection open after the reply, as a server that sends no body
    after a head (HEAD, 304) and closes late would. `listener` serves a socket
    already listening (one the test let fill up first).
    """

    reply: bytes | None
    requests: list[ReceivedRequest] = field(default_factory=list)
    split_at: int = 0
    pause: float = 0.3
    hold_open: bool = False
    listener: socket.socket | None = None
    reset: bool = False
    reply_for: Callable[[ReceivedRequest], bytes] | None = None

    def __post_init__(self) -> None:
        self._listener = self.listener or socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._stopping = threading.Event()
        self._connections: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._connections.append(connection)
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        try:
            modifier1, size, modifier2 = struct.unpack("<BHB", _read_exactly(connection, 4))
            variables = parse_vars(_read_exactly(connection, size))
            length = dict(variables).get(b"CONTENT_LENGTH") or b"0"
            body = _read_exactly(connection, int(length))
            received = ReceivedRequest(modifier1, modifier2, variables, body)
            self.requests.append(received)
            reply = self.reply if self.reply_for is None else self.reply_for(received)
            if self.reset:  # a zero linger turns the close into an RST
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                      struct.pack("ii", 1, 0))
                return
            if reply is None:
                self._stopping.wait(120)
                return
            if self.split_at:
                connection.sendall(reply[:self.split_at])
                self._stopping.wait(self.pause)  # the proxy reads the first piece alone
                connection.sendall(reply[self.split_at:])
            else:
                connection.sendall(reply)
            if self.hold_open:
                self._stopping.wait(120)
        except OSError:
            pass
        finally:
            connection.close()

    def stop(self) -> None:
        self._stopping.set()
        self._listener.close()
        for connection in self._connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(5)

    def __enter__(self) -> ScriptedUwsgi:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
