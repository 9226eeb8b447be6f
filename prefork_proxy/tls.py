"""TLS server contexts (nginx's ssl_* settings), built by the master before it forks.

One SSLContext per `ssl` listen address, built while the config is checked
(`prefork-proxy -t`, start, HUP), so that a certificate or key OpenSSL cannot
use is a ConfigError naming its key, and a reload with one keeps the running
generation. Built before fork, a context is the same in every worker of a
generation: OpenSSL draws the session ticket keys when the context is made,
so a ticket issued by one worker resumes on another; a reload builds new
contexts, and so new keys (nginx draws new ones per configuration too).

What the stdlib can set: protocol versions, the TLS 1.2 cipher list, tickets
on or off (OP_NO_TICKET), ALPN, the SNI callback. What it cannot: TLS 1.3
suites, the session lifetime (SSL_CTX_set_timeout), ticket keys and their
rotation, a session cache shared between processes (nginx's
ssl_session_cache shared:): without tickets, a session id resumes only on the
worker that made it.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Sequence

from prefork_proxy.host_names import ServerNames, valid_host

_SOURCE_LINE = re.compile(r" \(_ssl\.c:\d+\)$")
_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


class TlsFileError(Exception):
    """What is wrong with one ssl_* setting: `setting` names it, `server` is the index
    of the server in address_context's list (config.py adds where)."""

    def __init__(self, setting: str, reason: str, server: int = 0) -> None:
        super().__init__(f"{setting}: {reason}")
        self.setting, self.reason, self.server = setting, reason, server


def address_context(servers: Sequence[tuple[Sequence[str], str, str]], default: int = 0,
                    **settings: object) -> ssl.SSLContext:
    """The one context of a listen address shared by `servers`, each given as
    (checked server names, certificate path, key path); `default` is the index of
    the address's default server. `settings` go to server_context for every server
    (the ssl_* settings and http2, which belong to the address in nginx).

    A client that names a server (SNI, RFC 6066 §3) gets that server's certificate:
    the context's sni_callback switches the connection to the server's context,
    chosen as a Host is (prefork_proxy/host_names.py). No name, or a name no server
    has: the default server's certificate."""
    contexts = []
    for index, (_, certificate, key) in enumerate(servers):
        try:
            contexts.append(server_context(certificate, key, **settings))
        except TlsFileError as exc:
            exc.server = index
            raise
    front = contexts[default]
    if len(servers) > 1:
        front.sni_callback = _ByServerName(
            [(names, context) for (names, _, _), context in zip(servers, contexts, strict=True)],
            front)
    return front


class _ByServerName:
    """An sni_callback: the server context for the name the client sent."""

    __slots__ = ("names",)

    def __init__(self, entries: list[tuple[Sequence[str], ssl.SSLContext]],
                 default: ssl.SSLContext) -> None:
        self.names = ServerNames(entries, default)

    def __call__(self, connection: ssl.SSLObject | ssl.SSLSocket, server_name: str | None,
                 context: ssl.SSLContext) -> None:
        if server_name is None:
            return  # no SNI: the default server's certificate (the context as is)
        # The name as a Host is read (lowercased, no trailing dot; None if invalid).
        chosen = self.names.match(valid_host(server_name.encode("ascii", "replace")))
        if chosen is not context:
            connection.context = chosen


def server_context(certificate: str, key: str, *, protocols: Sequence[str] = tuple(_VERSIONS),
                   ciphers: str = "HIGH:!aNULL:!MD5", tickets: bool = True,
                   http2: bool = False) -> ssl.SSLContext:
    """A server-side context with `certificate` and `key` (PEM paths) loaded.

    Raises TlsFileError naming the setting at fault and OpenSSL's reason."""
    _check_pem(certificate, "ssl_certificate", b"-----BEGIN CERTIFICATE-----", "certificate")
    _check_pem(key, "ssl_certificate_key", b"PRIVATE KEY-----", "private key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    versions = [_VERSIONS[name] for name in protocols]
    context.minimum_version, context.maximum_version = min(versions), max(versions)
    # nginx refuses client-initiated renegotiation; it also keeps a read from
    # wanting a write (and a write a read) on TLS 1.2.
    context.options |= ssl.OP_NO_RENEGOTIATION
    if not tickets:
        context.options |= ssl.OP_NO_TICKET
    try:
        context.set_ciphers(ciphers)
    except ssl.SSLError as exc:
        raise TlsFileError("ssl_ciphers", f"{ciphers!r}: {_reason(exc)}") from None
    # ALPN: "h2" only where the listen has http2 (the HTTP/2 entry point, client.py).
    context.set_alpn_protocols(["h2", "http/1.1"] if http2 else ["http/1.1"])
    try:
        context.load_cert_chain(certificate, key)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc) or "key values mismatch" in str(exc):
            raise TlsFileError("ssl_certificate_key",
                               f"{key} does not match {certificate}: {_reason(exc)}") from None
        raise TlsFileError("ssl_certificate",
                           f"{certificate} with key {key}: {_reason(exc)}") from None
    except OSError as exc:
        raise TlsFileError("ssl_certificate", f"{certificate}: {exc.strerror or exc}") from None
    return context


def _check_pem(path: str, setting: str, marker: bytes, what: str) -> None:
    try:
        with open(path, "rb") as file:
            text = file.read()
    except OSError as exc:
        raise TlsFileError(setting, f"{path}: {exc.strerror or exc}") from None
    if marker not in text:
        raise TlsFileError(setting, f"{path}: not a PEM {what}")


def _reason(exc: ssl.SSLError) -> str:
    """OpenSSL's words, "[X509: KEY_VALUES_MISMATCH] key values mismatch", without
    the stdlib's source line."""
    text = str(exc.args[1] if len(exc.args) > 1 else exc)
    return _SOURCE_LINE.sub("", text)
