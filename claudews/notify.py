"""
Notifications without an app: on the events an operator chose
(C{notify-on}: by default a permission request and a finished prompt),
POST a small JSON body to every C{notify-url}.

The form is one that ntfy-style receivers and generic webhooks both take:
a JSON body (project, event, prompt id, tool, status, duration, cost, a
title and a one-line message) and the headers C{Title}, C{Priority}
(C{high} for a permission request) and C{Tags}. What a tool would read or
write, what the model said and the CLI's error text never leave: a
notification says where to look, not what is there.

Sending is fire and forget on the reactor: L{Notifier.observe} only
builds the body and queues it; the sends start on a later turn, so a
prompt is never slowed by a receiver. What waits is bounded (the oldest is
dropped, and counted); a failed send is tried again after 1, 5 and 30
seconds; failures are logged once per URL per minute.
"""

import email.header
import json
import os
import re
from collections import deque
from typing import Any, Callable, Collection, Mapping, Sequence
from urllib.parse import urlsplit

import attrs
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from claudews import events
from claudews.events import Event
from claudews.interfaces import DelayedCall, ReactorTime

#: C{post(url, body, headers)}: fires with the HTTP status code.
Post = Callable[[str, bytes, Mapping[str, str]], "defer.Deferred[int]"]

#: Seconds before each try after the first.
RETRY_DELAYS = (1.0, 5.0, 30.0)
#: Receivers' answers worth another try; other 4xx will not change.
_RETRY_CODES = frozenset({408, 425, 429})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def treq_post(reactor: Any, timeout: float = 30.0) -> Post:
    """
    A L{Post} built on treq, with an agent on C{reactor} (not the global
    one) and no kept-alive connections: notifications are rare.
    """
    from treq.client import HTTPClient
    from twisted.web.client import Agent, HTTPConnectionPool

    clients: list[HTTPClient] = []

    def post(url: str, body: bytes, headers: Mapping[str, str]) -> "defer.Deferred[int]":
        if not clients:
            pool = HTTPConnectionPool(reactor, persistent=False)  # type: ignore[no-untyped-call]
            agent: Any = Agent(reactor, pool=pool)  # type: ignore[no-untyped-call]
            clients.append(HTTPClient(agent))
        sent: dict[bytes | str, bytes | str] = {k: v for k, v in headers.items()}
        d = clients[0].post(
            url,
            data=body,
            headers=sent,
            allow_redirects=False,
            timeout=timeout,
            reactor=reactor,
        )
        return d.addCallback(_discard_body)

    return post


def _discard_body(response: Any) -> "defer.Deferred[int]":
    import treq

    code: int = response.code
    return treq.collect(response, lambda data: None).addCallback(lambda _: code)


def _text(value: object, limit: int = 120) -> str:
    return _CONTROL.sub(" ", str(value))[:limit]


def _header(value: str) -> str:
    """An HTTP header value: one line, RFC 2047 where it is not ASCII."""
    value = _text(value, 200)
    if value.isascii():
        return value
    return email.header.Header(value, "utf-8").encode()


def _reason(error: BaseException, timeout: float) -> str:
    if isinstance(error, defer.CancelledError):
        return "no answer within %g s" % (timeout,)
    return _text(error, 300) or type(error).__name__


def _seconds(duration_ms: object) -> str:
    if isinstance(duration_ms, (int, float)) and not isinstance(duration_ms, bool):
        return " after %.1f s" % (duration_ms / 1000.0,)
    return ""


def _cost(cost_usd: object) -> str:
    if isinstance(cost_usd, (int, float)) and not isinstance(cost_usd, bool):
        return " ($%.4f)" % (cost_usd,)
    return ""


def message(project_path: str, event: Event) -> tuple[dict[str, Any], dict[str, str]]:
    """
    The JSON body and the headers that tell of C{event} in the project at
    C{project_path}.
    """
    name = _text(os.path.basename(project_path.rstrip("/")) or project_path)
    fields = event.fields
    body: dict[str, Any] = {
        "project": project_path,
        "event": event.kind,
        "prompt_id": event.prompt_id,
    }
    priority, tags = "default", ["claudews"]
    if event.kind == events.PERMISSION_REQUEST:
        tool = _text(fields.get("tool_name"))
        body.update(tool=tool, request_id=_text(fields.get("request_id")))
        title = "claudews: Claude needs you in %s" % (name,)
        summary = "Claude asks to use %s in %s" % (tool, project_path)
        priority, tags = "high", ["warning", *tags]
    elif event.kind == events.PROMPT_FINISHED:
        status = _text(fields.get("status"))
        duration, cost = fields.get("duration_ms"), fields.get("cost_usd")
        body.update(status=status, duration_ms=duration, cost_usd=cost)
        title = "claudews: prompt %s in %s" % (status, name)
        summary = "Prompt %s in %s%s%s" % (status, project_path, _seconds(duration), _cost(cost))
        mark = "white_check_mark" if status == events.COMPLETED else "x"
        tags = [mark, *tags]
    else:
        title = "claudews: %s in %s" % (event.kind, name)
        summary = "%s in %s" % (event.kind, project_path)
    body.update(title=title, message=_text(summary, 1000), ts=events.timestamp())
    headers = {
        "Content-Type": "application/json",
        "Title": _header(title),
        "Priority": priority,
        "Tags": ",".join(tags),
    }
    return body, headers


def target(url: str) -> str:
    """
    How a log names C{url}: scheme and host only, since webhook URLs
    often carry their secret in the path or the query.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host += ":%d" % (parts.port,)
    rest = "/..." if (parts.path not in ("", "/") or parts.query) else ""
    return "%s://%s%s" % (parts.scheme, host, rest)


@attrs.define(eq=False)
class _Delivery:
    url: str
    body: bytes
    headers: Mapping[str, str]
    #: Tries so far.
    tries: int = 0
    #: The pending retry, while it waits for one.
    timer: DelayedCall | None = None


class _Refused(Exception):
    """A receiver answered with a status that is not a success."""

    def __init__(self, code: int) -> None:
        super().__init__("HTTP %d" % (code,))
        self.code = code


class Notifier:
    """
    Sends notifications of the events chosen to every URL, in the
    background, bounded.

    @ivar dropped: notifications dropped because the queue was full.
    """

    _log = Logger()

    def __init__(
        self,
        urls: Sequence[str],
        kinds: Collection[str],
        reactor: ReactorTime,
        post: Post,
        *,
        delays: Sequence[float] = RETRY_DELAYS,
        max_queue: int = 100,
        max_sending: int = 4,
        timeout: float = 60.0,
        log_every: float = 60.0,
    ) -> None:
        self._urls = tuple(urls)
        self._kinds = frozenset(kinds)
        self._reactor = reactor
        self._post = post
        self._delays = tuple(delays)
        self._max_queue = max_queue
        self._max_sending = max_sending
        self._timeout = timeout
        self._log_every = log_every
        #: What waits to be sent or retried, oldest first.
        self._queue: deque[_Delivery] = deque()
        self._sending: set[defer.Deferred[int]] = set()
        self._pump_call: DelayedCall | None = None
        #: Per URL (or "queue"): when a failure was last logged, and how
        #: many were not logged since.
        self._logged: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}
        self._stopped = False
        self.dropped = 0

    @classmethod
    def of(cls, settings: Any, reactor: Any, post: Post | None = None) -> "Notifier":
        """The notifier L{claudews.config.Settings} ask for."""
        return cls(
            settings.notify_url,
            settings.notify_on,
            reactor,
            post if post is not None else treq_post(reactor),
        )

    @property
    def pending(self) -> int:
        """Notifications waiting to be sent or retried."""
        return len(self._queue)

    def observe(self, project_path: str, event: Event) -> None:
        """
        An event of the project at C{project_path} was stored: queue its
        notification if it is one of the chosen kinds. Never raises.
        """
        if self._stopped or not self._urls or event.kind not in self._kinds:
            return
        try:
            body, headers = message(project_path, event)
            data = json.dumps(body, separators=(",", ":")).encode("utf-8")
        except Exception:
            self._log.failure("Could not build the notification of {kind}", kind=event.kind)
            return
        for url in self._urls:
            self._enqueue(_Delivery(url, data, headers))
        self._schedule()

    def stop(self) -> None:
        """Send nothing more: cancel the retries and the sends under way."""
        self._stopped = True
        for delivery in self._queue:
            if delivery.timer is not None and delivery.timer.active():
                delivery.timer.cancel()
        self._queue.clear()
        if self._pump_call is not None and self._pump_call.active():
            self._pump_call.cancel()
        for d in list(self._sending):
            d.cancel()

    # -- the queue

    def _enqueue(self, delivery: _Delivery) -> None:
        if len(self._queue) >= self._max_queue:
            oldest = self._queue.popleft()
            if oldest.timer is not None and oldest.timer.active():
                oldest.timer.cancel()
            self.dropped += 1
            self._report("queue", "the notification queue is full: {dropped} dropped so far",
                         dropped=self.dropped)
        self._queue.append(delivery)

    def _schedule(self) -> None:
        # A later turn: the event's publisher goes on at once.
        if self._pump_call is None or not self._pump_call.active():
            self._pump_call = self._reactor.callLater(0, self._pump)

    def _pump(self) -> None:
        while not self._stopped and len(self._sending) < self._max_sending:
            ready = next((d for d in self._queue if d.timer is None), None)
            if ready is None:
                return
            self._queue.remove(ready)
            self._send(ready)

    def _send(self, delivery: _Delivery) -> None:
        delivery.tries += 1
        d: defer.Deferred[int] = defer.maybeDeferred(
            self._post, delivery.url, delivery.body, delivery.headers
        )
        self._sending.add(d)
        timer = self._reactor.callLater(self._timeout, d.cancel)

        def done(result: object) -> object:
            self._sending.discard(d)
            if timer.active():
                timer.cancel()
            return result

        def failed(failure: Failure) -> None:
            self._failed(delivery, failure.value or Exception("unknown"))

        d.addBoth(done)
        d.addCallback(self._answered).addErrback(failed).addBoth(lambda _: self._pump())

    def _answered(self, code: int) -> None:
        if not 200 <= code < 300:
            raise _Refused(code)

    def _failed(self, delivery: _Delivery, error: BaseException) -> None:
        if self._stopped:
            return
        final = delivery.tries > len(self._delays) or (
            isinstance(error, _Refused) and error.code < 500 and error.code not in _RETRY_CODES
        )
        if final:
            outcome = "given up after %d tries" % (delivery.tries,)
        else:
            delay = self._delays[delivery.tries - 1]
            outcome = "trying again in %g s" % (delay,)
            delivery.timer = self._reactor.callLater(delay, self._retry, delivery)
            self._enqueue(delivery)
        self._report(
            delivery.url,
            "Notification to {target} failed ({error}): {outcome}",
            target=target(delivery.url),
            error=_reason(error, self._timeout),
            outcome=outcome,
        )

    def _retry(self, delivery: _Delivery) -> None:
        delivery.timer = None
        self._schedule()

    def _report(self, key: str, format: str, **fields: object) -> None:
        """Log a failure, at most once per C{key} per C{log_every} seconds."""
        now = self._reactor.seconds()
        last = self._logged.get(key)
        if last is not None and now - last < self._log_every:
            self._unlogged[key] = self._unlogged.get(key, 0) + 1
            return
        self._logged[key] = now
        unlogged = self._unlogged.pop(key, 0)
        if unlogged:
            format += " ({unlogged} more not logged since the last line)"
        self._log.warn(format, unlogged=unlogged, **fields)
