"""The one error type that carries the HTTP status to answer (h11's habit).

Pure code raises HttpError(400/413/431/502/504, why); the I/O layer turns it
into a short response and a log line, and never has to guess the status.
"""

from __future__ import annotations

REASONS = {
    100: "Continue", 101: "Switching Protocols", 200: "OK", 204: "No Content",
    301: "Moved Permanently", 302: "Found", 304: "Not Modified", 400: "Bad Request",
    403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
    411: "Length Required", 413: "Content Too Large", 414: "URI Too Long",
    417: "Expectation Failed", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout", 505: "HTTP Version Not Supported",
}


class HttpError(Exception):
    """Answer the client with `status`; `reason` goes to the error log."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class UpstreamError(HttpError):
    """The upstream failed (502) or timed out (504); `retryable` if nothing reached it
    that cannot be sent again."""

    def __init__(self, status: int, reason: str, *, retryable: bool = False) -> None:
        super().__init__(status, reason)
        self.retryable = retryable


def error_page(status: int, *, close: bool) -> bytes:
    """A short, complete HTML response for `status`, as nginx sends."""
    title = f"{status} {REASONS.get(status, 'Error')}"
    body = f"<html><head><title>{title}</title></head><body><h1>{title}</h1></body></html>\n"
    head = (
        f"HTTP/1.1 {title}\r\nContent-Type: text/html\r\n"
        f"Content-Length: {len(body)}\r\n{'Connection: close' if close else ''}"
    )
    return (head.rstrip() + "\r\n\r\n" + body).encode()
