"""The metrics board: per-worker counters in shared memory, beside the scoreboard.

One anonymous shared mmap, made by the master before it forks (like the
scoreboard), in three parts:

* **names**: the label set of every location and upstream peer the master
  has configured in its life, in a fixed table. The master appends new names
  at start and at each reload, before it forks the workers that use them; an
  index, once given, keeps its name, so a counter survives a HUP. A worker
  maps its own locations and peers to indices once, at boot. Past the table's
  size, further names share index 0 ("other").
* **master**: counters only the master writes (restarts by reason, reloads,
  the config generation) and a ring of recent events for the dashboard.
* **one block per scoreboard slot**, an array of u64 that only the slot's
  worker writes (one writer, no locks): its heartbeat copies there what its
  requests added up, once a second (workers/metrics.py). Block 0 is the retired block:
  when a worker exits the master adds its counters (not its gauges) to it,
  so totals never go backwards (scoreboard.Scoreboard.release).

Durations are kept as whole microseconds, so every field is an integer.
Readers (the status listener in any worker, tests) read without locks: a
value can be a heartbeat behind, never torn on x86-64 or arm64 (aligned
8-byte stores).
"""

from __future__ import annotations

import mmap
import struct
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prefork_proxy.config import Config, Server

# Histogram upper bounds, seconds (Prometheus's default buckets); +Inf is implied.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
# Why an upstream attempt failed: the words of each error-log line (driver.py).
FAILURE_CAUSES = (
    "refused",             # connection refused
    "connect_timeout",     # no handshake within connect_timeout
    "connect_error",       # another connect failure (unreachable, name not resolved)
    "reset",               # reset, or closed, before the first byte of a reply
    "invalid_header",      # the reply's head is not valid HTTP
    "send_timeout",        # the request could not be sent within send_timeout
    "read_timeout",        # no reply byte within read_timeout (N bytes in)
    "no_live_upstreams",   # every peer is down
    "uwsgi_buffer_size",   # the uwsgi packet is over the uWSGI server's --buffer-size
    "mid_reply",           # the reply broke off after its head (the client got a cut reply)
    "tls_handshake",       # https://: the TLS handshake failed, or the certificate was refused
)
MAX_LOCATIONS = 64  # location names in the master's life, index 0 = none / other
MAX_PEERS = 64      # peer names, index 0 = other
NAME_SIZE = 192
EVENTS = 32
EVENT_SIZE = 160
RESTART_REASONS = ("crash", "heartbeat", "rss", "max_requests", "reload")

# -- the layout of one worker's block (u64 indices) --------------------------------
# requests by location and status class
LOC_BASE = 0
# the request-duration histogram: one count per bucket (+Inf last), then the sum (us)
HIST_BASE = LOC_BASE + MAX_LOCATIONS * len(STATUS_CLASSES)
HIST_SUM = HIST_BASE + len(DURATION_BUCKETS) + 1
# per peer: responses, response-time sum (us), failures by cause, then two gauges
PEER_BASE = HIST_SUM + 1
PEER_RESPONSES = 0
PEER_TIME_US = 1
PEER_FAILURES = 2
PEER_ACTIVE = PEER_FAILURES + len(FAILURE_CAUSES)  # gauge: connections open now
PEER_DOWN = PEER_ACTIVE + 1                        # gauge: 1 while this worker skips it
PEER_FIELDS = PEER_DOWN + 1
BLOCK_FIELDS = PEER_BASE + MAX_PEERS * PEER_FIELDS
BLOCK_SIZE = BLOCK_FIELDS * 8
# The gauges: not folded into the retired block when a worker exits.
_GAUGE_FIELDS = frozenset(
    PEER_BASE + peer * PEER_FIELDS + field
    for peer in range(MAX_PEERS) for field in (PEER_ACTIVE, PEER_DOWN))

# -- the master part -------------------------------------------------------------------
# restarts by reason, reloads ok, reloads failed, generation, config loaded at (unix us),
# the master's own RSS and CPU time (us)
_MASTER = struct.Struct(f"<{len(RESTART_REASONS)}QQQQQQQ")
_MASTER_SIZE = 256
_EVENT_HEAD = struct.Struct("<QQ")  # events written so far | (first field of the ring)
_NAMES_SIZE = (MAX_LOCATIONS + MAX_PEERS) * NAME_SIZE
_EVENTS_SIZE = _EVENT_HEAD.size + EVENTS * EVENT_SIZE
_HEADER_SIZE = _NAMES_SIZE + _MASTER_SIZE + _EVENTS_SIZE
assert _MASTER.size <= _MASTER_SIZE


@dataclass
class MasterCounters:
    restarts: dict[str, int]
    reloads_ok: int
    reloads_failed: int
    generation: int
    config_loaded: float  # unix time of the last config load that took effect
    rss: int  # the master's own, sampled by itself once a second
    cpu: float  # seconds


def config_names(config: Config) -> list[str]:
    """The location and peer names of a config, for MetricsBoard.register."""
    names = []
    for server in config.servers:
        listen = server_label(server)
        for location in server.locations:
            names.append(location_name(listen, location.path))
            upstream = location.upstream
            names.extend(peer_name(upstream.name, str(peer.address)) for peer in upstream.peers)
            names.append(peer_name(upstream.name, "-"))  # failures with no peer to blame
    return names


def server_label(server: Server) -> str:
    """A server as the metrics name it: its first address, and its first name when
    it has one (servers sharing an address are told apart by name; no spaces)."""
    listen = server.listen[0].key
    return f"{listen}({server.names[0]})" if server.names else listen


def location_name(listen: str, path: str) -> str:
    return f"L{listen} {path}"


def peer_name(upstream: str, address: str) -> str:
    return f"P{upstream} {address}"


class MetricsBoard:
    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.memory = mmap.mmap(-1, _HEADER_SIZE + slots * BLOCK_SIZE)
        self._blocks = memoryview(self.memory)[_HEADER_SIZE:].cast("Q")

    # -- names (the master writes, before the fork) ------------------------------------
    def register(self, names: list[str]) -> None:
        """Give every new location or peer name an index (master, before forking)."""
        known = set(self.names(location=True)) | set(self.names(location=False))
        for name in names:
            if name in known:
                continue
            table, first, count = ((0, 1, MAX_LOCATIONS) if name[0] == "L"
                                   else (MAX_LOCATIONS, 1, MAX_PEERS))
            for index in range(first, count):
                offset = (table + index) * NAME_SIZE
                if self.memory[offset] == 0:
                    encoded = name.encode("utf-8", "replace")[:NAME_SIZE - 1]
                    self.memory[offset:offset + len(encoded)] = encoded
                    known.add(name)
                    break

    def names(self, location: bool) -> dict[str, int]:
        """{name: index} of the locations, or of the peers."""
        table, count = (0, MAX_LOCATIONS) if location else (MAX_LOCATIONS, MAX_PEERS)
        found = {}
        for index in range(1, count):
            offset = (table + index) * NAME_SIZE
            raw = bytes(self.memory[offset:offset + NAME_SIZE]).rstrip(b"\0")
            if raw:
                found[raw.decode("utf-8", "replace")] = index
        return found

    def index_of(self, name: str) -> int:
        """A name's index (0, "other", if the table was full when it came)."""
        return self.names(location=name[0] == "L").get(name, 0)

    # -- the workers' blocks -----------------------------------------------------------
    def block(self, slot: int) -> memoryview:
        """Slot `slot`'s counters as a writable array of u64 (its worker's own)."""
        return self._blocks[slot * BLOCK_FIELDS:(slot + 1) * BLOCK_FIELDS]

    def clear(self, slot: int) -> None:
        start = _HEADER_SIZE + slot * BLOCK_SIZE
        self.memory[start:start + BLOCK_SIZE] = bytes(BLOCK_SIZE)

    def retire(self, slot: int, into: int = 0) -> None:
        """Add a dead worker's counters (not its gauges) to block `into`; clear its own."""
        source, target = self.block(slot), self.block(into)
        for index, value in enumerate(source):
            if value and index not in _GAUGE_FIELDS:
                target[index] += value
        self.clear(slot)

    def totals(self, slots: list[int]) -> list[int]:
        """Every field summed over `slots` (gauges too: a live worker's count)."""
        total = [0] * BLOCK_FIELDS
        for slot in slots:
            for index, value in enumerate(self.block(slot)):
                if value:
                    total[index] += value
        return total

    # -- the master's counters and events -------------------------------------------
    def _master_fields(self) -> list[int]:
        return list(_MASTER.unpack_from(self.memory, _NAMES_SIZE))

    def master(self) -> MasterCounters:
        fields = self._master_fields()
        reasons = len(RESTART_REASONS)
        return MasterCounters(dict(zip(RESTART_REASONS, fields[:reasons], strict=True)),
                              fields[reasons], fields[reasons + 1], fields[reasons + 2],
                              fields[reasons + 3] / 1e6, fields[reasons + 4],
                              fields[reasons + 5] / 1e6)

    def count_restart(self, reason: str) -> None:
        fields = self._master_fields()
        fields[RESTART_REASONS.index(reason)] += 1
        _MASTER.pack_into(self.memory, _NAMES_SIZE, *fields)

    def count_reload(self, ok: bool) -> None:
        fields = self._master_fields()
        fields[len(RESTART_REASONS) + (0 if ok else 1)] += 1
        _MASTER.pack_into(self.memory, _NAMES_SIZE, *fields)

    def set_generation(self, generation: int, loaded_at: float) -> None:
        fields = self._master_fields()
        reasons = len(RESTART_REASONS)
        fields[reasons + 2], fields[reasons + 3] = generation, int(loaded_at * 1e6)
        _MASTER.pack_into(self.memory, _NAMES_SIZE, *fields)

    def set_master_usage(self, rss: int, cpu: float) -> None:
        fields = self._master_fields()
        reasons = len(RESTART_REASONS)
        fields[reasons + 4], fields[reasons + 5] = rss, int(cpu * 1e6)
        _MASTER.pack_into(self.memory, _NAMES_SIZE, *fields)

    def add_event(self, kind: str, text: str, now: float | None = None) -> None:
        """One line in the ring of recent reloads and restarts (the dashboard's)."""
        base = _NAMES_SIZE + _MASTER_SIZE
        written, _ = _EVENT_HEAD.unpack_from(self.memory, base)
        offset = base + _EVENT_HEAD.size + (written % EVENTS) * EVENT_SIZE
        stamp = time.time() if now is None else now
        encoded = f"{stamp:.3f} {kind} {text}".encode("utf-8", "replace")[:EVENT_SIZE]
        self.memory[offset:offset + EVENT_SIZE] = encoded.ljust(EVENT_SIZE, b"\0")
        _EVENT_HEAD.pack_into(self.memory, base, written + 1, 0)

    def events(self) -> list[tuple[float, str, str]]:
        """(unix time, kind, text) of the recent events, oldest first."""
        base = _NAMES_SIZE + _MASTER_SIZE
        written, _ = _EVENT_HEAD.unpack_from(self.memory, base)
        found = []
        for number in range(max(0, written - EVENTS), written):
            offset = base + _EVENT_HEAD.size + (number % EVENTS) * EVENT_SIZE
            raw = bytes(self.memory[offset:offset + EVENT_SIZE]).rstrip(b"\0")
            stamp, kind, text = raw.decode("utf-8", "replace").split(" ", 2)
            found.append((float(stamp), kind, text))
        return found
