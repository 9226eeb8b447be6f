"""Parity with nginx: the same requests through nginx's uwsgi_pass and through ours.

Debian's nginx (`include /etc/nginx/uwsgi_params; uwsgi_pass ...`) and
prefork-proxy stand in front of one uWSGI server running the environ-dumping
app. Each request goes through both, and the two environs must be equal,
except for the vars that must differ (REMOTE_PORT, DOCUMENT_ROOT, SERVER_PORT)
and the deliberate choices listed in DELIBERATE (also documented in the
uwsgi section of etc/prefork-proxy.toml). Each case names the differences it
shows, so the list stays exact: a new difference, or one that went away,
fails the test.
"""

from __future__ import annotations

import json
import os
import textwrap
from dataclasses import dataclass

import pytest

from tests.support.nginx import free_port, nginx_binary, running_nginx
from tests.support.processes import Proxy
from tests.support.raw_http import chunked, exchange
from tests.support.uwsgi_server import running_uwsgi

UWSGI_PARAMS = "/etc/nginx/uwsgi_params"
MUST_DIFFER = {"REMOTE_PORT", "DOCUMENT_ROOT", "SERVER_PORT"}

DELIBERATE = {
    "HTTP_HOST": (
        "Debian's uwsgi_params adds `uwsgi_param HTTP_HOST $host`: no port, lower-cased, "
        "taken from an absolute-form target, or server_name when there is no Host. We "
        "follow nginx's own uwsgi_params and pass the client's Host as received."
    ),
    "SERVER_NAME": (
        "nginx sends the server block's server_name; prefork-proxy has no server_name and "
        "sends the host the client asked for ($host), or the local address without one."
    ),
    "HTTP_COOKIE": (
        "nginx 1.22 sends a repeated header as repeated vars and uWSGI keeps the last; "
        "nginx >= 1.23 joins them, with '; ' for Cookie and ', ' otherwise, as we do."
    ),
    "HTTP_X_MULTI": "as HTTP_COOKIE: a repeated header is joined with ', '.",
}

pytestmark = pytest.mark.skipif(
    nginx_binary() is None or not os.path.exists(UWSGI_PARAMS),
    reason="Debian's nginx is not installed (scripts/install-system-packages.sh)",
)


@dataclass(frozen=True)
class Case:
    id: str
    request: bytes
    differs: frozenset[str] = frozenset()


def _request(head: str, body: bytes = b"") -> bytes:
    return head.replace("\n", "\r\n").encode() + b"\r\n" + body


BODY = bytes(range(256)) * 800  # 200 KiB

CASES = [
    Case("plain-get", _request("GET / HTTP/1.1\nHost: example.test\nConnection: close\n")),
    Case("encoded-path-and-query", _request(
        "GET /a%20b//c/./d/%2e%2e/e?x=%41&y HTTP/1.1\nHost: example.test\nConnection: close\n")),
    Case("double-encoding-and-utf8", _request(
        "GET /%252e%252e/x/%C3%A9?%C3%A9 HTTP/1.1\nHost: example.test\nConnection: close\n")),
    Case("fragment", _request("GET /p?q=1#frag HTTP/1.1\nHost: example.test\nConnection: close\n")),
    Case("post-content-length", _request(
        f"POST /form HTTP/1.1\nHost: example.test\nContent-Type: application/octet-stream\n"
        f"Content-Length: {len(BODY)}\nConnection: close\n", BODY)),
    Case("post-chunked", _request(
        "POST /up HTTP/1.1\nHost: example.test\nContent-Type: text/plain\n"
        "Transfer-Encoding: chunked\nConnection: close\n", chunked(BODY, 30_000))),
    Case("expect-continue", _request(
        "PUT /put HTTP/1.1\nHost: example.test\nExpect: 100-continue\nContent-Length: 5\n"
        "Connection: close\n", b"hello")),
    Case("invalid-header-names-dropped", _request(
        "GET / HTTP/1.1\nHost: example.test\nX_Under: 1\nX.Dot: 2\nX-Ok: 3\nConnection: close\n")),
    Case("http-1.0-without-host", _request("GET /old HTTP/1.0\n"),
         frozenset({"HTTP_HOST", "SERVER_NAME"})),
    Case("host-with-port-and-case", _request(
        "GET / HTTP/1.1\nHost: Example.TEST:8080\nConnection: close\n"),
        frozenset({"HTTP_HOST"})),
    Case("absolute-form-target", _request(
        "GET http://Other.example/p?z=1 HTTP/1.1\nHost: example.test\nConnection: close\n"),
        # The target's host wins over Host (RFC 9112 §3.2.2), in SERVER_NAME too.
        frozenset({"HTTP_HOST", "SERVER_NAME"})),
    Case("repeated-headers", _request(
        "GET / HTTP/1.1\nHost: example.test\nCookie: a=1\nX-Multi: one\nCookie: b=2\n"
        "X-Multi: two\nConnection: close\n"),
        frozenset({"HTTP_COOKIE", "HTTP_X_MULTI"})),
]


@pytest.fixture(scope="module")
def ports(tmp_path_factory):
    """(nginx port, prefork-proxy port), both in front of one environ-dumping uWSGI."""
    root = tmp_path_factory.mktemp("parity")
    with running_uwsgi("environ.py", root / "uwsgi") as server:
        nginx_port, proxy_port = free_port(), free_port()
        servers = f"""
            server {{
                listen 127.0.0.1:{nginx_port};
                server_name example.test;
                client_max_body_size 0;
                location / {{
                    include {UWSGI_PARAMS};
                    uwsgi_pass {server.uwsgi_pass};
                }}
            }}
            """
        config = root / "proxy.toml"
        # nginx's uwsgi_params send no request id: neither does ours here.
        config.write_text(textwrap.dedent(f"""
            workers = 1
            access_log = "off"
            request_id = false
            [[server]]
            listen = ["127.0.0.1:{proxy_port}"]
              [[server.location]]
              path = "/"
              uwsgi_pass = "{server.uwsgi_pass}"
              client_max_body_size = "0"
            """))
        with running_nginx(servers, root / "nginx", ports=[nginx_port]):
            proxy = Proxy(config, root / "proxy.log")
            try:
                proxy.wait_serving()
                yield nginx_port, proxy_port
            finally:
                proxy.stop()


def test_every_listed_difference_is_explained():
    for case in CASES:
        assert case.differs <= DELIBERATE.keys(), case.id


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_environ_matches_nginx_uwsgi_pass(ports, case):
    nginx_port, proxy_port = ports
    through_nginx = exchange(nginx_port, case.request)
    through_proxy = exchange(proxy_port, case.request)
    assert through_nginx.status == through_proxy.status == 200
    expected, actual = json.loads(through_nginx.body), json.loads(through_proxy.body)
    # The body uWSGI read, byte for byte.
    assert actual["body_sha256"] == expected["body_sha256"]
    assert actual["body_length"] == expected["body_length"]
    nginx_env, proxy_env = expected["environ"], actual["environ"]
    differing = {
        key for key in nginx_env.keys() | proxy_env.keys()
        if key not in MUST_DIFFER and nginx_env.get(key) != proxy_env.get(key)
    }
    details = {key: (nginx_env.get(key), proxy_env.get(key)) for key in differing}
    assert differing == case.differs, f"nginx vs prefork-proxy: {details}"
