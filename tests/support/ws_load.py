"""WebSocket load for `ws_measure`: bulk throughput, echo round trips, idle tunnels.

Each function drives one proxy (or the upstream itself) and returns a figure;
all loops are bounded by a duration or a count.

* `bulk_raw`: one tunnel, 1 MiB frames sent back to back by one thread while
  another counts the echo (`ws_raw` peers: the tunnel is the bottleneck).
* `echo_raw`: N tunnels, each sending a 32-byte frame and waiting for its echo.
* `bulk_websockets` / `echo_websockets`: the same with the `websockets`
  package at both ends (`ws_echo_server`), as an application would see it.
* `open_idle`: N handshaken tunnels held open with no traffic.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time

from websockets.asyncio.client import connect

from tests.support.ws_raw import binary_frame, handshake

CONNECT = {"compression": None, "max_size": None, "ping_interval": None, "open_timeout": 60}
MB = 1e6


def bulk_raw(port: int, seconds: float, frame_size: int = 1 << 20) -> float:
    """Echoed MB/s through one tunnel (each byte crosses it twice)."""
    frame = binary_frame(frame_size)
    sock = handshake(port)
    sent = 0
    done_sending = threading.Event()
    received = 0

    def send() -> None:
        nonlocal sent
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            sock.sendall(frame)
            sent += len(frame)
        done_sending.set()

    buffer = bytearray(1 << 20)
    start = time.perf_counter()
    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        while not (done_sending.is_set() and received >= sent):
            count = sock.recv_into(buffer)
            if not count:
                raise ConnectionError("tunnel closed during the bulk run")
            received += count
        elapsed = time.perf_counter() - start
    finally:
        sender.join(seconds + 30)
        sock.close()
    return received / elapsed / MB


def echo_raw(port: int, tunnels: int, seconds: float) -> float:
    """Round trips per second over `tunnels` tunnels, 32-byte frames, one in flight each."""
    frame = binary_frame(32)
    sockets = [handshake(port) for _ in range(tunnels)]
    try:
        return asyncio.run(_echo_raw(sockets, frame, seconds))
    finally:
        for sock in sockets:
            sock.close()


async def _echo_raw(sockets: list[socket.socket], frame: bytes, seconds: float) -> float:
    count = 0
    size = len(frame)
    deadline = time.perf_counter() + seconds

    async def one(sock: socket.socket) -> None:
        nonlocal count
        sock.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=sock)
        while time.perf_counter() < deadline:
            writer.write(frame)
            await reader.readexactly(size)
            count += 1
        writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(one(sock) for sock in sockets))
    return count / (time.perf_counter() - start)


def bulk_websockets(port: int, seconds: float, size: int = 1 << 20, window: int = 4) -> float:
    """Echoed MB/s of 1 MiB binary messages, `window` in flight, `websockets` at both ends."""
    return asyncio.run(_bulk_websockets(f"ws://127.0.0.1:{port}/", seconds, size, window))


async def _bulk_websockets(url: str, seconds: float, size: int, window: int) -> float:
    payload = os.urandom(size)
    async with connect(url, **CONNECT) as websocket:
        await websocket.send(payload)  # warm the path before the clock starts
        await websocket.recv()
        in_flight = asyncio.Semaphore(window)
        echoed = 0
        start = time.perf_counter()
        deadline = start + seconds
        sent = 0

        async def receive() -> None:
            nonlocal echoed
            while True:
                echoed += len(await websocket.recv())
                in_flight.release()
                if echoed >= sent and time.perf_counter() >= deadline:
                    return

        receiver = asyncio.create_task(receive())
        while time.perf_counter() < deadline:
            await in_flight.acquire()
            sent += size
            await websocket.send(payload)
        await receiver
        return echoed / (time.perf_counter() - start) / MB


def echo_websockets(port: int, tunnels: int, seconds: float) -> float:
    """Round trips per second over `tunnels` tunnels, `websockets` at both ends."""
    return asyncio.run(_echo_websockets(f"ws://127.0.0.1:{port}/", tunnels, seconds))


async def _echo_websockets(url: str, tunnels: int, seconds: float) -> float:
    connections = [await connect(url, **CONNECT) for _ in range(tunnels)]
    count = 0
    message = b"x" * 32
    deadline = time.perf_counter() + seconds

    async def one(websocket) -> None:  # noqa: ANN001
        nonlocal count
        while time.perf_counter() < deadline:
            await websocket.send(message)
            await websocket.recv()
            count += 1

    start = time.perf_counter()
    await asyncio.gather(*(one(websocket) for websocket in connections))
    elapsed = time.perf_counter() - start
    await asyncio.gather(*(websocket.close() for websocket in connections))
    return count / elapsed


def open_idle(port: int, count: int) -> list[socket.socket]:
    """`count` tunnels through the proxy, handshaken and then left silent."""
    sockets = []
    try:
        for _ in range(count):
            sockets.append(handshake(port))
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets
