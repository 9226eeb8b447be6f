"""A burst of new connections is shared between the workers.

Every worker is woken for a new connection and the one already running wins
each accept, so without care a burst (a load balancer, wrk's start) all lands
on one worker. Each worker publishes its open connections in the scoreboard,
and one well above its least-loaded sibling leaves the next connection to it
(workers/acceptor.py, Worker.leaves_it_to_a_sibling).
"""

from __future__ import annotations

import socket
import time
from collections import Counter
from collections.abc import Callable

import psutil

from tests.support.processes import Proxy, wait_for

CONFIG = """
    workers = 2
    access_log = "off"
    [[server]]
    listen = ["127.0.0.1:{port}"]
      [[server.location]]
      path = "/"
      proxy_pass = "http://127.0.0.1:9"
"""


def _connections_by_worker(proxy: Proxy) -> Counter[int]:
    counts: Counter[int] = Counter()
    for worker in proxy.workers():
        for connection in worker.net_connections(kind="tcp"):
            if connection.laddr and connection.laddr.port == proxy.port \
                    and connection.status == psutil.CONN_ESTABLISHED:
                counts[worker.pid] += 1
    return counts


def test_a_burst_of_connections_is_shared(start_proxy: Callable[..., Proxy]) -> None:
    proxy = start_proxy(CONFIG)
    wait_for(lambda: len(proxy.workers()) == 2, 10, message="two workers")
    time.sleep(1.5)  # each worker has read its sibling's slot (once a second)
    clients = [socket.create_connection(("127.0.0.1", proxy.port)) for _ in range(60)]
    try:
        wait_for(lambda: sum(_connections_by_worker(proxy).values()) == 60, 10,
                 message="every connection accepted")
        counts = _connections_by_worker(proxy)
        assert len(counts) == 2 and min(counts.values()) >= 20, counts
    finally:
        for client in clients:
            client.close()
