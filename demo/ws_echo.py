"""The demo's WebSocket upstream: echoes every message (the `websockets` package).

    python demo/ws_echo.py PORT

Any path works; the proxy sends `/ws` here. Text comes back as text, binary
as binary, and a close frame is answered with the same code, as RFC 6455 §5.5.1
asks. A plain HTTP request gets 426 Upgrade Required.
"""

from __future__ import annotations

import asyncio
import sys

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed


async def echo(websocket: ServerConnection) -> None:
    try:
        async for message in websocket:
            await websocket.send(message)
    except ConnectionClosed:
        pass


async def main(port: int) -> None:
    # The server pings every 20 s (the library's default): traffic that keeps an
    # idle tab's tunnel inside the proxy's read_timeout, as nginx recommends.
    async with serve(echo, "127.0.0.1", port, max_size=1 << 24):
        await asyncio.Future()


if __name__ == "__main__":
    try:
        asyncio.run(main(int(sys.argv[1])))
    except KeyboardInterrupt:
        pass
