"""
Tests for L{claudews.metadata}: an atomic, durable write and a read that
forgives a missing or damaged file.

(A write that fails for a full disk is in C{tests.test_durability}.)
"""

import ctypes
import errno
import json
import os
import shutil
import stat
import tempfile

from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from claudews import metadata
from claudews import syncer as syncer_module


class MetadataTestCase(SynchronousTestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="claudews-metadata-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.file = os.path.join(self.dir, metadata.FILENAME)
        self.warnings = []

        def observe(event):
            if event.get("log_namespace") == "claudews.metadata" and event["log_level"] == LogLevel.warn:
                self.warnings.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)


class WriteTests(MetadataTestCase):
    def test_a_write_reads_back(self):
        """What is written is what is read, as a private, readable JSON file."""
        data = {"path": "/w/app", "open_prompts": ["p-1"], "epoch": 1, "session_id": None}
        metadata.write(self.dir, data)
        self.assertEqual(metadata.read(self.dir), data)
        self.assertEqual(stat.S_IMODE(os.stat(self.file).st_mode), 0o600)
        with open(self.file, "rb") as f:
            self.assertEqual(f.read(), json.dumps(data, indent=2, sort_keys=True).encode() + b"\n")

    def test_a_write_replaces_the_old_file_leaving_nothing_else(self):
        """The new metadata takes the old one's place; no temporary file stays."""
        metadata.write(self.dir, {"path": "/old"})
        metadata.write(self.dir, {"path": "/new"})
        self.assertEqual(metadata.read(self.dir), {"path": "/new"})
        self.assertEqual(os.listdir(self.dir), [metadata.FILENAME])

    def test_the_file_and_then_its_rename_are_made_durable(self):
        """The data is fsynced before the rename, the directory after it."""
        calls = []
        real_fsync, real_exchange, real_replace = os.fsync, metadata._exchange, os.replace

        def fsync(fd):
            calls.append(("fsync", stat.S_ISDIR(os.fstat(fd).st_mode)))
            real_fsync(fd)

        def exchange(temp, target):
            calls.append(("exchange", os.path.basename(target)))
            return real_exchange(temp, target)

        def replace(src, dst):
            calls.append(("replace", os.path.basename(dst)))
            real_replace(src, dst)

        self.patch(os, "fsync", fsync)
        self.patch(metadata, "_exchange", exchange)
        self.patch(os, "replace", replace)
        metadata.write(self.dir, {"path": "/w/app"})
        metadata.write(self.dir, {"path": "/w/app2"})
        renamed = [call for call in calls[4:] if call[0] != "fsync"]
        self.assertEqual(calls[:4], [
            ("fsync", False), ("exchange", metadata.FILENAME), ("replace", metadata.FILENAME), ("fsync", True),
        ])
        self.assertEqual(calls[4], ("fsync", False))
        self.assertEqual(calls[-1], ("fsync", True))
        self.assertIn(renamed, [
            # Where names can be exchanged, the second write is one exchange.
            [("exchange", metadata.FILENAME)],
            [("exchange", metadata.FILENAME), ("replace", metadata.FILENAME)],
        ])
        self.assertEqual(metadata.read(self.dir), {"path": "/w/app2"})

    def test_a_failed_rename_keeps_the_old_file_and_leaves_no_temporary(self):
        """The rename refused: the error is raised, the old metadata stays in force."""
        metadata.write(self.dir, {"path": "/old"})

        def refuse(*args):
            raise OSError(errno.EIO, "I/O error")

        for exchange in (refuse, lambda temp, target: False):
            self.patch(metadata, "_exchange", exchange)
            self.patch(os, "replace", refuse)
            self.assertRaises(OSError, metadata.write, self.dir, {"path": "/new"})
            self.assertEqual(metadata.read(self.dir), {"path": "/old"})
            self.assertEqual(os.listdir(self.dir), [metadata.FILENAME])

    def test_names_exchanged_leave_the_new_file_and_nothing_else(self):
        """Over an old file the names are exchanged (no write-back forced by the rename), the old one removed."""
        if metadata._exchange_names is None:
            raise SkipTest("no renameat2 in this C library")
        metadata.write(self.dir, {"path": "/old"})
        replaced = []
        self.patch(os, "replace", lambda *args: replaced.append(args))
        metadata.write(self.dir, {"path": "/new"}, sync=False)
        if replaced:
            raise SkipTest("this file system cannot exchange names")
        self.assertEqual(metadata.read(self.dir), {"path": "/new"})
        self.assertEqual(os.listdir(self.dir), [metadata.FILENAME])

    def test_where_names_cannot_be_exchanged_it_is_a_rename(self):
        """No renameat2, or one that says the file system cannot: a plain rename, the same result."""
        metadata.write(self.dir, {"path": "/old"})
        self.patch(metadata, "_exchange_names", None)
        metadata.write(self.dir, {"path": "/new"})
        self.assertEqual(metadata.read(self.dir), {"path": "/new"})

        def unsupported(*args):
            ctypes.set_errno(errno.EINVAL)
            return -1

        self.patch(metadata, "_exchange_names", unsupported)
        metadata.write(self.dir, {"path": "/newer"})
        self.assertEqual(metadata.read(self.dir), {"path": "/newer"})
        self.assertEqual(os.listdir(self.dir), [metadata.FILENAME])

    def test_an_exchange_that_fails_otherwise_keeps_the_old_file(self):
        """renameat2 failing for another reason (EIO) is raised; the old metadata stays."""
        metadata.write(self.dir, {"path": "/old"})

        def failing(*args):
            ctypes.set_errno(errno.EIO)
            return -1

        self.patch(metadata, "_exchange_names", failing)
        e = self.assertRaises(OSError, metadata.write, self.dir, {"path": "/new"})
        self.assertEqual(e.errno, errno.EIO)
        self.assertEqual(metadata.read(self.dir), {"path": "/old"})
        self.assertEqual(os.listdir(self.dir), [metadata.FILENAME])

    def test_a_leftover_temporary_is_written_over(self):
        """An old file left under the temporary name (a crash right after an exchange) is no obstacle."""
        metadata.write(self.dir, {"path": "/old"})
        with open(self.file + ".tmp", "w") as f:
            f.write('{"path": "/older", "padding": "%s"}' % ("x" * 10000,))
        metadata.write(self.dir, {"path": "/new"})
        self.assertEqual(metadata.read(self.dir), {"path": "/new"})
        self.assertEqual(os.listdir(self.dir), [metadata.FILENAME])

    def test_keep_returns_the_new_files_descriptor_open(self):
        """keep=True: the descriptor written through, of the file now in place, for the caller."""
        metadata.write(self.dir, {"path": "/old"})
        fd = metadata.write(self.dir, {"path": "/new"}, sync=False, keep=True)
        self.addCleanup(os.close, fd)
        self.assertEqual(os.fstat(fd).st_ino, os.stat(self.file).st_ino)
        self.assertEqual(metadata.read(self.dir), {"path": "/new"})

    def test_text_outside_ascii_is_written_as_it_is(self):
        """A path in any script stays readable in the file; what UTF-8 cannot hold is escaped."""
        data = {"path": "/w/café/日本", "open_prompts": []}
        metadata.write(self.dir, data)
        with open(self.file, "rb") as f:
            self.assertIn("/w/café/日本".encode("utf-8"), f.read())
        self.assertEqual(metadata.read(self.dir), data)
        # A lone surrogate (an undecodable byte of a file name), an integer
        # past 64 bits: as the standard library writes them.
        for odd in ({"path": "/w/\udcff"}, {"path": "/w", "n": 2**70}):
            metadata.write(self.dir, odd)
            with open(self.file, "rb") as f:
                self.assertEqual(f.read(), json.dumps(odd, indent=2, sort_keys=True).encode() + b"\n")
            self.assertEqual(metadata.read(self.dir), odd)

    def test_a_failed_directory_fsync_is_raised_after_the_rename(self):
        """The new file is in place, but the caller learns it may not survive a crash."""
        real_fsync = os.fsync

        def fsync(fd):
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                raise OSError(errno.EIO, "I/O error")
            real_fsync(fd)

        self.patch(os, "fsync", fsync)
        self.assertRaises(OSError, metadata.write, self.dir, {"path": "/new"})
        self.assertEqual(metadata.read(self.dir), {"path": "/new"})


class ReadTests(MetadataTestCase):
    def test_a_missing_file_is_none_without_a_warning(self):
        """No metadata yet is ordinary: None, nothing logged."""
        self.assertIsNone(metadata.read(self.dir))
        self.assertEqual(self.warnings, [])

    def test_a_damaged_file_is_none_with_a_warning(self):
        """Half a JSON document (or none at all): None, and a warning naming the file."""
        for damaged in (b'{"path": "/w', b"", b"\xff\xfe"):
            with open(self.file, "wb") as f:
                f.write(damaged)
            self.assertIsNone(metadata.read(self.dir))
        self.assertEqual(len(self.warnings), 3)
        self.assertEqual({w["file"] for w in self.warnings}, {self.file})

    def test_json_that_is_not_an_object_is_none_with_a_warning(self):
        """A list or a number is not metadata."""
        for value in ([], 3, "path"):
            with open(self.file, "w") as f:
                json.dump(value, f)
            self.assertIsNone(metadata.read(self.dir))
        self.assertEqual(len(self.warnings), 3)

    def test_an_unreadable_file_is_none_with_a_warning(self):
        """An I/O error reading it (here: a directory in its place) is not raised."""
        os.mkdir(self.file)
        self.assertIsNone(metadata.read(self.dir))
        self.assertEqual(len(self.warnings), 1)


class WriterTests(SynchronousTestCase):
    """
    L{metadata.Writer}: metadata.json's fsyncs follow the history's policy.
    """

    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="claudews-metadata-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.fsyncs: list[int] = []
        real = os.fsync

        def fsync(fd: int) -> None:
            self.fsyncs.append(fd)
            real(fd)

        self.patch(metadata.os, "fsync", fsync)
        self.patch(syncer_module.os, "fsync", fsync)

    def test_every_fsyncs_before_it_returns(self) -> None:
        """every: file and directory are fsynced on the calling thread."""
        from tests.test_history import HeldSyncer

        syncer = HeldSyncer()
        metadata.Writer("every", syncer)(self.dir, {"a": 1})
        self.assertEqual(len(self.fsyncs), 2)
        self.assertEqual(syncer.calls, [])
        self.assertEqual(metadata.read(self.dir), {"a": 1})

    def test_interval_hands_the_fsyncs_to_the_syncer(self) -> None:
        """interval: the file is in place at once, its fsyncs run in the syncer."""
        from tests.test_history import HeldSyncer

        syncer = HeldSyncer()
        write = metadata.Writer("interval", syncer)
        write(self.dir, {"a": 1})
        syncer.finish()
        del self.fsyncs[:]
        write(self.dir, {"a": 2})
        self.assertEqual(metadata.read(self.dir), {"a": 2})
        self.assertEqual(self.fsyncs, [])
        # The descriptor written through: the file now in place.
        [(fds, _, _)] = syncer.calls
        self.assertEqual(os.fstat(fds[0]).st_ino, os.stat(os.path.join(self.dir, metadata.FILENAME)).st_ino)
        fds, directory = syncer.finish()
        self.assertEqual((len(fds), directory), (1, self.dir))
        self.assertEqual(len(self.fsyncs), 2)

    def test_none_leaves_it_to_the_os(self) -> None:
        """none: no fsync at all, the file is in place."""
        from tests.test_history import HeldSyncer

        syncer = HeldSyncer()
        metadata.Writer("none", syncer)(self.dir, {"a": 3})
        self.assertEqual((self.fsyncs, syncer.calls), ([], []))
        self.assertEqual(metadata.read(self.dir), {"a": 3})


class TimedWriterTests(SynchronousTestCase):
    """
    L{metadata.Writer} under C{interval} with a reactor: fsyncs at most
    C{interval} after a write, one per directory for all its writes.
    """

    def setUp(self) -> None:
        from tests.test_history import HeldSyncer

        self.dirs = [tempfile.mkdtemp(prefix="claudews-metadata-") for _ in range(2)]
        for directory in self.dirs:
            self.addCleanup(shutil.rmtree, directory, True)
        self.reactor = MemoryReactorClock()
        self.syncer = HeldSyncer()
        self.write = metadata.Writer("interval", self.syncer, self.reactor, interval=1.0)

    def inode(self, directory: str) -> int:
        return os.stat(os.path.join(directory, metadata.FILENAME)).st_ino

    def test_the_writes_of_an_interval_share_one_fsync_of_the_newest_file(self) -> None:
        """Three writes, one fsync a second later: of the file in place, and its directory."""
        for n in range(3):
            self.write(self.dirs[0], {"n": n})
            self.reactor.advance(0.4)
        self.assertEqual(metadata.read(self.dirs[0]), {"n": 2})
        # The first write's second is up (at 1.0 s, the third came at 0.8).
        self.assertEqual(len(self.syncer.calls), 1)
        [(fds, directory, _)] = self.syncer.calls
        self.assertEqual((len(fds), directory), (1, self.dirs[0]))
        self.assertEqual(os.fstat(fds[0]).st_ino, self.inode(self.dirs[0]))
        self.syncer.finish()
        self.reactor.advance(10)
        self.assertEqual(self.syncer.calls, [])

    def test_each_directory_gets_its_fsync(self) -> None:
        """Two projects written in one interval: one fsync each."""
        self.write(self.dirs[0], {"n": 0})
        self.write(self.dirs[1], {"n": 1})
        self.assertEqual(self.syncer.calls, [])
        self.reactor.advance(1.0)
        self.assertEqual(sorted(directory for _, directory, _ in self.syncer.calls), sorted(self.dirs))
        while self.syncer.calls:
            self.syncer.finish()

    def test_a_write_after_an_fsync_waits_for_the_next_interval(self) -> None:
        """The timer starts again with the next write, not before."""
        self.write(self.dirs[0], {"n": 0})
        self.reactor.advance(1.0)
        self.syncer.finish()
        self.reactor.advance(5)
        self.write(self.dirs[0], {"n": 1})
        self.reactor.advance(0.9)
        self.assertEqual(self.syncer.calls, [])
        self.reactor.advance(0.1)
        [(fds, _, _)] = self.syncer.calls
        self.assertEqual(os.fstat(fds[0]).st_ino, self.inode(self.dirs[0]))
        self.syncer.finish()

    def test_what_waits_when_the_reactor_stops_is_handed_over_then(self) -> None:
        """At shutdown ("during": after the services wrote their last) the waiting fsyncs go to the syncer, later ones at once."""
        self.write(self.dirs[0], {"clean": False})
        self.write(self.dirs[0], {"clean": True})
        self.assertEqual(self.syncer.calls, [])
        [(stop, args, kwargs)] = self.reactor.triggers["during"]["shutdown"]
        stop(*args, **kwargs)
        [(fds, directory, _)] = self.syncer.calls
        self.assertEqual(os.fstat(fds[0]).st_ino, self.inode(self.dirs[0]))
        self.syncer.finish()
        self.write(self.dirs[1], {"late": True})
        self.assertEqual([directory for _, directory, _ in self.syncer.calls], [self.dirs[1]])
        self.syncer.finish()
        self.reactor.advance(10)
        self.assertEqual(self.syncer.calls, [])

    def test_a_failed_fsync_is_logged(self) -> None:
        """The syncer's failure is logged with the directory; the writes go on."""
        logged = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        self.write(self.dirs[0], {"n": 0})
        self.reactor.advance(1.0)
        self.syncer.finish(OSError(errno.EIO, "I/O error"))
        [failure] = [e for e in logged if e.get("log_failure") is not None]
        self.assertEqual(failure["dir"], self.dirs[0])
        self.flushLoggedErrors(OSError)
        self.write(self.dirs[0], {"n": 1})
        self.assertEqual(metadata.read(self.dirs[0]), {"n": 1})
