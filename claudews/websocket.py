"""
The WebSocket endpoint: handshake checks, request dispatch, fan-out.

Wire protocol (version 1; docs/protocol.rst has the whole of it)::

    client -> {"type": "prompt", "id": 7, "path": "/w/app", "prompt": "..."}
    server -> {"type": "result", "id": 7, "ok": true, "result": {...}}
    server -> {"type": "event", "path": "/w/app", "seq": 42, "event": ...}

Every request gets exactly one C{result}; events are pushed to the
subscribers of a project in C{seq} order. The handshake is refused with
429 (the address failed too many handshakes lately), 503 (too many
connections), 404 (wrong path), 403 (Host or Origin not allowed) or 401
(no or wrong token) before the upgrade. A connection sends at most
C{request_rate} requests a second (bursts of C{request_burst}): past that
a request is refused with C{bad_request}, and a client that keeps going
is closed with 1008. docs/security.rst says why each of these exists.
"""

import hmac
import json
from typing import Any, Callable, Sequence

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import PreparedMessage
from autobahn.websocket.types import ConnectionDeny
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

import claudews
from claudews import limits
from claudews.errors import RequestError
from claudews.interfaces import Subscriber
from claudews.events import encode, error_reply, reply
from claudews.requests import HANDLERS, Requests

#: Close codes the protocol uses; Autobahn's sendClose only takes 1000 and
#: 3000-4999, so these go out through sendCloseFrame.
GOING_AWAY = 1001
UNSUPPORTED_DATA = 1003
POLICY_VIOLATION = 1008

PROTOCOL_VERSION = 1

#: A handshake request (request line and headers) may be this long; Autobahn
#: itself would buffer an endless one until the handshake timeout.
MAX_HANDSHAKE_BYTES = 64 * 1024

#: Seconds a client has to finish its opening handshake.
OPEN_HANDSHAKE_TIMEOUT = 10


def _no_constant(name: str) -> None:
    # NaN and Infinity are Python's extensions, not JSON.
    raise ValueError("not JSON: " + name)


class _Backlog:
    """
    The transport's streaming producer: it tells us when the peer stops
    reading, and counts what we queue while it does.
    """

    def __init__(self, on_resume: Callable[[], None]) -> None:
        self.paused = False
        self.unsent = 0
        self.waiters: list[defer.Deferred] = []
        self._on_resume = on_resume

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        # Twisted resumes a producer once its buffer is empty.
        self.paused = False
        self.unsent = 0
        self._on_resume()
        waiters, self.waiters = self.waiters, []
        for d in waiters:
            d.callback(None)

    def stopProducing(self) -> None:
        # The connection is gone: whoever waited for it to drain has
        # nothing more to send to it.
        self.waiters = []


class ServerProtocol(Requests, WebSocketServerProtocol):
    # Autobahn uses self.log itself.
    _log = Logger()

    def __init__(self) -> None:
        super().__init__()
        self._subscribed: dict[str, Any] = {}
        self._backlog = _Backlog(self._caught_up)
        self._grace_call: Any = None
        self._address: str | None = None
        self._budget: limits.RequestBudget | None = None
        # What to log about a refusal, when it says more than the HTTP reason.
        self._why: str | None = None

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
        super().connectionMade()
        self._address = limits.peer_address(self.transport.getPeer())
        settings = self.factory.settings
        count = self.factory.gate.peers.add(self._address)
        # Over the limits, a handshake gets a 503 once its request is in;
        # this far over them, they are not clients waiting for their 503:
        # refuse them before they hold a descriptor for the handshake time.
        if (
            count > 2 * settings.max_connections_per_address
            or self.factory.countConnections > 2 * settings.max_connections
        ):
            self.factory.gate.refused(
                self._address, self.peer, 503, "far too many connections, dropped at once"
            )
            self.wasClean = True
            self.dropConnection(abort=True)

    def connectionLost(self, reason: Any) -> None:
        try:
            super().connectionLost(reason)
        finally:
            if self._address is not None:
                self.factory.gate.peers.remove(self._address)
                self._address = None

    # -- handshake

    def processHandshake(self) -> None:
        end = self.data.find(b"\r\n\r\n")
        if end > MAX_HANDSHAKE_BYTES or (end < 0 and len(self.data) > MAX_HANDSHAKE_BYTES):
            self.failHandshake("Request Header Fields Too Large", 431)
            return
        if end < 0:
            return
        # Before Autobahn parses anything: these peers get no further.
        gate = self.factory.gate
        if gate.guard.blocked(self._address):
            self.failHandshake("Too Many Requests", 429)
            return
        most = self.factory.settings.max_connections_per_address
        if gate.peers.count(self._address) > most:
            self._why = "over %d connections from %s" % (most, self._address)
            self.failHandshake("Service Unavailable", 503)
            return
        super().processHandshake()

    def onConnect(self, request: Any) -> None:
        factory = self.factory
        if request.path != "/ws":
            raise ConnectionDeny(404, "Not Found")
        host = request.headers.get("host", "").strip().lower()
        if host not in factory.allowed_hosts():
            self._why = "Host %r not allowed" % (host[:200],)
            raise ConnectionDeny(403, "Host not allowed")
        origin = request.headers.get("origin")
        if origin is not None and origin.strip().lower() not in factory.allowed_origins:
            self._why = "Origin %r not allowed" % (origin[:200],)
            raise ConnectionDeny(403, "Origin not allowed")
        if factory.token is not None and not self._authorized(request):
            self._why = "missing or wrong token"
            raise ConnectionDeny(401, "Unauthorized")
        return None

    def failHandshake(self, reason: str, code: int = 400, responseHeaders: Any = None) -> None:
        # Autobahn quotes the request line in some reasons (a malformed
        # one, a fragment), and with it any ?token=.
        reason = self.factory.gate.redact(reason)
        self.factory.gate.refused(self._address, self.peer, code, self._why or reason)
        self.wasNotCleanReason = reason
        self.sendHttpErrorResponse(code, reason, responseHeaders)
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

    def _authorized(self, request: Any) -> bool:
        expected = self.factory.token.encode("utf-8")
        given = None
        header = request.headers.get("authorization", "")
        if header[:7].lower() == "bearer ":
            given = header[7:].strip()
        else:
            tokens = request.params.get("token") or []
            given = tokens[0] if len(tokens) == 1 else None
        if given is None:
            return False
        return hmac.compare_digest(given.encode("utf-8", "replace"), expected)

    def onOpen(self) -> None:
        settings = self.factory.settings
        self._budget = limits.RequestBudget(
            settings.request_rate, settings.request_burst, self.factory.reactor.seconds()
        )
        self.transport.registerProducer(self._backlog, True)
        self.factory.connections.add(self)

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        self.factory.connections.discard(self)
        for project in self._subscribed.values():
            project.unsubscribe(self)
        self._subscribed.clear()
        if self._grace_call is not None and self._grace_call.active():
            self._grace_call.cancel()
        self._backlog.stopProducing()

    # -- sending (the subscribers.Subscriber interface)

    def _open(self) -> bool:
        return self.state == WebSocketServerProtocol.STATE_OPEN

    def send_line(self, line: bytes) -> None:
        # A prepared message, because Autobahn's sendMessage applies the
        # inbound size limit to outbound messages too: a reply or an event
        # may be far larger than what a client may send.
        if self._open() and self._account(len(line)):
            self.sendPreparedMessage(self.factory.prepareMessage(line, isBinary=False))

    def send_prepared(self, prepared: Any, size: int) -> None:
        if self._open() and self._account(size):
            self.sendPreparedMessage(prepared)

    def backlogged(self) -> bool:
        return self._backlog.paused

    def when_drained(self) -> defer.Deferred:
        if not self._backlog.paused:
            return defer.succeed(None)
        d = defer.Deferred()
        self._backlog.waiters.append(d)
        return d

    def _account(self, size: int) -> bool:
        """
        Enforce the slow-client rule before queueing C{size} more bytes;
        whether to send them.

        Only what was queued before this message counts against the hard
        cap: one big event alone never gets a client closed. A client
        closed here gets nothing more: no data frame may follow the close
        frame (RFC 6455 section 5.5.1).
        """
        backlog = self._backlog
        if not backlog.paused:
            return True
        settings = self.factory.settings
        unsent = self._unsent()
        if unsent > settings.send_backlog_cap:
            self._close_slow("over %d bytes unsent" % (settings.send_backlog_cap,))
            return False
        backlog.unsent += size
        if unsent + size > settings.send_backlog_bytes and self._grace_call is None:
            self._grace_call = self.factory.reactor.callLater(
                settings.send_backlog_grace, self._grace_over
            )
        return True

    def _unsent(self) -> int:
        """
        Bytes queued for the peer that its socket has not taken yet.

        Twisted resumes a paused producer only once its buffer is empty,
        so a client that reads exactly as fast as we write may never
        resume; the transport's buffer says how far behind it really is.
        Where that cannot be read (TLS, test transports), what was queued
        since the pause is the measure.
        """
        transport = self.transport
        try:
            return (
                len(transport.dataBuffer) - transport.offset + transport._tempDataLen
            )
        except (AttributeError, TypeError):
            return self._backlog.unsent

    def _caught_up(self) -> None:
        if self._grace_call is not None and self._grace_call.active():
            self._grace_call.cancel()
        self._grace_call = None

    def _grace_over(self) -> None:
        self._grace_call = None
        settings = self.factory.settings
        if self._backlog.paused and self._unsent() > settings.send_backlog_bytes:
            self._close_slow(
                "over %d bytes unsent for %g s"
                % (settings.send_backlog_bytes, settings.send_backlog_grace)
            )

    def _close_slow(self, why: str) -> None:
        self._log.info("Closing {peer}, a slow client: {why}", peer=self.peer, why=why)
        self.close(POLICY_VIOLATION, "client too slow: " + why)

    def close(self, code: int, reason: str) -> None:
        if self._open():
            self.sendCloseFrame(code=code, reasonUtf8=reason.encode("utf-8")[:120])

    def _reply(self, request_id: Any, result: dict) -> None:
        self.send_line(encode(reply(request_id, result)))

    def _error(self, request_id: Any, code: str, message: str) -> None:
        self.send_line(encode(error_reply(request_id, code, message)))

    # -- requests

    def _spend(self) -> str:
        verdict = self._budget.spend(self.factory.reactor.seconds())
        if verdict == limits.CLOSE:
            self._log.info(
                "Closing {peer}: over {rate:g} requests per second", peer=self.peer,
                rate=self.factory.settings.request_rate,
            )
            self.close(POLICY_VIOLATION, "too many requests")
        return verdict

    def onPing(self, payload: bytes) -> None:
        # Every ping costs a pong: a flood of pings is a flood of requests.
        if self._open() and self._spend() == limits.OK:
            super().onPing(payload)

    def onPong(self, payload: bytes) -> None:
        # Autobahn logs a warning for each pong that does not answer its
        # ping: a flood of those is a flood of requests too.
        if self._open():
            self._spend()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if not self._open():
            # Closing: what the client still sends gets no answer.
            return
        if isBinary:
            self.close(UNSUPPORTED_DATA, "binary frames are not supported")
            return
        verdict = self._spend()
        if verdict == limits.CLOSE:
            return
        try:
            message = json.loads(payload, parse_constant=_no_constant)
        except (ValueError, RecursionError):
            self._error(None, "bad_request", "not valid JSON")
            return
        if not isinstance(message, dict):
            self._error(None, "bad_request", "a request must be a JSON object")
            return
        request_id = message.get("id")
        if verdict == limits.REFUSE:
            self._error(
                request_id,
                "bad_request",
                "too many requests: at most %g per second" % (self.factory.settings.request_rate,),
            )
            return
        try:
            result = self._dispatch(message)
        except RequestError as e:
            self._error(request_id, e.code, e.message)
            return
        except Exception:
            self._log.failure("Request {type!r} failed", type=message.get("type"))
            self._error(request_id, "internal", "internal error")
            return
        if isinstance(result, defer.Deferred):
            result.addCallbacks(
                lambda value: self._answer(request_id, value),
                lambda failure: self._failed(request_id, failure),
            )
        else:
            self._answer(request_id, result)

    def _answer(self, request_id: Any, result: Any) -> None:
        if isinstance(result, bytes):
            self.send_line(result)
        else:
            self._reply(request_id, result)

    def _failed(self, request_id: Any, failure: Failure) -> None:
        if failure.check(RequestError):
            self._error(request_id, failure.value.code, failure.value.message)
        else:
            self._log.failure("Request failed", failure)
            self._error(request_id, "internal", "internal error")

    def _dispatch(self, message: dict) -> Any:
        kind = message.get("type")
        if not isinstance(kind, str):
            raise RequestError("bad_request", "missing field 'type'")
        handler = HANDLERS.get(kind)
        if handler is None:
            raise RequestError("unknown_type", "unknown request type %r" % (kind[:100],))
        return handler(self, message)



def fanout(line: bytes, subscribers: Sequence[Subscriber]) -> None:
    """
    Frame one event once and send that frame to every subscriber (a
    server's frames are not masked).
    """
    prepared = PreparedMessage(line, False, False, False)
    for subscriber in subscribers:
        subscriber.send_prepared(prepared, len(line))


class _Call:
    def __init__(self, call: Any) -> None:
        self._call = call

    def cancel(self) -> None:
        # Autobahn may cancel a timer that has already fired.
        if self._call.active():
            self._call.cancel()


class _Timers:
    """
    The part of txaio's batched timer that Autobahn uses, on our reactor.
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor

    def call_later(self, delay: float, func: Callable, *args: Any, **kwargs: Any) -> _Call:
        return _Call(self._reactor.callLater(delay, func, *args, **kwargs))


class ServerFactory(WebSocketServerFactory):
    """
    @ivar connections: the open connections, for shutdown.
    @ivar gate: the per-address limits and the log of refusals.
    """

    protocol = ServerProtocol
    _log = Logger()

    def __init__(
        self,
        *,
        settings: Any,
        registry: Any,
        token: str | None,
        validate_options: Callable[[Any], dict],
        option_flags: Callable[[dict], list],
        claude_version: Callable[[], str | None] = lambda: None,
        reactor: Any = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        super().__init__(server="claudews/" + claudews.__version__, reactor=reactor)
        self.reactor = reactor
        # Autobahn builds its timers (handshake, ping, close timeouts) on
        # txaio's global loop; give them this factory's reactor instead.
        self._batched_timer = _Timers(reactor)
        self.settings = settings
        self.registry = registry
        self.token = token
        self.validate_options = validate_options
        self.option_flags = option_flags
        self._claude_version = claude_version
        self.connections: set[ServerProtocol] = set()
        self.gate = limits.Gate(settings, token, reactor.seconds)
        self.listen_host: str | None = None
        self.listen_port: int | None = None
        self.allowed_origins = frozenset(o.lower() for o in settings.allowed_origins)
        # Autobahn's defaults are unlimited: set every safety option here.
        self.setProtocolOptions(
            maxFramePayloadSize=settings.max_message_bytes,
            maxMessagePayloadSize=settings.max_message_bytes,
            autoFragmentSize=0,
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

    def listening_on(self, host: str | None, port: int | None) -> None:
        """
        Tell the factory its listening address, for the Host allow-list;
        C{port} is C{None} on a UNIX socket.
        """
        self.listen_host = host
        self.listen_port = port

    def allowed_hosts(self) -> frozenset:
        hosts = {"localhost", "127.0.0.1", "[::1]"}
        if self.listen_host and self.listen_host not in ("0.0.0.0", "::", ""):
            host = self.listen_host
            hosts.add("[%s]" % (host,) if ":" in host else host)
        allowed = set(h.lower() for h in self.settings.allowed_hosts)
        if self.listen_port is None:
            # A UNIX socket has no port for a client to name: the loopback
            # names alone, as clients of one (curl --unix-socket) send them.
            # Whatever a proxy in front sends goes in allowed-host.
            return frozenset(allowed | hosts)
        for host in hosts:
            allowed.add("%s:%s" % (host, self.listen_port))
            if self.listen_port in (80, 443):
                allowed.add(host)
        return frozenset(allowed)

    def server_info(self) -> dict:
        """
        The reply to server.info, at once: the CLI's version is what is
        known now (C{None} while C{claude --version} still runs), so a slow
        or hung CLI never holds up this reply or those queued behind it.
        """
        s = self.settings
        return {
            "version": claudews.__version__,
            "protocol": PROTOCOL_VERSION,
            "claude": {"bin": s.claude_bin, "version": self._claude_version()},
            "limits": {
                "max_message_bytes": s.max_message_bytes,
                "max_prompt_bytes": s.max_prompt_bytes,
                "max_queue": s.max_queue,
                "max_projects": s.max_projects,
                "max_running": s.max_running,
                "timeout": s.timeout,
                "idle_timeout": s.idle_timeout,
                "permission_timeout": s.permission_timeout,
                "request_rate": s.request_rate,
                "request_burst": s.request_burst,
                "history_limit": 1000,
                "client_options": list(s.client_options),
            },
        }

    def close_all(self) -> defer.Deferred:
        """
        Close every connection with 1001; fires when they are gone (or
        after the close handshake timeout, when Autobahn drops them).
        """
        waits = []
        for connection in list(self.connections):
            waits.append(connection.is_closed)
            connection.close(GOING_AWAY, "server shutting down")
        return defer.DeferredList(waits, consumeErrors=True)
