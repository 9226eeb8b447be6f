"""The uwsgi protocol, pure part: request vars, the packet, and reply heads.

No sockets and no gevent here, so every rule is tested with plain bytes.

* `UwsgiParams` compiles a location's `uwsgi_param` table once.
* `build_vars` turns a request's fields into the vars nginx sends with
  `include uwsgi_params`, in that file's order, then the client's headers
  as `HTTP_*`.
* `encode_packet` frames them: `u8 modifier1 | u16le datasize | u8 modifier2`,
  then `u16le len, key, u16le len, value` per var (uWSGI's protocol doc).
* `encode_request_packet` is the two in one pass, for the hot path: the same
  bytes, with the standard vars written through one precompiled template.
* `parse_reply_head` reads the head uWSGI answers with: an HTTP status line,
  or CGI-style headers with an optional `Status:`.

Errors are `workers.errors.HttpError`s: the status the client should get,
and the reason for the log.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from workers.document_uri import document_uri
from workers.errors import HttpError, UpstreamError, reason_phrase

# The datasize field is a u16: nginx refuses a bigger vars block ("uwsgi
# request is too big") rather than truncating it, and so do we.
MAX_VARS_SIZE = 0xFFFF

_pack_u16 = struct.Struct("<H").pack
_pack_header = struct.Struct("<BHB").pack

# The caches below are keyed by names a client chooses, so they are bounded in
# bytes, never by a count of entries (a count of 10 KB names is tens of MiB): a
# name longer than MAX_CACHED_NAME is encoded every time (real header names are
# short: Access-Control-Request-Headers, among the longest, is 30 bytes), and a
# table starts over once its names and encodings pass CACHE_BUDGET bytes.
MAX_CACHED_NAME = 64
CACHE_BUDGET = 256 * 1024


class NameCache:
    """name -> its encoding, for names seen before, bounded in bytes (see above)."""

    __slots__ = ("table", "size")

    def __init__(self) -> None:
        self.table: dict[bytes, bytes] = {}
        self.size = 0  # bytes of the names and encodings kept

    def keep(self, name: bytes, encoded: bytes) -> None:
        if len(name) > MAX_CACHED_NAME:
            return
        size = len(name) + len(encoded)
        if self.size + size > CACHE_BUDGET:
            self.table.clear()
            self.size = 0
        self.table[name] = encoded
        self.size += size


# Encoded `u16le len + key` of var names seen before: the keys rarely change.
_KEY_PREFIXES = NameCache()

# nginx's uwsgi_params, in the file's order (HTTPS is sent only when not empty).
STANDARD_VARS = (
    b"QUERY_STRING", b"REQUEST_METHOD", b"CONTENT_TYPE", b"CONTENT_LENGTH",
    b"REQUEST_URI", b"PATH_INFO", b"DOCUMENT_ROOT", b"SERVER_PROTOCOL",
    b"REQUEST_SCHEME", b"HTTPS", b"REMOTE_ADDR", b"REMOTE_PORT", b"SERVER_PORT",
    b"SERVER_NAME",
)  # fmt: skip
_STANDARD = frozenset(STANDARD_VARS)
_PROTOCOLS = {"1.1": b"HTTP/1.1", "1.0": b"HTTP/1.0"}


class VarsTooBig(HttpError):
    """The vars block does not fit the protocol's u16 datasize: never truncated.

    nginx logs "uwsgi request is too big" and answers 500. The block is made
    mostly of the client's headers, so we answer 431 (RFC 6585 §5), which the
    client can act on: a deliberate choice, documented in the example config.
    """

    def __init__(self, size: int) -> None:
        super().__init__(
            431,
            f"uwsgi request is too big: the vars block is {size} bytes, the uwsgi "
            f"protocol allows at most {MAX_VARS_SIZE} (the client's headers, or uwsgi_param)",
        )
        self.size = size


class BadReply(UpstreamError):
    """uWSGI answered something that is neither an HTTP nor a CGI-style head: 502."""

    def __init__(self, reason: str) -> None:
        super().__init__(502, reason)


class UwsgiParams:
    """A location's `uwsgi_param` table, compiled once per config.

    * A standard var (SERVER_NAME, ...) gets the configured value in place.
    * Any other name is sent after the standard vars, in config order.
    * `HTTP_<NAME>` replaces the client's header of that name (nginx skips
      client headers whose var a `uwsgi_param` sets).
    * An empty value removes the var: the standard one, the client header,
      or the param itself.
    """

    __slots__ = ("standard", "extra", "header_vars", "empty")

    def __init__(self, params: Iterable[tuple[bytes, bytes]] = ()) -> None:
        self.standard: dict[bytes, bytes] = {}
        self.extra: list[tuple[bytes, bytes]] = []
        header_vars = set()
        for name, value in params:
            if name.startswith(b"HTTP_"):
                header_vars.add(name)
            if name in _STANDARD:
                self.standard[name] = value
            else:
                self.extra = [pair for pair in self.extra if pair[0] != name]
                if value:
                    self.extra.append((name, value))
        self.header_vars = frozenset(header_vars)
        self.empty = not (self.standard or self.extra or self.header_vars)


NO_PARAMS = UwsgiParams()
# The request id's var, as the header X-Request-Id would make it.
_REQUEST_ID_VAR = b"HTTP_X_REQUEST_ID"


def _header_var(name: bytes) -> bytes | None:
    """`X-Forwarded-For` -> `HTTP_X_FORWARDED_FOR`, or None for a name nginx ignores.

    nginx's `ignore_invalid_headers` (on) drops names with anything but
    letters, digits and '-', underscores included (`underscores_in_headers
    off`): otherwise `X_Foo` and `X-Foo` would both become `HTTP_X_FOO`.
    """
    if not name.replace(b"-", b"").isalnum():
        return None
    if len(name) == 5 and name.lower() == b"proxy":
        # httpoxy (CVE-2016-5385): HTTP_PROXY would read as the app's outbound proxy.
        # nginx passes it; we never do.
        return None
    return b"HTTP_" + name.upper().replace(b"-", b"_")


def _without_fragment(path: bytes, query: bytes) -> tuple[bytes, bytes]:
    """nginx keeps a fragment in REQUEST_URI only: not in PATH_INFO or QUERY_STRING."""
    if b"#" in path:
        return path.partition(b"#")[0], b""
    if b"#" in query:
        return path, query.partition(b"#")[0]
    return path, query


def request_uri(target: bytes) -> bytes:
    """nginx's `$request_uri`: the target as received, minus an absolute form's scheme and host."""
    if target.startswith(b"/"):
        return target
    scheme_end = target.find(b"://")
    if scheme_end < 0:
        return target  # "*" and other forms: passed as they are
    path_start = target.find(b"/", scheme_end + 3)
    return target[path_start:] if path_start >= 0 else b"/"


def build_vars(
    *,
    method: bytes,
    target: bytes,
    path: bytes,
    query: bytes,
    version: str,
    headers: Sequence[tuple[bytes, bytes]],
    remote_addr: bytes,
    remote_port: bytes,
    server_port: bytes,
    server_name: bytes,
    content_length: int | None,
    scheme: bytes = b"http",
    https: bool = False,
    params: UwsgiParams = NO_PARAMS,
    request_id: bytes | None = None,
) -> list[tuple[bytes, bytes]]:
    """The vars of one request, in nginx's `uwsgi_params` order, then `HTTP_*`.

    `version` is the protocol version as received ("1.1"); `headers` are the
    client's (name, value) pairs in order; `content_length` is the length of
    the body that will follow the packet (the de-chunked length for a
    chunked body, None for no body). `request_id` is our X-Request-Id: it
    replaces the client's HTTP_X_REQUEST_ID (a `uwsgi_param` of that name wins).
    Raises `BadRequestPath` (400) when the path cannot be decoded as nginx's
    `$document_uri`.
    """
    path, query = _without_fragment(path, query)
    content_type = b""
    for name, value in headers:
        if len(name) == 12 and name.lower() == b"content-type":
            content_type = value
            break
    standard = (
        (b"QUERY_STRING", query),
        (b"REQUEST_METHOD", method),
        (b"CONTENT_TYPE", content_type),
        # nginx's $content_length: empty without a body, the decoded length
        # once a chunked body has been read whole.
        (b"CONTENT_LENGTH", b"" if content_length is None else b"%d" % content_length),
        (b"REQUEST_URI", request_uri(target)),
        (b"PATH_INFO", document_uri(path)),
        # No `root` here: nginx would send its compiled-in html directory.
        (b"DOCUMENT_ROOT", b""),
        (b"SERVER_PROTOCOL", _PROTOCOLS.get(version) or b"HTTP/" + version.encode("ascii")),
        (b"REQUEST_SCHEME", scheme),
        (b"HTTPS", b"on" if https else b""),
        (b"REMOTE_ADDR", remote_addr),
        (b"REMOTE_PORT", remote_port),
        (b"SERVER_PORT", server_port),
        (b"SERVER_NAME", server_name),
    )
    overrides = params.standard
    result: list[tuple[bytes, bytes]] = []
    for name, value in standard:
        if overrides and name in overrides:
            value = overrides[name]
            if not value:
                continue  # an empty uwsgi_param removes the var
        elif name == b"HTTPS" and not value:
            continue  # uwsgi_params: `HTTPS $https if_not_empty`
        result.append((name, value))
    result.extend(params.extra)

    # Client headers. nginx >= 1.23 joins repeats into one var: "; " for
    # Cookie (RFC 6265 §5.4), ", " for the rest (RFC 9110 §5.3).
    skip = params.header_vars
    joined: dict[bytes, bytes] = {}
    for name, value in headers:
        var = _header_var(name)
        if var is None or var in skip:
            continue
        previous = joined.get(var)
        if previous is None:
            joined[var] = value
        else:
            joined[var] = previous + (b"; " if var == b"HTTP_COOKIE" else b", ") + value
    if request_id is not None and _REQUEST_ID_VAR not in skip:
        joined[_REQUEST_ID_VAR] = request_id  # in the client's place, or last
    result.extend(joined.items())
    return result


def encode_vars(variables: Sequence[tuple[bytes, bytes]]) -> bytes:
    """The vars block: `u16le len, key, u16le len, value` per var. Raises `VarsTooBig`."""
    parts = []
    append = parts.append
    prefixes = _KEY_PREFIXES.table
    try:
        for key, value in variables:
            prefix = prefixes.get(key)
            if prefix is None:
                prefix = _pack_u16(len(key)) + key
                _KEY_PREFIXES.keep(key, prefix)  # the standard vars and common headers
            append(prefix)
            append(_pack_u16(len(value)))
            append(value)
    except struct.error:
        # A key or value longer than its u16 length field can say.
        raise VarsTooBig(sum(4 + len(key) + len(value) for key, value in variables)) from None
    block = b"".join(parts)
    if len(block) > MAX_VARS_SIZE:
        raise VarsTooBig(len(block))
    return block


def encode_packet(
    variables: Sequence[tuple[bytes, bytes]], modifier1: int = 0, modifier2: int = 0
) -> bytes:
    """The whole uwsgi request head: the 4-byte header, then the vars block."""
    block = encode_vars(variables)
    return _pack_header(modifier1, len(block), modifier2) + block


def _key(name: bytes) -> bytes:
    return _pack_u16(len(name)) + name


# The standard vars but HTTPS (sent only when on, so never on this path), each
# `u16 len, key` then `%b%b` for the value's length and the value, in two parts:
# the request's own (CONTENT_TYPE's value comes with the shared part, whole), then
# the shared part with DOCUMENT_ROOT, always empty, and REQUEST_SCHEME, always http.
_OWN_TEMPLATE = b"".join(
    _key(name) + (b"%b" if name == b"CONTENT_TYPE" else b"%b%b")
    for name in STANDARD_VARS[:6]) + b"%b"
_SHARED_TEMPLATE = b"".join(
    _key(name) + {b"DOCUMENT_ROOT": _pack_u16(0),
                  b"REQUEST_SCHEME": _pack_u16(4) + b"http"}.get(name, b"%b%b")
    for name in STANDARD_VARS[6:] if name != b"HTTPS")
_REQUEST_ID_KEY = _key(_REQUEST_ID_VAR)
# Client header name -> `u16 len, HTTP_NAME` (b"" for a name nginx ignores).
_HEADER_KEYS = NameCache()
# The u16 of every length under 4 KiB: an index instead of a pack() call per var.
_SHORT_U16 = tuple(_pack_u16(length) for length in range(4096))


def _in_two_steps(request: tuple, params: UwsgiParams, modifier1: int, modifier2: int) -> bytes:
    """encode_packet(build_vars(...)) for encode_request_packet's fields, in its order."""
    (method, target, path, query, version, headers, remote_addr, remote_port, server_port,
     server_name, content_length, request_id) = request
    return encode_packet(build_vars(
        method=method, target=target, path=path, query=query, version=version, headers=headers,
        remote_addr=remote_addr, remote_port=remote_port, server_port=server_port,
        server_name=server_name, content_length=content_length, params=params,
        request_id=request_id), modifier1, modifier2)


def encode_request_packet(
    *,
    method: bytes,
    target: bytes,
    path: bytes,
    query: bytes,
    version: str,
    headers: Sequence[tuple[bytes, bytes]],
    remote_addr: bytes,
    remote_port: bytes,
    server_port: bytes,
    server_name: bytes,
    content_length: int | None,
    params: UwsgiParams = NO_PARAMS,
    modifier1: int = 0,
    modifier2: int = 0,
    request_id: bytes | None = None,
) -> bytes:
    """`encode_packet(build_vars(...))` in one pass: the same bytes, for a plain-HTTP
    request. With `uwsgi_param`s set it takes the two steps."""
    request = (method, target, path, query, version, headers, remote_addr, remote_port,
               server_port, server_name, content_length, request_id)
    packet = None
    if params.empty:
        shared = shared_vars(version, headers, remote_addr, remote_port, server_port,
                             server_name, request_id)
        if shared is not None:
            packet = packet_with(shared, method, target, path, query, content_length,
                                 modifier1, modifier2)
    if packet is None:  # a value of 4 KiB or more: the two steps encode it, or raise
        # VarsTooBig (with the size they report) for one a u16 cannot measure.
        return _in_two_steps(request, params, modifier1, modifier2)
    return packet


# What `shared_vars` returns: the CONTENT_TYPE value (its u16 and bytes), and the
# encoded vars from DOCUMENT_ROOT to the last HTTP_*.
SharedVars = tuple[bytes, bytes]


def shared_vars(version: str, headers: Sequence[tuple[bytes, bytes]], remote_addr: bytes,
                remote_port: bytes, server_port: bytes, server_name: bytes,
                request_id: bytes | None = None) -> SharedVars | None:
    """The part of a packet (no `uwsgi_param`s) that the requests of one client
    connection share while their header lines repeat: the header vars, CONTENT_TYPE,
    SERVER_NAME (from Host) and the connection's own. None if a value is 4 KiB or more.

    Kept per connection (workers/uwsgi.py), it spares a keep-alive client that sends
    the same headers again (most do) all of the per-header work.
    """
    content_type = None
    parts: list[bytes] = []
    joined: dict[bytes, bytes] = {}
    keys = _HEADER_KEYS.table
    for name, value in headers:
        key = keys.get(name)
        if key is None:
            var = _header_var(name)
            key = b"" if var is None else _key(var)
            _HEADER_KEYS.keep(name, key)
        if not key:
            continue
        if content_type is None and len(name) == 12 and name.lower() == b"content-type":
            content_type = value
        previous = joined.get(key)
        if previous is None:
            joined[key] = value
        else:  # build_vars: "; " for Cookie, ", " for the rest
            joined[key] = previous + (b"; " if key[2:] == b"HTTP_COOKIE" else b", ") + value
    if request_id is not None:  # build_vars: ours replaces the client's
        joined[_REQUEST_ID_KEY] = request_id
    if content_type is None:
        content_type = b""
    protocol = _PROTOCOLS.get(version) or b"HTTP/" + version.encode("ascii")
    u16 = _SHORT_U16
    try:
        parts.append(_SHARED_TEMPLATE % (
            u16[len(protocol)], protocol,
            u16[len(remote_addr)], remote_addr, u16[len(remote_port)], remote_port,
            u16[len(server_port)], server_port, u16[len(server_name)], server_name))
        for key, value in joined.items():
            parts += (key, u16[len(value)], value)
        return u16[len(content_type)] + content_type, b"".join(parts)
    except IndexError:
        return None


def packet_with(shared: SharedVars, method: bytes, target: bytes, path: bytes, query: bytes,
                content_length: int | None, modifier1: int, modifier2: int) -> bytes | None:
    """The whole packet: the request line's vars, then `shared`. None if a value is
    4 KiB or more. Raises VarsTooBig past the u16 datasize."""
    if b"#" in target:
        path, query = _without_fragment(path, query)
    length = b"" if content_length is None else b"%d" % content_length
    uri = target if target[:1] == b"/" else request_uri(target)
    path_info = document_uri(path)
    u16 = _SHORT_U16
    content_type, rest = shared
    try:
        block = _OWN_TEMPLATE % (
            u16[len(query)], query, u16[len(method)], method, content_type,
            u16[len(length)], length, u16[len(uri)], uri, u16[len(path_info)], path_info,
            rest)
    except IndexError:
        return None
    if len(block) > MAX_VARS_SIZE:
        raise VarsTooBig(len(block))
    return _pack_header(modifier1, len(block), modifier2) + block


# --- replies ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReplyHead:
    """A reply head as an HTTP/1.1 client should see it."""

    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    # The version on uWSGI's status line, or None for a CGI-style head.
    version: bytes | None = None

    def to_http(self) -> bytes:
        """The head rendered as `HTTP/1.x status reason` + headers + blank line."""
        lines = [b"HTTP/%s %d %s" % (self.version or b"1.1", self.status, self.reason)]
        lines.extend(name + b": " + value for name, value in self.headers)
        lines.append(b"\r\n")
        return b"\r\n".join(lines)


def find_head_end(buffer: bytes | bytearray) -> int:
    """The offset just past the blank line that ends a reply head, or -1.

    nginx accepts bare LF line ends from upstreams; so do we.
    """
    crlf = buffer.find(b"\r\n\r\n")
    lf = buffer.find(b"\n\n")
    if lf >= 0 and (crlf < 0 or lf < crlf):
        return lf + 2
    return crlf + 4 if crlf >= 0 else -1


def parse_reply_head(head: bytes) -> ReplyHead:
    """Parse a reply head (up to and including its blank line).

    A first line `HTTP/x.y NNN reason` is a status line. Anything else is a
    CGI-style head, as nginx's uwsgi module reads it: the status comes from
    `Status: 404 Not Found` (the header itself is not passed on), else 302
    when `Location` is present, else 200. Raises `BadReply` (502).
    """
    lines = head.rstrip(b"\r\n").split(b"\n")
    first = lines[0].rstrip(b"\r")
    version: bytes | None = None
    if first.startswith(b"HTTP/"):
        version, status, reason = _parse_status_line(first)
        header_lines = lines[1:]
    else:
        status, reason = 0, b""
        header_lines = lines
    headers: list[tuple[bytes, bytes]] = []
    for raw in header_lines:
        line = raw.rstrip(b"\r")
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            raise BadReply(f"uwsgi reply has a malformed header line {line[:100]!r}")
        value = value.strip(b" \t")
        if version is None and len(name) == 6 and name.lower() == b"status":
            # CGI-style: the Status header becomes the status line. After a
            # real status line nginx passes it on as any other header.
            status, reason = _parse_cgi_status(value)
            continue
        headers.append((name, value))
    if version is None and not status:
        has_location = any(name.lower() == b"location" for name, _ in headers)
        status = 302 if has_location else 200
    if not reason:
        reason = reason_phrase(status)
    return ReplyHead(status, reason, headers, version)


def _parse_status_line(line: bytes) -> tuple[bytes, int, bytes]:
    protocol, _, rest = line.partition(b" ")
    code, _, reason = rest.partition(b" ")
    version = protocol[5:]
    if len(version) != 3 or version[1:2] != b"." or not (version[:1] + version[2:]).isdigit():
        raise BadReply(f"uwsgi reply has a malformed status line {line[:100]!r}")
    if len(code) != 3 or not code.isdigit() or int(code) < 100:
        raise BadReply(f"uwsgi reply has a malformed status line {line[:100]!r}")
    return version, int(code), reason.strip()


def _parse_cgi_status(value: bytes) -> tuple[int, bytes]:
    code, _, reason = value.partition(b" ")
    if len(code) != 3 or not code.isdigit() or int(code) < 100:
        raise BadReply(f"uwsgi reply has a malformed Status header {value[:100]!r}")
    return int(code), reason.strip()
