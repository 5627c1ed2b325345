"""
Tests for L{claudews.subscribers}: replay from the history, then live,
with no gap and no duplicate, paced by a L{Clock}.

The first tests use an in-memory store; the replay tests at the end a
real L{History} whose small files the replay crosses.
"""

import json
import shutil
import tempfile
import tracemalloc

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from claudews.history import History
from claudews.interfaces import send_each
from claudews.backlog import SendBacklog
from claudews.outbox import Frames, Outbox, prepare
from claudews.subscribers import REPLAY_BATCH, REPLAY_BYTES, Subscribers
from tests.wsmemory import decode_frames


def unframe(data):
    """The payloads of the whole text frames C{data} holds."""
    decoded, rest = decode_frames(data)
    assert rest == b"" and all(f.fin and f.opcode == 1 for f in decoded)
    return [f.payload for f in decoded]


def batch_of(lines):
    """How many of C{lines} one batch takes: up to the first that reaches REPLAY_BYTES."""
    total = 0
    for n, line in enumerate(lines[:REPLAY_BATCH], 1):
        total += len(line)
        if total >= REPLAY_BYTES:
            return n
    return min(len(lines), REPLAY_BATCH)


def line_of(seq, size=0):
    return json.dumps({"type": "event", "seq": seq, "event": "output",
                       "prompt_id": "p", "text": "x" * size}).encode()


class SlowSubscriber:
    """A connection that backs up every C{every} events until drained."""

    def __init__(self, every):
        self.every = every
        self.seqs = []
        self.waiting = None
        self._since_drain = 0

    def send_line(self, line):
        assert self.waiting is None or not self.waiting.called
        self.seqs.append(json.loads(line)["seq"])
        self._since_drain += 1

    def send_prepared(self, prepared, size):
        # A replay's batch: its frames, each one message.
        assert type(prepared) is Frames, prepared
        lines = unframe(prepared.data)
        self.assertSizes(prepared, size, lines)
        for line in lines:
            self.send_line(line)

    @staticmethod
    def assertSizes(frames, size, lines):
        assert frames.sizes == [len(line) for line in lines], frames.sizes
        assert size == sum(frames.sizes), size

    def backlogged(self):
        return self._since_drain >= self.every

    def when_drained(self):
        self.waiting = defer.Deferred()
        return self.waiting

    def drain(self):
        self._since_drain = 0
        waiting, self.waiting = self.waiting, None
        if waiting is not None:
            waiting.callback(None)


class _TransportWire:
    """
    The outbox's wire on a transport as Twisted's: what is written waits
    until L{drain}, and past 64 KiB waiting the backlog is paused.
    """

    def __init__(self):
        self.data = bytearray()
        self.held = self.most_held = self.writes = 0
        self.backlog = None

    def in_open_state(self):
        return True

    def send_frame(self, frame):
        self.data += frame
        self.writes += 1
        self.held += len(frame)
        self.most_held = max(self.most_held, self.held)
        if self.held > 64 * 1024 and not self.backlog.paused:
            self.backlog.pauseProducing()

    def drain(self):
        self.held = 0
        if self.backlog.paused:
            self.backlog.resumeProducing()


class MemoryStore:
    """
    Stored lines in a list; its readers see appends between steps, as
    L{History.read_since} does, and count how many are open.
    """

    def __init__(self):
        self.lines = []
        #: How many lines readers can read; None: all (a damaged tail, else).
        self.readable = None
        self.open_readers = 0

    @property
    def last_seq(self):
        return len(self.lines)

    def read_since(self, since):
        self.open_readers += 1
        try:
            seq = since + 1
            while seq <= len(self.lines) and (self.readable is None or seq <= self.readable):
                yield seq, self.lines[seq - 1]
                seq += 1
        finally:
            self.open_readers -= 1


class SubscribersTestCase(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.store = MemoryStore()
        self.fanouts = []

        def fanout(line, subscribers):
            self.fanouts.append((line, list(subscribers)))
            send_each(line, subscribers)

        self.subscribers = Subscribers(
            self.store.read_since, lambda: self.store.last_seq, fanout, self.clock
        )

    def publish(self, n, size=0):
        for _ in range(n):
            line = line_of(self.store.last_seq + 1, size)
            self.store.lines.append(line)
            self.subscribers.publish(line)


class LiveTests(SubscribersTestCase):
    def test_without_since_a_subscriber_is_live_at_once(self):
        """No since: only events published after subscribing, nothing replayed."""
        self.publish(3)
        client = SlowSubscriber(every=10**9)
        self.subscribers.add(client, None)
        self.assertIn(client, self.subscribers)
        self.publish(2)
        self.clock.advance(0)
        self.assertEqual(client.seqs, [4, 5])

    def test_a_since_at_the_newest_event_is_live_at_once(self):
        """Nothing to catch up on: live without a replay turn."""
        self.publish(3)
        client = SlowSubscriber(every=10**9)
        self.subscribers.add(client, 3)
        self.publish(1)
        self.assertEqual(client.seqs, [4])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_publish_fans_out_once_to_every_live_subscriber(self):
        """One fan-out call per event, with all live subscribers; none with nobody."""
        self.publish(1)
        self.assertEqual(self.fanouts, [])
        a, b = SlowSubscriber(every=10**9), SlowSubscriber(every=10**9)
        self.subscribers.add(a, None)
        self.subscribers.add(b, None)
        self.publish(1)
        self.assertEqual(self.fanouts, [(line_of(2), [a, b])])

    def test_removed_and_cleared_subscribers_get_nothing(self):
        """remove takes one out, clear all of them."""
        a, b = SlowSubscriber(every=10**9), SlowSubscriber(every=10**9)
        self.subscribers.add(a, None)
        self.subscribers.add(b, None)
        self.subscribers.remove(a)
        self.publish(1)
        self.subscribers.clear()
        self.publish(1)
        self.assertEqual((a.seqs, b.seqs, len(self.subscribers)), ([], [1], 0))


class CatchUpTests(SubscribersTestCase):
    def test_the_replay_starts_on_a_later_turn(self):
        """The reply to subscribe goes out first: nothing is sent during add."""
        self.publish(3)
        client = SlowSubscriber(every=10**9)
        self.subscribers.add(client, 1)
        self.assertEqual(client.seqs, [])
        self.clock.advance(0)
        self.assertEqual(client.seqs, [2, 3])

    def test_events_published_while_replaying_follow_without_gap_or_duplicate(self):
        """Live events during a replay are read from the store, then it turns live."""
        self.publish(REPLAY_BATCH + 10)
        client = SlowSubscriber(every=10**9)
        self.subscribers.add(client, 5)
        self.publish(3)
        self.clock.advance(0)
        self.publish(3)
        self.clock.advance(0)
        self.publish(3)
        self.assertEqual(client.seqs, list(range(6, self.store.last_seq + 1)))
        self.assertEqual(self.store.open_readers, 0)

    def test_a_subscriber_added_again_replays_from_its_new_since(self):
        """Subscribing twice replaces the first subscription, its reader closed."""
        self.publish(REPLAY_BATCH * 2)
        # Backed up after the first batch: the replay pauses there.
        client = SlowSubscriber(every=REPLAY_BATCH)
        self.subscribers.add(client, 0)
        self.clock.advance(0)
        self.assertEqual(self.store.open_readers, 1)
        self.subscribers.add(client, REPLAY_BATCH * 2 - 1)
        self.assertEqual(self.store.open_readers, 0)
        client.drain()
        self.clock.advance(0)
        self.assertEqual(client.seqs[REPLAY_BATCH:], [REPLAY_BATCH * 2])
        self.assertEqual(len(self.subscribers), 1)

    def test_a_removed_subscriber_stops_replaying(self):
        """remove during a replay: nothing more is sent, the reader is closed."""
        self.publish(REPLAY_BATCH * 2)
        # Backed up after the first batch: the replay pauses there.
        client = SlowSubscriber(every=REPLAY_BATCH)
        self.subscribers.add(client, 0)
        self.clock.advance(0)
        self.subscribers.remove(client)
        client.drain()
        self.clock.advance(0)
        self.publish(1)
        self.assertEqual(len(client.seqs), REPLAY_BATCH)
        self.assertEqual(self.store.open_readers, 0)

    def test_a_backlogged_subscriber_waits_for_its_drain(self):
        """While backed up, turns pass and nothing is sent; a drain resumes it."""
        # Four of these reach REPLAY_BYTES: a batch of four, then backed up.
        self.publish(10, size=REPLAY_BYTES // 4)
        self.assertEqual(batch_of(self.store.lines), 4)
        client = SlowSubscriber(every=4)
        self.subscribers.add(client, 0)
        self.clock.advance(0)
        self.clock.advance(0)
        self.assertEqual(client.seqs, [1, 2, 3, 4])
        client.drain()
        self.assertEqual(client.seqs, list(range(1, 9)))
        client.drain()
        self.publish(1)
        self.assertEqual(client.seqs, list(range(1, 12)))

    def test_a_batch_ends_at_the_event_that_reaches_replay_bytes(self):
        """One send per batch: events up to the first that reaches REPLAY_BYTES."""
        self.publish(300, size=1000)
        per_batch = batch_of(self.store.lines)
        self.assertLess(per_batch, REPLAY_BATCH)
        client = SlowSubscriber(every=10**9)
        batches = []
        send_prepared = client.send_prepared
        client.send_prepared = lambda frames, size: (
            batches.append(len(frames.sizes)), send_prepared(frames, size))
        self.subscribers.add(client, 0)
        # Clock.advance runs what each step schedules at once: the whole replay.
        self.clock.advance(0)
        self.assertEqual(client.seqs, list(range(1, 301)))
        self.assertEqual(sum(batches), 300)
        self.assertEqual(batches[-1], 300 - sum(batches[:-1]))
        self.assertEqual(set(batches[:-1]), {per_batch})

    def test_events_that_sum_to_replay_bytes_exactly_end_a_batch(self):
        """The event that brings a batch to REPLAY_BYTES, not past it, is its last."""
        for seq in range(1, 9):
            line = line_of(seq)
            self.store.lines.append(line[:-1] + b" " * (REPLAY_BYTES // 4 - len(line)) + b"}")
        self.assertEqual(sum(map(len, self.store.lines[:4])), REPLAY_BYTES)
        client = SlowSubscriber(every=4)
        self.subscribers.add(client, 0)
        self.clock.advance(0)
        self.assertEqual(client.seqs, [1, 2, 3, 4])

    def test_a_subscriber_backlogged_when_its_turn_comes_gets_one_event(self):
        """Backed up already (by live events or replies): one event, then its drain."""
        self.publish(10)
        client = SlowSubscriber(every=1)
        client.send_line(line_of(0))
        self.subscribers.add(client, 0)
        self.clock.advance(0)
        self.assertEqual(client.seqs, [0, 1])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        client.drain()
        self.assertEqual(client.seqs, [0] + list(range(1, 11)))

    def test_a_tail_that_cannot_be_read_ends_the_replay(self):
        """The store says there is more but yields none: the subscriber turns live."""
        self.publish(3)
        self.store.readable = 2
        client = SlowSubscriber(every=10**9)
        self.subscribers.add(client, 1)
        self.clock.advance(0)
        self.assertEqual(client.seqs, [2])
        self.assertEqual(self.store.open_readers, 0)
        self.publish(1)
        self.assertEqual(client.seqs, [2, 4])


class ReplayFailureTests(SynchronousTestCase):
    def test_a_failing_reader_turns_the_subscriber_live(self):
        """A store that raises mid-replay: logged, and the subscriber gets live events."""

        def read_since(since):
            raise OSError(5, "Input/output error")
            yield

        clock = Clock()
        subscribers = Subscribers(read_since, lambda: 3, send_each, clock)
        client = SlowSubscriber(every=10**9)
        subscribers.add(client, 0)
        clock.advance(0)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        subscribers.publish(line_of(4))
        self.assertEqual(client.seqs, [4])


class ReplayTests(SynchronousTestCase):
    """Replay from disk: in order, bounded per turn, never mixed with live events."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="claudews-replay-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.clock = Clock()
        # Small files: the replay crosses many of them.
        self.history = History(self.dir, fsync="none", reactor=self.clock,
                               rotate_bytes=64 * 1024)
        self.addCleanup(self.history.close)
        self.subscribers = Subscribers(self.history.read_since,
                                       lambda: self.history.last_seq, send_each, self.clock)

    def publish(self, n, size=0):
        for _ in range(n):
            seq = self.history.last_seq + 1
            line = line_of(seq, size)
            self.history.append(seq, line)
            self.subscribers.publish(line)

    def test_live_events_during_a_replay_come_after_it_in_seq_order(self):
        """Events published while a slow client replays: no gap, no duplicate, in order."""
        self.publish(5000)
        slow = SlowSubscriber(every=70)
        self.subscribers.add(slow, 10)
        for _ in range(500):
            self.clock.advance(0)
            self.publish(3)
            slow.drain()
        self.clock.advance(0)
        self.publish(3)
        self.assertEqual(slow.seqs, list(range(11, self.history.last_seq + 1)))

    def test_a_backlogged_client_gets_nothing_until_it_drains(self):
        """While the connection is backed up the replay waits, whatever the reactor does."""
        self.publish(2000, size=300)
        per_batch = batch_of([line for _, line in self.history.read_since(0)])
        slow = SlowSubscriber(every=per_batch)
        self.subscribers.add(slow, 0)
        self.clock.advance(0)
        self.assertEqual(len(slow.seqs), per_batch)
        for _ in range(10):
            self.clock.advance(1)
        self.publish(10)
        self.assertEqual(len(slow.seqs), per_batch)
        slow.drain()
        self.assertEqual(slow.seqs, list(range(1, 2 * per_batch + 1)))

    def test_the_wire_gets_each_stored_line_framed_once_in_order(self):
        """
        Through a real Outbox to a transport that holds 64 KiB before it
        pauses: the bytes are each stored line's frame, in order, none
        twice, across files, chunks and batches, live events after them;
        each message counted once.
        """
        sizes = [0, 10, 200, 3000, 70000, 130000, 64 * 1024, 5, 40000]
        for i in range(600):
            self.publish(1, size=sizes[i % len(sizes)] + i)
        wire = _TransportWire()
        counted = []
        backlog = SendBacklog(self.clock, bound=2**30, grace=10.0, cap=2**31,
                              close=lambda why: self.fail(why))
        outbox = Outbox(wire, backlog, cap=2**31, close_slow=lambda why: self.fail(why),
                        sent=counted.append)
        wire.backlog = backlog
        self.subscribers.add(outbox, 7)
        turns = 0
        while outbox in self.subscribers._replaying:
            self.clock.advance(0)
            wire.drain()
            self.publish(1, size=turns % 3 * 1000)
            turns += 1
        self.publish(2)
        expected = [line for seq, line in self.history.read_since(7)]
        self.assertEqual(len(expected), self.history.last_seq - 7)
        self.assertEqual(bytes(wire.data), b"".join(prepare(line) for line in expected))
        self.assertEqual(counted, [len(line) for line in expected])
        self.assertGreater(turns, 10)
        self.assertLess(wire.writes, len(expected) / 2)
        # It waited for the transport: never more than a batch beyond the pause.
        self.assertLessEqual(wire.most_held, 2 * REPLAY_BYTES + max(sizes) + 1000)

    def test_events_read_before_a_reader_fails_are_sent(self):
        """A reader that raises mid-batch: what it gave is sent, then the client is live."""

        def read_since(since):
            for seq in range(since + 1, since + 4):
                yield seq, line_of(seq)
            raise OSError(5, "Input/output error")

        subscribers = Subscribers(read_since, lambda: 10, send_each, self.clock)
        client = SlowSubscriber(every=10**9)
        subscribers.add(client, 0)
        self.clock.advance(0)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertEqual(client.seqs, [1, 2, 3])
        subscribers.publish(line_of(11))
        self.assertEqual(client.seqs, [1, 2, 3, 11])

    def test_a_fast_client_gets_one_batch_per_reactor_turn(self):
        """REPLAY_BATCH events per turn, so other connections get their turn."""
        self.publish(REPLAY_BATCH * 3)
        fast = SlowSubscriber(every=10**9)
        # Clock.advance runs what each call schedules at once: a turn is
        # one step, and each step schedules the next.
        turns = []
        call_later = self.clock.callLater

        def scheduled(delay, f, *args, **kwargs):
            turns.append(len(fast.seqs))
            return call_later(delay, f, *args, **kwargs)

        self.patch(self.clock, "callLater", scheduled)
        self.subscribers.add(fast, 0)
        self.clock.advance(0)
        self.assertEqual(turns, [0, REPLAY_BATCH, 2 * REPLAY_BATCH])
        self.assertEqual(fast.seqs, list(range(1, 3 * REPLAY_BATCH + 1)))

    def test_replaying_a_big_history_holds_little_memory(self):
        """20 MB replayed to a client that drains slowly: the server holds ~nothing of it."""
        self.publish(20000, size=1000)
        slow = SlowSubscriber(every=50)
        slow.send_line = lambda line: (slow.seqs.append(len(line)),
                                       setattr(slow, "_since_drain", slow._since_drain + 1))
        self.subscribers.add(slow, 0)
        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)
        while len(slow.seqs) < 20000:
            self.clock.advance(0)
            slow.drain()
        _, peak = tracemalloc.get_traced_memory()
        self.assertLess(peak, 4 * 2**20)
