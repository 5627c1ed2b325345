"""
One connection's sends: replies and events, and history pages streamed as
fragmented messages, all under the slow-client rule (L{claudews.backlog}).

A history page (L{claudews.pages}) is one text message sent in fragments,
each fragment a whole frame (RFC 6455 section 5.4)::

    beginMessage            nothing on the wire yet
    frame, frame, ...       one per L{Outbox.send_fragment}, FIN clear
    endMessage              an empty continuation frame with FIN set

Between two fragments the connection may send control frames (RFC 6455
allows them inside a fragmented message): its pings and pongs go out as
usual, and a client closed as too slow in the middle of a page gets its
close frame (1008) like any other. Data frames of another message may not
go between fragments: replies and events wait until the page ends, bounded
by the backlog cap.
"""

import struct
from collections import deque
from typing import Any, Callable, Protocol, Sequence

from twisted.internet import defer

from claudews.backlog import SendBacklog

#: The close code of a page that failed after its first fragment.
INTERNAL_ERROR = 1011


class Wire(Protocol):
    """
    What the outbox sends through: Autobahn's streaming API of the
    connection. Implemented by L{claudews.websocket.ServerProtocol}.
    """

    def in_open_state(self) -> bool:
        """Whether the connection is open (no close frame sent or received)."""

    def send_frame(self, frame: bytes, /) -> None:
        """Send whole messages framed once (L{prepare}, L{Frames})."""

    def beginMessage(self, isBinary: bool = False, doNotCompress: bool = False, /) -> None:
        """Begin a fragmented message."""

    def beginMessageFrame(self, length: int, /) -> None:
        """Begin one of its frames, of C{length} bytes."""

    def sendMessageFrameData(self, payload: bytes, sync: bool = False, /) -> Any:
        """Send (part of) the payload of that frame."""

    def endMessage(self) -> None:
        """End the fragmented message."""

    def close(self, code: int, reason: str) -> None:
        """Send a close frame with C{code} and C{reason}."""


def prepare(line: bytes) -> bytes:
    """
    Frame a text message once: one final frame, unmasked as a server's
    frames are (RFC 6455 section 5.2), sent as these bytes to every
    subscriber.

    Not Autobahn's sendMessage, which applies the inbound size limit to
    outbound messages too (a reply or an event may be far larger than what
    a client may send); nor its PreparedMessage and sendPreparedMessage,
    which copy the payload once more and format a debug log line per send,
    logged or not: a quarter of a fan-out's CPU at ten subscribers.
    """
    return _head(len(line)) + line


_pack_16 = struct.Struct("!BBH").pack
_pack_64 = struct.Struct("!BBQ").pack


def _head(n: int) -> bytes:
    """The head of a final, unmasked text frame of C{n} bytes."""
    if n < 126:
        return bytes((0x81, n))
    if n < 65536:
        return _pack_16(0x81, 126, n)
    return _pack_64(0x81, 127, n)


class Frames:
    """
    Text messages framed as L{prepare} frames each, joined: what a replay
    sends as one batch (L{claudews.subscribers}), with one write to the
    transport rather than one per message (which was a third of a
    replay's CPU). L{Outbox.send_prepared} takes it where it takes a
    frame, with the sum of its C{sizes}, and counts each message.

    @ivar data: the frames, one after the other.
    @ivar sizes: the size of each message.
    """

    __slots__ = ("data", "sizes")

    def __init__(self, lines: Sequence[bytes]) -> None:
        pieces = []
        sizes = []
        for line in lines:
            n = len(line)
            pieces.append(_head(n))
            pieces.append(line)
            sizes.append(n)
        self.data = b"".join(pieces)
        self.sizes = sizes


class Outbox:
    """
    The sending side of one connection: a L{claudews.interfaces.Subscriber}
    and a L{claudews.pages.PageSink}.
    """

    def __init__(
        self,
        wire: Wire,
        backlog: SendBacklog,
        *,
        cap: int,
        close_slow: Callable[[str], None],
        sent: Callable[[int], object] = lambda size: None,
    ) -> None:
        """
        @param cap: the most bytes that may wait behind a page before the
            client is closed as too slow (the backlog's hard cap).
        @param close_slow: closes the connection (1008), with why.
        @param sent: told the size of every message and page fragment
            handed to the connection (the metrics).
        """
        self._wire = wire
        self._backlog = backlog
        self._cap = cap
        self._close_slow = close_slow
        self._sent = sent
        # While a page is sent, what else is sent waits here with its size;
        # and how to drop the page.
        self._held: deque[tuple[Any, int]] | None = None
        self._held_bytes = 0
        self._page_stop: Callable[[], None] | None = None

    # -- replies and events (Subscriber)

    def send_line(self, line: bytes) -> None:
        self.send_prepared(prepare(line), len(line))

    def send_prepared(self, prepared: Any, size: int) -> None:
        if not self._wire.in_open_state():
            return
        if self._held is not None:
            self._hold(prepared, size)
        elif self._backlog.admit(size):
            if type(prepared) is Frames:
                self._wire.send_frame(prepared.data)
                for n in prepared.sizes:
                    self._sent(n)
            else:
                self._wire.send_frame(prepared)
                self._sent(size)

    def _hold(self, prepared: Any, size: int) -> None:
        assert self._held is not None
        self._held.append((prepared, size))
        self._held_bytes += size
        if self._held_bytes > self._cap:
            self._close_slow("over %d bytes waiting behind a history page" % (self._cap,))

    def backlogged(self) -> bool:
        return self._backlog.paused

    def when_drained(self) -> defer.Deferred[None]:
        return self._backlog.when_drained()

    # -- a history page (PageSink)

    def begin_page(self, stop: Callable[[], None]) -> bool:
        if not self._wire.in_open_state():
            return False
        self._page_stop = stop
        self._held, self._held_bytes = deque(), 0
        self._wire.beginMessage(False, True)
        return True

    def send_fragment(self, data: bytes) -> bool:
        if not self._wire.in_open_state() or not self._backlog.admit(len(data)):
            return False
        self._wire.beginMessageFrame(len(data))
        self._wire.sendMessageFrameData(data)
        self._sent(len(data))
        return True

    def end_page(self, complete: bool = True) -> None:
        if not complete:
            # Fragments went out: the message cannot be ended as a reply.
            self._wire.close(INTERNAL_ERROR, "the history page could not be read")
            return
        self._page_stop = None
        held, self._held = self._held or deque(), None
        if not self._wire.in_open_state():
            return
        self._wire.endMessage()
        for prepared, size in held:
            self.send_prepared(prepared, size)

    def paging(self) -> bool:
        """Whether a page is being sent (its message is not ended)."""
        return self._page_stop is not None

    # -- the end

    def closing(self) -> None:
        """
        The connection closes (its close frame was sent or received): what
        waits is dropped, and so is the page, whose reader goes.
        """
        stop, self._page_stop = self._page_stop, None
        self._held = None
        if stop is not None:
            stop()
