"""A config file with several errors: every one is reported, in the file's order.

`prefork-proxy -t` shows an operator all of a file's errors in one run, as
`FILE: key: message` lines; each setting, upstream, server and location is
checked on its own, and the cross checks still run over what could be read.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from prefork_proxy.config import ConfigError, load_config

pytestmark = pytest.mark.timeout(10)

THREE_ERRORS = """\
graceful_timeout = "soon"

[upstream.app]
servers = ["127.0.0.1:8001 wieght=2"]

[[server]]
listen = ["127.0.0.1:8080"]

  [[server.location]]
  path = "/"
  proxy_pass = "http://app"
  read_timeout = "-"
"""


def raised(tmp_path: Path, text: str) -> ConfigError:
    path = tmp_path / "proxy.toml"
    path.write_text(textwrap.dedent(text))
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    return caught.value


def test_every_error_of_a_file_is_reported_once_each(tmp_path: Path) -> None:
    error = raised(tmp_path, THREE_ERRORS)
    file = str(tmp_path / "proxy.toml")
    assert [(each.file, each.key) for each in error.errors] == [
        (file, "graceful_timeout"),
        (file, "upstream.app.servers[0]"),
        (file, "server[0].location[0].read_timeout"),
    ]
    assert str(error) == "\n".join(each.line for each in error.errors)
    # The first error's fields stay those of the whole (callers that read one).
    assert (error.file, error.key) == (file, "graceful_timeout")


def test_one_error_keeps_its_file_key_message_shape(tmp_path: Path) -> None:
    error = raised(tmp_path, THREE_ERRORS.replace(" wieght=2", "").replace(
        'read_timeout = "-"', ""))
    assert error.errors == [error]
    assert str(error) == f"{tmp_path / 'proxy.toml'}: graceful_timeout: {error.message}"


def test_errors_in_several_servers_and_locations_are_all_reported(tmp_path: Path) -> None:
    error = raised(tmp_path, """\
        [[server]]
        listen = ["127.0.0.1:99999", "127.0.0.1:8081 reuse_prot"]
        server_name = ["a.test", "w*.test"]
        colour = "blue"

          [[server.location]]
          path = "nope"
          proxy_pass = "127.0.0.1:9000"

          [[server.location]]
          path = "/x/"
          proxy_pass = "http://missing"

        [[server]]
        listen = ["127.0.0.1:8082"]

          [[server.location]]
          path = "/"
          uwsgi_pass = "127.0.0.1:9000"
          client_max_body_size = "lots"

        [status]
        listen = "127.0.0.1:8082"
        """)
    assert [each.key for each in error.errors] == [
        "server[0].colour",
        "server[0].server_name[1]",
        "server[0].listen[0]",
        "server[0].listen[1]",
        "server[0].location[0].path",
        "server[0].location[1].proxy_pass",
        "server[1].location[0].client_max_body_size",
        "status.listen",
    ]


def test_a_broken_upstream_is_reported_without_its_locations_failing_too(
        tmp_path: Path) -> None:
    error = raised(tmp_path, """\
        workers = 0
        [upstream.app]
        servers = []
        [[server]]
        listen = ["127.0.0.1:8080"]
          [[server.location]]
          path = "/"
          proxy_pass = "http://app"
        """)
    assert [each.key for each in error.errors] == ["workers", "upstream.app.servers"]
