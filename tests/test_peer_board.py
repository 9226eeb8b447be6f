"""The peer board: upstream peer state shared by every worker (prefork_proxy/peer_board.py).

Each worker writes only its own column; counts summed over columns are exact
under concurrent processes; a ban by one worker is seen by the others at their
next pick; a dead worker's column is zeroed with its ban kept; unchanged peers
keep their slot and state across a reload; max_conns is a host-wide limit;
slow_start ramps a recovered peer's weight.
"""

from __future__ import annotations

import collections
import os

import pytest

from prefork_proxy.peer_board import PeerBoard
from tests.support.exchange_fixtures import upstream
from workers.balancing import Balancer, slow_start_weight

pytestmark = pytest.mark.timeout(60)

NOW = 1000.0
ROUNDS = 10_000


def shared(columns: int = 8) -> PeerBoard:
    board = PeerBoard(columns=columns, peers=16)
    for column in range(1, columns):
        board.claimed(column)
    return board


def worker_view(board: PeerBoard, column: int, *specs: str,
                balance: str = "round_robin") -> Balancer:
    """What the worker of `column` makes of upstream "test" (peers on 127.0.0.1:8000...)."""
    return Balancer(upstream(*specs, name="test", balance=balance), board, column)


def in_children(count: int, work) -> None:
    """Run work(column) in `count` forked processes (columns 1..count); all must exit 0."""
    pids = []
    for column in range(1, count + 1):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                work(column)
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0


# -- exact counts across processes ---------------------------------------------------

def test_four_processes_counting_connections_leave_exact_sums() -> None:
    board = shared()

    def work(column: int) -> None:
        peers = worker_view(board, column, "a", "b").peers
        for _ in range(ROUNDS):
            assert peers[0].acquire()
            assert peers[1].acquire()
            peers[0].release()
            peers[1].release()
        for _ in range(column):  # and leave `column` open on a
            peers[0].acquire()

    in_children(4, work)
    view = worker_view(board, 5, "a", "b")
    assert board.total_conns(view.peers[0].slot) == 1 + 2 + 3 + 4
    assert board.total_conns(view.peers[1].slot) == 0


def test_max_conns_is_never_exceeded_host_wide() -> None:
    board = shared()
    over = board.latency  # a child records an overshoot in the latency cell of peer 15

    def work(column: int) -> None:
        peer = worker_view(board, column, "a max_conns=2").peers[0]
        got = 0
        for _ in range(ROUNDS // 4):
            if peer.acquire():
                got += 1
                if board.total_conns(peer.slot) > 2:
                    over[15] = 1.0
                peer.release()
        assert got > 0

    in_children(4, work)
    assert over[15] == 0.0


# -- a ban, least_conn, a dead worker ---------------------------------------------------

def test_a_ban_by_one_worker_is_seen_by_another_at_its_next_pick() -> None:
    board = shared()
    first, second = (worker_view(board, column, "a", "b", "c") for column in (1, 2))
    assert first.failed(0, NOW) is True  # max_fails=1: banned for fail_timeout (10 s)
    assert {second.choose(set(), b"127.0.0.1", NOW + 1) for _ in range(10)} == {1, 2}
    assert second.peers[0].down_until == NOW + 10.0
    assert second.choose(set(), b"127.0.0.1", NOW + 10.5) is not None
    assert 0 in {second.choose(set(), b"127.0.0.1", NOW + 10.5) for _ in range(3)}


def test_max_fails_count_every_workers_failures_within_fail_timeout() -> None:
    board = shared()
    views = [worker_view(board, column, "a max_fails=3", "b max_fails=3") for column in (1, 2, 3)]
    assert views[0].failed(0, NOW) is False
    assert views[1].failed(0, NOW + 1) is False
    assert views[2].failed(0, NOW + 2) is True  # the third host-wide
    assert views[0].peers[0].down_until == NOW + 2 + 10.0


def test_failures_older_than_fail_timeout_do_not_count() -> None:
    board = shared()
    views = [worker_view(board, column, "a max_fails=2", "b") for column in (1, 2)]
    assert views[0].failed(0, NOW) is False
    assert views[1].failed(0, NOW + 11) is False  # the first one's window has passed
    assert views[1].peers[0].down_until == 0.0


def test_least_conn_counts_every_workers_connections() -> None:
    board = shared()
    first, second = (worker_view(board, column, "a", "b", balance="least_conn")
                     for column in (1, 2))
    assert first.choose(set(), b"127.0.0.1", NOW) == 0
    assert first.peers[0].acquire()  # a slow request on a, through worker 1
    assert second.choose(set(), b"127.0.0.1", NOW) == 1  # worker 2 sends to b
    first.peers[0].release()
    assert {second.choose(set(), b"127.0.0.1", NOW) for _ in range(2)} == {0, 1}


def test_a_dead_workers_column_is_zeroed_and_its_ban_kept() -> None:
    board = shared()
    dying, living = (worker_view(board, column, "a", "b") for column in (3, 1))
    dying.peers[1].acquire()
    assert dying.failed(0, NOW)
    board.retire(3, in_use=2)
    assert board.in_use() == 2
    assert board.total_conns(living.peers[1].slot) == 0
    assert living.peers[0].down_until == NOW + 10.0  # folded into column 0
    assert living.choose(set(), b"127.0.0.1", NOW + 1) == 1


# -- slots across a reload -------------------------------------------------------------

def test_a_reload_keeps_unchanged_peers_slots_and_state() -> None:
    board = PeerBoard(columns=4, peers=8)
    board.claimed(1)
    board.assign([("app", "127.0.0.1:8000"), ("app", "127.0.0.1:8001")], 1, alive=set())
    a, b = board.slots[("app", "127.0.0.1:8000")], board.slots[("app", "127.0.0.1:8001")]
    board.words[a * 4 + 1] = 12345
    board.conns[b * 4 + 1] = 1  # a generation-1 request still open on b
    # Generation 2 drops b and adds c, while generation 1 still drains.
    board.assign([("app", "127.0.0.1:8000"), ("app", "127.0.0.1:8002")], 2, alive={1})
    c = board.slots[("app", "127.0.0.1:8002")]
    assert board.slots[("app", "127.0.0.1:8000")] == a
    assert board.words[a * 4 + 1] == 12345  # its state survives
    assert c not in (a, b)  # b's slot is not reused while generation 1 lives
    assert board.conns[b * 4 + 1] == 1
    # Generation 1 is gone: b's slot is free, and the next new peer gets it zeroed.
    board.assign([("app", "127.0.0.1:8000"), ("app", "127.0.0.1:8002"),
                  ("other", "127.0.0.1:9000")], 3, alive={2})
    assert ("app", "127.0.0.1:8001") not in board.slots
    d = board.slots[("other", "127.0.0.1:9000")]
    assert d == b and board.conns[b * 4 + 1] == 0


# -- max_conns ---------------------------------------------------------------------------

def test_a_peer_at_max_conns_is_skipped_and_comes_back_when_one_closes() -> None:
    board = shared()
    first, second = (worker_view(board, column, "a max_conns=1", "b") for column in (1, 2))
    assert first.peers[0].acquire()
    assert {second.choose(set(), b"127.0.0.1", NOW) for _ in range(4)} == {1}
    assert second.peers[0].acquire() is False
    first.peers[0].release()
    assert 0 in {second.choose(set(), b"127.0.0.1", NOW) for _ in range(2)}


def test_when_every_peer_is_full_the_request_may_wait_for_room() -> None:
    board = shared()
    view = worker_view(board, 1, "a max_conns=1")
    assert not view.single  # a lone peer with max_conns is still chosen with care
    assert view.choose(set(), b"127.0.0.1", NOW) == 0
    assert view.peers[0].acquire()
    assert view.choose(set(), b"127.0.0.1", NOW) is None
    assert view.waits_for_room(set())
    view.peers[0].release()
    assert not view.waits_for_room(set())


# -- slow_start ---------------------------------------------------------------------------

def test_slow_start_weight_ramps_linearly_from_almost_nothing() -> None:
    assert slow_start_weight(4, 0, 30_000) == pytest.approx(0.04)
    assert slow_start_weight(4, 7_500, 30_000) == pytest.approx(1.0)
    assert slow_start_weight(4, 15_000, 30_000) == pytest.approx(2.0)
    assert slow_start_weight(4, 30_000, 30_000) == 4


def test_a_recovered_peer_gets_its_share_back_over_slow_start() -> None:
    view = worker_view(shared(), 1, "a slow_start=30", "b")
    assert view.failed(0, NOW)  # banned until NOW + 10
    back = NOW + 10
    halfway = collections.Counter(view.choose(set(), b"1.2.3.4", back + 15) for _ in range(300))
    assert halfway == {0: 100, 1: 200}  # weight 0.5 against 1
    later = collections.Counter(view.choose(set(), b"1.2.3.4", back + 31) for _ in range(300))
    assert later == {0: 150, 1: 150}


def test_a_peer_that_was_never_down_has_its_full_weight() -> None:
    view = worker_view(shared(), 1, "a slow_start=30", "b")
    counts = collections.Counter(view.choose(set(), b"1.2.3.4", NOW) for _ in range(100))
    assert counts == {0: 50, 1: 50}
