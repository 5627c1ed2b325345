"""
Tests for L{claudews.jsonlfile}: the file being written, its names, its
link and its repairs.  How L{claudews.history.History} uses it is in
C{tests.test_history}.
"""

import errno
import os
import shutil
import stat
import tempfile

from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from claudews import jsonlfile
from claudews.jsonlfile import CHUNK, LATEST, LATEST_TMP, JsonlFile, fresh_name, truncate_torn_tail

# 2026-11-26 10:27:06 UTC
T0 = 1795688826.0


class JsonlTestCase(SynchronousTestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="claudews-jsonl-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.logged = []
        self.patch(jsonlfile, "_log", Logger(observer=self.logged.append))
        self.time = T0

    def path(self, name):
        return os.path.join(self.dir, name)

    def contents(self, name):
        with open(self.path(name), "rb") as f:
            return f.read()

    def writer(self, name="messages_2026-11-26_10-27-06.jsonl", rotate=1000):
        writer = JsonlFile(self.dir, name, rotate, lambda: self.time)
        self.addCleanup(lambda: writer.closed or writer.close())
        return writer


class NameTests(JsonlTestCase):
    def test_a_name_is_the_utc_start_time(self):
        """messages_ and the UTC second the file was started."""
        name = fresh_name(self.dir, T0)
        self.assertEqual(name, "messages_2026-11-26_10-27-06.jsonl")
        self.assertTrue(jsonlfile.NAME.match(name))

    def test_a_taken_name_gets_the_next_suffix(self):
        """A clash in the same second counts up, a dangling link counting as taken."""
        open(self.path("messages_2026-11-26_10-27-06.jsonl"), "wb").close()
        os.symlink("nowhere", self.path("messages_2026-11-26_10-27-06-1.jsonl"))
        name = fresh_name(self.dir, T0)
        self.assertEqual(name, "messages_2026-11-26_10-27-06-2.jsonl")
        self.assertTrue(jsonlfile.NAME.match(name))


class TornTailTests(JsonlTestCase):
    def truncated(self, data):
        with open(self.path("f"), "wb") as f:
            f.write(data)
        return truncate_torn_tail(self.path("f"), len(data)), self.contents("f")

    def test_a_whole_last_line_is_kept(self):
        """A file ending in a newline is not touched, and nothing is logged."""
        self.assertEqual(self.truncated(b"a\nb\n"), (4, b"a\nb\n"))
        self.assertEqual(self.truncated(b""), (0, b""))
        self.assertEqual(self.logged, [])

    def test_a_torn_last_line_is_cut_with_a_warning(self):
        """Bytes after the last newline go; the cut is logged with its size."""
        self.assertEqual(self.truncated(b"a\nb\npart"), (4, b"a\nb\n"))
        [warning] = self.logged
        self.assertEqual(warning["cut"], 4)

    def test_a_torn_line_longer_than_a_chunk_is_cut_whole(self):
        """The search for the last newline goes back chunk by chunk."""
        self.assertEqual(self.truncated(b"a\n" + b"x" * (3 * CHUNK + 5)), (2, b"a\n"))

    def test_a_file_without_any_newline_is_emptied(self):
        """Not one complete line: nothing is kept."""
        self.assertEqual(self.truncated(b"x" * 10), (0, b""))


class WriterTests(JsonlTestCase):
    def test_an_existing_file_is_appended_to(self):
        """Opened again, the writer knows the file's size and writes after it."""
        with open(self.path("messages_2026-11-26_10-27-06.jsonl"), "wb") as f:
            f.write(b"one\n")
        writer = self.writer()
        self.assertEqual(writer.size, 4)
        writer.write(b"two\n")
        self.assertEqual((writer.size, self.contents(writer.name)), (8, b"one\ntwo\n"))

    def test_an_empty_file_never_rotates(self):
        """A line bigger than the limit still goes in an empty file; the next one rotates."""
        writer = self.writer(rotate=10)
        self.assertFalse(writer.shouldRotate(100))
        writer.write(b"x" * 99 + b"\n")
        self.assertTrue(writer.shouldRotate(1))

    def test_rotation_keeps_the_old_file_under_its_name(self):
        """The new file gets a fresh name; the old one stays, whole and closed to us."""
        writer = self.writer()
        old = writer.name
        writer.write(b"one\n")
        self.time += 61
        writer.rotate()
        writer.write(b"two\n")
        self.assertEqual(writer.name, "messages_2026-11-26_10-28-07.jsonl")
        self.assertEqual((self.contents(old), self.contents(writer.name)), (b"one\n", b"two\n"))
        self.assertEqual(writer.size, 4)

    def test_every_file_is_the_owners_alone_whatever_the_umask(self):
        """Created 0600 under a lax umask, and so is each file a rotation starts."""
        old_umask = os.umask(0o022)
        self.addCleanup(os.umask, old_umask)
        writer = self.writer(rotate=10)
        first = writer.name
        writer.write(b"x" * 20 + b"\n")
        self.time += 61
        writer.rotate()
        writer.write(b"two\n")
        self.assertTrue(writer.linkLatest())
        for name in (first, writer.name, LATEST):
            self.assertEqual(stat.S_IMODE(os.stat(self.path(name)).st_mode), 0o600, name)

    def test_a_file_an_older_server_made_readable_is_tightened(self):
        """Opening an existing 0644 file makes it 0600 and appends after what it holds."""
        name = "messages_2026-11-26_10-27-06.jsonl"
        with open(self.path(name), "wb") as f:
            f.write(b"one\n")
        os.chmod(self.path(name), 0o644)
        writer = self.writer(name)
        writer.write(b"two\n")
        self.assertEqual(stat.S_IMODE(os.stat(self.path(name)).st_mode), 0o600)
        self.assertEqual(self.contents(name), b"one\ntwo\n")
        self.assertEqual(writer.size, 8)

    def test_latest_points_at_the_file_being_written(self):
        """The link is relative, moved in one step, and a leftover temporary is replaced."""
        writer = self.writer()
        self.assertTrue(writer.linkLatest())
        self.assertEqual(os.readlink(self.path(LATEST)), writer.name)
        writer.rotate()
        os.symlink("stale", self.path(LATEST_TMP))
        self.assertTrue(writer.linkLatest())
        self.assertEqual(os.readlink(self.path(LATEST)), writer.name)
        self.assertFalse(os.path.lexists(self.path(LATEST_TMP)))

    def test_a_link_that_cannot_be_made_is_false_and_logged(self):
        """A refused symlink does not raise: the caller retries later."""
        writer = self.writer()

        def symlink(src, dst):
            raise OSError(errno.EACCES, "Permission denied")

        self.patch(os, "symlink", symlink)
        self.assertFalse(writer.linkLatest())
        self.assertEqual(len(self.logged), 1)


class WriteFailureTests(JsonlTestCase):
    def halfWrite(self):
        """The next write puts half its bytes down, then the disk is full."""
        real = os.write
        writes = []

        def write(fd, data):
            writes.append(data)
            if len(writes) == 1:
                return real(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(os, "write", write)

    def test_a_failed_write_is_cut_back(self):
        """A write that fails part-way leaves the file and its size as they were."""
        writer = self.writer()
        writer.write(b"one\n")
        self.halfWrite()
        self.assertRaises(OSError, writer.write, b"two and more\n")
        self.assertEqual((writer.size, self.contents(writer.name)), (4, b"one\n"))
        self.assertFalse(writer.needsRecovery)

    def test_a_failed_cut_is_recovered_later(self):
        """When the cut fails too, needsRecovery says so until recover cuts it."""
        writer = self.writer()
        writer.write(b"one\n")
        self.halfWrite()

        def ftruncate(fd, size):
            raise OSError(errno.EIO, "I/O error")

        real_ftruncate = os.ftruncate
        self.patch(os, "ftruncate", ftruncate)
        self.assertRaises(OSError, writer.write, b"two and more\n")
        self.assertTrue(writer.needsRecovery)
        self.assertNotEqual(self.contents(writer.name), b"one\n")
        self.patch(os, "ftruncate", real_ftruncate)
        writer.recover()
        self.assertFalse(writer.needsRecovery)
        self.assertEqual(self.contents(writer.name), b"one\n")
