"""A proxy and its upstream shared by a whole test module (module-scoped fixtures).

Starting the real master costs about a second; modules with many small cases
(hostile inputs, header rules on the wire) start one pair and check each case
against it, counting what reached the upstream before and after.

    with running_site(directory, config_text) as site: ...

`config_text` may use `{port}` (the proxy's free port), `{upstream}` (the
upstream's host:port) and `{dir}` (the directory, for log files).
"""

from __future__ import annotations

import re
import socket
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import Proxy, Upstream, free_port, wait_for
from tests.support.wire import get


def refused_port() -> socket.socket:
    """A bound socket that never listens: connecting to its port is refused, and no
    other process can take the port while the socket lives (unlike a free_port())."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


@dataclass
class Site:
    proxy: Proxy
    upstream: Upstream

    @property
    def port(self) -> int:
        return self.proxy.port

    def upstream_stats(self) -> dict:
        """The upstream's counters, asked directly (this adds one connection)."""
        return get(self.upstream.port, "/stats").json()


@contextmanager
def running_proxy(directory: Path, config_text: str,
                  env: dict | None = None) -> Iterator[Proxy]:
    """The real master on `config_text`, serving; `{port}` in the text is a free port,
    also `proxy.port`. The proxy is stopped on exit."""
    port = free_port()
    path = directory / "proxy.toml"
    path.write_text(textwrap.dedent(config_text).replace("{port}", str(port)))
    proxy = Proxy(path, directory / "proxy.log", env=env)
    proxy.port = port
    try:
        proxy.wait_serving()
        yield proxy
    finally:
        proxy.stop()


@contextmanager
def running_site(directory: Path, config_text: str,
                 env: dict | None = None) -> Iterator[Site]:
    upstream = Upstream(directory / "upstream.log")
    try:
        text = config_text.replace("{upstream}", upstream.address).replace("{dir}",
                                                                            str(directory))
        with running_proxy(directory, text, env) as proxy:
            yield Site(proxy, upstream)
    finally:
        upstream.stop()


def headers_seen(response) -> dict[str, list[str]]:  # noqa: ANN001 (a wire Response)
    """The request headers an /echo upstream reply says it received, by lower-cased
    name, every occurrence kept."""
    headers: dict[str, list[str]] = {}
    for name, value in response.json()["headers"]:
        headers.setdefault(name.lower(), []).append(value)
    return headers


def access_line(site: Site, path: str) -> str:
    """The access log line of the GET for `path` (waits for the log's flush); the
    config writes its access log beside it, as access.log."""
    log = Path(site.proxy.config_path).parent / "access.log"
    pattern = re.compile(rf"^.* \"GET {re.escape(path)} HTTP/1\.1\" .*$", re.MULTILINE)
    match = wait_for(lambda: log.exists() and pattern.search(log.read_text()),
                     message=f"the access log line of {path}")
    return match.group(0)
