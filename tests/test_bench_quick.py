"""The benchmark harness cannot rot: its quick mode runs every scenario and each yields a number.

For the subject and the reference (prefork-proxy and nginx), and the parts
whose figures no other test measures: real traffic, throughput and memory.
The Python peers' launchers, the worker-scaling and the reload-under-load
parts run in `make bench` (the reload's own rule is tests/test_signals.py's
HUP under load); here they took half of this test's time, and the suite has
a budget of about four minutes. Nothing here is about speed. A proxy may lack
a feature ("n/a: no uwsgi"); anything else without a number is a broken
scenario.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.results import Results

REPO = Path(__file__).resolve().parent.parent
MUST_RUN = ("prefork-proxy", "nginx")  # the subject and the reference never go missing
PEERS = ("proxy.py", "mitmproxy")

@pytest.mark.timeout(600)
@pytest.mark.skipif(not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists())
                    or not shutil.which("wrk"), reason="needs nginx and wrk")
def test_quick_bench_gives_every_scenario_a_number(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--proxies", *MUST_RUN,
         "--only", "realistic", "throughput", "memory", "--out",
         str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=560, check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    results = Results.load(tmp_path / "latest.json")
    for name in MUST_RUN:
        assert name not in results.unavailable, results.unavailable[name]

    missing = []
    for figure in results.figures:
        for proxy in results.proxies:
            note = figure.notes.get(proxy, "")
            if figure.median(proxy) is not None or note.startswith("n/a:"):
                continue
            if proxy in PEERS and note.startswith("unavailable:"):
                continue
            missing.append(f"{figure.key} / {proxy}: {note or 'no number'}")
    assert not missing, "\n".join(missing) + "\n" + completed.stderr[-3000:]

    report = (tmp_path / "latest.md").read_text()
    assert "## Throughput" in report and "## Targets" in report
    for chart in ("throughput.png", "latency.png", "memory.png"):
        assert (tmp_path / chart).stat().st_size > 0
