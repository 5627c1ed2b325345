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
from claudews.subscribers import REPLAY_BATCH, Subscribers


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

    def publish(self, n):
        for _ in range(n):
            line = line_of(self.store.last_seq + 1)
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
        self.publish(10)
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
        self.publish(2000)
        slow = SlowSubscriber(every=100)
        self.subscribers.add(slow, 0)
        self.clock.advance(0)
        self.assertEqual(len(slow.seqs), 100)
        for _ in range(10):
            self.clock.advance(1)
        self.publish(10)
        self.assertEqual(len(slow.seqs), 100)
        slow.drain()
        self.assertEqual(slow.seqs, list(range(1, 201)))

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
