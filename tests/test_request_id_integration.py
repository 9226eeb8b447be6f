"""Request ids end to end: the real master and workers, real upstreams on ephemeral ports.

The upstream sees our X-Request-Id (uwsgi: HTTP_X_REQUEST_ID), and the same id is
in the JSON access-log line; for a 502 it is on the error page and in the error
log's line too. A client's own id is kept only from `[status] trusted`.
"""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.configs import one_location
from tests.support.processes import Proxy, Upstream, wait_for
from tests.support.sites import refused_port
from tests.support.uwsgi_server import uwsgi_servers
from tests.support.wire import Wire, get, request

HEX_ID = re.compile(r"[0-9a-f]{32}")


def config(tmp_path: Path, target: str, top: str = "", directive: str = "proxy_pass") -> str:
    return one_location(target, directive=directive, top=(
        f'workers = 1\naccess_log = "{tmp_path / "access.log"}"\n'
        f'access_log_format = "json"\n{top}'))


def logged(tmp_path: Path, path: str) -> dict:
    """The JSON access-log line of the request for `path` (flushed within a second)."""
    def find() -> dict | None:
        log = tmp_path / "access.log"
        for line in (log.read_text().splitlines() if log.exists() else ()):
            entry = json.loads(line)
            if entry["path"] == path:
                return entry
        return None

    return wait_for(find, message=f"the access-log line of {path}")


def sent_ids(response) -> list[str]:
    """The X-Request-Id values the echo upstream received."""
    return [value for name, value in response.json()["headers"]
            if name.lower() == "x-request-id"]


@pytest.fixture
def proxy_for(start_proxy: Callable[..., Proxy], upstream: Upstream,
              tmp_path: Path) -> Callable[[str], Proxy]:
    """proxy_for(top) -> a one-worker proxy_pass proxy on `upstream`, JSON access log."""
    return lambda top="": start_proxy(config(tmp_path, f"http://{upstream.address}", top))


def test_the_upstream_and_the_access_log_get_the_same_new_id(proxy_for, tmp_path) -> None:
    proxy = proxy_for()
    response = get(proxy.port, "/echo/one", headers=[("User-Agent", 'ua "1"')])
    [sent] = sent_ids(response)
    assert HEX_ID.fullmatch(sent)
    entry = logged(tmp_path, "/echo/one")
    assert entry["request_id"] == sent
    assert (entry["method"], entry["status"], entry["client"]) == ("GET", 200, "127.0.0.1")
    assert entry["upstream_status"] == 200 and entry["upstream_addr"].startswith("127.0.0.1:")
    assert entry["bytes"] == len(response.body) and entry["user_agent"] == 'ua "1"'
    assert entry["request_time"] >= entry["upstream_time"] >= 0


def test_each_request_of_a_connection_gets_its_own_id(proxy_for) -> None:
    proxy = proxy_for()
    with Wire(proxy.port) as wire:
        ids = []
        for path in ("/echo/a", "/echo/b"):
            wire.send(request("GET", path))
            ids += sent_ids(wire.response())
    assert len(set(ids)) == 2


@pytest.mark.parametrize("body", [None, b"hi"], ids=["plain head", "with a body"])
def test_an_untrusted_clients_id_is_replaced(proxy_for, tmp_path, body) -> None:
    proxy = proxy_for("[status]\ntrusted = []")
    with Wire(proxy.port) as wire:
        wire.send(request("POST" if body else "GET", "/echo/forged",
                          headers=[("x-request-id", "forged")], body=body))
        [sent] = sent_ids(wire.response())
    assert HEX_ID.fullmatch(sent)
    assert logged(tmp_path, "/echo/forged")["request_id"] == sent


@pytest.mark.parametrize("body", [None, b"hi"], ids=["plain head", "with a body"])
def test_a_trusted_clients_id_is_kept(proxy_for, tmp_path, body) -> None:
    proxy = proxy_for('[status]\ntrusted = ["127.0.0.1/32"]')
    with Wire(proxy.port) as wire:
        wire.send(request("POST" if body else "GET", "/echo/kept",
                          headers=[("X-Request-Id", "edge-42")], body=body))
        assert sent_ids(wire.response()) == ["edge-42"]
        wire.send(request("GET", "/echo/none-sent"))  # a trusted client that sent none
        [made] = sent_ids(wire.response())
    assert HEX_ID.fullmatch(made)
    assert logged(tmp_path, "/echo/kept")["request_id"] == "edge-42"


def test_request_id_false_adds_nothing_and_passes_the_clients(proxy_for, tmp_path) -> None:
    proxy = proxy_for("request_id = false")
    assert sent_ids(get(proxy.port, "/echo/off")) == []
    assert sent_ids(get(proxy.port, "/echo/off-forged",
                        headers=[("X-Request-Id", "forged")])) == ["forged"]
    assert logged(tmp_path, "/echo/off")["request_id"] is None


def test_a_502_names_its_id_on_the_page_and_in_both_logs(start_proxy, tmp_path) -> None:
    closed = refused_port()
    try:
        proxy = start_proxy(config(tmp_path, f"http://127.0.0.1:{closed.getsockname()[1]}"))
        response = get(proxy.port, "/down")
    finally:
        closed.close()
    assert response.status == 502
    shown = re.search(rb"request id ([0-9a-f]{32})", response.body)
    assert shown is not None and b"refused" not in response.body  # no cause to clients
    request_id = shown.group(1).decode()
    entry = logged(tmp_path, "/down")
    assert (entry["request_id"], entry["status"]) == (request_id, 502)
    assert (entry["upstream_addr"], entry["upstream_status"], entry["upstream_time"]) == (
        None, None, None)
    line = wait_for(lambda: next((line for line in proxy.log().splitlines()
                                  if f"request_id {request_id}" in line), None),
                    message="the error-log line of the 502")
    worker = next(iter(proxy.worker_pids()))
    assert f"[ERROR] {worker} worker gen 1: connect to 127.0.0.1:" in line
    assert f"{proxy.pid} master gen 1: generation 1 is serving" in proxy.log()


def test_uwsgi_pass_gets_the_id_as_http_x_request_id(start_proxy, tmp_path) -> None:
    with uwsgi_servers(tmp_path) as start_uwsgi:
        server = start_uwsgi("environ.py")
        proxy = start_proxy(config(tmp_path, server.uwsgi_pass, directive="uwsgi_pass"))
        response = get(proxy.port, "/env", headers=[("X-Request-Id", "forged")])
        environ = response.json()["environ"]
    assert HEX_ID.fullmatch(environ["HTTP_X_REQUEST_ID"])
    assert logged(tmp_path, "/env")["request_id"] == environ["HTTP_X_REQUEST_ID"]


def test_after_a_reload_the_lines_name_the_new_generation(start_proxy, tmp_path) -> None:
    closed = refused_port()
    try:
        proxy = start_proxy(config(tmp_path, f"http://127.0.0.1:{closed.getsockname()[1]}"))
        proxy.signal(signal.SIGHUP)
        proxy.wait_serving(2)
        old = proxy.log()
        assert f"{proxy.pid} master gen 2: generation 2 is serving; generation 1 drains" in old
        wait_for(lambda: len(proxy.workers()) == 1 and "[gen 2]" in " ".join(
            proxy.workers()[0].cmdline()), message="the old worker to leave")
        assert get(proxy.port, "/down-after-reload").status == 502
    finally:
        closed.close()
    worker = next(iter(proxy.worker_pids()))
    wait_for(lambda: f"[ERROR] {worker} worker gen 2: connect to" in proxy.log(),
             message="the new worker's error line")
