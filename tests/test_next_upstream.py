"""`next_upstream` per location: `Tries` with each policy, bytes and clocks alone.

nginx's proxy_next_upstream (ngx_http_upstream_next, ngx_http_upstream_test_next):
a failure goes on to the next peer only when its kind is listed; a listed reply
status is discarded only while another try is possible, else it is the answer;
next_upstream_tries counts every try, the first included; next_upstream_timeout
runs from the first try's start; POST, LOCK and PATCH are sent again only with
`non_idempotent`. error, timeout and invalid_header always count against
max_fails; a listed status counts when it sends the request on.
"""

from __future__ import annotations

import pytest

from prefork_proxy.next_upstream import NextUpstream, parse_next_upstream
from tests.support.exchange_fixtures import CLIENT_IP, NOW, balancer
from workers.errors import UpstreamError
from workers.exchange import FREE_RETRY, NEXT_PEER, Tries

pytestmark = pytest.mark.timeout(30)

ERROR = UpstreamError(502, "upstream closed the connection before a response", cause="reset")
TIMEOUT = UpstreamError(504, "read timed out", cause="read_timeout")
INVALID = UpstreamError(502, "upstream sent an invalid response")  # cause invalid_header
REFUSED = UpstreamError(502, "connect failed: Connection refused", retryable=True,
                        cause="refused")


def tries(values: list[str], *specs: str, method: bytes = b"GET", limit: int = 0,
          time_limit: float = 0.0) -> Tries:
    policy = parse_next_upstream(values)
    policy = NextUpstream(**{**policy.__dict__, "tries": limit, "time_limit": time_limit})
    made = Tries(balancer(*(specs or ("a", "b", "c"))), CLIENT_IP, method, policy)
    made.first(NOW)
    return made


def fail(t: Tries, error: UpstreamError, *, reused: bool = False,
         body_started: bool = False, now: float = NOW) -> int:
    return t.failed(error, reused, body_started, False, now)


# -- the kinds of failure ---------------------------------------------------------------------

@pytest.mark.parametrize(("values", "error", "goes_on"), [
    (["error", "timeout"], ERROR, True),
    (["error", "timeout"], TIMEOUT, True),
    (["error", "timeout"], INVALID, False),
    (["error"], TIMEOUT, False),
    (["timeout"], ERROR, False),
    (["timeout"], REFUSED, False),
    (["invalid_header"], INVALID, True),
    (["invalid_header"], ERROR, False),
    (["http_503"], ERROR, False),
    (["off"], ERROR, False),
    (["off"], REFUSED, False),
    (["off"], TIMEOUT, False),
])
def test_a_failure_goes_to_the_next_peer_only_when_its_kind_is_listed(
        values: list[str], error: UpstreamError, goes_on: bool) -> None:
    t = tries(values)
    if goes_on:
        assert fail(t, error) == NEXT_PEER and t.peer_index == 1
    else:
        with pytest.raises(UpstreamError) as raised:
            fail(t, error)
        assert raised.value is error


@pytest.mark.parametrize("values", [["off"], ["error", "timeout"], ["http_503"]])
@pytest.mark.parametrize("error", [ERROR, TIMEOUT, INVALID, REFUSED])
def test_error_timeout_and_invalid_header_always_count_against_max_fails(
        values: list[str], error: UpstreamError) -> None:
    t = tries(values)
    try:
        fail(t, error)
    except UpstreamError:
        pass
    assert t.balancer.peers[0].down_until == NOW + 10.0


def test_the_free_retry_of_a_pooled_connection_is_an_error_try() -> None:
    assert fail(tries(["error"]), ERROR, reused=True) == FREE_RETRY
    with pytest.raises(UpstreamError):
        fail(tries(["off"]), ERROR, reused=True)  # nginx: off retries nothing


# -- non_idempotent ---------------------------------------------------------------------------

@pytest.mark.parametrize("method", [b"POST", b"LOCK", b"PATCH"])
def test_a_sent_post_goes_on_only_with_non_idempotent(method: bytes) -> None:
    with pytest.raises(UpstreamError):
        fail(tries(["error", "timeout"], method=method), ERROR)
    assert fail(tries(["error", "non_idempotent"], method=method), ERROR) == NEXT_PEER
    assert fail(tries(["error", "non_idempotent"], method=method), ERROR,
                reused=True) == FREE_RETRY


def test_a_post_that_reached_no_upstream_goes_on_without_non_idempotent() -> None:
    assert fail(tries(["error"], method=b"POST"), REFUSED) == NEXT_PEER


def test_a_streamed_body_is_never_sent_again_even_with_non_idempotent() -> None:
    t = tries(["error", "non_idempotent", "http_503"], method=b"POST")
    with pytest.raises(UpstreamError):
        fail(t, ERROR, body_started=True)
    assert not tries(["http_503", "non_idempotent"], method=b"POST").try_next_after_status(
        503, True, NOW)


# -- next_upstream_tries and next_upstream_timeout ----------------------------------------------

def test_next_upstream_tries_counts_every_try_the_first_included() -> None:
    t = tries(["error"], limit=2)
    assert fail(t, ERROR) == NEXT_PEER  # the second try
    with pytest.raises(UpstreamError):
        fail(t, ERROR)  # a third is not made
    assert t.tried == {0}


def test_next_upstream_tries_limits_connect_errors_too() -> None:
    t = tries(["error"], limit=2)
    assert fail(t, REFUSED) == NEXT_PEER
    with pytest.raises(UpstreamError):
        fail(t, REFUSED)


def test_a_free_retry_is_not_counted_as_a_try() -> None:
    t = tries(["error"], limit=2)
    assert fail(t, ERROR, reused=True) == FREE_RETRY
    assert fail(t, ERROR) == NEXT_PEER


def test_next_upstream_timeout_runs_from_the_first_try() -> None:
    t = tries(["error"], time_limit=5.0)
    assert fail(t, ERROR, now=NOW + 4.9) == NEXT_PEER
    with pytest.raises(UpstreamError):
        fail(t, ERROR, now=NOW + 5.0)


def test_no_limits_walk_every_peer() -> None:
    t = tries(["error"])
    assert [fail(t, ERROR) for _ in range(3)] == [NEXT_PEER] * 3
    assert t.peer_index is None  # then the last error answers


# -- reply statuses ---------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["http_500", "http_502", "http_503", "http_504", "http_429"])
def test_each_status_value_lists_its_status(value: str) -> None:
    status = int(value[5:])
    t = tries([value])
    assert t.statuses == frozenset({status})
    assert t.try_next_after_status(status, False, NOW) and t.peer_index == 1


def test_the_default_lists_no_status() -> None:
    assert Tries(balancer("a", "b"), CLIENT_IP, b"GET").statuses == frozenset()


def test_a_discarded_status_counts_against_its_peer() -> None:
    t = tries(["http_503"])
    assert t.try_next_after_status(503, False, NOW)
    assert t.balancer.peers[0].down_until == NOW + 10.0


def test_with_no_peer_left_the_last_status_is_the_answer_and_not_a_failure() -> None:
    t = tries(["http_503"])
    assert t.try_next_after_status(503, False, NOW)
    assert t.try_next_after_status(503, False, NOW)
    assert not t.try_next_after_status(503, False, NOW)
    assert t.peer_index == 2 and t.balancer.peers[2].down_until == 0.0


def test_a_status_respects_the_tries_limit_and_the_time_limit() -> None:
    t = tries(["http_503"], limit=2)
    assert t.try_next_after_status(503, False, NOW)
    assert not t.try_next_after_status(503, False, NOW)
    t = tries(["http_503"], time_limit=1.0)
    assert not t.try_next_after_status(503, False, NOW + 1.0)


def test_a_post_status_goes_on_only_with_non_idempotent() -> None:
    assert not tries(["http_502"], method=b"POST").try_next_after_status(502, False, NOW)
    assert tries(["http_502", "non_idempotent"], method=b"POST").try_next_after_status(
        502, False, NOW)


def test_a_single_peer_status_is_the_answer() -> None:
    t = tries(["http_503"], "a")
    assert not t.try_next_after_status(503, False, NOW)
