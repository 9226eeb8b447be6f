"""Reply buffering, as nginx's `proxy_buffering on`: the upstream is read as fast as it sends.

While a reply is relayed, what the client cannot take yet is held: in memory up
to `buffers_size` (64k), then in an unnamed temporary file up to
`max_temp_file_size` (1g). So a slow client pins neither an upstream
connection nor a uWSGI process: the upstream side is released as soon as the
whole reply is in, and the held bytes then go out at the client's pace.
Buffering never delays bytes the client can take now: every write is tried at
once, and while the relay waits for the upstream it also wakes when the client
can take more. Past both limits the relay waits for the client (nginx then
stops reading the upstream too).

`X-Accel-Buffering: no` from the upstream turns it off for one reply, `yes` on;
`buffering = false` on a location turns it off.
"""

from __future__ import annotations

import os
import tempfile
from time import monotonic as _monotonic
from typing import TYPE_CHECKING

from gevent import get_hub
from gevent.hub import Waiter

from workers.stats import stats
from workers.stream import Stream

if TYPE_CHECKING:
    from workers.client import ClientConnection

_PUSH_SIZE = 256 * 1024  # bytes read back from the file for one send


def wants_buffering(lines: bytes, default: bool) -> bool:
    """The reply's X-Accel-Buffering (yes/no), else the location's setting."""
    if b"ccel-" not in lines:  # the cheap test first: X-Accel-* is rare
        return default
    for line in lines.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"x-accel-buffering":
            value = value.strip().lower()
            if value in (b"yes", b"no"):
                return value == b"yes"
    return default


class HeldOutput:
    """The client's side of one relayed reply: `send` never waits for the client
    until the limits are reached; `recv` reads the upstream and moves held bytes
    meanwhile; `finish` sends what is held, at the client's pace."""

    __slots__ = ("conn", "memory", "memory_size", "memory_limit", "file", "written",
                 "read", "file_limit")

    def __init__(self, conn: ClientConnection, memory_limit: int, file_limit: int) -> None:
        self.conn = conn
        self.memory: list[bytes] = []
        self.memory_size = 0
        self.memory_limit = memory_limit
        self.file = None  # a TemporaryFile, once memory is full
        self.written = self.read = 0  # bytes written to the file, and sent from it
        self.file_limit = file_limit

    @property
    def held(self) -> int:
        return self.memory_size + self.written - self.read

    # -- towards the client -------------------------------------------------------
    def send(self, data: bytes | memoryview) -> None:
        conn = self.conn
        conn.response_started = True
        if not self.held:
            sent = _send_now(conn.sock, data)
            if sent == len(data):
                return
            data = data[sent:]
        self._hold(bytes(data))
        self.push()
        while self.held > self.memory_limit + self.file_limit:
            self._wait_for_client()  # both limits reached: the client sets the pace
            self.push()

    def push(self) -> None:
        """Send held bytes, as many as the client takes now."""
        sock = self.conn.sock
        while self.memory:
            piece = self.memory[0]
            sent = _send_now(sock, piece)
            self.memory_size -= sent
            if sent < len(piece):
                self.memory[0] = piece[sent:]
                return
            self.memory.pop(0)
        while self.read < self.written:
            data = os.pread(self.file.fileno(), _PUSH_SIZE, self.read)
            sent = _send_now(sock, data)
            self.read += sent
            if sent < len(data):
                return

    def finish(self) -> None:
        """Send everything held; each wait for the client is bounded by its send timeout."""
        try:
            self.push()
            while self.held:
                self._wait_for_client()
                self.push()
        finally:
            self.close()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        self.memory = []

    def _hold(self, data: bytes) -> None:
        if self.file is None:
            if self.memory_size + len(data) <= self.memory_limit or not self.file_limit:
                self.memory.append(data)
                self.memory_size += len(data)
                return
            # Memory is full: from here on, everything held goes through the file, in order.
            self.file = tempfile.TemporaryFile(prefix="prefork-proxy-reply-")  # noqa: SIM115
        os.write(self.file.fileno(), data)
        self.written += len(data)

    def _wait_for_client(self) -> None:
        client = self.conn.sock
        client.timeout = self.conn.send_timeout  # nginx's send_timeout: TimeoutError past it
        client._wait(client.write_event)

    # -- from the upstream ----------------------------------------------------------
    def recv(self, upstream: Stream, size: int) -> bytes:
        """upstream.recv(size), moving held bytes to the client while it waits; the
        upstream's read timeout counts from the call (TimeoutError past it)."""
        if not self.held:
            return upstream.recv(size)
        deadline = _monotonic() + (upstream.timeout or 0.0)
        while True:
            try:
                return upstream.sock.recv(size)
            except BlockingIOError:
                pass
            self.push()
            if not self.held:  # all out: a plain wait, for what is left of the timeout
                timeout = upstream.timeout
                upstream.timeout = max(deadline - _monotonic(), 0.001)
                try:
                    return upstream.recv(size)
                finally:
                    upstream.timeout = timeout
            self._wait_either(upstream, deadline)

    def _wait_either(self, upstream: Stream, deadline: float) -> None:
        """Park until the upstream is readable or the client writable."""
        hub = get_hub()
        waiter = Waiter(hub)
        upstream.read_waiter = waiter
        if not upstream.read_event.active:
            upstream.read_event.start(upstream._readable)
        writable = self.conn.sock.write_event
        writable.start(waiter.switch, "writable")
        timer = hub.loop.timer(max(deadline - _monotonic(), 0.0))
        timer.start(waiter.switch, "timeout")
        try:
            woken_by = waiter.get()
        finally:
            writable.stop()
            timer.stop()
            timer.close()
            upstream.read_waiter = None
        if woken_by == "timeout":
            raise TimeoutError("upstream read timeout")


def _send_now(sock: Stream, data: bytes | memoryview) -> int:
    """What the client takes without waiting (0 when its socket is full)."""
    try:
        sent = sock.sock.send(data)
    except BlockingIOError:
        return 0
    stats.bytes_out += sent
    return sent
