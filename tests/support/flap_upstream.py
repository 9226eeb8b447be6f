"""An HTTP/1.1 upstream that may be killed and started again (run as a subprocess).

    python tests/support/flap_upstream.py PORT IDS_FILE

GET answers 200 "ok PORT"; a POST's body is its id: the id is appended to
IDS_FILE (one line, one write) before the 200 goes out, so after any number of
kills the file says which POSTs reached an application, and how many times.
Used by tests/test_upstream_flap.py and bench/upstream_flap.py. Stdlib only.
"""

from __future__ import annotations

import http.server
import os
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self._answer(b"ok %d" % self.server.server_port)

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        os.write(self.server.ids, body.strip() + b"\n")  # O_APPEND: one line per write
        self._answer(b"ok " + body)


def main() -> None:
    port, ids_path = int(sys.argv[1]), sys.argv[2]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.ids = os.open(ids_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    server.serve_forever()


if __name__ == "__main__":
    main()
