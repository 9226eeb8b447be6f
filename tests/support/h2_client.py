"""A blocking h2c client (prior knowledge) for the HTTP/2 tests, built on the `h2` package.

    client = H2Client(port)
    stream = client.request("GET", "/echo")
    replies = client.wait([stream])   # {stream_id: Reply(status, headers, body, reset)}

Bodies are sent as the windows allow; what arrives is acknowledged at once, so
the client reads as fast as the proxy sends.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events


@dataclass
class Reply:
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    ended: bool = False
    reset: int | None = None  # the RST_STREAM error code, if reset

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


class H2Client:
    def __init__(self, port: int, timeout: float = 10.0, raw_headers: bool = False,
                 preface_split: int = 0) -> None:
        """`raw_headers`: send header lists as written (malformed ones too);
        `preface_split`: send that many bytes of the preface, then the rest 0.1 s later."""
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.port = port
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding=None,
            validate_outbound_headers=not raw_headers,
            normalize_outbound_headers=not raw_headers))
        self.conn.initiate_connection()
        self.replies: dict[int, Reply] = {}
        self.bodies: dict[int, memoryview] = {}  # request bytes still to send
        self.terminated: h2.events.ConnectionTerminated | None = None
        self.remote_settings: dict = {}
        self.closed = False
        if preface_split:
            data = self.conn.data_to_send()
            self.sock.sendall(data[:preface_split])
            time.sleep(0.1)
            self.sock.sendall(data[preface_split:])
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, method: str, path: str, headers: list[tuple[str, str]] = (),
                body: bytes | None = None, authority: str | None = None) -> int:
        stream_id = self.conn.get_next_available_stream_id()
        fields = [(":method", method), (":scheme", "http"),
                  (":authority", authority or f"127.0.0.1:{self.port}"), (":path", path),
                  *headers]
        self.conn.send_headers(stream_id, [(k.encode(), v.encode()) for k, v in fields],
                               end_stream=body is None)
        self.replies[stream_id] = Reply()
        if body is not None:
            self.bodies[stream_id] = memoryview(body)
            self._send_bodies()
        self.flush()
        return stream_id

    def _send_bodies(self) -> None:
        for stream_id, rest in list(self.bodies.items()):
            while True:
                window = min(self.conn.local_flow_control_window(stream_id),
                             self.conn.max_outbound_frame_size)
                if window <= 0 and rest:
                    break
                piece, rest = rest[:window], rest[window:]
                self.conn.send_data(stream_id, bytes(piece), end_stream=not rest)
                if not rest:
                    del self.bodies[stream_id]
                    break
            if stream_id in self.bodies:
                self.bodies[stream_id] = rest

    def read_once(self) -> list:
        data = self.sock.recv(262144)
        if not data:
            self.closed = True
            return []
        return self.feed(data)

    def feed(self, data: bytes) -> list:
        events = self.conn.receive_data(data)
        for event in events:
            reply = self.replies.get(getattr(event, "stream_id", 0))
            if isinstance(event, h2.events.ResponseReceived):
                headers = list(event.headers)
                reply.status = int(dict(headers)[b":status"])
                reply.headers = headers
            elif isinstance(event, h2.events.DataReceived):
                if reply is not None:
                    reply.body += event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length,
                                                    event.stream_id)
            elif isinstance(event, h2.events.StreamEnded) and reply is not None:
                reply.ended = True
            elif isinstance(event, h2.events.StreamReset) and reply is not None:
                reply.reset = event.error_code
            elif isinstance(event, h2.events.RemoteSettingsChanged):
                self.remote_settings.update(
                    {code: setting.new_value for code, setting in event.changed_settings.items()})
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.terminated = event
        if self.bodies:
            self._send_bodies()
        self.flush()
        return events

    def wait(self, streams: list[int], timeout: float = 20.0) -> dict[int, Reply]:
        """Read until every stream in `streams` has ended or been reset."""
        deadline = time.monotonic() + timeout
        while not all(self.replies[s].ended or self.replies[s].reset is not None
                      for s in streams):
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting for HTTP/2 replies")
            if self.closed or self.terminated is not None:
                raise AssertionError(f"connection ended: {self.terminated}")
            self.read_once()
        return {s: self.replies[s] for s in streams}

    def get(self, path: str, **kw: object) -> Reply:
        stream_id = self.request("GET", path, **kw)
        return self.wait([stream_id])[stream_id]

    def read_until_closed(self, timeout: float = 10.0) -> None:
        """Read (replies, a GOAWAY) until the server closes the connection."""
        deadline = time.monotonic() + timeout
        while not self.closed:
            if time.monotonic() > deadline:
                raise AssertionError("the server did not close the connection")
            try:
                self.read_once()
            except (ConnectionResetError, BrokenPipeError):  # closed under our reply
                self.closed = True

    def close(self) -> None:
        self.sock.close()
