"""uwsgi_pass end to end: the real master and workers in front of the real uWSGI server.

Each test starts uWSGI (`tests/support/uwsgi_server.py`) and the proxy on
ephemeral ports, and both are killed at teardown.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import string
import threading
import time

import pytest

from tests.support.configs import one_location
from tests.support.processes import wait_for
from tests.support.raw_http import chunked, exchange, read_reply
from tests.support.scripted_uwsgi import ScriptedUwsgi
from tests.support.uwsgi_server import uwsgi_servers

MiB = 1 << 20


def uwsgi_config(uwsgi_pass: str, extra: str = "") -> str:
    """A one-worker proxy with `location /` calling `uwsgi_pass`."""
    return one_location(uwsgi_pass, top='workers = 1\naccess_log = "off"',
                        directive="uwsgi_pass", location=f'client_max_body_size = "0"\n{extra}')


@pytest.fixture
def uwsgi(tmp_path):
    """`uwsgi("hello.py", unix=False)` starts uWSGI on an app of tests/support/uwsgi_apps."""
    with uwsgi_servers(tmp_path) as start:
        yield start


def get(port: int, target: str = "/", headers: str = "", version: str = "1.1") -> bytes:
    return (f"GET {target} HTTP/{version}\r\nHost: 127.0.0.1:{port}\r\n{headers}"
            f"Connection: close\r\n\r\n").encode()


def environ_of(reply) -> dict:
    assert reply.status == 200, reply
    return json.loads(reply.body)


# --- the seed ------------------------------------------------------------------


def test_seed_hello_world_uwsgi_on_one_port_proxy_on_another(uwsgi, start_proxy):
    # The seed: `uwsgi --socket :7000 --wsgi-file test.py`, a proxy on 7001, curl.
    server = uwsgi("hello.py")
    proxy = start_proxy(uwsgi_config(server.uwsgi_pass))
    reply = exchange(proxy.port, get(proxy.port))
    assert (reply.status, reply.body) == (200, b"hello world")
    # uWSGI gives no length and closes. The close has arrived with this short
    # reply, so the client gets it whole with a length (a longer one is chunked:
    # see the streamed-response test); either way it stays keep-alive.
    assert reply.chunked or reply.header("content-length") == "11"


def test_keep_alive_client_gets_several_replies_on_one_connection(uwsgi, start_proxy):
    proxy = start_proxy(uwsgi_config(uwsgi("hello.py").uwsgi_pass))
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        for _ in range(3):
            sock.sendall(f"GET / HTTP/1.1\r\nHost: x:{proxy.port}\r\n\r\n".encode())
            reply = read_reply(sock)
            assert (reply.status, reply.body) == (200, b"hello world")
            assert reply.header("connection") is None


def test_http_1_0_client_gets_the_body_until_close(uwsgi, start_proxy):
    proxy = start_proxy(uwsgi_config(uwsgi("hello.py").uwsgi_pass))
    reply = exchange(proxy.port, b"GET / HTTP/1.0\r\n\r\n")
    assert (reply.status, reply.body, reply.chunked) == (200, b"hello world", False)


# --- the vars ------------------------------------------------------------------


def test_environ_carries_every_uwsgi_param_and_the_client_headers(uwsgi, start_proxy):
    proxy = start_proxy(uwsgi_config(uwsgi("environ.py").uwsgi_pass))
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        client_port = sock.getsockname()[1]
        sock.sendall(
            b"GET /a%20b//c/./d?x=%41&y=2 HTTP/1.1\r\n"
            b"Host: Example.TEST:" + str(proxy.port).encode() + b"\r\n"
            b"Cookie: a=1\r\nX-Multi: one\r\nCookie: b=2\r\nX-Multi: two\r\n"
            b"X_Sneaky: dropped\r\nConnection: close\r\n\r\n"
        )
        environ = environ_of(read_reply(sock))["environ"]
    assert environ["QUERY_STRING"] == "x=%41&y=2"
    assert environ["REQUEST_METHOD"] == "GET"
    assert environ["CONTENT_TYPE"] == ""
    assert environ["CONTENT_LENGTH"] == ""
    assert environ["REQUEST_URI"] == "/a%20b//c/./d?x=%41&y=2"
    assert environ["PATH_INFO"] == "/a b/c/d"
    assert environ["DOCUMENT_ROOT"] == ""
    assert environ["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert environ["REQUEST_SCHEME"] == "http"
    assert "HTTPS" not in environ
    assert environ["REMOTE_ADDR"] == "127.0.0.1"
    assert environ["REMOTE_PORT"] == str(client_port)
    assert environ["SERVER_PORT"] == str(proxy.port)
    assert environ["SERVER_NAME"] == "example.test"
    assert environ["HTTP_HOST"] == f"Example.TEST:{proxy.port}"
    assert environ["HTTP_COOKIE"] == "a=1; b=2"
    assert environ["HTTP_X_MULTI"] == "one, two"
    assert environ["HTTP_CONNECTION"] == "close"
    assert not any(key.startswith("HTTP_X_SNEAKY") for key in environ)


def test_post_sends_content_type_and_length(uwsgi, start_proxy):
    proxy = start_proxy(uwsgi_config(uwsgi("environ.py").uwsgi_pass))
    body = b'{"k": 1}'
    reply = exchange(proxy.port, b"POST /form HTTP/1.1\r\nHost: h\r\nContent-Type: application/json"
                     b"\r\nContent-Length: 8\r\nConnection: close\r\n\r\n" + body)
    result = environ_of(reply)
    assert result["environ"]["CONTENT_TYPE"] == "application/json"
    assert result["environ"]["CONTENT_LENGTH"] == "8"
    assert result["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_uwsgi_param_sets_replaces_and_removes_vars(uwsgi, start_proxy):
    params = ('uwsgi_param = { SCRIPT_NAME = "/app", SERVER_NAME = "internal", '
              'HTTP_X_FROM = "config", REMOTE_PORT = "", HTTP_USER_AGENT = "" }')
    proxy = start_proxy(uwsgi_config(uwsgi("environ.py").uwsgi_pass, params))
    environ = environ_of(exchange(proxy.port, get(
        proxy.port, headers="X-From: client\r\nUser-Agent: test\r\n")))["environ"]
    assert environ["SCRIPT_NAME"] == "/app"
    assert environ["SERVER_NAME"] == "internal"
    assert environ["HTTP_X_FROM"] == "config"
    assert "REMOTE_PORT" not in environ
    assert "HTTP_USER_AGENT" not in environ


def test_modifiers_are_sent_in_the_packet_header(start_proxy):
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    with ScriptedUwsgi(reply) as peer:
        proxy = start_proxy(uwsgi_config(peer.address, "uwsgi_modifier1 = 5\nuwsgi_modifier2 = 9"))
        assert exchange(proxy.port, get(proxy.port)).body == b"ok"
        assert (peer.requests[0].modifier1, peer.requests[0].modifier2) == (5, 9)


# --- bodies --------------------------------------------------------------------


def test_10mb_content_length_post_arrives_intact(uwsgi, start_proxy):
    proxy = start_proxy(uwsgi_config(uwsgi("environ.py").uwsgi_pass))
    body = os.urandom(10 * MiB)
    head = (f"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n").encode()
    result = environ_of(exchange(proxy.port, head + body, timeout=60))
    assert result["body_length"] == len(body)
    assert result["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert result["environ"]["CONTENT_LENGTH"] == str(len(body))


@pytest.mark.parametrize("size", [100_000, 3 * MiB], ids=["in-memory", "spilled-to-file"])
def test_chunked_post_is_dechunked_and_sent_with_its_real_length(uwsgi, start_proxy, size):
    proxy = start_proxy(uwsgi_config(uwsgi("environ.py").uwsgi_pass))
    body = os.urandom(size)
    head = (b"POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n")
    result = environ_of(exchange(proxy.port, head + chunked(body, 65_000), timeout=60))
    assert result["body_length"] == size
    assert result["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert result["environ"]["CONTENT_LENGTH"] == str(size)


def test_chunked_body_over_client_max_body_size_is_413(uwsgi, start_proxy):
    config = uwsgi_config(uwsgi("environ.py").uwsgi_pass).replace('"0"', '"1k"')
    proxy = start_proxy(config)
    head = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert exchange(proxy.port, head + chunked(b"x" * 5000, 1000)).status == 413


# --- upstream kinds and replies --------------------------------------------------


def test_unix_socket_upstream(uwsgi, start_proxy):
    server = uwsgi("hello.py", unix=True)
    assert server.uwsgi_pass.startswith("unix:/")
    proxy = start_proxy(uwsgi_config(server.uwsgi_pass))
    assert exchange(proxy.port, get(proxy.port)).body == b"hello world"


def test_streamed_20mb_response_keeps_the_worker_rss_flat(uwsgi, start_proxy):
    proxy = start_proxy(uwsgi_config(uwsgi("stream.py").uwsgi_pass))
    (worker,) = wait_for(proxy.workers, message="the worker")
    digest, received, samples = hashlib.sha256(), 0, []
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as sock:
        sock.sendall(get(proxy.port, "/stream"))
        stream = sock.makefile("rb")
        while stream.readline() != b"\r\n":  # the head
            pass
        # Read the chunked body slowly enough that the proxy waits on us.
        while size := int(stream.readline().split(b";")[0], 16):
            piece = stream.read(size)
            stream.read(2)
            digest.update(piece)
            received += len(piece)
            if len(samples) < received // MiB:
                samples.append(worker.memory_info().rss)
    pattern = bytes(range(256)) * 256
    assert received == 20 * MiB
    assert digest.hexdigest() == hashlib.sha256(pattern * 320).hexdigest()
    # Flat: after the first MiB (buffers warmed up), no growth with the body.
    growth = max(samples[1:]) - samples[1]
    assert growth < 4 * MiB, [sample // 1024 for sample in samples]


def test_cgi_style_replies_are_relayed_as_http(start_proxy):
    with ScriptedUwsgi(b"Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nnope") as peer:
        proxy = start_proxy(uwsgi_config(peer.address))
        reply = exchange(proxy.port, get(proxy.port))
        assert (reply.status, reply.reason, reply.body) == (404, "Not Found", b"nope")
        assert reply.header("status") is None
    with ScriptedUwsgi(b"Location: /next\r\n\r\n") as peer:
        proxy = start_proxy(uwsgi_config(peer.address), name="proxy2")
        reply = exchange(proxy.port, get(proxy.port))
        assert (reply.status, reply.header("location")) == (302, "/next")


# --- errors --------------------------------------------------------------------


def test_uwsgi_killed_gives_502_and_a_log_line(uwsgi, start_proxy):
    server = uwsgi("hello.py")
    proxy = start_proxy(uwsgi_config(server.uwsgi_pass))
    assert exchange(proxy.port, get(proxy.port)).status == 200
    server.kill()
    reply = exchange(proxy.port, get(proxy.port))
    assert reply.status == 502
    assert b"502 Bad Gateway" in reply.body and len(reply.body) < 200
    # Refused; or reset, when a worker still dying held the listening socket a
    # moment longer than the master.
    address = re.escape(server.socket)
    line = re.compile(rf"(failed|closed the connection).*, uwsgi server {address},")
    wait_for(lambda: line.search(proxy.log()), message="the error log line")


def test_malformed_reply_gives_502(start_proxy):
    with ScriptedUwsgi(b"this is not a reply\r\n\r\n") as peer:
        proxy = start_proxy(uwsgi_config(peer.address))
        assert exchange(proxy.port, get(proxy.port)).status == 502
        wait_for(lambda: "malformed" in proxy.log(), message="the error log line")


def test_reply_timeout_gives_504_and_a_log_line(start_proxy):
    with ScriptedUwsgi(None) as peer:
        proxy = start_proxy(uwsgi_config(peer.address, 'read_timeout = "1s"'))
        started = time.monotonic()
        reply = exchange(proxy.port, get(proxy.port))
        assert reply.status == 504
        assert time.monotonic() - started < 10
        wait_for(lambda: "timed out" in proxy.log(), message="the error log line")


def test_vars_over_65535_bytes_answer_431_and_are_never_truncated(start_proxy):
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    with ScriptedUwsgi(reply) as peer:
        proxy = start_proxy(uwsgi_config(peer.address))
        # Under the proxy's 32 KiB head limit, thousands of short headers, each of
        # which grows by "HTTP_" and two lengths as a var, plus an 8 KiB URI sent
        # three times over (REQUEST_URI, PATH_INFO, QUERY_STRING): 71 KB of vars.
        # (Names that differ only in case would share a var: upper case only.)
        chars = string.ascii_uppercase + string.digits
        names = [a + b for a in chars for b in chars]
        names += [name + c for name in names for c in chars][:2900]
        headers = "".join(f"{name}: v\r\n" for name in names)
        target = "/" + "p" * 3900 + "?" + "q" * 3900
        reply = exchange(proxy.port, get(proxy.port, target, headers))
        assert reply.status == 431
        assert peer.requests == []
        wait_for(lambda: "uwsgi request is too big" in proxy.log(), message="the log line")


def test_packet_over_uwsgi_buffer_size_is_502_with_a_hint(uwsgi, start_proxy):
    # uWSGI's default --buffer-size is 4096: it drops a bigger packet unanswered.
    server = uwsgi("hello.py", extra_args=("--buffer-size", "4096"))
    proxy = start_proxy(uwsgi_config(server.uwsgi_pass))
    reply = exchange(proxy.port, get(proxy.port, headers=f"X-Big: {'v' * 5000}\r\n"))
    assert reply.status == 502
    wait_for(lambda: "--buffer-size" in proxy.log(), message="the hint in the log")


def test_slow_uwsgi_does_not_block_other_requests(uwsgi, start_proxy):
    # One worker: a request stuck on a silent uwsgi server must not stall the next.
    fast = uwsgi("hello.py")
    with ScriptedUwsgi(None) as silent:
        proxy = start_proxy(f"""
            workers = 1
            access_log = "off"
            [[server]]
            listen = ["127.0.0.1:{{port}}"]
              [[server.location]]
              path = "/"
              uwsgi_pass = "{fast.uwsgi_pass}"
              [[server.location]]
              path = "/slow/"
              uwsgi_pass = "{silent.address}"
              read_timeout = "5s"
            """)
        stuck = threading.Thread(target=exchange, args=(proxy.port, get(proxy.port, "/slow/")))
        stuck.start()
        wait_for(lambda: silent.requests, message="the slow request to arrive")
        assert exchange(proxy.port, get(proxy.port), timeout=3).body == b"hello world"
        stuck.join(10)


def test_head_request_gets_the_head_only_and_the_connection_stays_usable(uwsgi, start_proxy):
    proxy = start_proxy(uwsgi_config(uwsgi("hello.py").uwsgi_pass))
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n")
        assert read_reply(sock, head_request=True).status == 200
        sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        assert read_reply(sock).body == b"hello world"


def test_a_client_on_a_unix_listener_is_remote_addr_unix(uwsgi, start_proxy, tmp_path):
    # nginx: $remote_addr is "unix:" and there are no ports on a unix socket.
    path = f"/tmp/prefork-proxy-uwsgi-{os.getpid()}.sock"
    config = uwsgi_config(uwsgi("environ.py").uwsgi_pass).replace(
        'listen = ["127.0.0.1:{port}"]', f'listen = ["127.0.0.1:{{port}}", "unix:{path}"]')
    start_proxy(config)
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(path)
            sock.sendall(b"GET /u HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
            environ = environ_of(read_reply(sock))["environ"]
    finally:
        if os.path.exists(path):
            os.unlink(path)
    assert (environ["REMOTE_ADDR"], environ["REMOTE_PORT"], environ["SERVER_PORT"]) == (
        "unix:", "", "")
    assert environ["SERVER_NAME"] == "app.test"
