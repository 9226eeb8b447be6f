"""WebSocket upstreams for the tests, started per test on free ports.

* `start_ws_echo(started, tmp_path)`: the `websockets` echo server
  (`ws_echo_server.py`) as a subprocess; it is appended to `started`, so the
  conftest fixture kills it at teardown.
* `ScriptedUpstream(answer)`: a one-connection-at-a-time raw TCP upstream in a
  thread of the test process. It reads one request head, records it, sends
  `answer` in a single write (so a test controls exactly which bytes follow a
  101 head), then echoes whatever arrives until the peer closes. A small
  `receive_buffer` makes it a slow reader.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
from pathlib import Path

from tests.support.configs import one_location
from tests.support.processes import Process, free_port, port_open, wait_for


class WsEcho(Process):
    """tests/support/ws_echo_server.py on a free port."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        super().__init__([sys.executable, "-m", "tests.support.ws_echo_server", str(self.port)],
                         log_path)
        wait_for(lambda: port_open(self.port) or not self.alive(),
                 message="the WebSocket echo upstream to listen")
        if not self.alive():
            raise AssertionError(f"the echo upstream exited:\n{self.log()}")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def start_ws_echo(started: list[Process], tmp_path: Path) -> WsEcho:
    server = WsEcho(tmp_path / f"ws-echo-{len(started)}.log")
    started.append(server)
    return server


class ScriptedUpstream:
    """Answers every connection's request head with fixed bytes, then echoes."""

    def __init__(self, answer: bytes, receive_buffer: int = 0) -> None:
        self.answer = answer
        self.heads: list[bytes] = []
        self.listener = socket.socket()
        if receive_buffer:  # set before listen(): accepted sockets inherit it
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed by close()
            with conn:
                self._answer(conn)

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        head = b""
        try:
            while b"\r\n\r\n" not in head:
                more = conn.recv(65536)
                if not more:
                    return
                head += more
            head, _, rest = head.partition(b"\r\n\r\n")
            self.heads.append(head)
            conn.sendall(self.answer + rest)
            while data := conn.recv(65536):
                conn.sendall(data)
        except OSError:
            return

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() in the thread
        self.listener.close()


def proxy_config(upstream: str, location: str = "", top: str = "") -> str:
    """A one-worker proxy config for `start_proxy` with one `proxy_pass` location."""
    return one_location(upstream, top=f'workers = 1\naccess_log = "off"\n{top}',
                        location=location)
