"""TLS termination (`listen ... ssl`) through the real master, workers and upstream.

Certificates come from tests/support/certs.py (a CA made for the module, and a
leaf for a.test and 127.0.0.1). A client verifies the proxy against that CA:
bytes and forwarding headers as over plain HTTP, keep-alive, 1 MiB each way,
curl, TLS 1.1 refused, plain HTTP answered 400, a silent client closed at
client_header_timeout, sessions resumed across workers and not after a
reload, and a broken certificate refused by `-t` and by a reload.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.certs import CertificateAuthority
from tests.support.processes import ROOT, wait_for
from tests.support.sites import Site, running_site
from tests.support.wire import Wire, request

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority()


def tls_config(directory: Path, ca: CertificateAuthority, extra: str = "",
               workers: int = 1) -> str:
    cert, key = ca.leaf(directory, ["a.test", "127.0.0.1"])
    return f"""
        workers = {workers}
        access_log = "off"
        [[server]]
        listen = ["127.0.0.1:{{port}} ssl"]
        ssl_certificate = "{cert}"
        ssl_certificate_key = "{key}"
        client_header_timeout = "1s"
        {extra}
          [[server.location]]
          path = "/"
          proxy_pass = "http://{{upstream}}"
          client_max_body_size = "0"
    """


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, ca: CertificateAuthority) -> Iterator[Site]:
    directory = tmp_path_factory.mktemp("tls")
    with running_site(directory, tls_config(directory, ca, workers=2)) as running:
        yield running


def tls_wire(port: int, context: ssl.SSLContext, host: str = "a.test",
             session: ssl.SSLSession | None = None) -> Wire:
    """A Wire over a verified TLS connection to the proxy."""
    wire = Wire.__new__(Wire)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    wire.sock = context.wrap_socket(raw, server_hostname=host, session=session)
    wire.buffer = b""
    return wire


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_an_https_get_returns_the_upstreams_bytes(site: Site, ca: CertificateAuthority) -> None:
    with tls_wire(site.port, ca.client_context()) as wire:
        wire.send(request("GET", "/bytes/70000", host="a.test"))
        response = wire.response()
    assert response.status == 200
    assert response.header("Content-Length") == "70000"
    assert response.body == b"x" * 70000


def test_x_forwarded_proto_https_reaches_the_upstream(site: Site,
                                                      ca: CertificateAuthority) -> None:
    with tls_wire(site.port, ca.client_context()) as wire:
        wire.send(request("GET", "/echo/proto", host="a.test",
                          headers=[("X-Forwarded-Proto", "http")]))
        echo = wire.response().json()
    proto = [value for name, value in echo["headers"] if name.lower() == "x-forwarded-proto"]
    assert proto == ["https"]


def test_three_requests_share_one_tls_connection(site: Site, ca: CertificateAuthority) -> None:
    with tls_wire(site.port, ca.client_context()) as wire:
        for index in range(3):
            wire.send(request("GET", f"/echo/keep/{index}", host="a.test"))
            response = wire.response()
            assert response.status == 200
            assert response.json()["path"] == f"/echo/keep/{index}"
        assert not wire.closed(timeout=0.2)


def test_a_1mib_post_and_a_1mib_reply_arrive_intact(site: Site,
                                                    ca: CertificateAuthority) -> None:
    body = os.urandom(1 << 20)
    with tls_wire(site.port, ca.client_context()) as wire:
        wire.send(request("POST", "/echo/big", host="a.test", body=body))
        echo = wire.response().json()
        assert (echo["body_length"], echo["body_sha256"]) == (len(body), sha256(body))
        wire.send(request("GET", f"/bytes/{1 << 20}", host="a.test"))
        reply = wire.response()
    assert reply.status == 200
    assert sha256(reply.body) == sha256(b"x" * (1 << 20))


def test_a_4mib_reply_to_a_client_with_a_small_receive_buffer_arrives_intact(
        site: Site, ca: CertificateAuthority) -> None:
    # The proxy's sends meet a full socket again and again (want-write): each retry
    # must carry the same bytes on, none twice, none lost.
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.settimeout(10)
    raw.connect(("127.0.0.1", site.port))
    wire = Wire.__new__(Wire)
    wire.sock = ca.client_context().wrap_socket(raw, server_hostname="a.test")
    wire.buffer = b""
    with wire:
        wire.send(request("GET", f"/bytes/{4 << 20}", host="a.test"))
        reply = wire.response()
    assert reply.status == 200
    assert sha256(reply.body) == sha256(b"x" * (4 << 20))


def test_curl_fetches_over_https_with_the_test_ca(site: Site, ca: CertificateAuthority,
                                                  tmp_path: Path) -> None:
    ca_file = ca.write(tmp_path)
    result = subprocess.run(
        ["curl", "-sS", "--cacert", str(ca_file), "--resolve", f"a.test:{site.port}:127.0.0.1",
         f"https://a.test:{site.port}/bytes/5"], capture_output=True, timeout=20)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"xxxxx"


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated")
def test_a_tls_1_1_client_is_refused(site: Site, ca: CertificateAuthority) -> None:
    context = ca.client_context()
    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("ALL:@SECLEVEL=0")
    with pytest.raises(ssl.SSLError):
        tls_wire(site.port, context)
    wait_for(lambda: "TLS handshake failed" in site.proxy.log(), message="the refusal logged")
    # The worker still serves.
    with tls_wire(site.port, ca.client_context()) as wire:
        wire.send(request("GET", "/bytes/1", host="a.test"))
        assert wire.response().body == b"x"


def test_plain_http_on_the_ssl_port_gets_nginxs_400(site: Site) -> None:
    with Wire(site.port) as wire:
        wire.send(request("GET", "/bytes/1"))
        data = wire.drain(timeout=5)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head == (b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/html\r\n"
                    b"Content-Length: %d\r\nConnection: close" % len(body))
    assert b"The plain HTTP request was sent to HTTPS port" in body


def test_a_silent_client_is_closed_at_client_header_timeout(site: Site) -> None:
    with Wire(site.port) as wire:
        started = time.monotonic()
        assert wire.closed(timeout=5)
        assert 0.9 < time.monotonic() - started < 3.5


def test_a_client_stalled_mid_handshake_is_closed_at_client_header_timeout(
        site: Site) -> None:
    with Wire(site.port) as wire:
        started = time.monotonic()
        wire.send(b"\x16\x03\x01\x02\x00\x01")  # a ClientHello's first bytes, no more
        assert wire.closed(timeout=5)
        assert 0.9 < time.monotonic() - started < 3.5
    wait_for(lambda: "timed out in the TLS handshake" in site.proxy.log(),
             message="the timeout logged")


def test_a_garbled_handshake_is_closed_and_logged(site: Site, ca: CertificateAuthority) -> None:
    with Wire(site.port) as wire:
        wire.send(b"\x16\x03\x01\x00\x05hello")
        assert wire.drain(timeout=5)[:1] == b"\x15"  # an alert record, then the close
    wait_for(lambda: site.proxy.log().count("TLS handshake failed") >= 1,
             message="the failure logged")
    with tls_wire(site.port, ca.client_context()) as wire:
        wire.send(request("GET", "/bytes/2", host="a.test"))
        assert wire.response().body == b"xx"


def test_a_client_silent_after_the_handshake_is_closed_at_client_header_timeout(
        site: Site, ca: CertificateAuthority) -> None:
    started = time.monotonic()
    with tls_wire(site.port, ca.client_context()) as wire:
        assert wire.closed(timeout=5)
    assert 0.9 < time.monotonic() - started < 3.5


def resumes(port: int, context: ssl.SSLContext, session: ssl.SSLSession) -> bool:
    with tls_wire(port, context, session=session) as wire:
        wire.send(request("GET", "/bytes/1", host="a.test"))
        assert wire.response().body == b"x"
        return wire.sock.session_reused


def new_session(port: int, context: ssl.SSLContext) -> ssl.SSLSession:
    with tls_wire(port, context) as wire:
        wire.send(request("GET", "/bytes/1", host="a.test"))
        assert wire.response().body == b"x"  # (TLS 1.3 tickets come after the handshake)
        assert not wire.sock.session_reused
        return wire.sock.session


def serving_worker(running: Site, wire: Wire) -> int:
    """The pid of the worker that holds the other end of `wire`'s connection."""
    port = wire.sock.getsockname()[1]
    for worker in running.proxy.workers():
        if any(conn.raddr and conn.raddr.port == port for conn in worker.net_connections()):
            return worker.pid
    raise AssertionError(f"no worker holds the connection from port {port}")


def resumed_by_workers(running: Site, context: ssl.SSLContext, session: ssl.SSLSession,
                       count: int) -> set[int]:
    """The workers that served `count` connections open at once, each of which must
    have resumed `session`."""
    wires = [tls_wire(running.port, context, session=session) for _ in range(count)]
    try:
        for wire in wires:
            wire.send(request("GET", "/bytes/1", host="a.test"))
            assert wire.response().body == b"x"
        assert [wire.sock.session_reused for wire in wires] == [True] * count
        return {serving_worker(running, wire) for wire in wires}
    finally:
        for wire in wires:
            wire.close()


def test_sessions_resume_on_any_worker_and_not_after_a_reload(
        tmp_path: Path, ca: CertificateAuthority) -> None:
    with running_site(tmp_path, tls_config(tmp_path, ca, workers=2)) as running:
        context = ca.client_context()
        session = new_session(running.port, context)
        # Eight connections open at once are shared by the two workers (acceptor.py,
        # once they know each other): every one resumes, as each holds the same keys.
        wait_for(lambda: len(resumed_by_workers(running, context, session, 8)) == 2,
                 message="eight resumed connections on both workers")
        running.proxy.signal(signal.SIGHUP)
        running.proxy.wait_serving(2)
        wait_for(lambda: "drains" in running.proxy.log(), message="the old generation drains")
        assert not resumes(running.port, context, session)
        assert resumes(running.port, context, new_session(running.port, context))


def test_check_config_names_a_bad_certificate(tmp_path: Path, ca: CertificateAuthority) -> None:
    config = tmp_path / "proxy.toml"
    text = tls_config(tmp_path, ca).replace("{port}", "8443").replace("{upstream}",
                                                                       "127.0.0.1:9")
    config.write_text(text)
    (tmp_path / "a.test.crt").write_text("not a certificate\n")

    def check() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "prefork_proxy", "-t", "-c", str(config)],
                              capture_output=True, text=True, cwd=ROOT, timeout=20)

    result = check()
    assert result.returncode != 0
    assert (f"{config}: server[0].ssl_certificate: {tmp_path / 'a.test.crt'}: "
            "not a PEM certificate") in result.stderr + result.stdout
    other_cert, other_key = ca.leaf(tmp_path, ["b.test"])
    (tmp_path / "a.test.crt").write_bytes(other_cert.read_bytes())  # the key of another
    result = check()
    assert result.returncode != 0
    assert "server[0].ssl_certificate_key: " in result.stderr + result.stdout
    assert "KEY_VALUES_MISMATCH" in result.stderr + result.stdout
    (tmp_path / "a.test.key").unlink()
    result = check()
    assert "server[0].ssl_certificate_key: " in result.stderr + result.stdout
    assert "No such file or directory" in result.stderr + result.stdout


def test_a_reload_with_a_broken_certificate_keeps_the_old_generation_serving(
        tmp_path: Path, ca: CertificateAuthority) -> None:
    with running_site(tmp_path, tls_config(tmp_path, ca)) as running:
        context = ca.client_context()
        session = new_session(running.port, context)
        (tmp_path / "a.test.crt").write_text("broken\n")
        running.proxy.signal(signal.SIGHUP)
        wait_for(lambda: "reload failed" in running.proxy.log(), message="the reload to fail")
        assert "server[0].ssl_certificate" in running.proxy.log()
        # The running generation serves, with its keys: the session still resumes.
        assert resumes(running.port, context, session)
