"""The front door's parts together, through the real master and real clients.

Each part has its own tests (virtual hosts, TLS, HTTP/2, realip and the PROXY
protocol); these check what only their joining can break: two servers on one
TLS address told apart by SNI and by Host, ALPN choosing HTTP/2 over TLS
(curl --http2, h2load), a PROXY header before a TLS handshake, and a real
browser loading a page of 50 subresources over h2 and over HTTP/1.1.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.certs import CertificateAuthority
from tests.support.processes import Upstream, free_port
from tests.support.sites import Site, running_site

pytestmark = pytest.mark.timeout(90)

CURL = shutil.which("curl") or "/usr/bin/curl"
H2LOAD = shutil.which("h2load") or "/usr/bin/h2load"


class Ports:
    plain = free_port()        # HTTP/1.1 only: the browser's HTTP/1.1 run
    proxied = free_port()      # ssl proxy_protocol: a PROXY header, then TLS


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority()


@pytest.fixture(scope="module")
def second_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    upstream = Upstream(tmp_path_factory.mktemp("second") / "upstream.log")
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, ca: CertificateAuthority,
         second_upstream: Upstream) -> Iterator[Site]:
    directory = tmp_path_factory.mktemp("front_door")
    a_cert, a_key = ca.leaf(directory, ["a.test", "127.0.0.1"], stem="a")
    b_cert, b_key = ca.leaf(directory, ["b.test", "*.b.test"], stem="b")
    with running_site(directory, f"""
        workers = 2
        access_log = "{{dir}}/access.log"
        real_ip_header = "proxy_protocol"

        [[server]]
        server_name = ["a.test"]
        listen = ["127.0.0.1:{{port}} ssl http2 default_server",
                  "127.0.0.1:{Ports.plain}",
                  "127.0.0.1:{Ports.proxied} ssl proxy_protocol"]
        ssl_certificate = "{a_cert}"
        ssl_certificate_key = "{a_key}"
          [[server.location]]
          path = "/"
          proxy_pass = "http://{{upstream}}"

        [[server]]
        server_name = ["b.test", "*.b.test"]
        listen = ["127.0.0.1:{{port}} ssl http2"]
        ssl_certificate = "{b_cert}"
        ssl_certificate_key = "{b_key}"
          [[server.location]]
          path = "/"
          proxy_pass = "http://127.0.0.1:{second_upstream.port}"
    """) as running:
        yield running


def curl(ca: CertificateAuthority, directory: Path, url: str, port: int, *options: str) -> dict:
    """curl's view of one request: the body, the HTTP version and the certificate's
    subject, verified against the test CA, with the name resolved to 127.0.0.1."""
    ca_file = ca.write(directory)
    host = re.match(r"https?://([^:/]+)", url)[1]
    result = subprocess.run(
        [CURL, "-sS", "--cacert", str(ca_file), "--resolve", f"{host}:{port}:127.0.0.1",
         "-w", "\n%{http_version} %{http_code}", *options, url],
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    body, _, tail = result.stdout.rpartition("\n")
    version, status = tail.split()
    return {"body": body, "version": version, "status": int(status)}


def test_sni_and_host_pick_the_server_and_its_certificate_on_one_tls_address(
        site: Site, ca: CertificateAuthority, second_upstream: Upstream,
        tmp_path: Path) -> None:
    a = curl(ca, tmp_path, f"https://a.test:{site.port}/echo/a", site.port, "--http1.1")
    b = curl(ca, tmp_path, f"https://www.b.test:{site.port}/echo/b", site.port, "--http1.1")
    # curl verified each certificate against its name: a.test's and *.b.test's.
    assert (a["status"], b["status"]) == (200, 200)
    assert json.loads(a["body"])["path"] == "/echo/a"
    assert json.loads(b["body"])["path"] == "/echo/b"
    assert "/echo/b" in second_upstream_paths(second_upstream)
    assert "/echo/a" not in second_upstream_paths(second_upstream)


def second_upstream_paths(upstream: Upstream) -> list[str]:
    from tests.support.wire import get
    return get(upstream.port, "/stats").json()["paths"]


def test_alpn_chooses_http2_over_tls_and_http1_where_the_listen_has_no_http2(
        site: Site, ca: CertificateAuthority, tmp_path: Path) -> None:
    over_h2 = curl(ca, tmp_path, f"https://a.test:{site.port}/echo/h2", site.port, "--http2")
    assert (over_h2["version"], over_h2["status"]) == ("2", 200)
    seen = {name.lower(): value for name, value in json.loads(over_h2["body"])["headers"]}
    assert seen["x-forwarded-proto"] == "https"
    over_tls_only = curl(ca, tmp_path, f"https://a.test:{Ports.proxied}/", Ports.proxied,
                         "--http2", "--haproxy-protocol")
    assert (over_tls_only["version"], over_tls_only["status"]) == ("1.1", 200)


def test_h2load_over_tls_gets_every_reply(site: Site) -> None:
    result = subprocess.run([H2LOAD, "-n", "2000", "-c", "4", "-m", "50",
                             f"https://127.0.0.1:{site.port}/bytes/100"],
                            capture_output=True, text=True, timeout=60)
    assert "2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed, 0 errored" \
        in result.stdout, result.stdout + result.stderr
    assert "Application protocol: h2" in result.stdout


def v2_header(source: str, source_port: int) -> bytes:
    """A PROXY protocol v2 header (PROXY, TCP over IPv4) naming `source`."""
    addresses = (socket.inet_aton(source) + socket.inet_aton("127.0.0.1")
                 + struct.pack("!HH", source_port, Ports.proxied))
    return (b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11])
            + struct.pack("!H", len(addresses)) + addresses)


def test_a_proxy_header_comes_before_the_tls_handshake(
        site: Site, ca: CertificateAuthority) -> None:
    with socket.create_connection(("127.0.0.1", Ports.proxied), timeout=10) as raw:
        raw.sendall(v2_header("203.0.113.7", 40000))
        with ca.client_context().wrap_socket(raw, server_hostname="a.test") as tls:
            tls.sendall(b"GET /echo/proxied HTTP/1.1\r\nHost: a.test\r\n"
                        b"Connection: close\r\n\r\n")
            reply = b""
            while chunk := tls.recv(65536):
                reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    seen = {name.lower(): value for name, value in json.loads(body)["headers"]}
    assert seen["x-real-ip"] == "203.0.113.7"
    assert seen["x-forwarded-proto"] == "https"


@pytest.mark.parametrize("scheme, protocol", [("https", "h2"), ("http", "http/1.1")])
def test_a_browser_loads_a_page_of_50_subresources(
        site: Site, browser, scheme: str, protocol: str) -> None:  # noqa: ANN001
    port = site.port if scheme == "https" else Ports.plain
    context = browser.new_context(ignore_https_errors=True)
    try:
        page = context.new_page()
        response = page.goto(f"{scheme}://127.0.0.1:{port}/page/50", timeout=30_000,
                             wait_until="load")
        assert response.status == 200
        entries = page.evaluate(
            "performance.getEntriesByType('resource')"
            ".map(e => [e.name, e.nextHopProtocol, e.responseStatus])"
            ".filter(e => e[0].includes('/bytes/'))")  # not the favicon
    finally:
        context.close()
    assert len(entries) == 50
    assert {(protocol_seen, status) for _, protocol_seen, status in entries} == {
        (protocol, 200)}
    assert sorted(int(name.rsplit("=", 1)[1]) for name, _, _ in entries) == list(range(50))
