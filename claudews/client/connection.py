"""
One WebSocket to a claudews server: requests answered by id, and
subscriptions that survive a dropped connection.

A connection that drops while the client follows a project is opened again
a few times with growing pauses; each project is subscribed again with
C{since} the last C{seq} seen (and the C{epoch} it belonged to), and events
that arrive twice are dropped by C{seq}: nothing missed, nothing doubled.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Sequence

import attrs
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.ssl import optionsForClientTLS
from twisted.python.failure import Failure

from claudews.client.once import Once
from claudews.client.errors import (
    ClientError,
    ConnectFailed,
    HandshakeRefused,
    RequestFailed,
    handshake_status,
)

JSON = dict[str, Any]
FrameHandler = Callable[[JSON], None]
StatusHandler = Callable[[str], None]

#: Pauses before each attempt to open a dropped connection again.
RECONNECT_DELAYS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
#: Events can be many MB (the CLI prints huge lines); the server is trusted.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024


class ClientProtocol(WebSocketClientProtocol):
    """
    The WebSocket protocol: JSON text frames in and out, and two Deferreds
    that say when the handshake succeeded and when the connection ended.
    """

    def __init__(self) -> None:
        super().__init__()
        self.opened: Deferred[None] = Deferred()
        self.closed: Deferred[ClientError] = Deferred()
        self.on_frame: FrameHandler = lambda frame: None
        self._http_status: int | None = None

    def failHandshake(self, reason: str) -> None:
        # Autobahn reports a refused upgrade only as text in its close
        # reason; the status line it parsed is exact, so keep its code.
        self._http_status = handshake_status(getattr(self, "http_status_line", None), reason)
        super().failHandshake(reason)  # type: ignore[no-untyped-call]

    def onOpen(self) -> None:
        self.opened.callback(None)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        try:
            frame = json.loads(payload.decode("utf-8"))
        except ValueError:
            return
        if isinstance(frame, dict):
            self.on_frame(frame)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        error = self._error(code, reason)
        if not self.opened.called:
            self.opened.errback(error)
        else:
            self.closed.callback(error)

    def _error(self, code: int | None, reason: str | None) -> ClientError:
        status = self._http_status
        if status is None and not self.opened.called:
            status = handshake_status(None, reason)
        if status is not None:
            return HandshakeRefused(status)
        detail = reason or "no reason given"
        if code not in (None, 1006):
            detail = "closed with %s: %s" % (code, detail)
        return ConnectFailed("connection lost (%s)" % (detail,))

    def send_frame(self, frame: JSON) -> None:
        self.sendMessage(  # type: ignore[no-untyped-call]
            json.dumps(frame).encode("utf-8"), isBinary=False
        )


def make_factory(url: str, token: str | None, reactor: Any) -> WebSocketClientFactory:
    """
    A client factory with every safety option set. No C{Origin} header is
    sent: the server refuses origins that are not on its allow-list.
    """
    headers = {"Authorization": "Bearer " + token} if token else {}
    factory = WebSocketClientFactory(  # type: ignore[no-untyped-call]
        url, headers=headers, useragent="claudews-client", reactor=reactor
    )
    factory.protocol = ClientProtocol
    factory.setProtocolOptions(  # type: ignore[no-untyped-call]
        maxFramePayloadSize=MAX_MESSAGE_BYTES,
        maxMessagePayloadSize=MAX_MESSAGE_BYTES,
        openHandshakeTimeout=10,
        closeHandshakeTimeout=2,
        autoPingInterval=20,
        autoPingTimeout=20,
    )
    return factory


@attrs.define
class Subscription:
    """A project followed on this connection, and the last event seen."""

    path: str
    on_frame: FrameHandler
    last_seq: int | None = None
    epoch: int | None = None

    def request(self) -> JSON:
        """The C{subscribe} request that resumes after the last seen event."""
        fields: JSON = {"type": "subscribe", "path": self.path}
        if self.last_seq is not None:
            fields["since"] = self.last_seq
            if self.epoch is not None:
                fields["epoch"] = self.epoch
        return fields

    def subscribed(self, result: JSON) -> None:
        """Take the reply of C{subscribe}: where the event stream starts."""
        epoch = result.get("epoch")
        if self.last_seq is None or (self.epoch is not None and epoch != self.epoch):
            # Resubscribed to a project whose history started over: the
            # server replays it from the start.
            self.last_seq = result.get("last_seq", 0) if self.last_seq is None else 0
        self.epoch = epoch if isinstance(epoch, int) else None

    def accept(self, frame: JSON) -> bool:
        """Whether C{frame} is new (not seen before), recording its seq."""
        seq = frame.get("seq")
        if not isinstance(seq, int):
            return True
        if self.last_seq is not None and seq <= self.last_seq:
            return False
        self.last_seq = seq
        return True


class Connection:
    """
    Requests and subscriptions over one WebSocket, opened again with
    C{since} when it drops while projects are followed.
    """

    def __init__(
        self,
        url: str,
        token: str | None,
        reactor: Any,
        on_status: StatusHandler = lambda text: None,
        delays: Sequence[float] = RECONNECT_DELAYS,
    ) -> None:
        self._factory = make_factory(url, token, reactor)
        self._url = url
        self._reactor = reactor
        self._on_status = on_status
        self._delays = tuple(delays)
        self._protocol: ClientProtocol | None = None
        self._pending: dict[int, Deferred[JSON]] = {}
        self._ids = 0
        self._subscriptions: dict[str, Subscription] = {}
        self._closing = False
        #: Fires with the error that ended the connection for good.
        self.lost: Once[None] = Once()
        # Stopped by a signal (SIGTERM): the drop that follows is ours.
        reactor.addSystemEventTrigger("before", "shutdown", self._shutdown)

    def _shutdown(self) -> None:
        self._closing = True

    def open(self) -> Deferred[None]:
        """Connect; fails with L{ClientError} when the server cannot be used."""
        return self._attempt().addCallback(self._opened)

    def _attempt(self) -> Deferred[ClientProtocol]:
        factory = self._factory
        endpoint: Any = HostnameEndpoint(self._reactor, factory.host, factory.port, timeout=10)
        if factory.isSecure:
            endpoint = wrapClientTLS(optionsForClientTLS(factory.host), endpoint)
        connecting: Deferred[ClientProtocol] = endpoint.connect(factory)

        def cannot(failure: Failure) -> Failure:
            if isinstance(failure.value, ClientError):
                return failure
            raise ConnectFailed(
                "cannot connect to %s (%s)" % (self._url, failure.getErrorMessage())
            )

        def handshake(protocol: ClientProtocol) -> Deferred[ClientProtocol]:
            protocol.on_frame = self._received
            return protocol.opened.addCallback(lambda _: protocol)

        return connecting.addCallback(handshake).addErrback(cannot)

    def _opened(self, protocol: ClientProtocol) -> None:
        self._protocol = protocol
        protocol.closed.addCallback(self._dropped, protocol)

    def request(self, type: str, **fields: Any) -> Deferred[JSON]:
        """Send a request; its Deferred fires with the C{result} or fails."""
        protocol = self._protocol
        if protocol is None:
            raise ConnectFailed("not connected")
        self._ids += 1
        d: Deferred[JSON] = Deferred()
        self._pending[self._ids] = d
        protocol.send_frame(dict(fields, type=type, id=self._ids))
        return d

    def subscribe(
        self, path: str, on_frame: FrameHandler, since: int | None = None
    ) -> Deferred[JSON]:
        """
        Follow a project: C{on_frame} gets each of its events once, in
        order, and its C{project} frames; C{since} replays stored events.
        """
        subscription = Subscription(path, on_frame, last_seq=since)
        self._subscriptions[path] = subscription
        return self._subscribe(subscription)

    def _subscribe(self, subscription: Subscription) -> Deferred[JSON]:
        fields = subscription.request()
        d = self.request(fields.pop("type"), **fields)

        def took(result: JSON) -> JSON:
            subscription.subscribed(result)
            return result

        # Runs as soon as the reply arrives, before any replayed event.
        return d.addCallback(took)

    def _received(self, frame: JSON) -> None:
        if frame.get("type") == "result":
            self._answer(frame)
            return
        subscription = self._subscriptions.get(str(frame.get("path")))
        if subscription is None and frame.get("type") == "project":
            project = frame.get("project")
            path = project.get("path") if isinstance(project, dict) else None
            subscription = self._subscriptions.get(str(path))
        if subscription is not None and subscription.accept(frame):
            try:
                subscription.on_frame(frame)
            except Exception as e:
                # Showing the event failed (a closed pipe, a bug): the
                # command ends with that error rather than a silent gap.
                self._give_up(e)

    def _answer(self, frame: JSON) -> None:
        request_id = frame.get("id")
        d = self._pending.pop(request_id, None) if isinstance(request_id, int) else None
        if d is None:
            return
        if frame.get("ok"):
            result = frame.get("result")
            d.callback(result if isinstance(result, dict) else {})
        else:
            error = frame.get("error")
            error = error if isinstance(error, dict) else {}
            d.errback(RequestFailed(str(error.get("code", "error")), str(error.get("message", ""))))

    def _dropped(self, error: ClientError, protocol: ClientProtocol) -> None:
        if protocol is not self._protocol:
            return
        self._protocol = None
        pending, self._pending = self._pending, {}
        for d in pending.values():
            d.errback(ConnectFailed("connection lost before the server answered"))
        if self._closing:
            return
        if not self._subscriptions:
            self._give_up(error)
            return
        self._on_status("%s; reconnecting" % (error,))
        self._retry(0, error)

    def _retry(self, attempt: int, error: ClientError) -> None:
        if attempt >= len(self._delays):
            self._give_up(
                ConnectFailed("%s; gave up after %d attempts to reconnect" % (error, attempt))
            )
            return
        self._reactor.callLater(self._delays[attempt], self._reconnect, attempt)

    def _reconnect(self, attempt: int) -> None:
        if self._closing:
            return

        def failed(failure: Failure) -> None:
            error = failure.value
            if isinstance(error, HandshakeRefused) and error.http_status in (401, 403):
                # Retrying cannot fix a refused token or Host.
                self._give_up(error)
            elif isinstance(error, ClientError):
                self._retry(attempt + 1, error)
            else:
                self._give_up(ConnectFailed("reconnecting failed: %s" % (error,)))

        d = self._attempt()
        d.addCallback(self._opened)
        d.addCallback(lambda _: self._resubscribe())
        d.addErrback(failed)

    def _resubscribe(self) -> None:
        self._on_status("reconnected")
        for subscription in list(self._subscriptions.values()):
            self._subscribe(subscription).addErrback(self._resubscribe_failed)

    def _resubscribe_failed(self, failure: Failure) -> None:
        error = failure.value
        if isinstance(error, ClientError):
            self._give_up(error)
        else:
            self._give_up(ConnectFailed("resubscribing failed: %s" % (error,)))

    def _give_up(self, error: Exception) -> None:
        self.lost.fire(error)

    def close(self) -> Deferred[None]:
        """Close the connection; the Deferred fires once it is closed."""
        self._closing = True
        protocol = self._protocol
        if protocol is None:
            return succeed(None)
        done: Deferred[None] = Deferred()
        protocol.closed.addBoth(lambda _: done.callback(None))
        protocol.sendClose(1000)
        return done


def connect(
    url: str, token: str | None, reactor: Any, on_status: StatusHandler
) -> Deferred[Connection]:
    """Open a L{Connection}."""
    connection = Connection(url, token, reactor, on_status)
    return connection.open().addCallback(lambda _: connection)
