"""Many tunnels on one worker, and `worker_connections` as the cap.

A tunnel is one client connection (nginx counts the upstream side too; we
count client connections, which is what the pool bounds). At the cap a worker
stops accepting, so a new connection waits in the kernel's listen queue and is
served as soon as a slot frees, instead of being refused or reset.
"""

from __future__ import annotations

import asyncio
import resource
import socket
import sys

import psutil
import pytest
from websockets.asyncio.client import connect as async_connect
from websockets.sync.client import connect

from tests.support.processes import Process, free_port, wait_for
from tests.support.ws_raw import upgrade_request
from tests.support.ws_sockets import accept_queue
from tests.support.ws_upstream import proxy_config, start_ws_echo

TUNNELS = 1000
OPTIONS = {"compression": None, "open_timeout": 60, "close_timeout": 30, "ping_interval": None}


@pytest.fixture
def many_files():
    """Raise this process's descriptor limit; the proxy and upstream inherit it.

    1,000 tunnels hold 1,000 sockets here, 1,000 in the upstream and 2,000 in
    the worker, beyond the common default soft limit of 1,024.
    """
    needed = 2 * TUNNELS + 500
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {needed}: raise it (ulimit -Hn)")
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def _many_tunnels(url: str, worker) -> int:  # noqa: ANN001
    opening = asyncio.Semaphore(100)  # handshakes in flight; all tunnels stay open

    async def open_one():
        async with opening:
            return await async_connect(url, **OPTIONS)

    websockets = await asyncio.gather(*(open_one() for _ in range(TUNNELS)))
    try:
        sockets_in_worker = worker.num_fds()

        async def exchange(number: int, websocket) -> str:  # noqa: ANN001
            await websocket.send(f"tunnel {number}")
            return await asyncio.wait_for(websocket.recv(), 30)

        replies = await asyncio.gather(*(exchange(number, websocket)
                                         for number, websocket in enumerate(websockets)))
        assert replies == [f"tunnel {number}" for number in range(TUNNELS)]
    finally:
        await asyncio.gather(*(websocket.close() for websocket in websockets))
    assert all(websocket.close_code == 1000 for websocket in websockets)
    return sockets_in_worker


@pytest.mark.timeout(300)
def test_a_thousand_concurrent_tunnels_on_one_worker(many_files, start_proxy, started,
                                                     tmp_path):
    echo = start_ws_echo(started, tmp_path)
    proxy = start_proxy(proxy_config(echo.address, top=f"worker_connections = {TUNNELS + 100}"))
    (worker,) = proxy.workers()
    sockets_in_worker = asyncio.run(_many_tunnels(f"ws://127.0.0.1:{proxy.port}/", worker))
    assert sockets_in_worker >= 2 * TUNNELS  # every tunnel open at once, on this worker
    assert worker.is_running()


def test_at_the_cap_new_connections_wait_in_the_listen_queue(start_proxy, started, tmp_path):
    echo = start_ws_echo(started, tmp_path)
    proxy = start_proxy(proxy_config(echo.address, top="worker_connections = 2"))
    url = f"ws://127.0.0.1:{proxy.port}/"
    # The kernel completes the third handshake (no refusal), but the worker is full.
    with connect(url, **OPTIONS) as first, connect(url, **OPTIONS) as second, \
            socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as waiting:
        waiting.sendall(upgrade_request())
        wait_for(lambda: accept_queue(proxy.port) == 1,
                 message="the third connection to sit in the listen queue")
        waiting.setblocking(False)
        with pytest.raises(BlockingIOError):
            waiting.recv(1)  # not served yet
        second.send("the full worker still serves its tunnels")
        assert second.recv(timeout=10) == "the full worker still serves its tunnels"
        first.close()  # a slot frees: the worker accepts the waiting connection
        waiting.settimeout(10)
        answer = waiting.recv(65536)
        assert answer.startswith(b"HTTP/1.1 101"), answer
        assert accept_queue(proxy.port) == 0


def test_the_master_raises_its_soft_open_files_limit_for_its_workers(tmp_path, started):
    # systemd starts services with a soft limit of 1024; nginx has worker_rlimit_nofile.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 256:
        pytest.skip(f"needs a finite hard RLIMIT_NOFILE above 256, not {hard}")
    config = tmp_path / "proxy.toml"
    config.write_text(proxy_config("127.0.0.1:9").replace("{port}", str(free_port())))
    proxy = Process([sys.executable, "-m", "prefork_proxy", "-c", str(config)],
                    tmp_path / "proxy.log",
                    preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)))
    started.append(proxy)
    wait_for(lambda: " is serving" in proxy.log() or not proxy.alive(), timeout=15,
             message="the proxy to serve")
    workers = psutil.Process(proxy.pid).children()
    assert workers, proxy.log()
    for process in (psutil.Process(proxy.pid), *workers):
        assert process.rlimit(psutil.RLIMIT_NOFILE) == (hard, hard)
