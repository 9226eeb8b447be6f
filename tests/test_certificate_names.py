"""workers/certificate_names.py: a verified certificate's subjectAltName against a name."""

from __future__ import annotations

import pytest

from workers.certificate_names import certificate_matches


def cert(*names: tuple[str, str]) -> dict:
    return {"subject": ((("commonName", "ignored.test"),),), "subjectAltName": names}


@pytest.mark.parametrize(("pattern", "name", "matches"), [
    ("upstream.test", "upstream.test", True),
    ("Upstream.Test", "upstream.TEST", True),  # DNS names compare without case
    ("upstream.test.", "upstream.test", True),
    ("upstream.test", "other.test", False),
    ("*.example.test", "a.example.test", True),
    ("*.example.test", "example.test", False),  # the wildcard is one whole label
    ("*.example.test", "a.b.example.test", False),
    ("*.test", "a.test", False),  # never a wildcard over a bare suffix
    ("a*.example.test", "ab.example.test", False),  # partial wildcards are not honoured
])
def test_dns_names(pattern: str, name: str, matches: bool) -> None:
    assert certificate_matches(cert(("DNS", pattern)), name) is matches


def test_the_common_name_is_not_a_fallback() -> None:
    assert not certificate_matches(cert(), "ignored.test")


def test_ip_addresses_match_ip_entries_only() -> None:
    both = cert(("DNS", "127.0.0.1"), ("IP Address", "10.0.0.1"))
    assert certificate_matches(both, "10.0.0.1")
    assert not certificate_matches(both, "127.0.0.1")
    assert certificate_matches(cert(("IP Address", "0:0:0:0:0:0:0:1\n")), "::1")
