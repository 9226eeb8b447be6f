"""HTTP/2 with prior knowledge (h2c) end to end: the real master on `listen ... http2`.

The client is the `h2` package over a plain socket (tests/support/h2_client.py),
then curl and h2load. Each upstream reply carries its path (/echo) or an exact
body (/bytes/N), so a reply given to the wrong stream shows.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator

import h2.errors
import h2.settings
import pytest

from tests.support.h2_client import H2Client
from tests.support.processes import wait_for
from tests.support.sites import Site, running_site
from tests.support.wire import Wire, request

pytestmark = pytest.mark.timeout(60)
MiB = 1 << 20


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with running_site(tmp_path_factory.mktemp("http2"), """
        workers = 1
        access_log = "{dir}/access.log"
        client_keepalive_timeout = "3s"  # long enough for a loaded machine between steps
        client_send_timeout = "1s"
        [[server]]
        listen = ["127.0.0.1:{port} http2"]
          [[server.location]]
          path = "/"
          proxy_pass = "http://{upstream}"
          client_max_body_size = "0"
          [[server.location]]
          path = "/limited/"
          proxy_pass = "http://{upstream}/echo/"
          client_max_body_size = "10"
    """) as running:
        yield running


@pytest.fixture
def client(site: Site) -> Iterator[H2Client]:
    client = H2Client(site.port)
    yield client
    client.close()


def echoed_path(body: bytes) -> str:
    return json.loads(bytes(body))["path"]


def test_a_get_gets_the_upstream_reply_exactly(client: H2Client) -> None:
    reply = client.get("/bytes/1000")
    assert reply.status == 200
    assert bytes(reply.body) == b"x" * 1000
    assert reply.header(b"content-length") == b"1000"
    names = {name for name, _ in reply.headers}
    assert not names & {b"connection", b"keep-alive", b"transfer-encoding", b"upgrade"}


def test_a_chunked_upstream_reply_is_sent_as_data_frames(client: H2Client) -> None:
    reply = client.get("/chunked/100000")
    assert (reply.status, bytes(reply.body)) == (200, b"x" * 100000)
    assert reply.header(b"transfer-encoding") is None


def test_a_reply_the_upstream_cuts_short_resets_the_stream_never_ends_it(client: H2Client) -> None:
    reply = client.get("/truncated/100000")
    assert (reply.status, len(reply.body), reply.ended) == (200, 50000, False)
    assert reply.reset == h2.errors.ErrorCodes.INTERNAL_ERROR


def test_a_head_request_ends_with_its_headers(client: H2Client) -> None:
    stream = client.request("HEAD", "/bytes/100")
    reply = client.wait([stream])[stream]
    assert (reply.status, reply.header(b"content-length"), bytes(reply.body)) == (200, b"100", b"")


def test_a_204_ends_with_its_headers(client: H2Client) -> None:
    reply = client.get("/status/204")
    assert (reply.status, bytes(reply.body), reply.ended) == (204, b"", True)


def test_the_settings_are_nginx_s(client: H2Client) -> None:
    client.get("/bytes/1")
    codes = h2.settings.SettingCodes
    assert client.remote_settings[codes.MAX_CONCURRENT_STREAMS] == 128
    assert client.remote_settings[codes.MAX_HEADER_LIST_SIZE] == 32 * 1024
    assert client.remote_settings[codes.INITIAL_WINDOW_SIZE] == 65535
    assert client.remote_settings[codes.MAX_FRAME_SIZE] == 16384
    # RFC 8441 §3: 0 (or absent) says no extended CONNECT, so no WebSocket over h2.
    assert client.remote_settings.get(codes.ENABLE_CONNECT_PROTOCOL, 0) == 0


def test_100_concurrent_streams_each_get_their_own_reply(client: H2Client) -> None:
    streams = {client.request("GET", f"/echo/{index}"): index for index in range(100)}
    replies = client.wait(list(streams))
    for stream_id, index in streams.items():
        assert replies[stream_id].status == 200
        assert echoed_path(replies[stream_id].body) == f"/echo/{index}"


def test_a_1_mib_body_and_a_1_mib_reply_pass_whole_both_ways(client: H2Client) -> None:
    body = os.urandom(MiB)
    upload = client.request("POST", "/echo/upload", body=body)
    download = client.request("GET", f"/bytes/{MiB}")
    replies = client.wait([upload, download])
    seen = json.loads(bytes(replies[upload].body))
    assert (seen["body_length"], seen["body_sha256"]) == (MiB, hashlib.sha256(body).hexdigest())
    assert hashlib.sha256(replies[download].body).digest() == hashlib.sha256(b"x" * MiB).digest()


def test_a_body_with_a_content_length_reaches_the_upstream_with_it(client: H2Client) -> None:
    stream = client.request("PUT", "/echo/put", headers=[("content-length", "5")], body=b"hello")
    seen = json.loads(bytes(client.wait([stream])[stream].body))
    assert (seen["method"], seen["body_length"]) == ("PUT", 5)
    assert ["Content-Length", "5"] in seen["headers"]


def test_a_body_over_client_max_body_size_is_answered_413(client: H2Client) -> None:
    stream = client.request("POST", "/limited/x", body=b"y" * 100)
    assert client.wait([stream])[stream].status == 413
    assert client.get("/bytes/3").status == 200  # the connection goes on


def test_a_stream_reset_mid_reply_leaves_the_others_whole(client: H2Client) -> None:
    big = client.request("GET", f"/bytes/{20 * MiB}")
    others = [client.request("GET", f"/echo/other{index}") for index in range(5)]
    wait_for(lambda: client.read_once() is not None and len(client.replies[big].body) > 0,
             message="the big reply's first DATA")
    client.conn.reset_stream(big, h2.errors.ErrorCodes.CANCEL)
    client.flush()
    replies = client.wait(others)
    assert [echoed_path(replies[s].body) for s in others] == [f"/echo/other{i}"
                                                              for i in range(5)]
    assert len(client.replies[big].body) < 20 * MiB
    assert bytes(client.get("/bytes/10").body) == b"x" * 10


def test_a_malformed_request_is_a_stream_error_not_a_connection_error(site: Site) -> None:
    client = H2Client(site.port, raw_headers=True)
    try:
        bad = client.request("GET", "/echo/bad", headers=[("upgrade", "websocket"),
                                                           ("connection", "upgrade")])
        assert client.wait([bad])[bad].reset == h2.errors.ErrorCodes.PROTOCOL_ERROR
        bad = client.request("GET", "/echo/bad", headers=[("X-Upper", "1")])
        assert client.wait([bad])[bad].reset == h2.errors.ErrorCodes.PROTOCOL_ERROR
        assert echoed_path(client.get("/echo/good").body) == "/echo/good"
    finally:
        client.close()


def test_rapid_reset_is_answered_enhance_your_calm_while_others_are_served(site: Site) -> None:
    honest = H2Client(site.port)
    attacker = H2Client(site.port)
    try:
        attacker.sock.settimeout(0.05)
        sent = 0
        with pytest.raises(OSError):  # the proxy closes on the attacker, mid-loop
            while sent < 10_000:
                for _ in range(50):
                    stream = attacker.request("GET", f"/echo/{sent}")
                    attacker.conn.reset_stream(stream, h2.errors.ErrorCodes.CANCEL)
                    sent += 1
                attacker.flush()
                try:
                    attacker.read_once()
                except TimeoutError:
                    pass
                if attacker.terminated is not None or attacker.closed:
                    raise ConnectionResetError("closed by the proxy")
        assert attacker.terminated is not None, "no GOAWAY before the close"
        assert attacker.terminated.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
        assert sent < 10_000
        assert echoed_path(honest.get("/echo/honest").body) == "/echo/honest"
    finally:
        honest.close()
        attacker.close()


def test_an_idle_connection_gets_goaway_after_keepalive_timeout(client: H2Client) -> None:
    assert client.get("/bytes/1").status == 200
    started = time.monotonic()
    client.read_until_closed(timeout=10)
    assert client.terminated is not None
    assert client.terminated.error_code == h2.errors.ErrorCodes.NO_ERROR
    assert 2.9 < time.monotonic() - started < 7


def test_a_stream_the_client_gives_no_window_is_reset_after_send_timeout(site: Site) -> None:
    client = H2Client(site.port)
    try:
        client.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
        client.flush()
        stalled = client.request("GET", f"/bytes/{MiB}")
        started = time.monotonic()
        reply = client.wait([stalled], timeout=10)[stalled]
        assert reply.status == 200 and reply.body == b""
        assert reply.reset == h2.errors.ErrorCodes.INTERNAL_ERROR
        assert 0.9 < time.monotonic() - started < 5
    finally:
        client.close()


def test_a_client_that_sends_pings_and_reads_nothing_is_closed(site: Site) -> None:
    client = H2Client(site.port)
    try:
        client.sock.settimeout(0.5)
        with pytest.raises(OSError):  # the proxy stops reading: our writes block
            for count in range(2_000_000):
                client.conn.ping(b"%08d" % (count % 10**8))
                client.flush()
        client.sock.settimeout(10)
        started = time.monotonic()
        client.read_until_closed(timeout=10)
        assert time.monotonic() - started < 6
    finally:
        client.close()


def test_a_client_that_stops_reading_a_reply_is_closed_after_send_timeout(site: Site) -> None:
    client = H2Client(site.port)
    try:
        client.request("GET", f"/bytes/{50 * MiB}")
        time.sleep(3)  # send_timeout is 1s: the proxy gives up on us meanwhile
        client.read_until_closed(timeout=10)
        assert len(client.replies[1].body) < 50 * MiB
    finally:
        client.close()


def test_an_http11_client_on_the_http2_listener_is_served_as_before(site: Site) -> None:
    wire = Wire(site.port)
    wire.send(request("GET", "/bytes/5", host="127.0.0.1"))
    reply = wire.response()
    assert (reply.version, reply.status, reply.body) == (b"HTTP/1.1", 200, b"xxxxx")


def test_curl_with_prior_knowledge_works(site: Site) -> None:
    result = subprocess.run(
        ["curl", "-sS", "--http2-prior-knowledge", "-o", "-", "-w", "%{http_version} %{http_code}",
         f"http://127.0.0.1:{site.port}/bytes/64"], capture_output=True, timeout=20)
    assert result.stdout == b"x" * 64 + b"2 200", result.stderr


def test_h2load_2000_requests_all_succeed(site: Site) -> None:
    result = subprocess.run(["h2load", "-n", "2000", "-c", "4", "-m", "50",
                             f"http://127.0.0.1:{site.port}/bytes/100"],
                            capture_output=True, timeout=50, text=True)
    assert "2000 succeeded, 0 failed" in result.stdout, result.stdout + result.stderr
    assert "2000 2xx" in result.stdout


def test_the_access_log_says_http_2(site: Site, client: H2Client) -> None:
    client.get("/bytes/7?logged")
    log = site.proxy.config_path.parent / "access.log"
    wait_for(lambda: log.exists() and '"GET /bytes/7?logged HTTP/2.0" 200 7 ' in log.read_text(),
             message="the access log line")


def test_a_drain_sends_goaway_and_finishes_the_open_stream(tmp_path, upstream, start_proxy) -> None:
    proxy = start_proxy(f"""
        workers = 1
        [[server]]
        listen = ["127.0.0.1:{{port}} http2"]
          [[server.location]]
          path = "/"
          proxy_pass = "http://{upstream.address}"
    """)
    client = H2Client(proxy.port)
    try:
        assert client.get("/bytes/1").status == 200
        slow = client.request("GET", "/slow/1")
        time.sleep(0.2)  # the request is with the upstream
        old = proxy.worker_pids()
        os.kill(proxy.pid, signal.SIGHUP)
        reply = client.wait([slow])[slow]
        assert reply.status == 200
        client.read_until_closed(timeout=10)
        assert client.terminated is not None
        assert client.terminated.error_code == h2.errors.ErrorCodes.NO_ERROR
        wait_for(lambda: not (proxy.worker_pids() & old), message="the old worker to exit")
    finally:
        client.close()


def test_uwsgi_through_http2(tmp_path, start_proxy) -> None:
    from tests.support.uwsgi_server import uwsgi_servers

    with uwsgi_servers(tmp_path) as start:
        server = start("hello.py")
        proxy = start_proxy(f"""
            workers = 1
            [[server]]
            listen = ["127.0.0.1:{{port}} http2"]
              [[server.location]]
              path = "/"
              uwsgi_pass = "{server.uwsgi_pass}"
        """)
        client = H2Client(proxy.port)
        try:
            replies = client.wait([client.request("GET", f"/{index}") for index in range(10)])
            assert {(r.status, bytes(r.body)) for r in replies.values()} == {
                (200, b"hello world")}
        finally:
            client.close()


def test_a_preface_sent_in_two_pieces_is_still_http2(site: Site) -> None:
    client = H2Client(site.port, preface_split=8)  # "PRI * HT", then the rest
    try:
        assert bytes(client.get("/bytes/2").body) == b"xx"
    finally:
        client.close()
