"""systemd integration: sd_notify(3), written by hand (one datagram per message).

LISTEN_FDS socket activation is read in listeners.inherited_sockets().
"""

from __future__ import annotations

import os
import socket
import time


def notify(*lines: str) -> bool:
    """Send `KEY=VALUE` lines to $NOTIFY_SOCKET; a no-op outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(lines).encode())
    except OSError:
        return False
    return True


def monotonic_usec() -> str:
    """`MONOTONIC_USEC=` for RELOADING=1 (systemd 253 Type=notify-reload protocol)."""
    return f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"
