"""
The web console's weight and speed: what a browser downloads to show it,
and how soon it shows something.

One real server (twistd with the fake CLI of tests/fake_claude.py, three
projects), and headless Chromium (Debian's, through Playwright) loading
the console cold, in a fresh browser context each time, LOADS times.
Reports, as min / median / max over the loads:

- bytes transferred and requests made (every response's body, as the
  browser received it: no compression, claudews sends none);
- first contentful paint (the browser's own paint timing);
- DOMContentLoaded;
- "ready": connected, with the project list drawn (measured from the
  navigation's start to the first frame where the status says Connected
  and the list has its three links; an upper bound, as it is polled).

Run by hand from the repository root (not part of the test suite)::

    python bench/console_load.py [--loads 12]
"""

import argparse
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from playwright.sync_api import sync_playwright  # noqa: E402

from tests.console_page import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from tests.harness import Server  # noqa: E402

READY = """() => document.querySelector('[role=status]')?.textContent.includes('Connected')
           && document.querySelectorAll('nav a').length >= 3"""


def one_load(browser, url):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    sizes = []
    page.on("requestfinished", lambda request: sizes.append(request.sizes()["responseBodySize"]))
    page.goto(url)
    page.wait_for_function(READY, polling="raf")
    ready = page.evaluate("performance.now()")
    timing = page.evaluate(
        """() => ({
            fcp: performance.getEntriesByName('first-contentful-paint')[0]?.startTime,
            dcl: performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd,
        })"""
    )
    context.close()
    return {"bytes": sum(sizes), "requests": len(sizes), "fcp": timing["fcp"],
            "dcl": timing["dcl"], "ready": ready}


def row(name, values, unit):
    return "%-22s %10.0f %10.0f %10.0f %s" % (
        name, min(values), statistics.median(values), max(values), unit)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loads", type=int, default=12)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="claudews-bench-") as tmp:
        server = Server(tmp).start()
        try:
            client = server.connect()
            for name in ("api", "docs", "web"):
                client.ok("project.create", path=server.project_dir(name))
            url = "http://127.0.0.1:%d/#token=%s" % (server.port, server.token)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                one_load(browser, url)  # warm-up: the server's caches, Chromium's start
                loads = [one_load(browser, url) for _ in range(args.loads)]
                browser.close()
        finally:
            server.kill()
    print("%d cold loads of the console (fresh browser context each)" % (len(loads),))
    print("%-22s %10s %10s %10s" % ("", "min", "median", "max"))
    print(row("transferred", [l["bytes"] / 1024 for l in loads], "KiB"))
    print(row("requests", [l["requests"] for l in loads], ""))
    print(row("first contentful paint", [l["fcp"] for l in loads], "ms"))
    print(row("DOMContentLoaded", [l["dcl"] for l in loads], "ms"))
    print(row("ready (connected, list)", [l["ready"] for l in loads], "ms"))


if __name__ == "__main__":
    main()
