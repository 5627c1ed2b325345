"""
Tests for L{claudews.record}: a project's metadata.json with its open
prompts, its process markers and its clean flag, and what a failed write
does.

A write is made to fail by pointing the record at a directory that does
not exist: a read-only directory does not stop a test run as root.
"""

import os
import shutil
import tempfile
from typing import Any

from twisted.logger import LogLevel
from twisted.trial.unittest import SynchronousTestCase

from claudews import metadata
from claudews.record import Record
from tests.logcapture import LogCapture


class RecordTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="claudews-record-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.fields: dict[str, Any] = {"path": "/w/app", "session_id": None}
        self.open_prompts: list[str] = []
        self.markers: list[str] = []
        self.record = Record(self.dir, lambda: dict(self.fields), self.open_prompts, self.markers)
        self.logs = LogCapture(self)

    def stored(self) -> dict[str, Any] | None:
        return metadata.read(self.dir)

    def break_disk(self) -> None:
        """Make every later write fail, until L{mend_disk}."""
        self.record.directory = os.path.join(self.dir, "missing")

    def mend_disk(self) -> None:
        self.record.directory = self.dir

    def errors(self) -> list[dict[str, Any]]:
        return [
            e
            for e in self.logs.events
            if e.get("log_namespace") == "claudews.record.Record" and e["log_level"] == LogLevel.error
        ]


class SaveTests(RecordTestCase):
    def test_write_raises_what_the_disk_said_and_logs_nothing(self) -> None:
        """write() is save() for a caller that reports the failure itself."""
        self.break_disk()
        e = self.assertRaises(OSError, self.record.write)
        self.assertIs(self.record.error, e)
        self.assertEqual(self.errors(), [])
        self.mend_disk()
        self.record.write()
        self.assertIsNone(self.record.error)
        self.assertIsNotNone(self.stored())

    def test_save_writes_the_fields_and_the_record(self) -> None:
        """metadata.json holds the project's fields, open prompts, markers and clean flag."""
        self.assertTrue(self.record.save())
        self.assertEqual(
            self.stored(),
            {"path": "/w/app", "session_id": None, "open_prompts": [], "markers": [], "clean": False},
        )
        self.assertIsNone(self.record.error)

    def test_save_asks_for_the_fields_each_time(self) -> None:
        """A later save writes the project's fields as they are then."""
        self.record.save()
        self.fields["session_id"] = "s-1"
        self.record.save()
        stored = self.stored()
        assert stored is not None
        self.assertEqual(stored["session_id"], "s-1")

    def test_markers_are_shared_with_the_live_process(self) -> None:
        """Markers the live process added are in the next write."""
        self.markers.append("cw1234-1")
        self.record.save()
        stored = self.stored()
        assert stored is not None
        self.assertEqual(stored["markers"], ["cw1234-1"])

    def test_a_clean_close_is_on_record(self) -> None:
        """Unclean until said otherwise; a clean close writes clean: true."""
        self.assertFalse(self.record.clean)
        self.record.clean = True
        self.record.save()
        stored = self.stored()
        assert stored is not None
        self.assertIs(stored["clean"], True)


class FailedWriteTests(RecordTestCase):
    def test_a_failed_write_is_logged_and_remembered(self) -> None:
        """save says False, logs the path and the error, and keeps it in error."""
        self.break_disk()
        self.assertFalse(self.record.save())
        self.assertIsInstance(self.record.error, OSError)
        [event] = self.errors()
        self.assertEqual(event["path"], "/w/app")
        self.assertIs(event["error"], self.record.error)
        self.assertEqual(len(self.logs.lines("Could not write metadata of /w/app")), 1)

    def test_a_failed_write_leaves_the_old_metadata(self) -> None:
        """What was written before stays in force."""
        self.record.save()
        before = self.stored()
        self.fields["session_id"] = "s-1"
        self.break_disk()
        self.record.save()
        self.assertEqual(self.stored(), before)

    def test_a_later_good_write_clears_the_error(self) -> None:
        """Once a write works again, error is None."""
        self.break_disk()
        self.record.save()
        self.mend_disk()
        self.assertTrue(self.record.save())
        self.assertIsNone(self.record.error)


class OpenPromptTests(RecordTestCase):
    def test_opened_puts_the_prompt_on_record(self) -> None:
        """An opened prompt is written as open before it says anything."""
        self.assertTrue(self.record.opened("p-1"))
        self.assertTrue(self.record.opened("p-2"))
        stored = self.stored()
        assert stored is not None
        self.assertEqual(stored["open_prompts"], ["p-1", "p-2"])
        self.assertEqual(self.open_prompts, ["p-1", "p-2"])
        self.assertIs(self.record.open_prompts, self.open_prompts)

    def test_settled_takes_the_prompt_off_record(self) -> None:
        """A settled prompt is written as no longer open."""
        self.record.opened("p-1")
        self.record.opened("p-2")
        self.record.settled("p-1")
        stored = self.stored()
        assert stored is not None
        self.assertEqual(stored["open_prompts"], ["p-2"])
        self.assertEqual(self.open_prompts, ["p-2"])

    def test_settling_a_prompt_not_open_still_saves(self) -> None:
        """Settling an unknown prompt changes nothing but writes the record."""
        self.record.opened("p-1")
        self.fields["session_id"] = "s-1"
        self.record.settled("p-9")
        stored = self.stored()
        assert stored is not None
        self.assertEqual(stored["open_prompts"], ["p-1"])
        self.assertEqual(stored["session_id"], "s-1")

    def test_opened_undoes_itself_when_the_write_fails(self) -> None:
        """A prompt that could not be put on record is not left open."""
        self.record.opened("p-1")
        self.break_disk()
        self.assertFalse(self.record.opened("p-2"))
        self.assertEqual(self.open_prompts, ["p-1"])
        self.assertIsInstance(self.record.error, OSError)
        self.assertTrue(self.errors())
        stored = self.stored()
        assert stored is not None
        self.assertEqual(stored["open_prompts"], ["p-1"])

    def test_after_a_failed_open_the_next_write_has_no_trace_of_it(self) -> None:
        """Once the disk is back, the prompt that failed to open is not on record."""
        self.break_disk()
        self.record.opened("p-1")
        self.mend_disk()
        self.record.save()
        stored = self.stored()
        assert stored is not None
        self.assertEqual(stored["open_prompts"], [])
