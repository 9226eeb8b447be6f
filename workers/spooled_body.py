"""A request body held whole: in memory up to a threshold, then in a temporary file.

uWSGI reads exactly CONTENT_LENGTH body bytes, so a chunked request body must
be read to its end before the packet can say how long it is; proxy_pass does
the same (nginx's `proxy_request_buffering on`), for the WSGI stacks behind an
HTTP server that read by Content-Length too. As nginx: `client_body_buffer_size`
in memory, the rest in a temporary file (`client_body_temp_path`).
Memory stays bounded by the threshold whatever the body's size; the file is
unnamed (`tempfile.TemporaryFile`) and vanishes when closed.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import BinaryIO

SPOOL_THRESHOLD = 16 << 10  # nginx's client_body_buffer_size on 64-bit platforms


class SpooledBody:
    __slots__ = ("pieces", "memory_size", "file", "size", "threshold")

    def __init__(self, threshold: int = SPOOL_THRESHOLD) -> None:
        self.pieces: list[bytes] = []
        self.memory_size = 0
        self.file: BinaryIO | None = None
        self.size = 0
        self.threshold = threshold

    @property
    def spilled(self) -> bool:
        return self.file is not None

    def write(self, piece: bytes) -> None:
        self.size += len(piece)
        if self.file is not None:
            self.file.write(piece)
            return
        self.pieces.append(piece)
        self.memory_size += len(piece)
        if self.memory_size > self.threshold:
            self.file = tempfile.TemporaryFile(prefix="prefork-proxy-body-")  # noqa: SIM115
            self.file.write(b"".join(self.pieces))
            self.pieces, self.memory_size = [], 0

    def pieces_to_send(self, size: int = 65536) -> Iterator[bytes]:
        """The whole body, a piece at a time (a read from the file per piece)."""
        if self.file is None:
            if self.pieces:
                yield b"".join(self.pieces)
            return
        self.file.flush()
        self.file.seek(0)
        while piece := self.file.read(size):
            yield piece

    def close(self) -> None:
        self.pieces = []
        if self.file is not None:
            self.file.close()
            self.file = None


