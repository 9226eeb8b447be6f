"""TLS contexts, without a proxy: the ssl_* settings, their checks, and SNI.

prefork_proxy/tls.py builds a listen address's context; the handshakes here run
in memory (ssl.MemoryBIO), a client verifying against the test CA.
"""

from __future__ import annotations

import ssl
import textwrap
from pathlib import Path

import pytest

from prefork_proxy import tls
from prefork_proxy.config import ConfigError, load_config
from tests.support.certs import CertificateAuthority

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority()


def handshake(server_context: ssl.SSLContext, client_context: ssl.SSLContext,
              server_name: str | None) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    """A whole handshake in memory: (client side, server side)."""
    client_in, client_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    server_in, server_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_context.wrap_bio(client_in, client_out, server_hostname=server_name)
    server = server_context.wrap_bio(server_in, server_out, server_side=True)
    done = {client: False, server: False}
    for _ in range(20):
        for side in (client, server):
            if not done[side]:
                try:
                    side.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
        server_in.write(client_out.read())
        client_in.write(server_out.read())
        if all(done.values()):
            return client, server
    raise AssertionError("the handshake did not finish")


def common_name(side: ssl.SSLObject) -> str:
    subject = dict(item[0] for item in side.getpeercert()["subject"])
    return subject["commonName"]


@pytest.fixture(scope="module")
def two_servers(ca: CertificateAuthority, tmp_path_factory: pytest.TempPathFactory
                ) -> ssl.SSLContext:
    directory = tmp_path_factory.mktemp("sni")
    a_cert, a_key = ca.leaf(directory, ["a.test"])
    b_cert, b_key = ca.leaf(directory, ["b.test", "*.b.test"])
    return tls.address_context([(["a.test"], str(a_cert), str(a_key)),
                                (["b.test", "*.b.test"], str(b_cert), str(b_key))], default=0)


@pytest.mark.parametrize(("name", "served"), [("a.test", "a.test"), ("b.test", "b.test"),
                                             ("www.b.test", "b.test"), ("B.Test", "b.test")])
def test_sni_chooses_the_certificate_of_the_named_server(two_servers, ca, name, served):
    client, _ = handshake(two_servers, ca.client_context(), name)
    assert common_name(client) == served


def test_no_sni_or_an_unknown_name_gets_the_default_servers_certificate(two_servers, ca):
    context = ca.client_context()
    context.check_hostname = False
    for name in (None, "other.test"):
        client, _ = handshake(two_servers, context, name)
        assert common_name(client) == "a.test"


def test_alpn_offers_h2_only_on_an_http2_listen(ca, tmp_path):
    cert, key = ca.leaf(tmp_path, ["a.test"])
    context = ca.client_context()
    context.set_alpn_protocols(["h2", "http/1.1"])
    plain = tls.server_context(str(cert), str(key))
    h2 = tls.server_context(str(cert), str(key), http2=True)
    assert handshake(plain, context, "a.test")[0].selected_alpn_protocol() == "http/1.1"
    assert handshake(h2, context, "a.test")[0].selected_alpn_protocol() == "h2"


def test_ssl_protocols_bound_the_versions(ca, tmp_path):
    cert, key = ca.leaf(tmp_path, ["a.test"])
    only_12 = tls.server_context(str(cert), str(key), protocols=["TLSv1.2"])
    client, _ = handshake(only_12, ca.client_context(), "a.test")
    assert client.version() == "TLSv1.2"
    client, _ = handshake(tls.server_context(str(cert), str(key)), ca.client_context(), "a.test")
    assert client.version() == "TLSv1.3"


def test_ssl_session_tickets_false_sets_no_ticket(ca, tmp_path):
    cert, key = ca.leaf(tmp_path, ["a.test"])
    assert tls.server_context(str(cert), str(key)).options & ssl.OP_NO_TICKET == 0
    off = tls.server_context(str(cert), str(key), tickets=False)
    assert off.options & ssl.OP_NO_TICKET


def write_config(tmp_path: Path, server: str, top: str = "") -> Path:
    path = tmp_path / "proxy.toml"
    path.write_text(textwrap.dedent(top) + textwrap.dedent("""
        [[server]]
        listen = ["127.0.0.1:8443 ssl"]
        """) + textwrap.dedent(server) + textwrap.dedent("""
          [[server.location]]
          path = "/"
          proxy_pass = "127.0.0.1:9"
        """))
    return path


def test_an_ssl_listen_without_a_certificate_is_an_error_naming_the_key(tmp_path):
    path = write_config(tmp_path, "")
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    # Both are missing, and -t reports every error of a file.
    assert [str(error) for error in caught.value.errors] == [
        f"{path}: server[0].ssl_certificate: required by the ssl listen 127.0.0.1:8443",
        f"{path}: server[0].ssl_certificate_key: required by the ssl listen 127.0.0.1:8443"]


def test_the_top_level_ssl_settings_are_every_servers_defaults(ca, tmp_path):
    cert, key = ca.leaf(tmp_path, ["a.test"])
    path = write_config(tmp_path, 'ssl_protocols = ["TLSv1.3"]', top=f"""
        ssl_certificate = "{cert}"
        ssl_certificate_key = "{key}"
        ssl_session_tickets = false
        """)
    config = load_config(str(path))
    settings = config.servers[0].tls
    assert (settings.ssl_certificate, settings.ssl_protocols) == (str(cert), ("TLSv1.3",))
    assert (settings.ssl_ciphers, settings.ssl_session_timeout) == ("HIGH:!aNULL:!MD5", 300.0)
    context = config.tls_contexts["127.0.0.1:8443"]
    assert context.minimum_version == ssl.TLSVersion.TLSv1_3
    assert context.options & ssl.OP_NO_TICKET


def test_a_broken_top_level_certificate_names_the_top_level_key(ca, tmp_path):
    cert, key = ca.leaf(tmp_path, ["a.test"])
    cert.write_text("garbage")
    path = write_config(tmp_path, "", top=f"""
        ssl_certificate = "{cert}"
        ssl_certificate_key = "{key}"
        """)
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert str(caught.value) == f"{path}: ssl_certificate: {cert}: not a PEM certificate"


@pytest.mark.parametrize(("setting", "message"), [
    ('ssl_protocols = ["TLSv1.1"]',
     "server[0].ssl_protocols: ['TLSv1.1'] is not a non-empty list of TLSv1.2 and TLSv1.3"),
    ('ssl_ciphers = "NOTHING-AT-ALL"', "server[0].ssl_ciphers: 'NOTHING-AT-ALL': "),
    ('ssl_session_timeout = "0s"', "server[0].ssl_session_timeout: '0s' must be more than 0s"),
])
def test_bad_ssl_settings_are_errors_naming_the_key(ca, tmp_path, setting, message):
    cert, key = ca.leaf(tmp_path, ["a.test"])
    path = write_config(tmp_path, f'ssl_certificate = "{cert}"\n'
                                  f'ssl_certificate_key = "{key}"\n{setting}\n')
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert str(caught.value).startswith(f"{path}: {message}")


def test_relative_certificate_paths_are_read_from_the_configs_directory(ca, tmp_path):
    ca.leaf(tmp_path, ["a.test"])
    path = write_config(tmp_path, 'ssl_certificate = "a.test.crt"\n'
                                  'ssl_certificate_key = "a.test.key"\n')
    settings = load_config(str(path)).servers[0].tls
    assert settings.ssl_certificate == str(tmp_path / "a.test.crt")
    assert settings.ssl_certificate_key == str(tmp_path / "a.test.key")
