"""TLS on the client side of a WebSocket tunnel (wss) and of uwsgi_pass.

wss: the `websockets` client, with an SSL context that trusts the test CA,
through the real proxy to the `websockets` echo upstream: messages echo,
a 200 KiB one too (many TLS records each way, read whole, none left pending).
uwsgi: the real uWSGI sees HTTPS=on and REQUEST_SCHEME=https.
"""

from __future__ import annotations

import json
import os
import socket

import pytest
from websockets.sync.client import connect

from tests.support.certs import CertificateAuthority, with_tls
from tests.support.configs import one_location
from tests.support.raw_http import read_reply
from tests.support.uwsgi_server import uwsgi_servers
from tests.support.ws_upstream import proxy_config, start_ws_echo

pytestmark = pytest.mark.timeout(60)
OPTIONS = {"compression": None, "max_size": None, "open_timeout": 10, "close_timeout": 10}


@pytest.fixture
def ca() -> CertificateAuthority:
    return CertificateAuthority()


def test_wss_messages_echo_through_the_proxy(ca, tmp_path, start_proxy, started):
    echo = start_ws_echo(started, tmp_path)
    cert, key = ca.leaf(tmp_path, ["a.test"])
    proxy = start_proxy(with_tls(proxy_config(echo.address), cert, key))
    context = ca.client_context()
    big = os.urandom(200 * 1024)
    with connect(f"wss://a.test:{proxy.port}/", ssl=context, server_hostname="a.test",
                 sock=socket.create_connection(("127.0.0.1", proxy.port), timeout=10),
                 **OPTIONS) as websocket:
        for message in ("hello", "x" * 70_000, big, "after"):
            websocket.send(message)
            assert websocket.recv(timeout=10) == message


def test_uwsgi_sees_https_on_and_the_https_scheme(ca, tmp_path, start_proxy):
    cert, key = ca.leaf(tmp_path, ["a.test"])
    with uwsgi_servers(tmp_path) as start_uwsgi:
        server = start_uwsgi("environ.py")
        proxy = start_proxy(with_tls(one_location(
            server.uwsgi_pass, top='workers = 1\naccess_log = "off"', directive="uwsgi_pass"),
            cert, key))
        raw = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        with ca.client_context().wrap_socket(raw, server_hostname="a.test") as sock:
            sock.sendall(b"GET /env?x=1 HTTP/1.1\r\nHost: a.test\r\n\r\n")
            reply = read_reply(sock)
    assert reply.status == 200
    environ = json.loads(reply.body)["environ"]
    assert (environ["HTTPS"], environ["REQUEST_SCHEME"]) == ("on", "https")
    assert environ["QUERY_STRING"] == "x=1"
    assert environ["SERVER_PORT"] == str(proxy.port)


def test_a_plain_listener_sends_no_https_to_uwsgi(tmp_path, start_proxy):
    with uwsgi_servers(tmp_path) as start_uwsgi:
        server = start_uwsgi("environ.py")
        proxy = start_proxy(one_location(
            server.uwsgi_pass, top='workers = 1\naccess_log = "off"', directive="uwsgi_pass"))
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
            environ = json.loads(read_reply(sock).body)["environ"]
    assert "HTTPS" not in environ
    assert environ["REQUEST_SCHEME"] == "http"


