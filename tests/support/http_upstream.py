"""A real HTTP/1.1 upstream for the integration tests (run as a subprocess).

    python tests/support/http_upstream.py PORT

Every response is JSON unless a path asks otherwise:
  /echo...          method, path, headers, body length and sha256, connection number
  /bytes/N          N bytes with Content-Length, written in 64 KiB pieces
  /chunked/N        N bytes, chunked
  /slow/SECONDS     answers after a delay
  /http10/N         an HTTP/1.0 response with no length (ends at close)
  /status/CODE      an empty response with that status
  /not-modified     a 304 that carries the Content-Length of the full representation
  /bad-framing      a 200 with two different Content-Length headers (invalid)
  /hop-headers      a 200 carrying hop-by-hop headers the proxy must not relay
  /truncated/N      promises N bytes (Content-Length), sends half, then closes
  /extra-response   a complete 200 "ok", then 0.1 s later a second, unrequested
                    response ("poisoned") on the same connection (a broken upstream);
                    "/extra-response:sent" joins the stats paths once it is written
  /chunked-extra    a chunked "hello" and, in the same write, a second response
  /page/N           an HTML page with N subresources (<img src="/bytes/512?i=K">)
  /stats            {"connections": TCP connections accepted, "requests": requests
                    other than /stats, "paths": the last 100 of their paths}
Request bodies may be Content-Length or chunked; they are read and hashed.
"""

import hashlib
import http.server
import json
import socketserver
import sys
import threading
import time

CONNECTIONS = 0
REQUESTS = 0
PATHS: list[str] = []
LOCK = threading.Lock()
PIECE = b"x" * 65536


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # no 40 ms delayed-ACK stalls on keep-alive

    def setup(self):
        global CONNECTIONS
        with LOCK:
            CONNECTIONS += 1
            self.connection_number = CONNECTIONS
        super().setup()

    def log_message(self, *args):
        pass

    def read_body(self):
        digest, length = hashlib.sha256(), 0
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                remaining = size
                while remaining:
                    data = self.rfile.read(min(remaining, 1 << 20))
                    digest.update(data)
                    remaining -= len(data)
                length += size
                self.rfile.readline()
        else:
            remaining = int(self.headers.get("Content-Length") or 0)
            while remaining:
                data = self.rfile.read(min(remaining, 1 << 20))
                if not data:
                    break
                digest.update(data)
                length += len(data)
                remaining -= len(data)
        return length, digest.hexdigest()

    def send_json(self, status, value):
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle_any(self):
        global REQUESTS
        parts = self.path.split("?")[0].strip("/").split("/")
        kind = parts[0]
        if kind != "stats":
            with LOCK:
                REQUESTS += 1
                PATHS.append(self.path)
                del PATHS[:-100]
        length, sha = self.read_body()
        if kind == "bytes":
            size = int(parts[1])
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            if self.command != "HEAD":
                while size:
                    piece = PIECE[:min(size, len(PIECE))]
                    self.wfile.write(piece)
                    size -= len(piece)
            return
        if kind == "page":
            images = "".join(f'<img src="/bytes/512?i={index}">' for index in range(int(parts[1])))
            body = f"<!doctype html><html><body>{images}</body></html>".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if kind == "chunked":
            size = int(parts[1])
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            while size:
                piece = PIECE[:min(size, 10000)]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                size -= len(piece)
            self.wfile.write(b"0\r\n\r\n")
            return
        if kind == "http10":
            size = int(parts[1])
            self.wfile.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"y" * size)
            self.close_connection = True
            return
        if kind == "slow":
            time.sleep(float(parts[1]))
        if kind == "status":
            self.send_response(int(parts[1]))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if kind == "stats":
            with LOCK:
                stats = {"connections": CONNECTIONS, "requests": REQUESTS, "paths": PATHS[:]}
            self.send_json(200, stats)
            return
        if kind == "not-modified":
            self.wfile.write(b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\n'
                             b"Content-Length: 1234\r\n\r\n")
            return
        if kind == "hop-headers":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nConnection: X-Internal\r\n"
                             b"X-Internal: secret\r\nKeep-Alive: timeout=5\r\n"
                             b"Proxy-Authenticate: Basic\r\nTrailer: X-Checksum\r\n"
                             b"Upgrade: h2c\r\nX-Kept: yes\r\nContent-Length: 2\r\n\r\nok")
            return
        if kind == "chunked-extra":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"5\r\nhello\r\n0\r\n\r\n"
                             b"HTTP/1.0 200 OK\r\n\r\npoisoned")
            self.close_connection = True
            return
        if kind == "extra-response":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            time.sleep(0.1)
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\npoisoned")
            with LOCK:
                PATHS.append("/extra-response:sent")  # tests wait for this, not a delay
            self.close_connection = True
            return
        if kind == "truncated":
            size = int(parts[1])
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size
                             + b"t" * (size // 2))
            self.close_connection = True
            return
        if kind == "bad-framing":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"
                             b"Content-Length: 6\r\n\r\nhello!")
            self.close_connection = True
            return
        self.send_json(200, {
            "method": self.command,
            "path": self.path,
            "headers": [[name, value] for name, value in self.headers.items()],
            "body_length": length,
            "body_sha256": sha,
            "connection": self.connection_number,
        })

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = handle_any


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    request_queue_size = 1024


if __name__ == "__main__":
    Server(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
