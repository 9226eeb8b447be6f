"""The WebSocket upstream: the `websockets` package's echo server (`python -m bench.ws_echo PORT`).

Compression is off and message size unbounded, as for the load client, so the
run measures byte moving, not deflate.
"""

from __future__ import annotations

import asyncio
import sys

from websockets.asyncio.server import ServerConnection, serve


async def echo(websocket: ServerConnection) -> None:
    async for message in websocket:
        await websocket.send(message)


async def serve_forever(port: int) -> None:
    async with serve(
        echo,
        "127.0.0.1",
        port,
        compression=None,
        max_size=None,
        ping_interval=None,
        backlog=4096,
    ):
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(serve_forever(int(sys.argv[1])))
