"""Configured server names: nginx's rules for what a server_name may be.

The master's half of virtual hosts (workers/server_names.py, which re-exports
these, does the lookup in the workers): config.py checks each `server_name`
with `check_server_name` and compares names with `name_key`, without importing
workers/ (the master never does). Regular-expression names (`~...`) are not
supported; an asterisk stands for whole labels only, as nginx has it.
"""

from __future__ import annotations

import re

# A name as configured: labels of letters, digits, '-' and '_' (nginx allows the
# underscore), with at most one '*' as a whole first or last label.
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?"
_EXACT = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_IPV6_LITERAL = re.compile(r"\[[0-9a-f:.]+\]")


def check_server_name(name: object) -> str:
    """A configured server_name, lowercased; ValueError says what is wrong with it."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"{name!r} is not a host name")
    text = name.lower()
    if text.startswith("~"):
        raise ValueError(f"{name!r}: regular-expression server names are not supported")
    if text.startswith("*."):
        body = text[2:]
    elif text.startswith("."):
        body = text[1:]
    elif text.endswith(".*"):
        body = text[:-2]
    else:
        body = text
    if "*" in body:
        raise ValueError(f"{name!r}: an asterisk must be the whole first or last label, "
                         "as in \"*.example.com\" or \"www.example.*\"")
    if not (_EXACT.fullmatch(body) or _IPV6_LITERAL.fullmatch(body)):
        raise ValueError(f"{name!r} is not a host name")
    return text


def name_key(name: str) -> str:
    """The form two configured names share when nginx would call them the same name
    (`*.example.com` and `.example.com` conflict: both cover www.example.com)."""
    return name[1:] if name.startswith("*.") else name
