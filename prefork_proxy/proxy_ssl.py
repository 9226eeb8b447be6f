"""TLS to upstreams: a location's proxy_ssl_* settings, checked, and its SSLContext.

A location whose proxy_pass is https:// gets one UpstreamTls, built here when
the config is read: the SSLContext is made once per location (the workers
inherit it across fork), never per request or connection. The handshake and
the sessions kept per peer are the workers' (workers/upstream_tls.py).

Two defaults depart from nginx, whose proxy_ssl_verify and
proxy_ssl_server_name are off: an upstream whose certificate is not checked
is no safer than a plain one, and a virtual-hosted upstream needs the name.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

# nginx's proxy_ssl_protocols names; SSLv2/SSLv3 are gone from OpenSSL 3.
PROTOCOLS = {
    "TLSv1": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}
_ORDER = list(PROTOCOLS)


class TlsSettingError(ValueError):
    """A proxy_ssl_* setting that cannot be used; `setting` names it for ConfigError."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(message)
        self.setting = setting


def parse_protocols(value: object) -> tuple[str, ...]:
    """proxy_ssl_protocols: a list of "TLSv1".."TLSv1.3" with no gap (OpenSSL sets a
    minimum and a maximum version; nginx's holes are deprecated there)."""
    if not isinstance(value, list) or not value:
        raise ValueError("must be a non-empty list, e.g. [\"TLSv1.2\", \"TLSv1.3\"]")
    for item in value:
        if item not in PROTOCOLS:
            raise ValueError(f"{item!r} is not one of {', '.join(_ORDER)}")
    positions = sorted({_ORDER.index(item) for item in value})
    if positions != list(range(positions[0], positions[-1] + 1)):
        raise ValueError("must be a range of versions with no gap, e.g. [\"TLSv1.2\", \"TLSv1.3\"]")
    return tuple(_ORDER[position] for position in positions)


@dataclass(frozen=True, eq=False)
class UpstreamTls:
    """How a location speaks TLS to its upstream. Compared by identity: pooled
    connections are kept apart by it (workers/upstreams.py), so one made under
    other settings (proxy_ssl_verify off, another name) is never reused here."""

    context: ssl.SSLContext
    name: str  # proxy_ssl_name: what the certificate is checked against
    server_name: str | None  # sent as SNI (proxy_ssl_server_name), or None
    verify: bool
    # Verification without SNI: OpenSSL checks the chain, and the name is checked
    # after the handshake (workers/certificate_names.py).
    check_name_after: bool
    session_reuse: bool


def build(*, name: str, verify: bool, trusted_certificate: str | None, server_name: bool,
          protocols: tuple[str, ...], session_reuse: bool) -> UpstreamTls:
    """The UpstreamTls of one location; TlsSettingError names a setting it cannot use."""
    if verify:
        try:
            # With a cafile only that bundle is trusted (nginx's
            # proxy_ssl_trusted_certificate); without it, the system store.
            context = ssl.create_default_context(cafile=trusted_certificate)
        except ssl.SSLError as exc:
            raise TlsSettingError("proxy_ssl_trusted_certificate",
                                  f"{trusted_certificate!r} is not a PEM bundle of CA "
                                  f"certificates ({exc.reason})") from None
        except OSError as exc:
            raise TlsSettingError("proxy_ssl_trusted_certificate",
                                  f"{trusted_certificate!r}: {exc.strerror or exc}") from None
        # Python ties the name check to SNI: without SNI it is done after the handshake.
        context.check_hostname = server_name
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.minimum_version = PROTOCOLS[protocols[0]]
    context.maximum_version = PROTOCOLS[protocols[-1]]
    return UpstreamTls(context=context, name=name, server_name=name if server_name else None,
                       verify=verify, check_name_after=verify and not server_name,
                       session_reuse=session_reuse)
