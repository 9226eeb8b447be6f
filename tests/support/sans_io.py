"""Driving the sans-IO cores with bytes alone, as workers/driver.py drives them.

Requests: `PiecesReader` feeds workers/http1.py's RequestReader the reads of
a client, given as a list of byte pieces (a piece longer than the driver's
read size is cut, as recv() would cut it): `head()` and `body()` are what
the driver's head and body phases make of them, `read_requests(pieces)` the
whole loop. When the pieces run out the client has closed (the driver's
EOF), or, with `then_wait`, it is still there and `WaitedForMore` says the
reader asked it for more.

Replies: `take_reply(pieces, method, closes)` feeds workers/exchange.py's
Reply the reads of an upstream, as the driver reads them (a head read of
HEAD_RECV_SIZE, then reads of up to READ_BATCH; a full read reads on), and
returns what went to the client, and whether the reply was whole and the
upstream connection could go back to the pool.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from workers.driver import READ_BATCH
from workers.errors import HttpError
from workers.exchange import HTTP_CODEC, HttpCodec, Reply, UwsgiCodec
from workers.http1 import HEAD_RECV_SIZE, NEED_MORE, RECV_SIZE, Request, RequestReader

CLOSED_MID_HEAD = "client closed the connection mid-request"  # as the driver answers


class WaitedForMore(Exception):
    """The reader asked a client that has sent everything for more bytes."""


class PiecesReader:
    """A RequestReader fed from `pieces`, the client's reads in order."""

    def __init__(self, *pieces: bytes, then_wait: bool = False) -> None:
        self.pieces = [piece for piece in pieces if piece]
        self.then_wait = then_wait
        self.reader = RequestReader()

    def recv(self, size: int) -> bytes:
        """The next read: b"" once the client has closed."""
        if not self.pieces:
            if self.then_wait:
                raise WaitedForMore()
            return b""
        piece = self.pieces.pop(0)
        if len(piece) > size:
            self.pieces.insert(0, piece[size:])
            piece = piece[:size]
        return piece

    def head(self) -> Request | None:
        """The next request head, or None when the client closed between requests
        (the driver's _wait_for_request, _client_readable and _take_head). A close
        once some of a request has come is a 400."""
        reader = self.reader
        reader.started = False
        # Idle, the next read is awaited; else what is queued is looked at first.
        if reader.idle:
            data = self.recv(HEAD_RECV_SIZE)
            if not data:
                return None
        else:
            data = b""
        in_head = True
        while True:
            if reader.leftover:
                data, reader.leftover = reader.leftover + data, b""
            request = reader.head_from(data)
            if request is not None:
                return request
            if not data and reader.between_messages and not reader.started:
                in_head = False  # nothing came after all: still idle
            data = self.recv(HEAD_RECV_SIZE)
            if not data:
                if in_head:
                    raise HttpError(400, CLOSED_MID_HEAD)
                return None
            in_head = True

    def body(self) -> bytes | None:
        """The next piece of the current request's (de-chunked) body; None at its end."""
        reader = self.reader
        while (piece := reader.body_event()) is NEED_MORE:
            reader.feed_body(self.recv(RECV_SIZE))
        return piece

    def whole_body(self, request: Request) -> bytes:
        if not request.has_body:
            return b""
        pieces = []
        while (piece := self.body()) is not None:
            pieces.append(piece)
        return b"".join(pieces)


def read_requests(*pieces: bytes) -> list[tuple[Request, bytes]]:
    """Every request in `pieces`, with its body, up to the client's clean close;
    an HttpError propagates."""
    reads = PiecesReader(*pieces)
    requests = []
    while (request := reads.head()) is not None:
        requests.append((request, reads.whole_body(request)))
    return requests


# -- replies ---------------------------------------------------------------------------

class ClientRequest:
    """The request a reply answers (by default an HTTP/1.1 GET)."""

    def __init__(self, method: bytes = b"GET", version: str = "1.1") -> None:
        self.method = method
        self.version = version
        self.target = b"/"


@dataclass
class TakenReply:
    """A reply fed to Reply: `sent` is what went to the client; `waits` says the
    reply is not whole and the upstream, still open, sent nothing more; `unread`
    is what the upstream sent after the read that ended the reply."""

    reply: Reply
    closes: bool
    sent: bytes = b""
    waits: bool = False
    unread: bytes = b""
    reads: list[tuple[int, bool]] = field(default_factory=list)  # (size, closed) fed

    @property
    def pooled(self) -> bool:
        """The upstream connection goes back to the pool: the reply said it may
        (an exact end, keep-alive both ways) and the pool's peek on release
        (workers/upstreams.py) finds neither bytes waiting nor the close."""
        return self.reply.reusable and not self.unread and not self.closes


def take_reply(pieces: list[bytes], method: bytes = b"GET", *, closes: bool,
               version: str = "1.1", keep_alive: bool = True,
               codec: HttpCodec | UwsgiCodec = HTTP_CODEC, packet_size: int = 0) -> TakenReply:
    """Feed the upstream's reads (`pieces`; then its close, if it `closes`) to a
    Reply, as the driver's _upstream_readable does, until the reply is whole (or
    the upstream has nothing more). An UpstreamError propagates, as the Reply
    raises it."""
    pending = [piece for piece in pieces if piece]
    reply = Reply(ClientRequest(method, version), keep_alive, codec, packet_size)
    taken = TakenReply(reply, closes)
    sent = []

    def recv(size: int) -> bytes | None:
        """b"" at the close, None when a read would wait."""
        if not pending:
            return b"" if closes else None
        piece = pending.pop(0)
        if len(piece) > size:
            pending.insert(0, piece[size:])
            piece = piece[:size]
        return piece

    # One wake-up: a read of HEAD_RECV_SIZE before the head, READ_BATCH after it;
    # a full read, or any read from a uwsgi server, reads on to READ_BATCH bytes.
    read_on = codec is not HTTP_CODEC
    while not reply.complete:
        want = READ_BATCH if reply.head_done else HEAD_RECV_SIZE
        data = recv(want)
        if data is None:
            taken.waits = True
            break
        batch, size, closed = [], 0, False
        while True:
            if not data:
                closed = True
                break
            batch.append(data)
            size += len(data)
            if size >= READ_BATCH or not (read_on or len(data) == want):
                break
            data = recv(READ_BATCH)
            if data is None:
                break
        data = b"".join(batch)
        taken.reads.append((len(data), closed))
        sent.append(reply.feed(data, closed))
        if closed and not reply.complete:  # (Reply raises for a reply cut short)
            raise AssertionError("the upstream closed and the reply is neither whole nor refused")
    taken.sent = b"".join(sent)
    taken.unread = b"".join(pending)
    return taken
