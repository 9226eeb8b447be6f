"""A real browser uses the demo's /ws-test page through the proxy.

Headless Chromium (Debian's `chromium`, which scripts/install-system-packages.sh
installs) loads the page from the proxy; the page's own `new WebSocket(...)`
connects to /ws through the proxy, and the echoed text must appear on it.
Playwright drives the system browser: no browser download is possible here.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.browser import SCREENSHOT_ENV
from tests.support.ws_demo import start_demo


@pytest.mark.timeout(180)
def test_the_ws_test_page_echoes_through_the_proxy(browser, started, tmp_path):
    demo = start_demo(started, tmp_path)
    page = browser.new_page(viewport={"width": 1000, "height": 760})
    page.goto(f"{demo.base_url}/ws-test", timeout=30_000)
    status = page.locator("#status")
    status.filter(has_text="open").wait_for(timeout=30_000)  # the page connects on load

    for text in ("hello from chromium", "ünïcödé ✓ through the tunnel"):
        page.fill("#message", text)
        page.click("#send")
        page.locator("#log li.received", has_text=text).wait_for(timeout=30_000)
    echoes = page.locator("#log li.received .text").all_inner_texts()
    assert [echo.split(" (")[0] for echo in echoes] == [
        "hello from chromium", "ünïcödé ✓ through the tunnel"]

    screenshot = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "ws-test.png")
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 0

    page.click("#disconnect")
    page.locator("#log li.info", has_text="code 1000").wait_for(timeout=30_000)
    assert status.inner_text() == "closed"
