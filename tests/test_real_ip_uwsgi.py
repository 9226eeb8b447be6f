"""realip and the PROXY protocol for uwsgi_pass: the real uWSGI server's REMOTE_ADDR
and REMOTE_PORT are the real client's (tests/support/uwsgi_apps/environ.py)."""

from __future__ import annotations

import json
import socket

import pytest

from tests.support.processes import free_port
from tests.support.raw_http import read_reply
from tests.support.uwsgi_server import uwsgi_servers

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def proxied_uwsgi(tmp_path, start_proxy):  # noqa: ANN001, ANN201
    """(proxy, the port of its proxy_protocol listener) in front of uWSGI's environ app."""
    pp_port = free_port()
    with uwsgi_servers(tmp_path) as start:
        server = start("environ.py")
        proxy = start_proxy(f"""
            workers = 1
            access_log = "off"
            real_ip_from = ["127.0.0.1"]
            real_ip_header = "X-Forwarded-For"
            [[server]]
            listen = ["127.0.0.1:{{port}}", "127.0.0.1:{pp_port} proxy_protocol"]
              [[server.location]]
              path = "/"
              uwsgi_pass = "{server.uwsgi_pass}"
        """)
        yield proxy, pp_port


def environ_after(port: int, data: bytes) -> dict:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        reply = read_reply(sock)
    assert reply.status == 200, reply
    return json.loads(reply.body)["environ"]


def test_a_trusted_header_sets_remote_addr_and_its_port(proxied_uwsgi) -> None:  # noqa: ANN001
    proxy, _ = proxied_uwsgi
    environ = environ_after(proxy.port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
                                        b"X-Forwarded-For: 203.0.113.7:5678\r\n\r\n")
    assert (environ["REMOTE_ADDR"], environ["REMOTE_PORT"]) == ("203.0.113.7", "5678")
    # nginx: an address with no port leaves $remote_port empty, as on a unix socket.
    environ = environ_after(proxy.port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
                                        b"X-Forwarded-For: 203.0.113.8\r\n\r\n")
    assert (environ["REMOTE_ADDR"], environ["REMOTE_PORT"]) == ("203.0.113.8", "")


def test_a_proxy_header_sets_remote_addr_and_remote_port(proxied_uwsgi) -> None:  # noqa: ANN001
    _, pp_port = proxied_uwsgi
    environ = environ_after(pp_port, b"PROXY TCP4 198.51.100.4 127.0.0.1 5000 80\r\n"
                                     b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert (environ["REMOTE_ADDR"], environ["REMOTE_PORT"]) == ("198.51.100.4", "5000")
