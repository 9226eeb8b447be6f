"""`Tries`: which peer next after a failure, with a real Balancer and no I/O.

nginx's `proxy_next_upstream error timeout` (ngx_http_upstream_next), as
workers/exchange.py keeps it:

* a reused (pooled) connection that fails gets one free retry on a fresh
  connection to the same peer, uncounted (the upstream may have closed it
  while idle); not after a timeout, not for POST, LOCK or PATCH, and not once
  a byte of a streamed body was read (it is not kept);
* otherwise the failure counts against the peer and the next untried peer is
  chosen: NEXT_PEER, with `peer_index` None when none is left;
* once something that cannot be sent again went out (a POST, LOCK or PATCH,
  or streamed body bytes), the error is answered now (raised), unless it is
  retryable (a connect error: nothing reached the upstream).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.exchange_fixtures import CLIENT_IP, NOW, balancer
from workers.errors import UpstreamError
from workers.exchange import FREE_RETRY, NEXT_PEER, Tries


def tries(*specs: str, method: bytes = b"GET") -> Tries:
    made = Tries(balancer(*specs), CLIENT_IP, method)
    made.first(NOW)
    return made


def read_error() -> UpstreamError:
    return UpstreamError(502, "upstream closed the connection before a response",
                         cause="reset")


def connect_error() -> UpstreamError:
    return UpstreamError(502, "connect to 127.0.0.1:8000 failed: Connection refused",
                         retryable=True)


def fail(t: Tries, error: UpstreamError | None = None, *, reused: bool = False,
         body_started: bool = False, timed_out: bool = False) -> int:
    return t.failed(error or read_error(), reused, body_started, timed_out, NOW)


# -- the first peer ---------------------------------------------------------------------------

def test_the_first_peer_is_the_balancers_choice() -> None:
    b = balancer("a", "b")
    first = Tries(b, CLIENT_IP, b"GET").first(NOW)
    second = Tries(b, CLIENT_IP, b"GET").first(NOW)
    assert (first, second) == (0, 1)  # round robin across requests


def test_a_single_peer_is_always_first() -> None:
    t = Tries(balancer("a"), CLIENT_IP, b"GET")
    assert t.first(NOW) == 0 and t.peer_index == 0


def test_with_every_peer_down_there_is_no_first_peer() -> None:
    b = balancer("a", "b")
    b.failed(0, NOW)
    b.failed(1, NOW)
    t = Tries(b, CLIENT_IP, b"GET")
    assert t.first(NOW + 1) is None
    error = t.no_peer_error("upstreams in app")
    assert (error.status, error.reason) == (502, "no live upstreams in app")


# -- the free retry of a reused connection ----------------------------------------------------

@pytest.mark.parametrize("method", [b"GET", b"HEAD", b"PUT", b"DELETE", b"OPTIONS"])
def test_a_reused_connection_failing_gets_a_free_retry_on_the_same_peer(
        method: bytes) -> None:
    t = tries("a", "b", method=method)
    assert fail(t, reused=True) == FREE_RETRY
    assert t.peer_index == 0 and t.tried == set()
    assert t.free_retry is False  # the retry is on a fresh connection
    state = t.balancer.peers[0]
    assert (state.fails, state.down_until) == (0, 0.0)  # not counted against the peer
    assert t.last_error is None


def test_the_free_retry_is_given_once() -> None:
    t = tries("a", "b")
    assert fail(t, reused=True) == FREE_RETRY
    assert fail(t, reused=True) == NEXT_PEER
    assert t.peer_index == 1 and t.tried == {0}


def test_the_next_peer_gets_its_own_free_retry() -> None:
    t = tries("a", "b")
    assert fail(t, reused=True) == FREE_RETRY
    assert fail(t) == NEXT_PEER
    assert t.free_retry is True
    assert fail(t, reused=True) == FREE_RETRY
    assert t.peer_index == 1


def test_a_fresh_connection_failing_gets_no_free_retry() -> None:
    t = tries("a", "b")
    assert fail(t, reused=False) == NEXT_PEER
    assert t.peer_index == 1


def test_a_timeout_on_a_reused_connection_gets_no_free_retry() -> None:
    t = tries("a", "b")
    timeout = UpstreamError(504, "upstream timed out")
    assert fail(t, timeout, reused=True, timed_out=True) == NEXT_PEER
    assert t.peer_index == 1 and t.last_error is timeout


@pytest.mark.parametrize("method", [b"POST", b"LOCK", b"PATCH"])
def test_post_lock_and_patch_get_no_free_retry(method: bytes) -> None:
    t = tries("a", "b", method=method)
    error = read_error()
    with pytest.raises(UpstreamError) as raised:
        fail(t, error, reused=True)
    assert raised.value is error
    assert t.peer_index == 0


def test_no_free_retry_once_a_streamed_body_byte_was_read() -> None:
    t = tries("a", "b", method=b"PUT")
    error = read_error()
    with pytest.raises(UpstreamError) as raised:
        fail(t, error, reused=True, body_started=True)
    assert raised.value is error


# -- the next peer ----------------------------------------------------------------------------

def test_failures_walk_the_peers_then_there_is_none() -> None:
    t = tries("a", "b", "c")
    visited = [t.peer_index]
    for _ in range(2):
        assert fail(t) == NEXT_PEER
        visited.append(t.peer_index)
    assert visited == [0, 1, 2]
    assert fail(t) == NEXT_PEER
    assert t.peer_index is None and t.tried == {0, 1, 2}


def test_a_single_peer_failing_leaves_no_next_and_is_never_banned() -> None:
    t = tries("a")
    assert fail(t) == NEXT_PEER
    assert t.peer_index is None
    assert t.balancer.peers[0].down_until == 0.0
    assert Tries(t.balancer, CLIENT_IP, b"GET").first(NOW) == 0


def test_when_no_peer_is_left_the_last_error_answers() -> None:
    t = tries("a", "b")
    fail(t)
    timeout = UpstreamError(504, "upstream timed out")
    assert fail(t, timeout, timed_out=True) == NEXT_PEER
    assert t.peer_index is None
    assert t.no_peer_error("upstreams in app") is timeout


def test_a_failure_counts_against_its_peer() -> None:
    t = tries("a", "b")  # max_fails=1, fail_timeout=10s
    fail(t)
    assert t.balancer.peers[0].down_until == NOW + 10.0
    assert t.balancer.peers[1].down_until == 0.0
    # The next request does not choose the banned peer.
    assert Tries(t.balancer, CLIENT_IP, b"GET").first(NOW + 1) == 1


def test_a_success_clears_the_failures_of_its_peer_only() -> None:
    t = tries("a max_fails=3", "b max_fails=3")
    t.balancer.failed(1, NOW)  # b failed for an earlier request
    assert fail(t) == NEXT_PEER  # a fails: b now
    assert [state.fails for state in t.balancer.peers] == [1, 1]
    t.succeeded()
    assert [state.fails for state in t.balancer.peers] == [1, 0]


def test_a_backup_peer_is_tried_after_every_primary() -> None:
    t = tries("a", "b", "c backup")
    fail(t)
    fail(t)
    assert t.peer_index == 2
    fail(t)
    assert t.peer_index is None


# -- what cannot be sent twice ------------------------------------------------------------

@pytest.mark.parametrize("method", [b"POST", b"LOCK", b"PATCH"])
def test_a_post_that_fails_once_sent_raises_its_error(method: bytes) -> None:
    t = tries("a", "b", method=method)
    error = read_error()
    with pytest.raises(UpstreamError) as raised:
        fail(t, error)
    assert raised.value is error
    # Counted against the peer, and kept as the answer.
    assert t.balancer.peers[0].down_until == NOW + 10.0
    assert t.last_error is error and t.tried == set()


def test_a_post_timing_out_raises_the_504() -> None:
    t = tries("a", "b", method=b"POST")
    timeout = UpstreamError(504, "upstream timed out")
    with pytest.raises(UpstreamError) as raised:
        fail(t, timeout, timed_out=True)
    assert raised.value.status == 504


def test_streamed_body_bytes_stop_the_retry_of_any_method() -> None:
    t = tries("a", "b", method=b"PUT")
    with pytest.raises(UpstreamError):
        fail(t, body_started=True)


@pytest.mark.parametrize("method", [b"POST", b"LOCK", b"PATCH", b"GET"])
def test_a_connect_error_allows_the_next_peer_even_for_post(method: bytes) -> None:
    t = tries("a", "b", method=method)
    error = connect_error()
    assert fail(t, error) == NEXT_PEER
    assert t.peer_index == 1 and t.last_error is error
    assert fail(t, connect_error()) == NEXT_PEER
    assert t.peer_index is None


def test_a_connect_error_after_body_bytes_allows_the_next_peer() -> None:
    t = tries("a", "b", method=b"POST")
    assert fail(t, connect_error(), body_started=True) == NEXT_PEER
    assert t.peer_index == 1


def test_a_post_connect_error_then_a_read_error_raises() -> None:
    t = tries("a", "b", method=b"POST")
    assert fail(t, connect_error()) == NEXT_PEER
    error = read_error()
    with pytest.raises(UpstreamError) as raised:
        fail(t, error)
    assert raised.value is error


# -- properties -------------------------------------------------------------------------------

@settings(max_examples=200, deadline=None, database=None)
@given(peers=st.integers(1, 6), reused=st.lists(st.booleans(), min_size=20, max_size=20),
       timed_out=st.lists(st.booleans(), min_size=20, max_size=20))
def test_a_get_failing_everywhere_tries_each_peer_once_then_none(
        peers: int, reused: list[bool], timed_out: list[bool]) -> None:
    t = tries(*"abcdef"[:peers])
    visited = [t.peer_index]
    free_retries = 0
    for step in range(20):
        decision = fail(t, reused=reused[step], timed_out=timed_out[step])
        if decision == FREE_RETRY:
            assert reused[step] and not timed_out[step]
            free_retries += 1
            continue
        assert decision == NEXT_PEER
        if t.peer_index is None:
            break
        visited.append(t.peer_index)
    assert t.peer_index is None
    assert sorted(visited) == list(range(peers))  # each peer once, none skipped
    assert free_retries <= peers  # at most one per peer
