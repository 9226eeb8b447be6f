"""The demo's HTTP upstream (standard library only).

    python demo/http_upstream.py PORT

  /          a short page saying where it came from, with links
  /ws-test   the WebSocket echo test page (demo/ws-test.html)
  /headers   the request headers as this upstream received them, to
             show what the proxy added: X-Forwarded-For, X-Real-IP, ...
"""

from __future__ import annotations

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

PAGE = (Path(__file__).parent / "ws-test.html").read_bytes()
INDEX = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>prefork-proxy demo</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 40em; margin: 3em auto">
<h1>prefork-proxy demo</h1>
<p>This page came from the demo's HTTP upstream, through the proxy.</p>
<ul>
<li><a href="/ws-test">/ws-test</a>: a WebSocket echo test, tunnelled through the proxy</li>
<li><a href="/headers">/headers</a>: the request headers the upstream received</li>
</ul>
</body></html>
"""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the proxy's upstream pool expects

    def do_GET(self) -> None:  # noqa: N802 - the http.server naming
        path = self.path.split("?")[0]
        if path == "/ws-test":
            self.answer(200, "text/html; charset=utf-8", PAGE)
        elif path == "/headers":
            lines = [f"{name}: {value}" for name, value in self.headers.items()]
            body = ("The request headers as this upstream received them:\n\n"
                    + "\n".join(lines) + "\n").encode("latin-1", "replace")
            self.answer(200, "text/plain; charset=latin-1", body)
        elif path == "/":
            self.answer(200, "text/html; charset=utf-8", INDEX)
        else:
            self.answer(404, "text/plain", b"not found\n")

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def answer(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # the proxy's access log already shows every request


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
