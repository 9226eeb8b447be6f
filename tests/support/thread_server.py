"""A loopback TCP server in threads, the base of the tests' hand-made upstreams.

A subclass sets what its `_serve(conn)` needs, then calls `start()`: one thread
accepts (a 0.2 s timeout, so `close()` is seen), and each connection is served
in a thread of its own unless `on_accept` says otherwise.
"""

from __future__ import annotations

import socket
import threading


class ThreadServer:
    def __init__(self, backlog: int = 128) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=backlog)
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.stopped.set()
        self.listener.close()
        self.thread.join(5)

    def on_accept(self, conn: socket.socket) -> None:
        """A new connection: served in a thread of its own."""
        threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.on_accept(conn)
