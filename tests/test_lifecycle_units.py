"""Pure parts of the master's lifecycle: generation rules, signal coalescing,
the pidfile's .oldbin dance, and how listeners are named and handed on."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

from prefork_proxy import listeners
from prefork_proxy.config import Config
from prefork_proxy.generations import Generations
from prefork_proxy.pidfile import Pidfile, read_pid
from prefork_proxy.signal_queue import SignalQueue
from tests.support.processes import ROOT


def test_a_reload_takes_over_and_counts_the_old_generation():
    generations = Generations()
    number = generations.start(Config(), deadline=10.0)
    assert number == 2 and generations.pending.number == 2
    assert generations.take_over() == 1
    assert (generations.current, generations.pending, generations.serving) == (2, None, True)


def test_a_newer_reload_supersedes_a_pending_one():
    generations = Generations()
    generations.start(Config(), 10.0)
    assert generations.start(Config(), 10.0) == 3
    generations.take_over()
    assert generations.current == 3 and generations.served == [1, 3]


def test_at_most_two_served_generations_drain():
    generations = Generations()
    for _ in range(3):
        generations.start(Config(), 10.0)
        generations.take_over()
    # Generations 1, 2 and 3 still have workers while 4 serves: stop the oldest.
    assert generations.too_many_draining({1, 2, 3, 4}) == [1]
    assert generations.too_many_draining({2, 3, 4}) == []


def test_superseded_generations_do_not_count_towards_the_draining_limit():
    generations = Generations()
    generations.start(Config(), 10.0)
    generations.take_over()  # 2 serves, 1 drains
    for _ in range(4):
        generations.start(Config(), 10.0)  # 3, 4, 5 superseded
    generations.take_over()  # 6 serves
    assert generations.too_many_draining({1, 2, 3, 4, 5, 6}) == []


def test_generations_that_exited_are_forgotten():
    generations = Generations()
    generations.start(Config(), 10.0)
    generations.take_over()
    generations.too_many_draining({2})
    assert generations.served == [2]


def test_signals_coalesce_except_ttin_and_ttou():
    queue = SignalQueue()
    for name in ("HUP", "HUP", "TTIN", "TTIN", "CHLD", "HUP", "CHLD", "TTOU"):
        queue.record(getattr(signal, f"SIG{name}"))
    assert [queue.pop() for _ in range(6)] == ["HUP", "TTIN", "TTIN", "CHLD", "TTOU", None]
    queue.record(signal.SIGHUP)  # coalescing is only among queued signals
    assert queue.pop() == "HUP"


def test_a_signal_wakes_the_queue_at_once():
    queue = SignalQueue()
    previous = signal.getsignal(signal.SIGUSR2)
    old_fd = signal.set_wakeup_fd(-1)
    try:
        queue.install([signal.SIGUSR2])
        os.kill(os.getpid(), signal.SIGUSR2)
        started = time.monotonic()
        queue.wait(5.0)
        assert time.monotonic() - started < 1.0 and queue.pop() == "USR2"
    finally:
        signal.set_wakeup_fd(old_fd)
        signal.signal(signal.SIGUSR2, previous)


def test_pidfile_oldbin_and_restore(tmp_path):
    pidfile = Pidfile(str(tmp_path / "p.pid"))
    pidfile.write(111)
    pidfile.rename_to_oldbin()
    assert read_pid(pidfile.oldbin) == 111 and not os.path.exists(pidfile.path)
    pidfile.restore_from_oldbin(111)
    assert read_pid(pidfile.path) == 111 and not os.path.exists(pidfile.oldbin)


def test_pidfile_is_removed_only_by_the_process_it_names(tmp_path):
    pidfile = Pidfile(str(tmp_path / "p.pid"))
    pidfile.write(os.getpid() + 1)  # another master's
    pidfile.remove()
    assert read_pid(pidfile.path) == os.getpid() + 1
    pidfile.write(os.getpid())
    pidfile.remove()
    assert not os.path.exists(pidfile.path)


def test_socket_keys_match_config_keys(tmp_path):
    with socket.socket() as v4:
        v4.bind(("127.0.0.1", 0))
        assert listeners.socket_key(v4) == f"127.0.0.1:{v4.getsockname()[1]}"
    with socket.socket(socket.AF_INET6) as v6:
        v6.bind(("::1", 0))
        assert listeners.socket_key(v6) == f"[::1]:{v6.getsockname()[1]}"
    path = str(tmp_path / "s.sock")
    with socket.socket(socket.AF_UNIX) as unix:
        unix.bind(path)
        assert listeners.socket_key(unix) == f"unix:{path}"


def test_listeners_are_handed_to_a_new_master_by_fd():
    """What USR2 does: PREFORK_PROXY_FDS names each socket's fd in the new process."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        key = listeners.socket_key(sock)
        env = dict(os.environ, PREFORK_PROXY_FDS=listeners.inherit_env({key: sock}))
        sock.set_inheritable(True)
        result = subprocess.run([sys.executable, "-c", textwrap.dedent("""
            import os
            from prefork_proxy import listeners
            found = listeners.inherited_sockets()
            print(sorted(found), os.environ.get("PREFORK_PROXY_FDS"))
        """)], env=env, pass_fds=(sock.fileno(),), cwd=ROOT, capture_output=True, text=True,
            timeout=30)
    assert result.stdout.strip() == f"['{key}'] None", result.stderr
