"""Virtual hosts end to end: servers sharing one address, picked by Host (nginx).

The real master with three servers on one address: `a.test` proxies to upstream
A, `*.b.test` and `b.test` to upstream B, and the `default_server` (the third,
not the first) to A under another prefix. Each proxy_pass has a URI part, so the
path the upstream echoes says which server took the request. Server B turns
keep-alive off: its answers show that the chosen server's limits apply.
"""

from __future__ import annotations

import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import Proxy, Upstream, free_port, wait_for
from tests.support.wire import Wire, request

pytestmark = pytest.mark.timeout(60)

CONFIG = """\
workers = 1
access_log = "{dir}/access.log"

[[server]]
listen = ["127.0.0.1:{port}"]
server_name = ["a.test"]
  [[server.location]]
  path = "/"
  proxy_pass = "http://{a}/echo/a/"

[[server]]
listen = ["127.0.0.1:{port}"]
server_name = ["*.b.test", "b.test"]
client_keepalive_timeout = "0"  # this server's answers close the connection
  [[server.location]]
  path = "/"
  proxy_pass = "http://{b}/echo/b/"

[[server]]
listen = ["127.0.0.1:{port} default_server"]
server_name = ["c.test"]
  [[server.location]]
  path = "/"
  proxy_pass = "http://{a}/echo/default/"
"""


class VirtualHosts:
    def __init__(self, proxy: Proxy, a: Upstream, b: Upstream) -> None:
        self.proxy, self.a, self.b = proxy, a, b
        self.port = proxy.port


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VirtualHosts]:
    directory = tmp_path_factory.mktemp("virtual_hosts")
    a, b = Upstream(directory / "a.log"), Upstream(directory / "b.log")
    port = free_port()
    path = directory / "proxy.toml"
    path.write_text(textwrap.dedent(CONFIG).format(dir=directory, port=port, a=a.address,
                                                   b=b.address))
    proxy = Proxy(path, directory / "proxy.log")
    proxy.port = port
    try:
        proxy.wait_serving()
        yield VirtualHosts(proxy, a, b)
    finally:
        proxy.stop()
        a.stop()
        b.stop()


def served(port: int, raw: bytes) -> tuple[int, str | None]:
    """(status, the path the upstream saw) for one request on a new connection."""
    with Wire(port) as wire:
        wire.send(raw)
        response = wire.response()
    path = response.json()["path"] if response.status == 200 else None
    return response.status, path


@pytest.mark.parametrize("host, path", [
    ("a.test", "/echo/a/x"),
    ("www.b.test", "/echo/b/x"),  # *.b.test
    ("deep.www.b.test", "/echo/b/x"),
    ("b.test", "/echo/b/x"),
    ("c.test", "/echo/default/x"),
    ("unknown.test", "/echo/default/x"),  # the default_server, not the first server
    ("127.0.0.1", "/echo/default/x"),
    ("A.TEST:8080", "/echo/a/x"),  # case and port do not matter
    ("a.test.", "/echo/a/x"),  # nor a trailing dot
])
def test_the_host_picks_the_server(hosts: VirtualHosts, host: str, path: str) -> None:
    assert served(hosts.port, request("GET", "/x", host=host)) == (200, path)


def test_an_absolute_form_target_names_the_host_not_host(hosts: VirtualHosts) -> None:
    raw = b"GET http://b.test/x HTTP/1.1\r\nHost: a.test\r\n\r\n"  # RFC 9112 §3.2.2
    assert served(hosts.port, raw) == (200, "/echo/b/x")


@pytest.mark.parametrize("host", ["a/b", "..", "a.test:80:80", "a.test:x"])
def test_an_invalid_host_is_a_400(hosts: VirtualHosts, host: str) -> None:
    assert served(hosts.port, request("GET", "/x", host=host)) == (400, None)


def test_http11_without_host_is_a_400(hosts: VirtualHosts) -> None:
    assert served(hosts.port, b"GET /x HTTP/1.1\r\n\r\n") == (400, None)


def test_http10_without_host_goes_to_the_default_server(hosts: VirtualHosts) -> None:
    assert served(hosts.port, b"GET /x HTTP/1.0\r\n\r\n") == (200, "/echo/default/x")


def test_one_keep_alive_connection_reaches_several_servers(hosts: VirtualHosts) -> None:
    with Wire(hosts.port) as wire:
        responses = []
        for path, host in [("/one", "a.test"), ("/two", "nowhere.test"), ("/three", "a.test"),
                           ("/four", "www.b.test")]:
            wire.send(request("GET", path, host=host))
            responses.append(wire.response())
        assert wire.closed()  # server B's keep-alive is off: its answer closed it
    assert [response.status for response in responses] == [200, 200, 200, 200]
    assert [response.json()["path"] for response in responses] == [
        "/echo/a/one", "/echo/default/two", "/echo/a/three", "/echo/b/four"]
    assert [response.header("connection") for response in responses] == [
        None, None, None, "close"]


def test_pipelined_requests_for_two_hosts_go_to_their_servers(hosts: VirtualHosts) -> None:
    with Wire(hosts.port) as wire:
        wire.send(request("GET", "/p1", host="a.test") + request("GET", "/p2", host="b.test"))
        paths = [wire.response().json()["path"], wire.response().json()["path"]]
    assert paths == ["/echo/a/p1", "/echo/b/p2"]


def test_curl_with_resolve_reaches_the_named_server(hosts: VirtualHosts) -> None:
    port = hosts.port
    done = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "--resolve", f"a.test:{port}:127.0.0.1",
         f"http://a.test:{port}/curl"], capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stderr
    assert '"path": "/echo/a/curl"' in done.stdout
    done = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "--resolve", f"x.b.test:{port}:127.0.0.1",
         f"http://x.b.test:{port}/curl"], capture_output=True, text=True, timeout=20)
    assert '"path": "/echo/b/curl"' in done.stdout


def test_each_server_s_requests_are_logged(hosts: VirtualHosts) -> None:
    with Wire(hosts.port) as wire:
        wire.send(request("GET", "/logged-a", host="a.test"))
        assert wire.response().status == 200
        wire.send(request("GET", "/logged-b", host="b.test"))
        assert wire.response().status == 200
    log = Path(hosts.proxy.config_path).parent / "access.log"
    wait_for(lambda: b"/logged-b" in log.read_bytes(), message="the access log line")
    lines = [line for line in log.read_bytes().splitlines() if b"/logged-" in line]
    assert [b'"GET /logged-a HTTP/1.1" 200' in lines[0],
            b'"GET /logged-b HTTP/1.1" 200' in lines[1]] == [True, True]
