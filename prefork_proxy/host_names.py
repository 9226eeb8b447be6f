"""Host names: nginx's server_name rules, and the lookup of a host among servers.

nginx (http/server_names.html, "How nginx processes a request"): a host is
looked up, case-insensitively, in this order, and the first hit wins:

1. an exact name (`example.com`);
2. the longest wildcard that starts with an asterisk (`*.example.com`), or the
   special form `.example.com`, which also matches `example.com` itself;
3. the longest wildcard that ends with an asterisk (`www.example.*`);

and with no hit, the listen address's default server. An asterisk stands
for whole labels only: `*.example.com` matches `a.b.example.com` but not
`example.com`, and `w*.example.com` or `www.*.example.com` are refused, as
nginx refuses them (`check_server_name`). Regular-expression names (`~...`)
are not supported.

Also the host itself (`valid_host`): nginx's ngx_http_validate_host, which
lowercases the host, drops its port and a trailing dot, and refuses what
cannot be a host name (a client gets 400).

Pure code, on the master's side of the boundary: config.py checks names with
it, prefork_proxy/tls.py picks a certificate by the SNI name with it, and the
workers pick a request's server by its Host (workers/virtual_hosts.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Generic, TypeVar

# A name as configured: labels of letters, digits, '-' and '_' (nginx allows the
# underscore), with at most one '*' as a whole first or last label.
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?"
_EXACT = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_IPV6_LITERAL = re.compile(r"\[[0-9a-f:.]+\]")


def check_server_name(name: object) -> str:
    """A configured server_name, lowercased; ValueError says what is wrong with it."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"{name!r} is not a host name")
    text = name.lower()
    if text.startswith("~"):
        raise ValueError(f"{name!r}: regular-expression server names are not supported")
    if text.startswith("*."):
        body = text[2:]
    elif text.startswith("."):
        body = text[1:]
    elif text.endswith(".*"):
        body = text[:-2]
    else:
        body = text
    if "*" in body:
        raise ValueError(f"{name!r}: an asterisk must be the whole first or last label, "
                         "as in \"*.example.com\" or \"www.example.*\"")
    if not (_EXACT.fullmatch(body) or _IPV6_LITERAL.fullmatch(body)):
        raise ValueError(f"{name!r} is not a host name")
    return text


def name_key(name: str) -> str:
    """The form two configured names share when nginx would call them the same name
    (`*.example.com` and `.example.com` conflict: both cover www.example.com)."""
    return name[1:] if name.startswith("*.") else name


T = TypeVar("T")


def valid_host(raw: bytes) -> bytes | None:
    """The host of a Host header (or of an absolute-form target): lowercased, without
    its port and a trailing dot; None when it is not a valid host (nginx: 400).

    nginx's ngx_http_validate_host: no '/', '\\' or NUL, no '..', no empty host;
    an IPv6 literal in brackets keeps its brackets; the port is what follows the
    last ':' outside them.
    """
    host = raw.lower()
    if host.startswith(b"["):
        end = host.find(b"]")
        if end < 0:
            return None
        rest = host[end + 1:]
        if rest and not (rest.startswith(b":") and rest[1:].isdigit()):
            return None
        host = host[:end + 1]
    else:
        host, _, port = host.partition(b":")
        if port and not port.isdigit() or b":" in port:
            return None
    if host.endswith(b"."):
        host = host[:-1]
    if not host or host.startswith(b".") or b".." in host:
        return None
    if any(byte in _REFUSED for byte in host):
        return None
    return host


# Bytes that cannot be in a host: controls, space, and what nginx refuses by name.
_REFUSED = frozenset(range(0x21)) | frozenset(b"/\\\x7f")


class ServerNames(Generic[T]):
    """The servers of one listen address, looked up by host name (module docstring)."""

    __slots__ = ("exact", "leading", "leading_dot", "trailing", "default", "has_wildcards")

    def __init__(self, entries: Iterable[tuple[Sequence[str], T]], default: T) -> None:
        """`entries`: each server's checked names (check_server_name) and its value.
        A name given twice keeps its first server, as nginx does (with a warning
        there; config.py refuses it before this is built)."""
        self.exact: dict[bytes, T] = {}
        self.leading: dict[bytes, T] = {}  # "*.example.com" as b".example.com"
        self.leading_dot: dict[bytes, T] = {}  # ".example.com": example.com too
        self.trailing: dict[bytes, T] = {}  # "www.example.*" as b"www.example."
        self.default = default
        for names, value in entries:
            for name in names:
                key = name.encode("ascii")
                if key.startswith(b"*."):
                    self.leading.setdefault(key[1:], value)
                elif key.startswith(b"."):
                    self.leading_dot.setdefault(key, value)
                elif key.endswith(b".*"):
                    self.trailing.setdefault(key[:-1], value)
                else:
                    self.exact.setdefault(key, value)
        self.has_wildcards = bool(self.leading or self.leading_dot or self.trailing)

    def match(self, host: bytes | None) -> T:
        """The value for `host` (as valid_host returns it), or the default."""
        if host is None:
            return self.default
        found = self.exact.get(host)
        if found is not None or not self.has_wildcards:
            return self.default if found is None else found
        if self.leading or self.leading_dot:
            found = self.leading_dot.get(b"." + host)
            if found is not None:
                return found
            start = host.find(b".")
            while start >= 0:  # the longest suffix first
                suffix = host[start:]
                found = self.leading.get(suffix)
                if found is None:
                    found = self.leading_dot.get(suffix)
                if found is not None:
                    return found
                start = host.find(b".", start + 1)
        if self.trailing:
            end = host.rfind(b".")
            while end > 0:  # the longest prefix first
                found = self.trailing.get(host[:end + 1])
                if found is not None:
                    return found
                end = host.rfind(b".", 0, end)
        return self.default
