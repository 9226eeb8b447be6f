"""realip (workers/real_ip.py), nginx's ngx_http_realip_module: the address a trusted
proxy names, recursive or not, from the right end of the header's list."""

from __future__ import annotations

import ipaddress

import pytest

from prefork_proxy.config import ConfigError, RealIp, parse_config
from workers.real_ip import RealIpRule, forwarded_address, parse_address

pytestmark = pytest.mark.timeout(30)

TRUSTED = [ipaddress.ip_network(text) for text in ("10.0.0.0/8", "127.0.0.1/32", "::1/128")]


def trusts(address: str) -> bool:
    return any(ipaddress.ip_address(address) in network for network in TRUSTED)


def walk(*values: bytes, recursive: bool = False) -> tuple[str, bytes] | None:
    return forwarded_address(list(values), trusts, recursive)


def test_without_recursion_the_last_address_is_taken_even_a_trusted_one() -> None:
    assert walk(b"203.0.113.7, 10.0.0.2") == ("10.0.0.2", b"")
    assert walk(b"203.0.113.7") == ("203.0.113.7", b"")


def test_with_recursion_the_rightmost_untrusted_address_is_taken() -> None:
    assert walk(b"198.51.100.1, 203.0.113.7, 10.0.0.2, 127.0.0.1", recursive=True) == \
        ("203.0.113.7", b"")


def test_with_recursion_all_trusted_gives_the_leftmost() -> None:
    assert walk(b"10.0.0.9, 10.0.0.2,127.0.0.1", recursive=True) == ("10.0.0.9", b"")


def test_every_occurrence_of_the_header_is_one_list() -> None:
    assert walk(b"198.51.100.1, 203.0.113.7", b"10.0.0.2", recursive=True) == \
        ("203.0.113.7", b"")
    assert walk(b"198.51.100.1", b"10.0.0.2") == ("10.0.0.2", b"")


def test_an_invalid_last_address_leaves_the_address_unchanged() -> None:
    assert walk(b"203.0.113.7, unknown") is None
    assert walk(b"203.0.113.7, 300.1.1.1", recursive=True) is None
    assert walk(b"") is None
    assert walk(b" , ,") is None


def test_an_invalid_address_ends_the_recursive_walk_at_the_last_good_one() -> None:
    # nginx: the walk stops; the trusted address found before it stands.
    assert walk(b"203.0.113.7, garbage, 10.0.0.2", recursive=True) == ("10.0.0.2", b"")


def test_ipv6_addresses_are_read_and_made_canonical() -> None:
    assert walk(b"2001:DB8::0:7, ::1", recursive=True) == ("2001:db8::7", b"")
    assert walk(b"[2001:db8::7]:8443") == ("2001:db8::7", b"8443")


def test_an_address_may_carry_a_port_as_nginx_reads_it() -> None:
    assert parse_address(b"203.0.113.7:5678") == ("203.0.113.7", b"5678")
    assert parse_address(b"[::1]") == ("::1", b"")
    for text in (b"203.0.113.7:0", b"203.0.113.7:65536", b"203.0.113.7:x", b"[1.2.3.4]",
                 b"[::1", b"[::1]x", b"fe80::1%eth0", b"localhost", b"\xff", b"1.2.3"):
        assert parse_address(text) is None, text


def _rule(**settings: object) -> RealIpRule:
    defaults = {"real_ip_from": tuple(TRUSTED)}
    return RealIpRule(RealIp(**{**defaults, **settings}))


def test_an_untrusted_connection_gets_no_rule() -> None:
    rule = _rule(real_ip_header="X-Forwarded-For")
    assert rule.for_connection("127.0.0.1") is rule
    assert rule.for_connection("192.0.2.1") is None
    assert rule.for_connection("unix:") is None


def test_proxy_protocol_is_no_header_rule() -> None:
    assert _rule(real_ip_header="proxy_protocol").for_connection("127.0.0.1") is None


def test_the_status_listener_reads_the_joined_header_from_the_environ() -> None:
    rule = _rule(real_ip_header="X-Forwarded-For", real_ip_recursive=True)
    environ = {"HTTP_X_FORWARDED_FOR": "203.0.113.7,10.0.0.1"}
    assert rule.address_in_environ("127.0.0.1", environ) == "203.0.113.7"
    assert rule.address_in_environ("192.0.2.1", environ) == "192.0.2.1"
    assert rule.address_in_environ("127.0.0.1", {}) == "127.0.0.1"


# -- config ----------------------------------------------------------------------------

BASE = {"server": [{"listen": ["127.0.0.1:1"],
                    "location": [{"path": "/", "proxy_pass": "127.0.0.1:2"}]}]}


def test_top_level_settings_are_every_server_s_defaults_and_a_server_overrides() -> None:
    server = {**BASE["server"][0], "real_ip_recursive": True}
    config = parse_config({"real_ip_from": ["127.0.0.1", "::1"],
                           "real_ip_header": "X-Forwarded-For", "server": [server]}, "p.toml")
    assert config.real_ip == RealIp((ipaddress.ip_network("127.0.0.1/32"),
                                     ipaddress.ip_network("::1/128")), "X-Forwarded-For", False)
    assert config.servers[0].real_ip == RealIp(config.real_ip.real_ip_from,
                                               "X-Forwarded-For", True)


def test_nginx_defaults() -> None:
    assert parse_config(BASE, "p.toml").servers[0].real_ip == RealIp((), "X-Real-IP", False)


@pytest.mark.parametrize(("settings", "message"), [
    ({"real_ip_from": ["10.0.0.0/33"]}, "p.toml: real_ip_from: '10.0.0.0/33' is not an address"),
    ({"real_ip_from": "10.0.0.0/8"}, "p.toml: real_ip_from: must be a list"),
    ({"real_ip_header": "X Real"}, "p.toml: real_ip_header: 'X Real' is not a header name"),
    ({"real_ip_header": ""}, "p.toml: real_ip_header: '' is not a header name"),
    ({"real_ip_recursive": "on"}, "p.toml: real_ip_recursive: 'on' is not true or false"),
])
def test_bad_settings_name_their_key(settings: dict, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({**BASE, **settings}, "p.toml")
    assert str(error.value).startswith(message)


def test_a_bad_server_setting_names_the_server() -> None:
    server = {**BASE["server"][0], "real_ip_header": 5}
    with pytest.raises(ConfigError, match=r"^p\.toml: server\[0\]\.real_ip_header: 5 is not"):
        parse_config({"server": [server]}, "p.toml")
