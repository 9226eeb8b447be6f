"""Header rules for proxying, as pure functions over (name, value) byte pairs.

Requests towards the upstream and responses towards the client both lose their
hop-by-hop headers (RFC 9110 §7.6.1): the fixed set below plus every header
that `Connection` names. Framing (Content-Length / Transfer-Encoding) is never
copied: it is regenerated from the body actually sent, as nginx does. Names
with an underscore, and `Proxy` (httpoxy), never go upstream.
nginx's `X-Accel-*` control headers never reach the client.

Each direction has two builders with the same rules: one over (name, value)
pairs, and one over a head's header lines as received (`CRLF name: value`
repeated, then a CRLF), which drops the lines that must not pass with one
regular expression in C. The parsers hand over lines when the head was plain
and its Connection header names nothing but close or keep-alive. Kept lines
go out as they came: `X-A:b` stays so, where the pair builder writes `X-A: b`
(the whitespace around a value is not part of it, RFC 9110 §5.5).
"""

from __future__ import annotations

import re

from workers import abnf

# RFC 9110 §7.6.1 and nginx's proxy module: never copied from one hop to the next.
# Content-Length is regenerated; Expect is answered by the proxy itself.
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"te", b"trailer", b"transfer-encoding",
    b"upgrade", b"proxy-connection", b"content-length", b"expect",
})
# Set by the proxy from the connection it accepted (DESIGN.md data paths).
FORWARDED = frozenset({b"x-forwarded-for", b"x-real-ip", b"x-forwarded-proto",
                       b"x-forwarded-host"})
_DROP_FROM_REQUEST = HOP_BY_HOP | FORWARDED
# With request ids on, ours replaces the client's (workers/request_id.py).
_DROP_WITH_REQUEST_ID = _DROP_FROM_REQUEST | {b"x-request-id"}

_TCHAR = abnf.TCHAR
# A tchar other than '_' (RFC 9110 §5.6.2 with nginx's underscores_in_headers off).
_TCHAR_NOT_UNDERSCORE = b"[" + abnf.TCHAR_SET.replace(b"_", b"") + b"]"


def _line_of(names: frozenset[bytes]) -> re.Pattern[bytes]:
    """One header line, with the CRLF before it, of any of `names` or a Proxy-* header."""
    alternatives = b"|".join(re.escape(name) for name in sorted(names))
    return re.compile(abnf.CRLF + b"(?:" + alternatives + b"|proxy" + _TCHAR + rb"*):[^\r]*",
                      re.IGNORECASE)


# A Connection list names hop-by-hop headers (RFC 9110 §7.6.1), which we drop; but
# never these: Host is the request's, and the framing is ours to regenerate from
# the body we send. nginx ignores the client's Connection list altogether for
# proxy_pass; we remove the other names it lists.
ESSENTIAL = frozenset({b"host", b"content-length", b"transfer-encoding"})

# Towards the client, also nginx's X-Accel-* control headers: the uwsgi and proxy
# modules consume them and hide them by default (`uwsgi_hide_header`,
# `proxy_hide_header`: ngx_http_uwsgi_hide_headers, ngx_http_proxy_hide_headers).
X_ACCEL = frozenset({b"x-accel-buffering", b"x-accel-charset", b"x-accel-expires",
                     b"x-accel-limit-rate", b"x-accel-redirect"})
_NOT_RELAYED = HOP_BY_HOP | X_ACCEL
_NOT_RELAYED_LINE = _line_of(_NOT_RELAYED)
# Towards the upstream, also a name with an underscore: nginx's
# `underscores_in_headers off` (most WSGI stacks read X_Forwarded_For as
# X-Forwarded-For). The first class has no '_', so the expression cannot backtrack.
def _not_forwarded_line(names: frozenset[bytes]) -> re.Pattern[bytes]:
    return re.compile(
        abnf.CRLF + b"(?:" + b"|".join(re.escape(name) for name in sorted(names))
        + b"|proxy" + _TCHAR + b"*|" + _TCHAR_NOT_UNDERSCORE + b"*_" + _TCHAR + rb"*):[^\r]*",
        re.IGNORECASE)


_NOT_FORWARDED_LINE = _not_forwarded_line(_DROP_FROM_REQUEST)
_NOT_FORWARDED_OR_ID_LINE = _not_forwarded_line(_DROP_WITH_REQUEST_ID)


# Connection tokens that name no header to drop (RFC 9112 §9.3, §9.6).
PLAIN_TOKENS = frozenset({b"close", b"keep-alive"})
_ONE_PLAIN_TOKEN = {token: frozenset({token}) for token in PLAIN_TOKENS}


def add_connection_tokens(tokens: frozenset[bytes], value: bytes) -> frozenset[bytes]:
    """`tokens` plus those of one Connection header value, lower-cased and trimmed."""
    value = value.lower()
    if not tokens:
        common = _ONE_PLAIN_TOKEN.get(value)
        if common is not None:
            return common
    return tokens.union(token.strip() for token in value.split(b","))


def connection_tokens(headers: list[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """The lower-cased tokens of every Connection header."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if len(name) == 10 and name.lower() == b"connection":
            tokens.update(token.strip().lower() for token in value.split(b","))
    tokens.discard(b"")
    return frozenset(tokens)


def _is_proxy_header(lower: bytes) -> bool:
    # Proxy-* is hop-by-hop (Proxy-Authorization, Proxy-Connection), and a bare
    # "Proxy:" header must never reach an application (httpoxy, CVE-2016-5385).
    return lower.startswith(b"proxy")


def upstream_request_head(
    method: bytes,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    *,
    client_ip: bytes,
    scheme: bytes,
    host: bytes,
    framing: bytes,
    upgrade: bytes | None = None,
    tokens: frozenset[bytes] | None = None,
    request_id: bytes | None = None,
) -> bytes:
    """The request head sent upstream: HTTP/1.1, end-to-end headers only, then the
    X-Forwarded-* set, X-Request-Id, the framing line(s) and, for a WebSocket,
    Upgrade/Connection.

    `framing` is b"" (no body), b"Content-Length: N\\r\\n" or
    b"Transfer-Encoding: chunked\\r\\n". `tokens` are the Connection tokens if the
    caller already has them. `request_id`, when given, replaces any X-Request-Id
    of the client's (None: the client's, if any, passes as any header).
    """
    if tokens is None:
        tokens = connection_tokens(headers)
    if not tokens.isdisjoint(ESSENTIAL):
        tokens = tokens - ESSENTIAL
    drop = _DROP_FROM_REQUEST if request_id is None else _DROP_WITH_REQUEST_ID
    out = [method, b" ", target, b" HTTP/1.1\r\n"]
    forwarded_for = []
    for name, value in headers:
        lower = name.lower()
        if (lower in drop or lower in tokens or lower.startswith(b"proxy")
                or b"_" in lower):
            if lower == b"x-forwarded-for":
                forwarded_for.append(value)
            continue
        out += (name, b": ", value, b"\r\n")
    # nginx's $proxy_add_x_forwarded_for: the client's list, then its address.
    forwarded_for.append(client_ip)
    out += (b"X-Forwarded-For: ", b", ".join(forwarded_for), b"\r\nX-Real-IP: ", client_ip,
            b"\r\nX-Forwarded-Proto: ", scheme, b"\r\n")
    if host:
        out += (b"X-Forwarded-Host: ", host, b"\r\n")
    if request_id is not None:
        out += (b"X-Request-Id: ", request_id, b"\r\n")
    if upgrade is not None:
        out += (b"Upgrade: ", upgrade, b"\r\nConnection: upgrade\r\n")
    out += (framing, b"\r\n")
    return b"".join(out)


def upstream_request_head_from_lines(method: bytes, target: bytes, lines: bytes, *,
                                     client_ip: bytes, scheme: bytes, host: bytes,
                                     framing: bytes, request_id: bytes | None = None) -> bytes:
    """upstream_request_head for a request whose client sent no X-Forwarded-For,
    whose Connection names no other header and which is no WebSocket upgrade."""
    if request_id is None:
        kept, id_line = _NOT_FORWARDED_LINE.sub(b"", lines), b""
    else:
        kept = _NOT_FORWARDED_OR_ID_LINE.sub(b"", lines)
        id_line = b"X-Request-Id: " + request_id + b"\r\n"
    return (b"%s %s HTTP/1.1%sX-Forwarded-For: %s\r\nX-Real-IP: %s\r\n"
            b"X-Forwarded-Proto: %s\r\nX-Forwarded-Host: %s\r\n%s%s\r\n") % (
        method, target, kept, client_ip, client_ip, scheme, host, id_line, framing)


def client_response_head_from_lines(status: int, reason: bytes, lines: bytes, *,
                                    framing: bytes, connection: bytes) -> bytes:
    """client_response_head for a head whose Connection names no other header."""
    return b"HTTP/1.1 %d %s%s%s%s\r\n" % (status, reason, _NOT_RELAYED_LINE.sub(b"", lines),
                                          framing, connection)


def client_response_head(
    status_line: bytes,
    headers: list[tuple[bytes, bytes]],
    *,
    framing: bytes,
    connection: bytes,
    tokens: frozenset[bytes] | None = None,
) -> bytes:
    """The response head sent to the client: the upstream's end-to-end headers plus
    our framing and Connection lines. Date and Server pass through; nothing is added.

    `connection` is b"" (HTTP/1.1 keep-alive), b"Connection: close\\r\\n" or
    b"Connection: keep-alive\\r\\n" (an HTTP/1.0 client that asked for it).
    """
    if tokens is None:
        tokens = connection_tokens(headers)
    out = [status_line]
    for name, value in headers:
        lower = name.lower()
        if lower in _NOT_RELAYED or lower in tokens or lower.startswith(b"proxy"):
            continue
        out += (name, b": ", value, b"\r\n")
    out += (framing, connection, b"\r\n")
    return b"".join(out)


def switching_protocols_head(status_line: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    """A 101 is relayed with its Upgrade and Connection headers (and Sec-WebSocket-*)."""
    out = [status_line]
    for name, value in headers:
        lower = name.lower()
        if lower in (b"connection", b"upgrade") or not (
            lower in _NOT_RELAYED or _is_proxy_header(lower)
        ):
            out += (name, b": ", value, b"\r\n")
    out.append(b"\r\n")
    return b"".join(out)


def chunk(data: bytes) -> bytes:
    """One HTTP/1.1 chunk (RFC 9112 §7.1); nothing for no bytes, since an empty
    chunk is the last one."""
    return b"%x\r\n%b\r\n" % (len(data), data) if data else b""


LAST_CHUNK = b"0\r\n\r\n"
