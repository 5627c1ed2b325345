"""
Serving the web console to a test browser, and the browser itself.

Until claudews serves the console on its own port, a small static server
of the test's own serves ``claudews/web/`` on another origin, with the
same security headers, and the page is told where the WebSocket is with
``?ws=``; the claudews server allow-lists that origin. ``console_url`` is
the one place that knows this.
"""

import functools
import os
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

WEB = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "claudews", "web")

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


class StaticConsole:
    """
    ``claudews/web/`` on http://127.0.0.1:PORT/, with the CSP claudews
    will send (plus the WebSocket's own origin in connect-src, since it is
    another port here).
    """

    def __init__(self):
        #: The claudews port, set once the server listens.
        self.ws_port = None
        console = self

        class Handler(SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def end_headers(self):
                other = "ws://127.0.0.1:%s http://127.0.0.1:%s" % (console.ws_port, console.ws_port)
                self.send_header("Content-Security-Policy", (
                    "default-src 'self'; script-src 'self'; style-src 'self'; "
                    "connect-src 'self' %s; img-src 'self' data:; frame-ancestors 'none'" % other))
                self.send_header("X-Content-Type-Options", "nosniff")
                self.send_header("Referrer-Policy", "no-referrer")
                self.send_header("X-Frame-Options", "DENY")
                self.send_header("Cache-Control", "no-store")
                super().end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=WEB))
        self.port = self.httpd.server_address[1]
        self.origin = "http://127.0.0.1:%d" % (self.port,)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, server, token):
        self.ws_port = server.port
        url = "%s/?ws=ws://127.0.0.1:%d/ws" % (self.origin, server.port)
        if token is not None:
            url += "#token=" + token
        return url

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
