"""An HTTP peer for the health-check tests, in threads of the test process.

It counts the requests it reads by path, so a test tells check requests from
proxied ones. While `hung` is set it accepts and reads each request but never
answers (a hung application); otherwise it answers `200` with the body
`peer PORT` (or `status` when set) and closes.
"""

from __future__ import annotations

import collections
import socket
import threading

from tests.support.thread_server import ThreadServer


class HealthPeer(ThreadServer):
    def __init__(self, hung: bool = False) -> None:
        super().__init__()
        self.hung = hung
        self.paths: collections.Counter[str] = collections.Counter()
        self.lock = threading.Lock()
        self.start()

    def count(self, path: str) -> int:
        with self.lock:
            return self.paths[path]

    def proxied(self, check_path: str) -> int:
        """Requests for anything but the check path."""
        with self.lock:
            return sum(n for path, n in self.paths.items() if path != check_path)

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(0.2)
            data = b""
            while b"\r\n\r\n" not in data and not self.stopped.is_set():
                try:
                    more = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not more:
                    return
                data += more
            path = data.split(b" ", 2)[1].decode() if data.count(b" ") >= 2 else "?"
            with self.lock:
                self.paths[path] += 1
            if self.hung:
                while not self.stopped.is_set():  # hold it, silent, until it closes
                    try:
                        if not conn.recv(65536):
                            return
                    except TimeoutError:
                        continue
                    except OSError:
                        return
                return
            body = f"peer {self.port}".encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                         % (len(body), body))
