"""Generation bookkeeping for reloads (DESIGN.md, reload protocol).

Generation numbers only grow. `current` is the one that serves; `pending` is
a reload whose workers are starting and that takes over once all of them are
ready. Pure state with no processes in it, so the rules can be unit tested:
a newer reload supersedes a pending one, and at most `max_draining` old
generations that have served drain at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prefork_proxy.config import Config

# DESIGN.md, reload rule 5: at most two old generations drain at once.
MAX_DRAINING_GENERATIONS = 2


@dataclass
class PendingReload:
    config: Config
    number: int
    deadline: float  # monotonic time by which all its workers must be ready


@dataclass
class Generations:
    current: int = 1
    pending: PendingReload | None = None
    serving: bool = False  # some generation has served: boot failures are no longer fatal
    max_draining: int = MAX_DRAINING_GENERATIONS
    served: list[int] = field(default_factory=lambda: [1])  # generations that took over
    last_number: int = 1

    def start(self, config: Config, deadline: float) -> int:
        """Register a new pending generation (replacing any pending one); its number."""
        self.last_number += 1
        self.pending = PendingReload(config, self.last_number, deadline)
        return self.last_number

    def take_over(self) -> int:
        """The pending generation becomes current; returns the previous current."""
        assert self.pending is not None
        old, self.current = self.current, self.pending.number
        self.pending = None
        self.served.append(self.current)
        self.serving = True
        return old

    def too_many_draining(self, alive: set[int]) -> list[int]:
        """Old generations that served and still have workers, beyond the newest
        `max_draining` of them: these are stopped at once.

        A superseded reload never served, so it does not count: its workers drain
        too, but they hold at most the few connections accepted while it was
        pending.
        """
        draining = [n for n in self.served if n in alive and n < self.current]
        self.served = [n for n in self.served if n in alive or n == self.current]
        return draining[:-self.max_draining] if len(draining) > self.max_draining else []
