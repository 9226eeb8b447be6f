"""The engine the integration tests run on: the one driver (workers/driver.py).

Kept as a fixture so that the modules which once ran on two request paths keep
their shape; there is one path now.
"""

from __future__ import annotations

ENGINE_PATHS = ("driver",)


def engine_env(path: str) -> dict | None:
    """The proxy's environment for `path`: the inherited one."""
    return None
