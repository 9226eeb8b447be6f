"""Microbenchmark: the µs per peer pick, 3 peers, the board as 2 workers see it.

`python -m bench.peer_pick [OLD_BALANCING_PY]`: with a path, the same picks on
that (per-worker) balancing module too, for a before/after.
"""

from __future__ import annotations

import importlib.util
import sys
import time

from prefork_proxy.config import Peer, Upstream
from prefork_proxy.peer_board import PeerBoard
from prefork_proxy.values import Address
from workers.balancing import Balancer

PICKS = 200_000


def upstream(balance: str, options: dict) -> Upstream:
    peers = tuple(Peer(Address("127.0.0.1", 8000 + i), **options) for i in range(3))
    return Upstream(name="bench", peers=peers, balance=balance)


def per_pick(balancer: object) -> float:
    choose, tried, now = balancer.choose, set(), time.monotonic()
    start = time.perf_counter()
    for _ in range(PICKS):
        choose(tried, b"127.0.0.1", now)
    return (time.perf_counter() - start) / PICKS * 1e6


def main() -> None:
    old = None
    if len(sys.argv) > 1:
        spec = importlib.util.spec_from_file_location("old_balancing", sys.argv[1])
        old = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(old)
    for balance, options in (("round_robin", {}), ("least_conn", {}),
                             ("round_robin", {"max_conns": 100, "slow_start": 30.0})):
        board = PeerBoard(columns=512)
        board.claimed(1)
        board.claimed(2)  # two workers: columns 0..2 are read
        made = upstream(balance, options)
        new = per_pick(Balancer(made, board, column=1))
        line = f"{balance:12} {str(options or ''):40} shared {new:.2f} us/pick"
        if old is not None and not options:
            line += f", per-worker (before) {per_pick(old.Balancer(made)):.2f} us/pick"
        print(line)


if __name__ == "__main__":
    main()
