"""The access log in nginx's `combined` format, buffered and flushed each second.

  $remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent
  "$http_referer" "$http_user_agent"

Lines are buffered (like nginx's `access_log ... buffer=`) and flushed by the
heartbeat and at exit, so a busy worker does not pay a write() per request.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time


class AccessLog:
    def __init__(self, target: str) -> None:
        self.target = target
        self.enabled = target != "off"
        self.lines: list[str] = []
        self.fd = -1
        self._second = 0
        self._stamp = ""
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

    def write(self, remote_addr: str, request_line: bytes, status: int, body_bytes: int,
              referer: bytes | None, user_agent: bytes | None) -> None:
        self.lines.append(
            f'{remote_addr} - - [{self._time_local()}] "{_text(request_line)}" {status} '
            f'{body_bytes} "{_text(referer) if referer else "-"}" '
            f'"{_text(user_agent) if user_agent else "-"}"\n'
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
