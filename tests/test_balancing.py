"""Choosing a peer, as nginx's upstream module does (workers/balancing.py).

Smooth weighted round robin interleaves (weights 5,1,1 give a a b a c a a);
backup peers serve only while every primary is unusable; max_fails failures
within fail_timeout ban a peer for fail_timeout; a single peer is never down;
least_conn picks the lowest conns/weight; ip_hash keys on an IPv4 /24.
"""

from __future__ import annotations

import collections

from tests.support.exchange_fixtures import upstream
from workers.balancing import Balancer

NOW = 1000.0


def balancer(*specs: str, balance: str = "round_robin") -> Balancer:
    """balancer("a weight=5", "b", "c backup") with peer names a, b, c..."""
    return Balancer(upstream(*specs, name="test", balance=balance))


def name(index: int | None) -> str | None:
    return None if index is None else "abcdefgh"[index]


def picks(b: Balancer, count: int, client_ip: bytes = b"127.0.0.1", now: float = NOW) -> str:
    return " ".join(name(b.choose(set(), client_ip, now)) for _ in range(count))


# -- smooth weighted round robin ---------------------------------------------------

def test_smooth_weighted_round_robin_matches_nginx_for_weights_5_1_1() -> None:
    b = balancer("a weight=5", "b weight=1", "c weight=1")
    assert picks(b, 7) == "a a b a c a a"
    assert picks(b, 7) == "a a b a c a a"  # and the cycle repeats


def test_equal_weights_take_turns() -> None:
    assert picks(balancer("a", "b", "c"), 6) == "a b c a b c"


def test_weights_2_1_interleave_rather_than_burst() -> None:
    assert picks(balancer("a weight=2", "b"), 6) == "a b a a b a"


def test_each_peer_gets_its_weighted_share() -> None:
    b = balancer("a weight=3", "b weight=2", "c weight=1")
    counts = collections.Counter(picks(b, 600).split())
    assert counts == {"a": 300, "b": 200, "c": 100}


def test_a_retry_skips_the_peers_already_tried() -> None:
    b = balancer("a", "b", "c")
    assert name(b.choose({0}, b"127.0.0.1", NOW)) in ("b", "c")
    assert name(b.choose({0, 1}, b"127.0.0.1", NOW)) == "c"
    assert b.choose({0, 1, 2}, b"127.0.0.1", NOW) is None


# -- backup ----------------------------------------------------------------------------

def test_backup_is_never_chosen_while_a_primary_is_up() -> None:
    b = balancer("a", "b", "c backup")
    assert "c" not in picks(b, 20).split()


def test_backup_serves_once_every_primary_is_down() -> None:
    b = balancer("a", "b", "c backup")
    assert b.failed(0, NOW) and b.failed(1, NOW)
    assert picks(b, 3) == "c c c"


def test_backup_serves_a_retry_once_every_primary_was_tried() -> None:
    b = balancer("a", "b", "c backup")
    assert name(b.choose({0, 1}, b"127.0.0.1", NOW)) == "c"


def test_primaries_return_after_their_ban_and_backup_stops_serving() -> None:
    b = balancer("a fail_timeout=10", "b fail_timeout=10", "c backup")
    b.failed(0, NOW)
    b.failed(1, NOW)
    assert picks(b, 1, now=NOW + 5) == "c"
    assert set(picks(b, 4, now=NOW + 10.5).split()) == {"a", "b"}


def test_with_every_peer_down_there_is_no_choice() -> None:
    b = balancer("a", "b", "c backup")
    for index in range(3):
        b.failed(index, NOW)
    assert b.choose(set(), b"127.0.0.1", NOW + 1) is None


# -- passive health: max_fails / fail_timeout ------------------------------------------

def test_one_failure_bans_a_peer_by_default_for_10_seconds() -> None:
    b = balancer("a", "b")
    assert b.failed(0, NOW) is True
    assert picks(b, 4, now=NOW + 9.9) == "b b b b"
    assert "a" in picks(b, 4, now=NOW + 10.1).split()


def test_max_fails_failures_within_fail_timeout_ban_a_peer() -> None:
    b = balancer("a max_fails=3 fail_timeout=30", "b")
    assert b.failed(0, NOW) is False
    assert b.failed(0, NOW + 10) is False
    assert "a" in picks(b, 4, now=NOW + 10).split()  # two failures: still up
    assert b.failed(0, NOW + 20) is True
    assert picks(b, 4, now=NOW + 21) == "b b b b"


def test_failures_spread_wider_than_fail_timeout_do_not_ban() -> None:
    b = balancer("a max_fails=2 fail_timeout=10", "b")
    assert b.failed(0, NOW) is False
    assert b.failed(0, NOW + 11) is False  # the first one has left the window
    assert b.failed(0, NOW + 12) is True


def test_the_ban_lasts_fail_timeout_and_then_live_requests_probe_the_peer() -> None:
    b = balancer("a fail_timeout=30", "b")
    b.failed(0, NOW)
    assert "a" not in picks(b, 10, now=NOW + 29).split()
    assert "a" in picks(b, 2, now=NOW + 31).split()
    # A failed probe bans it again for a whole fail_timeout.
    assert b.failed(0, NOW + 31) is True
    assert "a" not in picks(b, 10, now=NOW + 60).split()


def test_max_fails_zero_never_marks_a_peer_down() -> None:
    b = balancer("a max_fails=0", "b")
    for second in range(50):
        assert b.failed(0, NOW + second) is False
    assert "a" in picks(b, 2).split()


def test_a_success_resets_the_failure_count() -> None:
    b = balancer("a max_fails=2 fail_timeout=30", "b")
    b.failed(0, NOW)
    b.succeeded(0)
    assert b.failed(0, NOW + 1) is False


def test_a_single_peer_is_never_marked_down() -> None:
    b = balancer("a")
    for second in range(10):
        assert b.failed(0, NOW + second) is False
    assert picks(b, 3, now=NOW + 10) == "a a a"


def test_a_single_peer_is_tried_once_per_request() -> None:
    b = balancer("a")
    assert b.choose({0}, b"127.0.0.1", NOW) is None


# -- least_conn ---------------------------------------------------------------------------

def test_least_conn_picks_the_peer_with_fewest_connections() -> None:
    b = balancer("a", "b", "c", balance="least_conn")
    b.peers[0].conns, b.peers[1].conns, b.peers[2].conns = 3, 1, 2
    assert picks(b, 3) == "b b b"


def test_least_conn_divides_connections_by_weight() -> None:
    b = balancer("a weight=4", "b", balance="least_conn")
    b.peers[0].conns, b.peers[1].conns = 3, 1  # 0.75 against 1.0
    assert picks(b, 2) == "a a"


def test_least_conn_ties_go_round_robin() -> None:
    b = balancer("a", "b", "c", balance="least_conn")
    b.peers[0].conns, b.peers[1].conns, b.peers[2].conns = 1, 1, 5
    assert picks(b, 4) == "a b a b"


def test_least_conn_skips_a_banned_peer() -> None:
    b = balancer("a", "b", balance="least_conn")
    b.peers[1].conns = 10
    b.failed(0, NOW)
    assert picks(b, 2) == "b b"


# -- ip_hash ------------------------------------------------------------------------------

def test_ip_hash_sends_one_slash_24_to_one_peer() -> None:
    b = balancer("a", "b", "c", "d", balance="ip_hash")
    for network in range(20):
        chosen = {name(b.choose(set(), f"10.0.{network}.{host}".encode(), NOW))
                  for host in (1, 2, 77, 254)}
        assert len(chosen) == 1, (network, chosen)


def test_ip_hash_is_stable_across_calls_and_spreads_networks_over_peers() -> None:
    b = balancer("a", "b", "c", balance="ip_hash")
    first = [b.choose(set(), f"192.168.{n}.9".encode(), NOW) for n in range(60)]
    again = [b.choose(set(), f"192.168.{n}.9".encode(), NOW) for n in range(60)]
    assert first == again
    assert set(first) == {0, 1, 2}


def test_ip_hash_follows_nginxs_hash_of_the_first_three_octets() -> None:
    # ngx_http_upstream_ip_hash_module.c: hash starts at 89; for each of the three
    # octets hash = (hash * 113 + octet) % 6271; the peer is hash % total weight.
    def nginx_pick(octets: tuple[int, int, int], peers: int) -> int:
        value = 89
        for octet in octets:
            value = (value * 113 + octet) % 6271
        return value % peers

    b = balancer("a", "b", "c", "d", "e", balance="ip_hash")
    for octets in [(10, 0, 0), (192, 168, 1), (172, 16, 254), (8, 8, 8), (1, 2, 3)]:
        ip = ".".join(map(str, octets)).encode() + b".1"
        assert b.choose(set(), ip, NOW) == nginx_pick(octets, 5), octets


def test_ip_hash_rehashes_past_a_peer_that_is_down_and_stays_stable() -> None:
    b = balancer("a", "b", "c", balance="ip_hash")
    usual = b.choose(set(), b"10.9.8.7", NOW)
    b.failed(usual, NOW)
    moved = b.choose(set(), b"10.9.8.7", NOW + 1)
    assert moved is not None and moved != usual
    assert b.choose(set(), b"10.9.8.200", NOW + 1) == moved
    assert b.choose(set(), b"10.9.8.7", NOW + 20) == usual  # back after the ban


def test_ip_hash_uses_the_whole_ipv6_address() -> None:
    b = balancer("a", "b", "c", "d", balance="ip_hash")
    chosen = {b.choose(set(), f"2001:db8::{n:x}".encode(), NOW) for n in range(64)}
    assert len(chosen) > 1


def test_ip_hash_retries_go_round_robin_over_the_rest() -> None:
    b = balancer("a", "b", "c", balance="ip_hash")
    first = b.choose(set(), b"10.1.1.1", NOW)
    second = b.choose({first}, b"10.1.1.1", NOW)
    assert second is not None and second != first
