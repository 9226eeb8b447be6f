"""The one error type that carries the HTTP status to answer (h11's habit).

Pure code raises HttpError(400/413/431/502/504, why); the I/O layer turns it
into a short response and a log line, and never has to guess the status.
"""

from __future__ import annotations

from http import HTTPStatus

# The one table of reason phrases: the standard library's, with RFC 9110 §15's names
# where Python 3.11 still has RFC 7231's (3.13 renamed them too), so that the
# phrases do not change with the interpreter. Our own error pages and a uWSGI
# reply's `Status: 404` with no phrase both read it.
REASONS: dict[int, str] = {status.value: status.phrase for status in HTTPStatus} | {
    413: "Content Too Large",  # RFC 9110 §15.5.14
    414: "URI Too Long",  # §15.5.15
    416: "Range Not Satisfiable",  # §15.5.17
    422: "Unprocessable Content",  # §15.5.21
}
_REASON_BYTES = {status: phrase.encode("ascii") for status, phrase in REASONS.items()}


def reason_phrase(status: int) -> bytes:
    """The standard phrase of `status`, or b"" for a code with none (nginx then writes
    the status line with the code alone)."""
    return _REASON_BYTES.get(status, b"")


class HttpError(Exception):
    """Answer the client with `status`; `reason` goes to the error log."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class UpstreamError(HttpError):
    """The upstream failed (502) or timed out (504); `retryable` if nothing reached it
    that cannot be sent again. `cause` is one of metrics_board.FAILURE_CAUSES: the
    failure counters' label (the reply parsers raise the default, an invalid head)."""

    def __init__(self, status: int, reason: str, *, retryable: bool = False,
                 cause: str = "invalid_header") -> None:
        super().__init__(status, reason)
        self.retryable = retryable
        self.cause = cause
        self.logged = False  # its error-log line is written (once per failure)
        self.retry_after: int | None = None  # seconds, for a 503 (Retry-After)


# html.escape's table, without the html package (html.entities costs a worker
# about 0.3 MiB): a trusted client's own request id is its own text.
_HTML_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;",
                               "'": "&#x27;"})


def error_page(status: int, *, close: bool, request_id: str | None = None,
               retry_after: int | None = None) -> bytes:
    """A short, complete HTML response for `status`, as nginx sends; it names the
    request's id, never the cause (the cause goes to the error log, with that id)."""
    title = f"{status} {REASONS.get(status, 'Error')}"
    # A trusted client's own id is the client's text: escaped (workers/request_id.py).
    named = f"<p>request id {request_id.translate(_HTML_ESCAPES)}</p>" if request_id else ""
    body = (f"<html><head><title>{title}</title></head><body><h1>{title}</h1>{named}"
            "</body></html>\n")
    retry = f"Retry-After: {retry_after}\r\n" if retry_after is not None else ""
    head = (
        f"HTTP/1.1 {title}\r\nContent-Type: text/html\r\n"
        f"Content-Length: {len(body)}\r\n{retry}{'Connection: close' if close else ''}"
    )
    return (head.rstrip() + "\r\n\r\n" + body).encode("latin-1")  # the id was latin-1
