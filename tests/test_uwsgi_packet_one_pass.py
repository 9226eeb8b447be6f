"""encode_request_packet (workers/uwsgi_packet.py), the hot path's encoder.

It must give exactly the bytes of `encode_packet(build_vars(...))`, the
two-step reference that test_uwsgi_packet.py checks rule by rule, for every
kind of request: repeated and ignored headers, Cookie joining, fragments,
bodies, uwsgi_param tables, HTTP/1.0, unix listeners; and refuse the same
oversized requests with the same VarsTooBig.
"""

from __future__ import annotations

import pytest

from workers.uwsgi_packet import (
    UwsgiParams,
    VarsTooBig,
    build_vars,
    encode_packet,
    encode_request_packet,
)

BASE: dict[str, object] = dict(
    method=b"GET", target=b"/index?a=1", path=b"/index", query=b"a=1", version="1.1",
    headers=[(b"Host", b"example.test:8080"), (b"Accept", b"*/*")],
    remote_addr=b"127.0.0.1", remote_port=b"40000", server_port=b"8080",
    server_name=b"example.test", content_length=None,
)

CASES: dict[str, dict[str, object]] = {
    "plain GET": {},
    "no headers, HTTP/1.0": {"headers": [], "version": "1.0"},
    "POST with a body and a type": {
        "method": b"POST", "content_length": 1234,
        "headers": [(b"Host", b"h"), (b"Content-Type", b"application/json")]},
    "empty first Content-Type wins": {
        "headers": [(b"Content-Type", b""), (b"content-type", b"text/plain")]},
    "repeated headers and cookies are joined": {
        "headers": [(b"Accept", b"a"), (b"Cookie", b"x=1"), (b"accept", b"b"),
                    (b"Cookie", b"y=2")]},
    "names nginx ignores": {"headers": [(b"X_Under", b"1"), (b"X-Ok", b"2"), (b"X.Dot", b"3")]},
    "a fragment in the path": {"target": b"/p#frag", "path": b"/p#frag", "query": b""},
    "a fragment in the query": {"target": b"/p?q=1#f", "path": b"/p", "query": b"q=1#f"},
    "percent-encoded path": {"target": b"/a%20b/%7Ec", "path": b"/a%20b/%7Ec", "query": b""},
    "absolute-form target": {"target": b"http://h/x?y", "path": b"/x", "query": b"y"},
    "a unix listener": {"remote_addr": b"unix:", "remote_port": b"", "server_port": b""},
    "a long header value": {"headers": [(b"X-Long", b"v" * 5000)]},
    "our request id": {"request_id": b"0123456789abcdef0123456789abcdef"},
    "our request id in place of the client's": {
        "headers": [(b"X-A", b"1"), (b"x-request-id", b"forged"), (b"X-B", b"2")],
        "request_id": b"0123456789abcdef0123456789abcdef"},
}

PARAMS = {
    "no params": UwsgiParams(),
    "params": UwsgiParams([(b"SCRIPT_NAME", b"/app"), (b"SERVER_NAME", b"set"),
                           (b"HTTP_ACCEPT", b""), (b"REMOTE_PORT", b"")]),
}


def fields(case: str) -> dict[str, object]:
    return {**BASE, **CASES[case]}


@pytest.mark.parametrize("params", PARAMS.values(), ids=PARAMS)
@pytest.mark.parametrize("case", CASES)
def test_one_pass_gives_the_two_step_bytes(case: str, params: UwsgiParams) -> None:
    request = fields(case)
    expected = encode_packet(build_vars(**request, params=params), 5, 9)
    assert encode_request_packet(**request, params=params, modifier1=5, modifier2=9) == expected


@pytest.mark.parametrize("headers", [
    [(b"X-Huge", b"y" * 70000)],  # one value over the u16 length field
    [(b"X-Big-%d" % n, b"y" * 30000) for n in range(3)],  # a vars block over 65535
], ids=["value", "block"])
def test_an_oversized_request_is_refused_with_the_same_size(
        headers: list[tuple[bytes, bytes]]) -> None:
    request = {**BASE, "headers": headers}
    with pytest.raises(VarsTooBig) as reference:
        encode_packet(build_vars(**request))
    with pytest.raises(VarsTooBig) as one_pass:
        encode_request_packet(**request)
    assert (one_pass.value.status, one_pass.value.size) == (431, reference.value.size)
