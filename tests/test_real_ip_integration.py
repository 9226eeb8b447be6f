"""realip end to end: the real master, real upstreams and a real status listener.

One proxy with three servers: on the first, 127.0.0.1 is a trusted proxy
(the top-level real_ip_from) and its X-Forwarded-For names the client; the
second trusts only 10.0.0.0/8, so the same header from 127.0.0.1 changes
nothing; the third balances by ip_hash over two upstreams, which must see each
real client pinned to its own peer. The status listener's `allow` judges the
address the trusted header names.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.processes import Upstream, free_port, wait_for
from tests.support.sites import Site, access_line, headers_seen, running_site
from tests.support.status import fetch
from tests.support.wire import Wire, get, request

pytestmark = pytest.mark.timeout(60)

# ip_hash over two peers (nginx's hash of the first three octets): 203.0.113.7 and
# 127.0.0.1 go to the first, 192.0.2.1 to the second (workers/balancing.py).
FIRST_PEER_CLIENT, SECOND_PEER_CLIENT = "203.0.113.7", "192.0.2.1"


class Ports:
    untrusting = free_port()
    hashing = free_port()
    status = free_port()


@pytest.fixture(scope="module")
def second_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    upstream = Upstream(tmp_path_factory.mktemp("second_upstream") / "upstream.log")
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, second_upstream: Upstream) -> Iterator[Site]:
    with running_site(tmp_path_factory.mktemp("real_ip"), f"""
        workers = 1
        access_log = "{{dir}}/access.log"
        real_ip_from = ["127.0.0.1"]
        real_ip_header = "X-Forwarded-For"
        [status]
        listen = "127.0.0.1:{Ports.status}"
        allow = ["203.0.113.0/24"]
        [upstream.pair]
        servers = ["{{upstream}}", "{second_upstream.address}"]
        balance = "ip_hash"
        [[server]]
        listen = ["127.0.0.1:{{port}}"]
          [[server.location]]
          path = "/"
          proxy_pass = "http://{{upstream}}"
        [[server]]
        listen = ["127.0.0.1:{Ports.untrusting}"]
        real_ip_from = ["10.0.0.0/8"]
          [[server.location]]
          path = "/"
          proxy_pass = "http://{{upstream}}"
        [[server]]
        listen = ["127.0.0.1:{Ports.hashing}"]
          [[server.location]]
          path = "/"
          proxy_pass = "http://pair"
    """) as running:
        yield running




def test_a_trusted_proxy_s_x_forwarded_for_names_the_client_upstream_and_in_the_log(
        site: Site) -> None:
    response = get(site.port, "/echo/trusted", headers=[("X-Forwarded-For", "203.0.113.7")])
    assert response.status == 200
    headers = headers_seen(response)
    assert headers["x-real-ip"] == ["203.0.113.7"]
    # nginx's $proxy_add_x_forwarded_for: the list, then $remote_addr (realip's).
    assert headers["x-forwarded-for"] == ["203.0.113.7, 203.0.113.7"]
    assert access_line(site, "/echo/trusted").startswith("203.0.113.7 - - [")


def test_the_rightmost_address_is_taken_without_recursion(site: Site) -> None:
    response = get(site.port, "/echo/list", headers=[("X-Forwarded-For", "198.51.100.1"),
                                                      ("X-Forwarded-For", "203.0.113.9, 10.1.1.1")])
    assert headers_seen(response)["x-real-ip"] == ["10.1.1.1"]


def test_an_invalid_address_leaves_the_connection_s_own(site: Site) -> None:
    response = get(site.port, "/echo/invalid", headers=[("X-Forwarded-For", "unknown")])
    assert headers_seen(response)["x-real-ip"] == ["127.0.0.1"]


def test_each_request_on_a_keep_alive_connection_is_judged_afresh(site: Site) -> None:
    with Wire(site.port) as wire:
        wire.send(request("GET", "/echo/first", headers=[("X-Forwarded-For", "203.0.113.7")]))
        assert headers_seen(wire.response())["x-real-ip"] == ["203.0.113.7"]
        wire.send(request("GET", "/echo/second"))
        second = wire.response()
        assert headers_seen(second)["x-real-ip"] == ["127.0.0.1"]
        assert headers_seen(second)["x-forwarded-for"] == ["127.0.0.1"]
    assert access_line(site, "/echo/second").startswith("127.0.0.1 - - [")


def test_an_untrusted_peer_s_header_changes_nothing(site: Site) -> None:
    response = get(Ports.untrusting, "/echo/untrusted",
                   headers=[("X-Forwarded-For", "203.0.113.7")])
    headers = headers_seen(response)
    assert headers["x-real-ip"] == ["127.0.0.1"]
    assert headers["x-forwarded-for"] == ["203.0.113.7, 127.0.0.1"]
    assert access_line(site, "/echo/untrusted").startswith("127.0.0.1 - - [")


def test_ip_hash_pins_each_real_client_to_its_peer(site: Site, second_upstream: Upstream) -> None:
    for number in range(6):
        for client in (FIRST_PEER_CLIENT, SECOND_PEER_CLIENT):
            response = get(Ports.hashing, f"/echo/hash/{client}/{number}",
                           headers=[("X-Forwarded-For", client)])
            assert response.status == 200
    first = [path for path in site.upstream_stats()["paths"] if path.startswith("/echo/hash/")]
    second = [path for path in get(second_upstream.port, "/stats").json()["paths"]
              if path.startswith("/echo/hash/")]
    assert sorted(first) == sorted(f"/echo/hash/{FIRST_PEER_CLIENT}/{n}" for n in range(6))
    assert sorted(second) == sorted(f"/echo/hash/{SECOND_PEER_CLIENT}/{n}" for n in range(6))


def test_the_status_allow_list_judges_the_real_address(site: Site) -> None:
    def status_of(*forwarded: str) -> int:
        response = get(Ports.status, "/status.json",
                       headers=[("X-Forwarded-For", value) for value in forwarded])
        return response.status

    assert status_of("203.0.113.7") == 200
    assert status_of("198.51.100.1") == 403
    assert status_of() == 403  # 127.0.0.1 itself is not in allow
    assert fetch(Ports.status, "/status.json")[0] == 403
    wait_for(lambda: "refused: not in [status] allow" in site.proxy.log()
             and "from 198.51.100.1 refused" in site.proxy.log(),
             message="the refusal logged with the real address")
