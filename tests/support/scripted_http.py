"""A raw HTTP/1.1 keep-alive upstream, in a thread, that answers each path with exact bytes.

For tests of what the proxy does with an upstream's bytes (leftovers after a
reply's framing, odd heads): `ScriptedHttp({b"/path": reply_bytes, ...})`
answers a request for `/path` with those bytes, sent in one `sendall`, and
keeps the connection for the next request. A reply may also be a function of
the path, or a list of steps: bytes are sent, a number is a pause in seconds,
None closes the connection without a word, and RESET resets it (an RST).
Any other path gets an honest 200 naming it. `.connections` counts accepted
connections and `.requests` holds the request heads read, in order.
"""

from __future__ import annotations

import socket
import struct
import time

from tests.support.thread_server import ThreadServer

RESET = "reset"  # a step: close with SO_LINGER 0, so the peer sees a reset


def honest_reply(path: bytes) -> bytes:
    body = b"honest " + path
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)


class ScriptedHttp(ThreadServer):
    def __init__(self, replies: dict[bytes, object], serial: bool = False) -> None:
        super().__init__()
        self.replies = replies
        self.serial = serial  # one connection at a time, as a one-process application
        self.connections = 0
        self.requests: list[bytes] = []
        self.start()

    def on_accept(self, conn: socket.socket) -> None:
        self.connections += 1
        if self.serial:
            self._serve(conn)
        else:
            super().on_accept(conn)

    def _serve(self, conn: socket.socket) -> None:
        data = b""
        conn.settimeout(10)
        with conn:
            try:
                while not self.stopped.is_set():
                    end = data.find(b"\r\n\r\n")
                    if end < 0:
                        more = conn.recv(65536)
                        if not more:
                            return
                        data += more
                        continue
                    head, data = data[:end + 4], data[end + 4:]
                    length = _content_length(head)
                    while len(data) < length:
                        more = conn.recv(65536)
                        if not more:
                            return
                        data += more
                    data = data[length:]
                    self.requests.append(head)
                    path = head.split(b" ", 2)[1]
                    reply = self.replies.get(path, honest_reply)
                    if callable(reply):
                        reply = reply(path)
                    for step in reply if isinstance(reply, list) else [reply]:
                        if step is None:
                            return
                        if step is RESET:
                            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                            struct.pack("ii", 1, 0))
                            return
                        if isinstance(step, (int, float)):
                            time.sleep(step)
                        else:
                            conn.sendall(step)
            except OSError:
                return

    def paths(self) -> list[bytes]:
        return [head.split(b" ", 2)[1] for head in self.requests]



def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0
