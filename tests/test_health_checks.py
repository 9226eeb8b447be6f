"""Active health checks through the real master: one checker for the whole host.

A hung peer (it accepts, reads, never answers) is taken out by the checks
before a client request reaches it, and put back once it answers; the check
traffic is one check per interval per peer whatever the number of workers;
the checker is a process of its own, restarted when killed and replaced by a
HUP with the new config's checks.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator

import psutil
import pytest

from tests.support.health_peer import HealthPeer
from tests.support.processes import Proxy, wait_for
from tests.support.raw_http import exchange

pytestmark = pytest.mark.timeout(60)

CHECK = '{ path = "/healthz", interval = "0.2s", timeout = "0.2s", rise = 2, fall = 2 }'


@pytest.fixture
def peers() -> Iterator[list[HealthPeer]]:
    made: list[HealthPeer] = []
    yield made
    for peer in made:
        peer.close()


def peer(peers: list[HealthPeer], hung: bool = False) -> HealthPeer:
    made = HealthPeer(hung)
    peers.append(made)
    return made


def config(*servers: HealthPeer, workers: int = 1, check: str = CHECK) -> str:
    listed = ", ".join(f'"{server.address}"' for server in servers)
    return f"""
        workers = {workers}
        access_log = "off"
        [upstream.app]
        servers = [{listed}]
        health_check = {check}
        [[server]]
        listen = ["127.0.0.1:{{port}}"]
          [[server.location]]
          path = "/"
          proxy_pass = "http://app"
          read_timeout = "5s"
    """


def get(port: int, path: str = "/work") -> tuple[int, bytes, float]:
    started = time.monotonic()
    reply = exchange(port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                     .encode(), timeout=10)
    return reply.status, reply.body, time.monotonic() - started


def checkers(proxy: Proxy) -> list[psutil.Process]:
    try:
        children = psutil.Process(proxy.pid).children()
    except psutil.NoSuchProcess:
        return []
    found = []
    for child in children:
        try:
            if " ".join(child.cmdline()).startswith("prefork-proxy: health checker"):
                found.append(child)
        except psutil.Error:
            continue
    return found


def logged(proxy: Proxy, line: str) -> bool:
    return line in proxy.log()


def test_a_hung_peer_is_taken_out_before_a_request_reaches_it_and_put_back(
        start_proxy, peers) -> None:
    hung, good = peer(peers, hung=True), peer(peers)
    proxy = start_proxy(config(hung, good, workers=2))
    wait_for(lambda: logged(proxy, f"peer {hung.address} of upstream app is DOWN: "
                                   "timeout after 0.2s"), message="the hung peer DOWN")
    for number in range(20):
        status, body, took = get(proxy.port, f"/work/{number}")
        assert (status, body) == (200, f"peer {good.port}".encode())
        assert took < 1.0
    assert hung.proxied("/healthz") == 0
    assert hung.count("/healthz") >= 2  # the checks did reach it
    hung.hung = False  # it recovers: answers from now on
    wait_for(lambda: logged(proxy, f"peer {hung.address} of upstream app is UP: status 200"),
             message="the peer UP again")
    bodies = {get(proxy.port)[1] for _ in range(6)}
    assert bodies == {f"peer {hung.port}".encode(), f"peer {good.port}".encode()}
    assert hung.proxied("/healthz") >= 1


def test_when_every_peer_is_down_clients_get_502_at_once(start_proxy, peers) -> None:
    hung = peer(peers, hung=True)
    proxy = start_proxy(config(hung))
    wait_for(lambda: logged(proxy, f"peer {hung.address} of upstream app is DOWN"),
             message="the only peer DOWN")
    status, _, took = get(proxy.port)
    assert status == 502 and took < 1.0
    assert "no live upstreams" in proxy.log()
    assert hung.proxied("/healthz") == 0


@pytest.mark.parametrize("workers", [2, 4])
def test_one_check_per_interval_per_peer_whatever_the_number_of_workers(
        start_proxy, peers, workers: int) -> None:
    first, second = peer(peers), peer(peers)
    proxy = start_proxy(config(first, second, workers=workers))
    wait_for(lambda: len(proxy.workers()) == workers, message="every worker")
    assert len(checkers(proxy)) == 1
    before = (first.count("/healthz"), second.count("/healthz"))
    started = time.monotonic()
    time.sleep(3.0)  # the measuring window itself, not a wait for a condition
    elapsed = time.monotonic() - started
    expected = elapsed / 0.2
    for server, count in zip((first, second), before, strict=True):
        seen = server.count("/healthz") - count
        assert 0.7 * expected <= seen <= 1.3 * expected, (seen, expected)


def test_the_checker_is_restarted_when_killed(start_proxy, peers) -> None:
    server = peer(peers)
    proxy = start_proxy(config(server))
    (checker,) = wait_for(lambda: checkers(proxy), message="the checker")
    checker.send_signal(signal.SIGKILL)
    replacement = wait_for(lambda: [c for c in checkers(proxy) if c.pid != checker.pid],
                           message="a new checker")
    assert len(replacement) == 1
    assert (f"health checker (pid {checker.pid}, gen 1) exited with signal SIGKILL"
            in proxy.log())
    count = server.count("/healthz")
    wait_for(lambda: server.count("/healthz") >= count + 3, message="checks going on")


def test_a_hup_replaces_the_checker_with_the_new_configs_checks(start_proxy, peers) -> None:
    server = peer(peers)
    proxy = start_proxy(config(server))
    (old,) = wait_for(lambda: checkers(proxy), message="the checker")
    proxy.config_path.write_text(proxy.config_path.read_text().replace("/healthz", "/ready"))
    proxy.signal(signal.SIGHUP)
    wait_for(lambda: server.count("/ready") >= 1, message="checks of the new path")
    wait_for(lambda: not old.is_running() or old.status() == psutil.STATUS_ZOMBIE,
             message="the old checker gone")
    (new,) = wait_for(lambda: checkers(proxy), message="one checker")
    assert new.pid != old.pid
    assert re.search(r"prefork-proxy: health checker \[gen 2\]", " ".join(new.cmdline()))
    healthz, ready = server.count("/healthz"), server.count("/ready")
    wait_for(lambda: server.count("/ready") >= ready + 5, message="more checks")
    assert server.count("/healthz") == healthz
