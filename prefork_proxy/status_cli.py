"""`prefork-proxy status [--watch]`: the status listener's /status.json as a table.

`fetch` reads the state over HTTP (TCP, or a unix socket when `[status] listen`
is `unix:/path`); `render` turns it into text and is pure, so the tests call it
with a hand-made dict. CPU % and req/s are rates and need two samples: `--watch`
takes them from the previous sample; a one-shot `status` shows "-" there.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import sys
import time
from typing import TextIO

from prefork_proxy.config import Config
from prefork_proxy.values import Address

CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear the screen
EVENTS_SHOWN = 5
TIMEOUT = 5.0
# A wildcard listen address is reached on the loopback of the same family.
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


class StatusError(Exception):
    """A one-line reason `prefork-proxy status` could not show the state."""


def listen_address(config: Config, file: str) -> Address:
    """The status listener's address, or a StatusError when it is off."""
    if config.status.listen is None:
        raise StatusError(f"{file}: status.listen: not set: the status listener is off")
    return config.status.listen


class _UnixConnection(http.client.HTTPConnection):
    """http.client over an AF_UNIX stream socket (the Host header says "localhost")."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def fetch(address: Address, timeout: float = TIMEOUT) -> dict:
    """GET /status.json from the listener at `address`.

    http.client, not urllib.request: an http_proxy in the environment must not
    send a request for the local listener to a proxy."""
    if address.path is not None:
        connection: http.client.HTTPConnection = _UnixConnection(address.path, timeout)
    else:
        host = _WILDCARDS.get(address.host or "", address.host)
        connection = http.client.HTTPConnection(host, address.port, timeout=timeout)
    try:
        connection.request("GET", "/status.json", headers={"Accept": "application/json"})
        response = connection.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise StatusError(f"cannot reach the status listener at {address}: "
                          f"{reason or type(exc).__name__}; is prefork-proxy running?") from None
    finally:
        connection.close()
    if response.status == 403:
        raise StatusError(f"the status listener at {address} refused this client: "
                          "not in [status] allow")
    if response.status != 200:
        raise StatusError(f"the status listener at {address} answered "
                          f"{response.status} {response.reason}")
    try:
        state = json.loads(body)
    except ValueError:
        raise StatusError(f"the status listener at {address} answered something "
                          "that is not JSON") from None
    if not isinstance(state, dict) or not isinstance(state.get("workers"), list):
        raise StatusError(f"the status listener at {address} answered JSON "
                          "without the status fields")
    return state


# -- rendering ---------------------------------------------------------------------------
def render(state: dict, previous: dict | None = None, interval: float = 1.0) -> str:
    """The state as aligned text: a header, the workers, the upstream peers, the
    last events. Rates come from `previous` (the sample before), else "-"."""
    master = state["master"]
    elapsed = _elapsed(state, previous, interval)
    before = {worker["pid"]: worker for worker in (previous or {}).get("workers", [])}
    restarts = ", ".join(f"{reason} {count}" for reason, count in master["restarts"].items()
                         if count) or "none"
    loaded = master.get("config_loaded") or 0
    totals = state.get("totals", {})
    by_status = " ".join(f"{name} {count}" for name, count in
                         totals.get("by_status", {}).items())
    lines = [
        f"prefork-proxy master {master['pid']}  generation {master['generation']}"
        f"  config loaded {_duration(state['time'] - loaded) if loaded else '-'} ago"
        f"  reloads {master['reloads']['ok']} ok / {master['reloads']['failed']} failed"
        f"  restarts: {restarts}",
        f"at {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(state['time']))}"
        f"  requests {totals.get('requests', 0)} ({by_status})"
        f"  connections {totals.get('connections', 0)}  tunnels {totals.get('tunnels', 0)}",
    ]
    workers = [["PID", "NUM", "GEN", "STATE", "UPTIME", "RSS MiB", "CPU %", "REQ/S",
                "CONNS", "TUNNELS", "HEARTBEAT"]]
    for worker in state["workers"]:
        earlier = before.get(worker["pid"])
        workers.append([
            str(worker["pid"]), str(worker["number"]), str(worker["generation"]),
            worker["state"], _duration(worker["uptime"]), f"{worker['rss'] / 2**20:.1f}",
            _rate(worker, earlier, "cpu_seconds", elapsed, scale=100.0),
            _rate(worker, earlier, "requests", elapsed),
            str(worker["connections"]), str(worker["tunnels"]),
            f"{worker['heartbeat_age']:.1f}s",
        ])
    lines += _table(workers, left={"STATE"})
    peers = [["UPSTREAM", "PEER", "STATE", "ACTIVE", "RESPONSES", "FAILURES", "LATENCY ms"]]
    for peer in state.get("peers", []):
        latency = peer.get("latency")
        peers.append([
            peer["upstream"], peer["peer"],
            "-" if peer["peer"] == "-" else ("up" if peer["up"] else "down"),
            str(peer["active"]), str(peer["responses"]), str(sum(peer["failures"].values())),
            "-" if latency is None else f"{latency * 1000:.1f}",
        ])
    lines += _table(peers, left={"UPSTREAM", "PEER", "STATE"}) if len(peers) > 1 else \
        ["no upstream peers yet"]
    events = state.get("events", [])[-EVENTS_SHOWN:]
    lines.append(f"last events ({len(events)})" if events else "no events")
    lines += [f"  {time.strftime('%H:%M:%S', time.localtime(event['time']))}"
              f"  {event['kind']}  {event['text']}" for event in events]
    return "\n".join(lines) + "\n"


def _elapsed(state: dict, previous: dict | None, interval: float) -> float:
    """Seconds between the two samples, by the listener's clock when it can tell."""
    if previous is not None:
        seconds = state.get("time", 0) - previous.get("time", 0)
        if seconds > 0:
            return seconds
    return interval


def _rate(worker: dict, earlier: dict | None, key: str, elapsed: float,
          scale: float = 1.0) -> str:
    if earlier is None or elapsed <= 0 or worker[key] < earlier[key]:
        return "-"
    return f"{(worker[key] - earlier[key]) / elapsed * scale:.1f}"


def _duration(seconds: float) -> str:
    """12s, 3m04s, 2h05m, 3d04h: two units at most."""
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def _table(rows: list[list[str]], left: set[str]) -> list[str]:
    """Columns padded to their widest cell; text columns (`left`) to the left,
    numbers to the right. The first row holds the column names."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) if name in left else cell.rjust(width)
                      for cell, width, name in zip(row, widths, rows[0], strict=True)).rstrip()
            for row in rows]


# -- the command -------------------------------------------------------------------------
def run(config: Config, file: str, *, watch: bool = False, interval: float = 1.0,
        out: TextIO | None = None) -> int:
    """Print the table once, or redraw it every `interval` seconds until Ctrl-C."""
    out = out or sys.stdout
    try:
        address = listen_address(config, file)
        if not watch:
            out.write(render(fetch(address), interval=interval))
            return 0
        _watch(address, interval, out)
    except StatusError as exc:
        print(f"prefork-proxy: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # `status --watch | head`: the reader has what it wanted
        if out is sys.stdout:
            _quiet_stdout()
        return 0
    return 0


def _quiet_stdout() -> None:
    """No second BrokenPipeError when the interpreter flushes stdout at exit."""
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), sys.stdout.fileno())


def _watch(address: Address, interval: float, out: TextIO) -> None:
    """On a terminal, clear and redraw; into a pipe or a file, one table after
    another, a blank line between them."""
    terminal = out.isatty()
    previous: dict | None = None
    deadline = time.monotonic()
    while True:
        state = fetch(address)
        text = render(state, previous, interval)
        if terminal:
            out.write(CLEAR + text)
        else:
            out.write(text if previous is None else "\n" + text)
        out.flush()
        previous = state
        # Keep the cadence, but a slow fetch does not bring a burst of catching up.
        deadline = max(deadline + interval, time.monotonic())
        time.sleep(max(0.0, deadline - time.monotonic()))
