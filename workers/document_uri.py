"""nginx's `$document_uri`: the request path, percent-decoded and normalised.

Pure: bytes in, bytes out. nginx (`ngx_http_parse_complex_uri`) decodes
`%XX` escapes once, merges repeated slashes (`merge_slashes on`, the
default) and resolves `.` and `..` segments, including those that only
appear after decoding (`/a/%2e%2e/b` is `/b`, `/a%2Fb` is `/a/b`). A bad
escape, an encoded NUL or a `..` that climbs above the root makes nginx
answer 400, and so do we (`BadRequestPath`).
"""

from __future__ import annotations

from workers.errors import HttpError

_HEX = frozenset(b"0123456789abcdefABCDEF")


class BadRequestPath(HttpError):
    """The path cannot be decoded the way nginx decodes it: answer 400."""

    def __init__(self, path: bytes, why: str) -> None:
        super().__init__(400, f"bad request path {path[:200]!r}: {why}")


def document_uri(path: bytes) -> bytes:
    """Decode and normalise a request path (no query) as nginx's `$document_uri`."""
    # Fast path, the common case: nothing to decode, merge or resolve.
    if b"%" not in path and b"//" not in path and b"/." not in path:
        return path
    decoded = _percent_decode(path) if b"%" in path else path
    return _normalise(decoded, path)


def _percent_decode(path: bytes) -> bytes:
    pieces = path.split(b"%")
    out = [pieces[0]]
    for piece in pieces[1:]:
        # nginx: a '%' not followed by two hex digits is an invalid request.
        if len(piece) < 2 or piece[0] not in _HEX or piece[1] not in _HEX:
            raise BadRequestPath(path, "'%' is not followed by two hex digits")
        byte = bytes.fromhex(piece[:2].decode("ascii"))
        if byte == b"\x00":
            raise BadRequestPath(path, "an encoded NUL (%00)")
        out.append(byte)
        out.append(piece[2:])
    return b"".join(out)


def _normalise(decoded: bytes, original: bytes) -> bytes:
    if not decoded.startswith(b"/"):
        return decoded  # "*" (OPTIONS *) and the like: nothing to resolve
    segments: list[bytes] = []
    parts = decoded.split(b"/")
    last = len(parts) - 1
    for index, segment in enumerate(parts[1:], start=1):
        if segment == b"" or segment == b".":
            # merge_slashes; "." is dropped. A trailing "/" or "/." keeps the slash.
            if index == last:
                segments.append(b"")
            continue
        if segment == b"..":
            if not segments:
                raise BadRequestPath(original, "'..' climbs above the root")
            segments.pop()
            if index == last:
                segments.append(b"")
            continue
        segments.append(segment)
    return b"/" + b"/".join(segments)
