"""
One port for HTTP and the WebSocket (protocol v1.1): a twisted.web C{Site}
whose C{/ws} is Autobahn's C{WebSocketResource} (every check of the
handshake is the WebSocket protocol's own, unchanged) and whose other
paths serve the web console from the installed package.

The console's files are read once, at start, from C{claudews/web/} in the
package: a request only ever picks one of them by its exact name, never a
path on disk. Every HTTP reply carries strict security headers; the
Content-Security-Policy lets the page run only its own scripts and
styles and connect only to its own server, so even model output that
slipped past the sanitiser could not run or phone home.
"""

import hmac
from importlib import resources
from typing import Any, Iterator

from autobahn.twisted.resource import WebSocketResource
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http, resource, server

import claudews
from claudews.events import encode
from claudews.handshake import MAX_HANDSHAKE_BYTES, OPEN_HANDSHAKE_TIMEOUT
from claudews.metrics import CONTENT_TYPE

#: Sent with every HTTP reply.
SECURITY_HEADERS = (
    (
        b"Content-Security-Policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; "
        b"frame-ancestors 'none'",
    ),
    (b"X-Content-Type-Options", b"nosniff"),
    (b"Referrer-Policy", b"no-referrer"),
    (b"X-Frame-Options", b"DENY"),
    (b"Cross-Origin-Opener-Policy", b"same-origin"),
    (b"Cross-Origin-Resource-Policy", b"same-origin"),
)

CONTENT_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".png": b"image/png",
    ".svg": b"image/svg+xml",
    ".ico": b"image/x-icon",
    ".json": b"application/json",
    ".txt": b"text/plain; charset=utf-8",
}

#: The console's page.
INDEX = "/index.html"

_log = Logger()


def _walk(directory: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    for entry in directory.iterdir():
        name = prefix + "/" + entry.name
        if entry.is_dir():
            yield from _walk(entry, name)
        else:
            yield name, entry


def console_files(package: str = "claudews", folder: str = "web") -> dict[str, tuple[bytes, bytes]]:
    """
    The console's files, by URL path: C{(body, content type)}. Files of
    other kinds than L{CONTENT_TYPES} (licences, notes) are not served.
    """
    root = resources.files(package).joinpath(folder)
    files: dict[str, tuple[bytes, bytes]] = {}
    if not root.is_dir():
        return files
    for name, entry in _walk(root, ""):
        dot = name.rfind(".")
        kind = CONTENT_TYPES.get(name[dot:].lower()) if dot >= 0 else None
        if kind is not None:
            files[name] = (entry.read_bytes(), kind)
    return files


class Request(server.Request):
    """
    A request whose reply, whatever it is (a file, a 404, an error), carries
    the security headers.
    """

    def process(self) -> None:
        for name, value in SECURITY_HEADERS:
            self.setHeader(name, value)  # type: ignore[no-untyped-call]
        super().process()  # type: ignore[no-untyped-call]


class Console(resource.Resource):
    """
    The console's files; C{/} is its page.
    """

    isLeaf = True

    def __init__(self, files: dict[str, tuple[bytes, bytes]]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._files = files

    def render_GET(self, request: Any) -> bytes:
        path = request.path.decode("utf-8", "replace")
        found = self._files.get(INDEX if path == "/" else path)
        if found is None:
            request.setResponseCode(http.NOT_FOUND)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"Not found\n"
        body, kind = found
        request.setHeader(b"content-type", kind)
        # Always asked again (cheap: a few files): an upgraded server's
        # console must never run beside a cached older module.
        request.setHeader(b"cache-control", b"no-cache")
        return body


class WebSocket(resource.Resource):
    """
    C{/ws}: the WebSocket handshake goes to Autobahn; a plain HTTP request
    (a browser, curl, a probe) is told to upgrade, and never reaches the
    handshake checks, so it never counts as a failed handshake.
    """

    isLeaf = True

    def __init__(self, factory: Any) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._websocket: Any = WebSocketResource(factory)  # type: ignore[no-untyped-call]

    def render(self, request: Any) -> Any:
        upgrade = request.getHeader(b"upgrade") or b""
        if request.clientproto != b"HTTP/1.1":
            # Autobahn would see the request line WebSocketResource writes
            # anew, always HTTP/1.1: the version is checked here.
            request.setResponseCode(http.BAD_REQUEST)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"A WebSocket handshake needs HTTP/1.1.\n"
        if upgrade.strip().lower() != b"websocket":
            request.setResponseCode(426, b"Upgrade Required")
            request.setHeader(b"upgrade", b"websocket")
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"This is claudews' WebSocket: connect with a WebSocket client.\n"
        channel: Any = request.channel
        # From here on the connection is the WebSocket protocol's, with its
        # own timers and its own producer (the slow-client rule): the HTTP
        # channel lets go of both.
        channel.setTimeout(None)
        if channel.transport is not None:
            channel.transport.unregisterProducer()
        return self._websocket.render(request)


class Channel(http.HTTPChannel):
    """
    An HTTP connection whose first request must be in within
    C{OPEN_HANDSHAKE_TIMEOUT} seconds, however slowly it trickles in (the
    idle timeout alone restarts with every byte), and whose headers may be
    as long as a WebSocket handshake's.
    """

    totalHeadersSize = MAX_HANDSHAKE_BYTES
    _deadline: Any = None

    def connectionMade(self) -> None:
        super().connectionMade()  # type: ignore[no-untyped-call]
        later: Any = self.callLater
        self._deadline = later(OPEN_HANDSHAKE_TIMEOUT, self._too_slow)

    def allHeadersReceived(self) -> None:
        self._cancel_deadline()
        super().allHeadersReceived()  # type: ignore[no-untyped-call]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_deadline()
        super().connectionLost(reason)  # type: ignore[no-untyped-call]

    def _cancel_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if self.transport is not None:
            self.transport.abortConnection()


class Health(resource.Resource):
    """
    C{GET /health}: 200 and a small JSON body for probes, without a token
    (so nothing in it is secret).
    """

    isLeaf = True

    def __init__(self, factory: Any) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._factory = factory
        self._started = factory.reactor.seconds()

    def render_GET(self, request: Any) -> bytes:
        factory = self._factory
        projects = factory.registry.list()
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return encode(
            {
                "status": "ok",
                "version": claudews.__version__,
                "uptime_s": round(factory.reactor.seconds() - self._started, 3),
                "projects": len(projects),
                "running": sum(1 for p in projects if p.running),
                "connections": len(factory.connections),
            }
        )


def bearer_or_query(request: Any, token: str) -> bool:
    """
    Whether the twisted.web C{request} carries C{token}, as
    C{Authorization: Bearer} or as the one C{?token=} parameter; compared
    in constant time (as L{claudews.handshake.authorized} does for the
    WebSocket).
    """
    header: bytes = request.getHeader(b"authorization") or b""
    if header[:7].lower() == b"bearer ":
        given = header[7:].strip()
    else:
        tokens = request.args.get(b"token") or []
        if len(tokens) != 1:
            return False
        given = tokens[0]
    return hmac.compare_digest(given, token.encode("utf-8"))


class Metrics(resource.Resource):
    """
    C{GET /metrics}: the server's metrics in Prometheus' text format
    (L{claudews.metrics}), behind the token unless C{metrics-public}.
    """

    isLeaf = True

    def __init__(self, factory: Any) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._factory = factory

    def render_GET(self, request: Any) -> bytes:
        factory = self._factory
        token = factory.token
        request.setHeader(b"cache-control", b"no-store")
        if token is not None and not factory.settings.metrics_public:
            if not bearer_or_query(request, token):
                request.setResponseCode(http.UNAUTHORIZED)
                request.setHeader(b"www-authenticate", b'Bearer realm="claudews"')
                request.setHeader(b"content-type", b"text/plain; charset=utf-8")
                return b"The metrics need the token (Authorization: Bearer, or ?token=).\n"
        request.setHeader(b"content-type", CONTENT_TYPE)
        body: bytes = factory.metrics.render()
        return body


class Root(resource.Resource):
    """
    C{/ws} to the WebSocket, C{/health} to the probe, C{/metrics} to the
    scraper, everything else to the console.
    """

    def __init__(
        self, websocket: Any, health: Any, console: Any, metrics: Any = None
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.putChild(b"ws", websocket)
        self.putChild(b"health", health)
        if metrics is not None:
            self.putChild(b"metrics", metrics)
        self._console = console

    def getChild(self, path: bytes, request: Any) -> Any:
        # Reached for every path but /ws: the console is a leaf and reads
        # the whole path itself.
        return self._console


def make_site(factory: Any, files: dict[str, tuple[bytes, bytes]] | None = None) -> Any:
    """
    The site serving C{factory}'s WebSocket at C{/ws} and the console.
    """
    console = Console(console_files() if files is None else files)
    root = Root(WebSocket(factory), Health(factory), console, Metrics(factory))
    site: Any = server.Site(  # type: ignore[no-untyped-call]
        root, requestFactory=Request, reactor=factory.reactor
    )
    site.protocol = Channel
    site.displayTracebacks = False
    # Twisted would log "Starting factory <...Site object at 0x...>" at
    # each start and stop: the listening line says what matters.
    site.noisy = False
    # No access log: request lines can carry ?token=.
    site.log = lambda request: None
    return site
