"""The worker process after fork: title, privileges, servers, heartbeat, drain.

gevent is first imported here, in the child, so the master never runs a hub.
No monkey-patching: all I/O goes through gevent's own socket, server and pool.
Signals: QUIT drains (stop accepting, finish in-flight requests and tunnels,
close idle keep-alive connections); TERM/INT stop now; USR1 reopens logs.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import socket
import ssl
import time
from collections.abc import Iterable
from itertools import islice
from time import monotonic as _monotonic
from typing import TYPE_CHECKING

import gevent
import gevent.event
import gevent.pool
from setproctitle import setproctitle

from prefork_proxy import logs, peer_board, privileges
from prefork_proxy.config import Config, Server
from prefork_proxy.metrics_board import LOC_BASE
from prefork_proxy.scoreboard import DRAINING, READY, Scoreboard
from workers import peer_resolver, upstreams, virtual_hosts
from workers.acceptor import Listener
from workers.access_log import AccessLog
from workers.client import ClientConnection
from workers.driver import DRAIN_IDLE_TIMEOUT
from workers.errors import error_page
from workers.http1 import Request
from workers.metrics import recorder
from workers.real_ip import RealIpRule
from workers.request_id import TrustedClients
from workers.routing import Router
from workers.stats import stats
from workers.stream import sweep_timeouts

if TYPE_CHECKING:
    from prefork_proxy.host_names import ServerNames
    from workers.status_server import StatusServer

log = logging.getLogger("worker")
HEARTBEAT_INTERVAL = 1.0
# A draining worker closes idle keep-alive connections this long after the drain
# starts, not at once. A client that is busy on its connection sends its next
# request within that time and gets it answered with `Connection: close`, so it
# never meets the race of a close crossing its request on the wire (the reason
# RFC 9112 §9.3.1 lets clients retry); only connections idle for this long are
# closed under it. nginx closes them at once.
IDLE_CLOSE_DELAY = DRAIN_IDLE_TIMEOUT
# nginx's ngx_drain_connections: at worker_connections, close up to this many of the
# longest-idle keep-alive connections at once (an eighth of them, at least one).
MAX_CLOSED_TO_MAKE_ROOM = 32
# A worker this many open connections above its least-loaded sibling leaves a new
# connection to it (Worker.leaves_it_to_a_sibling).
ACCEPT_SLACK = 2
# What a connection accepted with the spare descriptor gets (EMFILE: see Listener).
OUT_OF_DESCRIPTORS = error_page(503, close=True)
# A draining worker waits this long at most for the status answers it accepted.
STATUS_FINISH_TIMEOUT = 5.0
# Signals a worker handles (DESIGN.md, Signals: QUIT drains, TERM/INT stop, USR1 reopens).
_WORKER_SIGNALS = frozenset({signal.SIGQUIT, signal.SIGTERM, signal.SIGINT, signal.SIGUSR1})


class BootError(Exception):
    """The worker cannot start (e.g. its user does not exist): one line for the operator.

    The master then sees exit status 3 (children.EXIT_BOOT_FAILURE) and stops on the
    first generation, or abandons a reload (DESIGN.md, reload rule 7).
    """


class Site:
    """What a request of one server needs: its routes, its worker, the log, and its
    server's client limits (config.ClientLimits). A connection starts on its
    address's default Site, and each request's host may pick another
    (workers/virtual_hosts.py)."""

    __slots__ = ("router", "worker", "access_log", "header_timeout", "body_timeout",
                 "send_timeout", "keepalive_timeout", "keepalive_requests", "request_ids",
                 "trusted_ids", "real_ip", "http2_max_concurrent_streams")

    def __init__(self, server: Server, worker: Worker) -> None:
        self.router = Router(server.locations)
        self.worker = worker
        self.access_log = worker.access_log
        self.request_ids = worker.config.request_id  # workers/request_id.py
        self.trusted_ids = worker.trusted_ids
        # workers/real_ip.py; None (no rule, one check per request) without real_ip_from.
        self.real_ip = RealIpRule(server.real_ip) if server.real_ip.real_ip_from else None
        limits = server.client
        self.header_timeout = limits.client_header_timeout
        self.body_timeout = limits.client_body_timeout
        self.send_timeout = limits.client_send_timeout
        self.keepalive_timeout = limits.client_keepalive_timeout
        # nginx: keepalive_timeout 0 disables keep-alive: every answer says close.
        self.keepalive_requests = (limits.client_keepalive_requests
                                   if self.keepalive_timeout > 0 else 1)
        self.http2_max_concurrent_streams = limits.http2_max_concurrent_streams

    def log_request(self, conn: ClientConnection, request: Request | None) -> None:
        """The one accounting point of a request: its metrics, and its log line."""
        request_time = _monotonic() - conn.started
        recorder.request(conn.location_row, conn.status, request_time)
        conn.location_row = LOC_BASE  # a next request refused before routing has none
        access_log = self.access_log
        if access_log.enabled:
            if access_log.json:
                access_log.write_json(conn, request, request_time)
            else:
                if request is None:
                    line, referer, agent = b"-", None, None
                else:
                    line = b"%s %s HTTP/%s" % (request.method, request.target,
                                               request.version.encode())
                    referer = request.header(b"referer")
                    agent = request.header(b"user-agent")
                access_log.write(conn.client_addr, line, conn.status, conn.body_bytes, referer,
                                 agent)
        conn.request_id = None  # a next request answered before Driver._begin has none
        if conn.real_ip is not None:  # the next request is judged afresh (realip)
            conn.reset_address()


class IdleConnections(dict):
    """The connections waiting for their next request, longest idle first: a
    dict keeps insertion order, and a connection is added each time it turns idle."""

    __slots__ = ()
    add = dict.setdefault  # add(conn): in C, as set.add is

    def discard(self, conn: ClientConnection) -> None:
        self.pop(conn, None)


class Worker:
    def __init__(self, config: Config, sockets: dict[str, socket.socket],
                 scoreboard: Scoreboard, slot: int) -> None:
        self.config = config
        self.sockets = sockets
        self.scoreboard = scoreboard
        self.slot = slot
        self.draining = False
        self.idle = IdleConnections()
        # A descriptor kept free for the moment accept() fails with EMFILE.
        self.spare_fd = _open_spare()
        self.refused_at = 0.0  # when an EMFILE was last logged
        self.stopped = gevent.event.Event()
        self.access_log = AccessLog(config.access_log, config.access_log_format)
        self.trusted_ids = TrustedClients(config.status.trusted)
        # The open client connections (accepted in callbacks: workers/acceptor.py),
        # at most worker_connections (0: no limit); and the tunnels' greenlets.
        self.connections: set[ClientConnection] = set()
        self.connection_limit = config.worker_connections or 0
        self.accepting_paused = False
        self.all_closed = gevent.event.Event()
        self.tunnels = gevent.pool.Group()
        self.siblings: list[int] = []  # their scoreboard slots (_find_siblings)
        self.servers: list[Listener] = []
        self.status_server: StatusServer | None = None  # [status] listen (lazy import)
        recorder.bind(scoreboard.metrics, slot, config)
        peer_board.attach(scoreboard.peers, slot)  # this worker's column of peer state
        upstreams.use_health_board(config.health_board)  # before the first pool

    def run(self, blocked: Iterable[signal.Signals] = ()) -> int:
        """Serve until drained or stopped. `blocked` signals were blocked across fork;
        they are unblocked once our handlers are installed, so a QUIT that arrived
        while starting drains (instead of the default action, a core dump)."""
        # Everything that reads a file is done as root, before the drop (nginx opens
        # its logs and sockets the same way): the hub, the servers, lazy imports.
        # One listener per address; its servers share it, and a request's host picks
        # one (workers/virtual_hosts.py); the head is read under the default's limits.
        sites = {id(server): Site(server, self) for server in self.config.servers}
        for key, (default, servers) in self.config.virtual_hosts.items():
            names = virtual_hosts.address_names(default, servers, sites)
            listen = next(item for item in default.listen if item.key == key)
            self.servers.append(self._serve(self.sockets[key], sites[id(default)], names,
                                            listen.proxy_protocol,
                                            self.config.tls_contexts.get(key),
                                            listen.http2))
        status_key = self.config.status.key
        if status_key is not None:
            # Imported only here: pywsgi and gevent-websocket add about 7 MiB to a
            # worker's RSS, which a worker without [status] listen need not carry.
            from workers.status_server import StatusServer

            self.status_server = StatusServer(self.sockets[status_key], self.config.status,
                                              self.scoreboard, self.config.real_ip)
            self.status_server.start()
        if self.config.user or self.config.group:
            _load_lazy_modules()
        drop_privileges(self.config.user, self.config.group)
        gevent.signal_handler(signal.SIGQUIT, self.drain)
        gevent.signal_handler(signal.SIGTERM, self.stop_now)
        gevent.signal_handler(signal.SIGINT, self.stop_now)
        gevent.signal_handler(signal.SIGUSR1, self.reopen_logs)
        for sig in blocked:
            if sig not in _WORKER_SIGNALS and sig != signal.SIGCHLD:
                # Master-only (HUP, TTIN, USR2...): a signal sent to the whole process
                # group must not kill or stop a worker.
                signal.signal(sig, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, list(blocked))
        heartbeat = gevent.spawn(self._heartbeat)
        gevent.spawn(sweep_timeouts)
        # `resolve`: the upstreams' host names asked again at their interval.
        peer_resolver.start_all([upstreams.pool_for(upstream)
                                 for upstream in self.config.upstreams.values()
                                 if upstream.resolve > 0])
        # What exists now (config, modules, servers) lives as long as the worker:
        # keep it out of the cyclic collector's scans, and collect young objects
        # less often, since the per-request objects are freed by refcount anyway.
        gc.freeze()
        gc.set_threshold(20_000, 20, 20)
        self._beat()
        self.scoreboard.set_state(self.slot, READY)  # servers accept: ready (rule 3)
        self.stopped.wait()
        heartbeat.kill()
        self._beat()
        self.access_log.flush()
        return 0

    def _serve(self, listener: socket.socket, site: Site,
               names: ServerNames[Site] | None, proxy_protocol: bool = False,
               tls: ssl.SSLContext | None = None, http2: bool = False) -> Listener:
        sock = socket.socket(listener.family, listener.type, fileno=os.dup(listener.fileno()))
        server = Listener(sock, site, self, names, proxy_protocol, tls, http2)
        server.start()
        return server

    # -- the open connections ----------------------------------------------------------
    def leaves_it_to_a_sibling(self) -> bool:
        """Whether a sibling with fewer open connections should take the next one.

        Every worker is woken for a new connection, and the one already running
        wins the accept: a burst of new connections (a load balancer, wrk) would
        all land on it, leaving its siblings idle. So a worker with more than
        ACCEPT_SLACK (and an eighth) above the least-loaded sibling lets that one
        take it (workers/acceptor.py then accepts after ACCEPT_YIELD anyway).
        """
        mine = len(self.connections)
        if mine <= ACCEPT_SLACK or not self.siblings:
            return False
        scoreboard = self.scoreboard
        least = min(scoreboard.connections(index) for index in self.siblings)
        return mine > least + max(ACCEPT_SLACK, least >> 3)

    def _find_siblings(self) -> None:
        """The ready workers of this generation (the scoreboard, once a second)."""
        scoreboard = self.scoreboard
        generation = scoreboard.read(self.slot).generation
        self.siblings = [slot.index for slot in scoreboard.live_slots()
                         if slot.state == READY and slot.generation == generation
                         and slot.index != self.slot]

    def full(self) -> bool:
        return bool(self.connection_limit) and len(self.connections) >= self.connection_limit

    def pause_accepting(self) -> None:
        """At worker_connections: stop accepting, and close idle connections to make
        room; accepting resumes as connections close (`closed`)."""
        if not self.accepting_paused:
            self.accepting_paused = True
            for server in self.servers:
                server.pause()
        self.make_room()

    def opened(self, conn: ClientConnection) -> None:
        self.connections.add(conn)
        self.scoreboard.set_connections(self.slot, len(self.connections))

    def closed(self, conn: ClientConnection) -> None:
        connections = self.connections
        connections.discard(conn)
        self.scoreboard.set_connections(self.slot, len(connections))
        if self.accepting_paused and not self.full() and not self.draining:
            self.accepting_paused = False
            for server in self.servers:
                server.start()
        if self.draining and not connections:
            self.all_closed.set()

    def _beat(self) -> None:
        self.scoreboard.beat(self.slot, time.monotonic(), stats.as_tuple())
        recorder.publish(upstreams.pools())

    def _heartbeat(self) -> None:
        master = os.getppid()
        while True:
            self._beat()
            self._find_siblings()
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
        if self.status_server is not None:
            self.status_server.close()
        upstreams.close_idle_connections()
        gevent.spawn_later(min(IDLE_CLOSE_DELAY, self.config.graceful_timeout / 2),
                           self._close_idle_connections)
        gevent.spawn(self._finish_drain)

    def _close_idle_connections(self) -> None:
        for conn in list(self.idle):
            _close_if_idle(conn)

    def make_room(self) -> None:
        """At worker_connections, close the longest-idle keep-alive connections
        (nginx closes reusable connections when it runs short of them)."""
        idle = self.idle
        count = max(1, min(MAX_CLOSED_TO_MAKE_ROOM, len(idle) // 8))
        for conn in list(islice(idle, count)):
            idle.discard(conn)
            _close_if_idle(conn)

    def refuse(self, server: Listener) -> bool:
        """accept() failed for want of a descriptor: with the spare one, accept
        the waiting client, answer 503 and close, then keep the spare again. A
        client told at once beats one left waiting in the listen queue (nginx
        accepts nothing then). False if there is no spare to use."""
        if self.spare_fd < 0:
            self.spare_fd = _open_spare()
            return False
        os.close(self.spare_fd)
        self.spare_fd = -1
        try:
            fd, _ = server.sock._accept()
        except OSError:  # another worker took it, or it is gone
            fd = -1
        if fd >= 0:
            client = socket.socket(fileno=fd)
            with contextlib.suppress(OSError):
                client.setblocking(False)
                client.send(OUT_OF_DESCRIPTORS)
                client.shutdown(socket.SHUT_WR)
                client.recv(65536)  # the request, so that close() sends FIN, not RST
            client.close()
        self.spare_fd = _open_spare()
        now = time.monotonic()
        if now - self.refused_at >= 1.0:  # once a second at most
            self.refused_at = now
            log.error("accept() failed: out of file descriptors (RLIMIT_NOFILE %d); "
                      "new connections get 503", _descriptor_limit())
        return True

    def _finish_drain(self) -> None:
        if self.connections:
            self.all_closed.wait()
        if self.status_server is not None:
            self.status_server.finish(STATUS_FINISH_TIMEOUT)
        self.stopped.set()

    def stop_now(self) -> None:
        self.draining = True
        for server in self.servers:
            server.close()
        if self.status_server is not None:
            self.status_server.close()
        self.tunnels.kill(block=False)
        for conn in list(self.connections):
            conn.abort()
        self.stopped.set()

    def reopen_logs(self) -> None:
        """USR1 (logrotate renamed the files): write to fresh files at the same paths."""
        logs.reopen()
        self.access_log.flush()
        try:
            self.access_log.reopen()
        except OSError as exc:  # e.g. the new file is not writable after dropping root
            log.error("cannot reopen the access log %s: %s", self.config.access_log, exc)


def _close_if_idle(conn: ClientConnection) -> None:
    """Close a keep-alive connection that waits for its next request, unless that
    request has started to arrive (then it is served, with Connection: close)."""
    if conn.reader.started:
        return
    raw = conn.sock.sock  # non-blocking (stream.py)
    try:
        raw.recv(1, socket.MSG_PEEK)
    except BlockingIOError:  # nothing has arrived: idle
        pass
    except OSError:
        return
    else:
        return  # bytes (or EOF) wait: its own read finds them
    with contextlib.suppress(OSError):
        raw.shutdown(socket.SHUT_RD)  # its recv() returns EOF: a clean close


def _open_spare() -> int:
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return -1


def _descriptor_limit() -> int:
    import resource  # only on this rare path

    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _load_lazy_modules() -> None:
    """Import what the data path would import on first use, which an unprivileged
    user may not be able to read (a Python installed under /root, say)."""
    import workers.uwsgi  # noqa: F401 - imported on the first uwsgi_pass request

    hub = gevent.get_hub()
    hub.threadpool  # noqa: B018 - created on first use: the resolver runs in it
    hub.resolver  # noqa: B018
    "localhost".encode("idna")  # getaddrinfo() encodes host names with the idna codec


def drop_privileges(user: str | None, group: str | None) -> None:
    """Become `user`/`group` (prefork_proxy/privileges.py); raises BootError with the cause."""
    try:
        privileges.drop_privileges(user, group)
    except privileges.PrivilegeError as exc:
        raise BootError(str(exc)) from None


def run_worker(config: Config, sockets: dict[str, socket.socket], scoreboard: Scoreboard,
               slot: int, number: int, generation: int,
               blocked: Iterable[signal.Signals] = ()) -> int:
    """The worker's whole life; returns its exit status (raises BootError)."""
    logs.set_process("worker", generation)
    setproctitle(f"prefork-proxy: worker {number} [gen {generation}]")
    return Worker(config, sockets, scoreboard, slot).run(blocked)
