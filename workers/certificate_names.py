"""Does a verified certificate name this host? For TLS upstreams without SNI.

Python's ssl checks the name only together with SNI (server_hostname), so a
location with proxy_ssl_verify on and proxy_ssl_server_name off checks it here,
after the handshake, on the dict of SSLSocket.getpeercert(). The rules are
RFC 6125's as OpenSSL applies them: subjectAltName only (no fallback to the
common name, as Python's own check since 3.10), a wildcard only as the whole
left-most label, matching exactly one label.
"""

from __future__ import annotations

import ipaddress


def certificate_matches(cert: dict, name: str) -> bool:
    """True if `cert` (getpeercert()'s dict) has a subjectAltName matching `name`,
    a DNS name or an IP address."""
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        address = None
    wanted = name.lower().rstrip(".")
    for kind, value in cert.get("subjectAltName", ()):
        if address is not None:
            if kind == "IP Address" and _same_address(value, address):
                return True
        elif kind == "DNS" and _dns_matches(value.lower().rstrip("."), wanted):
            return True
    return False


def _same_address(value: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    try:
        return ipaddress.ip_address(value.strip()) == address
    except ValueError:
        return False


def _dns_matches(pattern: str, name: str) -> bool:
    if not pattern.startswith("*."):
        return "*" not in pattern and pattern == name
    suffix = pattern[2:]
    label, dot, rest = name.partition(".")
    # RFC 6125 §6.4.3: "*" stands for one whole label, never for a public suffix
    # alone ("*.com"): the pattern needs two labels after the wildcard.
    return (bool(label and dot) and "*" not in suffix and "." in suffix
            and rest == suffix)
