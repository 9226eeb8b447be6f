"""The next_upstream settings and host names in `servers`, as the config reads them.

Errors name the key; a host name stands for every address it has (nginx, at
load and on each reload), and a name with none is an error ("host not found").
"""

from __future__ import annotations

import socket

import pytest

from prefork_proxy.config import ConfigError, Peer, parse_config
from prefork_proxy.next_upstream import DEFAULT, NextUpstream
from prefork_proxy.peer_names import resolve_peers
from prefork_proxy.values import Address

pytestmark = pytest.mark.timeout(30)


def config(location: dict | None = None, servers: list | None = None,
           **upstream: object) -> object:
    return parse_config({
        "upstream": {"app": {"servers": servers or ["127.0.0.1:8001"], **upstream}},
        "server": [{"listen": ["127.0.0.1:9000"],
                    "location": [{"path": "/", "proxy_pass": "http://app",
                                  **(location or {})}]}],
    }, "proxy.toml")


def error_of(**kw: object) -> str:
    with pytest.raises(ConfigError) as raised:
        config(**kw)
    return str(raised.value)


def test_the_default_is_error_timeout_with_no_limits() -> None:
    assert config().servers[0].locations[0].next_upstream == DEFAULT == NextUpstream(
        error=True, timeout=True, invalid_header=False, statuses=frozenset(),
        non_idempotent=False, tries=0, time_limit=0.0)


def test_the_values_tries_and_timeout_make_one_policy() -> None:
    location = config({"next_upstream": ["error", "http_503", "http_429", "non_idempotent"],
                       "next_upstream_tries": 2,
                       "next_upstream_timeout": "1500ms"}).servers[0].locations[0]
    assert location.next_upstream == NextUpstream(
        error=True, timeout=False, statuses=frozenset({503, 429}), non_idempotent=True,
        tries=2, time_limit=1.5)


def test_off_retries_nothing() -> None:
    policy = config({"next_upstream": ["off"]}).servers[0].locations[0].next_upstream
    assert (policy.error, policy.timeout, policy.invalid_header, policy.statuses) == (
        False, False, False, frozenset())


@pytest.mark.parametrize(("value", "message"), [
    (["http_404"], "proxy.toml: server[0].location[0].next_upstream: 'http_404': not a "
                   "next_upstream value (one of error, timeout, invalid_header, http_500, "
                   "http_502, http_503, http_504, http_429, non_idempotent, off)"),
    (["off", "error"], "proxy.toml: server[0].location[0].next_upstream: \"off\" stands alone"),
    ("error", "proxy.toml: server[0].location[0].next_upstream: 'error' is not a non-empty "
              "list of values: error, timeout, invalid_header, http_500, http_502, "
              "http_503, http_504, http_429, non_idempotent, off"),
])
def test_a_bad_next_upstream_is_named(value: object, message: str) -> None:
    assert error_of(location={"next_upstream": value}) == message


def test_bad_tries_and_timeout_are_named() -> None:
    assert error_of(location={"next_upstream_tries": -1}) == (
        "proxy.toml: server[0].location[0].next_upstream_tries: -1 is not a whole number >= 0")
    assert error_of(location={"next_upstream_timeout": "soon"}).startswith(
        "proxy.toml: server[0].location[0].next_upstream_timeout: 'soon' is not a duration")


# -- host names in servers ---------------------------------------------------------------------

def _localhost() -> list[Address]:
    found = []
    for family, _, _, _, sockaddr in socket.getaddrinfo("localhost", 8001, 0,
                                                        socket.SOCK_STREAM):
        address = Address(sockaddr[0], 8001)
        if family in (socket.AF_INET, socket.AF_INET6) and address not in found:
            found.append(address)
    return found


def test_a_name_becomes_a_peer_per_address_with_the_same_options() -> None:
    peers = config(servers=["localhost:8001 weight=3 max_fails=2 backup",
                            "127.0.0.1:8002"]).upstreams["app"].peers
    expected = [Peer(address, weight=3, max_fails=2, backup=True, name="localhost")
                for address in _localhost()]
    assert list(peers[:-1]) == expected
    assert peers[-1] == Peer(Address("127.0.0.1", 8002))


def test_a_proxy_pass_host_is_resolved_too() -> None:
    data = {"server": [{"listen": ["127.0.0.1:9000"],
                        "location": [{"path": "/", "proxy_pass": "http://localhost:8001"}]}]}
    upstream = parse_config(data, "proxy.toml").servers[0].locations[0].upstream
    assert upstream.name == "localhost:8001"
    assert [peer.address for peer in upstream.peers] == _localhost()


def test_a_name_that_does_not_resolve_is_named() -> None:
    message = error_of(servers=["127.0.0.1:8001", "no-such-host.invalid:8002"])
    assert message.startswith("proxy.toml: upstream.app.servers[1]: host not found: "
                              "'no-such-host.invalid'")


def test_both_families_and_no_repeats_from_the_resolver() -> None:
    def lookup(host: str, port: int, family: int, kind: int) -> list:
        assert (host, port, kind) == ("app.test", 80, socket.SOCK_STREAM)
        return [(socket.AF_INET, kind, 6, "", ("10.0.0.1", port)),
                (socket.AF_INET6, kind, 6, "", ("fd00::1", port, 0, 0)),
                (socket.AF_INET, kind, 6, "", ("10.0.0.1", port))]
    peers = resolve_peers(Peer(Address("app.test", 80), weight=2), lookup)
    assert peers == (Peer(Address("10.0.0.1", 80), weight=2, name="app.test"),
                     Peer(Address("fd00::1", 80), weight=2, name="app.test"))


def test_an_address_is_not_resolved() -> None:
    def lookup(*args: object) -> list:
        raise AssertionError("not asked")
    peer = Peer(Address("::1", 80))
    assert resolve_peers(peer, lookup) == (peer,)
    assert resolve_peers(Peer(Address(None, None, "/run/app.sock")), lookup)[0].name is None


def test_resolve_is_an_upstream_setting() -> None:
    assert config(resolve="30s").upstreams["app"].resolve == 30.0
    assert config().upstreams["app"].resolve == 0.0
