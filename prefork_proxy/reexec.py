"""USR2: the binary upgrade, as nginx does it.

The master forks and execs a new master (`python -m prefork_proxy -c CONFIG`)
that inherits every listening socket, named in PREFORK_PROXY_FDS. The old
pidfile becomes `PIDFILE.oldbin`. The old master keeps its workers until it is
told WINCH (drain them) or QUIT; if the new master exits first, the old one
takes its pidfile back and keeps serving.
"""

from __future__ import annotations

import os
import socket
import sys

from prefork_proxy import listeners
from prefork_proxy.pidfile import Pidfile

# Set in the new master's environment: it announces itself to systemd with
# MAINPID= once it serves (NotifyAccess=all lets a child of the main process do so).
HANDOVER_ENV = "PREFORK_PROXY_HANDOVER"


def start_new_master(config_path: str, sockets: dict[str, socket.socket],
                     pidfile: Pidfile) -> int:
    """Fork+exec a new master that inherits `sockets`; returns its pid."""
    pidfile.rename_to_oldbin()
    for sock in sockets.values():
        sock.set_inheritable(True)
    environ = dict(os.environ)
    environ[listeners.INHERIT_ENV] = listeners.inherit_env(sockets)
    environ[HANDOVER_ENV] = str(os.getpid())
    argv = [sys.executable, "-m", "prefork_proxy", "-c", config_path]
    try:
        pid = os.fork()
    except OSError:
        pidfile.restore_from_oldbin(os.getpid())
        raise
    if pid == 0:
        try:
            os.execve(sys.executable, argv, environ)
        finally:
            os._exit(127)
    return pid


def is_handover() -> bool:
    """Whether this master was started by an old master's USR2 (read once, at start)."""
    return os.environ.pop(HANDOVER_ENV, None) is not None
