"""Unit tests of prefork_proxy/host_names.py: nginx's server_name lookup order and
ngx_http_validate_host, with the cases of nginx's server_names documentation."""

from __future__ import annotations

import pytest

from prefork_proxy.host_names import ServerNames, check_server_name, name_key, valid_host


@pytest.mark.parametrize("name", [
    "example.com", "EXAMPLE.com", "*.example.com", ".example.com", "www.example.*",
    "localhost", "a_b.example.com", "[::1]", "127.0.0.1",
])
def test_names_nginx_accepts(name: str) -> None:
    assert check_server_name(name) == name.lower()


@pytest.mark.parametrize("name, message", [
    ("w*.example.com", "asterisk"),
    ("www.*.example.com", "asterisk"),
    ("*.example.*", "asterisk"),
    ("~^www\\d+\\.example\\.com$", "regular-expression"),
    ("", "not a host name"),
    ("exa mple.com", "not a host name"),
    ("-bad.example.com", "not a host name"),
    ("a..b", "not a host name"),
    (7, "not a host name"),
])
def test_names_nginx_refuses(name: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_server_name(name)


@pytest.mark.parametrize("raw, host", [
    (b"Example.COM", b"example.com"),
    (b"example.com:8080", b"example.com"),
    (b"example.com.", b"example.com"),
    (b"example.com.:80", b"example.com"),
    (b"[::1]:8080", b"[::1]"),
    (b"[::1]", b"[::1]"),
    (b"127.0.0.1:80", b"127.0.0.1"),
])
def test_valid_host_normalizes(raw: bytes, host: bytes) -> None:
    assert valid_host(raw) == host


@pytest.mark.parametrize("raw", [
    b"", b":80", b".example.com", b"a..b", b"a/b", b"a\\b", b"a\x00b", b"a b",
    b"example.com:port", b"a:1:2", b"[::1", b"[::1]x", b".",
])
def test_valid_host_refuses(raw: bytes) -> None:
    assert valid_host(raw) is None


def _names(*servers: tuple[str, ...]) -> ServerNames[str]:
    return ServerNames(
        ((tuple(check_server_name(n) for n in names), names[0]) for names in servers),
        "default")


def test_exact_wins_over_wildcards() -> None:
    names = _names(("*.example.com",), ("www.example.com",), ("www.example.*",))
    assert names.match(b"www.example.com") == "www.example.com"


def test_leading_wildcard_wins_over_trailing() -> None:
    names = _names(("www.example.*",), ("*.example.com",))
    assert names.match(b"www.example.com") == "*.example.com"
    assert names.match(b"www.example.org") == "www.example.*"


def test_longest_leading_wildcard_wins() -> None:
    names = _names(("*.example.com",), ("*.mail.example.com",))
    assert names.match(b"a.mail.example.com") == "*.mail.example.com"
    assert names.match(b"a.b.example.com") == "*.example.com"


def test_leading_wildcard_needs_a_label() -> None:
    names = _names(("*.example.com",))
    assert names.match(b"example.com") == "default"
    assert names.match(b"badexample.com") == "default"


def test_dot_form_matches_the_name_itself() -> None:
    names = _names((".example.com",))
    assert names.match(b"example.com") == ".example.com"
    assert names.match(b"www.example.com") == ".example.com"
    assert names.match(b"notexample.com") == "default"


def test_longest_trailing_wildcard_wins() -> None:
    names = _names(("www.*",), ("www.example.*",))
    assert names.match(b"www.example.org") == "www.example.*"
    assert names.match(b"www.other.org") == "www.*"


def test_no_host_and_unknown_host_take_the_default() -> None:
    names = _names(("example.com",))
    assert names.match(None) == "default"
    assert names.match(b"other.com") == "default"


def test_first_server_keeps_a_repeated_name() -> None:
    names = ServerNames([(("example.com",), "first"), (("example.com",), "second")], "d")
    assert names.match(b"example.com") == "first"


def test_name_key_makes_overlapping_wildcards_conflict() -> None:
    assert name_key("*.example.com") == name_key(".example.com")
    assert name_key("example.com") != name_key(".example.com")
