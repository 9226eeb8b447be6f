"""proxy_pass = "https://...": TLS to upstreams, through the real master and workers.

Each location has an HTTPS upstream of its own (tests/support/tls_upstream.py,
certificates from tests/support/upstream_certs.py), so what one upstream saw
(SNI, connections, resumed sessions) is that location's alone: the exact bytes
of a reply, SNI, verification against proxy_ssl_trusted_certificate and
proxy_ssl_name (unknown CA, wrong name: 502 with the cause in the error log
and in /metrics), the name checked without SNI, proxy_ssl_verify off,
keep-alive and session reuse to the upstream, 1 MiB each way, a slow client
of an unbuffered reply, and a handshake
that never completes (504 after proxy_connect_timeout, then the next peer).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.processes import Proxy, free_port, wait_for
from tests.support.raw_http import exchange, read_reply
from tests.support.sites import running_proxy
from tests.support.status import metrics, value
from tests.support.tls_upstream import SilentListener, TlsUpstream, pattern
from tests.support.upstream_certs import TestCa

NAME = "upstream.test"
UPSTREAMS = ("good", "named", "keepalive", "resume", "stranger", "fallback_good", "no_sni")
SILENT = ("silent", "fallback_silent")


@dataclass
class TlsSite:
    proxy: Proxy
    status_port: int
    upstreams: dict[str, TlsUpstream]
    silent: dict[str, SilentListener]

    @property
    def port(self) -> int:
        return self.proxy.port

    def get(self, path: str) -> tuple[int, bytes]:
        reply = exchange(self.port, f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        return reply.status, reply.body

    def error_line(self, words: str) -> str:
        wait_for(lambda: words in self.proxy.log(), message=f"the error line {words!r}")
        return next(line for line in self.proxy.log().splitlines() if words in line)


def _config(ca: Path, up: dict[str, str], status_port: int) -> str:
    trusted = f'proxy_ssl_trusted_certificate = "{ca}"\n  proxy_ssl_name = "{NAME}"'
    return f"""
        workers = 1
        [status]
        listen = "127.0.0.1:{status_port}"
        [upstream.resume]
        servers = ["{up['resume']}"]
        keepalive = 0
        [upstream.fallback]
        servers = ["{up['fallback_silent']}", "{up['fallback_good']} backup"]
        [[server]]
        listen = ["127.0.0.1:{{port}}"]
          [[server.location]]
          path = "/good/"
          proxy_pass = "https://{up['good']}/"
          {trusted}
          client_max_body_size = "0"
          [[server.location]]
          path = "/unbuffered/"
          proxy_pass = "https://{up['good']}/"
          {trusted}
          buffering = false
          [[server.location]]
          path = "/keepalive/"
          proxy_pass = "https://{up['keepalive']}/"
          {trusted}
          [[server.location]]
          path = "/resume/"
          proxy_pass = "https://resume/"
          {trusted}
          [[server.location]]
          path = "/unknown-ca/"
          proxy_pass = "https://{up['stranger']}/"
          {trusted}
          [[server.location]]
          path = "/unverified/"
          proxy_pass = "https://{up['stranger']}/"
          proxy_ssl_verify = false
          [[server.location]]
          path = "/wrong-name/"
          proxy_pass = "https://{up['named']}/"
          proxy_ssl_trusted_certificate = "{ca}"
          proxy_ssl_name = "other.test"
          [[server.location]]
          path = "/no-sni/"
          proxy_pass = "https://{up['no_sni']}/"
          {trusted}
          proxy_ssl_server_name = false
          [[server.location]]
          path = "/no-sni-wrong-name/"
          proxy_pass = "https://{up['no_sni']}/"
          proxy_ssl_trusted_certificate = "{ca}"
          proxy_ssl_name = "other.test"
          proxy_ssl_server_name = false
          [[server.location]]
          path = "/silent/"
          proxy_pass = "https://{up['silent']}/"
          {trusted}
          connect_timeout = "1s"
          [[server.location]]
          path = "/fallback/"
          proxy_pass = "https://fallback/"
          {trusted}
          connect_timeout = "1s"
        """


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsSite]:
    directory = tmp_path_factory.mktemp("upstream_tls")
    ca, stranger_ca = TestCa("trusted test CA"), TestCa("unknown test CA")
    cert, key = ca.issue_files(directory, NAME)
    stranger_cert, stranger_key = stranger_ca.issue_files(directory, NAME)
    upstreams = {name: TlsUpstream(cert, key) for name in UPSTREAMS if name != "stranger"}
    upstreams["stranger"] = TlsUpstream(stranger_cert, stranger_key)
    silent = {name: SilentListener() for name in SILENT}
    addresses = {name: server.address for name, server in {**upstreams, **silent}.items()}
    status_port = free_port()
    try:
        with running_proxy(directory, _config(ca.write(directory / "ca.pem"), addresses,
                                              status_port)) as proxy:
            yield TlsSite(proxy, status_port, upstreams, silent)
    finally:
        for server in [*upstreams.values(), *silent.values()]:
            server.close()


@pytest.mark.timeout(30)
def test_a_get_over_tls_arrives_exact_and_the_upstream_saw_sni(site: TlsSite) -> None:
    assert site.get("/good/hello?a=1") == (200, b"tls upstream: GET /hello?a=1")
    handshakes = site.upstreams["good"].handshakes
    assert handshakes and all(record["sni"] == NAME for record in handshakes)


@pytest.mark.timeout(30)
def test_a_certificate_from_an_unknown_ca_is_a_502_logged_as_a_verify_failure(
        site: TlsSite) -> None:
    assert site.get("/unknown-ca/x")[0] == 502
    peer = site.upstreams["stranger"].address
    line = site.error_line(f"TLS handshake with {peer} failed: certificate verify failed")
    assert "[ERROR]" in line and "unable to get local issuer certificate" in line, line
    assert f"upstream {peer}," in line and 'request "GET /unknown-ca/x' in line, line
    wait_for(lambda: value(metrics(site.status_port), "prefork_proxy_upstream_failures_total",
                           upstream=peer, peer=peer, cause="tls_handshake") == 1,
             message="the tls_handshake failure counted")


@pytest.mark.timeout(30)
def test_proxy_ssl_verify_off_accepts_the_unknown_ca(site: TlsSite) -> None:
    assert site.get("/unverified/y") == (200, b"tls upstream: GET /y")


@pytest.mark.timeout(30)
def test_a_certificate_for_another_name_is_a_502(site: TlsSite) -> None:
    assert site.get("/wrong-name/z")[0] == 502
    peer = site.upstreams["named"].address
    line = site.error_line(f"TLS handshake with {peer} failed: certificate verify failed")
    assert "other.test" in line, line
    assert all(record["sni"] == "other.test" for record in site.upstreams["named"].handshakes)


@pytest.mark.timeout(30)
def test_without_sni_the_name_is_still_verified(site: TlsSite) -> None:
    assert site.get("/no-sni/a") == (200, b"tls upstream: GET /a")
    assert site.get("/no-sni-wrong-name/b")[0] == 502
    peer = site.upstreams["no_sni"].address
    line = site.error_line(f"TLS handshake with {peer} failed: certificate verify failed: "
                           "the certificate does not name 'other.test'")
    assert 'request "GET /no-sni-wrong-name/b' in line, line
    handshakes = site.upstreams["no_sni"].handshakes
    assert len(handshakes) == 2 and all(record["sni"] is None for record in handshakes)


@pytest.mark.timeout(30)
def test_five_requests_reuse_one_tls_connection(site: TlsSite) -> None:
    for number in range(5):
        assert site.get(f"/keepalive/{number}") == (200, f"tls upstream: GET /{number}".encode())
    upstream = site.upstreams["keepalive"]
    assert upstream.connections == 1
    assert len(upstream.handshakes) == 1


@pytest.mark.timeout(30)
def test_a_new_connection_resumes_the_last_session(site: TlsSite) -> None:
    for number in range(3):  # [upstream.resume] keepalive = 0: a connection each
        assert site.get(f"/resume/{number}") == (200, f"tls upstream: GET /{number}".encode())
    upstream = site.upstreams["resume"]
    assert upstream.connections == 3
    assert [record["session_reused"] for record in upstream.handshakes] == [False, True, True]


@pytest.mark.timeout(60)
def test_a_mebibyte_each_way_arrives_intact(site: TlsSite) -> None:
    body = pattern(1 << 20)[::-1]
    request = (b"POST /good/echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%b"
               % (len(body), body))
    reply = exchange(site.port, request)
    assert reply.status == 200 and reply.header("content-length") == str(len(body))
    assert reply.body == body
    status, got = site.get(f"/good/size/{1 << 20}")
    assert status == 200 and got == pattern(1 << 20)


@pytest.mark.timeout(60)
def test_an_unbuffered_reply_to_a_slow_client_pauses_and_resumes_whole(site: TlsSite) -> None:
    # A small receive buffer: the client cannot take the reply as fast as it comes,
    # so the driver stops reading the TLS upstream and starts again, many times.
    size = 4 << 20
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(30)
        sock.connect(("127.0.0.1", site.port))
        sock.sendall(b"GET /unbuffered/size/%d HTTP/1.1\r\nHost: t\r\n\r\n" % size)
        reply = read_reply(sock)
    assert reply.status == 200 and reply.body == pattern(size)


@pytest.mark.timeout(30)
def test_a_handshake_that_never_completes_is_a_504_after_connect_timeout(
        site: TlsSite) -> None:
    started = time.monotonic()
    assert site.get("/silent/x")[0] == 504
    assert 0.9 <= time.monotonic() - started < 5
    peer = site.silent["silent"].address
    line = site.error_line(f"TLS handshake with {peer} timed out (1s)")
    assert "[ERROR]" in line, line


@pytest.mark.timeout(30)
def test_after_a_handshake_timeout_the_next_peer_answers(site: TlsSite) -> None:
    started = time.monotonic()
    assert site.get("/fallback/x") == (200, b"tls upstream: GET /x")
    assert time.monotonic() - started >= 0.9  # the silent peer was tried first
    peer = site.silent["fallback_silent"].address
    site.error_line(f"TLS handshake with {peer} timed out (1s)")
    assert site.upstreams["fallback_good"].handshakes[-1]["sni"] == NAME
