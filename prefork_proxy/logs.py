"""The error log (stderr or a file), reopenable on USR1 for logrotate.

Each line names the process that wrote it: its pid, its role and the
generation it serves, e.g. `[ERROR] 1234 worker gen 3: ...`. The role and
generation are written into the format (`set_process`), not added per record
by a filter: a worker sets them once after fork, the master at each hand-over.
"""

from __future__ import annotations

import logging
import sys

_FORMAT = "%(asctime)s [%(levelname)s] %(process)d {role} gen {generation}: %(message)s"
_DATE_FORMAT = "%Y/%m/%d %H:%M:%S"


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
_process = ("master", 1)  # (role, generation): set_process


def _formatter() -> logging.Formatter:
    role, generation = _process
    return logging.Formatter(_FORMAT.format(role=role, generation=generation), _DATE_FORMAT)


def set_process(role: str, generation: int) -> None:
    """Name this process in every line from now on: "master" or "worker", and the
    generation it serves (the master's changes when a reload takes over)."""
    global _process
    _process = (role, generation)
    if _handler is not None:
        _handler.setFormatter(_formatter())


def setup(error_log: str) -> None:
    """Send the error log to `error_log` ("-" = stderr)."""
    global _handler
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
        _handler.close_file()  # a reload must not leak the old log's descriptor
    _handler = _ReopenableHandler(error_log)
    _handler.setFormatter(_formatter())
    root.addHandler(_handler)
    root.setLevel(logging.INFO)


def reopen() -> None:
    """Reopen the error log at its path (USR1: logrotate renamed the old file)."""
    if _handler is not None:
        _handler.reopen()
