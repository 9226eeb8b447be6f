"""The config file: TOML -> frozen dataclasses, and errors that name file and key.

Every error reads `FILE: key.path: message`; unknown keys are errors so that a
typo never passes silently; durations are "500ms", "30s", "5m"; listen
addresses are host:port, [v6]:port or unix:/path.
"""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from prefork_proxy.config import ConfigError, load_config
from prefork_proxy.values import Address, parse_duration

GOOD = """\
workers = 2
graceful_timeout = "5s"
access_log = "off"

[upstream.app]
servers = ["127.0.0.1:8001", "127.0.0.1:8002 weight=2", "127.0.0.1:8003 backup"]
balance = "least_conn"

[[server]]
listen = ["127.0.0.1:8080", "[::1]:8080", "unix:/tmp/prefork-proxy-test.sock"]

  [[server.location]]
  path = "/"
  proxy_pass = "http://app"

  [[server.location]]
  path = "/two/"
  proxy_pass = "http://127.0.0.1:9000/other/"
  read_timeout = "500ms"
  connect_timeout = "5m"
"""


def write(tmp_path: Path, text: str, name: str = "proxy.toml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def error_of(tmp_path: Path, text: str) -> str:
    """The message load_config raises for `text`, with the directory stripped."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(path + ": "), message
    return "proxy.toml: " + message[len(path) + 2:]


def with_location(location: str, second: bool = True) -> str:
    """GOOD's shape with `location` as server[0].location[1] (or [0])."""
    first = '  [[server.location]]\n  path = "/"\n  proxy_pass = "127.0.0.1:9000"\n'
    return (
        '[upstream.app]\nservers = ["127.0.0.1:8001"]\n\n'
        '[[server]]\nlisten = ["127.0.0.1:8080"]\n'
        + (first if second else "")
        + textwrap.dedent(location)
    )


# -- a good file -------------------------------------------------------------------

def test_the_example_config_in_etc_is_valid() -> None:
    config = load_config(str(Path(__file__).resolve().parents[1] / "etc/prefork-proxy.toml"))
    assert config.servers and config.upstreams


def test_a_good_config_becomes_frozen_dataclasses(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    assert config.workers == 2
    assert config.graceful_timeout == 5.0
    assert config.access_log == "off"
    app = config.upstreams["app"]
    assert app.balance == "least_conn"
    assert [(str(p.address), p.weight, p.backup) for p in app.peers] == [
        ("127.0.0.1:8001", 1, False), ("127.0.0.1:8002", 2, False), ("127.0.0.1:8003", 1, True)]
    server = config.servers[0]
    assert [str(listen.address) for listen in server.listen] == [
        "127.0.0.1:8080", "[::1]:8080", "unix:/tmp/prefork-proxy-test.sock"]
    root, two = server.locations
    assert root.upstream is app and root.uri_prefix is None
    assert two.upstream.peers[0].address == Address("127.0.0.1", 9000)
    assert two.uri_prefix == b"/other/"
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.workers = 3  # type: ignore[misc]


def test_timeouts_default_to_nginxs_60_seconds_and_parse_units(tmp_path: Path) -> None:
    root, two = load_config(write(tmp_path, GOOD)).servers[0].locations
    assert (root.connect_timeout, root.read_timeout, root.send_timeout) == (60.0, 60.0, 60.0)
    assert (two.read_timeout, two.connect_timeout) == (0.5, 300.0)


@pytest.mark.parametrize("text, seconds", [
    ("500ms", 0.5), ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("2", 2.0), (7, 7.0),
])
def test_durations_are_written_with_a_unit(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_workers_auto_is_the_number_of_usable_cores(tmp_path: Path) -> None:
    import os

    config = load_config(write(tmp_path, GOOD.replace("workers = 2", 'workers = "auto"')))
    assert config.workers == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("target, prefix", [
    ("127.0.0.1:9000", None),
    ("http://127.0.0.1:9000", None),
    ("http://127.0.0.1:9000/", b"/"),
    ("http://127.0.0.1:9000/prefix", b"/prefix"),
    ("http://app/prefix/", b"/prefix/"),
])
def test_proxy_pass_forms(tmp_path: Path, target: str, prefix: bytes | None) -> None:
    config = load_config(write(tmp_path, with_location(
        f'  [[server.location]]\n  path = "/x/"\n  proxy_pass = "{target}"\n')))
    location = config.servers[0].locations[1]
    assert location.uri_prefix == prefix
    assert location.protocol == "http"


# -- errors name the file and the key ----------------------------------------------

def test_the_error_shape_is_file_key_path_message_for_a_missing_upstream(
        tmp_path: Path) -> None:
    message = error_of(tmp_path, with_location(
        '  [[server.location]]\n  path = "/b/"\n  proxy_pass = "http://nosuch"\n'))
    assert message.startswith("proxy.toml: server[0].location[1].proxy_pass: ")
    assert "nosuch" in message and "upstream" in message
    assert "\n" not in message


def test_an_unknown_top_level_key_is_an_error(tmp_path: Path) -> None:
    message = error_of(tmp_path, "wokers = 2\n" + GOOD)
    assert message == "proxy.toml: wokers: unknown setting"


def test_an_unknown_location_key_is_an_error(tmp_path: Path) -> None:
    message = error_of(tmp_path, with_location(
        '  [[server.location]]\n  path = "/b/"\n  proxy_pass = "127.0.0.1:1"\n'
        '  read_timout = "5s"\n'))
    assert message == "proxy.toml: server[0].location[1].read_timout: unknown setting"


def test_an_unknown_server_key_is_an_error(tmp_path: Path) -> None:
    message = error_of(tmp_path, GOOD.replace('listen = [', 'lisen = "x"\nlisten = ['))
    assert message == "proxy.toml: server[0].lisen: unknown setting"


def test_an_unknown_upstream_key_is_an_error(tmp_path: Path) -> None:
    message = error_of(tmp_path, GOOD.replace('balance = "least_conn"', "keepalve = 3"))
    assert message == "proxy.toml: upstream.app.keepalve: unknown setting"


@pytest.mark.parametrize("value", ['"5 parsecs"', '"ms"', '"-1s"', '"1.5.s"', "true"])
def test_a_bad_duration_is_an_error(tmp_path: Path, value: str) -> None:
    message = error_of(tmp_path, with_location(
        f'  [[server.location]]\n  path = "/b/"\n  proxy_pass = "127.0.0.1:1"\n'
        f"  read_timeout = {value}\n"))
    assert message.startswith("proxy.toml: server[0].location[1].read_timeout: ")
    assert "duration" in message


def test_a_bad_top_level_duration_names_its_key(tmp_path: Path) -> None:
    message = error_of(tmp_path, GOOD.replace('"5s"', '"soon"'))
    assert message.startswith("proxy.toml: graceful_timeout: ")
    assert "'soon'" in message


@pytest.mark.parametrize("address, words", [
    ("127.0.0.1:99999", "port"),
    ("127.0.0.1:http", "port"),
    ("localhost", "host:port"),
    ("::1:80", "brackets"),
    ("[::1]", "[v6]:port"),
    ("unix:relative.sock", "absolute"),
    ("127.0.0.1:80 reuse_prot", "listen option"),
])
def test_a_bad_listen_address_is_an_error(tmp_path: Path, address: str, words: str) -> None:
    text = GOOD.replace('"[::1]:8080"', f'"{address}"')
    message = error_of(tmp_path, text)
    assert message.startswith("proxy.toml: server[0].listen[1]: ")
    assert words in message


def test_a_bad_upstream_server_names_its_index(tmp_path: Path) -> None:
    message = error_of(tmp_path, GOOD.replace('"127.0.0.1:8002 weight=2"',
                                              '"127.0.0.1:8002 wieght=2"'))
    assert message.startswith("proxy.toml: upstream.app.servers[1]: ")
    assert "wieght=2" in message


def test_an_upstream_of_only_backups_is_an_error(tmp_path: Path) -> None:
    message = error_of(tmp_path, GOOD.replace(
        'servers = ["127.0.0.1:8001", "127.0.0.1:8002 weight=2", "127.0.0.1:8003 backup"]',
        'servers = ["127.0.0.1:8003 backup"]'))
    assert message.startswith("proxy.toml: upstream.app.servers: ")


def test_an_unknown_balance_method_is_an_error(tmp_path: Path) -> None:
    message = error_of(tmp_path, GOOD.replace('"least_conn"', '"random"'))
    assert message.startswith("proxy.toml: upstream.app.balance: ")
    assert "round_robin" in message


def test_a_location_needs_exactly_one_target(tmp_path: Path) -> None:
    message = error_of(tmp_path, with_location('  [[server.location]]\n  path = "/b/"\n'))
    assert message.startswith("proxy.toml: server[0].location[1]: ")
    assert "proxy_pass" in message


def test_a_location_path_must_start_with_a_slash(tmp_path: Path) -> None:
    message = error_of(tmp_path, with_location(
        '  [[server.location]]\n  path = "api/"\n  proxy_pass = "127.0.0.1:1"\n'))
    assert message.startswith("proxy.toml: server[0].location[1].path: ")


def test_a_repeated_location_path_is_an_error(tmp_path: Path) -> None:
    message = error_of(tmp_path, with_location(
        '  [[server.location]]\n  path = "/"\n  proxy_pass = "127.0.0.1:1"\n'))
    assert message.startswith("proxy.toml: server[0].location[1].path: ")
    assert "repeats" in message


def test_an_unsupported_proxy_pass_scheme_is_an_error(tmp_path: Path) -> None:
    message = error_of(tmp_path, with_location(
        '  [[server.location]]\n  path = "/b/"\n  proxy_pass = "ftp://127.0.0.1:1"\n'))
    assert message.startswith("proxy.toml: server[0].location[1].proxy_pass: ")


def test_a_server_needs_a_listen_address(tmp_path: Path) -> None:
    message = error_of(tmp_path, GOOD.replace(
        'listen = ["127.0.0.1:8080", "[::1]:8080", "unix:/tmp/prefork-proxy-test.sock"]',
        "listen = []"))
    assert message.startswith("proxy.toml: server[0].listen: ")


def test_two_servers_may_share_an_address(tmp_path: Path) -> None:
    """Virtual hosts: the rules of a shared address are in test_config_virtual_hosts.py."""
    text = GOOD + '\n[[server]]\nlisten = ["127.0.0.1:8080"]\n  [[server.location]]\n' \
                  '  path = "/"\n  proxy_pass = "127.0.0.1:1"\n'
    config = load_config(write(tmp_path, text))
    default, servers = config.virtual_hosts["127.0.0.1:8080"]
    assert default is config.servers[0] and servers == config.servers


@pytest.mark.parametrize("value", ["0", '"many"', "true", "513"])
def test_a_bad_worker_count_is_an_error(tmp_path: Path, value: str) -> None:
    message = error_of(tmp_path, GOOD.replace("workers = 2", f"workers = {value}"))
    assert message.startswith("proxy.toml: workers: ")


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    message = error_of(tmp_path, "workers = \n")
    assert message.startswith("proxy.toml: not valid TOML")


def test_a_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(str(tmp_path / "absent.toml"))
    assert str(caught.value) == f"{tmp_path / 'absent.toml'}: No such file or directory"


# -- client limits (nginx's client_* timeouts and keepalive_*) ----------------------

def test_client_limits_default_to_nginxs(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    for limits in (config.client, config.servers[0].client):
        assert limits.client_header_timeout == 60.0
        assert limits.client_body_timeout == 60.0
        assert limits.client_send_timeout == 60.0
        assert limits.client_keepalive_timeout == 75.0
        assert limits.client_keepalive_requests == 1000


def test_client_limits_set_at_the_top_apply_to_every_server(tmp_path: Path) -> None:
    text = 'client_header_timeout = "2s"\nclient_keepalive_requests = 3\n' + GOOD
    config = load_config(write(tmp_path, text))
    assert config.servers[0].client.client_header_timeout == 2.0
    assert config.servers[0].client.client_keepalive_requests == 3
    assert config.servers[0].client.client_body_timeout == 60.0


def test_a_server_overrides_the_top_level_client_limits(tmp_path: Path) -> None:
    text = ('client_body_timeout = "5s"\nclient_send_timeout = "7s"\n' + GOOD).replace(
        'listen = ["127.0.0.1:8080", "[::1]:8080", "unix:/tmp/prefork-proxy-test.sock"]',
        'listen = ["127.0.0.1:8080"]\nclient_body_timeout = "1s"\n'
        'client_keepalive_timeout = "10s"\n')
    text += ('\n[[server]]\nlisten = ["127.0.0.1:8081"]\n'
             '  [[server.location]]\n  path = "/"\n  proxy_pass = "http://app"\n')
    config = load_config(write(tmp_path, text))
    first, second = config.servers
    assert (first.client.client_body_timeout, first.client.client_send_timeout,
            first.client.client_keepalive_timeout) == (1.0, 7.0, 10.0)
    assert (second.client.client_body_timeout, second.client.client_send_timeout,
            second.client.client_keepalive_timeout) == (5.0, 7.0, 75.0)
    assert config.client.client_body_timeout == 5.0


@pytest.mark.parametrize("setting, value, words", [
    ("client_header_timeout", '"soon"', "duration"),
    ("client_header_timeout", '"0s"', "more than 0"),
    ("client_body_timeout", '"-1s"', "duration"),
    ("client_send_timeout", "true", "duration"),
    ("client_keepalive_timeout", '"1 day"', "duration"),
    ("client_keepalive_requests", "0", "at least 1"),
    ("client_keepalive_requests", '"10"', "whole number"),
])
def test_a_bad_client_limit_names_its_file_and_key(tmp_path: Path, setting: str, value: str,
                                                   words: str) -> None:
    message = error_of(tmp_path, f"{setting} = {value}\n" + GOOD)
    assert message.startswith(f"proxy.toml: {setting}: "), message
    assert words in message


def test_a_bad_client_limit_in_a_server_names_the_server(tmp_path: Path) -> None:
    message = error_of(tmp_path, GOOD.replace(
        'listen = ["127.0.0.1:8080", "[::1]:8080", "unix:/tmp/prefork-proxy-test.sock"]',
        'listen = ["127.0.0.1:8080"]\nclient_header_timeout = "often"'))
    assert message.startswith("proxy.toml: server[0].client_header_timeout: "), message


def test_client_keepalive_timeout_0_turns_keep_alive_off(tmp_path: Path) -> None:
    # nginx: "The zero value disables keep-alive client connections."
    config = load_config(write(tmp_path, 'client_keepalive_timeout = "0s"\n' + GOOD))
    assert config.servers[0].client.client_keepalive_timeout == 0.0


# -- privileges ----------------------------------------------------------------------

def test_group_without_user_is_an_error(tmp_path: Path) -> None:
    # Without a user, the workers would keep the master's uid (root) in that group.
    message = error_of(tmp_path, 'group = "nogroup"\n' + GOOD)
    assert message.startswith("proxy.toml: group: "), message
    assert "user" in message


def test_user_alone_or_with_group_is_accepted(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, 'user = "nobody"\n' + GOOD)).user == "nobody"
    config = load_config(write(tmp_path, 'user = "nobody"\ngroup = "nogroup"\n' + GOOD))
    assert (config.user, config.group) == ("nobody", "nogroup")


# -- [status] ------------------------------------------------------------------------
STATUS_BASE = 'access_log = "off"\n' + with_location("", second=True)


def _with_status(status: str) -> str:
    return STATUS_BASE.replace("[[server]]", f"[status]\n{status}\n\n[[server]]", 1)


def test_the_status_listener_is_off_by_default_with_loopback_allowed(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, STATUS_BASE))
    assert config.status.listen is None and "127.0.0.1:9901" not in config.listens
    assert [str(net) for net in config.status.allow] == ["127.0.0.1/32", "::1/128"]
    assert config.request_id is True and config.access_log_format == "combined"


def test_a_status_listener_is_bound_by_the_master(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, _with_status(
        'listen = "127.0.0.1:9901"\nallow = ["10.0.0.0/8", "::1"]\ntrusted = ["10.1.2.3"]')))
    assert config.status.key == "127.0.0.1:9901" and "127.0.0.1:9901" in config.listens
    assert [str(net) for net in config.status.allow] == ["10.0.0.0/8", "::1/128"]
    assert [str(net) for net in config.status.trusted] == ["10.1.2.3/32"]


@pytest.mark.parametrize(("status", "words"), [
    ('listen = "127.0.0.1:8080"', "status.listen: 127.0.0.1:8080 is already used by server[0]"),
    ('listen = "127.0.0.1:99999"', "status.listen: "),
    ('allow = ["nope"]', "status.allow: 'nope' is not an address or network"),
    ('allow = "127.0.0.1"', "status.allow: must be a list"),
    ("trusted = [1]", "status.trusted: 1 is not an address or network"),
    ("port = 1", "status.port: unknown setting"),
])
def test_a_bad_status_setting_names_its_key(tmp_path: Path, status: str, words: str) -> None:
    assert words in error_of(tmp_path, _with_status(status))


def test_a_bad_access_log_format_names_its_key(tmp_path: Path) -> None:
    message = error_of(tmp_path, 'access_log_format = "xml"\n' + STATUS_BASE)
    assert message == 'proxy.toml: access_log_format: \'xml\' is not "combined" or "json"'
