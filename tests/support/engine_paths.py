"""The two request paths, until there is one engine: the callback lane and the greenlet path.

`PREFORK_PROXY_LANE=0` in the proxy's environment sends every request down the
greenlet path (workers/client.py). Integration tests of the hardening rules run
on both, with the module-scoped `engine_path` fixture of tests/conftest.py:

    def test_x(engine_path, ...):
        proxy = start_proxy(config, env=engine_env(engine_path))
"""

from __future__ import annotations

import os

ENGINE_PATHS = ("lane", "greenlet")


def engine_env(path: str) -> dict | None:
    """The proxy's environment for `path` (None: inherit ours, the lane on)."""
    if path == "lane":
        return None
    return {**os.environ, "PREFORK_PROXY_LANE": "0"}
