"""
A real browser (headless Chromium) on a page of another origin tries to
reach the server: the handshake is refused, as a page from any site a
user visits must be refused (CVE-2025-52882 was exactly that hole). The
same page from an allow-listed origin gets in, which proves the refusal
is the Origin check and not something else.

Chromium comes from Debian's packages (``apt-get install chromium``); the
test is skipped where it is not installed.
"""

import os
import shutil
import signal
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

import pytest

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

PAGE = """<!doctype html>
<html><body>
<script>
const report = (what) => fetch("/result?" + encodeURIComponent(what));
const ws = new WebSocket(%(url)r);
let opened = false;
ws.onopen = () => { opened = true; report("open"); ws.close(); };
ws.onclose = (e) => { if (!opened) report("closed " + e.code); };
</script></body></html>
"""


class Page:
    """
    A page served on an origin of its own, http://127.0.0.1:PORT/, whose
    script connects to C{self.url} (set once the server listens).
    """

    def __init__(self):
        self.url = None
        #: What the page's script reported, once it has.
        self.result = None
        self.reported = threading.Event()
        page = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path.startswith("/result?"):
                    page.result = unquote(self.path.split("?", 1)[1])
                    page.reported.set()
                body = (PAGE % {"url": page.url}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = "http://127.0.0.1:%d" % (self.server.server_address[1],)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def browse(page, profile):
    """
    Load the page in headless Chromium and return what its script
    reported about its WebSocket.
    """
    browser = subprocess.Popen(
        [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync",
            "--user-data-dir=" + profile, page.origin,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # Chromium starts helpers (crashpad, renderers): end them all.
        start_new_session=True,
    )
    try:
        assert page.reported.wait(60), "the page never reported"
        return page.result
    finally:
        os.killpg(browser.pid, signal.SIGKILL)
        browser.wait()


@pytest.fixture
def page():
    p = Page()
    yield p
    p.close()


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_a_page_of_another_origin_cannot_connect(make_server, page, tmp_path):
    """A foreign page is refused, even with the right token in its URL."""
    server = make_server("--allowed-origin", "http://allowed.example:1234")
    page.url = server.url()
    assert browse(page, str(tmp_path / "profile")) == "closed 1006"
    assert "Origin %r not allowed" % (page.origin,) in server.drain_log()


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_a_page_of_an_allowed_origin_connects(make_server, page, tmp_path):
    """The same page from an allow-listed origin gets in: the refusal was the Origin."""
    server = make_server("--allowed-origin", page.origin)
    page.url = server.url()
    assert browse(page, str(tmp_path / "profile")) == "open"
