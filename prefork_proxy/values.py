"""Parsers for the value types a config file holds: durations, sizes, addresses.

Each parser takes the raw TOML value and returns the typed value, or raises
ValueError with a message meant for the operator; config.py adds the file and
key path to it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}

_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]i?b?)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_duration(value: object) -> float:
    """"500ms", "30s", "5m", "1h", "1d" or a bare number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration (write e.g. \"30s\")")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    else:
        raise ValueError(f"{value!r} is not a duration (write e.g. \"500ms\", \"30s\", \"5m\")")
    if seconds < 0:
        raise ValueError(f"{value!r} is negative")
    return seconds


def parse_timeout(value: object) -> float:
    """A duration above 0: a wait that may not last at all would close everything."""
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"{value!r} must be more than 0s")
    return seconds


def parse_size(value: object) -> int:
    """"512MiB", "1m", "10k", "0" or a bare number of bytes -> bytes (nginx's k/m/g are 1024)."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size (write e.g. \"1m\")")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value!r} is negative")
        return value
    if isinstance(value, str) and (match := _SIZE.match(value)):
        unit = match.group(2)
        return int(match.group(1)) * (_SIZE_UNITS[unit[0].lower()] if unit else 1)
    raise ValueError(f"{value!r} is not a size (write e.g. \"10k\", \"1m\", \"512MiB\")")


@dataclass(frozen=True)
class Address:
    """A TCP (host, port) or a unix socket path, as written in listen/servers lists."""

    host: str | None
    port: int | None
    path: str | None = None

    @property
    def is_unix(self) -> bool:
        return self.path is not None

    def __str__(self) -> str:
        if self.path is not None:
            return f"unix:{self.path}"
        if self.host is not None and ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


def parse_address(text: str, *, default_host: str | None = None) -> Address:
    """"host:port", "[v6]:port", "unix:/path" (and "port" when default_host is given)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{text!r} is not an address (write host:port, [v6]:port or unix:/path)")
    text = text.strip()
    if text.startswith("unix:"):
        path = text[5:]
        if not path.startswith("/"):
            raise ValueError(f"{text!r}: a unix socket path must be absolute")
        return Address(None, None, path)
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep or ":" not in host:
            raise ValueError(f"{text!r} is not [v6]:port")
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
        if ":" in host:
            raise ValueError(f"{text!r}: write an IPv6 address in brackets, as [v6]:port")
    elif default_host is not None and text.isdigit():
        host, port_text = default_host, text
    else:
        raise ValueError(f"{text!r} is not host:port")
    if host in ("", "*"):
        host = "0.0.0.0"
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{text!r}: {port_text!r} is not a port number (1-65535)")
    return Address(host, int(port_text))
