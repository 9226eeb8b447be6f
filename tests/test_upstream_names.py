"""Host names in `servers` through the real master: resolved at start, at each
reload (HUP), and by the workers at the `resolve` interval.

The name is "localhost": real, resolved by the system's resolver, and loopback
only (here it has 127.0.0.1; where it also has ::1, that address is a second
peer, and the upstreams listen on 127.0.0.1 only, so it is refused and the
request goes on: the answers are the same). Names whose addresses change are
exercised with a fake address source in tests/test_peer_resolver.py: no test
edits system files.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import ROOT, wait_for
from tests.support.scripted_http import ScriptedHttp
from tests.support.sites import running_proxy
from tests.support.wire import get

pytestmark = pytest.mark.timeout(60)

CONFIG = """
workers = 2
[upstream.app]
servers = ["localhost:{upstream_port}"]
resolve = "100ms"
[[server]]
listen = ["127.0.0.1:{{port}}"]
  [[server.location]]
  path = "/"
  proxy_pass = "http://app"
"""


@pytest.fixture
def two_upstreams() -> Iterator[tuple[ScriptedHttp, ScriptedHttp]]:
    first, second = ScriptedHttp({}), ScriptedHttp({})
    yield first, second
    first.close()
    second.close()


def test_a_name_is_resolved_at_start_again_and_again_and_at_reload(
        two_upstreams: tuple[ScriptedHttp, ScriptedHttp], tmp_path: Path) -> None:
    first, second = two_upstreams
    with running_proxy(tmp_path, CONFIG.format(upstream_port=first.port)) as proxy:
        # Served through a name, across many of the workers' re-resolutions.
        until = time.monotonic() + 1.0
        answers = set()
        while time.monotonic() < until:
            response = get(proxy.port, "/named")
            answers.add((response.status, response.body))
        assert answers == {(200, b"honest /named")}
        # Each worker resolves on its own (strace shows /etc/hosts read every 100 ms).
        wait_for(lambda: proxy.log().count("upstream app: localhost resolved every 0.1s") == 2)
        assert "draining" not in proxy.log()  # the same addresses: nothing changed
        # A reload reads the name again, with its new port.
        (tmp_path / "proxy.toml").write_text(
            CONFIG.format(upstream_port=second.port).replace("{port}", str(proxy.port)))
        proxy.signal(signal.SIGHUP)
        proxy.wait_serving(2)
        since = len(second.requests)
        assert get(proxy.port, "/after-reload").body == b"honest /after-reload"
        assert second.paths()[since:] == [b"/after-reload"]


def test_a_name_that_does_not_resolve_fails_the_check(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(CONFIG.replace("localhost:{upstream_port}", "no-such-host.invalid:80")
                    .replace("{{port}}", "8080"))
    result = subprocess.run([sys.executable, "-m", "prefork_proxy", "-t", "-c", str(path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert f"{path}: upstream.app.servers[0]: host not found: 'no-such-host.invalid'" in (
        result.stderr + result.stdout)
