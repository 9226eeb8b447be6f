"""Listening sockets: bind them, inherit them, and hand them on.

The master owns every listening socket for its whole life; workers inherit
them across fork(). Sockets can also arrive from outside: from systemd's socket
activation (LISTEN_FDS) or from a parent master that re-executed itself on
USR2 (PREFORK_PROXY_FDS="key=fd,key=fd").
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat

from prefork_proxy.config import Listen

INHERIT_ENV = "PREFORK_PROXY_FDS"
# nginx uses 511 on Linux; the kernel caps it at net.core.somaxconn.
BACKLOG = 511
# A unix listener's file is srw-rw-rw-: its clients need write permission to connect.
UNIX_SOCKET_UMASK = 0o111


class ListenError(Exception):
    """A listener could not be bound; the message is one line for the operator."""


def socket_key(sock: socket.socket) -> str:
    """The config-style key ("127.0.0.1:80", "[::1]:80", "unix:/p") of a bound socket."""
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return f"unix:{name if isinstance(name, str) else name.decode()}"
    if sock.family == socket.AF_INET6:
        return f"[{name[0]}]:{name[1]}"
    return f"{name[0]}:{name[1]}"


def bind(listen: Listen) -> socket.socket:
    """Bind and listen on one address, or raise ListenError with a one-line cause."""
    address = listen.address
    try:
        if address.is_unix:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            _remove_stale_unix_socket(address.path)
            # The file is created with mode 0o777 & ~umask: with this umask it is
            # 0o666 (anyone may connect, as a TCP port) from the moment it exists.
            # A chmod after bind() would leave a window with the operator's umask.
            # The master is single-threaded, so no other file sees this umask.
            umask = os.umask(UNIX_SOCKET_UMASK)
            try:
                sock.bind(address.path)
            finally:
                os.umask(umask)
        else:
            family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                # [::]:80 and 0.0.0.0:80 are separate listeners, as in nginx.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if listen.reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((address.host, address.port))
        sock.listen(BACKLOG)
    except OSError as exc:
        with contextlib.suppress(NameError):
            sock.close()
        reason = {
            errno.EADDRINUSE: "address already in use",
            errno.EACCES: "permission denied",
            errno.EADDRNOTAVAIL: "address not available on this host",
        }.get(exc.errno, exc.strerror or str(exc))
        raise ListenError(f"cannot listen on {listen.key}: {reason}") from None
    sock.set_inheritable(True)
    return sock


def _remove_stale_unix_socket(path: str) -> None:
    """Remove a socket file left by a dead process; refuse to touch anything else."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(errno.EADDRINUSE, f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # nobody answers: stale
    else:
        raise OSError(errno.EADDRINUSE, "address already in use")
    finally:
        probe.close()


def inherited_sockets() -> dict[str, socket.socket]:
    """Sockets passed in by systemd (LISTEN_FDS) or by a parent master (USR2)."""
    found: dict[str, socket.socket] = {}
    if os.environ.get("LISTEN_PID") == str(os.getpid()):
        count = int(os.environ.get("LISTEN_FDS", "0"))
        for fd in range(3, 3 + count):  # sd_listen_fds(3): SD_LISTEN_FDS_START is 3
            sock = socket.socket(fileno=fd)
            sock.set_inheritable(True)
            found[socket_key(sock)] = sock
    for item in filter(None, os.environ.get(INHERIT_ENV, "").split(",")):
        key, _, fd = item.rpartition("=")
        sock = socket.socket(fileno=int(fd))
        sock.set_inheritable(True)
        found[key] = sock
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", INHERIT_ENV):
        os.environ.pop(name, None)
    return found


def inherit_env(sockets: dict[str, socket.socket]) -> str:
    """The PREFORK_PROXY_FDS value that hands `sockets` to a re-executed master."""
    return ",".join(f"{key}={sock.fileno()}" for key, sock in sockets.items())


def close(key: str, sock: socket.socket, unlink: bool = True) -> None:
    """Close a listener, removing its socket file if `unlink` (only the process
    that bound a unix socket removes its file: not a socket systemd passed in)."""
    sock.close()
    if unlink and key.startswith("unix:"):
        with contextlib.suppress(OSError):
            os.unlink(key[5:])
