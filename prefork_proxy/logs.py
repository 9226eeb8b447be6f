"""The error log (stderr or a file), reopenable on USR1 for logrotate."""

from __future__ import annotations

import logging
import sys

_FORMAT = "%(asctime)s [%(levelname)s] %(process)d %(name)s: %(message)s"


class _ReopenableHandler(logging.StreamHandler):
    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(self._open())

    def _open(self):  # noqa: ANN202
        if self.path == "-":
            return sys.stderr
        return open(self.path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115

    def close_file(self) -> None:
        if self.stream is not sys.stderr:
            self.stream.close()

    def reopen(self) -> None:
        """Open the path anew; if that fails, keep writing to the old file."""
        try:
            stream = self._open()
        except OSError as exc:
            logging.getLogger("logs").error("cannot reopen %s: %s", self.path, exc)
            return
        self.acquire()
        try:
            old, self.stream = self.stream, stream
            if old is not sys.stderr:
                old.close()
        finally:
            self.release()


_handler: _ReopenableHandler | None = None


def setup(error_log: str) -> None:
    """Send the error log to `error_log` ("-" = stderr)."""
    global _handler
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
        _handler.close_file()  # a reload must not leak the old log's descriptor
    _handler = _ReopenableHandler(error_log)
    _handler.setFormatter(logging.Formatter(_FORMAT, "%Y/%m/%d %H:%M:%S"))
    root.addHandler(_handler)
    root.setLevel(logging.INFO)


def reopen() -> None:
    """Reopen the error log at its path (USR1: logrotate renamed the old file)."""
    if _handler is not None:
        _handler.reopen()
