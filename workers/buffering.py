"""Reply buffering, as nginx's `proxy_buffering on`: the upstream is read as fast as it sends.

While a reply is relayed, what the client cannot take yet is held: in memory up
to `buffers_size` (64k), then in an unnamed temporary file up to
`max_temp_file_size` (1g). So a slow client pins neither an upstream
connection nor a uWSGI process: the upstream side is released as soon as the
whole reply is in, and the held bytes then go out at the client's pace.
Buffering never delays bytes the client can take now: every write is tried at
once (workers/driver.py), and only what the client's socket refuses is held
here, then pushed when it turns writable. Past both limits the driver stops
reading the upstream until the client takes more (as nginx does).

`X-Accel-Buffering: no` from the upstream turns it off for one reply, `yes` on;
`buffering = false` on a location turns it off.
"""

from __future__ import annotations

import os
import tempfile
from typing import TYPE_CHECKING

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
    """What the client of one reply has not taken yet: `hold` keeps it (memory, then
    the file), `push` sends as much as the client takes now, never waiting."""

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

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        self.memory = []

    def hold(self, data: bytes) -> None:
        if self.file is None:
            if self.memory_size + len(data) <= self.memory_limit or not self.file_limit:
                self.memory.append(data)
                self.memory_size += len(data)
                return
            # Memory is full: from here on, everything held goes through the file, in order.
            self.file = tempfile.TemporaryFile(prefix="prefork-proxy-reply-")  # noqa: SIM115
        os.write(self.file.fileno(), data)
        self.written += len(data)

def _send_now(sock: Stream, data: bytes | memoryview) -> int:
    """What the client takes without waiting (0 when its socket is full)."""
    try:
        sent = sock.sock.send(data)
    except BlockingIOError:
        return 0
    stats.bytes_out += sent
    return sent
