"""The master as an operator meets it: -t, binding, titles, pidfile, dead workers, QUIT.

`-t` checks a config and exits 0 or 1 with a `FILE: key: message` line; a port
already in use is a one-line error and status 1; process titles name the
master's config and each worker's number and generation; a SIGKILLed worker is
replaced; QUIT lets a slow request in flight finish (with Connection: close),
closes idle keep-alive connections, removes the pidfile and exits 0. The master
never imports gevent.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest

from prefork_proxy import listeners
from prefork_proxy import pidfile as pidfile_module
from prefork_proxy.config import Listen
from prefork_proxy.pidfile import Pidfile
from prefork_proxy.values import parse_address
from tests.support.processes import ROOT, wait_for
from tests.support.wire import Response, Wire, get, request


def config(upstream_address: str, **top: str) -> str:
    settings = "".join(f"{key} = {value}\n" for key, value in top.items())
    return settings + f"""
[[server]]
listen = ["127.0.0.1:{{port}}"]
  [[server.location]]
  path = "/"
  proxy_pass = "{upstream_address}"
"""


def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prefork_proxy", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


# -- prefork-proxy -t ------------------------------------------------------------------------

def test_t_accepts_a_good_config_and_exits_0(tmp_path: Path) -> None:
    path = tmp_path / "good.toml"
    path.write_text(config("127.0.0.1:9").replace("{port}", "8080"))
    result = run_cli("-t", "-c", str(path))
    assert result.returncode == 0, result.stderr
    assert str(path) in result.stdout and "valid" in result.stdout


def test_t_rejects_a_bad_config_with_one_line_naming_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(config("127.0.0.1:9").replace("{port}", "8080") + """
  [[server.location]]
  path = "/api/"
  proxy_pass = "http://nosuch"
""")
    result = run_cli("-t", "-c", str(path))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"prefork-proxy: {path}: server[0].location[1].proxy_pass: ")
    assert "nosuch" in lines[0]
    assert result.stdout == ""


def test_t_rejects_an_unknown_key(tmp_path: Path) -> None:
    path = tmp_path / "typo.toml"
    path.write_text("graceful_timout = \"5s\"\n" + config("127.0.0.1:9").replace("{port}", "1"))
    result = run_cli("-t", "-c", str(path))
    assert result.returncode == 1
    assert result.stderr.strip() == f"prefork-proxy: {path}: graceful_timout: unknown setting"


def test_t_on_a_missing_file_exits_1_naming_it(tmp_path: Path) -> None:
    result = run_cli("-t", "-c", str(tmp_path / "absent.toml"))
    assert result.returncode == 1
    assert str(tmp_path / "absent.toml") in result.stderr


# -- binding -------------------------------------------------------------------------------

def test_a_port_already_in_use_is_a_one_line_error_and_status_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = tmp_path / "busy.toml"
        path.write_text(config("127.0.0.1:9").replace("{port}", str(port)))
        result = run_cli("-c", str(path))
    assert result.returncode == 1
    output = (result.stdout + result.stderr).strip()
    assert output == f"prefork-proxy: cannot listen on 127.0.0.1:{port}: address already in use"


# -- the running master --------------------------------------------------------------------

def test_process_titles_name_the_config_and_each_worker(start_proxy, upstream) -> None:  # noqa: ANN001
    proxy = start_proxy(config(upstream.address, workers="2"))
    master_title = " ".join(psutil.Process(proxy.pid).cmdline()).strip()
    assert master_title == f"prefork-proxy: master -c {proxy.config_path}"
    titles = wait_for(lambda: sorted(" ".join(w.cmdline()).strip() for w in proxy.workers())
                      if len(proxy.workers()) == 2 else None, message="two workers")
    assert titles == ["prefork-proxy: worker 1 [gen 1]", "prefork-proxy: worker 2 [gen 1]"]


def test_the_master_never_imports_gevent(start_proxy, upstream) -> None:  # noqa: ANN001
    proxy = start_proxy(config(upstream.address, workers="1"))
    master_maps = Path(f"/proc/{proxy.pid}/maps").read_text()
    assert "/gevent/" not in master_maps
    (worker,) = proxy.workers()
    assert "/gevent/" in Path(f"/proc/{worker.pid}/maps").read_text()  # the check can see it
    result = subprocess.run([sys.executable, "-c", (
        "import sys, prefork_proxy.cli, prefork_proxy.master, prefork_proxy.children;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('gevent', 'workers')))")],
        cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


def test_the_pidfile_holds_the_master_pid_and_is_removed_on_exit(
        start_proxy, upstream, tmp_path: Path) -> None:  # noqa: ANN001
    pidfile = tmp_path / "proxy.pid"
    proxy = start_proxy(config(upstream.address, workers="1", pidfile=f'"{pidfile}"'))
    assert pidfile.read_text().strip() == str(proxy.pid)
    proxy.signal(signal.SIGQUIT)
    assert proxy.popen.wait(15) == 0
    assert not pidfile.exists()


def test_the_pidfile_temporary_never_follows_a_planted_symlink(tmp_path: Path) -> None:
    # O_CREAT | O_EXCL | O_NOFOLLOW: a symlink at the temporary name is removed, not
    # written through; the file written is a new one of our own.
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    path = tmp_path / "proxy.pid"
    planted = tmp_path / f"proxy.pid.{os.getpid()}.tmp"
    planted.symlink_to(victim)
    Pidfile(str(path)).write(os.getpid())
    assert victim.read_text() == "precious\n"
    assert not path.is_symlink() and path.read_text() == f"{os.getpid()}\n"
    assert not planted.exists() and not planted.is_symlink()


def test_a_pidfile_temporary_that_cannot_be_removed_is_an_error(tmp_path: Path,
                                                                 monkeypatch) -> None:  # noqa: ANN001
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    planted = tmp_path / f"proxy.pid.{os.getpid()}.tmp"
    planted.symlink_to(victim)

    def refuse(path: object) -> None:  # a sticky directory and another owner, say
        raise PermissionError(1, "Operation not permitted", str(path))

    monkeypatch.setattr(pidfile_module.os, "unlink", refuse)
    with pytest.raises(OSError):
        Pidfile(str(tmp_path / "proxy.pid")).write(os.getpid())
    assert victim.read_text() == "precious\n"
    assert not (tmp_path / "proxy.pid").exists()


class _SocketModule:
    """listeners.py's view of the socket module, with a socket that records the
    mode of a unix socket's file the moment bind() returns."""

    def __init__(self, modes: list[int]) -> None:
        class Recording(socket.socket):
            def bind(self, address: object) -> None:
                super().bind(address)
                if isinstance(address, str):
                    modes.append(stat.S_IMODE(os.stat(address).st_mode))

        self.socket = Recording

    def __getattr__(self, name: str) -> object:
        return getattr(socket, name)


def test_a_unix_listener_is_created_with_its_final_mode_and_never_chmodded(
        monkeypatch) -> None:  # noqa: ANN001
    directory = tempfile.mkdtemp(prefix="listen-", dir="/tmp")  # sun_path: 108 bytes
    path = os.path.join(directory, "proxy.sock")
    modes: list[int] = []
    monkeypatch.setattr(listeners, "socket", _SocketModule(modes))

    def chmod(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"chmod{args}: the mode had a window")

    monkeypatch.setattr(os, "chmod", chmod)
    restrictive = os.umask(0o077)  # an operator's umask must not make it private
    try:
        sock = listeners.bind(Listen(parse_address(f"unix:{path}")))
        umask_after = os.umask(restrictive)
        sock.close()
        assert modes == [0o666], [oct(mode) for mode in modes]
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o666
        assert umask_after == 0o077, "bind() left the umask changed"
    finally:
        os.umask(restrictive)
        shutil.rmtree(directory)


def test_a_sigkilled_worker_is_replaced(start_proxy, upstream) -> None:  # noqa: ANN001
    proxy = start_proxy(config(upstream.address, workers="2"))
    before = wait_for(lambda: proxy.worker_pids() if len(proxy.worker_pids()) == 2 else None,
                      message="two workers")
    victim = min(before)
    victim_title = " ".join(psutil.Process(victim).cmdline()).strip()
    os.kill(victim, signal.SIGKILL)

    def replaced() -> set[int] | None:
        pids = proxy.worker_pids()
        return pids if len(pids) == 2 and victim not in pids else None

    after = wait_for(replaced, message="a replacement worker")
    (replacement,) = after - before
    assert " ".join(psutil.Process(replacement).cmdline()).strip() == victim_title
    wait_for(lambda: f"(pid {victim}, gen 1) exited with signal SIGKILL; replacing it"
             in proxy.log(), message="the log line about the dead worker")
    for index in range(10):
        assert get(proxy.port, f"/echo/after-kill-{index}").status == 200
    assert proxy.alive()


def slow_request_in_thread(port: int, path: str) -> tuple[threading.Thread, dict]:
    result: dict = {}

    def run() -> None:
        try:
            with Wire(port, timeout=30) as wire:
                wire.send(request("GET", path))
                result["response"] = wire.response()
                result["closed"] = wire.closed()
        except Exception as exc:  # noqa: BLE001 - reported by the test
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def upstream_saw(upstream, path: str) -> bool:  # noqa: ANN001
    return path in get(upstream.port, "/stats").json()["paths"]


def test_quit_lets_a_slow_request_in_flight_finish_then_the_master_exits_0(
        start_proxy, upstream) -> None:  # noqa: ANN001
    proxy = start_proxy(config(upstream.address, workers="1", graceful_timeout='"20s"'))
    thread, result = slow_request_in_thread(proxy.port, "/slow/2")
    wait_for(lambda: upstream_saw(upstream, "/slow/2"), message="the request upstream")
    started = time.monotonic()
    proxy.signal(signal.SIGQUIT)
    thread.join(15)
    assert "error" not in result, result.get("error")
    response: Response = result["response"]
    assert response.status == 200 and response.json()["path"] == "/slow/2"
    assert response.header("Connection") == "close"  # a draining worker keeps nothing open
    assert result["closed"]
    assert proxy.popen.wait(15) == 0
    assert time.monotonic() - started < 10  # not held for graceful_timeout
    assert "graceful stop requested" in proxy.log()


def test_quit_closes_idle_keep_alive_connections(start_proxy, upstream) -> None:  # noqa: ANN001
    proxy = start_proxy(config(upstream.address, workers="1", graceful_timeout='"30s"'))
    with Wire(proxy.port) as idle:
        idle.send(request("GET", "/echo/before-quit"))
        assert idle.response().status == 200
        started = time.monotonic()
        proxy.signal(signal.SIGQUIT)
        assert idle.closed(timeout=10), "the idle keep-alive connection stayed open"
    assert proxy.popen.wait(15) == 0
    assert time.monotonic() - started < 10


def test_term_is_a_fast_stop_that_does_not_wait_for_requests(start_proxy, upstream) -> None:  # noqa: ANN001
    proxy = start_proxy(config(upstream.address, workers="1", graceful_timeout='"30s"'))
    thread, result = slow_request_in_thread(proxy.port, "/slow/20")
    wait_for(lambda: upstream_saw(upstream, "/slow/20"), message="the request upstream")
    started = time.monotonic()
    proxy.signal(signal.SIGTERM)
    proxy.popen.wait(15)
    assert time.monotonic() - started < 8
    thread.join(10)
    assert "response" not in result  # cut off, never answered as if complete


@pytest.mark.parametrize("workers", [1, 2])
def test_every_worker_serves_from_the_shared_listening_socket(
        start_proxy, upstream, workers: int) -> None:  # noqa: ANN001
    proxy = start_proxy(config(upstream.address, workers=str(workers)))
    wait_for(lambda: len(proxy.worker_pids()) == workers, message=f"{workers} workers")
    for index in range(20):
        assert get(proxy.port, f"/echo/shared-{index}").status == 200


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_every_listen_address_kind_is_served(start_proxy, upstream, tmp_path: Path) -> None:  # noqa: ANN001
    unix_path = tmp_path / "proxy.sock"
    v6_port = free_port_v6() if ipv6_loopback() else None
    listens = ['"127.0.0.1:{port}"', f'"unix:{unix_path}"']
    if v6_port:
        listens.append(f'"[::1]:{v6_port}"')
    proxy = start_proxy(f"""
        workers = 1
        [[server]]
        listen = [{", ".join(listens)}]
          [[server.location]]
          path = "/"
          proxy_pass = "{upstream.address}"
    """)
    assert get(proxy.port, "/echo/tcp").status == 200
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(unix_path))
        sock.sendall(request("GET", "/echo/unix", headers=[("Connection", "close")]))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 ")
    assert b'"/echo/unix"' in data
    if v6_port:
        with socket.create_connection(("::1", v6_port), timeout=10) as sock:
            sock.sendall(request("GET", "/echo/v6", headers=[("Connection", "close")]))
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        assert data.startswith(b"HTTP/1.1 200 ")
        assert b'["X-Real-IP", "::1"]' in data
    proxy.signal(signal.SIGQUIT)
    assert proxy.popen.wait(15) == 0
    assert not unix_path.exists()  # the master removes the socket file it created


def free_port_v6() -> int:
    with socket.socket(socket.AF_INET6) as sock:
        sock.bind(("::1", 0))
        return sock.getsockname()[1]


def test_workers_auto_starts_one_worker_per_usable_core(start_proxy, upstream) -> None:  # noqa: ANN001
    proxy = start_proxy(config(upstream.address, workers='"auto"'))
    cores = len(os.sched_getaffinity(0))
    wait_for(lambda: len(proxy.worker_pids()) == cores, message=f"{cores} workers")
