"""Test certificates, made with `cryptography`: a CA, and leaf certificates it signs.

    ca = CertificateAuthority()
    cert, key = ca.leaf(directory, ["a.test", "127.0.0.1"])   # PEM file paths
    context = ca.client_context()                             # verifies against the CA

Names that parse as IP addresses go into the leaf's SAN as IP addresses, the
others as DNS names. Keys are EC P-256: quick to make.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class CertificateAuthority:
    def __init__(self, name: str = "prefork-proxy test CA") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(name)).issuer_name(_name(name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .sign(self.key, hashes.SHA256()))

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def write(self, directory: Path) -> Path:
        """The CA certificate as a PEM file (for curl --cacert)."""
        path = directory / "ca.pem"
        path.write_bytes(self.pem)
        return path

    def leaf(self, directory: Path, names: list[str], stem: str | None = None
             ) -> tuple[Path, Path]:
        """A certificate for `names` signed by this CA: (certificate path, key path)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        alternatives: list[x509.GeneralName] = []
        for name in names:
            try:
                alternatives.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alternatives.append(x509.DNSName(name))
        certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(names[0])).issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256()))
        stem = stem or names[0].replace("*", "star")
        cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(_pem_key(key))
        return cert_path, key_path

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts this CA only (and checks host names)."""
        context = ssl.create_default_context(cadata=self.pem.decode())
        return context


def with_tls(config_text: str, certificate: Path, key: str | Path) -> str:
    """`config_text` (one server on `{port}`, as tests/support/configs.py writes it)
    with that listen made `ssl`, and the certificate and key set."""
    plain = 'listen = ["127.0.0.1:{port}"]\n'
    assert plain in config_text
    return config_text.replace(plain, 'listen = ["127.0.0.1:{port} ssl"]\n'
                               f'ssl_certificate = "{certificate}"\n'
                               f'ssl_certificate_key = "{key}"\n')
