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
        '  [[server.location]]\n  path = "/b/"\n  proxy_pass = "https://127.0.0.1:1"\n'))
    assert message.startswith("proxy.toml: server[0].location[1].proxy_pass: ")


def test_a_server_needs_a_listen_address(tmp_path: Path) -> None:
    message = error_of(tmp_path, GOOD.replace(
        'listen = ["127.0.0.1:8080", "[::1]:8080", "unix:/tmp/prefork-proxy-test.sock"]',
        "listen = []"))
    assert message.startswith("proxy.toml: server[0].listen: ")


def test_an_address_used_by_two_servers_is_an_error(tmp_path: Path) -> None:
    text = GOOD + '\n[[server]]\nlisten = ["127.0.0.1:8080"]\n  [[server.location]]\n' \
                  '  path = "/"\n  proxy_pass = "127.0.0.1:1"\n'
    message = error_of(tmp_path, text)
    assert message.startswith("proxy.toml: server[1].listen: ")
    assert "server[0]" in message


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
