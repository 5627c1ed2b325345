"""
Tests for L{claudews.recovery}: what a dead server's history and process
table tell its successor.

Histories are real L{History} files in temporary directories written
event by event; how L{claudews.registry.Registry} loads projects with
what these functions return is tested in C{tests.test_durability}.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from claudews import proctree, recovery
from claudews.history import History
from claudews.clisession import marker_prefix
from claudews.recovery import rebuild, scan_tail, settle


class HistoryTestCase(SynchronousTestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="claudews-scan-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.history = History(self.dir, fsync="none", reactor=Clock())
        self.addCleanup(self.history.close)

    def add(self, kind, ts="t", **fields):
        seq = self.history.last_seq + 1
        self.history.append(seq, json.dumps(
            dict({"type": "event", "path": "/p", "seq": seq, "ts": ts, "event": kind},
                 **fields), separators=(",", ":")).encode())

    def prompt(self, prompt_id, status="completed", session="S-1"):
        self.add("prompt.queued", prompt_id=prompt_id)
        self.add("prompt.started", prompt_id=prompt_id, session_id=session)
        if status:
            self.add("prompt.finished", prompt_id=prompt_id, status=status,
                     session_id=session)


class ScanTailTests(HistoryTestCase):
    def test_open_prompts_are_the_queued_ones_without_a_finish_in_queue_order(self):
        """Running and queued prompts are open, oldest first; finished ones are not."""
        self.prompt("p-1")
        self.add("prompt.queued", prompt_id="p-2")
        self.add("prompt.queued", prompt_id="p-3")
        self.add("prompt.queued", prompt_id="p-4")
        self.add("prompt.finished", prompt_id="p-3", status="cancelled")
        self.add("prompt.started", prompt_id="p-2", session_id="S-1")
        tail = scan_tail(self.history)
        self.assertEqual(tail.open_prompts, ["p-2", "p-4"])
        self.assertEqual(tail.finished, {"p-3"})
        self.assertEqual((tail.session_known, tail.session_id), (True, "S-1"))

    def test_the_scan_stops_at_the_newest_started_prompts_queue_event(self):
        """Older history is not read: a big past costs nothing."""
        self.prompt("p-old")
        for _ in range(3000):
            self.add("output", prompt_id="p-old", text="x")
        self.prompt("p-new", status=None)
        self.add("claude", prompt_id="p-new", message={"type": "system", "subtype": "init",
                                                       "session_id": "S-2"})
        read = []
        lines = self.history.lines_backwards

        def counted():
            for line in lines():
                read.append(line)
                yield line

        self.patch(self.history, "lines_backwards", counted)
        tail = scan_tail(self.history)
        self.assertEqual(tail.open_prompts, ["p-new"])
        self.assertEqual(tail.session_id, "S-2")
        # Its claude, started and queued events, and one line to see past.
        self.assertEqual(len(read), 4)

    def test_a_lost_session_result_is_not_a_session(self):
        """A result saying the conversation was not found does not set it."""
        self.prompt("p-1", status=None, session="S-1")
        self.add("claude", prompt_id="p-1", message={
            "type": "result", "session_id": "S-gone", "is_error": True,
            "result": "No conversation found with session ID: S-gone"})
        self.assertEqual(scan_tail(self.history).session_id, "S-1")

    def test_events_are_read_whatever_their_byte_layout(self):
        """Other separators and key order than the encoder's: still read by their fields."""
        for seq, (kind, prompt_id) in enumerate(
                [("prompt.queued", "p-1"), ("prompt.started", "p-1"),
                 ("prompt.finished", "p-1"), ("prompt.queued", "p-2")], 1):
            self.history.append(seq, json.dumps(
                {"prompt_id": prompt_id, "session_id": "S-1", "event": kind, "seq": seq,
                 "ts": "t", "path": "/p", "type": "event"}).encode())
        tail = scan_tail(self.history)
        self.assertEqual((tail.open_prompts, tail.finished), (["p-2"], {"p-1"}))
        self.assertEqual(tail.session_id, "S-1")

    def test_an_event_quoted_in_cli_output_is_not_an_event(self):
        """A CLI message that contains the text of a finish does not finish the prompt."""
        self.prompt("p-1", status=None)
        quoted = '{"type":"event","path":"/p","seq":9,"ts":"t","event":"prompt.finished",' \
                 '"prompt_id":"p-1","status":"completed"}'
        self.add("output", prompt_id="p-1", stream="stdout", text=quoted)
        self.add("claude", prompt_id="p-1", message={"type": "assistant", "text": quoted})
        tail = scan_tail(self.history)
        self.assertEqual((tail.open_prompts, tail.finished), (["p-1"], set()))

    def test_an_empty_history_has_nothing_open(self):
        """No events: no session, no open prompt."""
        tail = scan_tail(self.history)
        self.assertEqual((tail.open_prompts, tail.session_id), ([], None))


class SettleTests(HistoryTestCase):
    def setUp(self):
        super().setUp()
        self.patch(recovery, "left_running", lambda directory: ["m-found", "m-listed"])

    def test_metadata_behind_its_history_is_brought_up_to_date(self):
        """Prompts the history finished leave the open list; ones it missed join it."""
        self.prompt("p-done")
        self.prompt("p-running", status=None)
        self.add("prompt.queued", prompt_id="p-queued")
        meta = {"path": "/p", "open_prompts": ["p-done", "p-running"], "markers": ["m-listed"]}
        settled = settle(self.dir, self.history, meta)
        self.assertEqual((settled.done, settled.missed), (["p-done"], ["p-queued"]))
        self.assertEqual(settled.meta["open_prompts"], ["p-running", "p-queued"])
        self.assertEqual(settled.meta["path"], "/p")

    def test_markers_left_running_are_added_once(self):
        """Processes found by the prefix join the recorded markers, without repeats."""
        settled = settle(self.dir, self.history, {"markers": ["m-listed"]})
        self.assertEqual(settled.meta["markers"], ["m-listed", "m-found"])
        self.assertEqual((settled.done, settled.missed), ([], []))


class RebuildTests(HistoryTestCase):
    def test_metadata_comes_back_from_the_oldest_and_newest_events(self):
        """Path, created_at and epoch from the logs; session and open prompts from the tail."""
        self.patch(recovery, "left_running", lambda directory: ["m-1"])
        first = "2026-11-26T10:27:06.106Z"
        self.add("prompt.queued", ts=first, prompt_id="p-1")
        self.add("prompt.started", prompt_id="p-1", session_id="S-1")
        self.assertEqual(rebuild(self.dir, self.history), {
            "path": "/p",
            "created_at": first,
            "epoch": recovery.millis(first),
            "session_id": "S-1",
            "open_prompts": ["p-1"],
            "markers": ["m-1"],
        })

    def test_an_empty_history_rebuilds_nothing(self):
        """No event, no path: None."""
        self.assertIsNone(rebuild(self.dir, self.history))

    def test_an_events_time_is_its_milliseconds_since_the_epoch(self):
        """ts to ms exactly; something that is not a ts gives None."""
        self.assertEqual(recovery.millis("1970-01-01T00:00:01.250Z"), 1250)
        self.assertIsNone(recovery.millis("t"))
        self.assertIsNone(recovery.millis(None))


class LeftRunningTests(SynchronousTestCase):
    def test_processes_with_the_directorys_marker_prefix_are_found_once(self):
        """Each distinct marker under the prefix is named once; other prefixes are not."""
        directory = tempfile.mkdtemp(prefix="claudews-left-")
        self.addCleanup(shutil.rmtree, directory, True)
        ours = marker_prefix(directory) + "cli-1"
        theirs = marker_prefix(directory + "-other") + "cli-2"
        for marker in (ours, ours, theirs):
            env = dict(os.environ, **{proctree.MARKER_ENV: marker})
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                                     env=env)
            self.addCleanup(child.wait)
            self.addCleanup(child.kill)
        self.assertEqual(recovery.left_running(directory), [ours])
