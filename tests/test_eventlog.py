"""
Tests for L{claudews.eventlog}: storing a project's events before sending
them, and holding, dropping and retrying while the disk refuses writes.

A real L{History} in a temporary directory, a L{Clock} for the retry
timer, and an C{append} that raises ENOSPC while the disk is "full".
How a L{claudews.project.Project} reacts (failing its prompt, refusing
new ones) is tested in C{tests.test_project}.
"""

import errno
import json
import os
import shutil
import tempfile

from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from claudews import eventlog
from claudews.eventlog import STORAGE_RETRY, EventLog
from claudews.events import Event, timestamp
from claudews.history import History
from claudews.interfaces import send_each
from tests import test_project
from tests.wsmemory import decode_frames


class Subscriber(test_project.Subscriber):
    """The project tests' subscriber, which also takes a replay's batches."""

    def send_prepared(self, prepared, size):
        frames, rest = decode_frames(prepared.data)
        assert rest == b"" and sum(prepared.sizes) == size
        self.lines.extend(frame.payload for frame in frames)


NO_SPACE = "cannot store events: [Errno 28] No space left on device"


class EventLogTestCase(SynchronousTestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="claudews-eventlog-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.clock = Clock()
        self.history = History(self.dir, fsync="none", reactor=self.clock)
        self.addCleanup(self.history.close)
        self.full = False
        append = self.history.append

        def failing_append(seq, line):
            if self.full:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            append(seq, line)

        append_many = self.history.append_many
        #: How many writes the history was asked for.
        self.writes = 0

        def failing_append_many(seq, lines):
            self.writes += 1
            if self.full:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            append_many(seq, lines)

        self.patch(self.history, "append", failing_append)
        self.patch(self.history, "append_many", failing_append_many)
        self.calls = []
        self.stored_events = []
        self.log = EventLog(
            path="/work/app",
            history=self.history,
            fanout=send_each,
            reactor=self.clock,
            broken=lambda problem: self.calls.append(("broken", problem)),
            works_again=lambda: self.calls.append(("works_again",)),
            finish_stored=lambda prompt_id: self.calls.append(("finish_stored", prompt_id)),
            stored=self.stored_events.append,
        )
        self.subscriber = Subscriber()
        self.log.subscribe(self.subscriber, None)

    def stored(self):
        """Every stored event, decoded."""
        return [json.loads(line) for _, line in self.history.read_since(0)]

    def sent(self):
        return [json.loads(line) for line in self.subscriber.lines]

    def finished(self, prompt_id):
        return {"prompt_id": prompt_id, "status": "failed"}


class PublishTests(EventLogTestCase):
    def test_an_event_is_stored_then_sent_as_the_same_line(self):
        """The subscriber gets byte for byte the line the history holds."""
        self.assertTrue(self.log.publish(Event("output", {"prompt_id": "p-1", "text": "hi"})))
        [(seq, line)] = self.history.read_since(0)
        self.assertEqual(self.subscriber.lines, [line])
        event = json.loads(line)
        self.assertEqual(
            (seq, event["seq"], event["path"], event["event"], event["text"]),
            (1, 1, "/work/app", "output", "hi"),
        )
        self.assertEqual(self.log.last_seq, 1)

    def test_event_times_come_from_the_reactor(self):
        """The reactor's time (the wall clock, in production) gives each event's ts."""
        self.clock.advance(1_800_000_000.25)
        self.log.publish(Event("output", {"text": "x"}))
        self.assertEqual(self.stored()[0]["ts"], timestamp(1_800_000_000.25))

    def test_a_subscriber_with_a_seq_beyond_the_history_replays_it_all(self):
        """A since from an earlier, longer history of the path starts at 0."""
        for i in range(3):
            self.log.publish(Event("output", {"text": str(i)}))
        late = Subscriber()
        self.log.subscribe(late, 10)
        self.clock.advance(0)
        self.assertEqual([json.loads(line)["seq"] for line in late.lines], [1, 2, 3])



class BatchTests(EventLogTestCase):
    """
    L{EventLog.batch}: the CLI's events of one read, stored with one write.
    """

    def test_a_batch_is_one_write_then_sent_in_order(self):
        """Nothing is written or sent inside the batch; at its end, one write, then every send."""
        with self.log.batch():
            for i in range(3):
                self.assertTrue(self.log.publish(Event("output", {"text": str(i)})))
            self.assertEqual((self.writes, self.subscriber.lines, self.log.last_seq), (0, [], 0))
        self.assertEqual(self.writes, 1)
        self.assertEqual([e["text"] for e in self.sent()], ["0", "1", "2"])
        self.assertEqual([e["seq"] for e in self.stored()], [1, 2, 3])
        self.assertEqual([e.kind for e in self.stored_events], ["output"] * 3)

    def test_another_kind_writes_what_was_gathered_first(self):
        """An event that settles state is stored at once, after the batch's earlier events."""
        with self.log.batch():
            self.log.publish(Event("output", {"text": "before"}))
            self.assertTrue(self.log.publish(Event("prompt.finished", self.finished("p-1"))))
            self.assertEqual([e["event"] for e in self.sent()], ["output", "prompt.finished"])
            self.log.publish(Event("output", {"text": "after"}))
        self.assertEqual([e["seq"] for e in self.sent()], [1, 2, 3])
        self.assertEqual(self.writes, 3)

    def test_nested_batches_write_once(self):
        """Only the outermost batch's end writes."""
        with self.log.batch():
            self.log.publish(Event("output", {"text": "a"}))
            with self.log.batch():
                self.log.publish(Event("output", {"text": "b"}))
            self.assertEqual(self.writes, 0)
        self.assertEqual(self.writes, 1)

    def test_a_batch_the_disk_refuses_is_dropped_and_never_sent(self):
        """As one by one: not stored, not sent, the problem reported; the next write recovers."""
        self.full = True
        with self.log.batch():
            self.log.publish(Event("output", {"text": "lost"}))
            self.log.publish(Event("output", {"text": "lost too"}))
        self.assertEqual((self.subscriber.lines, self.stored()), ([], []))
        self.assertEqual(self.calls, [("broken", NO_SPACE)])
        self.full = False
        with self.log.batch():
            self.log.publish(Event("output", {"text": "kept"}))
        self.assertEqual([e["text"] for e in self.sent()], ["kept"])
        self.assertEqual(self.calls[-1], ("works_again",))


class EveryPolicyTests(SynchronousTestCase):
    """
    Under the C{every} fsync policy nothing is sent before its fsync is
    done: not live, not in a replay.
    """

    def setUp(self):
        from tests.test_history import HeldSyncer

        self.dir = tempfile.mkdtemp(prefix="claudews-eventlog-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.clock = Clock()
        self.syncer = HeldSyncer()
        self.history = History(self.dir, fsync="every", syncer=self.syncer, reactor=self.clock)
        self.addCleanup(self.history.close)
        self.stored_events = []
        self.log = EventLog(
            path="/work/app", history=self.history, fanout=send_each, reactor=self.clock,
            stored=self.stored_events.append,
        )
        self.subscriber = Subscriber()
        self.log.subscribe(self.subscriber, None)

    def test_sent_only_once_synced(self):
        """Written at once, sent (and counted) only when the fsync that covers it is done."""
        self.assertTrue(self.log.publish(Event("output", {"text": "a"})))
        with self.log.batch():
            self.log.publish(Event("output", {"text": "b"}))
        self.clock.advance(0)
        self.assertEqual(self.history.written_seq, 2)
        self.assertEqual((self.subscriber.lines, self.stored_events, self.log.last_seq), ([], [], 0))
        self.syncer.finish()
        self.assertEqual([json.loads(line)["text"] for line in self.subscriber.lines], ["a", "b"])
        self.assertEqual(len(self.stored_events), 2)
        self.assertEqual(self.log.last_seq, 2)

    def test_what_follows_an_event_waits_for_it_to_be_sent(self):
        """after_sent runs once the events stored so far are sent, once however often asked."""
        told = []
        self.log.after_sent(lambda: told.append("at once"))
        self.log.publish(Event("prompt.finished", {"prompt_id": "p-1", "status": "completed"}))
        callback = lambda: told.append("after")  # noqa: E731
        self.log.after_sent(callback)
        self.log.after_sent(callback)
        self.clock.advance(0)
        self.assertEqual((told, self.subscriber.lines), (["at once"], []))
        self.syncer.finish()
        self.assertEqual(told, ["at once", "after"])
        self.assertEqual(len(self.subscriber.lines), 1)

    def test_a_replay_stops_at_what_is_synced(self):
        """A subscriber catching up reads only synced events, then gets the rest live, once."""
        self.log.publish(Event("output", {"text": "a"}))
        self.clock.advance(0)
        self.syncer.finish()
        self.log.publish(Event("output", {"text": "b"}))
        late = Subscriber()
        self.log.subscribe(late, 0)
        self.clock.advance(0)
        self.assertEqual([json.loads(line)["text"] for line in late.lines], ["a"])
        self.syncer.finish()
        self.assertEqual([json.loads(line)["text"] for line in late.lines], ["a", "b"])


class StorageFailureTests(EventLogTestCase):
    def test_an_event_that_cannot_be_stored_is_not_sent(self):
        """publish says False; subscribers see nothing; the problem names the OS error."""
        self.full = True
        self.assertFalse(self.log.publish(Event("output", {"text": "lost"})))
        self.assertEqual((self.subscriber.lines, self.stored()), ([], []))
        self.assertEqual(self.log.problem(), NO_SPACE)
        self.assertEqual(self.calls, [("broken", NO_SPACE)])

    def test_kept_kinds_wait_and_are_stored_first_once_the_disk_takes_them(self):
        """A held prompt.finished comes before the next event; other kinds are dropped."""
        self.full = True
        self.log.publish(Event("output", {"text": "dropped"}))
        self.log.publish(Event("prompt.finished", self.finished("p-1")))
        self.log.publish(Event("session.reset", {}))
        self.assertEqual(self.log.waiting, 2)
        self.full = False
        self.assertTrue(self.log.publish(Event("output", {"text": "after"})))
        kinds = [e["event"] for e in self.stored()]
        self.assertEqual(kinds, ["prompt.finished", "session.reset", "output"])
        self.assertEqual(self.sent(), self.stored())
        self.assertEqual(self.log.waiting, 0)
        self.assertIsNone(self.log.problem())
        self.assertEqual(
            self.calls[-2:], [("finish_stored", "p-1"), ("works_again",)]
        )

    def test_every_stored_event_is_reported_once_even_one_that_waited(self):
        """stored() hears of each event when it is stored: at once, or after the disk came back."""
        self.log.publish(Event("output", {"text": "first"}))
        self.full = True
        self.log.publish(Event("prompt.finished", self.finished("p-1")))
        self.log.publish(Event("output", {"text": "dropped"}))
        self.assertEqual([e.kind for e in self.stored_events], ["output"])
        self.full = False
        self.log.publish(Event("output", {"text": "after"}))
        self.assertEqual(
            [e.kind for e in self.stored_events], ["output", "prompt.finished", "output"]
        )

    def test_the_retry_timer_stores_what_waits_without_a_new_event(self):
        """Every STORAGE_RETRY seconds the waiting events are tried again."""
        self.full = True
        self.log.publish(Event("prompt.finished", self.finished("p-1")))
        self.clock.advance(STORAGE_RETRY)
        self.assertEqual(self.stored(), [])
        self.full = False
        self.clock.advance(STORAGE_RETRY)
        self.assertEqual([e["event"] for e in self.sent()], ["prompt.finished"])
        self.assertIn(("works_again",), self.calls)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_events_published_while_others_wait_keep_their_order(self):
        """The disk is still full when a new kept event comes: it waits behind the others."""
        self.full = True
        self.log.publish(Event("prompt.finished", self.finished("p-1")))
        self.log.publish(Event("prompt.finished", self.finished("p-2")))
        self.full = False
        self.clock.advance(STORAGE_RETRY)
        self.assertEqual([e["prompt_id"] for e in self.stored()], ["p-1", "p-2"])

    def test_at_most_max_waiting_events_wait(self):
        """Past the bound even kept kinds are dropped, the newest first."""
        self.patch(eventlog, "MAX_WAITING", 2)
        self.full = True
        for i in range(4):
            self.log.publish(Event("prompt.finished", self.finished("p-%d" % (i,))))
        self.assertEqual(self.log.waiting, 2)
        self.full = False
        self.clock.advance(STORAGE_RETRY)
        self.assertEqual([e["prompt_id"] for e in self.stored()], ["p-0", "p-1"])

    def test_broken_and_works_again_are_logged_once_with_the_dropped_count(self):
        """One error when writes start failing, one notice counting what was lost."""
        with capturedLogs() as logged:
            self.full = True
            self.log.publish(Event("output", {"text": "a"}))
            self.log.publish(Event("output", {"text": "b"}))
            self.full = False
            self.log.publish(Event("output", {"text": "c"}))
        texts = [e["log_format"] for e in logged]
        self.assertEqual(len([t for t in texts if t.startswith("Cannot store")]), 1)
        [works] = [e for e in logged if "works again" in e["log_format"]]
        self.assertEqual(works["dropped"], 2)


class StopTests(EventLogTestCase):
    def test_stop_gives_what_waits_a_last_chance(self):
        """A disk that works again at stop stores what waited: everything stored."""
        self.full = True
        self.log.publish(Event("prompt.finished", self.finished("p-1")))
        self.full = False
        self.assertTrue(self.log.stop())
        self.assertEqual([e["prompt_id"] for e in self.stored()], ["p-1"])

    def test_stop_on_a_broken_disk_says_events_were_lost_and_stops_retrying(self):
        """False while something waits; the retry timer is cancelled; subscribers dropped."""
        self.full = True
        self.log.publish(Event("prompt.finished", self.finished("p-1")))
        self.assertFalse(self.log.stop())
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(self.log.subscribers), 0)

    def test_close_closes_the_history_even_when_fsync_fails(self):
        """An fsync error is logged, not raised, and the history is closed."""
        self.log.publish(Event("output", {"text": "x"}))

        def failing_flush():
            raise OSError(errno.EIO, "Input/output error")

        self.patch(self.history, "flush", failing_flush)
        with capturedLogs() as logged:
            self.log.close()
        self.assertTrue(any("fsync of the history" in e["log_format"] for e in logged))
        self.assertRaises(ValueError, self.history.append, 2, b"{}")


class ClosedTests(SynchronousTestCase):
    def test_an_event_after_close_is_dropped_not_raised(self):
        """A dying process of a deleted project may print on: nothing breaks."""
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory, True)
        clock = Clock()
        log = EventLog(
            path="/w/app", history=History(directory, reactor=clock), fanout=send_each, reactor=clock
        )
        self.assertTrue(log.publish(Event("output", {"text": "before"})))
        log.close()
        self.assertFalse(log.publish(Event("output", {"text": "after"})))
