"""A real WebSocket upstream for the tests: the `websockets` package's server.

    python -m tests.support.ws_echo_server PORT

Every text or binary message is echoed back unchanged. A few paths and
messages script the server's side of a test:

  text "close CODE [REASON]"   the server closes with that code (e.g. 4001)
  path /headers                the first message is the handshake's request
                               headers as JSON [[name, value], ...]
  path /ping/SECONDS           the server pings every SECONDS and echoes as usual
                               (pings from the upstream are tunnel traffic too)

The server itself never pings unless asked, and compression is off, so what
crosses the tunnel is exactly what a test sends. Message size is unbounded
(the 16 MB test), and the backlog is large (the 1,000-tunnel test).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed


async def pinger(websocket: ServerConnection, interval: float) -> None:
    with contextlib.suppress(ConnectionClosed):
        while True:
            await asyncio.sleep(interval)
            await websocket.ping()


async def handle(websocket: ServerConnection) -> None:
    path = websocket.request.path
    tasks = []
    if path == "/headers":
        await websocket.send(json.dumps(list(websocket.request.headers.raw_items())))
    elif path.startswith("/ping/"):
        tasks.append(asyncio.create_task(pinger(websocket, float(path.split("/")[2]))))
    try:
        async for message in websocket:
            if isinstance(message, str) and message.startswith("close "):
                code, _, reason = message[6:].partition(" ")
                await websocket.close(int(code), reason)
                return
            await websocket.send(message)
    except ConnectionClosed:
        pass
    finally:
        for task in tasks:
            task.cancel()


async def main(port: int) -> None:
    async with serve(handle, "127.0.0.1", port, compression=None, max_size=None,
                     ping_interval=None, backlog=4096):
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
