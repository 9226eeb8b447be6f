"""An HTTP/1.1 upstream that records every complete request it reads (run as a subprocess).

    python tests/support/recording_upstream.py PORT

Parity tests put one in front of each proxy under test and compare what each
upstream saw. A request is recorded once its head and its whole body (by
Content-Length or chunked) are read, so a request a proxy cut off half-way is
not counted as seen. Each record holds the method, the target as received, the
header fields in order and the body's length and sha256; `GET /__log?since=N`
returns the records from number N on (that query is not recorded). Every other
request gets a small JSON answer carrying `X-Recorded: <record number>`, so a
client can tell an answer that came from here from one a proxy made up.
Stdlib only: this file runs as a script, outside the test process.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import socketserver
import sys
import threading

RECORDS: list[dict] = []
LOCK = threading.Lock()


class Recorder(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args: object) -> None:
        pass

    def read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            pieces = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(pieces)
                pieces.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if len(body) < length:
            raise ConnectionError("the body ended early")
        return body

    def answer(self, value: object, number: int | None = None) -> None:
        data = json.dumps(value).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if number is not None:
            self.send_header("X-Recorded", str(number))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def handle_any(self) -> None:
        if self.path.startswith("/__log"):
            since = int(self.path.partition("since=")[2] or 0)
            with LOCK:
                self.answer({"records": RECORDS[since:], "count": len(RECORDS)})
            return
        try:
            body = self.read_body()
        except (ValueError, ConnectionError):
            self.close_connection = True  # incomplete: never seen as a request
            return
        record = {
            "method": self.command,
            "target": self.path,
            "headers": [[name, value] for name, value in self.headers.items()],
            "body_length": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
        }
        with LOCK:
            RECORDS.append(record)
            number = len(RECORDS) - 1
        self.answer({"record": number, "target": self.path}, number)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = handle_any


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    request_queue_size = 1024


if __name__ == "__main__":
    Server(("127.0.0.1", int(sys.argv[1])), Recorder).serve_forever()
