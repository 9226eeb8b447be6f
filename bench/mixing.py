"""Cross-client mixing: concurrent keep-alive clients in front of a hostile upstream.

The upstream (tests/support/hostile_upstream.py) sends more bytes than its
framing says on every hostile path: a second, fake response. A proxy that pools
the upstream connection with those bytes waiting hands them to the next client
routed there, as that client's answer. Each request carries its own
`X-Client-Token`; every honest answer carries it back, in a header and at the
start of its body.

* wrong: a complete answer without the client's own token, or with POISON (the
  fake response), or another status than the path gives;
* failed: no complete answer (timeout, close, unreadable bytes) or a 5xx.

After a wrong or failed answer the client opens a new connection, so each count
is a fresh delivery by the proxy, not the echo of an earlier one.

`run_clients` is the load (used by the bench scenario and by
tests/test_cross_client_mixing.py); `measure` starts prefork-proxy or nginx in
front of a fresh hostile upstream and runs it.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench import nginx, procs
from bench.proxies import PreforkProxy, wait_until_serving

REPO = Path(__file__).resolve().parent.parent
PROXIES = ("prefork-proxy", "nginx")
CLIENTS = 8
MAX_HEAD = 65536


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    status: int     # the status the upstream gives this path

    @property
    def has_body(self) -> bool:
        return self.method != "HEAD" and self.status not in (204, 304)


# One request of each hostile kind, and an honest one; each client goes round
# them from its own starting point, so that different kinds meet at once.
REQUESTS: tuple[Request, ...] = (
    Request("GET", "/", 200),
    Request("GET", "/cl-short", 200),
    Request("GET", "/cl-big", 200),
    Request("GET", "/at-8k", 200),
    Request("GET", "/chunked-64k", 200),
    Request("GET", "/chunked-64k?end=73728", 200),  # 8 KiB first read + one 64 KiB read
    Request("HEAD", "/head-body", 200),
    Request("GET", "/204-body", 204),
    Request("GET", "/304-body", 304),
)


@dataclass
class Tally:
    requests: int = 0
    wrong: int = 0
    failed: int = 0
    wrong_by_target: dict[str, int] = field(default_factory=dict)
    samples: list[str] = field(default_factory=list)  # the first few wrong or failed answers

    def add(self, other: Tally) -> None:
        self.requests += other.requests
        self.wrong += other.wrong
        self.failed += other.failed
        for target, count in other.wrong_by_target.items():
            self.wrong_by_target[target] = self.wrong_by_target.get(target, 0) + count
        self.samples.extend(other.samples[:max(0, 10 - len(self.samples))])

    def summary(self) -> str:
        kinds = ", ".join(f"{target} {count}" for target, count in
                          sorted(self.wrong_by_target.items()))
        return (f"{self.wrong} wrong and {self.failed} failed of {self.requests} answers"
                + (f" (wrong by path: {kinds})" if kinds else ""))


class Unreadable(Exception):
    """The bytes are not an HTTP/1.1 response, or the connection ended inside one."""


@dataclass
class Answer:
    status: int
    headers: dict[bytes, bytes]     # lower-case names; a repeated name is joined with b","
    body: bytes
    head: bytes
    closes: bool                    # the connection ends after this answer


class Reader:
    """A buffered reader of HTTP/1.1 responses on a blocking socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise Unreadable("closed")
        self.buffer += data

    def until(self, marker: bytes, limit: int = MAX_HEAD) -> bytes:
        start = 0
        while True:
            end = self.buffer.find(marker, start)
            if end >= 0:
                piece = bytes(self.buffer[:end])
                del self.buffer[:end + len(marker)]
                return piece
            if len(self.buffer) > limit:
                raise Unreadable("no end of line")
            start = max(0, len(self.buffer) - len(marker) + 1)
            self._fill()

    def exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._fill()
        piece = bytes(self.buffer[:size])
        del self.buffer[:size]
        return piece

    def to_close(self) -> bytes:
        with contextlib.suppress(Unreadable):
            while True:
                self._fill()
        piece = bytes(self.buffer)
        self.buffer.clear()
        return piece

    def answer(self, method: str) -> Answer:
        while True:
            head = self.until(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            version, _, rest = lines[0].partition(b" ")
            code = rest[:3]
            if version not in (b"HTTP/1.1", b"HTTP/1.0") or not code.isdigit():
                raise Unreadable(f"status line {lines[0][:60]!r}")
            status = int(code)
            headers: dict[bytes, bytes] = {}
            for line in lines[1:]:
                name, colon, value = line.partition(b":")
                if not colon:
                    raise Unreadable(f"header line {line[:60]!r}")
                name = name.strip().lower()
                value = value.strip()
                headers[name] = headers[name] + b"," + value if name in headers else value
            if 100 <= status < 200:
                continue  # an interim answer: the final one follows
            break
        closes = b"close" in headers.get(b"connection", b"").lower() or version == b"HTTP/1.0"
        if method == "HEAD" or status in (204, 304):
            body = b""
        elif b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            body = self._chunked()
        elif b"content-length" in headers:
            value = headers[b"content-length"]
            if not value.isdigit():
                raise Unreadable(f"Content-Length {value[:30]!r}")
            body = self.exactly(int(value))
        else:
            body, closes = self.to_close(), True
        return Answer(status, headers, body, head, closes)

    def _chunked(self) -> bytes:
        pieces = []
        while True:
            line = self.until(b"\r\n", 1024)
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise Unreadable(f"chunk size {line[:30]!r}") from None
            if size == 0:
                while self.until(b"\r\n", MAX_HEAD):
                    pass  # trailer fields, up to the empty line
                return b"".join(pieces)
            pieces.append(self.exactly(size))
            if self.exactly(2) != b"\r\n":
                raise Unreadable("no CRLF after a chunk")


def judge(request: Request, token: bytes, answer: Answer) -> str:
    """"ok", "wrong" (not this client's answer) or "failed" (the proxy's own error)."""
    if b"POISON" in answer.head or b"POISON" in answer.body:
        return "wrong"
    if answer.status >= 500 and b"x-client-token" not in answer.headers:
        return "failed"
    if answer.status != request.status or answer.headers.get(b"x-client-token") != token:
        return "wrong"
    if request.has_body and not answer.body.startswith(b"token=" + token + b"\n"):
        return "wrong"
    if not request.has_body and answer.body:
        return "wrong"
    return "ok"


def _client(port: int, index: int, deadline: float, max_requests: int, timeout: float,
            requests: tuple[Request, ...]) -> Tally:
    tally = Tally()
    sock: socket.socket | None = None
    reader: Reader | None = None
    host = f"127.0.0.1:{port}".encode()
    sent = 0
    try:
        while sent < max_requests and time.monotonic() < deadline:
            request = requests[(index + sent) % len(requests)]
            token = b"c%d-%d" % (index, sent)
            sent += 1
            if sock is None:
                sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                reader = Reader(sock)
            assert reader is not None
            verdict, detail = "failed", ""
            try:
                sock.sendall(b"%s %s HTTP/1.1\r\nHost: %s\r\nX-Client-Token: %s\r\n\r\n"
                             % (request.method.encode(), request.target.encode(), host, token))
                answer = reader.answer(request.method)
                verdict = judge(request, token, answer)
                detail = (f"{answer.status} token={answer.headers.get(b'x-client-token')!r} "
                          f"body={answer.body[:40]!r}")
                closes = answer.closes
            except (OSError, Unreadable) as error:
                detail = f"{type(error).__name__}: {error}"
                closes = True
            tally.requests += 1
            if verdict != "ok":
                if verdict == "wrong":
                    tally.wrong += 1
                    tally.wrong_by_target[request.target] = (
                        tally.wrong_by_target.get(request.target, 0) + 1)
                else:
                    tally.failed += 1
                if len(tally.samples) < 10:
                    tally.samples.append(f"{verdict}: {request.method} {request.target} "
                                         f"as {token.decode()}: {detail}")
                closes = True  # start clean: the next count is a new delivery
            if closes:
                sock.close()
                sock = reader = None
    finally:
        if sock is not None:
            sock.close()
    return tally


def run_clients(port: int, seconds: float, clients: int = CLIENTS,
                max_requests: int = 1_000_000, timeout: float = 3.0,
                requests: tuple[Request, ...] = REQUESTS) -> Tally:
    """`clients` threads, each on its own keep-alive connections to 127.0.0.1:`port`,
    for `seconds` or `max_requests` requests each; the answers judged and counted."""
    deadline = time.monotonic() + seconds
    results: list[Tally] = [Tally() for _ in range(clients)]

    def work(index: int) -> None:
        results[index] = _client(port, index, deadline, max_requests, timeout, requests)

    threads = [threading.Thread(target=work, args=(index,), daemon=True)
               for index in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + timeout * 4 + 10)
    total = Tally()
    for tally in results:
        total.add(tally)
    return total


def hostile_upstream_command(port: int) -> list[str]:
    return [sys.executable, "-m", "tests.support.hostile_upstream", str(port)]


def _prefork_config(directory: Path, port: int, upstream_port: int, workers: int) -> str:
    return f"""\
workers = {workers}
access_log = "off"
pidfile = "{directory}/prefork-proxy.pid"

[upstream.hostile]
servers = ["127.0.0.1:{upstream_port}"]
keepalive = 32

[[server]]
listen = ["127.0.0.1:{port}"]

  [[server.location]]
  path = "/"
  proxy_pass = "http://hostile"
"""


def _nginx_config(prefix: Path, port: int, upstream_port: int, workers: int) -> str:
    # The same settings as the reference proxy's HTTP route (bench/nginx.py).
    return nginx.main_block(prefix, workers) + f"""\
http {{
{nginx.http_common(prefix)}
    upstream hostile {{
        server 127.0.0.1:{upstream_port};
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://hostile;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
        }}
    }}
}}
"""


@contextlib.contextmanager
def hostile_proxy(name: str, workers: int, work: Path, log_dir: Path) -> Iterator[int]:
    """A fresh hostile upstream and `name` in front of it; yields the proxy's port."""
    upstream_port, port = procs.free_port(), procs.free_port()
    started: list[procs.Process] = []
    try:
        upstream = procs.start(f"upstream-hostile-{upstream_port}",
                               hostile_upstream_command(upstream_port), log_dir, cwd=REPO,
                               nice=procs.UPSTREAM_NICE)
        started.append(upstream)
        procs.wait_for_port(upstream_port, upstream)
        directory = work / f"mixing-{name}-{port}"
        directory.mkdir(parents=True, exist_ok=True)
        if name == "nginx":
            config = _nginx_config(directory, port, upstream_port, workers)
            proxy = nginx.start(f"nginx-mixing-{port}", directory, config, log_dir)
        else:
            path = directory / "prefork-proxy.toml"
            path.write_text(_prefork_config(directory, port, upstream_port, workers))
            proxy = procs.start(f"prefork-proxy-mixing-{port}",
                                [str(PreforkProxy.executable), "-c", str(path)], log_dir)
        started.append(proxy)
        procs.wait_for_port(port, proxy)
        wait_until_serving(f"http://127.0.0.1:{port}/", proxy)
        yield port
    finally:
        for process in reversed(started):
            process.stop()


def measure(name: str, workers: int, work: Path, log_dir: Path, seconds: float,
            clients: int = CLIENTS) -> Tally:
    """`clients` concurrent clients for `seconds` through `name` (prefork-proxy or nginx)."""
    with hostile_proxy(name, workers, work, log_dir) as port:
        return run_clients(port, seconds, clients)
