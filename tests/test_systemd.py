"""systemd integration: sd_notify messages on a NOTIFY_SOCKET the test binds,
socket activation with LISTEN_FDS/LISTEN_PID, and the unit files checked by
`systemd-analyze verify`.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from prefork_proxy import systemd
from tests.support.lifecycle import ActivatedProxy, NotifySocket, get, proxy_config
from tests.support.processes import ROOT, free_port

UNITS = ROOT / "systemd"


@pytest.fixture
def notify_socket():
    listener = NotifySocket()
    yield listener
    listener.close()


def test_notify_sends_one_datagram_of_lines(notify_socket, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.path)
    assert systemd.notify("READY=1", "STATUS=serving")
    assert notify_socket.wait("READY", "1") == {"READY": "1", "STATUS": "serving"}


def test_notify_reaches_an_abstract_socket(monkeypatch):
    name = f"prefork-proxy-test-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert systemd.notify("STOPPING=1")
        assert sock.recv(100) == b"STOPPING=1"


def test_notify_outside_systemd_does_nothing(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.notify("READY=1") is False


def test_monotonic_usec_is_clock_monotonic():
    key, _, value = systemd.monotonic_usec().partition("=")
    assert key == "MONOTONIC_USEC"
    assert abs(int(value) - time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000) < 1_000_000


def test_ready_is_sent_once_the_workers_serve(start_proxy, upstream, notify_socket):
    proxy = start_proxy(proxy_config(upstream.port, workers=2), wait=False,
                        env=notify_socket.env())
    ready = notify_socket.wait("READY", "1")
    # The workers already accept: a request is answered at once, not queued.
    assert get(proxy.port, timeout=1.0)[0] == 200
    assert "generation 1 is serving" in proxy.log()
    assert notify_socket.messages[0] is ready  # nothing before it
    assert ready["STATUS"] == "serving: 2 workers, generation 1"


def test_hup_sends_reloading_then_ready(start_proxy, upstream, notify_socket):
    proxy = start_proxy(proxy_config(upstream.port, workers=2), env=notify_socket.env())
    notify_socket.wait("READY", "1")
    seen = len(notify_socket.collect())
    sent_at = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    proxy.signal(signal.SIGHUP)
    reloading = notify_socket.wait("RELOADING", "1", after=seen)
    assert 0 <= int(reloading["MONOTONIC_USEC"]) - sent_at < 5_000_000
    index = notify_socket.messages.index(reloading)
    ready = notify_socket.wait("READY", "1", after=index + 1)
    assert ready["STATUS"] == "serving: 2 workers, generation 2"
    assert "generation 2 is serving" in proxy.log()


def test_a_failed_reload_says_so_in_status(start_proxy, upstream, notify_socket):
    proxy = start_proxy(proxy_config(upstream.port, workers=1), env=notify_socket.env())
    notify_socket.wait("READY", "1")
    seen = len(notify_socket.collect())
    text = proxy.config_path.read_text()
    proxy.config_path.write_text(text.replace("workers = 1", "workers = 0"))
    proxy.signal(signal.SIGHUP)
    failed = notify_socket.wait("READY", "1", after=seen + 1)
    assert failed["STATUS"].startswith("reload failed: ")
    assert "workers: 0 is not" in failed["STATUS"]


def test_status_follows_the_worker_count(start_proxy, upstream, notify_socket):
    proxy = start_proxy(proxy_config(upstream.port, workers=1), env=notify_socket.env())
    notify_socket.wait("READY", "1")
    proxy.signal(signal.SIGTTIN)
    notify_socket.wait("STATUS", "serving: 2 workers, generation 1")


def test_quit_sends_stopping(start_proxy, upstream, notify_socket):
    proxy = start_proxy(proxy_config(upstream.port, workers=1), env=notify_socket.env())
    notify_socket.wait("READY", "1")
    proxy.signal(signal.SIGQUIT)
    notify_socket.wait("STOPPING", "1")
    assert proxy.popen.wait(15) == 0


def test_usr2_new_master_sends_its_mainpid(start_proxy, upstream, notify_socket, tmp_path):
    proxy = start_proxy(proxy_config(upstream.port, workers=1, pidfile=str(tmp_path / "p.pid")),
                        env=notify_socket.env())
    notify_socket.wait("READY", "1")
    seen = len(notify_socket.collect())
    proxy.signal(signal.SIGUSR2)
    handover = notify_socket.wait("MAINPID", after=seen)
    new_master = int(handover["MAINPID"])
    assert new_master != proxy.pid and handover["READY"] == "1"
    assert int((tmp_path / "p.pid").read_text()) == new_master
    # The old master leaves quietly: a STOPPING=1 from it would stop the service.
    seen = len(notify_socket.collect())
    proxy.signal(signal.SIGWINCH)
    proxy.signal(signal.SIGQUIT)
    assert proxy.popen.wait(15) == 0
    assert not [m for m in notify_socket.collect()[seen:] if "STOPPING" in m or "READY" in m]
    assert get(proxy.port)[0] == 200


def test_socket_activation_uses_the_passed_socket(tmp_path, upstream, started, notify_socket):
    port = free_port()
    listener = socket.socket()
    listener.bind(("127.0.0.1", port))
    listener.listen(16)
    # A client that connects before the proxy runs is queued on systemd's socket...
    early = socket.create_connection(("127.0.0.1", port))
    early.sendall(b"GET /echo HTTP/1.1\r\nHost: early\r\nConnection: close\r\n\r\n")
    config = tmp_path / "proxy.toml"
    config.write_text(proxy_config(upstream.port, workers=2).replace("{port}", str(port)))
    # ...and the test keeps its own copy open, so binding the address again would
    # fail: serving proves the master took the passed socket.
    proxy = ActivatedProxy(config, tmp_path / "proxy.log", listener, env=notify_socket.env())
    started.append(proxy)
    notify_socket.wait("READY", "1")
    early.settimeout(10)
    assert early.recv(100).startswith(b"HTTP/1.1 200 ")
    early.close()
    assert get(port)[0] == 200
    assert "cannot listen" not in proxy.log()
    # Reloads keep using it.
    proxy.signal(signal.SIGHUP)
    proxy.wait_serving(2)
    assert get(port)[0] == 200
    listener.close()


def test_socket_activation_for_another_pid_is_ignored(tmp_path, upstream, started):
    """LISTEN_FDS is only for the process named in LISTEN_PID (sd_listen_fds(3))."""
    port = free_port()
    config = tmp_path / "proxy.toml"
    config.write_text(proxy_config(upstream.port, workers=1).replace("{port}", str(port)))
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent("""
            import os, sys
            os.environ.update(LISTEN_FDS="1", LISTEN_PID="1")
            from prefork_proxy import listeners
            print(sorted(listeners.inherited_sockets()))
        """)], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.stdout.strip() == "[]", result.stderr


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_unit_files_pass_systemd_analyze_verify(tmp_path):
    binary = Path(sys.executable).with_name("prefork-proxy")
    assert binary.exists(), "the venv's prefork-proxy script"
    for unit in ("prefork-proxy.service", "prefork-proxy.socket"):
        text = (UNITS / unit).read_text().replace("/usr/local/bin/prefork-proxy", str(binary))
        (tmp_path / unit).write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", "--man=no",
                             str(tmp_path / "prefork-proxy.service"),
                             str(tmp_path / "prefork-proxy.socket")],
                            capture_output=True, text=True, timeout=60)
    # verify exits 0 on settings it ignores, but names them: no output at all.
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), \
        result.stdout + result.stderr


def test_service_unit_has_the_settings_the_lifecycle_needs():
    unit = (UNITS / "prefork-proxy.service").read_text()
    settings = dict(line.split("=", 1) for line in unit.splitlines()
                    if "=" in line and not line.startswith("#"))
    assert settings["Type"] == "notify"
    assert settings["NotifyAccess"] == "all"  # MAINPID= from the USR2 child
    assert settings["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert settings["KillSignal"] == "SIGQUIT"
    graceful = 30  # etc/prefork-proxy.toml's graceful_timeout
    assert int(settings["TimeoutStopSec"].rstrip("s")) > graceful
    assert settings["NoNewPrivileges"] == "yes"
    assert set(settings["CapabilityBoundingSet"].split()) == {
        "CAP_NET_BIND_SERVICE", "CAP_SETUID", "CAP_SETGID", "CAP_KILL"}
