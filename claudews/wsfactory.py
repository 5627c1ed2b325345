"""
The server-wide side of the WebSocket endpoint: the factory that makes
each connection (L{claudews.websocket.ServerProtocol}) and holds what they
share (settings, the projects, the token, the per-address gate, the
metrics), with every Autobahn safety option set in one place; and the
fan-out, which frames an event once for all its subscribers.
"""

from typing import Any, Callable, Sequence

from autobahn.twisted.websocket import WebSocketServerFactory
from twisted.internet import defer
from twisted.logger import Logger

import claudews
from claudews import handshake, limits
from claudews.autobahntimers import ReactorTimers
from claudews.config import Settings
from claudews.interfaces import Fanout, Projects, ReactorTime, Subscriber
from claudews.metrics import Metrics
from claudews.outbox import prepare
from claudews.handshake import OPEN_HANDSHAKE_TIMEOUT
from claudews.requests import HANDLERS
from claudews.websocket import GOING_AWAY, ServerProtocol


def fanout(line: bytes, subscribers: Sequence[Subscriber]) -> None:
    """
    Frame one event once and send that frame to every subscriber (a
    server's frames are not masked).
    """
    prepared = prepare(line)
    for subscriber in subscribers:
        subscriber.send_prepared(prepared, len(line))


def counted_fanout(metrics: Metrics) -> Fanout:
    """
    L{fanout}, counting the events it hands to subscribers in C{metrics}.
    """

    def send(line: bytes, subscribers: Sequence[Subscriber]) -> None:
        metrics.fanned_out(len(subscribers))
        fanout(line, subscribers)

    return send


class ServerFactory(WebSocketServerFactory):
    """
    The server's connections, as L{claudews.interfaces.Server} for their
    requests.

    @ivar connections: the open connections, for shutdown.
    @ivar gate: the per-address limits and the log of refusals.
    @ivar metrics: the server's L{Metrics} (a private one unless given).
    """

    protocol = ServerProtocol  # type: ignore[assignment]
    _log = Logger()

    def __init__(
        self,
        *,
        settings: Settings,
        registry: Projects,
        token: str | None,
        validate_options: Callable[[object], dict[str, Any]],
        option_flags: Callable[[dict[str, Any]], Any],
        reactor: ReactorTime,
        claude_version: Callable[[], str | None] = lambda: None,
        metrics: Metrics | None = None,
    ) -> None:
        super().__init__(  # type: ignore[no-untyped-call]
            server="claudews/" + claudews.__version__, reactor=reactor
        )
        self.reactor = reactor
        # Autobahn's timers, on this reactor rather than txaio's global one.
        self._batched_timer = ReactorTimers(reactor)
        self.settings = settings
        self.registry = registry
        self.token = token
        self._validate_options = validate_options
        self._option_flags = option_flags
        self._claude_version = claude_version
        self.connections: set[ServerProtocol] = set()
        self.metrics = Metrics(reactor, HANDLERS) if metrics is None else metrics
        self.metrics.track_connections(lambda: len(self.connections))
        self.gate = limits.Gate(settings, token, reactor.seconds)
        self.listen_host: str | None = None
        self.listen_port: int | None = None
        self.allowed_origins = frozenset(o.lower() for o in settings.allowed_origins)
        self._set_safety_options(settings)

    def _set_safety_options(self, settings: Settings) -> None:
        # Autobahn's defaults are unlimited: set every safety option here.
        self.setProtocolOptions(  # type: ignore[no-untyped-call]
            versions=[8, 13],
            maxFramePayloadSize=settings.max_message_bytes,
            maxMessagePayloadSize=settings.max_message_bytes,
            # Frames per message are bounded in onMessageFrameBegin. What the
            # server sends is not fragmented (a history page is, on purpose:
            # claudews.outbox).
            autoFragmentSize=0,
            utf8validateIncoming=True,
            requireMaskedClientFrames=True,
            maskServerFrames=False,
            applyMask=True,
            # No permessage-deflate: a compressed message could inflate to
            # far more than it cost to send.
            perMessageCompressionAccept=lambda offers: None,
            echoCloseCodeReason=False,
            serveFlashSocketPolicy=False,
            trustXForwardedFor=0,
            failByDrop=False,
            openHandshakeTimeout=OPEN_HANDSHAKE_TIMEOUT,
            closeHandshakeTimeout=5,
            autoPingInterval=settings.ping_interval,
            autoPingTimeout=settings.ping_timeout,
            # Origins are checked in onConnect (exact match, 403); Autobahn's
            # own check would answer 400 and allows its own port.
            allowedOrigins=["*"],
            allowNullOrigin=True,
            tcpNoDelay=True,
            webStatus=False,
            # Autobahn answers 503 past this many (handshaking included);
            # the per-address bound is checked in processHandshake.
            maxConnections=settings.max_connections,
        )

    def validate_options(self, given: object) -> dict[str, Any]:
        return self._validate_options(given)

    def option_flags(self, options: dict[str, Any]) -> Any:
        return self._option_flags(options)

    def claude_version(self) -> str | None:
        return self._claude_version()

    def listening_on(self, host: str | None, port: int | None) -> None:
        """
        Tell the factory its listening address, for the Host allow-list;
        C{port} is C{None} on a UNIX socket.
        """
        self.listen_host = host
        self.listen_port = port

    def allowed_hosts(self) -> frozenset[str]:
        return handshake.allowed_hosts(
            self.listen_host, self.listen_port, self.settings.allowed_hosts
        )

    def close_all(self) -> defer.Deferred[Any]:
        """
        Close every connection with 1001; fires when they are gone (or
        after the close handshake timeout, when Autobahn drops them).
        """
        waits = []
        for connection in list(self.connections):
            waits.append(connection.is_closed)
            connection.close(GOING_AWAY, "server shutting down")
        return defer.DeferredList(waits, consumeErrors=True)
