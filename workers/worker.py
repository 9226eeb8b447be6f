"""The worker process after fork: title, privileges, servers, heartbeat, drain.

gevent is first imported here, in the child, so the master never runs a hub.
No monkey-patching: all I/O goes through gevent's own socket, server and pool.
Signals: QUIT drains (stop accepting, finish in-flight requests and tunnels,
close idle keep-alive connections); TERM/INT stop now; USR1 reopens logs.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import pwd
import select
import signal
import socket
import time

import gevent
import gevent.event
import gevent.pool
from gevent import socket as gsocket
from gevent.server import StreamServer
from setproctitle import setproctitle

from prefork_proxy import logs
from prefork_proxy.config import Config, Server
from prefork_proxy.scoreboard import DRAINING, READY, Scoreboard
from workers import upstreams
from workers.access_log import AccessLog
from workers.client import ClientConnection
from workers.routing import Router
from workers.stats import stats

log = logging.getLogger("worker")
HEARTBEAT_INTERVAL = 1.0


class Site:
    """What a connection on one listener needs: its routes, its worker, the log."""

    __slots__ = ("router", "worker", "access_log")

    def __init__(self, server: Server, worker: Worker) -> None:
        self.router = Router(server.locations)
        self.worker = worker
        self.access_log = worker.access_log

    def log_request(self, conn: ClientConnection, request) -> None:  # noqa: ANN001
        access_log = self.access_log
        if not access_log.enabled:
            return
        if request is None:
            line, referer, agent = b"-", None, None
        else:
            line = b"%s %s HTTP/%s" % (request.method, request.target, request.version.encode())
            referer, agent = request.header(b"referer"), request.header(b"user-agent")
        access_log.write(conn.client_addr, line, conn.status, conn.body_bytes, referer, agent)


class Worker:
    def __init__(self, config: Config, sockets: dict[str, socket.socket],
                 scoreboard: Scoreboard, slot: int) -> None:
        self.config = config
        self.sockets = sockets
        self.scoreboard = scoreboard
        self.slot = slot
        self.draining = False
        self.idle: set[ClientConnection] = set()
        self.stopped = gevent.event.Event()
        self.access_log = AccessLog(config.access_log)
        self.connections = gevent.pool.Pool(config.worker_connections or None)
        self.servers: list[StreamServer] = []

    def run(self) -> int:
        drop_privileges(self.config.user, self.config.group)
        for server in self.config.servers:
            site = Site(server, self)
            for listen in server.listen:
                self.servers.append(self._serve(self.sockets[listen.key], site))
        gevent.signal_handler(signal.SIGQUIT, self.drain)
        gevent.signal_handler(signal.SIGTERM, self.stop_now)
        gevent.signal_handler(signal.SIGINT, self.stop_now)
        gevent.signal_handler(signal.SIGUSR1, self.reopen_logs)
        heartbeat = gevent.spawn(self._heartbeat)
        self.scoreboard.set_state(self.slot, READY)  # servers accept: ready (rule 3)
        self.stopped.wait()
        heartbeat.kill()
        self._beat()
        self.access_log.flush()
        return 0

    def _serve(self, listener: socket.socket, site: Site) -> StreamServer:
        sock = gsocket.socket(listener.family, listener.type, fileno=os.dup(listener.fileno()))
        tcp = listener.family != socket.AF_UNIX

        def handle(client_sock: gsocket.socket, address: object) -> None:
            if tcp:
                client_sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            ClientConnection(client_sock, address, site).serve()

        server = StreamServer(sock, handle, spawn=self.connections)
        server.start()
        return server

    def _beat(self) -> None:
        self.scoreboard.beat(self.slot, time.monotonic(), stats.as_tuple())

    def _heartbeat(self) -> None:
        master = os.getppid()
        while True:
            self._beat()
            self.access_log.flush()
            if os.getppid() != master and not self.draining:
                log.error("the master (pid %d) is gone; draining", master)
                self.drain()
            gevent.sleep(HEARTBEAT_INTERVAL)

    def drain(self) -> None:
        """Stop accepting; finish in-flight work; close idle keep-alive connections."""
        if self.draining:
            return
        self.draining = True
        self.scoreboard.set_state(self.slot, DRAINING)
        for server in self.servers:
            server.close()
        for conn in list(self.idle):
            _close_if_idle(conn)
        upstreams.close_idle_connections()
        gevent.spawn(self._finish_drain)

    def _finish_drain(self) -> None:
        self.connections.join()
        self.stopped.set()

    def stop_now(self) -> None:
        self.draining = True
        for server in self.servers:
            server.close()
        self.connections.kill(block=False)
        self.stopped.set()

    def reopen_logs(self) -> None:
        logs.reopen()
        self.access_log.flush()
        self.access_log.reopen()


def _close_if_idle(conn: ClientConnection) -> None:
    """Close a keep-alive connection that waits for its next request, unless that
    request has started to arrive (then it is served, with Connection: close)."""
    if conn.reader.started:
        return
    with contextlib.suppress(OSError, ValueError):
        if select.select([conn.sock.fileno()], (), (), 0)[0]:
            return
        conn.sock.shutdown(socket.SHUT_RD)  # its recv() returns EOF: a clean close


def drop_privileges(user: str | None, group: str | None) -> None:
    """Become `user`/`group` after the master bound the sockets, as nginx's workers do."""
    if not user and not group:
        return
    if os.geteuid() != 0:
        log.warning("user/group set but the master is not root; keeping uid %d", os.geteuid())
        return
    entry = pwd.getpwnam(user) if user else None
    gid = grp.getgrnam(group).gr_gid if group else (entry.pw_gid if entry else os.getgid())
    os.setgroups([])
    os.setgid(gid)
    if entry:
        os.setuid(entry.pw_uid)


def run_worker(config: Config, sockets: dict[str, socket.socket], scoreboard: Scoreboard,
               slot: int, number: int, generation: int) -> int:
    """The worker's whole life; returns its exit status."""
    setproctitle(f"prefork-proxy: worker {number} [gen {generation}]")
    return Worker(config, sockets, scoreboard, slot).run()
