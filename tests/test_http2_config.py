"""`http2_max_concurrent_streams`: nginx's default, set at the top or per server, checked by key."""

from __future__ import annotations

import pytest

from prefork_proxy.config import ConfigError, parse_config

pytestmark = pytest.mark.timeout(10)


def server(extra: str = "") -> dict:
    table = {"listen": ["127.0.0.1:8080 http2"],
             "location": [{"path": "/", "proxy_pass": "127.0.0.1:9000"}]}
    if extra:
        table["http2_max_concurrent_streams"] = extra
    return table


def test_the_default_is_nginx_s_128() -> None:
    config = parse_config({"server": [server()]}, "proxy.toml")
    assert config.servers[0].client.http2_max_concurrent_streams == 128
    assert config.servers[0].listen[0].http2


def test_set_at_the_top_it_applies_to_every_server_and_a_server_may_override_it() -> None:
    first, second = server(), server()
    second["listen"] = ["127.0.0.1:8081 http2"]
    second["http2_max_concurrent_streams"] = 10
    config = parse_config({"http2_max_concurrent_streams": 64, "server": [first, second]},
                          "proxy.toml")
    assert [s.client.http2_max_concurrent_streams for s in config.servers] == [64, 10]


@pytest.mark.parametrize(("value", "words"), [(0, "at least 1"), ("8", "whole number")])
def test_a_bad_value_names_its_key(value: object, words: str) -> None:
    table = server()
    table["http2_max_concurrent_streams"] = value
    with pytest.raises(ConfigError) as caught:
        parse_config({"server": [table]}, "proxy.toml")
    assert str(caught.value).startswith("proxy.toml: server[0].http2_max_concurrent_streams: ")
    assert words in str(caught.value)
