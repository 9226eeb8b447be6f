"""The spool for a chunked body uWSGI must get whole: memory first, then a temp file."""

from __future__ import annotations

import os

from workers.spooled_body import SpooledBody


def collect(body: SpooledBody, first: bytes = b"") -> bytes:
    sent: list[bytes] = []
    body.send(lambda data: sent.append(bytes(data)), first)
    return b"".join(sent)


def test_a_small_body_stays_in_memory_and_goes_out_in_one_send_with_the_packet():
    body = SpooledBody(threshold=1000)
    body.write(b"a" * 300)
    body.write(b"b" * 300)
    sent: list[bytes] = []
    body.send(sent.append, b"PACKET")
    assert not body.spilled and body.size == 600
    assert sent == [b"PACKET" + b"a" * 300 + b"b" * 300]


def test_a_body_over_the_threshold_spills_to_a_temporary_file_intact():
    data = os.urandom(3 * 1024 * 1024 + 17)
    body = SpooledBody(threshold=1024 * 1024)
    for offset in range(0, len(data), 65_000):
        body.write(data[offset:offset + 65_000])
    assert body.spilled and body.size == len(data)
    assert body.memory_size == 0  # nothing kept in memory once spilled
    assert collect(body, b"PACKET") == b"PACKET" + data
    body.close()
    assert body.file is None


def test_an_empty_body_sends_only_the_packet():
    assert collect(SpooledBody(), b"PACKET") == b"PACKET"
