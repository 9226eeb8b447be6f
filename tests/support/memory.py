"""The RSS of a process, sampled in a thread while a test moves data through it."""

from __future__ import annotations

import threading

import psutil


class RssSampler:
    """Samples a process's RSS every millisecond in a thread; `.peak` is the max."""

    def __init__(self, process: psutil.Process) -> None:
        self.process = process
        self.baseline = process.memory_info().rss
        self.peak = self.baseline
        self.samples = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stopped.wait(0.001):  # a 50 MB transfer can take only ~50 ms
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return
            self.samples += 1

    def __enter__(self) -> RssSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join(5)

    @property
    def growth(self) -> int:
        return self.peak - self.baseline
