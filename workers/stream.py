"""Lean non-blocking sockets for the hot path, built on gevent's hub.

gevent's socket objects take several Python-level steps per call: a Timeout
object for every blocking call on a socket with a timeout, and a getsockopt()
per sendall(). Measured here, those steps cost more than our whole HTTP
handling. A Stream tries the syscall first and only on EAGAIN parks the greenlet
on a persistent libev watcher through `hub.wait`, gevent's own primitive.

Timeouts are deadlines, checked by one sweeper greenlet per worker every
SWEEP_INTERVAL (nginx keeps a timer tree; the coarser resolution is what buys
the cheap wait). A stream waiting past its deadline gets TimeoutError thrown
into its greenlet from the hub, exactly where a gevent Timeout would land.
The API mirrors the socket methods the data path uses.
"""

from __future__ import annotations

import _socket as _csocket
import contextlib
import errno
import ipaddress
import os
import socket
import time

import gevent
from gevent import get_hub, getcurrent
from gevent import socket as gsocket
from gevent.hub import Waiter

from prefork_proxy.values import Address

SWEEP_INTERVAL = 0.25
_READ, _WRITE = 1, 2
_monotonic = time.monotonic
_waiting: set[Stream] = set()


class Stream:
    __slots__ = ("sock", "hub", "read_event", "_write_event", "timeout", "deadline",
                 "waiter", "read_waiter", "idle_handler", "on_readable", "__weakref__")

    def __init__(self, sock: socket.socket, timeout: float | None = None) -> None:
        if sock.gettimeout() != 0.0:  # made non-blocking already (connect) saves an ioctl
            sock.setblocking(False)
        self.sock = sock
        self.hub = hub = get_hub()
        fileno = sock.fileno()
        self.read_event = hub.loop.io(fileno, _READ)
        self._write_event = None  # made on first need: most sends never wait
        self.timeout = timeout
        self.deadline = 0.0
        self.waiter = None
        self.read_waiter: Waiter | None = None
        # Called (in the hub) if the stream turns readable while nobody reads it:
        # how an idle pooled upstream connection learns that it was closed.
        self.idle_handler = None
        # Called (in the hub) on readable when no greenlet waits, the watcher left
        # running: how workers/lane.py is told, with no watcher stop and start
        # (and so no epoll_ctl) per request.
        self.on_readable = None

    # -- waiting -------------------------------------------------------------------
    def _wait_read(self) -> None:
        """Park until readable. The read watcher stays started between waits:
        stopping and restarting it costs libev an epoll_ctl per wait, and a
        request/response exchange waits twice. `_readable` stops it if data
        comes while nobody waits, so it never spins."""
        waiter = Waiter(self.hub)
        self.read_waiter = waiter
        if not self.read_event.active:
            self.read_event.start(self._readable)
        if self.timeout is None:
            try:
                waiter.get()
            finally:
                self.read_waiter = None
            return
        self.deadline = _monotonic() + self.timeout
        self.waiter = getcurrent()
        _waiting.add(self)
        try:
            waiter.get()
        finally:
            _waiting.discard(self)
            self.waiter = self.read_waiter = None

    def _readable(self) -> None:
        waiter = self.read_waiter
        if waiter is not None:
            self.read_waiter = None
            waiter.switch(None)
            return
        handler = self.on_readable
        if handler is not None:
            handler()
            return
        self.read_event.stop()
        if self.idle_handler is not None:
            self.idle_handler(self)

    def _wait(self, watcher) -> None:  # noqa: ANN001
        if self.timeout is None:
            self.hub.wait(watcher)
            return
        self.deadline = _monotonic() + self.timeout
        self.waiter = getcurrent()
        _waiting.add(self)
        try:
            self.hub.wait(watcher)
        finally:
            _waiting.discard(self)
            self.waiter = None

    def set_deadline(self, timeout: float | None, target) -> None:  # noqa: ANN001
        """For a wait made in callbacks (workers/lane.py): the sweeper calls
        `target.throw(TimeoutError)` in the hub once `timeout` has passed."""
        if timeout is None:
            return
        self.deadline = _monotonic() + timeout
        self.waiter = target
        _waiting.add(self)

    def clear_deadline(self) -> None:
        if self.waiter is not None:
            _waiting.discard(self)
            self.waiter = None

    @property
    def write_event(self):  # noqa: ANN201
        if self._write_event is None:
            self._write_event = self.hub.loop.io(self.sock.fileno(), _WRITE)
        return self._write_event

    def wait_connected(self) -> None:
        """Finish a non-blocking connect: return once connected, raise OSError
        if it failed (TimeoutError past the stream's timeout)."""
        sock = self.sock
        error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if not error and not _connected(sock):
            self._wait(self.write_event)
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            raise OSError(error, os.strerror(error))

    # -- the socket methods the data path uses -------------------------------------
    def settimeout(self, timeout: float | None) -> None:
        self.timeout = timeout

    def recv(self, size: int, flags: int = 0) -> bytes:
        while True:
            try:
                return self.sock.recv(size, flags)
            except BlockingIOError:
                self._wait_read()

    def recv_when_ready(self, size: int) -> bytes:
        """recv() for data that cannot have arrived yet (a reply to what we just
        sent, the next request after a response): wait first, which saves the
        EAGAIN round trip a plain recv() would make."""
        self._wait_read()
        try:
            return self.sock.recv(size)
        except BlockingIOError:
            return self.recv(size)

    def recv_nowait(self, size: int) -> bytes | None:
        """What can be read right now: bytes, b"" at EOF, or None if nothing is there."""
        try:
            return self.sock.recv(size)
        except BlockingIOError:
            return None

    def recv_into(self, buffer, size: int = 0) -> int:  # noqa: ANN001
        while True:
            try:
                return self.sock.recv_into(buffer, size)
            except BlockingIOError:
                self._wait_read()

    def send(self, data) -> int:  # noqa: ANN001
        while True:
            try:
                return self.sock.send(data)
            except BlockingIOError:
                self._wait(self.write_event)

    def sendall(self, data) -> None:  # noqa: ANN001
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        if sent == len(data):
            return
        view = memoryview(data)[sent:]
        while view:
            self._wait(self.write_event)
            try:
                view = view[self.sock.send(view):]
            except BlockingIOError:
                pass

    def fileno(self) -> int:
        return self.sock.fileno()

    def setsockopt(self, *args: int) -> None:
        self.sock.setsockopt(*args)

    def shutdown(self, how: int) -> None:
        self.sock.shutdown(how)

    def close(self) -> None:
        self.read_event.close()
        if self._write_event is not None:
            self._write_event.close()
        self.sock.close()

    def alive(self) -> bool:
        """An idle keep-alive connection has nothing to read: no EOF, no stray bytes."""
        try:
            self.sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return True
        except OSError:
            return False
        return False


def accepted(sock: gsocket.socket) -> Stream:
    """Take over a socket accepted by gevent's StreamServer."""
    return Stream(socket.socket(fileno=sock.detach()))


_numeric: dict[str, bool] = {}
# The C socket type: an upstream connection needs none of socket.socket's Python
# layer (makefile, dup bookkeeping), whose __init__ alone cost a microsecond or
# two per uwsgi request. SOCK_NONBLOCK makes it non-blocking without an ioctl.
_socket = _csocket.socket
_NONBLOCKING_STREAM = socket.SOCK_STREAM | socket.SOCK_NONBLOCK


def _family_and_target(address: Address) -> tuple[int, object] | None:
    """The socket family and connect() target of a unix or numeric address;
    None for a host name, which needs the resolver."""
    if address.is_unix:
        return socket.AF_UNIX, address.path
    host = address.host
    numeric = _numeric.get(host)
    if numeric is None:
        try:
            ipaddress.ip_address(host)
            numeric = _numeric[host] = True
        except ValueError:
            numeric = _numeric[host] = False
    if not numeric:
        return None
    return (socket.AF_INET6 if ":" in host else socket.AF_INET), (host, address.port)


def connect(address: Address, timeout: float, nodelay: bool = True) -> Stream:
    """Connect to a peer; raises TimeoutError or OSError like a socket would.

    `nodelay=False` leaves Nagle on, for a connection that carries one write:
    TCP_NODELAY only matters when a second write follows a small first one.
    """
    known = _family_and_target(address)
    if known is None:  # a name: gevent's resolver, so a slow DNS answer blocks only this greenlet
        family, _, _, _, target = gsocket.getaddrinfo(
            address.host, address.port, 0, socket.SOCK_STREAM)[0]
    else:
        family, target = known
    sock = _socket(family, _NONBLOCKING_STREAM)
    if nodelay and family != socket.AF_UNIX:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    stream = Stream(sock, timeout)
    try:
        error = sock.connect_ex(target)
        if error in (errno.EINPROGRESS, errno.EAGAIN):
            # On loopback the handshake has usually finished (or failed) by now:
            # wait_connected looks before parking the greenlet for a loop iteration.
            stream.wait_connected()
        elif error:
            raise OSError(error, os.strerror(error))
    except BaseException:
        stream.close()
        raise
    return stream


def start_connect(address: Address) -> _csocket.socket | None:
    """Begin a non-blocking connect and return at once, for a caller that sends
    straight away (workers/lane_uwsgi.py): on loopback the handshake is done
    by the time connect() returns, and a send() on a socket still connecting
    fails with EAGAIN, on a refused one with ECONNREFUSED. None when the
    address is a name (it needs the resolver) or the connect failed at once.
    """
    known = _family_and_target(address)
    if known is None:
        return None
    family, target = known
    sock = _socket(family, _NONBLOCKING_STREAM)
    if sock.connect_ex(target) not in (0, errno.EINPROGRESS):  # unix EAGAIN: backlog full
        sock.close()
        return None
    return sock


def _connected(sock: socket.socket) -> bool:
    try:
        sock.getpeername()
    except OSError:
        return False
    return True


def _expire(stream: Stream, waiter: object) -> None:
    # Runs in the hub: the stream may have been woken since the sweep looked.
    if stream.waiter is waiter and waiter is not None and _monotonic() >= stream.deadline:
        with contextlib.suppress(Exception):
            waiter.throw(TimeoutError("timed out"))


def sweep_timeouts() -> None:
    """The worker's timeout sweeper: runs for the worker's whole life."""
    loop = get_hub().loop
    while True:
        gevent.sleep(SWEEP_INTERVAL)
        if not _waiting:
            continue
        now = _monotonic()
        for stream in [s for s in _waiting if s.deadline <= now]:
            loop.run_callback(_expire, stream, stream.waiter)
