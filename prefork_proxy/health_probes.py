"""One active check of one peer, on a non-blocking socket: connect, ask, judge.

A `Probe` is stepped by the checker's selectors loop (prefork_proxy/health_checker.py)
each time its socket is ready, and answers a `Result` once it knows. Three
kinds, as HAProxy's `check` and `option httpchk`: "tcp" passes once the
connect completes; "http" sends `GET path HTTP/1.1` with Host = the peer's
address and `Connection: close`, and judges the reply's status line by
`expect`; "uwsgi" sends a uwsgi request for path (workers/uwsgi_packet.py, the
proxy's own encoder) and judges the status of the reply head. The deadline
(`timeout`, from the start of the connect) is the caller's to enforce.
"""

from __future__ import annotations

import errno
import os
import re
import selectors
import socket
from dataclasses import dataclass

from prefork_proxy.health_check import HealthCheck
from prefork_proxy.values import Address

# A check reads a status line or a reply head; anything bigger is a failure.
MAX_REPLY_HEAD = 64 << 10
# RFC 9112 §4: status-line = HTTP-version SP status-code SP [ reason-phrase ]
_STATUS_LINE = re.compile(rb"HTTP/\d\.\d (\d{3})(?: |\r?$)")
USER_AGENT = b"prefork-proxy health check"


@dataclass(frozen=True)
class Target:
    """A peer to check: its upstream, its index there, and how to check it."""

    upstream: str
    index: int
    address: Address
    protocol: str  # "tcp", "http" or "uwsgi" (health_check.check_protocol)
    check: HealthCheck


@dataclass(frozen=True)
class Result:
    passed: bool
    reason: str  # for the log line: "status 200", "timeout after 1s", ...


def http_request(target: Target) -> bytes:
    return (b"GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: %s\r\nConnection: close\r\n\r\n"
            % (target.check.path.encode("ascii"), _host(target.address), USER_AGENT))


def uwsgi_request(target: Target, local: tuple | str) -> bytes:
    """A uwsgi packet for GET path, with the vars nginx's uwsgi_params would send."""
    from workers.uwsgi_packet import build_vars, encode_packet  # the child only

    path, _, query = target.check.path.encode("ascii").partition(b"?")
    address = target.address
    remote = (local[0], local[1]) if isinstance(local, tuple) else ("", 0)
    return encode_packet(build_vars(
        method=b"GET", target=target.check.path.encode("ascii"), path=path, query=query,
        version="1.1", headers=[(b"Host", _host(address)), (b"User-Agent", USER_AGENT)],
        remote_addr=remote[0].encode(), remote_port=b"%d" % remote[1],
        server_port=b"%d" % (address.port or 0), server_name=(address.host or "").encode(),
        content_length=None))


def _host(address: Address) -> bytes:
    return b"localhost" if address.is_unix else str(address).encode("ascii")


def reply_status(protocol: str, data: bytes, closed: bool) -> int | None | str:
    """The status of what has been read; None while more is needed; a str says why
    the reply cannot be judged."""
    if protocol == "http":
        end = data.find(b"\n")
        if end < 0:
            return "closed before a status line" if closed else None
        match = _STATUS_LINE.match(data[:end + 1].rstrip(b"\n"))
        return int(match.group(1)) if match else "no HTTP status line"
    from workers.uwsgi_packet import BadReply, find_head_end, parse_reply_head

    end = find_head_end(data)
    if end < 0:
        return "closed before a reply head" if closed else None
    try:
        return parse_reply_head(data[:end]).status
    except BadReply as exc:
        return exc.reason


class Probe:
    """One check in flight. `sock` and `events` are for the selector; `step()` is
    called when the socket is ready and returns a Result once there is one."""

    def __init__(self, target: Target, started: float) -> None:
        self.target, self.started = target, started
        self.deadline = started + target.check.timeout
        self.out = b""
        self.data = b""
        self.phase = "connect"  # then "send", then "read"
        self.events = selectors.EVENT_WRITE
        self.result: Result | None = None
        self.sock: socket.socket | None = None
        try:
            self._connect(target.address)
        except OSError as exc:  # a name that does not resolve, no descriptor left
            self.result = Result(False, f"connect: {exc.strerror or exc}")

    def _connect(self, address: Address) -> None:
        if address.is_unix:
            family, where = socket.AF_UNIX, address.path
        else:
            # An IP literal resolves at once; a host name blocks the checker (only).
            family, _, _, _, where = socket.getaddrinfo(address.host, address.port,
                                                        type=socket.SOCK_STREAM)[0]
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        code = self.sock.connect_ex(where)
        if code not in (0, errno.EINPROGRESS):
            self.result = Result(False, f"connect: {os.strerror(code)}")

    def step(self) -> Result | None:
        if self.phase == "connect":
            return self._connected()
        if self.phase == "send":
            return self._send()
        return self._read()

    def _connected(self) -> Result | None:
        code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            return Result(False, f"connect: {os.strerror(code)}")
        target = self.target
        if target.protocol == "tcp":
            return Result(True, "connected")
        self.out = (http_request(target) if target.protocol == "http"
                    else uwsgi_request(target, self.sock.getsockname()))
        self.phase = "send"
        return self._send()

    def _send(self) -> Result | None:
        try:
            sent = self.sock.send(self.out)
        except BlockingIOError:
            return None
        except OSError as exc:
            return Result(False, f"send: {exc.strerror or exc}")
        self.out = self.out[sent:]
        if not self.out:
            self.phase = "read"
            self.events = selectors.EVENT_READ
        return None

    def _read(self) -> Result | None:
        try:
            chunk = self.sock.recv(65536)
        except BlockingIOError:
            return None
        except OSError as exc:
            return Result(False, f"read: {exc.strerror or exc}")
        self.data += chunk
        status = reply_status(self.target.protocol, self.data, closed=not chunk)
        if status is None:
            if len(self.data) > MAX_REPLY_HEAD:
                return Result(False, "reply head too big")
            return None
        if isinstance(status, str):
            return Result(False, status)
        return Result(self.target.check.passes(status), f"status {status}")

    def timed_out(self) -> Result:
        return Result(False, f"timeout after {self.target.check.timeout:g}s")

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()

