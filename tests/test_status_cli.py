"""`prefork-proxy status [--watch]`: the table from a hand-made state, then the
command against a real master with two workers and its status listener."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from prefork_proxy.status_cli import render
from tests.support.configs import one_location
from tests.support.processes import ROOT, free_port, wait_for


def a_state(time: float = 1_000_000.0, requests: int = 10, cpu: float = 2.0) -> dict:
    """A /status.json as status_report.snapshot() builds it, cut to what render reads."""
    return {
        "time": time,
        "master": {"pid": 4000, "rss": 20 << 20, "cpu_seconds": 1.0, "generation": 3,
                   "config_loaded": time - 125, "reloads": {"ok": 2, "failed": 1},
                   "restarts": {"crash": 1, "heartbeat": 0, "rss": 0, "max_requests": 0,
                                "reload": 4}},
        "generations": [3],
        "workers": [
            {"pid": 4001, "number": 1, "generation": 3, "state": "serving", "uptime": 3725.0,
             "heartbeat_age": 0.25, "rss": 31 << 20, "cpu_seconds": cpu,
             "requests": requests, "connections": 7, "tunnels": 2},
            {"pid": 4002, "number": 2, "generation": 3, "state": "draining", "uptime": 42.0,
             "heartbeat_age": 1.5, "rss": 64 << 20, "cpu_seconds": 0.5, "requests": 0,
             "connections": 0, "tunnels": 0},
        ],
        "totals": {"requests": requests, "connections": 7, "tunnels": 2,
                   "by_status": {"1xx": 0, "2xx": requests, "3xx": 0, "4xx": 0, "5xx": 0}},
        "peers": [
            {"upstream": "app", "peer": "127.0.0.1:8001", "up": True, "active": 3,
             "responses": 40, "latency": 0.0125,
             "failures": {"refused": 1, "read_timeout": 2}},
            {"upstream": "app", "peer": "127.0.0.1:8002", "up": False, "active": 0,
             "responses": 0, "latency": None, "failures": {"refused": 5}},
            {"upstream": "app", "peer": "-", "up": False, "active": 0, "responses": 0,
             "latency": None, "failures": {"no_live_upstreams": 1}},
        ],
        "events": [{"time": time - index, "kind": "restart", "text": f"event {index}"}
                   for index in range(8, 0, -1)],
    }


def rows(text: str, first: str) -> dict[str, list[str]]:
    """The rows under the column names that begin with `first` ("PID": the workers,
    by pid; "UPSTREAM": the peers, by address), up to the next section."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == [first])
    found = {}
    for line in lines[start + 1:]:
        if not line.strip() or line.startswith(("UPSTREAM", "no ", "last events")):
            break
        cells = line.split()
        found[cells[0] if first == "PID" else cells[1]] = cells
    return found


# -- render ------------------------------------------------------------------------------
def test_the_header_names_master_generation_reloads_and_restarts():
    header = render(a_state()).splitlines()[0]
    assert "master 4000" in header and "generation 3" in header
    assert "config loaded 2m05s ago" in header
    assert "reloads 2 ok / 1 failed" in header
    assert "restarts: crash 1, reload 4" in header


def test_one_row_per_worker_with_its_columns():
    workers = rows(render(a_state()), "PID")
    assert set(workers) == {"4001", "4002"}
    pid, number, generation, state, uptime, rss, cpu, rate, conns, tunnels, beat = \
        workers["4001"]
    assert (number, generation, state, uptime, rss) == ("1", "3", "serving", "1h02m", "31.0")
    assert (conns, tunnels, beat) == ("7", "2", "0.2s")
    assert workers["4002"][3:6] == ["draining", "42s", "64.0"]


def test_rates_are_dashes_from_a_single_sample():
    for row in rows(render(a_state()), "PID").values():
        assert row[6:8] == ["-", "-"]


def test_req_per_second_and_cpu_come_from_two_samples():
    before = a_state(time=1_000_000.0, requests=10, cpu=2.0)
    after = a_state(time=1_000_002.0, requests=60, cpu=2.5)
    workers = rows(render(after, before), "PID")
    assert workers["4001"][6:8] == ["25.0", "25.0"]  # 0.5 s of CPU and 50 requests in 2 s
    assert workers["4002"][6:8] == ["0.0", "0.0"]


def test_a_worker_new_since_the_last_sample_has_no_rate_yet():
    before = a_state()
    before["workers"] = before["workers"][1:]
    workers = rows(render(a_state(time=1_000_001.0), before), "PID")
    assert workers["4001"][6:8] == ["-", "-"]
    assert workers["4002"][6:8] == ["0.0", "0.0"]


def test_the_interval_stands_in_when_the_samples_share_a_time():
    before, after = a_state(requests=10), a_state(requests=30)
    assert rows(render(after, before, interval=4.0), "PID")["4001"][7] == "5.0"


def test_columns_are_aligned():
    lines = render(a_state()).splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == ["PID"])
    table = lines[start:start + 3]
    # Numbers end in the same column as their heading; STATE starts where its heading does.
    heading = table[0]
    for name in ("PID", "RSS MiB", "CONNS", "HEARTBEAT"):
        end = heading.index(name) + len(name)
        for line in table[1:]:
            assert line[end - 1] != " " and (end == len(line) or line[end] == " ")
    state_at = heading.index("STATE")
    assert [line[state_at:state_at + 5] for line in table[1:]] == ["servi", "drain"]


def test_peers_show_up_down_failures_and_latency():
    peers = rows(render(a_state()), "UPSTREAM")
    assert peers["127.0.0.1:8001"] == ["app", "127.0.0.1:8001", "up", "3", "40", "3", "12.5"]
    assert peers["127.0.0.1:8002"] == ["app", "127.0.0.1:8002", "down", "0", "0", "5", "-"]
    assert peers["-"] == ["app", "-", "-", "0", "0", "1", "-"]


def test_only_the_last_events_are_shown():
    text = render(a_state())
    assert "event 5" in text and "event 1" in text and "event 6" not in text


def test_a_state_with_no_peers_and_no_events_says_so():
    state = a_state()
    state["peers"], state["events"] = [], []
    text = render(state)
    assert "no upstream peers yet" in text and "no events" in text


# -- the command against real processes --------------------------------------------------
def status_command(config: Path, *extra: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prefork_proxy", "status", "-c", str(config),
                           *extra], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def status_config(upstream_address: str, status_port: int, extra: str = "") -> str:
    return one_location(f"http://{upstream_address}",
                        top=f'workers = 2\n[status]\nlisten = "127.0.0.1:{status_port}"\n'
                            f"{extra}")


def fetch_json(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status.json",
                                    timeout=5) as response:
            return json.load(response)
    except OSError:
        return None


@pytest.fixture
def proxy_with_status(start_proxy, upstream):
    """A master with 2 workers and a status listener, after 6 requests through it."""
    status_port = free_port()
    proxy = start_proxy(status_config(upstream.address, status_port))
    for _ in range(6):
        with urllib.request.urlopen(f"http://127.0.0.1:{proxy.port}/echo",
                                    timeout=10) as response:
            assert response.status == 200
    # Counters reach the shared board with the heartbeat: wait until all six are in.
    wait_for(lambda: (fetch_json(status_port) or {}).get("totals", {}).get("requests") == 6,
             message="the six requests in /status.json")
    proxy.status_port = status_port
    proxy.upstream = upstream
    return proxy


@pytest.mark.timeout(60)
def test_status_prints_a_row_per_worker_with_the_real_pids(proxy_with_status):
    proxy = proxy_with_status
    done = status_command(proxy.config_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    workers = rows(done.stdout, "PID")
    assert set(map(int, workers)) == proxy.worker_pids()
    assert len(workers) == 2
    assert f"master {proxy.pid} " in done.stdout
    assert "requests 6 " in done.stdout
    peer = rows(done.stdout, "UPSTREAM")[proxy.upstream.address]
    assert peer[2] == "up" and peer[4].isdigit()


@pytest.mark.timeout(60)
def test_status_watch_prints_successive_tables_and_ends_on_ctrl_c(proxy_with_status):
    proxy = proxy_with_status
    watch = subprocess.Popen([sys.executable, "-m", "prefork_proxy", "status", "-c",
                              str(proxy.config_path), "--watch", "--interval", "0.3"],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    lines: list[str] = []

    def read() -> None:
        for line in watch.stdout:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    try:
        reader.start()
        # Not a terminal: no screen clearing, a blank line between tables.
        wait_for(lambda: lines.count("\n") >= 2, timeout=20, message="three tables")
        watch.send_signal(signal.SIGINT)
        assert watch.wait(10) == 0
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
    reader.join(5)
    stderr = watch.stderr.read()
    watch.stderr.close()
    assert "Traceback" not in stderr and stderr == ""
    text = "".join(lines)
    assert "\x1b[" not in text
    tables = [table for table in text.split("\n\n") if table.strip()]
    assert len(tables) >= 3
    first, second = tables[0], tables[1]
    assert set(map(int, rows(first, "PID"))) == proxy.worker_pids()
    assert all(row[6:8] == ["-", "-"] for row in rows(first, "PID").values())
    # The second sample has a previous one: every worker shows its rates.
    assert all(row[6] != "-" and row[7] != "-" for row in rows(second, "PID").values())


@pytest.mark.timeout(30)
def test_status_without_a_status_listener_says_it_is_off(tmp_path):
    config = tmp_path / "proxy.toml"
    config.write_text(one_location("http://127.0.0.1:9", top="workers = 1")
                      .replace("{port}", str(free_port())))
    done = status_command(config)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == (f"prefork-proxy: {config}: status.listen: not set: "
                           "the status listener is off\n")


@pytest.mark.timeout(30)
def test_status_with_no_proxy_running_says_connection_refused(tmp_path):
    port = free_port()
    config = tmp_path / "proxy.toml"
    config.write_text(status_config("127.0.0.1:9", port).replace("{port}", str(free_port())))
    done = status_command(config)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == (f"prefork-proxy: cannot reach the status listener at "
                           f"127.0.0.1:{port}: Connection refused; is prefork-proxy running?\n")


@pytest.mark.timeout(30)
def test_status_reports_a_config_error_as_the_config_check_does(tmp_path):
    config = tmp_path / "proxy.toml"
    config.write_text('workers = "two"\n')
    done = status_command(config)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith(f"prefork-proxy: {config}: workers: ")
    # Every error of the file, one a line: the bad setting and the missing server.
    assert done.stderr.count("\n") == 2
    assert f"{config}: server: needs at least one [[server]]" in done.stderr


@pytest.mark.timeout(60)
def test_status_refused_by_allow_says_so(start_proxy, upstream):
    status_port = free_port()
    proxy = start_proxy(status_config(upstream.address, status_port,
                                      extra='allow = ["192.0.2.0/24"]'))
    done = status_command(proxy.config_path)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == (f"prefork-proxy: the status listener at 127.0.0.1:{status_port} "
                           "refused this client: not in [status] allow\n")


@pytest.mark.timeout(60)
def test_status_reads_a_unix_socket_listener(start_proxy, upstream, tmp_path):
    socket_path = tmp_path / "status.sock"
    top = f'workers = 2\n[status]\nlisten = "unix:{socket_path}"'
    proxy = start_proxy(one_location(f"http://{upstream.address}", top=top))
    done = status_command(proxy.config_path)
    assert done.returncode == 0, done.stderr
    assert set(map(int, rows(done.stdout, "PID"))) == proxy.worker_pids()
