"""An HTTP/2 request's header list, checked (RFC 9113 §8.2, §8.3.1) and written as an HTTP/1.1 head.

The driver reads that head with the HTTP/1.1 reader (http1.RequestReader), so
the strict HTTP/1.1 rules still apply to what comes through; this module refuses
first what HTTP/2 calls malformed (a stream error PROTOCOL_ERROR, RFC 9113
§8.1.1), and anything that could change the meaning of the HTTP/1.1 head it
writes: a CR, LF or NUL in a value (§8.2.1) would otherwise start a header of
its own. h2's own inbound validation is off (session.py): it makes a malformed
header block a connection error, where RFC 9113 asks for a stream error.
"""

from __future__ import annotations

import re

from workers import abnf

# RFC 9113 §8.2.1: field names are lowercase tokens; values hold no CR, LF or NUL
# and no leading or trailing whitespace. We also refuse other control characters,
# which the HTTP/1.1 reader would answer 400 (RFC 9110 §5.5: field-vchar).
_NAME = re.compile(b"[" + abnf.TCHAR_SET.replace(b"A-Z", b"") + b"]+")
_VALUE = re.compile(b"(?:" + abnf.FIELD_VCHAR + b"(?:[\t " + abnf.VCHAR_RANGE
                    + abnf.OBS_TEXT_RANGE + b"]*" + abnf.FIELD_VCHAR + b")?)?")
_METHOD = re.compile(abnf.TOKEN)
# RFC 9113 §8.3.1: :path is origin-form or "*"; the request-target grammar (VCHAR,
# no spaces) is checked again by the HTTP/1.1 reader.
_PATH = re.compile(b"(?:/[" + abnf.VCHAR_RANGE + b"]*|\\*)")
_AUTHORITY = re.compile(b"[" + abnf.VCHAR_RANGE + b"]+")
# RFC 9113 §8.2.2: connection-specific fields make a request malformed; TE may only
# say "trailers".
_CONNECTION_SPECIFIC = frozenset({b"connection", b"keep-alive", b"proxy-connection",
                                  b"transfer-encoding", b"upgrade"})
_REQUIRED = (b":method", b":scheme", b":path")


class MalformedRequest(Exception):
    """The stream is answered RST_STREAM(PROTOCOL_ERROR) (RFC 9113 §8.1.1)."""


class RequestHead:
    """What the driver is given for one stream: the HTTP/1.1 head, and the body's framing."""

    __slots__ = ("head", "method", "chunked", "has_body")

    def __init__(self, head: bytes, method: bytes, chunked: bool, has_body: bool) -> None:
        self.head = head
        self.method = method
        self.chunked = chunked  # the DATA frames go to the driver chunk-framed
        self.has_body = has_body


def request_head(fields: list[tuple[bytes, bytes]], ended: bool) -> RequestHead:
    """Check a request's header list and write its HTTP/1.1 head.

    `ended`: the HEADERS frame had END_STREAM, so there is no body. A body without
    a content-length goes to the driver chunked (RFC 9113 §8.1: the end of the
    stream ends it), which the driver reads whole before it sends it with a
    length (nginx does the same for HTTP/2 bodies of unknown length)."""
    pseudo: dict[bytes, bytes] = {}
    lines: list[bytes] = []
    host = None
    content_length = None
    for name, value in fields:
        if name[:1] == b":":
            # RFC 9113 §8.3: pseudo-header fields come first, once each, of the
            # request's four; :protocol only with the extended CONNECT, which we do
            # not offer (no SETTINGS_ENABLE_CONNECT_PROTOCOL, RFC 8441 §3).
            if lines or host is not None:
                raise MalformedRequest(f"pseudo-header {name!r} after a regular field")
            if name not in (b":method", b":scheme", b":path", b":authority"):
                raise MalformedRequest(f"pseudo-header {name!r} is not a request's")
            if name in pseudo:
                raise MalformedRequest(f"pseudo-header {name!r} repeats")
            pseudo[name] = value
            continue
        if _NAME.fullmatch(name) is None:
            raise MalformedRequest(f"field name {name!r} is not a lowercase token")
        if _VALUE.fullmatch(value) is None:
            raise MalformedRequest(f"field {name.decode()} has a value with control "
                                   "characters or surrounding whitespace")
        if name in _CONNECTION_SPECIFIC:
            raise MalformedRequest(f"connection-specific field {name.decode()}")
        if name == b"te" and value.lower() != b"trailers":
            raise MalformedRequest("te other than \"trailers\"")
        if name == b"host":
            if host is not None:
                raise MalformedRequest("host repeats")
            host = value
            continue
        if name == b"content-length":
            if content_length is not None or not value.isdigit():
                raise MalformedRequest("content-length repeats or is not a number")
            content_length = int(value)
        lines.append(b"%s: %s\r\n" % (name, value))
    for name in _REQUIRED:
        if name not in pseudo:
            raise MalformedRequest(f"no {name.decode()} pseudo-header")
    method, path = pseudo[b":method"], pseudo[b":path"]
    if _METHOD.fullmatch(method) is None:
        raise MalformedRequest(f":method {method!r} is not a token")
    if method == b"CONNECT":  # RFC 9113 §8.5: a tunnel, which we do not offer
        raise MalformedRequest("CONNECT is not served over HTTP/2")
    if _PATH.fullmatch(path) is None or (path == b"*" and method != b"OPTIONS"):
        raise MalformedRequest(f":path {path!r} is not origin-form or \"*\"")
    if pseudo[b":scheme"] not in (b"http", b"https"):
        raise MalformedRequest(f":scheme {pseudo[b':scheme']!r} is not http or https")
    # RFC 9113 §8.3.1: :authority stands for Host; when both are sent they must
    # agree. Neither: the HTTP/1.1 reader answers 400 (no Host).
    authority = pseudo.get(b":authority")
    if authority is not None:
        if _AUTHORITY.fullmatch(authority) is None:
            raise MalformedRequest(f":authority {authority!r} is not a host")
        if host is not None and host != authority:
            raise MalformedRequest(":authority and host differ")
        host = authority
    head = [b"%s %s HTTP/1.1\r\n" % (method, path)]
    if host is not None:
        head.append(b"Host: %s\r\n" % host)
    head.extend(lines)
    chunked = False
    if ended:
        if content_length:  # RFC 9113 §8.1.1: the length must match the DATA sent
            raise MalformedRequest("content-length with no DATA")
    elif content_length is None:
        chunked = True
        head.append(b"Transfer-Encoding: chunked\r\n")
    head.append(b"\r\n")
    has_body = not ended and (chunked or bool(content_length))
    return RequestHead(b"".join(head), method, chunked, has_body)


def chunk(data: bytes) -> bytes:
    """One DATA frame's bytes as an HTTP/1.1 chunk (RFC 9112 §7.1)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
