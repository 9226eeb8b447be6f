"""Request ids (workers/request_id.py), from bytes alone: the id's form, whose own id
is kept, what goes upstream (proxy_pass head, uwsgi vars), the error page, the JSON
access-log line, and the error log's process names (prefork_proxy/logs.py)."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from prefork_proxy import logs
from prefork_proxy.values import Address
from tests.support.exchange_fixtures import CLIENT_IP, location, request
from workers.access_log import AccessLog
from workers.errors import error_page
from workers.exchange import http_request_head
from workers.request_id import TrustedClients, assign, client_request_id, new_id
from workers.uwsgi_packet import build_vars

OURS = b"0123456789abcdef0123456789abcdef"
LOCATION = location()
PLAIN = b"GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: forged\r\nAccept: */*\r\n\r\n"
# A body sends the head to llhttp, and the header pairs builder.
WITH_BODY = (b"POST / HTTP/1.1\r\nHost: a\r\nx-request-id: forged\r\nContent-Length: 2\r\n"
             b"\r\nhi")


def networks(*texts: str) -> list:
    return [ipaddress.ip_network(text) for text in texts]


# -- the id ------------------------------------------------------------------------------

def test_an_id_is_32_hex_digits_of_a_random_uuid() -> None:
    ids = [new_id() for _ in range(600)]  # across more than one random block
    assert len(set(ids)) == len(ids)
    for text in ids:
        assert re.fullmatch(r"[0-9a-f]{32}", text)
        made = uuid.UUID(text)
        assert (made.version, made.variant) == (4, uuid.RFC_4122)


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    new_id()  # the parent holds a block of random bytes
    reading, writing = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(writing, new_id().encode())
        os._exit(0)
    os.close(writing)
    os.waitpid(pid, 0)
    child = os.read(reading, 64).decode()
    os.close(reading)
    assert child != new_id()


# -- whose own id is kept --------------------------------------------------------------

def test_no_trusted_networks_trust_nobody() -> None:
    assert not TrustedClients(()).trusts("127.0.0.1")


def test_a_trusted_address_is_decided_once_and_remembered() -> None:
    trusted = TrustedClients(networks("10.0.0.0/8", "::1/128"))
    assert trusted.trusts("10.1.2.3") and trusted.trusts("::1")
    assert not trusted.trusts("192.0.2.1") and not trusted.trusts("unix:")
    assert trusted.known == {"10.1.2.3": True, "::1": True, "192.0.2.1": False, "unix:": False}


def test_an_ipv4_client_on_an_ipv6_listener_is_its_ipv4_address() -> None:
    assert TrustedClients(networks("10.0.0.0/8")).trusts("::ffff:10.0.0.7")


@pytest.mark.parametrize("raw", [PLAIN, WITH_BODY], ids=["header lines", "header pairs"])
def test_the_clients_id_is_found_whatever_the_case_of_its_name(raw: bytes) -> None:
    assert client_request_id(request(raw)) == b"forged"
    assert client_request_id(request(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")) is None


def connection(trusted: bool) -> SimpleNamespace:
    return SimpleNamespace(keeps_request_id=trusted, request_id=None, forwarded_request_id=None)


def test_an_untrusted_clients_id_is_replaced() -> None:
    conn = connection(trusted=False)
    assign(conn, request(PLAIN))
    assert conn.request_id != "forged" and re.fullmatch(r"[0-9a-f]{32}", conn.request_id)
    assert conn.forwarded_request_id == conn.request_id.encode()


def test_a_trusted_clients_id_is_kept_and_its_header_passes() -> None:
    conn = connection(trusted=True)
    assign(conn, request(PLAIN))
    assert (conn.request_id, conn.forwarded_request_id) == ("forged", None)


def test_a_trusted_client_without_an_id_gets_one() -> None:
    conn = connection(trusted=True)
    assign(conn, request(b"GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id:  \r\n\r\n"))
    assert re.fullmatch(r"[0-9a-f]{32}", conn.request_id)
    assert conn.forwarded_request_id == conn.request_id.encode()


# -- upstream ----------------------------------------------------------------------------

@pytest.mark.parametrize("raw", [PLAIN, WITH_BODY], ids=["header lines", "header pairs"])
def test_our_id_replaces_the_clients_header_upstream(raw: bytes) -> None:
    head, _ = http_request_head(request(raw), LOCATION, CLIENT_IP, None, OURS)
    assert b"forged" not in head
    assert head.count(b"X-Request-Id: ") == 1
    assert b"X-Forwarded-Host: a\r\nX-Request-Id: " + OURS + b"\r\n" in head


@pytest.mark.parametrize("raw", [PLAIN, WITH_BODY], ids=["header lines", "header pairs"])
def test_without_our_id_the_clients_header_passes_as_any_header(raw: bytes) -> None:
    head, _ = http_request_head(request(raw), LOCATION, CLIENT_IP, None)
    assert re.search(rb"\r\nx-request-id: forged\r\n", head, re.IGNORECASE)
    assert head.lower().count(b"x-request-id") == 1


def test_uwsgi_gets_our_id_as_http_x_request_id_in_place_of_the_clients() -> None:
    fields = dict(method=b"GET", target=b"/", path=b"/", query=b"", version="1.1",
                  headers=[(b"X-Request-Id", b"forged"), (b"Accept", b"*/*")],
                  remote_addr=b"127.0.0.1", remote_port=b"1", server_port=b"2",
                  server_name=b"a", content_length=None)
    ours = dict(build_vars(**fields, request_id=OURS))
    assert ours[b"HTTP_X_REQUEST_ID"] == OURS
    assert dict(build_vars(**fields))[b"HTTP_X_REQUEST_ID"] == b"forged"


# -- the error page --------------------------------------------------------------------

def test_the_error_page_names_the_request_id_and_nothing_else() -> None:
    page = error_page(502, close=False, request_id="3f2a" * 8)
    head, _, body = page.partition(b"\r\n\r\n")
    assert b"request id " + b"3f2a" * 8 in body
    assert int(re.search(rb"Content-Length: (\d+)", head).group(1)) == len(body)
    assert b"request id" not in error_page(502, close=False)


def test_a_trusted_clients_id_on_the_error_page_is_escaped() -> None:
    page = error_page(504, close=True, request_id="<script>\xe9")
    head, _, body = page.partition(b"\r\n\r\n")
    assert b"<script>" not in body and b"&lt;script&gt;" in body
    assert int(re.search(rb"Content-Length: (\d+)", head).group(1)) == len(body)


# -- the JSON access log -----------------------------------------------------------------

def json_line(tmp_path: Path, conn: SimpleNamespace, raw: bytes | None,
              request_time: float = 0.0123) -> dict:
    path = tmp_path / "access.log"
    log = AccessLog(str(path), "json")
    log.write_json(conn, None if raw is None else request(raw), request_time)
    log.flush()
    text = path.read_text()
    assert text.endswith("\n") and text.count("\n") == 1
    return json.loads(text)


def served(**fields: object) -> SimpleNamespace:
    values = dict(request_id="3f2a" * 8, client_addr="127.0.0.1", status=200, body_bytes=12,
                  upstream_peer=SimpleNamespace(peer=SimpleNamespace(
                      address=Address("127.0.0.1", 8000))),
                  upstream_status=200, upstream_time=0.0044)
    return SimpleNamespace(**{**values, **fields})


def test_a_json_line_has_every_field(tmp_path: Path) -> None:
    line = json_line(tmp_path, served(), b"GET /x?a=1 HTTP/1.1\r\nHost: a\r\n"
                     b"Referer: http://r/\r\nUser-Agent: ua/1\r\n\r\n")
    assert line == {
        "time": line["time"], "request_id": "3f2a" * 8, "client": "127.0.0.1",
        "method": "GET", "path": "/x?a=1", "status": 200, "bytes": 12,
        "request_time": 0.012, "upstream_addr": "127.0.0.1:8000", "upstream_status": 200,
        "upstream_time": 0.004, "referer": "http://r/", "user_agent": "ua/1"}
    # nginx's $time_iso8601: local time with its offset.
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", line["time"])
    logged = time.strptime(line["time"].replace(":", ""), "%Y-%m-%dT%H%M%S%z")
    assert abs(time.mktime(logged) - time.time()) < 120


def test_a_json_line_without_an_upstream_reply_has_nulls(tmp_path: Path) -> None:
    line = json_line(tmp_path, served(status=502, upstream_peer=None, upstream_status=0,
                                      upstream_time=-1.0, request_id=None),
                     b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert {key: line[key] for key in ("upstream_addr", "upstream_status", "upstream_time",
                                       "request_id", "referer", "user_agent")} == dict.fromkeys(
        ("upstream_addr", "upstream_status", "upstream_time", "request_id", "referer",
         "user_agent"))
    assert line["status"] == 502


def test_a_json_line_of_a_head_that_could_not_be_read(tmp_path: Path) -> None:
    line = json_line(tmp_path, served(status=400, upstream_status=0, request_id=None), None)
    assert (line["method"], line["path"], line["status"]) == (None, None, 400)


def test_a_json_line_escapes_what_the_client_sent(tmp_path: Path) -> None:
    agent = 'say "hi"\\ \xe9\xff'  # bytes as received, read as latin-1
    raw = (b"POST /q?\"x\"=\\ HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nUser-Agent: "
           + agent.encode("latin-1") + b"\r\n\r\n")
    line = json_line(tmp_path, served(request_id='a"b\\c\x01'), raw)
    assert line["user_agent"] == agent
    assert line["path"] == '/q?"x"=\\'
    assert line["request_id"] == 'a"b\\c\x01'


# -- the error log's process names -------------------------------------------------------

def test_error_log_lines_name_pid_role_and_generation(tmp_path: Path) -> None:
    path = tmp_path / "error.log"
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        logs.setup(str(path))
        logging.getLogger("master").info("first")
        logs.set_process("master", 4)
        logging.getLogger("master").info("after a reload")
        logs.set_process("worker", 7)
        logging.getLogger("worker").error("upstream down")
        logs.setup(str(path))  # a reload keeps the process's names
        logging.getLogger("worker").warning("again")
    finally:
        logs.set_process("master", 1)
        root.removeHandler(logs._handler)
        logs._handler.close_file()
        logs._handler = None
        root.setLevel(level)
        root.handlers[:] = handlers
    pid = os.getpid()
    lines = path.read_text().splitlines()
    assert [line.split(" ", 2)[2] for line in lines] == [
        f"[INFO] {pid} master gen 1: first", f"[INFO] {pid} master gen 4: after a reload",
        f"[ERROR] {pid} worker gen 7: upstream down", f"[WARNING] {pid} worker gen 7: again"]

