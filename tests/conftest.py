"""Fixtures: real proxies and upstreams on ephemeral ports, killed after each test."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.browser import launched_chromium
from tests.support.processes import Process, Proxy, Upstream, free_port


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[Process]]:
    """Everything a test starts goes here and is stopped at teardown."""
    processes: list[Process] = []
    yield processes
    for process in reversed(processes):
        process.stop()


@pytest.fixture
def upstream(tmp_path: Path, started: list[Process]) -> Upstream:
    server = Upstream(tmp_path / f"upstream-{len(started)}.log")
    started.append(server)
    return server


@pytest.fixture
def start_proxy(tmp_path: Path, started: list[Process]) -> Callable[..., Proxy]:
    """start_proxy(config_text, wait=True, env=None) -> Proxy.

    `{port}` in the text is replaced by a free port (also set as proxy.port).
    """
    def start(config_text: str, wait: bool = True, env: dict | None = None,
              name: str = "proxy") -> Proxy:
        port = free_port()
        path = tmp_path / f"{name}.toml"
        path.write_text(textwrap.dedent(config_text).replace("{port}", str(port)))
        proxy = Proxy(path, tmp_path / f"{name}.log", env=env)
        proxy.port = port
        started.append(proxy)
        if wait:
            proxy.wait_serving()
        return proxy

    return start



@pytest.fixture
def browser():
    """A headless Chromium (tests/support/browser.py), closed after the test."""
    with launched_chromium() as launched:
        yield launched
