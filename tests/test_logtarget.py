"""
Tests for L{claudews.logtarget}: where twistd logs, and whether the token
may go there.
"""

import os
import shutil
import stat
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from claudews.logtarget import DEFAULT_LOGFILE, LogTarget


def twistd(**options):
    base = {"logfile": None, "nodaemon": 0, "debug": 0, "syslog": 0, "logger": None}
    base.update(options)
    return base


class WhereTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.top = tempfile.mkdtemp(prefix="claudews-logtarget-")
        self.addCleanup(shutil.rmtree, self.top, True)

    def test_foreground_to_stdout_shows_the_token(self) -> None:
        """twistd -n, with no --logfile or --logfile=-, logs to standard output: the token may be shown."""
        for logfile in (None, "", "-"):
            self.assertEqual(
                LogTarget.of(twistd(nodaemon=1, logfile=logfile), {}), LogTarget(None, True)
            )

    def test_a_log_file_hides_the_token(self) -> None:
        """--logfile FILE, in the foreground or as a daemon, is a file: no token."""
        self.assertEqual(LogTarget.of(twistd(nodaemon=1, logfile="x.log"), {}), LogTarget("x.log", False))
        self.assertEqual(LogTarget.of(twistd(logfile="x.log"), {}), LogTarget("x.log", False))

    def test_a_daemon_without_logfile_writes_twistd_log(self) -> None:
        """A daemon without --logfile logs to twistd.log, as twistd does."""
        self.assertEqual(LogTarget.of(twistd(), {}), LogTarget(DEFAULT_LOGFILE, False))

    def test_syslog_and_custom_loggers_hide_the_token(self) -> None:
        """--syslog and --logger go who knows where: no token."""
        self.assertFalse(LogTarget.of(twistd(nodaemon=1, syslog=1), {}).shows_token)
        self.assertFalse(LogTarget.of(twistd(nodaemon=1, logger=object()), {}).shows_token)

    def test_the_journal_hides_the_token(self) -> None:
        """Under systemd, standard output connected to the journal is on disk: no token."""
        path = os.path.join(self.top, "stream")
        with open(path, "w") as f:
            st = os.fstat(f.fileno())
            journal = {"JOURNAL_STREAM": "%d:%d" % (st.st_dev, st.st_ino)}
            self.assertFalse(LogTarget.of(twistd(nodaemon=1), journal, f.fileno()).shows_token)
            # A JOURNAL_STREAM inherited by a process whose stdout is elsewhere does not count.
            other = {"JOURNAL_STREAM": "%d:%d" % (st.st_dev, st.st_ino + 1)}
            self.assertTrue(LogTarget.of(twistd(nodaemon=1), other, f.fileno()).shows_token)
            self.assertTrue(LogTarget.of(twistd(nodaemon=1), {"JOURNAL_STREAM": "x"}, f.fileno()).shows_token)

    def test_not_run_by_twistd_shows_the_token(self) -> None:
        """Without twistd's options, the caller's log is its own business."""
        self.assertEqual(LogTarget.of(None), LogTarget(None, True))


class PrivateFileTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.top = tempfile.mkdtemp(prefix="claudews-logtarget-")
        self.addCleanup(shutil.rmtree, self.top, True)
        self.path = os.path.join(self.top, "claudews.log")

    def mode(self) -> int:
        return stat.S_IMODE(os.stat(self.path).st_mode)

    def test_a_new_log_file_is_created_0600(self) -> None:
        """The file twistd will open exists, empty, mode 0600."""
        old = os.umask(0o022)
        self.addCleanup(os.umask, old)
        LogTarget(self.path, False).make_private()
        self.assertEqual(self.mode(), 0o600)
        self.assertEqual(os.path.getsize(self.path), 0)

    def test_an_open_log_file_is_made_0600_and_kept(self) -> None:
        """An existing 0644 log keeps its lines and becomes 0600."""
        with open(self.path, "w") as f:
            f.write("old line\n")
        os.chmod(self.path, 0o644)
        LogTarget(self.path, False).make_private()
        self.assertEqual(self.mode(), 0o600)
        with open(self.path) as f:
            self.assertEqual(f.read(), "old line\n")

    def test_no_file_nothing_done(self) -> None:
        """Logging to standard output creates nothing."""
        LogTarget(None, True).make_private()
        self.assertEqual(os.listdir(self.top), [])

    def test_an_uncreatable_file_is_an_os_error(self) -> None:
        """A log file in a missing directory cannot be made."""
        target = LogTarget(os.path.join(self.top, "no", "x.log"), False)
        self.assertRaises(OSError, target.make_private)
