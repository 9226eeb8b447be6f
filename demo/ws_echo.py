"""The demo's WebSocket upstream: echoes every message (gevent-websocket).

    python demo/ws_echo.py PORT

Any path works; the proxy sends `/ws` here. Text comes back as text, binary
as binary. It runs in its own process, so it may use gevent freely.
"""

from __future__ import annotations

import sys

from gevent.pywsgi import WSGIServer
from geventwebsocket.exceptions import WebSocketError
from geventwebsocket.handler import WebSocketHandler


def echo_app(environ, start_response):  # noqa: ANN001, ANN201 - a WSGI app
    websocket = environ.get("wsgi.websocket")
    if websocket is None:
        body = b"This is a WebSocket echo server: connect with a WebSocket client.\n"
        start_response("426 Upgrade Required", [("Content-Type", "text/plain"),
                                                ("Content-Length", str(len(body))),
                                                ("Upgrade", "websocket")])
        return [body]
    try:
        while (message := websocket.receive()) is not None:
            websocket.send(message, binary=isinstance(message, bytes | bytearray))
    except WebSocketError:
        pass
    return []


def main() -> None:
    port = int(sys.argv[1])
    server = WSGIServer(("127.0.0.1", port), echo_app, handler_class=WebSocketHandler, log=None)
    server.serve_forever()


if __name__ == "__main__":
    main()
