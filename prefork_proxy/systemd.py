"""systemd integration: sd_notify(3), written by hand (one datagram per message).

A send never blocks: a NOTIFY_SOCKET whose queue is full (nobody reads it)
must not stop the master from reaping, respawning or reloading. A message that
cannot go out is dropped, and `Notifier` sends the whole current state (the
phase, STATUS, MAINPID) on the next try, so the reader learns where things
stand rather than a history with holes.

LISTEN_FDS socket activation is read in listeners.inherited_sockets().
"""

from __future__ import annotations

import os
import socket
import time

# One phase at a time: READY=1 ends RELOADING=1, and so on (sd_notify(3)).
_PHASES = ("READY", "RELOADING", "STOPPING")


def notify(*lines: str) -> bool:
    """Send `KEY=VALUE` lines to $NOTIFY_SOCKET without blocking; False outside
    systemd or if the datagram could not be sent now (a full queue: EAGAIN)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                           | socket.SOCK_NONBLOCK) as sock:
            sock.connect(address)
            sock.send("\n".join(lines).encode())
    except OSError:  # BlockingIOError included: dropped, the Notifier owes it
        return False
    return True


class Notifier:
    """The master's sd_notify: keeps the state it has announced, and after a
    dropped message sends the whole of it with the next message or `flush()`."""

    def __init__(self) -> None:
        self.state: dict[str, str] = {}
        self.pending = False  # a message was dropped: the state is owed

    def notify(self, *lines: str) -> bool:
        for line in lines:
            key, _, value = line.partition("=")
            if key in _PHASES:
                for phase in _PHASES:
                    self.state.pop(phase, None)
                if key != "RELOADING":
                    self.state.pop("MONOTONIC_USEC", None)  # belongs to a RELOADING=1
            self.state[key] = value
        if self.pending:
            return self.flush()
        sent = notify(*lines)
        self.pending = not sent and bool(os.environ.get("NOTIFY_SOCKET"))
        return sent

    def flush(self) -> bool:
        """Send the current state if a message was dropped; whether nothing is owed."""
        if not self.pending:
            return True
        self.pending = not notify(*(f"{key}={value}" for key, value in self.state.items()))
        return not self.pending


def monotonic_usec() -> str:
    """`MONOTONIC_USEC=` for RELOADING=1 (systemd 253 Type=notify-reload protocol)."""
    return f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"
