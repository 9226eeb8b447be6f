"""Headless Chromium for the browser tests and the dashboard soak.

Debian's `chromium`, which scripts/install-system-packages.sh installs, driven
by playwright (a test dependency): no browser download is possible here.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
# Where a browser test's screenshot goes; set it to keep one for a look.
SCREENSHOT_ENV = "PREFORK_PROXY_SCREENSHOT"


@contextlib.contextmanager
def launched_chromium() -> Iterator[object]:
    """A playwright Browser on the system Chromium; in a test, a skip (with its
    reason) when playwright or the browser is missing."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is a test dependency (pip install -e '.[test]')")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is missing: scripts/install-system-packages.sh installs it")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                             headless=True)
        try:
            yield browser
        finally:
            browser.close()
