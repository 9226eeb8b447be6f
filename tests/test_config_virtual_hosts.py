"""server_name and servers sharing a listen address: the config's rules (nginx's).

Each error names its key (`server[N].server_name[I]`, `server[N].listen[I]`);
the address's default server is the one with `default_server`, else the first.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from prefork_proxy.config import ConfigError, load_config

pytestmark = pytest.mark.timeout(10)


def server(listen: str, names: str = "", port: int = 9001) -> str:
    line = f"server_name = [{names}]\n" if names else ""
    return (f"[[server]]\nlisten = [{listen}]\n{line}"
            f'  [[server.location]]\n  path = "/"\n  proxy_pass = "127.0.0.1:{port}"\n\n')


def load(tmp_path: Path, *servers: str):
    path = tmp_path / "proxy.toml"
    path.write_text(textwrap.dedent("".join(servers)))
    return load_config(str(path))


def errors_of(tmp_path: Path, *servers: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, *servers)
    prefix = str(tmp_path / "proxy.toml") + ": "
    lines = str(caught.value).splitlines()
    assert all(line.startswith(prefix) for line in lines), lines
    return [line[len(prefix):] for line in lines]


def test_server_name_defaults_to_none_and_is_lowercased(tmp_path: Path) -> None:
    config = load(tmp_path, server('"127.0.0.1:8080"'),
                  server('"127.0.0.1:8081"', '"Example.COM", "*.example.com", "www.example.*"'))
    assert config.servers[0].names == ()
    assert config.servers[1].names == ("example.com", "*.example.com", "www.example.*")


@pytest.mark.parametrize("name, words", [
    ('"w*.example.com"', "asterisk"),
    ('"a..b"', "not a host name"),
    ('"~^www"', "regular-expression"),
    ('""', "not a host name"),
    ("3", "not a host name"),
])
def test_a_bad_server_name_names_its_index(tmp_path: Path, name: str, words: str) -> None:
    [error] = errors_of(tmp_path, server('"127.0.0.1:8080"', f'"a.test", {name}'))
    assert error.startswith("server[0].server_name[1]: ") and words in error, error


def test_server_name_must_be_a_list(tmp_path: Path) -> None:
    text = server('"127.0.0.1:8080"').replace("[[server]]\n", '[[server]]\nserver_name = "a"\n')
    [error] = errors_of(tmp_path, text)
    assert error.startswith("server[0].server_name: must be a list of names")


def test_the_default_server_is_the_first_unless_one_says_default_server(
        tmp_path: Path) -> None:
    config = load(tmp_path, server('"127.0.0.1:8080"', '"a.test"'),
                  server('"127.0.0.1:8080", "127.0.0.1:8081 default_server"', '"b.test"'))
    first, second = config.servers
    assert config.virtual_hosts == {"127.0.0.1:8080": (first, (first, second)),
                                    "127.0.0.1:8081": (second, (second,))}
    config = load(tmp_path, server('"127.0.0.1:8080"', '"a.test"'),
                  server('"127.0.0.1:8080 default_server"', '"b.test"'))
    first, second = config.servers
    assert config.virtual_hosts == {"127.0.0.1:8080": (second, (first, second))}
    assert list(config.listens) == ["127.0.0.1:8080"]  # one socket for the address


def test_two_default_servers_on_one_address_is_an_error(tmp_path: Path) -> None:
    assert errors_of(tmp_path, server('"127.0.0.1:8080 default_server"', '"a.test"'),
                     server('"127.0.0.1:8080 default_server"', '"b.test"')) == [
        "server[1].listen[0]: 127.0.0.1:8080 already has a default_server: server[0]"]


def test_one_name_in_two_servers_of_an_address_is_an_error(tmp_path: Path) -> None:
    assert errors_of(tmp_path, server('"127.0.0.1:8080"', '"a.test", "*.b.test"'),
                     server('"127.0.0.1:8080"', '"c.test", "A.test"'),
                     server('"127.0.0.1:8080"', '".b.test"')) == [
        "server[1].server_name[1]: 'a.test' is already a name of server[0] on 127.0.0.1:8080",
        # nginx: *.b.test and .b.test both cover www.b.test
        "server[2].server_name[0]: '.b.test' is already a name of server[0] "
        "on 127.0.0.1:8080"]


def test_one_name_on_two_addresses_is_fine(tmp_path: Path) -> None:
    config = load(tmp_path, server('"127.0.0.1:8080"', '"a.test"'),
                  server('"127.0.0.1:8081"', '"a.test"'))
    assert len(config.virtual_hosts) == 2


@pytest.mark.parametrize("parameter", ["reuse_port", "ssl", "http2", "proxy_protocol"])
def test_servers_of_an_address_must_agree_on_its_parameters(tmp_path: Path,
                                                            parameter: str) -> None:
    assert errors_of(tmp_path, server('"127.0.0.1:8080"', '"a.test"'),
                     server(f'"127.0.0.1:8080 {parameter}"', '"b.test"')) == [
        f"server[1].listen[0]: 127.0.0.1:8080 is listed by server[0] with other "
        f"{parameter}: those parameters belong to the address, its servers must agree"]


def test_servers_of_an_address_may_differ_in_default_server_only(tmp_path: Path) -> None:
    config = load(tmp_path, server('"127.0.0.1:8080 reuse_port"', '"a.test"'),
                  server('"127.0.0.1:8080 reuseport default_server"', '"b.test"'))
    assert config.virtual_hosts["127.0.0.1:8080"][0] is config.servers[1]


def test_an_address_listed_twice_by_one_server_is_an_error(tmp_path: Path) -> None:
    assert errors_of(tmp_path, server('"127.0.0.1:8080", "127.0.0.1:8080"')) == [
        "server[0].listen[1]: 127.0.0.1:8080 is listed twice by this server"]
