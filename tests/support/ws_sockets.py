"""What the kernel knows about a listening socket, read from /proc (Linux).

* `accept_queue(port)`: connections the kernel has completed but no process has
  accepted yet (the Recv-Q that `ss -lt` shows for a listener).
* `listener_fds(pid, port)`: how many of a process's descriptors refer to the
  listening socket on `port`. A worker holds two (the one inherited from the
  master and the copy its server accepts on) until it stops accepting.
"""

from __future__ import annotations

import os


def _listeners(port: int) -> list[tuple[int, int]]:
    """(accept queue length, inode) of each TCP listener on 127.0.0.1/[::1]:port."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as lines:
                next(lines)
                for line in lines:
                    fields = line.split()
                    local, state, queues, inode = fields[1], fields[3], fields[4], fields[9]
                    if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                        # For a listener, rx_queue is the current accept backlog.
                        found.append((int(queues.split(":")[1], 16), int(inode)))
        except FileNotFoundError:
            continue
    return found


def accept_queue(port: int) -> int:
    return sum(queue for queue, _ in _listeners(port))


def listener_fds(pid: int, port: int) -> int:
    targets = {f"socket:[{inode}]" for _, inode in _listeners(port)}
    count = 0
    fd_dir = f"/proc/{pid}/fd"
    for name in os.listdir(fd_dir):
        try:
            if os.readlink(f"{fd_dir}/{name}") in targets:
                count += 1
        except OSError:
            continue
    return count
