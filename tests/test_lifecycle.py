"""Worker health and process life with the real master on loopback: crashed and
hung workers are replaced, RSS and request limits recycle workers without a
failed request, boot failures stop the first generation, crash loops back
off, workers drop privileges, and USR2/WINCH/QUIT hand over to a new binary.
"""

from __future__ import annotations

import os
import pwd
import re
import signal
import time
from pathlib import Path

import psutil
import pytest

from tests.support.lifecycle import Load, children_of, get, proxy_config
from tests.support.processes import wait_for


def test_a_killed_worker_is_replaced_within_two_seconds(start_proxy, upstream):
    proxy = start_proxy(proxy_config(upstream.port, workers=2))
    before = wait_for(lambda: (lambda p: len(p) == 2 and p)(proxy.worker_pids()))
    victim = min(before)
    killed = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(proxy.worker_pids() - before) == 1 and victim not in
             proxy.worker_pids() and len(proxy.worker_pids()) == 2, 2.0,
             message="a replacement worker")
    print(f"\nreplaced in {time.monotonic() - killed:.2f}s")
    assert "exited with signal SIGKILL; replacing it" in proxy.log()
    for _ in range(10):
        assert get(proxy.port)[0] == 200


def test_a_stopped_worker_is_killed_after_worker_timeout_and_replaced(start_proxy, upstream):
    proxy = start_proxy(proxy_config(upstream.port, workers=2, worker_timeout="2s"))
    before = wait_for(lambda: (lambda p: len(p) == 2 and p)(proxy.worker_pids()))
    victim = min(before)
    os.kill(victim, signal.SIGSTOP)
    stopped = time.monotonic()
    wait_for(lambda: victim not in proxy.worker_pids() and len(proxy.worker_pids()) == 2, 8,
             message="the hung worker to be killed and replaced")
    took = time.monotonic() - stopped
    assert took >= 1.5, f"killed after {took:.1f}s, before worker_timeout"
    assert re.search(rf"\(pid {victim}\) sent no heartbeat for [\d.]+s \(worker_timeout 2.0s\)"
                     r"; killing it", proxy.log())
    assert get(proxy.port)[0] == 200


def test_rss_limit_recycles_workers_without_a_failed_request(start_proxy, upstream):
    # 1 MiB: every worker is over it, so each is recycled after three samples.
    proxy = start_proxy(proxy_config(upstream.port, workers=2, max_worker_rss="1MiB",
                                     graceful_timeout="10s", access_log="off"))
    first = proxy.worker_pids()
    with Load(proxy.port) as load:
        wait_for(lambda: proxy.log().count("is over max_worker_rss; recycling") >= 3, 30,
                 message="three recycled workers")
        wait_for(lambda: not first & proxy.worker_pids(), 15,
                 message="the first workers to be gone")
        load.wait_for_requests(20)
    assert not load.failures, load.summary()
    assert len(proxy.worker_pids()) in (2, 3, 4)  # recycling never drops below two
    print(f"\nRSS recycling under load: {load.summary()}")


def test_max_requests_recycles_workers_without_a_failed_request(start_proxy, upstream):
    proxy = start_proxy(proxy_config(upstream.port, workers=2, max_requests=60,
                                     max_requests_jitter=20, access_log="off"))
    first = proxy.worker_pids()
    with Load(proxy.port) as load:
        wait_for(lambda: proxy.log().count("(max_requests); recycling") >= 3, 40,
                 message="three recycled workers")
        wait_for(lambda: not first & proxy.worker_pids(), 15,
                 message="the first workers to be gone")
        load.wait_for_requests(20)
    assert not load.failures, load.summary()
    served = [int(n) for n in re.findall(r"served (\d+) requests", proxy.log())]
    assert all(n >= 60 for n in served), served
    print(f"\nmax_requests recycling under load: {load.summary()}")


def test_first_generation_boot_failure_stops_the_master(start_proxy, upstream):
    proxy = start_proxy(proxy_config(upstream.port, workers=2, user="nonexistent-user"),
                        wait=False)
    assert proxy.popen.wait(20) != 0
    log = proxy.log()
    assert "could not start: user 'nonexistent-user' does not exist" in log
    assert "stopping" in log and "Traceback" not in log
    assert " is serving" not in log


def test_a_crash_loop_backs_off(start_proxy, upstream):
    proxy = start_proxy(proxy_config(upstream.port, workers=1))
    for _ in range(5):  # the worker dies right after each start
        pid = wait_for(lambda: (lambda p: len(p) == 1 and p)(proxy.worker_pids()), 10,
                       message="a worker").pop()
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda p=pid: p not in proxy.worker_pids())
    delays = [float(d) for d in re.findall(r"replacing it in ([\d.]+)s", proxy.log())]
    assert delays[-4:] == [0.2, 0.4, 0.8, 1.6] or delays == [0.1, 0.2, 0.4, 0.8], delays
    wait_for(lambda: len(proxy.worker_pids()) == 1, 10, message="a worker after the backoff")
    assert get(proxy.port)[0] == 200


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_workers_drop_privileges_while_the_master_binds(start_proxy, upstream):
    nobody = pwd.getpwnam("nobody")
    proxy = start_proxy(proxy_config(upstream.port, workers=2, user="nobody",
                                     access_log="off"))
    assert psutil.Process(proxy.pid).uids().real == 0
    workers = wait_for(lambda: (lambda w: len(w) == 2 and w)(proxy.workers()))
    for worker in workers:
        assert worker.uids() == (nobody.pw_uid,) * 3
        assert worker.gids() == (nobody.pw_gid,) * 3
    assert get(proxy.port)[0] == 200
    # The master can still signal and reload its unprivileged workers.
    proxy.signal(signal.SIGHUP)
    proxy.wait_serving(2)
    wait_for(lambda: not {w.pid for w in workers} & proxy.worker_pids(), 10)


@pytest.mark.timeout(180)
def test_usr2_winch_quit_hands_over_under_load(start_proxy, upstream, tmp_path: Path):
    pidfile = tmp_path / "proxy.pid"
    oldbin = Path(f"{pidfile}.oldbin")
    proxy = start_proxy(proxy_config(upstream.port, workers=2, pidfile=str(pidfile),
                                     access_log="off", graceful_timeout="10s"))
    old_workers = proxy.worker_pids()
    with Load(proxy.port) as load:
        proxy.signal(signal.SIGUSR2)
        new_master = wait_for(lambda: new_masters(proxy.pid), message="the new master")[0]
        wait_for(lambda: f"{new_master} master gen 1: generation 1 is serving" in proxy.log(), 20,
                 message="the new master to serve")
        assert int(pidfile.read_text()) == new_master
        assert int(oldbin.read_text()) == proxy.pid
        load.wait_for_requests(20)
        proxy.signal(signal.SIGWINCH)  # the old master drains its workers, but stays
        wait_for(lambda: not old_workers & worker_pids(proxy.pid), 15,
                 message="the old workers to drain")
        assert proxy.alive()
        load.wait_for_requests(50)
        proxy.signal(signal.SIGQUIT)
        assert proxy.popen.wait(15) == 0
        load.wait_for_requests(50)
    assert not load.failures, load.summary()
    assert int(pidfile.read_text()) == new_master and not oldbin.exists()
    assert len(worker_pids(new_master)) == 2
    print(f"\nUSR2 hand-over under load: {load.summary()}")


def test_a_new_master_that_fails_leaves_the_old_one_serving(start_proxy, upstream, tmp_path):
    pidfile = tmp_path / "proxy.pid"
    proxy = start_proxy(proxy_config(upstream.port, workers=1, pidfile=str(pidfile)))
    proxy.config_path.write_text(proxy.config_path.read_text() + "bogus = 1\n")
    proxy.signal(signal.SIGUSR2)
    wait_for(lambda: "this master keeps serving" in proxy.log(), 20,
             message="the new master to fail")
    assert "bogus: unknown setting" in proxy.log()
    assert int(pidfile.read_text()) == proxy.pid
    assert not Path(f"{pidfile}.oldbin").exists()
    assert get(proxy.port)[0] == 200


def new_masters(pid: int) -> list[int]:
    return [c.pid for c in children_of(pid) if _title(c).startswith("prefork-proxy: master")]


def worker_pids(pid: int) -> set[int]:
    return {c.pid for c in children_of(pid) if _title(c).startswith("prefork-proxy: worker")}


def _title(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def test_workers_drain_and_exit_when_the_master_dies(start_proxy, upstream):
    proxy = start_proxy(proxy_config(upstream.port, workers=2))
    workers = wait_for(lambda: (lambda w: len(w) == 2 and w)(proxy.workers()))
    proxy.signal(signal.SIGKILL)
    wait_for(lambda: not any(_running(w) for w in workers), 10,
             message="orphaned workers to exit")
    assert "the master (pid" in proxy.log() and "is gone; draining" in proxy.log()


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
