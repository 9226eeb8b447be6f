"""workers/tls_socket.py on a real socket pair: the plain socket's shape over TLS.

No watcher here: a test reads or writes until the call says it would block,
as the driver's callbacks do, and checks that no plaintext is left pending
and that a send retried after a full socket delivers every byte once.
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import threading
from collections.abc import Iterator

import pytest

from prefork_proxy import tls
from tests.support.certs import CertificateAuthority
from workers.tls_socket import RECORD, TlsSocket

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def pair(tmp_path) -> Iterator[tuple[TlsSocket, ssl.SSLSocket]]:
    """(the server side as TlsSocket, non-blocking; the client side, blocking)."""
    ca = CertificateAuthority()
    cert, key = ca.leaf(tmp_path, ["a.test"])
    server_raw, client_raw = socket.socketpair()
    client: list[ssl.SSLSocket] = []
    thread = threading.Thread(target=lambda: client.append(
        ca.client_context().wrap_socket(client_raw, server_hostname="a.test")))
    thread.start()
    server = tls.server_context(str(cert), str(key)).wrap_socket(server_raw, server_side=True)
    thread.join()
    server.setblocking(False)
    yield TlsSocket(server), client[0]
    server.close()
    client[0].close()


def test_a_read_with_nothing_there_would_block(pair) -> None:
    server, _ = pair
    with pytest.raises(BlockingIOError):
        server.recv(8192)


def test_a_small_read_takes_whole_records_and_leaves_nothing_pending(pair) -> None:
    server, client = pair
    data = os.urandom(3 * RECORD + 100)
    client.sendall(data)
    got = b""
    while len(got) < len(data):
        piece = server.recv(8192)  # the driver's head read size
        assert server.tls.pending() == 0
        got += piece
    assert got == data


def test_recv_into_fills_a_large_buffer_with_records(pair) -> None:
    server, client = pair
    data = os.urandom(200_000)
    client.sendall(data)
    buffer = bytearray(1 << 20)
    got = b""
    while len(got) < len(data):
        count = server.recv_into(buffer)
        assert server.tls.pending() == 0
        got += bytes(buffer[:count])
    assert got == data


def test_peek_says_whether_bytes_wait_and_sees_the_close(pair) -> None:
    server, client = pair
    with pytest.raises(BlockingIOError):
        server.recv(1, socket.MSG_PEEK)
    client.sendall(b"x")
    assert server.recv(1, socket.MSG_PEEK)
    assert server.recv(100) == b"x"
    client.close()  # (with the server's session tickets unread: a reset, on this pair)
    try:
        assert server.recv(1, socket.MSG_PEEK) == b""
    except ConnectionResetError:
        pass  # the driver takes an OSError for a close too


def test_a_send_retried_with_the_same_bytes_delivers_each_byte_once(pair) -> None:
    server, client = pair
    data = os.urandom(4 << 20)
    received = []
    reader = threading.Thread(target=lambda: received.append(_read(client, len(data))))
    blocked = 0
    pending = data
    # Fill the socket before the reader starts: the first sends must meet want-write.
    while pending:
        try:
            sent = server.send(pending)
        except BlockingIOError:
            blocked += 1
            if not reader.is_alive() and not received:
                reader.start()
            continue
        pending = pending[sent:]
    reader.join()
    assert blocked > 0
    assert hashlib.sha256(received[0]).digest() == hashlib.sha256(data).digest()


def _read(sock: ssl.SSLSocket, size: int) -> bytes:
    pieces = []
    while size:
        piece = sock.recv(min(size, 1 << 16))
        pieces.append(piece)
        size -= len(piece)
    return b"".join(pieces)
