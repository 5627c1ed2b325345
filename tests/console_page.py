"""
The browser the console tests drive: Debian's Chromium through Playwright.
"""

import os
import shutil

CHROMIUM = os.environ.get("CLAUDEWS_TEST_CHROMIUM") or shutil.which("chromium") or shutil.which(
    "chromium-browser")

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the environment
    sync_playwright = None


def missing():
    """Why the browser tests cannot run here, or None."""
    if sync_playwright is None:
        return "playwright is not installed (pip install '.[test]')"
    if CHROMIUM is None:
        return "Chromium is not installed (apt-get install chromium)"
    return None
