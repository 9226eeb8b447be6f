"""What the status listener answers: the process tree's state, as a dict and as
Prometheus text (exposition format 0.0.4).

Pure reading of the shared memory (scoreboard.py, metrics_board.py), so any
worker can answer for all of them and the tests can read it without a
server. No gevent here: `prefork-proxy status` reads the JSON form over HTTP.
"""

from __future__ import annotations

import os
import time

from prefork_proxy.metrics_board import (
    DURATION_BUCKETS,
    FAILURE_CAUSES,
    HIST_BASE,
    HIST_SUM,
    LOC_BASE,
    PEER_ACTIVE,
    PEER_BASE,
    PEER_DOWN,
    PEER_FAILURES,
    PEER_FIELDS,
    PEER_RESPONSES,
    PEER_TIME_US,
    RESTART_REASONS,
    STATUS_CLASSES,
)
from prefork_proxy.scoreboard import DRAINING, READY, RETIRED, STARTING, Scoreboard

STATE_NAMES = {STARTING: "starting", READY: "serving", DRAINING: "draining"}


def snapshot(scoreboard: Scoreboard, master_pid: int | None = None) -> dict:
    """The whole state, as /status.json sends it (the dashboard's data)."""
    board = scoreboard.metrics
    now, wall = time.monotonic(), time.time()
    live = scoreboard.live_slots()
    master = board.master()
    totals = scoreboard.totals()
    fields = board.totals([RETIRED, *(slot.index for slot in live)])
    workers = [{
        "pid": slot.pid, "number": slot.number, "generation": slot.generation,
        "state": STATE_NAMES.get(slot.state, "unknown"),
        "uptime": round(now - slot.started, 3),
        "heartbeat_age": round(max(0.0, now - slot.heartbeat), 3),
        "rss": slot.rss, "cpu_seconds": round(slot.cpu, 3),
        "requests": slot.requests, "connections": slot.connections, "tunnels": slot.tunnels,
        "bytes_in": slot.bytes_in, "bytes_out": slot.bytes_out,
    } for slot in sorted(live, key=lambda s: (s.generation, s.number))]
    buckets, running = [], 0
    for index, bound in enumerate((*DURATION_BUCKETS, float("inf"))):
        running += fields[HIST_BASE + index]
        buckets.append(["+Inf" if bound == float("inf") else bound, running])
    return {
        "time": wall,
        "master": {
            "pid": master_pid if master_pid is not None else os.getppid(),
            "rss": master.rss, "cpu_seconds": round(master.cpu, 3),
            "generation": master.generation, "config_loaded": master.config_loaded,
            "reloads": {"ok": master.reloads_ok, "failed": master.reloads_failed},
            "restarts": master.restarts,
        },
        "generations": sorted({slot.generation for slot in live}),
        "workers": workers,
        "totals": {
            **{name: totals[name] for name in ("requests", "bytes_in", "bytes_out",
                                               "upstream_errors")},
            "connections": sum(slot.connections for slot in live),
            "tunnels": sum(slot.tunnels for slot in live),
            "by_status": _by_status(fields),
            "duration": {"count": running, "sum": fields[HIST_SUM] / 1e6,
                         "buckets": buckets},
        },
        "locations": _locations(board.names(location=True), fields),
        "peers": _peers(board.names(location=False), fields),
        "events": [{"time": stamp, "kind": kind, "text": text}
                   for stamp, kind, text in board.events()],
    }


def _by_status(fields: list[int]) -> dict[str, int]:
    found = dict.fromkeys(STATUS_CLASSES, 0)
    for row in range(LOC_BASE, HIST_BASE, len(STATUS_CLASSES)):
        for offset, name in enumerate(STATUS_CLASSES):
            found[name] += fields[row + offset]
    return found


def _split(name: str) -> tuple[str, str]:
    first, _, second = name[1:].partition(" ")
    return first, second


def _locations(names: dict[str, int], fields: list[int]) -> list[dict]:
    rows = [("-", "-", 0), *((*_split(name), index) for name, index in names.items())]
    found = []
    for server, path, index in rows:
        base = LOC_BASE + index * len(STATUS_CLASSES)
        counts = dict(zip(STATUS_CLASSES, fields[base:base + len(STATUS_CLASSES)], strict=True))
        if index or any(counts.values()):
            found.append({"server": server, "location": path, "requests": counts})
    return found


def _peers(names: dict[str, int], fields: list[int]) -> list[dict]:
    found = []
    for name, index in names.items():
        upstream, address = _split(name)
        base = PEER_BASE + index * PEER_FIELDS
        responses = fields[base + PEER_RESPONSES]
        failures = dict(zip(FAILURE_CAUSES, fields[base + PEER_FAILURES:base + PEER_ACTIVE],
                            strict=True))
        if address == "-" and not any(failures.values()):
            continue  # the no-peer row of an upstream, with nothing to say
        found.append({
            "upstream": upstream, "peer": address,
            # Down while any worker skips it (each worker learns alone, as in nginx).
            "up": address != "-" and fields[base + PEER_DOWN] == 0,
            "active": fields[base + PEER_ACTIVE], "responses": responses,
            "response_seconds": fields[base + PEER_TIME_US] / 1e6,
            "latency": (fields[base + PEER_TIME_US] / 1e6 / responses) if responses else None,
            "failures": failures,
        })
    return found


# -- Prometheus text ---------------------------------------------------------------------
def prometheus_text(state: dict) -> str:
    """The snapshot as Prometheus text format 0.0.4 (base units: seconds, bytes)."""
    out: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        out.append(f"# HELP prefork_proxy_{name} {help_text}")
        out.append(f"# TYPE prefork_proxy_{name} {kind}")

    def sample(name: str, value: float, **labels: object) -> None:
        text = ",".join(f'{key}="{_escape(str(item))}"' for key, item in labels.items())
        out.append(f"prefork_proxy_{name}{{{text}}} {_number(value)}" if text
                   else f"prefork_proxy_{name} {_number(value)}")

    totals = state["totals"]
    family("requests_total", "counter", "Requests answered, by location and status class.")
    for row in state["locations"]:
        for status_class, count in row["requests"].items():
            sample("requests_total", count, server=row["server"], location=row["location"],
                   status=status_class)
    family("request_duration_seconds", "histogram",
           "Time from a request's first byte to its end (nginx $request_time).")
    for bound, count in totals["duration"]["buckets"]:
        sample("request_duration_seconds_bucket", count,
               le=bound if bound == "+Inf" else _number(bound))
    sample("request_duration_seconds_sum", totals["duration"]["sum"])
    sample("request_duration_seconds_count", totals["duration"]["count"])
    family("received_bytes_total", "counter", "Bytes read from clients.")
    sample("received_bytes_total", totals["bytes_in"])
    family("sent_bytes_total", "counter", "Bytes written to clients.")
    sample("sent_bytes_total", totals["bytes_out"])
    family("active_connections", "gauge", "Client connections open now.")
    sample("active_connections", totals["connections"])
    family("active_tunnels", "gauge", "WebSocket tunnels open now.")
    sample("active_tunnels", totals["tunnels"])

    labelled = [(peer, {"upstream": peer["upstream"], "peer": peer["peer"]})
                for peer in state["peers"]]
    served = [(peer, labels) for peer, labels in labelled if peer["peer"] != "-"]
    family("upstream_responses_total", "counter", "Reply heads received, by peer.")
    for peer, labels in served:
        sample("upstream_responses_total", peer["responses"], **labels)
    family("upstream_response_seconds", "summary",
           "Time from the start of a try to the reply's end (nginx $upstream_response_time).")
    for peer, labels in served:
        sample("upstream_response_seconds_sum", peer["response_seconds"], **labels)
        sample("upstream_response_seconds_count", peer["responses"], **labels)
    family("upstream_failures_total", "counter",
           "Failed tries, by peer and cause (peer \"-\": no peer was left to try).")
    for peer, labels in labelled:
        for cause, count in peer["failures"].items():
            sample("upstream_failures_total", count, **labels, cause=cause)
    family("upstream_peer_up", "gauge", "0 while a worker skips the peer after failures.")
    for peer, labels in served:
        sample("upstream_peer_up", 1 if peer["up"] else 0, **labels)
    family("upstream_active_connections", "gauge", "Connections open to the peer now.")
    for peer, labels in served:
        sample("upstream_active_connections", peer["active"], **labels)

    master = state["master"]
    family("worker_restarts_total", "counter", "Workers replaced, by reason.")
    for reason in RESTART_REASONS:
        sample("worker_restarts_total", master["restarts"].get(reason, 0), reason=reason)
    family("reloads_total", "counter", "Reloads (HUP), by result.")
    sample("reloads_total", master["reloads"]["ok"], result="ok")
    sample("reloads_total", master["reloads"]["failed"], result="failed")
    family("config_generation", "gauge", "The generation of workers that serves.")
    sample("config_generation", master["generation"])
    family("config_load_timestamp_seconds", "gauge",
           "When the serving configuration was loaded (unix time).")
    sample("config_load_timestamp_seconds", master["config_loaded"])
    family("workers", "gauge", "Worker processes, by state.")
    for name in STATE_NAMES.values():
        sample("workers", sum(1 for w in state["workers"] if w["state"] == name), state=name)
    family("process_resident_memory_bytes", "gauge",
           "RSS of the master and of each worker (sampled by the master each second).")
    sample("process_resident_memory_bytes", master["rss"], role="master", pid=master["pid"],
           worker="")
    for worker in state["workers"]:
        sample("process_resident_memory_bytes", worker["rss"], role="worker",
               pid=worker["pid"], worker=worker["number"])
    family("process_cpu_seconds_total", "counter", "CPU time (user and system).")
    sample("process_cpu_seconds_total", master["cpu_seconds"], role="master",
           pid=master["pid"], worker="")
    for worker in state["workers"]:
        sample("process_cpu_seconds_total", worker["cpu_seconds"], role="worker",
               pid=worker["pid"], worker=worker["number"])
    return "\n".join(out) + "\n"


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if value == float("inf"):
        return "+Inf"
    return repr(float(value))
