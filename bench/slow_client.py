"""The slow-client scenarios: one client reads a 10 MiB reply at 1 MiB/s while others are served.

* `SlowClientScenario`: wrk's keep-alive clients on /real/ while one slow client
  reads /real/10m (the HTTP upstream's static file) at 1 MiB/s; the figure is
  the others' requests/s (and latency).
* `SecondClientScenario`: through uwsgi_pass to a uWSGI running one process,
  the slow client reads /uwsgi1/10m (or /64m); once its reply has started, a
  second client asks for hello world. The figure is how long that second client
  waits. A proxy that buffers the reply, as nginx does (`uwsgi_buffering on`, to
  a temporary file up to 1g), frees the process at once; one that streams it
  holds the process until what is left of the reply fits in the sockets' kernel
  buffers. On loopback those hold about 10 MiB here (tcp_rmem's 32 MiB ceiling
  on the proxy's upstream socket, 4 MiB of send queue towards the client), so
  10 MiB does not show the difference and 64 MiB does.

The slow client sets a 64 KiB receive buffer before it connects, so the kernel's
receive autotuning cannot soak up the reply for it: the proxy sees a reader of
1 MiB/s.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from bench import wrk
from bench.proxies import Proxy
from bench.scenarios import Measurement, NotApplicable

RATE = 1 << 20            # bytes per second
RECEIVE_BUFFER = 64 << 10
READ_SIZE = 16 << 10


def _address(url: str) -> tuple[str, int, str]:
    parts = urllib.parse.urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/"


class SlowReader(threading.Thread):
    """GET `url` again and again on one connection, reading at `rate` bytes/s, until stopped."""

    def __init__(self, url: str, rate: int = RATE) -> None:
        super().__init__(daemon=True)
        self.host, self.port, self.path = _address(url)
        self.rate = rate
        self.received = 0
        self.replies = 0
        self.error = ""
        self.started_reply = threading.Event()
        self._stopping = threading.Event()
        self._socket: socket.socket | None = None

    def run(self) -> None:
        try:
            self._read_replies()
        except OSError as error:
            if not self._stopping.is_set():
                self.error = str(error) or type(error).__name__
        finally:
            self.started_reply.set()  # a failure must not leave a waiter hanging

    def _read_replies(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket = sock
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        sock.settimeout(30)
        sock.connect((self.host, self.port))
        request = f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode()
        buffer = bytearray(READ_SIZE)
        began = time.monotonic()
        while not self._stopping.is_set():
            sock.sendall(request)
            head = b""
            while b"\r\n\r\n" not in head:
                got = sock.recv(READ_SIZE)
                if not got:
                    raise OSError("the proxy closed the connection")
                head += got
            head, _, rest = head.partition(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                status = head.split(b"\r\n", 1)[0]
                raise OSError(f"reply {status!r}")
            length = _content_length(head)
            self.started_reply.set()
            left = length - len(rest)
            self.received += len(rest)
            while left > 0 and not self._stopping.is_set():
                # Pace: never more than `rate` bytes per second since the start.
                ahead = self.received / self.rate - (time.monotonic() - began)
                if ahead > 0:
                    self._stopping.wait(ahead)
                    continue
                count = sock.recv_into(buffer, min(READ_SIZE, left))
                if not count:
                    raise OSError("the proxy closed the connection mid-reply")
                left -= count
                self.received += count
            if left <= 0:
                self.replies += 1

    def stop(self) -> None:
        self._stopping.set()
        if self._socket is not None:
            try:
                self._socket.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.join(10)
        if self._socket is not None:
            self._socket.close()


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise OSError("the 10 MiB reply has no Content-Length")


def get(url: str, timeout: float) -> float:
    """One GET on a new connection; the seconds until the whole reply is in (TimeoutError)."""
    host, port, path = _address(url)
    began = time.monotonic()
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(max(0.01, timeout - (time.monotonic() - began)))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                     .encode())
        reply = b""
        while True:
            sock.settimeout(max(0.01, timeout - (time.monotonic() - began)))
            got = sock.recv(65536)
            if not got:
                break
            reply += got
    if not reply.startswith(b"HTTP/1.1 200"):
        raise OSError(f"second client got {reply[:60]!r}")
    return time.monotonic() - began


def start_slow_reader(url: str) -> SlowReader:
    reader = SlowReader(url)
    reader.start()
    if not reader.started_reply.wait(10) or reader.error:
        reader.stop()
        raise RuntimeError(f"the slow client's reply did not start: {reader.error or 'timeout'}")
    return reader


@dataclass(frozen=True)
class SlowClientScenario:
    key: str
    title: str
    unit: str
    threads: int
    connections: int
    higher_is_better = True
    compare = True
    warmup = True

    def measure(self, proxy: Proxy, seconds: float, log_dir: Path) -> Measurement:
        base = proxy.endpoints.real
        if base is None:
            raise NotApplicable("measured for prefork-proxy and nginx")
        reader = start_slow_reader(base + "10m")
        try:
            result = wrk.run(base, seconds, self.threads, self.connections, log_dir)
        finally:
            reader.stop()
        if reader.error:
            raise RuntimeError(f"the slow client failed: {reader.error}")
        if result.requests == 0:
            raise RuntimeError(f"no request completed ({result.failed} failed)")
        command = (f"{result.command} while bench.slow_client.SlowReader reads "
                   f"{base}10m at 1 MiB/s")
        return Measurement(result.requests_per_second,
                           [result.p50_ms, result.p90_ms, result.p99_ms],
                           command, result.failed, result.requests)


@dataclass(frozen=True)
class SecondClientScenario:
    key: str
    title: str
    unit: str
    mib: int            # the slow client's reply: /uwsgi1/{mib}m
    higher_is_better = False
    compare = False     # a wait in seconds against a 1 s bound, not a ratio
    warmup = False

    def measure(self, proxy: Proxy, seconds: float, log_dir: Path) -> Measurement:
        base = proxy.endpoints.uwsgi_one
        if base is None:
            raise NotApplicable("measured for prefork-proxy and nginx")
        # The one process must be free: a reply cut off by the last run may still hold it.
        get(base, timeout=30)
        cap = seconds + 2
        reader = start_slow_reader(f"{base}{self.mib}m")
        note = ""
        try:
            time.sleep(0.2)  # the reply is under way: the process is writing it
            try:
                waited = get(base, timeout=cap)
            except TimeoutError:
                waited, note = cap, f"not answered within {cap:g} s"
        finally:
            reader.stop()
        if reader.error:
            raise RuntimeError(f"the slow client failed: {reader.error}")
        command = (f"bench.slow_client.get({base!r}) while bench.slow_client.SlowReader reads "
                   f"{base}{self.mib}m at 1 MiB/s (uWSGI --processes 1)")
        return Measurement(waited, None, command, note=note)
