"""The WebSocket load client (`python -m bench.ws_load MODE URL ...`), built on `websockets`.

No packaged tool fits WebSocket load, so this small bounded client does it.
Each mode prints one JSON line on stdout:

* echo: N tunnels, each sending a 32-byte message and waiting for its echo, in a
  loop; reports `round_trips_per_s` over all tunnels.
* idle: opens N tunnels, prints `{"open": n}`, then holds them without traffic
  for at most --hold seconds (the harness measures RSS meanwhile and kills it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

CONNECT = {"compression": None, "max_size": None, "ping_interval": None, "open_timeout": 30}


def report(result: dict[str, Any]) -> None:
    print(json.dumps(result), flush=True)


async def _open(url: str, count: int, concurrency: int) -> list[ClientConnection]:
    gate = asyncio.Semaphore(concurrency)

    async def one() -> ClientConnection | None:
        async with gate:
            try:
                return await connect(url, **CONNECT)
            except Exception:  # noqa: BLE001 - a tunnel that fails to open is counted
                return None

    opened = await asyncio.gather(*(one() for _ in range(count)))
    return [websocket for websocket in opened if websocket is not None]


async def echo(url: str, seconds: float, tunnels: int) -> None:
    websockets = await _open(url, tunnels, 50)
    if not websockets:
        raise RuntimeError(f"none of {tunnels} tunnels opened")
    message = b"x" * 32
    deadline = time.perf_counter() + seconds
    counts = [0] * len(websockets)

    async def loop(index: int, websocket: ClientConnection) -> None:
        while time.perf_counter() < deadline:
            await websocket.send(message)
            await websocket.recv()
            counts[index] += 1

    start = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(loop(i, ws) for i, ws in enumerate(websockets))),
                           timeout=seconds + 20)
    elapsed = time.perf_counter() - start
    await asyncio.gather(*(ws.close() for ws in websockets), return_exceptions=True)
    report({"round_trips_per_s": sum(counts) / elapsed, "tunnels": len(websockets)})


async def idle(url: str, tunnels: int, hold: float) -> None:
    websockets = await _open(url, tunnels, 100)
    report({"open": len(websockets), "failed": tunnels - len(websockets)})
    await asyncio.sleep(hold)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ws_load")
    parser.add_argument("mode", choices=["echo", "idle"])
    parser.add_argument("url")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--tunnels", type=int, default=100)
    parser.add_argument("--hold", type=float, default=120.0)
    args = parser.parse_args(argv)
    if args.mode == "echo":
        coroutine = echo(args.url, args.seconds, args.tunnels)
    else:
        coroutine = idle(args.url, args.tunnels, args.hold)
    try:
        asyncio.run(coroutine)
    except Exception as error:  # noqa: BLE001 - the harness reads the JSON line
        report({"error": f"{type(error).__name__}: {error}"})
        sys.exit(1)


if __name__ == "__main__":
    main()
