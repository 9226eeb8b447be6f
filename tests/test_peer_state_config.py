"""The settings of shared peer state: max_conns=N and slow_start=T server options,
the upstream's queue and queue_timeout; errors name the key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from prefork_proxy.config import ConfigError, load_config

pytestmark = pytest.mark.timeout(30)


def config(tmp_path: Path, upstream: str) -> Path:
    path = tmp_path / "proxy.toml"
    path.write_text(textwrap.dedent(f"""
        [upstream.app]
        {upstream}
        [[server]]
        listen = ["127.0.0.1:8080"]
          [[server.location]]
          path = "/"
          proxy_pass = "http://app"
    """))
    return path


def test_max_conns_slow_start_queue_and_queue_timeout_are_read(tmp_path: Path) -> None:
    loaded = load_config(config(tmp_path, '''servers = ["127.0.0.1:1 max_conns=3 slow_start=30s",
                                                      "127.0.0.1:2"]
        queue = 10
        queue_timeout = "5s"'''))
    upstream = loaded.servers[0].locations[0].upstream
    first, second = upstream.peers
    assert (first.max_conns, first.slow_start) == (3, 30.0)
    assert (second.max_conns, second.slow_start) == (0, 0.0)
    assert (upstream.queue, upstream.queue_timeout) == (10, 5.0)


def test_the_defaults_are_no_limit_no_ramp_and_no_queue(tmp_path: Path) -> None:
    upstream = load_config(config(tmp_path, 'servers = ["127.0.0.1:1"]')
                           ).servers[0].locations[0].upstream
    assert (upstream.peers[0].max_conns, upstream.peers[0].slow_start) == (0, 0.0)
    assert (upstream.queue, upstream.queue_timeout) == (0, 30.0)


@pytest.mark.parametrize(("text", "key", "message"), [
    ('servers = ["127.0.0.1:1 max_conns=many"]', "upstream.app.servers[0]",
     "'max_conns=many' is not weight=N, max_fails=N, fail_timeout=T, max_conns=N, "
     "slow_start=T or backup"),
    ('servers = ["127.0.0.1:1 slow_start=soon"]', "upstream.app.servers[0]", None),
    ('servers = ["127.0.0.1:1"]\n        queue = -1', "upstream.app.queue",
     "-1 is not a whole number >= 0"),
    ('servers = ["127.0.0.1:1"]\n        queue_timeout = "0s"', "upstream.app.queue_timeout",
     "'0s' must be more than 0s"),
])
def test_a_bad_value_is_reported_with_its_key(tmp_path: Path, text: str, key: str,
                                              message: str | None) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(config(tmp_path, text))
    assert raised.value.key == key
    if message is not None:
        assert raised.value.message == message
