"""Send the same exact bytes to several proxies and see what each one's upstream got.

Each target is a proxy on a loopback port in front of its own
tests/support/recording_upstream.py. `probe_all(targets, data)` sends `data` on
a new connection to every target at once, reads until the proxy closes or
stays quiet, and returns one `Outcome` per target: the answers the client got
(which of them came from the upstream) and the records of every complete
request the upstream read meanwhile. "accept" means the upstream read at least
one request; "refuse" means it read none, whatever the client was told.
"""

from __future__ import annotations

import json
import select
import socket
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.processes import ROOT, Process, free_port, port_open, wait_for


class RecordingUpstream(Process):
    """tests/support/recording_upstream.py on a free port."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        super().__init__([sys.executable, str(ROOT / "tests/support/recording_upstream.py"),
                          str(self.port)], log_path)
        wait_for(lambda: port_open(self.port), message="the recording upstream to listen")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self, since: int = 0) -> dict:
        """{"records": [...], "count": N}: the requests read from number `since` on."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5.0) as sock:
            sock.sendall(b"GET /__log?since=%d HTTP/1.1\r\nHost: recorder\r\n"
                         b"Connection: close\r\n\r\n" % since)
            raw = b""
            while data := sock.recv(1 << 20):
                raw += data
        return json.loads(raw.partition(b"\r\n\r\n")[2])

    def count(self) -> int:
        return self.log(1 << 30)["count"]


@dataclass(frozen=True)
class Target:
    name: str
    port: int
    upstream: RecordingUpstream


@dataclass(frozen=True)
class Answer:
    """One answer as the client read it: `status` None when it was not HTTP/1.x."""

    status: int | None
    from_upstream: bool
    note: str = ""

    def __str__(self) -> str:
        text = str(self.status) if self.status is not None else self.note
        return text + ("(upstream)" if self.from_upstream else "")


@dataclass(frozen=True)
class Seen:
    """What identifies a request the upstream read; header names are compared apart."""

    method: str
    target: str
    host: str | None
    body_length: int
    body_sha256: str

    def __str__(self) -> str:
        body = f" body={self.body_length}" if self.body_length else ""
        return f"{self.method} {self.target} host={self.host}{body}"


@dataclass
class Outcome:
    answers: list[Answer]
    end: str  # "closed", "reset" or "quiet" (still open when we stopped reading)
    records: list[dict] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return "accept" if self.records else "refuse"

    @property
    def seen(self) -> Counter[Seen]:
        return Counter(seen_of(record) for record in self.records)

    def summary(self) -> str:
        answers = " ".join(map(str, self.answers)) or "-"
        seen = "; ".join(map(str, self.seen.elements())) or "nothing"
        return f"{self.verdict}: answers [{answers}] then {self.end}; upstream saw {seen}"


def seen_of(record: dict) -> Seen:
    """The identity of a recorded request: what two proxies must agree on."""
    hosts = [value for name, value in record["headers"] if name.lower() == "host"]
    # nginx forwards $host (lower-case, no port); the proxy passes Host as received.
    host = hosts[0].lower().rsplit(":", 1)[0] if hosts else None
    return Seen(record["method"], record["target"], host, record["body_length"],
                record["body_sha256"])


# The body is compared itself: how each proxy framed it (nginx buffers a chunked body
# and sends its Content-Length) is not a difference in what the upstream was told.
FRAMING = frozenset({"content-length", "transfer-encoding"})


def header_names(record: dict) -> frozenset[str]:
    """The header field names a request carried, lower-case, less its framing."""
    return frozenset(name.lower() for name, _ in record["headers"]) - FRAMING


# -- the client side -------------------------------------------------------------------

def exchange_raw(port: int, data: bytes, quiet: float, patience: float) -> tuple[bytes, str]:
    """Send `data`, then read until the server closes, or until it has said nothing for
    `quiet` seconds after its last byte (`patience` seconds when it has sent none)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5.0)
    raw, end = b"", "quiet"
    try:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the proxy closed before reading everything; its answer may be there
        deadline = time.monotonic() + patience
        while True:
            wait = (quiet if raw else max(0.0, deadline - time.monotonic()))
            if not select.select([sock], [], [], wait)[0]:
                break
            try:
                chunk = sock.recv(1 << 20)
            except ConnectionResetError:
                end = "reset"
                break
            if not chunk:
                end = "closed"
                break
            raw += chunk
    finally:
        sock.close()
    return raw, end


def parse_answers(raw: bytes) -> list[Answer]:
    """Split what a client read into answers, leniently: a reply a strict client would
    reject is still listed, with a note, so that it shows in the failure message."""
    answers: list[Answer] = []
    while raw:
        try:
            answer, raw = _one_answer(raw)
        except ValueError as error:
            answers.append(Answer(None, False, f"garbled ({error}) {raw[:20]!r}"))
            break
        if answer is not None:
            answers.append(answer)
        if answer is not None and answer.status is None:
            break
    return answers


def _one_answer(raw: bytes) -> tuple[Answer | None, bytes]:
    """The first answer in `raw` (None for a 1xx) and the bytes after it."""
    if not raw.startswith(b"HTTP/1."):
        return Answer(None, False, f"non-HTTP {raw[:12]!r}"), b""
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep:
        return Answer(None, False, "cut head"), b""
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if status < 200:
        return None, rest  # 100 Continue: the real answer follows
    answer = Answer(status, b"x-recorded" in headers)
    if status in (204, 304):
        return answer, rest
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        while True:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if not size:  # then trailer lines, if any, and a blank line
                if rest.startswith(b"\r\n"):
                    return answer, rest[2:]
                return answer, rest.partition(b"\r\n\r\n")[2]
            rest = rest[size + 2:]
    if b"content-length" in headers:
        return answer, rest[int(headers[b"content-length"]):]
    return answer, b""  # the body runs to the close


def probe_all(targets: list[Target], data: bytes, quiet: float = 0.5,
              patience: float = 2.5) -> dict[str, Outcome]:
    """Send `data` to every target at once; an Outcome for each, by target name."""
    before = {target.name: target.upstream.count() for target in targets}
    with ThreadPoolExecutor(len(targets)) as pool:
        exchanges = dict(zip([target.name for target in targets], pool.map(
            lambda target: exchange_raw(target.port, data, quiet, patience), targets),
            strict=True))
    outcomes = {}
    for target in targets:
        raw, end = exchanges[target.name]
        records = target.upstream.log(before[target.name])["records"]
        outcomes[target.name] = Outcome(parse_answers(raw), end, records)
    return outcomes


def unmatched(ours: Outcome, reference: Outcome) -> list[str]:
    """Requests our upstream read that the reference's upstream did not, each matched
    one to one; and header fields ours carried that the reference's matching request
    did not. Empty when ours saw nothing the reference did not."""
    problems = []
    remaining = list(reference.records)
    for record in ours.records:
        key = seen_of(record)
        candidates = [other for other in remaining if seen_of(other) == key]
        if not candidates:
            problems.append(f"request {key} never reached the reference's upstream")
            continue
        # The closest match: the reference request with the most of our header names.
        best = max(candidates, key=lambda other: len(header_names(other) & header_names(record)))
        remaining.remove(best)
        extra = header_names(record) - header_names(best)
        if extra:
            problems.append(f"request {key} carried {sorted(extra)}, which the reference's "
                            f"did not")
    return problems
