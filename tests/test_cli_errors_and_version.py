"""`prefork-proxy -t` reports every error of a file; `--version`; a reload and a
start with a bad file report all of them the same way.

The real CLI and the real master, run as an operator runs them: each error a
line `prefork-proxy: FILE: key: message` on stderr, exit status 1; a failed
HUP logs each error and the running generation keeps serving.
"""

from __future__ import annotations

import platform
import re
import signal
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

import prefork_proxy
from tests.support.processes import ROOT, Proxy, Upstream, free_port, wait_for
from tests.support.wire import get

pytestmark = pytest.mark.timeout(60)

# Three independent errors: a top-level setting, an upstream's server, a location's.
BAD = """\
graceful_timeout = "soon"

[upstream.app]
servers = ["127.0.0.1:8001 wieght=2"]

[[server]]
listen = ["127.0.0.1:{port}"]

  [[server.location]]
  path = "/"
  proxy_pass = "http://app"
  read_timeout = "later"
"""


def bad_lines(path: Path) -> list[str]:
    return [
        f"prefork-proxy: {path}: graceful_timeout: 'soon' is not a duration "
        "(write e.g. \"500ms\", \"30s\", \"5m\")",
        f"prefork-proxy: {path}: upstream.app.servers[0]: 'wieght=2' is not weight=N, "
        "max_fails=N, fail_timeout=T, max_conns=N, slow_start=T or backup",
        f"prefork-proxy: {path}: server[0].location[0].read_timeout: 'later' is not a "
        "duration (write e.g. \"500ms\", \"30s\", \"5m\")",
    ]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prefork_proxy", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)


def test_t_prints_every_error_a_line_each_and_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(BAD.replace("{port}", "8080"))
    result = run_cli("-t", "-c", str(path))
    assert result.returncode == 1
    assert result.stderr.splitlines() == bad_lines(path)
    assert result.stdout == ""


def test_t_on_a_good_file_prints_what_it_did_before(tmp_path: Path) -> None:
    path = tmp_path / "good.toml"
    path.write_text(BAD.replace("{port}", "8080").replace('"soon"', '"5s"').replace(
        " wieght=2", "").replace('"later"', '"5s"'))
    result = run_cli("-t", "-c", str(path))
    assert (result.returncode, result.stdout, result.stderr) == (
        0, f"prefork-proxy: {path}: configuration is valid\n", "")


def test_the_master_started_on_a_bad_file_reports_every_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(BAD.replace("{port}", str(free_port())))
    result = run_cli("-c", str(path))
    assert result.returncode == 1
    assert result.stderr.splitlines() == bad_lines(path)


def test_a_reload_of_a_bad_file_logs_every_error_and_keeps_serving(tmp_path: Path) -> None:
    upstream = Upstream(tmp_path / "upstream.log")
    port = free_port()
    path = tmp_path / "proxy.toml"
    good = BAD.replace("{port}", str(port)).replace('"soon"', '"5s"').replace(
        "127.0.0.1:8001 wieght=2", upstream.address).replace('"later"', '"5s"')
    path.write_text(good)
    proxy = Proxy(path, tmp_path / "proxy.log")
    try:
        proxy.wait_serving()
        before = proxy.worker_pids()
        path.write_text(BAD.replace("{port}", str(port)))
        proxy.signal(signal.SIGHUP)
        wait_for(lambda: proxy.log().count("reload failed") >= 3,
                 message="each error of the reload to be logged")
        logged = [line.partition("keeps serving: ")[2] for line in proxy.log().splitlines()
                  if "reload failed" in line]
        assert logged == [line.removeprefix("prefork-proxy: ") for line in bad_lines(path)]
        assert get(port, "/echo").status == 200  # the running generation serves on
        assert proxy.worker_pids() == before
    finally:
        proxy.stop()
        upstream.stop()


def test_version_names_the_proxy_python_gevent_and_the_parser() -> None:
    result = run_cli("--version")
    assert result.returncode == 0 and result.stderr == ""
    match = re.fullmatch(r"prefork-proxy (\d+\.\d+\.\d+) \(Python (\d+\.\d+\.\d+), "
                         r"gevent (\d+\.\d+\.\d+), (llhttp|httptools) (\d+\.\d+\.\d+)\)\n",
                         result.stdout)
    assert match, result.stdout
    version, python, gevent, parser, parser_version = match.groups()
    assert version == prefork_proxy.__version__ == metadata.version("prefork-proxy")
    assert python == platform.python_version()
    assert gevent == metadata.version("gevent")
    # httptools 0.6-0.9 do not expose the version of the llhttp they bundle.
    assert (parser, parser_version) == ("httptools", metadata.version("httptools"))


def test_version_does_not_import_gevent() -> None:
    result = subprocess.run(
        [sys.executable, "-c",
         "import sys; from prefork_proxy import cli; cli.main(['--version']);"
         "print(sorted(m for m in sys.modules if m.split('.')[0] in ('gevent', 'workers')))"],
        cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.stdout.splitlines()[-1] == "[]", result.stdout + result.stderr
