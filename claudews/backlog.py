"""
The slow-client rule: how much a connection may leave unsent, and for how
long, before it is closed.

L{SendBacklog} is registered with the connection's transport as a
streaming producer, so the transport tells it when the peer stops taking
data (C{pauseProducing}: the socket is full) and when it has taken all of
it again (C{resumeProducing}: Twisted's buffer is empty). The connection
asks it, before it hands the transport C{size} more bytes, whether it may
(L{SendBacklog.admit}). While the transport is paused, the bytes handed to
it since the pause are the backlog:

  - over C{bound} bytes for longer than C{grace} seconds (counted from the
    send, or the wait for a drain, that found it over): closed;
  - over C{cap} bytes at the next send: closed at once, that send dropped;
  - a resume forgets the backlog and the grace time.

Only what was queued before a message counts against the cap, so one
message larger than the bound, or the cap, never closes a client that
keeps up.
"""

from typing import Callable

from twisted.internet import abstract, defer
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer  # type: ignore[import-untyped]

from claudews.interfaces import DelayedCall, ReactorTime


def unsent_in_twisted(transport: object) -> int | None:
    """
    The bytes a Twisted socket transport holds that its socket has not
    taken yet; C{None} for any other transport (TLS, test transports).

    Why a private read: Twisted resumes a paused producer only once its
    buffer is empty, so a client that reads exactly as fast as it is sent
    to may never resume, and the bytes queued since the pause (the public
    measure) grow without bound although it keeps pace. Nothing public says
    how much of them the socket took since. The attributes are read without
    a fallback: a Twisted that renames them fails L{tests.test_backlog}
    rather than silently closing such clients.
    """
    if not isinstance(transport, abstract.FileDescriptor):
        return None
    return (
        len(transport.dataBuffer)
        - transport.offset
        + transport._tempDataLen
    )


@implementer(IPushProducer)
class SendBacklog:
    """
    One connection's unsent backlog, on an injected clock.

    @ivar paused: whether the transport said its peer stopped taking data
        and has not taken all of it since.
    """

    def __init__(
        self,
        clock: ReactorTime,
        *,
        bound: int,
        grace: float,
        cap: int,
        close: Callable[[str], None],
        measure: Callable[[], int | None] = lambda: None,
    ) -> None:
        """
        @param close: called once, with why, when the client is too slow.
        @param measure: the transport's own count of unsent bytes, where it
            has one (L{unsent_in_twisted}); C{None} makes the bytes queued
            since the pause the measure.
        """
        self._clock = clock
        self._bound = bound
        self._grace = grace
        self._cap = cap
        self._close = close
        self._measure = measure
        self.paused = False
        self._queued = 0
        self._grace_call: DelayedCall | None = None
        self._waiters: list[defer.Deferred[None]] = []

    def unsent(self) -> int:
        """
        The backlog: bytes handed to the transport that the peer has not
        taken yet, as far as is known; 0 while the transport is not paused.
        """
        if not self.paused:
            return 0
        measured = self._measure()
        return self._queued if measured is None else measured

    def admit(self, size: int) -> bool:
        """
        Whether C{size} more bytes may be handed to the transport; counts
        them if so.

        A client closed here gets nothing more: no data frame may follow the
        close frame (RFC 6455 section 5.5.1).
        """
        if not self.paused:
            return True
        unsent = self.unsent()
        if unsent > self._cap:
            self._cancel_grace()
            self._close("over %d bytes unsent" % (self._cap,))
            return False
        self._queued += size
        if unsent + size > self._bound and self._grace_call is None:
            self._grace_call = self._clock.callLater(self._grace, self._grace_over)
        return True

    def when_drained(self) -> defer.Deferred[None]:
        """
        Fires once the transport takes data again (at once if it does now).

        A sender that waits here while the backlog is over the bound is
        still a slow client: the grace time runs, as it would at its next
        send.
        """
        if not self.paused:
            return defer.succeed(None)
        if self.unsent() > self._bound and self._grace_call is None:
            self._grace_call = self._clock.callLater(self._grace, self._grace_over)
        d: defer.Deferred[None] = defer.Deferred()
        self._waiters.append(d)
        return d

    def _grace_over(self) -> None:
        self._grace_call = None
        if self.unsent() > self._bound:
            self._close(
                "over %d bytes unsent for %g s" % (self._bound, self._grace)
            )

    def _cancel_grace(self) -> None:
        if self._grace_call is not None and self._grace_call.active():
            self._grace_call.cancel()
        self._grace_call = None

    # -- IPushProducer, called by the transport

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        # Twisted resumes a producer once its buffer is empty: whatever was
        # queued, the peer has taken.
        self.paused = False
        self._queued = 0
        self._cancel_grace()
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)

    def stopProducing(self) -> None:
        # The connection is gone: whoever waited for it to drain has
        # nothing more to send to it, and it cannot be closed again.
        self._cancel_grace()
        self._waiters = []
