"""The status dashboard in a real browser, against the real master.

Headless Chromium, launched as tests/support/browser.py launches it, opens the
page served by the status listener; the page's own WebSocket to /ws feeds it.
The page must follow the process tree by itself, without being reloaded: a
worker added by TTIN appears, and after a HUP (its socket's worker drains) it
reconnects and shows the new generation.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.support.browser import SCREENSHOT_ENV
from tests.support.lifecycle import get, proxy_config
from tests.support.processes import free_port, wait_for

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is a test dependency (pip install -e '.[test]')")
expect = playwright_api.expect

WAIT_MS = 30_000

# Records every text the connection indicator shows, so a test can tell that the
# page went through "reconnecting" (and that it was never reloaded: a reload
# would lose the record).
_WATCH_INDICATOR = """() => {
  window.indicatorTexts = [document.getElementById("connection").textContent];
  new MutationObserver(() => {
    window.indicatorTexts.push(document.getElementById("connection").textContent);
  }).observe(document.getElementById("connection"), {childList: true, characterData: true,
                                                      subtree: true});
}"""


def dashboard_config(upstream_port: int, status_port: int, workers: int) -> str:
    return proxy_config(upstream_port, workers=workers, access_log="off") + (
        f'[status]\nlisten = "127.0.0.1:{status_port}"\n')


def shown_workers(page) -> list[tuple[int, int]]:
    """(pid, generation) of every worker row on the page, in order."""
    return [(int(pid), int(generation)) for pid, generation in page.eval_on_selector_all(
        "#workers tbody tr.worker", "rows => rows.map(r => [r.dataset.pid, r.dataset.generation])")]


@pytest.mark.timeout(180)
def test_dashboard_follows_ttin_and_hup_without_a_page_reload(browser, start_proxy, upstream,
                                                              tmp_path):
    status_port = free_port()
    proxy = start_proxy(dashboard_config(upstream.port, status_port, workers=2))
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"http://127.0.0.1:{status_port}/", timeout=WAIT_MS)

    rows = page.locator("#workers tbody tr.worker")
    expect(page.locator("#connection")).to_have_text("live", timeout=WAIT_MS)
    expect(rows).to_have_count(2, timeout=WAIT_MS)
    expect(page.locator("#generation")).to_have_text("1")
    assert {pid for pid, _ in shown_workers(page)} == proxy.worker_pids()
    assert {generation for _, generation in shown_workers(page)} == {1}
    page.evaluate(_WATCH_INDICATOR)

    proxy.signal(signal.SIGTTIN)
    expect(rows).to_have_count(3, timeout=WAIT_MS)
    wait_for(lambda: {pid for pid, _ in shown_workers(page)} == proxy.worker_pids(),
             timeout=WAIT_MS / 1000, message="the page to show the three workers")

    for _ in range(20):
        assert get(proxy.port)[0] == 200
    expect(page.locator("#by-status")).to_have_text("2xx 20", timeout=WAIT_MS)

    pushed_by = page.locator("#served-by").get_attribute("data-pid")
    proxy.signal(signal.SIGHUP)
    proxy.wait_serving(2)
    expect(page.locator("#generation")).to_have_text("2", timeout=WAIT_MS)
    # The old generation drains and leaves: only the new one's rows remain.
    wait_for(lambda: (workers := shown_workers(page)) and len(workers) == 2
             and {generation for _, generation in workers} == {2}
             and {pid for pid, _ in workers} == proxy.worker_pids(),
             timeout=WAIT_MS / 1000, message="the page to show generation 2's two workers")
    expect(page.locator("#connection")).to_have_text("live", timeout=WAIT_MS)

    seen = page.evaluate("window.indicatorTexts")  # still there: the page was not reloaded
    assert "reconnecting" in seen and seen[-1] == "live", seen
    pushing = int(page.locator("#served-by").get_attribute("data-pid"))
    assert pushing != int(pushed_by) and pushing in proxy.worker_pids()  # a gen 2 worker
    assert not errors, errors

    screenshot = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "dashboard.png")
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 0
