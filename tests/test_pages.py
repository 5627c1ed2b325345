"""
Tests for L{claudews.pages}: a C{history} page found newest first, sent
oldest first as fragments, bounded in count and bytes, read across
reactor turns of a L{Clock}, waiting for a backlogged sink, and dropped
when the connection goes.
"""

import json
from typing import Any, Callable, Iterator

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from claudews import pages
from claudews.pages import Page


class _Store:
    """
    Events 1..count, each C{size} bytes of JSON; C{gone} seqs vanish
    between the two passes (their file retired).
    """

    def __init__(self, count: int, size: int = 20) -> None:
        self.first_seq = 1
        self.last_seq = count
        self.lines = {
            seq: json.dumps({"seq": seq, "text": ""}).encode() for seq in range(1, count + 1)
        }
        for seq, line in self.lines.items():
            pad = max(0, size - len(line))
            self.lines[seq] = json.dumps({"seq": seq, "text": "x" * pad}).encode()
        self.gone: set[int] = set()
        self.started = self.closed = 0

    def _tracked(self, seqs: range) -> Iterator[tuple[int, bytes]]:
        self.started += 1
        try:
            for seq in seqs:
                yield seq, self.lines[seq]
        finally:
            self.closed += 1

    def read_before(self, before: int | None) -> Iterator[tuple[int, bytes]]:
        end = self.last_seq + 1 if before is None else before
        return self._tracked(range(end - 1, 0, -1))

    def read_since(self, since: int, upto: int | None = None) -> Iterator[tuple[int, bytes]]:
        last = self.last_seq if upto is None else upto
        return self._tracked(range(since + 1, last + 1)) if not self.gone else (
            (seq, self.lines[seq]) for seq in range(since + 1, last + 1) if seq not in self.gone
        )


class _Sink:
    def __init__(self) -> None:
        self.fragments: list[bytes] = []
        self.ended: bool | None = None
        self.open = True
        self.paused = False
        self.drained: defer.Deferred[None] | None = None
        self.stop: Callable[[], None] | None = None

    def begin_page(self, stop: Callable[[], None]) -> bool:
        self.stop = stop
        return self.open

    def send_fragment(self, data: bytes) -> bool:
        if not self.open:
            return False
        self.fragments.append(data)
        return True

    def end_page(self, complete: bool = True) -> None:
        self.ended = complete

    def backlogged(self) -> bool:
        return self.paused

    def when_drained(self) -> defer.Deferred[None]:
        self.drained = defer.Deferred()
        return self.drained

    def send_line(self, line: bytes) -> None:
        raise AssertionError("a page is sent in fragments")

    def send_prepared(self, prepared: Any, size: int) -> None:
        raise AssertionError("a page is sent in fragments")

    def reply(self) -> Any:
        return json.loads(b"".join(self.fragments))


class _Turns(Clock):
    """
    A clock whose L{turn} runs only the calls already waiting: one reactor
    turn (L{Clock.advance} would also run those they schedule).
    """

    def turn(self) -> None:
        waiting, self.calls = self.calls, []
        for call in waiting:
            call.func(*call.args, **call.kw)


class PageTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = _Turns()
        self.sink = _Sink()

    def page(self, store: _Store, before: int | None = None, limit: int = 100,
             max_bytes: int = 10**6) -> defer.Deferred[None]:
        page = Page(store, self.sink, self.clock, request_id="r", before=before, limit=limit,
                    max_bytes=max_bytes)
        return page.run()

    def test_a_small_page_is_sent_at_once_oldest_first(self) -> None:
        """A page that fits a turn is answered in it: the newest events, oldest first, gathered in one fragment."""
        store = _Store(5)
        self.successResultOf(self.page(store, limit=3))
        reply = self.sink.reply()
        self.assertEqual((reply["id"], reply["ok"]), ("r", True))
        self.assertEqual([e["seq"] for e in reply["result"]["events"]], [3, 4, 5])
        self.assertEqual((reply["result"]["first_seq"], reply["result"]["has_more"]), (1, True))
        # The head, then the three lines and the tail together.
        self.assertEqual(len(self.sink.fragments), 2)
        self.assertIs(self.sink.ended, True)
        self.assertEqual((store.started, store.closed), (2, 2))

    def test_small_lines_are_gathered_into_fragments_of_bounded_size(self) -> None:
        """Not a frame per event: fragments of about FRAGMENT_BYTES, the events whole and in order."""
        store = _Store(400, size=1000)
        self.page(store, limit=400)
        self.clock.advance(0)
        reply = self.sink.reply()
        self.assertEqual([e["seq"] for e in reply["result"]["events"]], list(range(1, 401)))
        sizes = [len(f) for f in self.sink.fragments[1:]]
        self.assertLess(len(sizes), 20)
        self.assertTrue(all(size < pages.FRAGMENT_BYTES + 2000 for size in sizes), sizes)

    def test_bytes_bound_the_page_with_at_least_one_event(self) -> None:
        """max_bytes stops a page early, but never before its first event."""
        store = _Store(4, size=100)
        self.successResultOf(self.page(store, max_bytes=250))
        self.assertEqual([e["seq"] for e in self.sink.reply()["result"]["events"]], [3, 4])
        self.sink = _Sink()
        self.successResultOf(self.page(store, before=3, max_bytes=10))
        self.assertEqual([e["seq"] for e in self.sink.reply()["result"]["events"]], [2])

    def test_an_empty_history_is_an_empty_page(self) -> None:
        """No events: an empty list, has_more false."""
        self.successResultOf(self.page(_Store(0)))
        self.assertEqual(
            self.sink.reply()["result"], {"events": [], "first_seq": 1, "has_more": False}
        )

    def test_a_large_page_is_read_across_reactor_turns(self) -> None:
        """Each pass reads at most STEP_BYTES a turn; the page ends only as the clock turns."""
        self.patch(pages, "STEP_BYTES", 100)
        done = self.page(_Store(10, size=60))
        turns = 0
        while not done.called:
            self.clock.turn()
            turns += 1
        # Both passes, 100 bytes a turn (two 60-byte lines).
        self.assertGreaterEqual(turns, 8)
        self.assertEqual(len(self.sink.reply()["result"]["events"]), 10)

    def test_a_backlogged_sink_is_waited_for(self) -> None:
        """While the sink is backlogged no line is sent; its drain lets the page go on."""
        self.sink.paused = True
        done = self.page(_Store(3))
        self.assertEqual(len(self.sink.fragments), 1)
        self.assertNoResult(done)
        self.sink.paused = False
        assert self.sink.drained is not None
        self.sink.drained.callback(None)
        self.clock.turn()
        self.successResultOf(done)
        self.assertEqual(len(self.sink.reply()["result"]["events"]), 3)

    def test_a_connection_that_goes_drops_the_page_and_its_reader(self) -> None:
        """stop() (the connection went or closed) fires the page, closes what it read, sends no more."""
        self.patch(pages, "STEP_BYTES", 10)
        store = _Store(5)
        done = self.page(store)
        while len(self.sink.fragments) < 3:
            self.clock.turn()
        self.assertNoResult(done)
        assert self.sink.stop is not None
        self.sink.stop()
        self.successResultOf(done)
        self.assertEqual((store.started, store.closed), (2, 2))
        sent = len(self.sink.fragments)
        self.clock.turn()
        self.assertEqual(len(self.sink.fragments), sent)
        self.assertIsNone(self.sink.ended)

    def test_a_closed_sink_gets_no_more(self) -> None:
        """A send that fails ends the page without ending the message."""
        self.sink.open = False
        self.successResultOf(self.page(_Store(3)))
        self.assertEqual(self.sink.fragments, [])
        self.assertIsNone(self.sink.ended)

    def test_a_line_gone_between_the_passes_is_left_out(self) -> None:
        """A retired event is left out; the reply is still valid JSON."""
        store = _Store(3)
        store.gone = {2}
        self.successResultOf(self.page(store))
        self.assertEqual([e["seq"] for e in self.sink.reply()["result"]["events"]], [1, 3])

    def test_an_error_before_sending_fails_the_request(self) -> None:
        """A store that fails in the first pass fails the page's Deferred; nothing was sent."""
        store = _Store(3)
        store.read_before = lambda before: iter([(1, None)])  # type: ignore[assignment, list-item]
        self.failureResultOf(self.page(store), TypeError)
        self.assertEqual(self.sink.fragments, [])

    def test_an_error_while_sending_ends_the_page_incomplete(self) -> None:
        """A store that fails after the first fragment: end_page(complete=False), logged."""
        store = _Store(3)

        def broken(since: int, upto: int | None = None) -> Iterator[tuple[int, bytes]]:
            raise OSError("disk gone")
            yield  # pragma: no cover

        store.read_since = broken  # type: ignore[method-assign]
        self.successResultOf(self.page(store))
        self.assertIs(self.sink.ended, False)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
