"""
A C{history} page, bounded in bytes and streamed.

A page is the newest events before C{before}: at most C{limit} of them and
at most C{max_bytes} of event lines (always at least one event). It is
found in a first pass that reads the history newest first and keeps only
seqs and sizes, and sent in a second that reads it again oldest first and
sends each line as it is read, as one fragment of the reply (a fragmented
text message, L{claudews.outbox}), so that no more than a line of it is
ever in memory:

    {"type":"result","id":ID,"ok":true,"result":{"events":[   head
    LINE  ,LINE  ,LINE ...                                    one fragment per event
    ],"first_seq":N,"has_more":B}}                            tail

A line that vanished between the passes (its file retired) is left out.

Both passes read at most L{STEP_BYTES} a reactor turn, and the second
waits for the connection to drain whenever it is backlogged, under the
connection's slow-client rule (L{claudews.backlog}): a client that does
not read is closed, and its page dropped, before the server holds more
than the backlog bound (and a line) for it.
"""

from typing import Any, Callable, Iterator, Protocol

from twisted.internet import defer
from twisted.logger import Logger

from claudews.events import encode
from claudews.interfaces import EventStore, ReactorTime, Subscriber

#: Bytes of history read per reactor turn, by either pass (at least a line).
STEP_BYTES = 1024 * 1024

#: Lines are gathered into fragments of about this size: a frame per line
#: would cost both ends a frame's work for every small event.
FRAGMENT_BYTES = 64 * 1024


class PageSink(Subscriber, Protocol):
    """
    A connection that can send one message in fragments.
    Implemented by L{claudews.websocket.ServerProtocol}, through its
    L{claudews.outbox.Outbox}.
    """

    def begin_page(self, stop: Callable[[], None]) -> bool:
        """
        Start a fragmented text message; C{stop()} is called if the
        connection goes or closes before it ends. False if it is gone.
        """

    def send_fragment(self, data: bytes) -> bool:
        """Send the next fragment of it; False once the connection is gone or closed."""

    def end_page(self, complete: bool = True) -> None:
        """
        End the message (if the connection is still there) and send what
        waited; a page that is not C{complete} cannot be ended, and closes
        the connection instead.
        """


class Page:
    """
    One C{history} reply in the making; L{run} fires when it is sent, or
    when the connection went (or with the error that kept the page from
    being found, before anything was sent).
    """

    _log = Logger()

    def __init__(
        self,
        store: EventStore,
        sink: PageSink,
        reactor: ReactorTime,
        *,
        request_id: Any,
        before: int | None,
        limit: int,
        max_bytes: int,
    ) -> None:
        self._store = store
        self._sink = sink
        self._reactor = reactor
        self._request_id = request_id
        self._before = before
        self._limit = limit
        self._max_bytes = max_bytes
        self._done: defer.Deferred[None] = defer.Deferred()
        self._reader: Iterator[tuple[int, bytes]] | None = None
        # The page found by the first pass: how many, their bytes, and the
        # oldest and newest seq.
        self._count = 0
        self._bytes = 0
        self._oldest = 0
        self._newest = 0
        self._begun = False
        self._first = True
        self._tail = b""
        # Lines gathered for the next fragment, and their size.
        self._pieces: list[bytes] = []
        self._gathered = 0

    def run(self) -> defer.Deferred[None]:
        self._reader = self._store.read_before(self._before)
        # The first turn is this one: a small page is answered at once.
        self._guarded(self._size_step)
        return self._done

    def _turn(self, step: Any) -> None:
        self._reactor.callLater(0, self._guarded, step)

    def _guarded(self, step: Any) -> None:
        if self._done.called:
            # Dropped (the connection went) while this turn waited.
            return
        try:
            step()
        except Exception as e:
            self._stop()
            if self._done.called:
                return
            if self._begun:
                # Fragments went out already: nothing can follow but a close.
                self._log.failure("Sending a history page failed")
                self._sink.end_page(complete=False)
                self._done.callback(None)
            else:
                self._done.errback(e)

    def _stop(self) -> None:
        reader, self._reader = self._reader, None
        close = getattr(reader, "close", None)
        if close is not None:
            close()

    # -- the first pass: where the page starts

    def _size_step(self) -> None:
        read = 0
        assert self._reader is not None
        for seq, line in self._reader:
            if self._count and self._bytes + len(line) > self._max_bytes:
                break
            self._count += 1
            self._bytes += len(line)
            self._oldest = seq
            self._newest = self._newest or seq
            read += len(line)
            if self._count >= self._limit:
                break
            if read >= STEP_BYTES:
                self._turn(self._size_step)
                return
        self._stop()
        self._start_sending()

    # -- the second pass: the page, oldest first

    def _start_sending(self) -> None:
        has_more = bool(self._count) and self._oldest > self._store.first_seq
        self._tail = b"".join(
            (b'],"first_seq":', encode(self._store.first_seq), b',"has_more":',
             encode(has_more), b"}}")
        )
        head = b'{"type":"result","id":' + encode(self._request_id) + b',"ok":true,"result":{"events":['
        if not self._sink.begin_page(self._gone):
            self._done.callback(None)
            return
        self._begun = True
        if self._count:
            self._reader = self._store.read_since(self._oldest - 1, self._newest)
        if self._sink.send_fragment(head):
            self._send_step()
        else:
            self._gone()

    def _send_step(self) -> None:
        sent = 0
        while self._reader is not None:
            if self._sink.backlogged():
                drained = self._sink.when_drained()
                drained.addCallback(lambda _: self._turn(self._send_step))
                return
            try:
                seq, line = next(self._reader)
            except StopIteration:
                break
            self._pieces.append(line if self._first else b"," + line)
            self._first = False
            self._gathered += len(line) + 1
            sent += len(line)
            if self._gathered >= FRAGMENT_BYTES and not self._flush():
                return
            if sent >= STEP_BYTES:
                if self._flush():
                    self._turn(self._send_step)
                return
        self._reader = None
        self._pieces.append(self._tail)
        if not self._flush():
            return
        self._sink.end_page()
        if not self._done.called:
            self._done.callback(None)

    def _flush(self) -> bool:
        """
        Send what was gathered as one fragment; whether the connection
        took it (when not, the page is dropped).
        """
        data = b"".join(self._pieces)
        self._pieces, self._gathered = [], 0
        if self._sink.send_fragment(data):
            return True
        self._gone()
        return False

    def _gone(self) -> None:
        """
        The connection went, or was closed as too slow: drop the page.
        """
        self._stop()
        if not self._done.called:
            self._done.callback(None)
