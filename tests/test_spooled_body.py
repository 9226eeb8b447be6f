"""The spool for a chunked body sent whole: memory first, then a temp file."""

from __future__ import annotations

import os

from workers.spooled_body import SpooledBody


def test_a_small_body_stays_in_memory_and_goes_out_as_one_piece():
    body = SpooledBody(threshold=1000)
    body.write(b"a" * 300)
    body.write(b"b" * 300)
    assert not body.spilled and body.size == 600
    assert list(body.pieces_to_send()) == [b"a" * 300 + b"b" * 300]


def test_a_body_over_the_threshold_spills_to_a_temporary_file_intact():
    data = os.urandom(3 * 1024 * 1024 + 17)
    body = SpooledBody(threshold=1024 * 1024)
    for offset in range(0, len(data), 65_000):
        body.write(data[offset:offset + 65_000])
    assert body.spilled and body.size == len(data)
    assert body.memory_size == 0  # nothing kept in memory once spilled
    pieces = list(body.pieces_to_send())
    assert b"".join(pieces) == data
    assert max(map(len, pieces)) <= 65536  # read back a piece at a time
    body.close()
    assert body.file is None


def test_an_empty_body_has_no_piece():
    assert list(SpooledBody().pieces_to_send()) == []
