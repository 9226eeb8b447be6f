"""Active health checks, bytes and states alone: no sockets.

HAProxy's counter (rise/fall, starting UP one failure from DOWN), `expect`
parsing, the config's errors naming their keys, the health board's cells, the
balancer skipping DOWN peers (backups next, then none: "no live upstreams"),
and the exact check requests and how their replies are judged.
"""

from __future__ import annotations

import struct
import tomllib

import pytest

from prefork_proxy.config import ConfigError, parse_config
from prefork_proxy.health_board import CELL, DOWN, UNKNOWN, UP, HealthBoard, attach
from prefork_proxy.health_check import HealthCheck, parse_expect
from prefork_proxy.health_checker import targets
from prefork_proxy.health_probes import Target, http_request, reply_status, uwsgi_request
from prefork_proxy.health_state import PeerHealth
from prefork_proxy.values import parse_address
from tests.support.exchange_fixtures import upstream
from workers.balancing import Balancer

pytestmark = pytest.mark.timeout(30)


def config_text(check: str, directive: str = "proxy_pass", extra: str = "") -> str:
    return f"""
workers = 1
[upstream.app]
servers = ["127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003 backup"]
health_check = {check}
[[server]]
listen = ["127.0.0.1:8080"]
  [[server.location]]
  path = "/"
  {directive} = "app"
{extra}
"""


def load(text: str):  # noqa: ANN201
    return parse_config(tomllib.loads(text), "proxy.toml")


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(text)
    return [error.line for error in caught.value.errors]


# -- the state machine ---------------------------------------------------------------

def run(health: PeerHealth, results: str) -> str:
    """Feed "+" (pass) and "-" (fail); the state after each: U or D."""
    out = []
    for result in results:
        health.record(result == "+")
        out.append("U" if health.up else "D")
    return "".join(out)


def test_a_peer_starts_up_and_its_first_failed_check_takes_it_down() -> None:
    # HAProxy's default init-state up: the counter starts at `rise`.
    assert run(PeerHealth(rise=2, fall=3), "-") == "D"


def test_once_confirmed_up_fall_failures_in_a_row_take_it_down() -> None:
    assert run(PeerHealth(rise=2, fall=3), "+--+---") == "UUUUUUD"


def test_rise_successes_in_a_row_bring_a_down_peer_back() -> None:
    assert run(PeerHealth(rise=2, fall=3), "-+-++") == "DDDDU"


def test_rise_and_fall_of_one_flip_on_every_change() -> None:
    assert run(PeerHealth(rise=1, fall=1), "+-+-") == "UDUD"


def test_record_says_when_the_state_changed() -> None:
    health = PeerHealth(rise=2, fall=2)
    assert [health.record(ok) for ok in (True, False, False, True, True, True)] == \
        [False, False, True, False, True, False]


# -- expect --------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "ranges"), [
    ("200-399", ((200, 399),)),
    ("200,204", ((200, 200), (204, 204))),
    (200, ((200, 200),)),
    ([200, "300-301"], ((200, 200), (300, 301))),
    (" 204 , 500-599 ", ((204, 204), (500, 599))),
])
def test_expect_takes_a_range_a_list_or_a_status(value: object, ranges: tuple) -> None:
    assert parse_expect(value) == ranges


@pytest.mark.parametrize("value", ["2xx", "399-200", "99", "600", "", [], True, 1.5, "200-"])
def test_expect_refuses_what_is_not_statuses(value: object) -> None:
    with pytest.raises(ValueError):
        parse_expect(value)


def test_passes_judges_a_status_by_the_ranges() -> None:
    check = HealthCheck(path="/", expect=parse_expect("200,204"))
    assert [check.passes(s) for s in (200, 204, 201, 503)] == [True, True, False, False]
    assert HealthCheck().passes(302) and not HealthCheck().passes(404)  # 2xx/3xx


# -- config --------------------------------------------------------------------------

def test_a_health_check_is_read_with_haproxy_defaults_for_what_is_left_out() -> None:
    config = load(config_text('{ path = "/healthz", interval = "500ms", fall = 4 }'))
    assert config.upstreams["app"].health_check == HealthCheck(
        path="/healthz", interval=0.5, timeout=1.0, rise=2, fall=4, expect=((200, 399),))
    assert load(config_text("{}")).upstreams["app"].health_check == HealthCheck()


def test_config_errors_name_the_key_of_the_check() -> None:
    text = config_text('{ path = "healthz", interval = "0s", timeout = "x", rise = 0, '
                       'fall = true, expect = "2xx", port = 1 }')
    assert errors_of(text) == [
        "proxy.toml: upstream.app.health_check.path: 'healthz' is not a path starting "
        "with / (no spaces)",
        "proxy.toml: upstream.app.health_check.interval: '0s' must be more than 0s",
        "proxy.toml: upstream.app.health_check.timeout: 'x' is not a duration "
        "(write e.g. \"500ms\", \"30s\", \"5m\")",
        "proxy.toml: upstream.app.health_check.rise: 0 is not a whole number >= 1",
        "proxy.toml: upstream.app.health_check.fall: True is not a whole number >= 1",
        "proxy.toml: upstream.app.health_check.expect: '2xx': '2xx' is not a status "
        "from 100 to 599",
        "proxy.toml: upstream.app.health_check.port: unknown setting (one of path, "
        "interval, timeout, rise, fall, expect)",
    ]


def test_a_check_that_is_not_a_table_or_expects_without_a_path_is_refused() -> None:
    assert errors_of(config_text('"/healthz"')) == [
        "proxy.toml: upstream.app.health_check: must be a table, e.g. "
        "{ path = \"/healthz\", interval = \"2s\" }"]
    assert errors_of(config_text('{ expect = "200" }')) == [
        "proxy.toml: upstream.app.health_check.expect: needs `path`: a TCP connect "
        "check has no status"]


def test_a_path_check_must_speak_one_protocol_to_its_upstream() -> None:
    mixed = config_text('{ path = "/healthz" }', extra='  [[server.location]]\n'
                        '  path = "/u/"\n  uwsgi_pass = "app"')
    assert errors_of(mixed) == [
        "proxy.toml: upstream.app.health_check.path: the upstream serves both proxy_pass "
        "and uwsgi_pass: a path check speaks one protocol; omit path for a TCP check"]
    assert load(mixed.replace('path = "/healthz" ', ""))  # a TCP check is fine


def test_each_peer_gets_the_check_its_locations_speak() -> None:
    def kinds(text: str) -> list[str]:
        return [target.protocol for target in targets(load(text))]

    assert kinds(config_text("{}")) == ["tcp"] * 3
    assert kinds(config_text('{ path = "/h" }')) == ["http"] * 3
    assert kinds(config_text('{ path = "/h" }', directive="uwsgi_pass")) == ["uwsgi"] * 3


# -- the board -----------------------------------------------------------------------

def test_the_board_has_a_cell_per_checked_peer_and_none_for_unchecked_upstreams() -> None:
    config = attach(load(config_text("{}", extra="[upstream.plain]\n"
                                                 'servers = ["127.0.0.1:9"]')))
    board = config.health_board
    assert board.layout == {"app": ("127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003")}
    assert board.down_test("plain") is None
    assert attach(load(config_text("{}").replace("health_check = {}", ""))).health_board \
        is None


def test_a_cell_is_state_counter_and_change_time_at_a_fixed_offset() -> None:
    board = HealthBoard({"a": ("x:1",), "b": ("y:1", "y:2")})
    assert [board.read("b", 1)[0]] == [UNKNOWN]  # fresh: usable
    board.write("b", 1, DOWN, 0, 1234.5)
    assert bytes(board.map[2 * CELL.size:3 * CELL.size]) == struct.pack("<BB6xd", 2, 0,
                                                                        1234.5)
    assert board.read("b", 1) == (DOWN, 0, 1234.5)
    down = board.down_test("b")
    assert (down(0), down(1)) == (False, True)
    board.write("b", 1, UP, 3, 1240.0)
    assert not down(1)
    assert (board.find("b", "y:2"), board.find("b", "z:9")) == (1, None)


# -- the balancer --------------------------------------------------------------------

def checked(*specs: str) -> tuple[Balancer, set[int]]:
    down: set[int] = set()
    return Balancer(upstream(*specs, name="test"), down=down.__contains__), down


def test_the_balancer_never_chooses_a_peer_the_check_says_is_down() -> None:
    b, down = checked("a", "b", "c")
    down.add(1)
    assert {b.choose(set(), b"127.0.0.1", 0.0) for _ in range(6)} == {0, 2}


def test_backups_serve_when_every_primary_is_down_then_nothing() -> None:
    b, down = checked("a", "b", "c backup")
    down.update({0, 1})
    assert b.choose(set(), b"127.0.0.1", 0.0) == 2
    down.add(2)
    assert b.choose(set(), b"127.0.0.1", 0.0) is None  # 502 no live upstreams


def test_a_single_checked_peer_that_is_down_is_not_chosen() -> None:
    b, down = checked("a")
    assert b.choose(set(), b"127.0.0.1", 0.0) == 0
    down.add(0)
    assert b.choose(set(), b"127.0.0.1", 0.0) is None
    assert not b.failed(0, 0.0)  # passive health still never bans a single peer


def test_ip_hash_rehashes_past_a_peer_the_check_says_is_down() -> None:
    b = Balancer(upstream("a", "b", "c", name="test", balance="ip_hash"))
    first = b.choose(set(), b"10.1.2.3", 0.0)
    c, down = checked("a", "b", "c")
    c.method = "ip_hash"
    down.add(first)
    assert c.choose(set(), b"10.1.2.3", 0.0) not in (first, None)


# -- the requests and their replies --------------------------------------------------

def target(protocol: str, path: str = "/healthz?full=1") -> Target:
    return Target("app", 0, parse_address("127.0.0.1:8001"), protocol,
                  HealthCheck(path=path))


def test_an_http_check_is_a_get_with_the_peer_as_host_and_connection_close() -> None:
    assert http_request(target("http")) == (
        b"GET /healthz?full=1 HTTP/1.1\r\nHost: 127.0.0.1:8001\r\n"
        b"User-Agent: prefork-proxy health check\r\nConnection: close\r\n\r\n")


def test_a_uwsgi_check_is_a_uwsgi_packet_for_the_path() -> None:
    packet = uwsgi_request(target("uwsgi"), ("127.0.0.1", 40000))
    modifier1, size, modifier2 = struct.unpack("<BHB", packet[:4])
    assert (modifier1, modifier2, size) == (0, 0, len(packet) - 4)
    pairs, at = {}, 4
    while at < len(packet):
        (length,) = struct.unpack("<H", packet[at:at + 2])
        key = packet[at + 2:at + 2 + length]
        at += 2 + length
        (length,) = struct.unpack("<H", packet[at:at + 2])
        pairs[key] = packet[at + 2:at + 2 + length]
        at += 2 + length
    assert {key: pairs[key] for key in (b"REQUEST_METHOD", b"PATH_INFO", b"QUERY_STRING",
                                        b"REQUEST_URI", b"HTTP_HOST", b"REMOTE_ADDR")} == {
        b"REQUEST_METHOD": b"GET", b"PATH_INFO": b"/healthz", b"QUERY_STRING": b"full=1",
        b"REQUEST_URI": b"/healthz?full=1", b"HTTP_HOST": b"127.0.0.1:8001",
        b"REMOTE_ADDR": b"127.0.0.1"}


@pytest.mark.parametrize(("protocol", "data", "closed", "status"), [
    ("http", b"HTTP/1.1 200 OK\r\n", False, 200),
    ("http", b"HTTP/1.0 503\r\n", False, 503),
    ("http", b"HTTP/1.1 20", False, None),
    ("http", b"HTTP/1.1 20", True, "closed before a status line"),
    ("http", b"SSH-2.0-OpenSSH\r\n", False, "no HTTP status line"),
    ("uwsgi", b"HTTP/1.1 204 No Content\r\nX: y\r\n\r\n", False, 204),
    ("uwsgi", b"Status: 404 Not Found\r\n\r\n", False, 404),
    ("uwsgi", b"Status: 404 Not Found\r\n", False, None),
    ("uwsgi", b"", True, "closed before a reply head"),
])
def test_a_reply_is_judged_by_its_status(protocol: str, data: bytes, closed: bool,
                                         status: object) -> None:
    assert reply_status(protocol, data, closed) == status
