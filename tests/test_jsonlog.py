"""
Tests for L{claudews.jsonlog}: the C{--logger} for JSON logs.
"""

import io
import os
import shutil
import stat
import tempfile

from twisted.logger import Logger, eventsFromJSONLogFile
from twisted.trial.unittest import SynchronousTestCase

from claudews import jsonlog


class ObserverTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.top = tempfile.mkdtemp(prefix="claudews-jsonlog-")
        self.addCleanup(shutil.rmtree, self.top, True)

    def test_events_are_json_objects_read_back_by_twisted(self) -> None:
        """An event is one JSON record that eventsFromJSONLogFile reads back, fields and all."""
        out = io.StringIO()
        Logger(observer=jsonlog.observer(out)).info("prompt {prompt_id} done", prompt_id="p-1")
        self.assertEqual(out.getvalue().count("\n"), 1)
        [event] = eventsFromJSONLogFile(io.StringIO(out.getvalue()))
        self.assertEqual(event["prompt_id"], "p-1")
        self.assertEqual(event["log_format"], "prompt {prompt_id} done")
        self.assertEqual(event["log_level"].name, "info")

    def test_the_file_in_the_environment_is_appended_to_privately(self) -> None:
        """CLAUDEWS_JSON_LOG names a file, created mode 0600 (an existing one made so) and appended to."""
        path = os.path.join(self.top, "claudews.json")
        with open(path, "w") as f:
            f.write("")
        os.chmod(path, 0o644)
        for n in range(2):
            observe = jsonlog.observer(environ={jsonlog.FILE_VARIABLE: path})
            Logger(observer=observe).info("line {n}", n=n)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        with open(path) as f:
            self.assertEqual([e["n"] for e in eventsFromJSONLogFile(f)], [0, 1])

    def test_standard_output_by_default(self) -> None:
        """Without a file, or with "-", the events go to standard output as it is now."""
        import sys

        out = io.StringIO()
        self.patch(sys, "stdout", out)
        for environ in ({}, {jsonlog.FILE_VARIABLE: "-"}):
            Logger(observer=jsonlog.observer(environ=environ)).info("hello")
        self.assertEqual(len(list(eventsFromJSONLogFile(io.StringIO(out.getvalue())))), 2)
