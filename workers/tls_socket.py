"""A client's TLS connection, shaped like the plain non-blocking socket the driver reads.

The driver (workers/driver.py), the held output (buffering.py) and the tunnel
(tunnel.py) call `recv`, `recv_into` and `send` on a non-blocking socket and
take BlockingIOError as "wait for the watcher". The stdlib's SSLSocket raises
SSLWantReadError / SSLWantWriteError instead (OSErrors, not BlockingIOErrors:
the driver would take them for a reset), so this class answers them as
BlockingIOError, and the plain path keeps its C socket and its cost.

Plaintext that OpenSSL decrypted but did not return (`SSLSocket.pending()`)
does not make the descriptor readable, and a reader that left some would wait
for a watcher that never fires. A record holds at most 16 KiB of plaintext
(RFC 8446 §5.1), and without read-ahead OpenSSL takes one record from the
socket per read: so every read here asks for at least RECORD bytes, and
nothing is ever left pending between two calls.

A send is all or nothing: the stdlib leaves OpenSSL's partial-write mode
off, so SSL_write takes the whole buffer, or writes what the socket takes,
remembers how far it got and answers want-write. Here that is a send of 0
bytes (BlockingIOError), and every caller (the driver, buffering.HeldOutput,
the tunnel, Stream.sendall) then retries with the same bytes, possibly more
after them, from another buffer (the stdlib sets ACCEPT_MOVING_WRITE_BUFFER):
OpenSSL goes on where it stopped, and no byte is sent twice.
"""

from __future__ import annotations

import contextlib
import socket
import ssl

# RFC 8446 §5.1: 2^14 bytes of plaintext at most per record.
RECORD = 16384
_WOULD_BLOCK = (ssl.SSLWantReadError, ssl.SSLWantWriteError)
_raw_recv = socket.socket.recv  # the descriptor's own recv, under the TLS layer


class TlsSocket:
    """An SSLSocket (server side, non-blocking, handshake done) as a plain socket."""

    __slots__ = ("tls",)

    def __init__(self, tls: ssl.SSLSocket) -> None:
        self.tls = tls

    def recv(self, size: int, flags: int = 0) -> bytes:
        """Up to about `size` bytes, whole records only (at least one record's worth
        is asked for, so a little more than `size` may come); b"" at the end.
        With MSG_PEEK (the driver's close check): whether something is waiting,
        from the descriptor itself, as nginx's ngx_http_test_reading."""
        tls = self.tls
        if flags:
            if tls.pending():
                return b"\0"
            return _raw_recv(tls, 1, flags)
        try:
            data = tls.recv(max(size, RECORD))
        except _WOULD_BLOCK:
            raise BlockingIOError("TLS: no whole record yet") from None
        if len(data) < RECORD or len(data) >= size:
            return data  # (a short record: the next one, if any, wakes the watcher)
        pieces = [data]  # a full record: more may be waiting, read them now
        got = len(data)
        try:
            while got < size:
                data = tls.recv(max(size - got, RECORD))
                if not data:
                    break
                pieces.append(data)
                got += len(data)
                if len(data) < RECORD:
                    break
        except _WOULD_BLOCK:
            pass
        return b"".join(pieces)

    def recv_into(self, buffer: bytearray | memoryview, nbytes: int = 0) -> int:
        """Records into `buffer` until it has less than a record's room, or the socket
        is empty; 0 at the end. `buffer` holds a record at least (the tunnel's are
        1 MiB: workers/buffers.py): a smaller one could leave plaintext pending."""
        tls = self.tls
        view = memoryview(buffer)
        size = nbytes or len(view)
        if size < RECORD:
            raise ValueError(f"a TLS read needs room for a record ({RECORD} bytes)")
        got = 0
        try:
            while size - got >= RECORD:
                count = tls.recv_into(view[got:size], size - got)
                got += count
                if count < RECORD:  # the end, or a short record: the last one waiting
                    break
        except _WOULD_BLOCK:
            if not got:
                raise BlockingIOError("TLS: no whole record yet") from None
        return got

    def send(self, data: bytes | memoryview) -> int:
        """All of `data`, or BlockingIOError: then the next send must start with the
        same bytes (module docstring)."""
        try:
            return self.tls.send(data)
        except _WOULD_BLOCK:
            raise BlockingIOError("TLS: the socket is full") from None

    def close(self) -> None:
        """Send close_notify if the socket takes it now (nginx: a non-blocking
        SSL_shutdown whose failure is ignored), then close."""
        tls = self.tls
        with contextlib.suppress(OSError, ValueError):
            tls.unwrap()
        tls.close()

    # -- what the rest of the worker asks of a socket ------------------------------
    def fileno(self) -> int:
        return self.tls.fileno()

    def gettimeout(self) -> float:
        return 0.0

    def setblocking(self, flag: bool) -> None:
        self.tls.setblocking(flag)

    def setsockopt(self, *args: int) -> None:
        self.tls.setsockopt(*args)

    def getsockname(self) -> object:
        return self.tls.getsockname()

    def getpeername(self) -> object:
        return self.tls.getpeername()

    def shutdown(self, how: int) -> None:
        self.tls.shutdown(how)
