"""The hostile-input corpus on prefork-proxy and on nginx, in the same test.

Each vector is exact request bytes, sent on a raw socket to both proxies at
once: prefork-proxy, and Debian's nginx configured as a plain reverse proxy.
Each stands in front of its own recording upstream
(tests/support/recording_upstream.py), which keeps every complete request it
read. A vector is "accepted" by a proxy when its upstream read at least one
request, "refused" when it read none (a 4xx from the proxy, a close, silence).

For every vector:
  * we never accept where nginx refuses;
  * our upstream reads no request that nginx's did not (same method, target,
    Host and body, one to one), and no header field nginx did not pass: so a
    request smuggled in a body, a Host taken from a trailer or a location
    reached by an unnormalised path all show up;
  * we refuse where nginx accepts exactly for the vectors listed, with the
    reason, in WE_REFUSE_NGINX_ACCEPTS: a vector added to or gone from that
    set fails the test, so the table stays true.

Vectors that break one of these rules today, on a behaviour being changed,
are in KNOWN_FAILING, marked xfail(strict=True): each turns green (and must
then lose its mark) once the proxy behaves as the rules above ask.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.nginx import free_port, nginx_binary, running_nginx
from tests.support.parity_targets import (
    Outcome,
    RecordingUpstream,
    Target,
    probe_all,
    unmatched,
)
from tests.support.processes import Proxy

pytestmark = pytest.mark.skipif(
    nginx_binary() is None,
    reason="nginx is not installed (scripts/install-system-packages.sh)",
)

PATHS = ("prefork-proxy",)

# -- the corpus ---------------------------------------------------------------------------

HOST = b"Host: a.example\r\n"
SMUGGLED = b"GET /smuggled HTTP/1.1\r\n" + HOST + b"\r\n"
# A request carried as a body: it goes to another location, as an attacker would aim it.
INNER = b"GET /admin/smuggled HTTP/1.1\r\n" + HOST + b"\r\n"
WEBSOCKET = (b"Connection: Upgrade\r\nUpgrade: websocket\r\n"
             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n")
GARBAGE = b"\x16\x03\x01GARBAGE\x00\r\n\r\n"
HELLO_CHUNKED = b"5\r\nhello\r\n0\r\n\r\n"


def get(path: bytes, headers: bytes = b"") -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\n" + HOST + headers + b"\r\n"


def post(path: bytes, headers: bytes, body: bytes) -> bytes:
    return b"POST " + path + b" HTTP/1.1\r\n" + HOST + headers + b"\r\n" + body


def length(body: bytes) -> bytes:
    return b"Content-Length: %d\r\n" % len(body)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data)


TE_CHUNKED = b"Transfer-Encoding: chunked\r\n"


@dataclass(frozen=True)
class Vector:
    name: str
    data: bytes


CORPUS = [
    # Controls: plain requests every proxy passes (the counters do see what passes).
    Vector("control-get", get(b"/echo/control")),
    Vector("control-post-content-length", post(b"/echo/post", length(b"hello"), b"hello")),
    Vector("control-post-chunked", post(b"/echo/post", TE_CHUNKED, HELLO_CHUNKED)),
    Vector("control-pipelined", get(b"/echo/one") + get(b"/echo/two")),
    Vector("control-chunked-then-pipelined",
           post(b"/echo/post", TE_CHUNKED, HELLO_CHUNKED) + SMUGGLED),
    Vector("control-http10-without-host", b"GET /echo/h10 HTTP/1.0\r\n\r\n"),
    Vector("control-upgrade-without-body", get(b"/echo/ws", WEBSOCKET)),
    Vector("te-tab-before-value", post(b"/echo/te", b"Transfer-Encoding:\tchunked\r\n",
                                       HELLO_CHUNKED) + SMUGGLED),
    Vector("te-upper-case", post(b"/echo/te", b"Transfer-Encoding: CHUNKED\r\n",
                                 HELLO_CHUNKED) + SMUGGLED),
    Vector("te-trailing-space", post(b"/echo/te", b"Transfer-Encoding: chunked \r\n",
                                     HELLO_CHUNKED) + SMUGGLED),
    Vector("chunk-extension", post(b"/echo/ext", TE_CHUNKED,
                                   b"5;name=value\r\nhello\r\n0\r\n\r\n") + SMUGGLED),
    Vector("chunk-size-leading-zeros", post(b"/echo/zeros", TE_CHUNKED,
                                            b"0005\r\nhello\r\n0\r\n\r\n") + SMUGGLED),

    # Ambiguous framing.
    Vector("cl-and-te", post(b"/echo/h", b"Content-Length: 5\r\n" + TE_CHUNKED,
                             b"0\r\n\r\n") + SMUGGLED),
    Vector("te-and-cl", post(b"/echo/h", TE_CHUNKED + b"Content-Length: 5\r\n",
                             b"0\r\n\r\n") + SMUGGLED),
    Vector("cl-te-classic", post(b"/echo/h", length(b"0\r\n\r\n" + SMUGGLED) + TE_CHUNKED,
                                 b"0\r\n\r\n" + SMUGGLED)),
    Vector("te-cl-classic", post(b"/echo/h", TE_CHUNKED + b"Content-Length: 4\r\n",
                                 chunk(INNER))),
    Vector("cl-twice-same", post(b"/echo/h", b"Content-Length: 5\r\nContent-Length: 5\r\n",
                                 b"hello") + SMUGGLED),
    Vector("cl-twice-different", post(b"/echo/h", b"Content-Length: 5\r\n"
                                      b"Content-Length: 44\r\n", b"hello") + SMUGGLED),
    Vector("cl-list", post(b"/echo/h", b"Content-Length: 5, 5\r\n", b"hello") + SMUGGLED),
    Vector("cl-twice-other-case", post(b"/echo/h", b"Content-Length: 5\r\n"
                                       b"content-length: 5\r\n", b"hello") + SMUGGLED),
    Vector("cl-plus-sign", post(b"/echo/h", b"Content-Length: +5\r\n", b"hello") + SMUGGLED),
    Vector("cl-hex", post(b"/echo/h", b"Content-Length: 0x5\r\n", b"hello") + SMUGGLED),
    Vector("cl-negative", post(b"/echo/h", b"Content-Length: -5\r\n", b"hello") + SMUGGLED),
    Vector("cl-huge", post(b"/echo/h", b"Content-Length: 99999999999999999999999\r\n",
                           b"hello") + SMUGGLED),
    Vector("cl-space-inside", post(b"/echo/h", b"Content-Length: 5 5\r\n", b"hello")
           + SMUGGLED),
    Vector("te-xchunked", post(b"/echo/te", b"Transfer-Encoding: xchunked\r\n",
                               HELLO_CHUNKED) + SMUGGLED),
    Vector("te-chunked-identity", post(b"/echo/te", b"Transfer-Encoding: chunked, identity\r\n",
                                       HELLO_CHUNKED) + SMUGGLED),
    Vector("te-identity-chunked", post(b"/echo/te", b"Transfer-Encoding: identity, chunked\r\n",
                                       HELLO_CHUNKED) + SMUGGLED),
    Vector("te-twice", post(b"/echo/te", TE_CHUNKED + b"Transfer-Encoding: identity\r\n",
                            HELLO_CHUNKED) + SMUGGLED),
    Vector("te-chunked-then-bogus", post(b"/echo/te", TE_CHUNKED + b"Transfer-Encoding: x\r\n",
                                         HELLO_CHUNKED) + SMUGGLED),
    Vector("te-vertical-tab", post(b"/echo/te", b"Transfer-Encoding:\x0bchunked\r\n",
                                   HELLO_CHUNKED) + SMUGGLED),
    Vector("te-space-before-colon", post(b"/echo/te", b"Transfer-Encoding : chunked\r\n",
                                         HELLO_CHUNKED) + SMUGGLED),
    Vector("te-quoted", post(b"/echo/te", b'Transfer-Encoding: "chunked"\r\n',
                             HELLO_CHUNKED) + SMUGGLED),
    Vector("te-empty-list-element", post(b"/echo/te", b"Transfer-Encoding: , chunked\r\n",
                                         HELLO_CHUNKED) + SMUGGLED),
    Vector("te-folded-line", post(b"/echo/te", b"X-Padding: a\r\n Transfer-Encoding: chunked\r\n",
                                  HELLO_CHUNKED) + SMUGGLED),
    Vector("te-folded-value", post(b"/echo/te", b"Transfer-Encoding\r\n : chunked\r\n",
                                   HELLO_CHUNKED) + SMUGGLED),
    Vector("te-identity", post(b"/echo/te", b"Transfer-Encoding: identity\r\n",
                               HELLO_CHUNKED) + SMUGGLED),
    Vector("te-in-http10", b"POST /echo/h10 HTTP/1.0\r\n" + HOST + TE_CHUNKED + b"\r\n"
           + HELLO_CHUNKED + SMUGGLED),

    # Chunked framing.
    Vector("chunk-size-overflow", post(b"/echo/c", TE_CHUNKED,
                                       b"10000000000000005\r\nhello\r\n0\r\n\r\n") + SMUGGLED),
    Vector("chunk-size-overflow-long", post(b"/echo/c", TE_CHUNKED,
                                            b"ffffffffffffffffffff5\r\nhello\r\n0\r\n\r\n")
           + SMUGGLED),
    Vector("chunk-size-huge", post(b"/echo/c", TE_CHUNKED, b"7fffffffffffffff\r\nhello\r\n")
           + SMUGGLED),
    Vector("chunk-size-negative", post(b"/echo/c", TE_CHUNKED, b"-5\r\nhello\r\n0\r\n\r\n")
           + SMUGGLED),
    Vector("chunk-size-0x", post(b"/echo/c", TE_CHUNKED, b"0x5\r\nhello\r\n0\r\n\r\n")
           + SMUGGLED),
    Vector("chunk-size-leading-space", post(b"/echo/c", TE_CHUNKED,
                                            b" 5\r\nhello\r\n0\r\n\r\n") + SMUGGLED),
    Vector("chunk-size-not-hex", post(b"/echo/c", TE_CHUNKED, b"5\r\nhello\r\nzz\r\n")
           + SMUGGLED),
    Vector("chunk-extension-bare-semicolon", post(b"/echo/c", TE_CHUNKED,
                                                  b"5;\r\nhello\r\n0\r\n\r\n") + SMUGGLED),
    Vector("chunk-extension-nul", post(b"/echo/c", TE_CHUNKED,
                                       b"5;a\x00b\r\nhello\r\n0\r\n\r\n") + SMUGGLED),
    Vector("chunk-extension-lf", post(b"/echo/c", TE_CHUNKED,
                                      b"5;a\nhello\r\n0\r\n\r\n") + SMUGGLED),
    Vector("chunk-extension-long", post(b"/echo/c", TE_CHUNKED,
                                        b"5;" + b"a" * 10_000 + b"\r\nhello\r\n0\r\n\r\n")
           + SMUGGLED),
    Vector("chunk-extension-hides-request", post(b"/echo/c", TE_CHUNKED,
                                                 b"5;" + INNER + b"hello\r\n0\r\n\r\n")),
    Vector("chunk-lines-lf-only", post(b"/echo/c", TE_CHUNKED, b"5\nhello\n0\n\n") + SMUGGLED),
    Vector("chunk-data-without-crlf", post(b"/echo/c", TE_CHUNKED, b"5\r\nhelloXX0\r\n\r\n")
           + SMUGGLED),
    Vector("chunk-data-lf-only", post(b"/echo/c", TE_CHUNKED, b"5\r\nhello\n0\r\n\r\n")
           + SMUGGLED),
    Vector("chunk-data-longer-than-size", post(b"/echo/c", TE_CHUNKED,
                                               b"3\r\nhello\r\n0\r\n\r\n") + SMUGGLED),
    Vector("chunk-last-without-blank-line", post(b"/echo/c", TE_CHUNKED,
                                                 b"5\r\nhello\r\n0\r\n") + SMUGGLED),

    # Line endings, folding, control characters.
    Vector("bare-lf-everywhere", b"GET /echo/lf HTTP/1.1\nHost: a.example\n\n" + SMUGGLED),
    Vector("bare-lf-after-a-header", b"GET /echo/lf HTTP/1.1\r\nHost: a.example\nX-A: b\r\n\r\n"
           + SMUGGLED),
    Vector("bare-lf-ending-the-head", b"GET /echo/lf HTTP/1.1\r\nHost: a.example\r\nX-A: b\r\n\n"
           + SMUGGLED),
    Vector("bare-cr", b"GET /echo/cr HTTP/1.1\r\nHost: a.example\rX-A: b\r\n\r\n" + SMUGGLED),
    Vector("obs-fold-space", get(b"/echo/fold", b"X-Long: one\r\n two\r\n") + SMUGGLED),
    Vector("obs-fold-tab", get(b"/echo/fold", b"X-Long: one\r\n\ttwo\r\n") + SMUGGLED),
    Vector("header-value-nul", get(b"/echo/ctl", b"X-Value: a\x00b\r\n") + SMUGGLED),
    Vector("header-value-soh", get(b"/echo/ctl", b"X-Value: a\x01b\r\n") + SMUGGLED),
    Vector("header-value-escape", get(b"/echo/ctl", b"X-Value: a\x1bb\r\n") + SMUGGLED),
    Vector("header-value-del", get(b"/echo/ctl", b"X-Value: a\x7fb\r\n") + SMUGGLED),
    Vector("target-control-character", get(b"/echo/\x01") + SMUGGLED),
    Vector("header-60000-spaces", get(b"/echo/spaces", b"X-Pad: " + b" " * 60_000 + b"end\r\n")
           + SMUGGLED),

    # Versions and Host.
    Vector("http09", b"GET /echo/h09\r\n"),
    Vector("http09-with-blank-line", b"GET /echo/h09\r\n\r\n" + SMUGGLED),
    Vector("http11-without-host", b"GET /echo/nohost HTTP/1.1\r\nAccept: */*\r\n\r\n"
           + SMUGGLED),
    Vector("two-hosts-different", b"GET /echo/hosts HTTP/1.1\r\nHost: a.example\r\n"
           b"Host: b.example\r\n\r\n" + SMUGGLED),
    Vector("two-hosts-same", b"GET /echo/hosts HTTP/1.1\r\nHost: a.example\r\n"
           b"Host: a.example\r\n\r\n" + SMUGGLED),

    # An upgrade request is an ordinary request until a 101: its body is a body.
    Vector("upgrade-content-length-body-is-request",
           get(b"/echo/upgrade", WEBSOCKET + length(INNER)) + INNER),
    Vector("upgrade-chunked-body-is-request",
           get(b"/echo/upgrade", WEBSOCKET + TE_CHUNKED) + chunk(INNER)),

    # A Connection list naming an essential header.
    Vector("connection-host", get(b"/echo/connection-host", b"Connection: host\r\n")),
    Vector("connection-content-length-post",
           post(b"/echo/connection-cl", b"Connection: content-length\r\n" + length(INNER),
                INNER)),
    Vector("connection-transfer-encoding",
           post(b"/echo/connection-te", b"Connection: transfer-encoding\r\n" + TE_CHUNKED,
                chunk(INNER))),

    # Trailer fields: never merged into the head (nginx drops them).
    Vector("trailer-host", post(b"/echo/trailer", TE_CHUNKED,
                                b"5\r\nhello\r\n0\r\nHost: evil.internal\r\n\r\n")),
    Vector("trailer-content-length", post(b"/echo/trailer", TE_CHUNKED,
                                          b"5\r\nhello\r\n0\r\nContent-Length: 44\r\n\r\n")),
    Vector("trailer-transfer-encoding",
           post(b"/echo/trailer", TE_CHUNKED,
                b"5\r\nhello\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n")),
    Vector("trailer-x-injected", post(b"/echo/trailer", TE_CHUNKED,
                                      b"5\r\nhello\r\n0\r\nX-Injected: 1\r\n\r\n")),

    # Targets and routing: nginx routes on the normalised path ($uri).
    Vector("absolute-form-other-host",
           b"GET http://b.example/echo/absolute HTTP/1.1\r\n" + HOST + b"\r\n"),
    Vector("absolute-form-to-admin",
           b"GET http://b.example/admin/absolute HTTP/1.1\r\n" + HOST + b"\r\n"),
    Vector("path-dot-dot-above-root", get(b"/../x")),
    Vector("path-climbs-above-root", get(b"/a/../../x")),
    Vector("path-encoded-dot-dot-above-root", get(b"/%2e%2e/x")),
    Vector("path-encoded-nul", get(b"/x%00y")),
    Vector("path-double-slash-admin", get(b"//admin/x")),
    Vector("path-legacy-dot-dot-admin", get(b"/legacy/../admin/x")),
    Vector("path-legacy-encoded-dot-dot-admin", get(b"/legacy/%2e%2e/admin/x")),
    Vector("path-admin-dot-segment", get(b"/admin/./x")),

    # A valid request, then garbage in the same write: the first is answered, then 400.
    Vector("get-then-garbage", get(b"/echo/first") + GARBAGE),
    Vector("get-with-x-forwarded-for-then-garbage",
           get(b"/echo/first", b"X-Forwarded-For: 192.0.2.1\r\n") + GARBAGE),
    Vector("post-then-garbage", post(b"/echo/first", length(b"hello"), b"hello") + GARBAGE),

    # Request lines, versions and targets.
    Vector("request-line-double-space", b"GET  /echo/space HTTP/1.1\r\n" + HOST + b"\r\n"
           + SMUGGLED),
    Vector("method-lower-case", b"get /echo/lower HTTP/1.1\r\n" + HOST + b"\r\n" + SMUGGLED),
    Vector("version-http12", b"GET /echo/v12 HTTP/1.2\r\n" + HOST + b"\r\n" + SMUGGLED),
    Vector("version-http20", b"GET /echo/v20 HTTP/2.0\r\n" + HOST + b"\r\n" + SMUGGLED),
    Vector("asterisk-form-options", b"OPTIONS * HTTP/1.1\r\n" + HOST + b"\r\n" + SMUGGLED),
    Vector("connect-method", b"CONNECT b.example:443 HTTP/1.1\r\nHost: b.example:443\r\n\r\n"
           + SMUGGLED),
    Vector("absolute-form-https", b"GET https://b.example/echo/https HTTP/1.1\r\n" + HOST
           + b"\r\n"),
    Vector("absolute-form-userinfo", b"GET http://user@b.example/echo/userinfo HTTP/1.1\r\n"
           + HOST + b"\r\n"),
    Vector("path-encoded-slashes-to-admin", get(b"/legacy%2f..%2fadmin/x")),
    Vector("path-backslashes", get(b"/legacy\\..\\admin/x")),
    Vector("path-semicolon-admin", get(b"/admin;/x")),
    Vector("uri-9000-bytes", get(b"/echo/" + b"u" * 9000) + SMUGGLED),
    Vector("head-40k-of-header-lines",
           get(b"/echo/many", b"".join(b"X-Pad-%d: %s\r\n" % (i, b"p" * 800) for i in range(50)))
           + SMUGGLED),
    Vector("header-name-with-space", get(b"/echo/name", b"X Y: z\r\n") + SMUGGLED),
    Vector("header-name-empty", get(b"/echo/name", b": z\r\n") + SMUGGLED),
    Vector("host-with-slash", b"GET /echo/host HTTP/1.1\r\nHost: a.example/x\r\n\r\n"
           + SMUGGLED),
    Vector("host-with-space", b"GET /echo/host HTTP/1.1\r\nHost: a example\r\n\r\n"
           + SMUGGLED),
    Vector("host-bad-port", b"GET /echo/host HTTP/1.1\r\nHost: a.example:x8\r\n\r\n"
           + SMUGGLED),
    Vector("host-double-dot", b"GET /echo/host HTTP/1.1\r\nHost: a..example\r\n\r\n"
           + SMUGGLED),
    Vector("host-empty", b"GET /echo/host HTTP/1.1\r\nHost:\r\n\r\n" + SMUGGLED),
    Vector("host-with-userinfo", b"GET /echo/host HTTP/1.1\r\nHost: user@a.example\r\n\r\n"
           + SMUGGLED),
    Vector("cl-leading-zeros", post(b"/echo/h", b"Content-Length: 005\r\n", b"hello")
           + SMUGGLED),
    Vector("get-with-chunked-body", b"GET /echo/get-body HTTP/1.1\r\n" + HOST + TE_CHUNKED
           + b"\r\n" + HELLO_CHUNKED + SMUGGLED),
    Vector("expect-continue-with-body",
           post(b"/echo/expect", b"Expect: 100-continue\r\n" + length(b"hello"), b"hello")),
    Vector("upgrade-h2c-body-is-request",
           get(b"/echo/h2c", b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
               b"HTTP2-Settings: AAMAAABkAAQAAP__\r\n" + length(INNER)) + INNER),

    # Header fields a proxy must not pass as they are.
    Vector("underscore-header", get(b"/echo/underscore", b"X_Forwarded_For: 192.0.2.66\r\n")),
    Vector("underscore-content-length", post(b"/echo/underscore", b"Content_Length: 5\r\n",
                                             b"") + SMUGGLED),
    Vector("proxy-header", get(b"/echo/httpoxy", b"Proxy: http://evil.example:8080\r\n")),
]

# Vectors where we refuse and nginx 1.22 accepts, each with the reason we refuse.
_BARE_LF = ("RFC 9112 §2.2 lets a recipient take a bare LF as a line end; we refuse it "
            "(DESIGN: bare LF is 400), since two parsers that disagree on it frame a message "
            "differently. nginx 1.22 accepts it.")
_CHUNK_LF = ("RFC 9112 §7.1: a chunk-size line and the chunk data end in CRLF; a bare LF is "
             "refused like a bare LF in the head. nginx 1.22 accepts it.")
_CTL = ("RFC 9110 §5.5: a field value holding a control character other than HTAB is "
        "invalid, and a recipient may refuse it; we do (DESIGN: control characters are 400). "
        "nginx 1.22 passes it upstream.")
_HTTP09 = ("HTTP/0.9 has no headers (no Host, no framing) and RFC 9112 no longer defines it; "
           "DESIGN: it is 400. nginx 1.22 still answers an HTTP/0.9 GET, with a bare body.")
# Vectors where our upstream request carries a Host that nginx's does not, and why.
WE_ADD_HOST: dict[str, str] = {
    "control-http10-without-host": (
        "an HTTP/1.0 request may come without Host; it goes upstream as HTTP/1.1, which "
        "must carry one (RFC 9112 §3.2): ours sends the upstream's name, nginx's default "
        "$proxy_host; nginx's `Host $host` is empty here, so it sends an HTTP/1.1 "
        "request with no Host"),
}


def _without_host(outcome: Outcome) -> Outcome:
    """`outcome` with each request's one Host taken out (asserting there was one)."""
    records = []
    for record in outcome.records:
        hosts = [pair for pair in record["headers"] if pair[0].lower() == "host"]
        assert len(hosts) == 1, record["headers"]
        records.append({**record, "headers": [pair for pair in record["headers"]
                                              if pair[0].lower() != "host"]})
    return dataclasses.replace(outcome, records=records)


WE_REFUSE_NGINX_ACCEPTS: dict[str, str] = {
    "bare-lf-everywhere": _BARE_LF,
    "bare-lf-after-a-header": _BARE_LF,
    "bare-lf-ending-the-head": _BARE_LF,
    "chunk-lines-lf-only": _CHUNK_LF,
    "chunk-data-lf-only": _CHUNK_LF,
    "chunk-extension-lf": _CHUNK_LF,
    "chunk-extension-bare-semicolon": (
        "RFC 9112 §7.1.1: a chunk extension is ';' then a token; an empty name is invalid "
        "(llhttp refuses it). nginx skips whatever follows ';' unread."),
    "chunk-extension-nul": (
        "RFC 9112 §7.1.1: a NUL is no token character. nginx skips the extension unread."),
    "chunk-last-without-blank-line": (
        "RFC 9112 §7.1.2: each trailer line is a field line (name ':' value), and the "
        "request line that follows the last chunk is not one. nginx skips trailer lines "
        "unread, so it swallowed the next request as a trailer."),
    "header-value-soh": _CTL,
    "header-value-escape": _CTL,
    "header-value-del": _CTL,
    "http09": _HTTP09,
    "http09-with-blank-line": _HTTP09,
    "version-http12": (
        "llhttp takes HTTP/1.0 and 1.1 only (and 2.0, answered 505). RFC 9110 §2.5 lets a "
        "recipient treat HTTP/1.2 as its highest 1.x version, as nginx does; no HTTP/1.2 "
        "exists, so refusing it turns no real client away."),
}

# Vectors that break a rule today; xfail(strict=True), so each turns green (and must
# then lose its entry) once the proxy follows the rules of the module docstring.
KNOWN_FAILING: dict[str, str] = {}


def _params() -> list:
    return [pytest.param(vector, id=vector.name,
                         marks=[pytest.mark.xfail(strict=True, reason=KNOWN_FAILING[vector.name])]
                         if vector.name in KNOWN_FAILING else [])
            for vector in CORPUS]


# -- the three proxies ----------------------------------------------------------------------

READ_TIMEOUT = 2  # seconds: a proxy waiting on its upstream gives up well inside the probe

# nginx adds no X-Request-Id unless told to: ours is off, so both forward the same head.
OUR_CONFIG = """\
workers = 1
access_log = "off"
request_id = false
[[server]]
listen = ["127.0.0.1:{port}"]
  [[server.location]]
  path = "/"
  proxy_pass = "http://{upstream}"
  read_timeout = "{timeout}s"
  [[server.location]]
  path = "/admin/"
  proxy_pass = "http://{upstream}/at-admin/"
  read_timeout = "{timeout}s"
  [[server.location]]
  path = "/legacy/"
  proxy_pass = "http://{upstream}/at-legacy/"
  read_timeout = "{timeout}s"
"""

# The same locations in a plain nginx reverse proxy, with the request headers the proxy
# sets (so that header names compare: `Host $host` is the Host we pass, taken from an
# absolute-form target when there is one), HTTP/1.1 and keep-alive to the upstream (the
# 1.29.7 defaults) and WebSocket upgrades passed, as the proxy passes them unasked.
NGINX_HTTP = """
map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
upstream recorder {{ server {upstream}; keepalive 32; }}
"""
NGINX_SERVER = """
server {{
    listen 127.0.0.1:{port};
    proxy_http_version 1.1;
    proxy_read_timeout {timeout}s;
    client_header_timeout {timeout}s;
    client_body_timeout {timeout}s;
    proxy_set_header Host $host;
    proxy_set_header Upgrade $http_upgrade;
    proxy_set_header Connection $connection_upgrade;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_set_header X-Real-IP $remote_addr;
    proxy_set_header X-Forwarded-Proto $scheme;
    proxy_set_header X-Forwarded-Host $host;
    location / {{ proxy_pass http://recorder; }}
    location /admin/ {{ proxy_pass http://recorder/at-admin/; }}
    location /legacy/ {{ proxy_pass http://recorder/at-legacy/; }}
}}
"""


@contextmanager
def running_targets(directory: Path) -> Iterator[list[Target]]:
    """Our proxy and nginx, each in front of its own recording upstream."""
    started: list = []
    try:
        targets = []
        for path in PATHS:
            upstream = RecordingUpstream(directory / f"{path}-upstream.log")
            started.append(upstream)
            port = free_port()
            config = directory / f"{path}.toml"
            config.write_text(OUR_CONFIG.format(port=port, upstream=upstream.address,
                                                timeout=READ_TIMEOUT))
            proxy = Proxy(config, directory / f"{path}.log", env=None)
            started.append(proxy)
            proxy.wait_serving()
            targets.append(Target(path, port, upstream))
        upstream = RecordingUpstream(directory / "nginx-upstream.log")
        started.append(upstream)
        port = free_port()
        with running_nginx(NGINX_SERVER.format(port=port, timeout=READ_TIMEOUT),
                           directory / "nginx", ports=[port],
                           http_extra=NGINX_HTTP.format(upstream=upstream.address)):
            yield [*targets, Target("nginx", port, upstream)]
    finally:
        for process in reversed(started):
            process.stop()


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Target]]:
    with running_targets(tmp_path_factory.mktemp("corpus")) as running:
        yield running


# -- the rules ------------------------------------------------------------------------------

def broken_rules(name: str, outcomes: dict[str, Outcome]) -> list[str]:
    """Every rule of the module docstring that `outcomes` break, as sentences."""
    nginx = outcomes["nginx"]
    problems = []
    for path in PATHS:
        ours = outcomes[path]
        if name in WE_ADD_HOST:
            ours = _without_host(ours)
        if ours.verdict == "accept" and nginx.verdict == "refuse":
            problems.append(f"{path}: accepts where nginx refuses")
        problems += [f"{path}: {problem}" for problem in unmatched(ours, nginx)]
        refuses_more = ours.verdict == "refuse" and nginx.verdict == "accept"
        if refuses_more != (name in WE_REFUSE_NGINX_ACCEPTS):
            problems.append(f"{path}: refuses where nginx accepts: {refuses_more}, "
                            f"but the table says {not refuses_more}")
    return problems


def describe(outcomes: dict[str, Outcome]) -> str:
    return "\n".join(f"  {name:9} {outcome.summary()}" for name, outcome in outcomes.items())


@pytest.mark.parametrize("vector", _params())
def test_vector_parity_with_nginx(targets: list[Target], vector: Vector) -> None:
    outcomes = probe_all(targets, vector.data)
    problems = broken_rules(vector.name, outcomes)
    if vector.name.startswith("control-"):  # the counters do see a request that passes
        problems += [f"{name}: refuses a control" for name, outcome in outcomes.items()
                     if outcome.verdict != "accept"]
    assert not problems, "\n".join(problems) + "\n" + describe(outcomes)


def test_the_tables_name_vectors_of_the_corpus() -> None:
    names = [vector.name for vector in CORPUS]
    assert len(names) == len(set(names)), "two vectors share a name"
    assert set(WE_REFUSE_NGINX_ACCEPTS) <= set(names)
    assert set(KNOWN_FAILING) <= set(names)
    assert not set(WE_REFUSE_NGINX_ACCEPTS) & set(KNOWN_FAILING)
    assert all(reason.strip() for reason in WE_REFUSE_NGINX_ACCEPTS.values())
    assert all(reason.strip() for reason in KNOWN_FAILING.values())
