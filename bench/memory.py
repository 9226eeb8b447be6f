"""RSS of a proxy's processes: the master (the process the harness started) and its workers."""

from __future__ import annotations

from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class TreeRss:
    master: int | None        # bytes; None when the proxy is one process
    workers: dict[int, int]   # pid -> bytes, for every process that serves traffic

    @property
    def workers_total(self) -> int:
        return sum(self.workers.values())


def tree_rss(pid: int, single_process: bool = False) -> TreeRss:
    """RSS of `pid` and its descendants. A lone process serves traffic, so it is a worker."""
    root = psutil.Process(pid)
    children = [] if single_process else root.children(recursive=True)
    workers: dict[int, int] = {}
    for child in children:
        try:
            workers[child.pid] = child.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    rss = root.memory_info().rss
    if not workers:
        return TreeRss(None, {pid: rss})
    return TreeRss(rss, workers)


def mib(value: float) -> float:
    return value / (1 << 20)
