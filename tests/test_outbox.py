"""
Tests for L{claudews.outbox}: replies and events, pages as fragmented
messages and what waits behind them, under a L{SendBacklog} on a
L{Clock}; the wire is a fake that records Autobahn's streaming calls.
"""

from typing import Any

from autobahn.websocket.protocol import PreparedMessage
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from claudews.backlog import SendBacklog
from claudews.outbox import INTERNAL_ERROR, Frames, Outbox, prepare
from tests.wsmemory import decode_frames


class _Wire:
    """
    Records what would go out; closing it closes the outbox, as
    L{claudews.websocket.ServerProtocol.close} does.
    """

    def __init__(self) -> None:
        self.open = True
        self.sent: list[tuple[Any, ...]] = []
        self.writes = 0
        self.outbox: Outbox | None = None

    def in_open_state(self) -> bool:
        return self.open

    def send_frame(self, frame: bytes, /) -> None:
        # One message, or a replay's batch of them (Frames).
        decoded, rest = decode_frames(frame)
        assert rest == b"" and decoded and all(d.fin and d.opcode == 1 for d in decoded), frame
        self.writes += 1
        self.sent.extend(("message", d.payload) for d in decoded)

    def beginMessage(self, isBinary: bool = False, doNotCompress: bool = False, /) -> None:
        self.sent.append(("begin",))

    def beginMessageFrame(self, length: int, /) -> None:
        self.sent.append(("frame", length))

    def sendMessageFrameData(self, payload: bytes, sync: bool = False, /) -> Any:
        self.sent.append(("data", payload))

    def endMessage(self) -> None:
        self.sent.append(("end",))

    def close(self, code: int, reason: str) -> None:
        if self.open:
            self.sent.append(("close", code, reason))
            self.open = False
            assert self.outbox is not None
            self.outbox.closing()


class OutboxTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.wire = _Wire()
        self.slow: list[str] = []
        self.backlog = SendBacklog(
            self.clock, bound=100, grace=10.0, cap=1000, close=self.close_slow
        )
        self.outbox = Outbox(self.wire, self.backlog, cap=1000, close_slow=self.close_slow)
        self.wire.outbox = self.outbox
        self.stopped: list[bool] = []

    def close_slow(self, why: str) -> None:
        self.slow.append(why)
        self.wire.close(1008, "client too slow: " + why)

    def test_a_line_is_one_prepared_text_message(self) -> None:
        """send_line frames the line once, as an unmasked text message."""
        self.outbox.send_line(b'{"a":1}')
        self.assertEqual(self.wire.sent, [("message", b'{"a":1}')])

    def test_prepare_frames_every_length_as_autobahn_does(self) -> None:
        """The frame is byte for byte Autobahn's, at each of the three length forms."""
        for n in (0, 1, 125, 126, 65535, 65536, 3 * 2**20):
            line = b"x" * n
            self.assertEqual(prepare(line), PreparedMessage(line, False, False, False).payloadHybi, n)

    def test_frames_are_prepared_frames_joined(self) -> None:
        """Frames holds each line's frame as prepare makes it, in order, and each size."""
        lines = [b"x" * n for n in (0, 1, 125, 126, 127, 65535, 65536, 70000)]
        frames = Frames(lines)
        self.assertEqual(frames.data, b"".join(prepare(line) for line in lines))
        self.assertEqual(frames.sizes, [len(line) for line in lines])
        self.assertEqual(Frames([]).data, b"")

    def test_frames_go_out_in_one_write_and_count_as_their_messages(self) -> None:
        """A batch is one write; the metrics are told of each message."""
        counted: list[int] = []
        outbox = Outbox(self.wire, self.backlog, cap=1000, close_slow=self.close_slow,
                        sent=counted.append)
        lines = [b'{"a":1}', b"", b"y" * 300]
        outbox.send_prepared(Frames(lines), 307)
        self.assertEqual(self.wire.writes, 1)
        self.assertEqual(self.wire.sent, [("message", line) for line in lines])
        self.assertEqual(counted, [7, 0, 300])

    def test_frames_wait_behind_a_page_as_lines_do(self) -> None:
        """A batch sent during a page follows its end, whole and in order."""
        self.outbox.begin_page(lambda: None)
        self.outbox.send_fragment(b"[]")
        self.outbox.send_line(b"one")
        self.outbox.send_prepared(Frames([b"two", b"three"]), 8)
        self.outbox.end_page()
        self.assertEqual(
            [s for s in self.wire.sent if s[0] in ("message", "end")],
            [("end",), ("message", b"one"), ("message", b"two"), ("message", b"three")],
        )

    def test_nothing_is_sent_once_closed(self) -> None:
        """A closed connection is sent nothing, pages neither."""
        self.wire.open = False
        self.outbox.send_line(b"x")
        self.assertFalse(self.outbox.begin_page(lambda: None))
        self.assertFalse(self.outbox.send_fragment(b"y"))
        self.assertEqual(self.wire.sent, [])

    def test_each_fragment_is_a_whole_frame_of_one_message(self) -> None:
        """A page: one message begun, one frame per fragment, then ended."""
        self.assertTrue(self.outbox.begin_page(lambda: None))
        self.assertTrue(self.outbox.paging())
        self.assertTrue(self.outbox.send_fragment(b"head"))
        self.assertTrue(self.outbox.send_fragment(b"tail!"))
        self.outbox.end_page()
        self.assertFalse(self.outbox.paging())
        self.assertEqual(
            self.wire.sent,
            [("begin",), ("frame", 4), ("data", b"head"), ("frame", 5), ("data", b"tail!"),
             ("end",)],
        )

    def test_lines_wait_behind_a_page_and_follow_it_in_order(self) -> None:
        """No data frame of another message goes inside a page: lines follow its end."""
        self.outbox.begin_page(lambda: None)
        self.outbox.send_fragment(b"[")
        self.outbox.send_line(b"one")
        self.outbox.send_line(b"two")
        self.outbox.send_fragment(b"]")
        self.outbox.end_page()
        self.assertEqual(
            [s for s in self.wire.sent if s[0] in ("message", "end")],
            [("end",), ("message", b"one"), ("message", b"two")],
        )

    def test_what_waits_behind_a_page_is_bounded_by_the_cap(self) -> None:
        """Past cap bytes waiting behind a page, the client is closed as slow, with a close frame."""
        stop: list[bool] = []
        self.outbox.begin_page(lambda: stop.append(True))
        self.outbox.send_line(b"x" * 600)
        self.assertEqual(self.slow, [])
        self.outbox.send_line(b"y" * 600)
        self.assertEqual(self.slow, ["over 1000 bytes waiting behind a history page"])
        self.assertEqual(self.wire.sent[-1][:2], ("close", 1008))
        self.assertEqual(stop, [True])
        self.assertFalse(self.outbox.paging())

    def test_a_slow_close_inside_a_page_is_a_close_frame_and_stops_the_page(self) -> None:
        """Over the bound for the grace time inside a page: 1008, and the page is dropped."""
        stop: list[bool] = []
        self.outbox.begin_page(lambda: stop.append(True))
        self.backlog.pauseProducing()
        self.outbox.send_fragment(b"z" * 200)
        waiting = self.outbox.when_drained()
        self.assertTrue(self.outbox.backlogged())
        self.clock.advance(10)
        self.assertEqual(self.wire.sent[-1], ("close", 1008, "client too slow: over 100 bytes unsent for 10 s"))
        self.assertEqual(stop, [True])
        self.assertNoResult(waiting)

    def test_a_page_that_cannot_be_read_closes_1011(self) -> None:
        """A page that failed after its first fragment cannot be ended: closed with 1011."""
        stop: list[bool] = []
        self.outbox.begin_page(lambda: stop.append(True))
        self.outbox.send_fragment(b"[")
        self.outbox.send_line(b"waiting")
        self.outbox.end_page(complete=False)
        self.assertEqual(
            self.wire.sent[-1], ("close", INTERNAL_ERROR, "the history page could not be read")
        )
        self.assertNotIn(("message", b"waiting"), self.wire.sent)
        self.assertEqual(stop, [True])

    def test_closing_drops_the_page_and_what_waited(self) -> None:
        """When the connection closes, the page's stop is called once and nothing waits."""
        stop: list[bool] = []
        self.outbox.begin_page(lambda: stop.append(True))
        self.outbox.send_line(b"waiting")
        self.outbox.closing()
        self.outbox.closing()
        self.assertEqual(stop, [True])
        self.wire.open = False
        self.outbox.end_page()
        self.assertEqual(self.wire.sent, [("begin",)])

    def test_drained_follows_the_backlog(self) -> None:
        """backlogged and when_drained are the backlog's."""
        self.assertFalse(self.outbox.backlogged())
        self.successResultOf(self.outbox.when_drained())
        self.backlog.pauseProducing()
        d = self.outbox.when_drained()
        self.assertNoResult(d)
        self.backlog.resumeProducing()
        self.successResultOf(d)
