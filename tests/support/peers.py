"""Upstream peers that misbehave on purpose, or restart in place on a given port."""

from __future__ import annotations

import socket
import sys
import threading
from pathlib import Path

from tests.support.processes import ROOT, Process, port_open, wait_for


def start_upstream_on(port: int, log_path: Path) -> Process:
    """tests/support/http_upstream.py on a given port (to restart one in place)."""
    process = Process([sys.executable, str(ROOT / "tests/support/http_upstream.py"), str(port)],
                      log_path)
    wait_for(lambda: port_open(port), message="the upstream to listen")
    return process


class ClosingPeer:
    """A peer that accepts each connection, reads the request head and closes without
    answering (a crashed application), in a thread; `.accepted` counts connections."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            with conn:
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data and (more := conn.recv(65536)):
                    data += more

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        self.listener.close()
