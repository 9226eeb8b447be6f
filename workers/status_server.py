"""The status listener (`[status] listen`), served by every worker.

The master binds the address and never serves it; each worker accepts on it,
and any of them can answer for the whole process tree, since all of them read
the shared scoreboard and metrics board (prefork_proxy/status_report.py).

* `/metrics`: Prometheus text format 0.0.4;
* `/status.json`: the same state as JSON, for scripts and `prefork-proxy status`;
* `/`: the dashboard, one self-contained page (dashboard.html beside this file);
* `/ws`: a WebSocket (gevent-websocket) that pushes the JSON once a second.

A client outside `allow` gets 403, and the refusal is logged. This is not the
data path: a greenlet per request (gevent's pywsgi) is fine here.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import socket
from collections.abc import Callable, Iterable
from pathlib import Path

import gevent
import gevent.pool
from gevent.pywsgi import WSGIServer
from geventwebsocket.handler import WebSocketHandler

from prefork_proxy.config import RealIp, Status
from prefork_proxy.scoreboard import Scoreboard
from prefork_proxy.status_report import prometheus_text, snapshot
from workers.real_ip import RealIpRule

log = logging.getLogger("worker")
# pywsgi's handler logs every request at INFO: the status listener keeps no access log.
logging.getLogger("geventwebsocket.handler").setLevel(logging.WARNING)

PUSH_INTERVAL = 1.0  # the dashboard's refresh
_DASHBOARD = Path(__file__).with_name("dashboard.html")
_PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"

StartResponse = Callable[[str, list[tuple[str, str]]], object]


class StatusServer:
    def __init__(self, listener: socket.socket, status: Status, scoreboard: Scoreboard,
                 real_ip: RealIp | None = None) -> None:
        sock = socket.socket(listener.family, listener.type, fileno=os.dup(listener.fileno()))
        # Every worker is woken for a connection and one wins it: the others must
        # get EAGAIN, not block the hub in accept().
        sock.setblocking(False)
        self.unix = sock.family == socket.AF_UNIX
        self.allow = status.allow
        # The top-level realip rule: `allow` judges the address a trusted proxy names.
        self.real_ip = (RealIpRule(real_ip) if real_ip is not None and real_ip.real_ip_from
                        else None)
        self.scoreboard = scoreboard
        self.master_pid = os.getppid()
        self.sockets = gevent.pool.Group()  # the open /ws pushes
        self.handlers = gevent.pool.Pool()  # every connection being answered
        self.server = WSGIServer(sock, self.app, handler_class=WebSocketHandler,
                                 spawn=self.handlers, log=None, error_log=_ErrorLog())

    def start(self) -> None:
        self.server.start()

    def close(self) -> None:
        """Stop accepting (a drain) and end the pushes: the page reconnects elsewhere."""
        self.server.close()
        self.sockets.kill(block=False)

    def finish(self, timeout: float) -> None:
        """Wait (a drain) for the answers under way: a scrape this worker accepted
        must not be cut off by its exit."""
        self.handlers.join(timeout=timeout)

    def allowed(self, address: str) -> bool:
        if self.unix:
            return True  # the socket file's permissions decide
        try:
            client = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        return any(client in network for network in self.allow)

    # -- the WSGI application ---------------------------------------------------------
    def app(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        address = environ.get("REMOTE_ADDR", "")
        if self.real_ip is not None and not self.unix:
            address = self.real_ip.address_in_environ(address, environ)
        path = environ.get("PATH_INFO", "/")
        if not self.allowed(address):
            log.warning("status: %s %s from %s refused: not in [status] allow",
                        environ.get("REQUEST_METHOD", "-"), path, address)
            return _reply(start_response, "403 Forbidden", "text/plain", b"forbidden\n")
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return _reply(start_response, "405 Method Not Allowed", "text/plain",
                          b"only GET\n", [("Allow", "GET, HEAD")])
        if path == "/metrics":
            body = prometheus_text(self._snapshot()).encode()
            return _reply(start_response, "200 OK", _PROMETHEUS_TYPE, body)
        if path == "/status.json":
            return _reply(start_response, "200 OK", "application/json",
                          json.dumps(self._snapshot()).encode())
        if path == "/ws":
            websocket = environ.get("wsgi.websocket")
            if websocket is None:
                return _reply(start_response, "400 Bad Request", "text/plain",
                              b"a WebSocket upgrade is expected here\n")
            self._push(websocket)
            return []
        if path in ("/", "/index.html"):
            return _reply(start_response, "200 OK", "text/html; charset=utf-8",
                          _DASHBOARD.read_bytes())
        return _reply(start_response, "404 Not Found", "text/plain", b"not found\n")

    def _snapshot(self) -> dict:
        state = snapshot(self.scoreboard, self.master_pid)
        state["served_by"] = os.getpid()
        return state

    def _push(self, websocket: object) -> None:
        """Send the state once a second until the page goes (or the worker drains)."""
        self.sockets.add(gevent.getcurrent())
        try:
            while not websocket.closed:
                websocket.send(json.dumps(self._snapshot()))
                gevent.sleep(PUSH_INTERVAL)
        except Exception:  # noqa: BLE001 - a page that went away ends its push, nothing else
            pass
        finally:
            self.sockets.discard(gevent.getcurrent())
            websocket.close()


def _reply(start_response: StartResponse, status: str, content_type: str, body: bytes,
           extra: list[tuple[str, str]] | None = None) -> list[bytes]:
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body))),
                            ("Cache-Control", "no-store"), *(extra or [])])
    return [body]


class _ErrorLog:
    """pywsgi's error log, into the worker's log (a failed handshake, a bad request)."""

    def write(self, text: str) -> None:
        if text.strip():
            log.info("status: %s", text.strip())

    def flush(self) -> None:
        pass
