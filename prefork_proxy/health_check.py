"""`[upstream.NAME] health_check = {...}`: the settings of an active check, parsed.

HAProxy's `check` / `option httpchk` is the model: without `path` a check is a
TCP connect; with it, a GET of `path` (uwsgi: a uwsgi request for it) whose
status must match `expect`. Defaults are HAProxy's (`inter 2s`, `rise 2`,
`fall 3`, 2xx and 3xx pass); `timeout` defaults to 1s. Pure: no sockets.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prefork_proxy.values import parse_timeout

if TYPE_CHECKING:
    from prefork_proxy.config import Server

# HAProxy's httpchk: a 2xx or 3xx status passes.
DEFAULT_EXPECT = ((200, 399),)
# A path as it may appear in a request line: no space, no control character.
_PATH = re.compile(r"/[\x21-\x7e]*")
_KEYS = ("path", "interval", "timeout", "rise", "fall", "expect")


@dataclass(frozen=True)
class HealthCheck:
    path: str | None = None  # None: a TCP connect check
    interval: float = 2.0
    timeout: float = 1.0
    rise: int = 2
    fall: int = 3
    expect: tuple[tuple[int, int], ...] = DEFAULT_EXPECT  # inclusive status ranges

    def passes(self, status: int) -> bool:
        return any(low <= status <= high for low, high in self.expect)


def parse_expect(value: object) -> tuple[tuple[int, int], ...]:
    """"200-399", "200,204", 200 or [200, "300-399"] -> inclusive status ranges."""
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ValueError("must name at least one status, e.g. \"200-399\"")
    ranges = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int | str):
            raise ValueError(f"{item!r} is not a status, a range \"200-399\" or a list "
                             "\"200,204\"")
        for part in (str(item).split(",") if isinstance(item, str) else [str(item)]):
            low_text, dash, high_text = part.strip().partition("-")
            low = _status(low_text, value)
            high = _status(high_text, value) if dash else low
            if high < low:
                raise ValueError(f"{part.strip()!r}: the range ends before it starts")
            ranges.append((low, high))
    return tuple(ranges)


def _status(text: str, value: object) -> int:
    text = text.strip()
    if len(text) != 3 or not text.isdigit() or not 100 <= int(text) <= 599:
        raise ValueError(f"{value!r}: {text!r} is not a status from 100 to 599")
    return int(text)


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{value!r} is not a whole number >= 1")
    return value


def _path(value: object) -> str:
    if not isinstance(value, str) or not _PATH.fullmatch(value):
        raise ValueError(f"{value!r} is not a path starting with / (no spaces)")
    return value


_PARSERS = {"path": _path, "interval": parse_timeout, "timeout": parse_timeout,
            "rise": _count, "fall": _count, "expect": parse_expect}


def parse_health_check(table: object, key: str) -> tuple[HealthCheck | None,
                                                          list[tuple[str, str]]]:
    """The check of `table` (None if it cannot be read), and the (key, message) of
    each error found; a bad setting is reported and its default stands in."""
    if not isinstance(table, dict):
        return None, [(key, "must be a table, e.g. { path = \"/healthz\", interval = \"2s\" }")]
    values, errors = {}, []
    for name, raw in table.items():
        if name not in _KEYS:
            errors.append((f"{key}.{name}", f"unknown setting (one of {', '.join(_KEYS)})"))
            continue
        try:
            values[name] = _PARSERS[name](raw)
        except ValueError as exc:
            errors.append((f"{key}.{name}", str(exc)))
    if "expect" in values and "path" not in table:
        errors.append((f"{key}.expect", "needs `path`: a TCP connect check has no status"))
    return HealthCheck(**values), errors


def upstream_protocols(servers: Iterable[Server]) -> dict[str, set[str]]:
    """{upstream name: how its locations speak to it}: "http", "https", "uwsgi"."""
    found: dict[str, set[str]] = {}
    for server in servers:
        for location in server.locations:
            if location.upstream is None:
                continue
            protocol = "https" if location.tls is not None else location.protocol
            found.setdefault(location.upstream.name, set()).add(protocol)
    return found


def check_protocol(check: HealthCheck, protocols: set[str]) -> str:
    """What a check sends: "tcp" (a connect), "http" or "uwsgi" (a request for path)."""
    if check.path is None:
        return "tcp"
    return "uwsgi" if "uwsgi" in protocols else "http"


def protocol_error(check: HealthCheck, protocols: set[str]) -> str | None:
    """Why a path check cannot speak to this upstream, or None."""
    if check.path is None:
        return None
    if "https" in protocols:
        return "a path check over https is not supported; omit path for a TCP check"
    if len(protocols) > 1:
        return ("the upstream serves both proxy_pass and uwsgi_pass: a path check speaks "
                "one protocol; omit path for a TCP check")
    return None
