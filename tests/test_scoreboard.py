"""The scoreboard's slots: layout, single-writer fields, retired totals, sharing."""

from __future__ import annotations

import os

import pytest

from prefork_proxy.scoreboard import (
    COUNTER_NAMES,
    DRAINING,
    FREE,
    READY,
    RETIRED,
    STARTING,
    Scoreboard,
)


def test_claim_fills_identity_and_never_hands_out_the_retired_slot():
    board = Scoreboard(slots=4)
    index = board.claim(number=3, generation=7, now=100.0)
    assert index != RETIRED
    slot = board.read(index)
    assert (slot.pid, slot.number, slot.generation, slot.state) == (-1, 3, 7, STARTING)
    assert slot.started == slot.heartbeat == 100.0
    board.set_pid(index, 4242)
    assert board.read(index).pid == 4242


def test_each_field_reads_back_what_its_writer_wrote():
    board = Scoreboard(slots=2)
    index = board.claim(1, 1, 5.0)
    counters = (11, 2, 1, 3000, 4000, 5)
    board.beat(index, 9.5, counters)
    board.set_state(index, READY)
    board.set_usage(index, 123 << 20, 4.25)
    slot = board.read(index)
    assert slot.heartbeat == 9.5 and slot.state == READY
    assert tuple(getattr(slot, name) for name in COUNTER_NAMES) == counters
    assert (slot.rss, slot.cpu) == (123 << 20, 4.25)
    assert (slot.number, slot.generation, slot.started) == (1, 1, 5.0)  # untouched


def test_release_keeps_totals_monotonic_and_frees_the_slot():
    board = Scoreboard(slots=4)
    first = board.claim(1, 1, 0.0)
    board.set_pid(first, 10)
    board.beat(first, 1.0, (100, 3, 1, 1000, 2000, 4))
    before = board.totals()
    board.release(first)
    after = board.totals()
    assert board.read(first).state == FREE and board.read(first).pid == 0
    # Counters carry over to the retired slot; the gauges (open connections and
    # tunnels) die with the worker.
    assert after == {**before, "connections": 0, "tunnels": 0}
    second = board.claim(1, 2, 2.0)
    assert second == first  # a freed slot is reused
    board.beat(second, 3.0, (5, 0, 0, 10, 20, 0))
    assert board.totals()["requests"] == 105


def test_a_full_scoreboard_says_so():
    board = Scoreboard(slots=3)
    board.claim(1, 1, 0.0)
    board.claim(2, 1, 0.0)
    with pytest.raises(RuntimeError, match="full"):
        board.claim(3, 1, 0.0)


def test_live_slots_lists_claimed_slots_only():
    board = Scoreboard(slots=5)
    a, b = board.claim(1, 1, 0.0), board.claim(2, 1, 0.0)
    board.release(a)
    assert [slot.index for slot in board.live_slots()] == [b]


def test_a_forked_worker_writes_what_the_master_reads():
    board = Scoreboard(slots=2)
    index = board.claim(1, 1, 0.0)
    pid = os.fork()
    if pid == 0:  # the "worker": writes its own slot only
        board.beat(index, 42.0, (7, 0, 0, 0, 0, 0))
        board.set_state(index, DRAINING)
        os._exit(0)
    os.waitpid(pid, 0)
    slot = board.read(index)
    assert (slot.heartbeat, slot.requests, slot.state) == (42.0, 7, DRAINING)
