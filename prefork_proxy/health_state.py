"""One peer's check state: HAProxy's health counter, rise and fall.

The counter runs from 0 to rise + fall - 1 and the peer is UP while it is at
least `rise` (HAProxy's check.c). An UP peer sits at the top, so `fall`
failures in a row take it DOWN; a DOWN peer drops to 0, so `rise` successes in
a row bring it back. A peer starts UP one step above the line (HAProxy's
default `init-state up`): it takes traffic at once, and the first failed check
takes it out, without waiting for `fall` of them.
"""

from __future__ import annotations


class PeerHealth:
    __slots__ = ("rise", "fall", "health", "up")

    def __init__(self, rise: int, fall: int, health: int | None = None,
                 up: bool = True) -> None:
        self.rise, self.fall = rise, fall
        self.health = rise if health is None else min(health, rise + fall - 1)
        self.up = up

    def record(self, passed: bool) -> bool:
        """Count one check's result; True when the peer changed state."""
        top = self.rise + self.fall - 1
        if passed:
            if self.health < top:
                self.health += 1
            if self.health >= self.rise:
                self.health = top
                if not self.up:
                    self.up = True
                    return True
            return False
        if self.up and self.health > self.rise:
            self.health -= 1
            return False
        self.health = 0
        if self.up:
            self.up = False
            return True
        return False
