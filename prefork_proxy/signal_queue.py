"""The master's signal queue: handlers that only record, and a wake-up pipe.

DESIGN.md, reload rule 1: a handler records the signal and wakes the loop
(`signal.set_wakeup_fd`), with no logging, I/O or locks. Nothing is dropped,
and repeats coalesce: a burst of HUPs is one reload of the newest file. TTIN
and TTOU count, so each is kept.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
from collections import deque
from collections.abc import Iterable

# Each of these is one worker more or fewer: repeats are kept.
COUNTED = frozenset({"TTIN", "TTOU"})


class SignalQueue:
    def __init__(self) -> None:
        self.names: deque[str] = deque(maxlen=256)
        self.wake_read, self.wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def install(self, signals: Iterable[signal.Signals]) -> None:
        for sig in signals:
            signal.signal(sig, self.record)
        signal.set_wakeup_fd(self.wake_write, warn_on_full_buffer=False)

    def record(self, signum: int, frame: object = None) -> None:
        """The handler: only appends a name (a deque append is atomic)."""
        name = signal.Signals(signum).name[3:]
        if name in COUNTED or name not in self.names:
            self.names.append(name)

    def wait(self, timeout: float) -> None:
        """Sleep until a signal arrives or `timeout` passes."""
        if self.names:
            return
        with contextlib.suppress(InterruptedError):
            select.select([self.wake_read], [], [], timeout)
        with contextlib.suppress(BlockingIOError):
            while os.read(self.wake_read, 4096):
                pass

    def pop(self) -> str | None:
        """The oldest queued signal name ("HUP"), or None."""
        return self.names.popleft() if self.names else None

    @property
    def fds(self) -> tuple[int, int]:
        """The pipe's descriptors, which a forked worker closes."""
        return self.wake_read, self.wake_write
