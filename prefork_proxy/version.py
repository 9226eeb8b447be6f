"""`prefork-proxy --version`: the proxy's version and those of what it runs on.

Read without importing gevent (the master never imports it): the versions of
gevent and httptools come from their package metadata. httptools does not
expose the version of the llhttp it bundles (0.6-0.9 have no attribute for it),
so the line names httptools' version unless a build exposes llhttp's.
"""

from __future__ import annotations

import platform
from importlib import import_module, metadata

from prefork_proxy import __version__

# Where a httptools build might expose llhttp's version (none does today).
_LLHTTP_ATTRIBUTES = ("llhttp_version", "LLHTTP_VERSION", "__llhttp_version__")


def version_line() -> str:
    """`prefork-proxy X.Y.Z (Python A.B.C, gevent A.B.C, llhttp A.B.C)`."""
    return (f"prefork-proxy {__version__} (Python {platform.python_version()}, "
            f"gevent {_installed('gevent')}, {parser_version()})")


def parser_version() -> str:
    """`llhttp A.B.C` when httptools says which, else `httptools A.B.C`."""
    try:
        module = import_module("httptools.parser")
    except ImportError:
        module = None
    for name in _LLHTTP_ATTRIBUTES:
        found = getattr(module, name, None)
        if isinstance(found, str):
            return f"llhttp {found}"
    return f"httptools {_installed('httptools')}"


def _installed(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"
