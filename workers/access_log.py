"""The access log, buffered and flushed each second: nginx's `combined` format, or JSON.

  combined: $remote_addr - $remote_user [$time_local] "$request" $status
            $body_bytes_sent "$http_referer" "$http_user_agent"
  json:     one object per line: time ($time_iso8601), request_id, client, method,
            path (the target as received), status, bytes ($body_bytes_sent),
            request_time, upstream_addr, upstream_status, upstream_time (null with
            no upstream reply, where nginx writes "-"), referer, user_agent

Lines are buffered (like nginx's `access_log ... buffer=`) and flushed by the
heartbeat and at exit, so a busy worker does not pay a write() per request.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from json.encoder import encode_basestring_ascii as _json_string
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from workers.client import ClientConnection
    from workers.http1 import Request

# A JSON line's fields are written by hand around json's own string escaper (in C):
# a quarter of the cost of json.dumps() of a dict, measured here (1.0 µs against 4.6).


class AccessLog:
    def __init__(self, target: str, log_format: str = "combined") -> None:
        self.target = target
        self.enabled = target != "off"
        self.json = log_format == "json"
        self.lines: list[str] = []
        self.fd = -1
        self._second = 0
        self._stamp = ""
        self._iso_second = 0
        self._iso_stamp = ""
        self.reopen()

    def reopen(self) -> None:
        if not self.enabled:
            return
        old = self.fd
        if self.target == "-":
            self.fd = sys.stdout.fileno()
        else:
            self.fd = os.open(self.target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if old > 2:
            os.close(old)

    def _time_local(self) -> str:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._stamp = time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(now))
        return self._stamp

    def _time_iso8601(self) -> str:
        now = int(time.time())
        if now != self._iso_second:
            self._iso_second = now
            # nginx's $time_iso8601: 2024-05-01T12:00:00+02:00
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(now))
            self._iso_stamp = f"{stamp[:-2]}:{stamp[-2:]}"
        return self._iso_stamp

    def write(self, remote_addr: str, request_line: bytes, status: int, body_bytes: int,
              referer: bytes | None, user_agent: bytes | None) -> None:
        self.lines.append(
            f'{remote_addr} - - [{self._time_local()}] "{_text(request_line)}" {status} '
            f'{body_bytes} "{_text(referer) if referer else "-"}" '
            f'"{_text(user_agent) if user_agent else "-"}"\n'
        )
        if len(self.lines) >= 256:
            self.flush()

    def write_json(self, conn: ClientConnection, request: Request | None,
                   request_time: float) -> None:
        """One request as a JSON object on a line of its own (the module docstring)."""
        if request is None:  # a head that could not be read
            method = path = referer = agent = "null"
        else:
            method = _json_string(request.method.decode("latin-1"))
            path = _json_string(request.target.decode("latin-1"))
            referer, agent = request.header(b"referer"), request.header(b"user-agent")
            referer = "null" if referer is None else _json_string(referer.decode("latin-1"))
            agent = "null" if agent is None else _json_string(agent.decode("latin-1"))
        request_id = conn.request_id
        peer = conn.upstream_peer
        if conn.upstream_status:
            upstream = (f'{_json_string(str(peer.peer.address)) if peer else "null"},'
                        f'"upstream_status":{conn.upstream_status},"upstream_time":'
                        f'{f"{conn.upstream_time:.3f}" if conn.upstream_time >= 0 else "null"}')
        else:
            upstream = 'null,"upstream_status":null,"upstream_time":null'
        self.lines.append(
            f'{{"time":"{self._time_iso8601()}","request_id":'
            f'{"null" if request_id is None else _json_string(request_id)},'
            f'"client":{_json_string(conn.client_addr)},"method":{method},"path":{path},'
            f'"status":{conn.status},"bytes":{conn.body_bytes},'
            f'"request_time":{request_time:.3f},"upstream_addr":{upstream},'
            f'"referer":{referer},"user_agent":{agent}}}\n'
        )
        if len(self.lines) >= 256:
            self.flush()

    def flush(self) -> None:
        if not self.lines:
            return
        data = "".join(self.lines).encode("utf-8", "replace")
        self.lines.clear()
        with contextlib.suppress(OSError):
            while data:
                data = data[os.write(self.fd, data):]


def _text(value: bytes) -> str:
    # nginx escapes " \ and non-printables as \xHH in log variables.
    text = value.decode("latin-1")
    if text.isprintable() and '"' not in text and "\\" not in text:
        return text
    return "".join(c if c.isprintable() and c not in '"\\' else f"\\x{ord(c):02X}" for c in text)
