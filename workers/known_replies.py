"""Reply heads the callback lane answered before, kept by their bytes.

An upstream answers many requests with the very same head: the same status,
type and length (a health check, a redirect, a fixed-size document, the seed's
hello world). Parsing a head and building the client's copy of it cost the
lane more than the rest of its work on a small reply, so both are kept for the
heads seen last: a head seen again costs one dict lookup. The parse is a pure
function of the bytes, so a kept head gives exactly what parsing it again would.

Only heads with their own Content-Length are kept (the lane's one-send case,
whose client head depends on nothing else); others are parsed every time.
"""

from __future__ import annotations

from workers.response_head import ResponseHead

# The table is bounded in bytes: the heads, their parses' header lines and the
# client heads kept may take BUDGET bytes, and at most _LIMIT heads are kept.
# Past either, the table starts over (a stream of heads that never repeat, such
# as varying lengths, costs one insert each).
BUDGET = 128 * 1024
_LIMIT = 64
# A longer head (cookies, long headers) is too unlikely to repeat to be worth its memory.
_MAX_HEAD = 1024


class KnownReplies:
    """head bytes -> (the parsed head, the head sent to the client)."""

    __slots__ = ("heads", "size")

    def __init__(self) -> None:
        self.heads: dict[bytes, tuple[ResponseHead, bytes]] = {}
        self.size = 0  # bytes kept: heads, their header lines, client heads

    def add(self, head: bytes, response: ResponseHead, client_head: bytes) -> None:
        """Keep `head`'s parse; `response` must not be changed afterwards."""
        if len(head) > _MAX_HEAD:
            return
        heads = self.heads
        size = len(head) + len(response.lines) + len(client_head)
        if len(heads) >= _LIMIT or self.size + size > BUDGET:
            heads.clear()
            self.size = 0
        heads[head] = (response, client_head)
        self.size += size


known_replies = KnownReplies()
