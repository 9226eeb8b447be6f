"""The master's signals with the real master, real clients, on loopback:
HUP reloads (under load, with a changed or a broken config, in bursts),
TTIN/TTOU, USR1 log reopening, QUIT/TERM, and `prefork-proxy -s`.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.lifecycle import Load, children_of, get, proxy_config, worker_generations
from tests.support.processes import ROOT, wait_for


def test_hup_under_load_loses_no_request(start_proxy, upstream):
    """20 reloads while clients send continuous load: every request succeeds."""
    proxy = start_proxy(proxy_config(upstream.port, workers=2, graceful_timeout="10s",
                                     access_log="off"))
    with Load(proxy.port, new_connection=2, keep_alive=2) as load:
        for reload in range(2, 22):
            served = load.ok
            proxy.signal(signal.SIGHUP)
            proxy.wait_serving(reload)
            load.wait_for_requests(20)
            assert not load.failures, load.summary()
            assert load.ok > served
    assert not load.failures, load.summary()
    # Not even a retry: busy keep-alive connections are answered with Connection:
    # close by the draining worker instead of being closed under the client.
    assert load.retried == 0, load.summary()
    assert proxy.log().count(" is serving") == 21
    assert "Traceback" not in proxy.log()
    print(f"\n20 HUPs under load: {load.summary()}")


def test_hup_applies_a_new_location(start_proxy, upstream):
    proxy = start_proxy(proxy_config(upstream.port, workers=2))
    assert get(proxy.port, "/new/echo")[1].count(b'"path": "/new/echo"') == 1
    text = proxy.config_path.read_text()
    proxy.config_path.write_text(text + f"""
  [[server.location]]
  path = "/new/"
  proxy_pass = "http://127.0.0.1:{upstream.port}/renamed/"
""")
    proxy.signal(signal.SIGHUP)
    proxy.wait_serving(2)
    status, body = get(proxy.port, "/new/echo")
    assert status == 200 and b'"path": "/renamed/echo"' in body


def test_hup_with_a_bad_config_keeps_serving(start_proxy, upstream):
    proxy = start_proxy(proxy_config(upstream.port, workers=2))
    before = proxy.worker_pids()
    good = proxy.config_path.read_text()
    proxy.config_path.write_text(good.replace("[[server]]", "worker_timeout = \"soon\"\n"
                                              "[[server]]"))
    with Load(proxy.port) as load:
        proxy.signal(signal.SIGHUP)
        wait_for(lambda: "reload failed" in proxy.log(), message="the reload to fail")
        load.wait_for_requests(50)
    assert not load.failures, load.summary()
    assert f"{proxy.config_path}: worker_timeout: 'soon' is not a duration" in proxy.log()
    assert proxy.worker_pids() == before
    # The fixed file reloads as usual.
    proxy.config_path.write_text(good)
    proxy.signal(signal.SIGHUP)
    proxy.wait_serving(2)
    assert get(proxy.port)[0] == 200


def test_hup_burst_runs_the_newest_config_and_leaks_nothing(start_proxy, upstream):
    proxy = start_proxy(proxy_config(upstream.port, workers=2, graceful_timeout="5s"))
    master = proxy.pid
    # The master briefly opens /proc files when it samples its workers: count the
    # fewest descriptors seen.
    fds_before = min(len(os.listdir(f"/proc/{master}/fd")) for _ in range(20))
    text = proxy.config_path.read_text()
    with Load(proxy.port, new_connection=1, keep_alive=1) as load:
        for burst in range(8):
            proxy.config_path.write_text(text + f"""
  [[server.location]]
  path = "/v{burst}/"
  proxy_pass = "http://127.0.0.1:{upstream.port}/version{burst}/"
""")
            proxy.signal(signal.SIGHUP)
            time.sleep(0.02 * burst)  # bursts: faster than a generation gets ready
        wait_for(lambda: get(proxy.port, "/v7/x")[1].count(b"/version7/x"), 20,
                 message="the newest config to serve")
        load.wait_for_requests(20)
    assert not load.failures, load.summary()
    # Nothing leaks: two workers of one generation, no older one, no extra descriptors.
    newest = wait_for(lambda: (lambda g: len(set(g)) == 1 and len(g) == 2 and g)(
        worker_generations(master)), 15, message="old generations to exit")
    # Old workers that have just exited are children until the master reaps them.
    wait_for(lambda: len(children_of(master)) == 2, 10, message="exited workers to be reaped")
    wait_for(lambda: len(os.listdir(f"/proc/{master}/fd")) <= fds_before, 5,
             message=f"the master's descriptors to return to {fds_before}")
    assert get(proxy.port, "/v6/x")[1].count(b'"path": "/v6/x"')  # older locations are gone
    print(f"\nburst of 8 HUPs ended on generation {newest[0]}: {load.summary()}")


def test_ttin_and_ttou_change_the_worker_count(start_proxy, upstream):
    proxy = start_proxy(proxy_config(upstream.port, workers=2))
    wait_for(lambda: len(proxy.worker_pids()) == 2)
    for count in (3, 4):
        proxy.signal(signal.SIGTTIN)
        wait_for(lambda c=count: len(proxy.worker_pids()) == c, message=f"{count} workers")
    proxy.signal(signal.SIGTTOU)
    wait_for(lambda: len(proxy.worker_pids()) == 3, message="one worker fewer")
    assert "TTOU: 3 workers" in proxy.log()
    assert get(proxy.port)[0] == 200


def test_usr1_reopens_renamed_logs(start_proxy, upstream, tmp_path: Path):
    access, error = tmp_path / "access.log", tmp_path / "error.log"
    proxy = start_proxy(proxy_config(upstream.port, workers=2, access_log=str(access),
                                     error_log=str(error)), wait=False)
    wait_for(lambda: error.exists() and " is serving" in error.read_text())
    assert get(proxy.port, "/before")[0] == 200
    wait_for(lambda: access.exists() and "/before" in access.read_text())
    access.rename(tmp_path / "access.log.1")  # what logrotate does
    error.rename(tmp_path / "error.log.1")
    proxy.signal(signal.SIGUSR1)
    wait_for(lambda: access.exists() and error.exists(), message="new log files")
    assert "log files reopened" in error.read_text()
    assert get(proxy.port, "/after")[0] == 200
    wait_for(lambda: "/after" in access.read_text(), message="the request in the new log")
    assert "/after" not in (tmp_path / "access.log.1").read_text()


def test_quit_drains_a_request_in_flight(start_proxy, upstream):
    proxy = start_proxy(proxy_config(upstream.port, workers=1, graceful_timeout="10s"))
    accepted = upstream_connections(upstream)
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    conn.request("GET", "/slow/1")
    wait_for(lambda: upstream_connections(upstream) > accepted, message="the request upstream")
    proxy.signal(signal.SIGQUIT)
    response = conn.getresponse()
    assert response.status == 200 and response.getheader("Connection") == "close"
    assert proxy.popen.wait(15) == 0
    assert "graceful stop requested" in proxy.log()


def upstream_connections(upstream) -> int:  # noqa: ANN001
    return json.loads(get(upstream.port, "/stats")[1])["connections"]


@pytest.mark.parametrize("name, expect", [("reload", "reloading: starting generation 2"),
                                          ("reopen", "log files reopened"),
                                          ("quit", "graceful stop requested"),
                                          ("stop", "fast stop requested")])
def test_dash_s_signals_the_master_in_the_pidfile(start_proxy, upstream, tmp_path, name, expect):
    pidfile = tmp_path / "proxy.pid"
    proxy = start_proxy(proxy_config(upstream.port, workers=1, pidfile=str(pidfile)))
    wait_for(lambda: pidfile.exists())
    assert int(pidfile.read_text()) == proxy.pid
    result = subprocess.run([sys.executable, "-m", "prefork_proxy", "-s", name, "-c",
                             str(proxy.config_path)], cwd=ROOT, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    wait_for(lambda: expect in proxy.log(), message=expect)
    if name in ("quit", "stop"):
        assert proxy.popen.wait(15) == 0
        assert not pidfile.exists()


def test_dash_s_without_a_running_master_fails(tmp_path, upstream):
    config = tmp_path / "proxy.toml"
    config.write_text(proxy_config(upstream.port, pidfile=str(tmp_path / "none.pid"))
                      .replace("{port}", "1"))
    result = subprocess.run([sys.executable, "-m", "prefork_proxy", "-s", "reload", "-c",
                             str(config)], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "no running master" in result.stderr


def test_a_websocket_tunnel_opened_before_hup_works_until_it_closes(start_proxy, started,
                                                                     tmp_path):
    from websockets.sync.client import connect

    from tests.support import ws_upstream

    echo = ws_upstream.start_ws_echo(started, tmp_path)
    proxy = start_proxy(ws_upstream.proxy_config(echo.address, top='graceful_timeout = "60s"'))
    (old_worker,) = proxy.worker_pids()
    with connect(f"ws://127.0.0.1:{proxy.port}/", compression=None, ping_interval=None,
                 open_timeout=10, close_timeout=10) as websocket:
        websocket.send("before")
        assert websocket.recv(timeout=10) == "before"
        proxy.signal(signal.SIGHUP)
        proxy.wait_serving(2)
        for number in range(5):  # the old worker drains but keeps the tunnel
            websocket.send(f"after {number}")
            assert websocket.recv(timeout=10) == f"after {number}"
        assert old_worker in proxy.worker_pids()
        with connect(f"ws://127.0.0.1:{proxy.port}/", compression=None, ping_interval=None,
                     open_timeout=10) as fresh:  # new tunnels go to the new generation
            fresh.send("new")
            assert fresh.recv(timeout=10) == "new"
        websocket.close(1000, "done")
    wait_for(lambda: old_worker not in proxy.worker_pids(), 15,
             message="the old worker to exit once its tunnel closed")
    assert len(proxy.worker_pids()) == 1


def test_hup_binds_new_addresses_and_closes_removed_ones(start_proxy, upstream):
    from tests.support.processes import free_port

    proxy = start_proxy(proxy_config(upstream.port, workers=2))
    text = proxy.config_path.read_text()
    extra = free_port()
    both = text.replace('listen = ["127.0.0.1:', f'listen = ["127.0.0.1:{extra}", "127.0.0.1:')
    proxy.config_path.write_text(both)
    proxy.signal(signal.SIGHUP)
    proxy.wait_serving(2)
    assert get(extra)[0] == 200 and get(proxy.port)[0] == 200
    gen2 = proxy.worker_pids()
    proxy.config_path.write_text(text)  # the extra address goes away again
    proxy.signal(signal.SIGHUP)
    proxy.wait_serving(3)
    wait_for(lambda: not gen2 & proxy.worker_pids(), 15, message="generation 2 to exit")
    # Nobody holds the address any more, not even the new workers forked while the
    # master still had it open (connections would queue unanswered): it binds again.
    # (A connect() test could self-connect: `extra` is in the ephemeral range.)
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", extra))
    assert get(proxy.port)[0] == 200


def test_a_reload_whose_workers_cannot_start_keeps_the_old_generation(start_proxy, upstream):
    proxy = start_proxy(proxy_config(upstream.port, workers=2))
    before = proxy.worker_pids()
    good = proxy.config_path.read_text()
    proxy.config_path.write_text('user = "nonexistent-user"\n' + good)
    with Load(proxy.port) as load:
        proxy.signal(signal.SIGHUP)
        wait_for(lambda: "reload failed (a worker of generation 2 could not start)"
                 in proxy.log(), 15, message="the reload to fail")
        load.wait_for_requests(30)
    assert not load.failures, load.summary()
    wait_for(lambda: proxy.worker_pids() == before, 10, message="only the old workers")
    assert proxy.alive()
    proxy.config_path.write_text(good)
    proxy.signal(signal.SIGHUP)
    proxy.wait_serving(2)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_term_and_int_stop_at_once(start_proxy, upstream, sig):
    proxy = start_proxy(proxy_config(upstream.port, workers=2, graceful_timeout="60s"))
    accepted = upstream_connections(upstream)
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    conn.request("GET", "/slow/30")  # would hold a graceful stop for 30 s
    wait_for(lambda: upstream_connections(upstream) > accepted, message="the request upstream")
    proxy.signal(sig)
    started = time.monotonic()
    assert proxy.popen.wait(10) == 0
    assert time.monotonic() - started < 8
    assert not proxy.workers()
    conn.close()
