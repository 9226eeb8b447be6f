"""The proxy_ssl_* settings of an https:// proxy_pass, read from TOML (no sockets)."""

from __future__ import annotations

import ssl
import textwrap
from pathlib import Path

import pytest

from prefork_proxy.config import ConfigError, Location, load_config
from tests.support.upstream_certs import TestCa


def _load(tmp_path: Path, location: str, top: str = "") -> Location:
    path = tmp_path / "proxy.toml"
    path.write_text(textwrap.dedent(top) + '[[server]]\nlisten = ["127.0.0.1:8080"]\n'
                    '  [[server.location]]\n  path = "/"\n' + textwrap.dedent(location))
    return load_config(str(path)).servers[0].locations[0]


def _error(tmp_path: Path, location: str, top: str = "") -> str:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, location, top)
    return f"{caught.value.key}: {caught.value.message}"


def test_the_defaults_verify_send_sni_and_resume(tmp_path: Path) -> None:
    location = _load(tmp_path, 'proxy_pass = "https://localhost:8443"\n')
    tls = location.tls
    assert tls is not None
    assert (tls.name, tls.server_name, tls.verify, tls.session_reuse) == (
        "localhost", "localhost", True, True)
    assert tls.context.verify_mode == ssl.CERT_REQUIRED and tls.context.check_hostname
    assert tls.context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert tls.context.maximum_version == ssl.TLSVersion.TLSv1_3
    # The name is resolved when the config is read (nginx); the TLS name stays the name.
    peer = location.upstream.peers[0]
    assert (peer.name, peer.address.port) == ("localhost", 8443)


def test_https_without_a_port_is_port_443(tmp_path: Path) -> None:
    location = _load(tmp_path, 'proxy_pass = "https://localhost/api/"\n')
    assert location.upstream.peers[0].address.port == 443
    assert location.uri_prefix == b"/api/"


def test_plain_http_has_no_tls(tmp_path: Path) -> None:
    assert _load(tmp_path, 'proxy_pass = "http://127.0.0.1:1"\n').tls is None


def test_an_upstream_group_is_checked_against_its_name_unless_proxy_ssl_name(
        tmp_path: Path) -> None:
    top = '[upstream.app]\nservers = ["127.0.0.1:8001"]\n'
    assert _load(tmp_path, 'proxy_pass = "https://app"\n', top).tls.name == "app"
    location = _load(tmp_path, 'proxy_pass = "https://app"\nproxy_ssl_name = "a.test"\n', top)
    assert (location.tls.name, location.tls.server_name) == ("a.test", "a.test")


def test_a_trusted_certificate_replaces_the_system_store(tmp_path: Path) -> None:
    ca = TestCa().write(tmp_path / "ca.pem")
    tls = _load(tmp_path, f'proxy_pass = "https://127.0.0.1:1"\n'
                          f'proxy_ssl_trusted_certificate = "{ca}"\n').tls
    assert len(tls.context.get_ca_certs()) == 1


def test_a_missing_trusted_certificate_names_its_key(tmp_path: Path) -> None:
    message = _error(tmp_path, 'proxy_pass = "https://127.0.0.1:1"\n'
                               'proxy_ssl_trusted_certificate = "/nonexistent/ca.pem"\n')
    assert message.startswith("server[0].location[0].proxy_ssl_trusted_certificate: "
                              "'/nonexistent/ca.pem': "), message


def test_a_trusted_certificate_that_is_no_pem_names_its_key(tmp_path: Path) -> None:
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    message = _error(tmp_path, 'proxy_pass = "https://127.0.0.1:1"\n'
                               f'proxy_ssl_trusted_certificate = "{tmp_path}/junk.pem"\n')
    assert message.startswith("server[0].location[0].proxy_ssl_trusted_certificate: "), message


def test_verify_off_checks_nothing_but_still_sends_sni(tmp_path: Path) -> None:
    tls = _load(tmp_path, 'proxy_pass = "https://localhost:1"\n'
                          'proxy_ssl_verify = false\n').tls
    assert tls.context.verify_mode == ssl.CERT_NONE and not tls.context.check_hostname
    assert tls.server_name == "localhost"


def test_no_sni_with_verification_checks_the_name_after_the_handshake(
        tmp_path: Path) -> None:
    tls = _load(tmp_path, 'proxy_pass = "https://localhost:1"\n'
                          'proxy_ssl_server_name = false\n').tls
    assert tls.server_name is None and tls.check_name_after
    assert tls.context.verify_mode == ssl.CERT_REQUIRED and not tls.context.check_hostname


def test_protocols_set_the_version_range(tmp_path: Path) -> None:
    tls = _load(tmp_path, 'proxy_pass = "https://localhost:1"\n'
                          'proxy_ssl_protocols = ["TLSv1.3"]\n').tls
    assert tls.context.minimum_version == tls.context.maximum_version == ssl.TLSVersion.TLSv1_3


@pytest.mark.parametrize(("value", "words"), [
    ('["TLSv1.2", "SSLv3"]', "'SSLv3' is not one of"),
    ('["TLSv1.1", "TLSv1.3"]', "no gap"),
    ("[]", "non-empty list"),
])
def test_bad_protocols_name_their_key(tmp_path: Path, value: str, words: str) -> None:
    message = _error(tmp_path, 'proxy_pass = "https://localhost:1"\n'
                               f'proxy_ssl_protocols = {value}\n')
    assert message.startswith("server[0].location[0].proxy_ssl_protocols: ") and words in message


def test_uwsgi_over_tls_is_refused(tmp_path: Path) -> None:
    message = _error(tmp_path, 'uwsgi_pass = "https://127.0.0.1:1"\n')
    assert message == "server[0].location[0].uwsgi_pass: uwsgi over TLS is not supported"


def test_each_https_location_has_its_own_tls_settings(tmp_path: Path) -> None:
    path = tmp_path / "proxy.toml"
    path.write_text('[[server]]\nlisten = ["127.0.0.1:8080"]\n'
                    '  [[server.location]]\n  path = "/a/"\n  proxy_pass = "https://localhost:1"\n'
                    '  [[server.location]]\n  path = "/b/"\n  proxy_pass = "https://localhost:1"\n')
    first, second = load_config(str(path)).servers[0].locations
    assert first.tls is not second.tls  # pooled connections are kept apart by identity
