"""The metrics board (shared memory) and its Prometheus rendering, without a server."""

from __future__ import annotations

import os

from prometheus_client.parser import text_string_to_metric_families

from prefork_proxy.config import parse_config
from prefork_proxy.metrics_board import (
    EVENTS,
    HIST_BASE,
    PEER_ACTIVE,
    MetricsBoard,
    config_names,
    location_name,
    peer_name,
)
from prefork_proxy.scoreboard import RETIRED, Scoreboard
from prefork_proxy.status_report import prometheus_text, snapshot
from workers.metrics import Recorder


def _config(*paths: str, servers: str = '"127.0.0.1:9001"'):
    return parse_config({
        "upstream": {"app": {"servers": [s.strip('"') for s in servers.split(", ")]}},
        "server": [{"listen": ["127.0.0.1:8080"],
                    "location": [{"path": path, "proxy_pass": "http://app"} for path in paths]}],
    }, "test.toml")


def test_a_name_keeps_its_index_across_registrations():
    board = MetricsBoard(slots=2)
    board.register([location_name("127.0.0.1:8080", "/a"), peer_name("app", "127.0.0.1:1")])
    first = board.index_of(location_name("127.0.0.1:8080", "/a"))
    board.register([location_name("127.0.0.1:8080", "/b"),
                    location_name("127.0.0.1:8080", "/a")])
    assert board.index_of(location_name("127.0.0.1:8080", "/a")) == first
    assert board.index_of(location_name("127.0.0.1:8080", "/b")) not in (0, first)
    assert board.index_of(peer_name("app", "127.0.0.1:1")) >= 1
    assert board.index_of(location_name("x", "/never")) == 0  # "other"


def test_config_names_cover_locations_peers_and_the_no_peer_row():
    names = config_names(_config("/", "/api", servers='"127.0.0.1:1", "127.0.0.1:2"'))
    assert location_name("127.0.0.1:8080", "/api") in names
    assert peer_name("app", "127.0.0.1:2") in names
    assert peer_name("app", "-") in names


def test_retire_adds_counters_but_not_gauges_and_clears_the_slot():
    board = Scoreboard(slots=3)
    config = _config("/")
    board.metrics.register(config_names(config))
    slot = board.claim(1, 1, 0.0)
    board.set_pid(slot, 99)
    recorder = Recorder()
    recorder.bind(board.metrics, slot, config)
    row = recorder.peer_row("app", "127.0.0.1:9001")
    recorder.request(recorder.location_row(config.servers[0].locations[0]), 200, 0.002)
    recorder.upstream_response(row)
    recorder.upstream_time(row, 0.0015)
    recorder.block[row + PEER_ACTIVE] = 5  # a gauge
    recorder.publish([])
    assert board.metrics.block(slot)[row + PEER_ACTIVE] == 5
    board.release(slot)
    retired = board.metrics.block(RETIRED)
    assert retired[HIST_BASE] == 1  # the 5 ms bucket
    assert retired[row + PEER_ACTIVE] == 0
    assert sum(board.metrics.block(slot)) == 0
    state = snapshot(board, master_pid=1)
    assert state["totals"]["by_status"]["2xx"] == 1
    peer = next(p for p in state["peers"] if p["peer"] == "127.0.0.1:9001")
    assert peer["responses"] == 1 and abs(peer["latency"] - 0.0015) < 1e-6


def test_workers_count_in_their_own_blocks_concurrently_and_exactly():
    board = Scoreboard(slots=6)
    config = _config("/")
    board.metrics.register(config_names(config))
    slots = [board.claim(n, 1, 0.0) for n in range(1, 5)]
    pids = []
    for slot in slots:
        pid = os.fork()
        if pid == 0:  # a worker: 20,000 requests into its own block, no lock
            try:
                recorder = Recorder()
                recorder.bind(board.metrics, slot, config)
                row = recorder.location_row(config.servers[0].locations[0])
                for count in range(20_000):
                    recorder.request(row, 200, 0.03)
                    if count % 1000 == 0:
                        recorder.publish([])  # as the heartbeat does, while others write
                recorder.publish([])
            finally:
                os._exit(0)
        pids.append(pid)
        board.set_pid(slot, pid)
    for pid in pids:
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    board.release(slots[0])  # one exits: its counts move to the retired block
    state = snapshot(board, master_pid=1)
    assert state["totals"]["by_status"]["2xx"] == 80_000
    assert state["totals"]["duration"]["count"] == 80_000


def test_the_event_ring_keeps_the_newest():
    board = MetricsBoard(slots=1)
    for number in range(EVENTS + 5):
        board.add_event("restart", f"worker {number}", now=1000.0 + number)
    events = board.events()
    assert len(events) == EVENTS
    assert events[0] == (1005.0, "restart", "worker 5")
    assert events[-1][2] == f"worker {EVENTS + 4}"


def test_prometheus_text_parses_and_escapes_labels():
    board = Scoreboard(slots=2)
    config = parse_config({
        "server": [{"listen": ["127.0.0.1:8080"],
                    "location": [{"path": '/we"ird\\path', "proxy_pass": "127.0.0.1:9"}]}],
    }, "test.toml")
    board.metrics.register(config_names(config))
    board.metrics.count_restart("rss")
    board.metrics.count_reload(ok=False)
    text = prometheus_text(snapshot(board, master_pid=1))
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert families["prefork_proxy_requests"].type == "counter"
    assert families["prefork_proxy_request_duration_seconds"].type == "histogram"
    assert families["prefork_proxy_upstream_response_seconds"].type == "summary"
    paths = {sample.labels["location"] for sample in families["prefork_proxy_requests"].samples}
    assert '/we"ird\\path' in paths
    restarts = {s.labels["reason"]: s.value
                for s in families["prefork_proxy_worker_restarts"].samples}
    assert restarts["rss"] == 1 and restarts["crash"] == 0
    reloads = {s.labels["result"]: s.value for s in families["prefork_proxy_reloads"].samples}
    assert reloads == {"ok": 0, "failed": 1}
    # Every sample belongs to the family declared just above it (the format's rule).
    declared = None
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            declared = line.split()[2]
        elif not line.startswith("#"):
            assert line.startswith(declared), (declared, line)
