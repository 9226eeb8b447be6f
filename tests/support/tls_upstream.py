"""An HTTPS/1.1 keep-alive upstream in threads, that records each TLS handshake.

    upstream = TlsUpstream(cert_path, key_path)   # upstream.port, upstream.address

`.connections` counts accepted TCP connections; `.handshakes` holds one record
per completed handshake: the SNI name the client sent (None without), whether
the session was resumed, the TLS version. Paths:

    /size/N     N bytes of a fixed pattern (pattern(N))
    /echo       the request body, as it came
    anything    b"tls upstream: METHOD TARGET"

`SilentListener` accepts TCP (the kernel does, from its backlog) but never
answers: a TLS handshake with it never completes.
"""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

from tests.support.thread_server import ThreadServer

_PATTERN = bytes(range(256)) * 4096  # 1 MiB


def pattern(size: int) -> bytes:
    """The first `size` bytes of a fixed, non-repeating-per-byte pattern."""
    repeats = size // len(_PATTERN) + 1
    return (_PATTERN * repeats)[:size]


class TlsUpstream(ThreadServer):
    def __init__(self, cert_path: Path, key_path: Path) -> None:
        super().__init__()
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert_path, key_path)
        self.context.sni_callback = self._sni
        self.connections = 0
        self.handshakes: list[dict] = []
        self.failed_handshakes = 0
        self.lock = threading.Lock()
        self.start()

    @staticmethod
    def _sni(sock: ssl.SSLSocket, server_name: str | None, context: ssl.SSLContext) -> None:
        sock.sni = server_name  # read once the handshake is done

    def on_accept(self, conn: socket.socket) -> None:
        with self.lock:
            self.connections += 1
        super().on_accept(conn)

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        try:
            sock = self.context.wrap_socket(conn, server_side=True,
                                            do_handshake_on_connect=False)
            sock.do_handshake()
        except (ssl.SSLError, OSError):
            with self.lock:
                self.failed_handshakes += 1
            conn.close()
            return
        with self.lock:
            self.handshakes.append({"sni": getattr(sock, "sni", None),
                                    "session_reused": sock.session_reused,
                                    "version": sock.version()})
        try:
            self._requests(sock)
        except (OSError, ValueError):
            pass
        finally:
            sock.close()

    def _requests(self, sock: ssl.SSLSocket) -> None:
        buffer = b""
        while True:
            while b"\r\n\r\n" not in buffer:
                data = sock.recv(65536)
                if not data:
                    return
                buffer += data
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            method, target, _ = lines[0].split(b" ", 2)
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(buffer) < length:
                data = sock.recv(65536)
                if not data:
                    return
                buffer += data
            body, buffer = buffer[:length], buffer[length:]
            sock.sendall(self._reply(method, target, body))

    @staticmethod
    def _reply(method: bytes, target: bytes, body: bytes) -> bytes:
        if target.startswith(b"/size/"):
            content = pattern(int(target[6:]))
        elif target == b"/echo":
            content = body
        else:
            content = b"tls upstream: " + method + b" " + target
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(content), content)



class SilentListener:
    """Listens, never accepts: the kernel completes TCP from the backlog, and a
    ClientHello is never answered."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=16)
        self.port = self.listener.getsockname()[1]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self.listener.close()
