"""
The WebSocket endpoint: the connection, its requests and its sends.

Wire protocol (version 1; docs/protocol.rst has the whole of it)::

    client -> {"type": "prompt", "id": 7, "path": "/w/app", "prompt": "..."}
    server -> {"type": "result", "id": 7, "ok": true, "result": {...}}
    server -> {"type": "event", "path": "/w/app", "seq": 42, "event": ...}

The factory, the fan-out and the safety options are in
L{claudews.wsfactory}. Every request gets exactly one C{result}; events are pushed to the
subscribers of a project in C{seq} order. The handshake is refused with
503 (too many connections), 404 (wrong path), 403 (Host or Origin not
allowed) or 401 (no or wrong token; past a few from one address, after a
growing delay) before the upgrade (L{claudews.handshake}). A connection's
frames, continuation frames and pings included, are handled at most
C{request_rate} a second (bursts of C{request_burst}): a client that sends
faster is not refused but paced (L{claudews.limits.Pacer}): its requests
wait, in order, and it is not read from until it is back under the rate.
A message in more than C{max_message_frames} fragments is closed with
1008, as is a client that does not read what it is sent
(L{claudews.backlog}). docs/security.rst says why each of these exists.
"""

from typing import TYPE_CHECKING, Any, Callable

from autobahn.twisted.websocket import WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet import defer
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from claudews import handshake, limits
from claudews.backlog import SendBacklog, unsent_in_twisted
from claudews.handshake import MAX_HANDSHAKE_BYTES, OPEN_HANDSHAKE_TIMEOUT
from claudews.outbox import Outbox
from claudews.requests import HANDLERS, Requests

if TYPE_CHECKING:
    # The factory imports this module (its protocol is ours).
    from claudews.wsfactory import ServerFactory

__all__ = [  # HANDLERS and the handshake bounds are re-exported for tests.
    "HANDLERS", "MAX_HANDSHAKE_BYTES", "OPEN_HANDSHAKE_TIMEOUT", "ServerProtocol",
]

#: Close codes the protocol uses; Autobahn's sendClose only takes 1000 and
#: 3000-4999, so these go out through sendCloseFrame.
GOING_AWAY = 1001
UNSUPPORTED_DATA = 1003
POLICY_VIOLATION = 1008

#: Seconds a cut client has to read what was sent before its close frame
#: (as long as a close handshake may take) before its socket is closed.
CUT_LINGER = 5.0


class ServerProtocol(WebSocketServerProtocol):
    """
    One client connection; a L{Subscriber} of the projects it subscribes
    to, whose sends its L{Outbox} makes.
    """

    # Autobahn uses self.log itself.
    _log = Logger()
    factory: "ServerFactory"
    _backlog: SendBacklog
    _outbox: Outbox
    _requests: Requests
    # Set by Autobahn from the factory's options.
    autoPingTimeout: float

    def __init__(self) -> None:
        super().__init__()
        self._address: str | None = None
        self._pacer: limits.Pacer | None = None
        # The frames of the message being received: what it costs the pacer.
        self._frames = 0
        # A ping timed out while the pacer kept its pong unread.
        self._ping_overdue = False
        # What to log about a refusal, when it says more than the HTTP reason.
        self._why: str | None = None
        # Cut for flooding: the socket lingers so the close frame arrives.
        self._linger = False
        # A refusal of a wrong token that waits (handshake.refusal_delay).
        self._refusal: handshake.LateRefusal | None = None

    # -- connection accounting

    def connectionMade(self) -> None:
        # Autobahn's own tcpNoDelay option never takes effect on a server
        # (it is read before the factory's options are copied to the
        # protocol): without this, small replies wait on Nagle's algorithm.
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            try:
                set_no_delay(True)
            except OSError:
                # Not a TCP socket (a UNIX one).
                pass
        factory = self.factory
        settings = factory.settings
        self._backlog = SendBacklog(
            factory.reactor,
            bound=settings.send_backlog_bytes,
            grace=settings.send_backlog_grace,
            cap=settings.send_backlog_cap,
            close=self._close_slow,
            measure=lambda: unsent_in_twisted(self.transport),
        )
        self._outbox = Outbox(
            self,
            self._backlog,
            cap=settings.send_backlog_cap,
            close_slow=self._close_slow,
            sent=factory.metrics.sent,
        )
        self._requests = Requests(factory, self, count=factory.metrics.request)
        super().connectionMade()
        transport: Any = self.transport
        self._address = limits.peer_address(transport.getPeer())
        count = factory.gate.peers.add(self._address)
        if handshake.far_too_many(count, factory.countConnections, settings):
            factory.gate.refused(
                self._address, self.peer, 503, "far too many connections, dropped at once"
            )
            self.wasClean = True
            self.dropConnection(abort=True)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        try:
            super().connectionLost(reason)
        finally:
            if self._pacer is not None:
                self._pacer.stop()
            if self._refusal is not None:
                # The peer went away while its refusal waited.
                self._refusal.forget()
            if self._address is not None:
                self.factory.gate.peers.remove(self._address)
                self._address = None

    # -- handshake (the checks are in claudews.handshake)

    def processHandshake(self) -> None:
        if self._refusal is not None:
            # The request was read and is refused, later: whatever else
            # comes meanwhile is not another handshake.
            return
        refusal = handshake.before_parsing(
            self.data,
            self._address,
            self.factory.gate,
            self.factory.settings.max_connections_per_address,
        )
        if refusal is not None:
            self._why = refusal.why
            self.failHandshake(refusal.reason, refusal.code)
            return
        super().processHandshake()

    def onConnect(  # type: ignore[override]  # Autobahn waits for a Deferred too
        self, request: Any
    ) -> defer.Deferred[None] | None:
        factory = self.factory
        refusal = handshake.check_request(
            request, factory.allowed_hosts(), factory.allowed_origins, factory.token
        )
        if refusal is None:
            return None
        self._why = refusal.why
        deny = ConnectionDeny(refusal.code, refusal.reason)  # type: ignore[no-untyped-call]
        delay = handshake.refusal_delay(refusal, self._address, factory.gate)
        if not delay:
            raise deny
        # Autobahn waits for the Deferred onConnect returns, and fails the
        # handshake with its error.
        self._refusal = handshake.LateRefusal(factory.reactor, factory.gate, self._address)
        return self._refusal.after(delay, deny)

    def failHandshake(self, reason: str, code: int = 400, responseHeaders: Any = None) -> None:
        # Autobahn quotes the request line in some reasons (a malformed
        # one, a fragment), and with it any ?token=.
        reason = self.factory.gate.redact(reason)
        self.factory.gate.refused(self._address, self.peer, code, self._why or reason)
        self.wasNotCleanReason = reason
        self.sendHttpErrorResponse(code, reason, responseHeaders)  # type: ignore[no-untyped-call]
        # Autobahn logs an unclean drop as a warning, once per refusal;
        # this one was logged above, within the refusal log budget.
        self.wasClean = True
        self.dropConnection(abort=False)

    def onOpenHandshakeTimeout(self) -> None:
        if self.state != WebSocketServerProtocol.STATE_CONNECTING:
            super().onOpenHandshakeTimeout()
            return
        self.openHandshakeTimeoutCall = None
        self.wasOpenHandshakeTimeout = True
        self.factory.gate.refused(
            self._address,
            self.peer,
            408,
            "no complete handshake within %g s" % (OPEN_HANDSHAKE_TIMEOUT,),
        )
        self.wasNotCleanReason = "opening handshake timeout"
        self.wasClean = True
        self.dropConnection(abort=True)

    def onOpen(self) -> None:
        settings = self.factory.settings
        self._pacer = limits.Pacer(
            self.factory.reactor,
            settings.request_rate,
            settings.request_burst,
            pause=self._pause_reading,
            resume=self._resume_reading,
        )
        transport: Any = self.transport
        transport.registerProducer(self._backlog, True)
        self.factory.connections.add(self)
        # The peer only: the request line and headers may hold the token.
        self._log.info("Client {peer} connected", peer=self.peer)

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        if self in self.factory.connections:
            self._log.info(
                "Client {peer} disconnected (code {code})", peer=self.peer, code=code
            )
        self.factory.connections.discard(self)
        self._requests.unsubscribe_all()
        self._backlog.stopProducing()
        self._outbox.closing()

    # -- sending: claudews.outbox, through Autobahn's streaming API (outbox.Wire)

    def in_open_state(self) -> bool:
        return bool(self.state == WebSocketServerProtocol.STATE_OPEN)

    # The Subscriber and PageSink of this connection's requests.

    def send_line(self, line: bytes) -> None:
        self._outbox.send_line(line)

    def send_prepared(self, prepared: Any, size: int) -> None:
        self._outbox.send_prepared(prepared, size)

    def send_frame(self, frame: bytes) -> None:
        """
        Put a message framed by L{claudews.outbox.prepare} on the wire:
        what Autobahn's sendData does for it, without the debug log line
        it formats for every send (no compression is ever negotiated and
        nothing is ever queued in Autobahn's send_queue, which only
        chopped or synchronous sends use).
        """
        # ITransport is a zope interface, which mypy reads as a class.
        transport: Any = self.transport
        transport.write(frame)

    def backlogged(self) -> bool:
        return self._outbox.backlogged()

    def when_drained(self) -> defer.Deferred[None]:
        return self._outbox.when_drained()

    def begin_page(self, stop: Callable[[], None]) -> bool:
        return self._outbox.begin_page(stop)

    def send_fragment(self, data: bytes) -> bool:
        return self._outbox.send_fragment(data)

    def end_page(self, complete: bool = True) -> None:
        self._outbox.end_page(complete)

    def _close_slow(self, why: str) -> None:
        if self.in_open_state():
            self.factory.metrics.slow_close()
        self._log.info("Closing {peer}, a slow client: {why}", peer=self.peer, why=why)
        self.close(POLICY_VIOLATION, "client too slow: " + why)

    def close(self, code: int, reason: str) -> None:
        # Inside a history page too: a control frame may go between its
        # fragments (RFC 6455 section 5.4).
        if self.in_open_state():
            self.sendCloseFrame(code=code, reasonUtf8=reason.encode("utf-8")[:120])
            self._outbox.closing()

    # -- requests, paced (claudews.limits.Pacer)

    def processData(self) -> bool:
        # While paced, what was read stays in Autobahn's buffer unparsed (at
        # most the read that overdrew the budget): its frames, control
        # frames included, are parsed in order as the budget allows, and a
        # read of thousands of tiny frames is never parsed in one go.
        if self._pacer is not None and self._pacer.paused:
            return False
        return super().processData()

    def _pause_reading(self) -> None:
        # Reading only: sending goes on (the slow-client rule is the
        # transport's producer, SendBacklog, the other way round).
        transport: Any = self.transport
        if not transport.disconnecting:
            transport.pauseProducing()

    def _resume_reading(self) -> None:
        # What was read before the pause comes first; it may use the budget
        # up again. (The pacer resumes from its timer, never from inside
        # Autobahn's parsing.)
        self.consumeData()
        if self._pacer is None or not self._pacer.paused:
            self._read_again()

    def _read_again(self) -> None:
        transport: Any = self.transport
        if not transport.disconnecting:
            transport.resumeProducing()
        if self._ping_overdue and self.autoPingTimeout:
            # Whatever arrives from now on answers the ping, as Autobahn
            # counts it; a client that sends nothing is dropped as usual.
            self._ping_overdue = False
            self.autoPingTimeoutCall = self.factory._batched_timer.call_later(
                self.autoPingTimeout, self.onAutoPingTimeout
            )

    def _stop_pacing(self) -> None:
        # Closing: what was read and what comes is read and parsed again,
        # so that the peer's close frame is found (its requests are not
        # answered: no data frame may follow a close frame). Parsed on the
        # next turn, in case this runs inside Autobahn's parsing.
        if self._pacer is not None and self._pacer.stop():
            self._read_again()
            self.factory.reactor.callLater(0, self.consumeData)

    def onAutoPingTimeout(self) -> None:
        if self._pacer is not None and self._pacer.paused:
            # The pong may be in the socket, unread because the client is
            # over its request rate: the ping gets a whole timeout again
            # once reading resumes.
            self.autoPingTimeoutCall = None
            self._ping_overdue = True
            return
        super().onAutoPingTimeout()

    def sendCloseFrame(
        self, code: int | None = None, reasonUtf8: bytes | None = None, isReply: bool = False
    ) -> None:
        self._stop_pacing()
        super().sendCloseFrame(code, reasonUtf8, isReply)

    def _cut(self, reason: str) -> None:
        """
        Close with 1008 and read nothing more: what a flooding client has
        sent already is not parsed (each tiny frame costs Autobahn a copy of
        what follows it in the buffer), and the close frame goes out first.

        The socket is not closed at once: closed with unread input, it
        would be reset, and the reset can overtake the close frame (and the
        replies before it) on their way to the client. Its sending side
        ends after the close frame; the rest after the close handshake's
        time.
        """
        if self.in_open_state():
            self.close(POLICY_VIOLATION, reason)
            self.wasClean = True
            self._linger = True
            self.dropConnection(abort=False)

    def _closeConnection(self, abort: bool = False) -> None:
        transport: Any = self.transport
        half_close = getattr(transport, "loseWriteConnection", None)
        if abort or not self._linger or half_close is None:
            super()._closeConnection(abort)
            return
        # Read nothing more, end the sending side after what is queued (the
        # close frame last), and the rest after a close handshake's time.
        transport.pauseProducing()
        half_close()
        self.factory.reactor.callLater(CUT_LINGER, transport.abortConnection)

    def onMessageBegin(self, isBinary: bool) -> None:
        super().onMessageBegin(isBinary)
        self._frames = 0

    def onMessageFrameBegin(self, length: int) -> None:
        # Every data frame, continuation frames too, is a request: a
        # message in a million 1-byte fragments costs a million frames.
        super().onMessageFrameBegin(length)
        if not self.in_open_state() or self.failedByMe:
            return
        self._frames += 1
        most = self.factory.settings.max_message_frames
        if self._frames > most:
            self._log.info(
                "Closing {peer}: more than {most} frames in one message", peer=self.peer,
                most=most,
            )
            self._cut("more than %d frames in one message" % (most,))

    def onPing(self, payload: bytes) -> None:
        # Every ping costs a pong: a flood of pings is a flood of requests.
        if self.in_open_state():
            assert self._pacer is not None
            self._pacer.spend()
            super().onPing(payload)

    def onPong(self, payload: bytes) -> None:
        # Autobahn logs a warning for each pong that does not answer its
        # ping: a flood of those is a flood of requests too.
        if self.in_open_state():
            assert self._pacer is not None
            self._pacer.spend()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if not self.in_open_state():
            # Closing: what the client still sends gets no answer.
            return
        if isBinary:
            self.close(UNSUPPORTED_DATA, "binary frames are not supported")
            return
        assert self._pacer is not None
        self._pacer.spend(self._frames)
        self._requests.receive(payload)
