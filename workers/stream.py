"""Lean non-blocking sockets, built on gevent's hub: persistent watchers and deadlines.

A Stream wraps a non-blocking socket with its read watcher (kept started
between requests: stopping and restarting it costs libev an epoll_ctl), a
write watcher made on first need, and a deadline. The driver
(workers/driver.py) reacts to the watchers in callbacks; only `sendall`
parks a greenlet, for the tunnel's first bytes (workers/tunnel.py).

Timeouts are deadlines, checked by one sweeper greenlet per worker every
SWEEP_INTERVAL (nginx keeps a timer tree; the coarser resolution is what buys
the cheap wait). Past its deadline the sweeper calls `throw(TimeoutError)` on
the stream's waiter, in the hub: a greenlet (sendall) or a driver's alarm.
"""

from __future__ import annotations

import _socket as _csocket
import contextlib
import ipaddress
import socket
import time
from collections.abc import Callable
from typing import Any

import gevent
from gevent import get_hub, getcurrent

from prefork_proxy.values import Address

SWEEP_INTERVAL = 0.25
# A libev io watcher (gevent's loop.io) and what a deadline calls (`throw`): a
# greenlet, or a driver's alarm.
Watcher = Any
Alarm = Any
_READ, _WRITE = 1, 2
_monotonic = time.monotonic
_waiting: set[Stream] = set()


class CallbackAlarm:
    """A deadline's target for code with no greenlet (the driver, the HTTP/2
    session): the sweeper calls `throw(exc)`, in the hub, which calls `handler`."""

    __slots__ = ("throw",)

    def __init__(self, handler: Callable[[BaseException], None]) -> None:
        self.throw = handler


class Stream:
    __slots__ = ("sock", "hub", "read_event", "_write_event", "timeout", "deadline",
                 "waiter", "idle_handler", "on_readable", "__weakref__")

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
        # Called (in the hub) if the stream turns readable while nobody reads it:
        # how an idle pooled upstream connection learns that it was closed.
        self.idle_handler = None
        # Called (in the hub) on readable, the watcher left running: how the
        # driver is told, with no watcher stop and start (no epoll_ctl) per request.
        self.on_readable = None

    # -- waiting -------------------------------------------------------------------
    def _readable(self) -> None:
        handler = self.on_readable
        if handler is not None:
            handler()
            return
        self.read_event.stop()
        if self.idle_handler is not None:
            self.idle_handler(self)

    def _wait(self, watcher: Watcher) -> None:
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

    def set_deadline(self, timeout: float | None, target: Alarm) -> None:
        """For a wait made in callbacks (workers/driver.py): the sweeper calls
        `target.throw(TimeoutError)` in the hub once `timeout` has passed. Called
        again, it moves the deadline."""
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
    def write_event(self) -> Watcher:
        if self._write_event is None:
            self._write_event = self.hub.loop.io(self.sock.fileno(), _WRITE)
        return self._write_event

    def settimeout(self, timeout: float | None) -> None:
        self.timeout = timeout

    def sendall(self, data: bytes | memoryview) -> None:
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


_numeric: dict[str, bool] = {}
# The C socket type: an upstream connection needs none of socket.socket's Python
# layer (makefile, dup bookkeeping), whose __init__ alone cost a microsecond or
# two per uwsgi request. SOCK_NONBLOCK makes it non-blocking without an ioctl.
_socket = _csocket.socket
_NONBLOCKING_STREAM = socket.SOCK_STREAM | socket.SOCK_NONBLOCK


def family_and_target(address: Address) -> tuple[int, object] | None:
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
