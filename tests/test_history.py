"""
Tests for L{claudews.history}.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel
from twisted.trial.unittest import SynchronousTestCase

from claudews import history as history_module
from claudews import jsonlfile, segment
from claudews import syncer as syncer_module
from claudews.history import History
from claudews.jsonlfile import LATEST

# 2026-11-26 10:27:06 UTC
T0 = 1795688826.0


def event(seq: int, pad: int = 0) -> bytes:
    return json.dumps({"type": "event", "seq": seq, "pad": "x" * pad}).encode()


# Every event(seq) with seq < 10 has the same length, handy for exact sizes.
LINE = len(event(1)) + 1


def fill(history: History, upto: int, pad: int = 0) -> None:
    for seq in range(history.written_seq + 1, upto + 1):
        history.append(seq, event(seq, pad))


def seqs(pairs) -> list[int]:
    return [seq for seq, _ in pairs]


def messages(directory: str) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.startswith("messages_"))


class HistoryTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        base = tempfile.mkdtemp(prefix="test_history-")
        self.addCleanup(shutil.rmtree, base, True)
        self.dir = os.path.join(base, "projects", "p1", "logs")
        self.clock = Clock()
        self.time = T0
        self.logged: list[dict] = []
        logger = Logger(observer=self.logged.append)
        for module in (history_module, jsonlfile, segment):
            self.patch(module, "_log", logger)

    def open(self, **kw) -> History:
        kw.setdefault("fsync", "none")
        kw.setdefault("reactor", self.clock)
        kw.setdefault("now", lambda: self.time)
        h = History(self.dir, **kw)
        self.addCleanup(h.close)
        return h

    def warnings(self) -> list[dict]:
        return [e for e in self.logged if e["log_level"] == LogLevel.warn]

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def openFiles(self) -> list[str]:
        """
        The files in the history's directory this process holds open.
        """
        held = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(os.path.join("/proc/self/fd", fd))
            except OSError:
                continue
            if target.startswith(self.dir + os.sep):
                held.append(target)
        return held


class AppendAndReadTests(HistoryTestCase):
    def test_emptyHistory(self) -> None:
        """A new history creates its directory and is empty: last 0, first 1."""
        h = self.open()
        self.assertTrue(os.path.isdir(self.dir))
        self.assertEqual((h.first_seq, h.last_seq), (1, 0))
        self.assertEqual(list(h.read_since(0)), [])
        self.assertEqual(h.page(None, 10), ([], False))

    def test_appendThenReadBack(self) -> None:
        """Appended lines come back byte for byte, with their seq, in order."""
        h = self.open()
        fill(h, 5)
        self.assertEqual(list(h.read_since(0)), [(s, event(s)) for s in range(1, 6)])
        self.assertEqual((h.first_seq, h.last_seq), (1, 5))

    def test_fileHoldsExactWireBytes(self) -> None:
        """The file is the lines, one per event, each ending in a newline."""
        h = self.open()
        fill(h, 3)
        with open(self.path(LATEST), "rb") as f:
            self.assertEqual(f.read(), b"".join(event(s) + b"\n" for s in range(1, 4)))

    def test_readSinceMiddleStartEnd(self) -> None:
        """read_since yields exactly seq > since, up to upto, nothing past the end."""
        h = self.open()
        fill(h, 10)
        self.assertEqual(seqs(h.read_since(0)), list(range(1, 11)))
        self.assertEqual(seqs(h.read_since(4)), list(range(5, 11)))
        self.assertEqual(seqs(h.read_since(4, 6)), [5, 6])
        self.assertEqual(seqs(h.read_since(9)), [10])
        self.assertEqual(seqs(h.read_since(10)), [])
        self.assertEqual(seqs(h.read_since(50)), [])
        self.assertEqual(seqs(h.read_since(6, 4)), [])

    def test_appendWrongSeqRaises(self) -> None:
        """A seq other than last_seq + 1 is refused and changes nothing."""
        h = self.open()
        fill(h, 2)
        self.assertRaises(ValueError, h.append, 4, event(4))
        self.assertRaises(ValueError, h.append, 2, event(2))
        self.assertEqual(h.last_seq, 2)
        h.append(3, event(3))
        self.assertEqual(seqs(h.read_since(0)), [1, 2, 3])

    def test_appendLineWithNewlineRaises(self) -> None:
        """A line holding a newline would become two lines: refused."""
        h = self.open()
        self.assertRaises(ValueError, h.append, 1, b'{"seq": 1,\n"a": 2}')
        self.assertEqual(h.last_seq, 0)

    def test_appendAfterCloseRaises(self) -> None:
        """A closed history accepts no more events."""
        h = self.open()
        h.close()
        self.assertRaises(ValueError, h.append, 1, event(1))

    def test_badFsyncPolicyRaises(self) -> None:
        """Only every, batch and none are fsync policies."""
        self.assertRaises(ValueError, History, self.dir, fsync="sometimes", reactor=self.clock)


class RotationTests(HistoryTestCase):
    def test_rotationBySizeNamesFilesAndMovesLink(self) -> None:
        """Files rotate before a line that would not fit, named by UTC start time."""
        h = self.open(rotate_bytes=3 * LINE)
        fill(h, 3)
        self.assertEqual(messages(self.dir), ["messages_2026-11-26_10-27-06.jsonl"])
        self.time += 61
        h.append(4, event(4))
        self.assertEqual(
            messages(self.dir),
            ["messages_2026-11-26_10-27-06.jsonl", "messages_2026-11-26_10-28-07.jsonl"],
        )
        self.assertEqual(os.readlink(self.path(LATEST)), "messages_2026-11-26_10-28-07.jsonl")
        with open(self.path("messages_2026-11-26_10-27-06.jsonl"), "rb") as f:
            self.assertEqual(f.read(), b"".join(event(s) + b"\n" for s in (1, 2, 3)))
        with open(self.path(LATEST), "rb") as f:
            self.assertEqual(f.read(), event(4) + b"\n")

    def test_sameSecondRotationGetsSuffix(self) -> None:
        """A second file started in the same second gets a -1 suffix."""
        h = self.open(rotate_bytes=LINE)
        fill(h, 3)
        self.assertEqual(
            messages(self.dir),
            [
                "messages_2026-11-26_10-27-06-1.jsonl",
                "messages_2026-11-26_10-27-06-2.jsonl",
                "messages_2026-11-26_10-27-06.jsonl",
            ],
        )
        self.assertEqual(os.readlink(self.path(LATEST)), "messages_2026-11-26_10-27-06-2.jsonl")
        self.assertEqual(seqs(h.read_since(0)), [1, 2, 3])

    def test_bigLineIsNeverSplit(self) -> None:
        """A line larger than rotate_bytes goes whole into a file of its own."""
        h = self.open(rotate_bytes=100)
        h.append(1, event(1))
        h.append(2, event(2, pad=500))
        h.append(3, event(3))
        sizes = []
        for name in messages(self.dir):
            with open(self.path(name), "rb") as f:
                data = f.read()
            self.assertTrue(data.endswith(b"\n"))
            sizes.append(len(data.splitlines()))
        self.assertEqual(sizes, [1, 1, 1])
        self.assertEqual(list(h.read_since(0)), [(1, event(1)), (2, event(2, 500)), (3, event(3))])

    def test_readSinceAcrossRotations(self) -> None:
        """read_since crosses file boundaries from any starting point."""
        h = self.open(rotate_bytes=3 * LINE)
        fill(h, 20)
        self.assertGreater(len(messages(self.dir)), 5)
        for since in range(0, 21):
            self.assertEqual(seqs(h.read_since(since)), list(range(since + 1, 21)))
        self.assertEqual(seqs(h.read_since(2, 8)), list(range(3, 9)))

    def test_retentionDeletesOldestFiles(self) -> None:
        """Over max_bytes, the oldest whole files go and first_seq moves on."""
        h = self.open(rotate_bytes=3 * LINE, max_bytes=7 * LINE)
        fill(h, 9)
        # Files hold 1-3, 4-6, 7-9: 9 lines > 7, so the first file went.
        self.assertEqual(len(messages(self.dir)), 2)
        self.assertEqual((h.first_seq, h.last_seq), (4, 9))
        self.assertEqual(seqs(h.read_since(0)), list(range(4, 10)))
        self.assertEqual(h.page(None, 100), ([event(s) for s in range(4, 10)], False))

    def test_retentionNeverDeletesCurrentFile(self) -> None:
        """The file being written stays even when alone it passes max_bytes."""
        h = self.open(rotate_bytes=10 * LINE, max_bytes=LINE)
        fill(h, 3)
        self.assertEqual(len(messages(self.dir)), 1)
        self.assertEqual(seqs(h.read_since(0)), [1, 2, 3])


class PageTests(HistoryTestCase):
    def test_pageNewest(self) -> None:
        """Without before, the newest events, oldest first, has_more when older exist."""
        h = self.open(rotate_bytes=4 * LINE)
        fill(h, 9)
        self.assertEqual(h.page(None, 3), ([event(7), event(8), event(9)], True))
        self.assertEqual(h.page(None, 9), ([event(s) for s in range(1, 10)], False))
        self.assertEqual(h.page(None, 50), ([event(s) for s in range(1, 10)], False))

    def test_pageBefore(self) -> None:
        """before is exclusive; the page reaches back across files."""
        h = self.open(rotate_bytes=4 * LINE)
        fill(h, 9)
        self.assertEqual(h.page(7, 4), ([event(s) for s in (3, 4, 5, 6)], True))
        self.assertEqual(h.page(3, 4), ([event(1), event(2)], False))
        self.assertEqual(h.page(1, 4), ([], False))
        self.assertEqual(h.page(100, 2), ([event(8), event(9)], True))

    def test_pageAfterRetention(self) -> None:
        """has_more is about stored events: retired ones do not count."""
        h = self.open(rotate_bytes=3 * LINE, max_bytes=7 * LINE)
        fill(h, 9)
        self.assertEqual(h.page(6, 10), ([event(4), event(5)], False))
        self.assertEqual(h.page(6, 1), ([event(5)], True))


class ReadBeforeTests(HistoryTestCase):
    def test_newest_first_across_files(self) -> None:
        """read_before yields the events before C{before}, newest first, across rotations."""
        h = self.open(rotate_bytes=4 * LINE)
        fill(h, 9)
        self.assertEqual([seq for seq, _ in h.read_before(None)], list(range(9, 0, -1)))
        self.assertEqual(list(h.read_before(7))[:2], [(6, event(6)), (5, event(5))])
        self.assertEqual([seq for seq, _ in h.read_before(5)], [4, 3, 2, 1])
        self.assertEqual(list(h.read_before(1)), [])
        self.assertEqual([seq for seq, _ in h.read_before(100)][:1], [9])

    def test_after_retention_only_stored_events(self) -> None:
        """Retired events are not read."""
        h = self.open(rotate_bytes=3 * LINE, max_bytes=7 * LINE)
        fill(h, 9)
        self.assertEqual([seq for seq, _ in h.read_before(6)], [5, 4])


class ReopenTests(HistoryTestCase):
    def test_reopenContinuesSeq(self) -> None:
        """A reopened history knows its seqs and appends to the same file."""
        h = self.open(rotate_bytes=4 * LINE)
        fill(h, 6)
        h.close()
        names = messages(self.dir)
        h = self.open(rotate_bytes=4 * LINE)
        self.assertEqual((h.first_seq, h.last_seq), (1, 6))
        h.append(7, event(7))
        self.assertEqual(messages(self.dir), names)
        self.assertEqual(seqs(h.read_since(0)), list(range(1, 8)))
        self.assertRaises(ValueError, h.append, 1, event(1))

    def test_reopenOrdersFilesBySeqNotName(self) -> None:
        """A clock that stepped back gives names out of order; seq order wins."""
        h = self.open(rotate_bytes=2 * LINE)
        for seq in range(1, 7):
            h.append(seq, event(seq))
            self.time -= 3600
        h.close()
        h = self.open(rotate_bytes=2 * LINE)
        self.assertEqual(h.last_seq, 6)
        self.assertEqual(seqs(h.read_since(0)), list(range(1, 7)))
        self.assertEqual(h.page(None, 3), ([event(4), event(5), event(6)], True))

    def test_tornLastLineTruncatedOnReopen(self) -> None:
        """A crash mid-line leaves a torn tail, cut on open with a warning."""
        h = self.open()
        fill(h, 3)
        h.close()
        with open(self.path(LATEST), "ab") as f:
            f.write(event(4)[:10])
        h = self.open()
        self.assertEqual(h.last_seq, 3)
        self.assertTrue(self.warnings())
        with open(self.path(LATEST), "rb") as f:
            self.assertEqual(f.read(), b"".join(event(s) + b"\n" for s in (1, 2, 3)))
        h.append(4, event(4))
        self.assertEqual(list(h.read_since(2)), [(3, event(3)), (4, event(4))])

    def test_tornFirstLineOfNewFileRemoved(self) -> None:
        """A crash right after a rotation leaves a file with no event: removed."""
        h = self.open(rotate_bytes=2 * LINE)
        fill(h, 2)
        h.close()
        torn = self.path("messages_2026-11-26_11-00-00.jsonl")
        with open(torn, "wb") as f:
            f.write(event(3)[:5])
        h = self.open(rotate_bytes=2 * LINE)
        self.assertFalse(os.path.exists(torn))
        self.assertEqual(h.last_seq, 2)
        fill(h, 4)
        self.assertEqual(seqs(h.read_since(0)), [1, 2, 3, 4])

    def test_fileWithoutEventsIgnored(self) -> None:
        """A messages file holding only junk lines is left alone and not read."""
        h = self.open()
        fill(h, 2)
        h.close()
        junk = self.path("messages_2026-11-26_11-00-00.jsonl")
        with open(junk, "wb") as f:
            f.write(b"junk\n")
        h = self.open()
        fill(h, 3)
        self.assertTrue(os.path.exists(junk))
        self.assertEqual(seqs(h.read_since(0)), [1, 2, 3])
        self.assertTrue(self.warnings())

    def test_reopenRelinksLatest(self) -> None:
        """latest.jsonl is repaired on open if it was lost."""
        h = self.open()
        fill(h, 2)
        h.close()
        os.unlink(self.path(LATEST))
        self.open()
        self.assertEqual(os.readlink(self.path(LATEST)), messages(self.dir)[0])

    def test_garbageLinesSkippedByReaders(self) -> None:
        """Lines that are not JSON objects with an int seq are skipped with a warning."""
        h = self.open()
        fill(h, 2)
        h.close()
        with open(self.path(LATEST), "ab") as f:
            f.write(b"not json\n[1, 2]\n" + b'{"seq": "3"}\n' + b"\xff\xfe\n")
        h = self.open()
        self.assertEqual(h.last_seq, 2)
        fill(h, 5)
        self.assertEqual(seqs(h.read_since(0)), [1, 2, 3, 4, 5])
        self.assertEqual(len(self.warnings()), 4)
        self.assertEqual(h.page(None, 4), ([event(s) for s in (2, 3, 4, 5)], True))
        self.assertEqual(h.page(4, 10), ([event(s) for s in (1, 2, 3)], False))

    def test_garbageAtEndOfFileDoesNotHideLastSeq(self) -> None:
        """last_seq comes from the last valid line, read from the end."""
        h = self.open()
        fill(h, 3)
        h.close()
        with open(self.path(LATEST), "ab") as f:
            f.write(b"garbage\n")
        h = self.open()
        self.assertEqual(h.last_seq, 3)


class WriteFailureTests(HistoryTestCase):
    def failingWrite(self, truncate_fails: bool = False):
        """
        Make the next write put half its bytes down, then fail with ENOSPC,
        as a filling disk does.
        """
        real_write, real_truncate = os.write, os.ftruncate
        calls = []

        def write(fd, data):
            calls.append(len(data))
            if len(calls) == 1:
                return real_write(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")

        def ftruncate(fd, size):
            raise OSError(errno.EIO, "I/O error")

        self.patch(history_module.os, "write", write)
        if truncate_fails:
            self.patch(history_module.os, "ftruncate", ftruncate)

        def restore():
            history_module.os.write = real_write
            history_module.os.ftruncate = real_truncate

        return restore

    def fileBytes(self) -> bytes:
        with open(self.path(LATEST), "rb") as f:
            return f.read()

    def test_writeFailureLeavesNoPartialLine(self) -> None:
        """ENOSPC mid-line: OSError, no partial line, last_seq kept, next append works."""
        h = self.open()
        fill(h, 2)
        before = self.fileBytes()
        restore = self.failingWrite()
        e = self.assertRaises(OSError, h.append, 3, event(3))
        self.assertEqual(e.errno, errno.ENOSPC)
        restore()
        self.assertEqual(self.fileBytes(), before)
        self.assertEqual(h.last_seq, 2)
        h.append(3, event(3))
        self.assertEqual(list(h.read_since(0)), [(s, event(s)) for s in (1, 2, 3)])

    def test_failedCutBackIsRecoveredBeforeNextAppend(self) -> None:
        """When even the truncation fails, the partial line is cut before the next append."""
        h = self.open()
        fill(h, 2)
        before = self.fileBytes()
        restore = self.failingWrite(truncate_fails=True)
        self.assertRaises(OSError, h.append, 3, event(3))
        restore()
        self.assertNotEqual(self.fileBytes(), before)
        self.assertEqual(h.last_seq, 2)
        # Readers never see the partial line.
        self.assertEqual(seqs(h.read_since(0)), [1, 2])
        h.append(3, event(3))
        self.assertEqual(self.fileBytes(), before + event(3) + b"\n")

    def test_partialLineCutBeforeRotatingAway(self) -> None:
        """A partial line left by a failed cut is removed even when the retry rotates."""
        h = self.open(rotate_bytes=3 * LINE)
        fill(h, 2)
        (first,) = messages(self.dir)
        before = self.fileBytes()
        restore = self.failingWrite(truncate_fails=True)
        self.assertRaises(OSError, h.append, 3, event(3))
        restore()
        h.append(3, event(3, pad=5))
        self.assertEqual(len(messages(self.dir)), 2)
        with open(self.path(first), "rb") as f:
            self.assertEqual(f.read(), before)
        self.assertEqual(list(h.read_since(1)), [(2, event(2)), (3, event(3, 5))])
        self.assertEqual(self.warnings(), [])

    def test_failedFirstWriteAfterRotation(self) -> None:
        """A failed first line of a new file keeps seqs right; the retry lands there."""
        h = self.open(rotate_bytes=2 * LINE)
        fill(h, 2)
        restore = self.failingWrite()
        self.assertRaises(OSError, h.append, 3, event(3))
        restore()
        self.assertEqual((h.first_seq, h.last_seq), (1, 2))
        self.assertEqual(h.page(None, 5), ([event(1), event(2)], False))
        fill(h, 4)
        self.assertEqual(len(messages(self.dir)), 2)
        self.assertEqual(seqs(h.read_since(0)), [1, 2, 3, 4])


class HeldSyncer:
    """
    A syncer whose fsyncs finish when the test says: each call waits in
    C{calls} as C{(fds, directory, deferred)}; L{finish} runs the oldest.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[list[int], str | None, Deferred[None]]] = []

    def sync(self, fds, directory) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.calls.append((list(fds), directory, d))
        return d

    def finish(self, error: OSError | None = None) -> tuple[list[int], str | None]:
        fds, directory, d = self.calls.pop(0)
        if error is None:
            syncer_module.sync_now(fds, directory)
            d.callback(None)
        else:
            for fd in fds:
                os.close(fd)
            d.errback(error)
        return fds, directory


class FsyncTests(HistoryTestCase):
    def countFsyncs(self) -> list[int]:
        calls: list[int] = []
        real = os.fsync

        def fsync(fd):
            calls.append(fd)
            real(fd)

        self.patch(syncer_module.os, "fsync", fsync)
        return calls

    def test_everyOneFsyncPerTurn(self) -> None:
        """every: the appends of one reactor turn share one fsync, started on the next turn."""
        calls = self.countFsyncs()
        h = self.open(fsync="every")
        fill(h, 3)
        self.assertEqual(len(calls), 0)
        self.clock.advance(0)
        self.assertEqual(len(calls), 1)
        self.clock.advance(0)
        self.assertEqual(len(calls), 1)
        fill(h, 5)
        self.clock.advance(0)
        self.assertEqual(len(calls), 2)

    def test_everyVisibleOnlyOnceSynced(self) -> None:
        """
        every: a written event is not read, nor counted in last_seq, until
        its fsync is done; then the listener hears of it.
        """
        syncer = HeldSyncer()
        h = self.open(fsync="every", syncer=syncer)
        visible: list[int] = []
        h.when_visible(visible.append)
        fill(h, 2)
        self.assertEqual((h.written_seq, h.last_seq), (2, 0))
        self.clock.advance(0)
        self.assertEqual(list(h.read_since(0)), [])
        self.assertEqual(h.page(None, 10), ([], False))
        self.assertEqual(list(h.read_before(None)), [])
        syncer.finish()
        self.assertEqual(visible, [2])
        self.assertEqual(h.last_seq, 2)
        self.assertEqual(seqs(h.read_since(0)), [1, 2])

    def test_everyGroupCommit(self) -> None:
        """
        every: what is written while an fsync runs waits for it, then
        shares the next one, which starts at once.
        """
        syncer = HeldSyncer()
        h = self.open(fsync="every", syncer=syncer)
        visible: list[int] = []
        h.when_visible(visible.append)
        fill(h, 1)
        self.clock.advance(0)
        fill(h, 4)
        self.clock.advance(0)
        self.assertEqual(len(syncer.calls), 1)
        syncer.finish()
        self.assertEqual(visible, [1])
        self.assertEqual(len(syncer.calls), 1)
        syncer.finish()
        self.assertEqual(visible, [1, 4])
        self.assertEqual(syncer.calls, [])

    def test_everyRetriesAFailedFsync(self) -> None:
        """every: an fsync that fails is logged and tried again; nothing is visible meanwhile."""
        syncer = HeldSyncer()
        h = self.open(fsync="every", syncer=syncer)
        fill(h, 2)
        self.clock.advance(0)
        syncer.finish(OSError(errno.EIO, "I/O error"))
        self.assertEqual(h.last_seq, 0)
        [failure] = [e for e in self.logged if e.get("log_failure")]
        self.assertEqual(failure["log_failure"].value.errno, errno.EIO)
        self.clock.advance(history_module.SYNC_RETRY)
        syncer.finish()
        self.assertEqual(h.last_seq, 2)

    def test_intervalVisibleAtOnceSyncedLater(self) -> None:
        """interval: events are visible when written, fsynced once within the interval."""
        calls = self.countFsyncs()
        h = self.open(fsync="interval", fsync_interval=1.0)
        fill(h, 3)
        self.assertEqual(h.last_seq, 3)
        self.assertEqual(seqs(h.read_since(0)), [1, 2, 3])
        self.clock.advance(0.5)
        fill(h, 5)
        self.assertEqual(len(calls), 0)
        self.clock.advance(0.5)
        self.assertEqual(len(calls), 1)
        self.clock.advance(5)
        self.assertEqual(len(calls), 1)

    def test_batchIsInterval(self) -> None:
        """The older name batch is taken, as interval."""
        calls = self.countFsyncs()
        h = self.open(fsync="batch")
        fill(h, 2)
        self.assertEqual(h.last_seq, 2)
        self.clock.advance(1.0)
        self.assertEqual(len(calls), 1)

    def test_rotatedFileSyncedWithTheNext(self) -> None:
        """
        A file rotated with unsynced data is fsynced (through a duplicate of
        its descriptor) with the next fsync, and the directory too.
        """
        syncer = HeldSyncer()
        h = self.open(fsync="interval", syncer=syncer, rotate_bytes=3 * LINE)
        fill(h, 4)
        self.clock.advance(1.0)
        fds, directory = syncer.finish()
        self.assertEqual(len(fds), 2)
        self.assertEqual(directory, self.dir)
        self.assertEqual(len(self.openFiles()), 1)

    def test_aFailedFsyncAfterARotationRetriesAllOfIt(self) -> None:
        """
        The retry of a failed fsync covers the rotated file and the
        directory the rotation changed; under every nothing is visible
        until it succeeds.
        """
        syncer = HeldSyncer()
        h = self.open(fsync="every", syncer=syncer, rotate_bytes=3 * LINE)
        fill(h, 4)
        self.clock.advance(0)
        fds, directory = syncer.finish(OSError(errno.EIO, "I/O error"))
        self.assertEqual((len(fds), directory), (2, self.dir))
        self.assertEqual(h.last_seq, 0)
        self.clock.advance(history_module.SYNC_RETRY)
        fds, directory = syncer.finish()
        self.assertEqual((len(fds), directory), (2, self.dir))
        self.assertEqual(h.last_seq, 4)
        self.assertEqual(len(self.openFiles()), 1)

    def test_closeAfterAFailedFsyncLeavesNoDescriptor(self) -> None:
        """A close whose fsync fails (logged) still closes the rotated files' descriptors."""
        syncer = HeldSyncer()
        h = self.open(fsync="interval", syncer=syncer, rotate_bytes=3 * LINE)
        fill(h, 4)

        def refuse(fd: int) -> None:
            raise OSError(errno.EIO, "I/O error")

        self.patch(syncer_module.os, "fsync", refuse)
        h.close()
        self.assertEqual(self.openFiles(), [])

    def test_fsyncNoneButVisible(self) -> None:
        """none: never fsync, yet every line is in the file when append returns."""
        calls = self.countFsyncs()
        h = self.open(fsync="none")
        fill(h, 3)
        self.clock.advance(10)
        self.assertEqual(calls, [])
        with open(self.path(LATEST), "rb") as f:
            self.assertEqual(len(f.read().splitlines()), 3)

    def test_appendManyOneWrite(self) -> None:
        """append_many stores its lines with one write, numbered on from seq."""
        writes: list[bytes] = []
        real = jsonlfile.os.write

        def write(fd, data):
            writes.append(bytes(data))
            return real(fd, data)

        h = self.open()
        self.patch(jsonlfile.os, "write", write)
        h.append_many(1, [event(1), event(2), event(3)])
        self.assertEqual(len(writes), 1)
        self.assertEqual(h.written_seq, 3)
        self.assertEqual(list(h.read_since(0)), [(1, event(1)), (2, event(2)), (3, event(3))])
        self.assertEqual(list(h.read_since(2)), [(3, event(3))])

    def test_appendManyAllOrNothing(self) -> None:
        """A batch the disk refuses part-way leaves nothing of it in the file."""
        h = self.open()
        fill(h, 1)
        real = jsonlfile.os.write

        def write(fd, data):
            return real(fd, bytes(data)[:10]) if len(data) > 10 else _refuse()

        def _refuse():
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(jsonlfile.os, "write", write)
        self.assertRaises(OSError, h.append_many, 2, [event(2), event(3)])
        self.patch(jsonlfile.os, "write", real)
        self.assertEqual(h.written_seq, 1)
        h.append_many(2, [event(2), event(3)])
        self.assertEqual(seqs(h.read_since(0)), [1, 2, 3])

    def test_appendManyRotatesBetweenLines(self) -> None:
        """A batch that would cross the rotation size is split at the line that does."""
        h = self.open(rotate_bytes=3 * LINE)
        h.append_many(1, [event(i) for i in range(1, 8)])
        self.assertEqual(seqs(h.read_since(0)), list(range(1, 8)))
        self.assertEqual(len([n for n in os.listdir(self.dir) if n.endswith(".jsonl") and n != LATEST]), 3)

    def test_closeSyncsPending(self) -> None:
        """Closing with an fsync pending does it at once and cancels the call."""
        calls = self.countFsyncs()
        h = self.open(fsync="interval")
        fill(h, 2)
        h.close()
        self.assertEqual(len(calls), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_closeNeverRaisesWhenFsyncFails(self) -> None:
        """close with an fsync pending on a refusing disk logs the error and closes the file anyway."""
        h = self.open(fsync="interval")
        fill(h, 2)
        self.assertEqual(len(self.openFiles()), 1)

        def fsync(fd):
            raise OSError(errno.EIO, "I/O error")

        self.patch(syncer_module.os, "fsync", fsync)
        h.close()
        self.assertEqual(self.openFiles(), [])
        self.assertRaises(ValueError, h.append, 3, event(3))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        [error] = [e for e in self.logged if e["log_level"] == LogLevel.error]
        self.assertEqual(error["error"].errno, errno.EIO)

    def test_closeAfterAFailedFlushDoesNotRaise(self) -> None:
        """A flush that failed (and was handled) does not make the close after it raise."""
        h = self.open(fsync="interval")
        fill(h, 2)

        def fsync(fd):
            raise OSError(errno.EIO, "I/O error")

        self.patch(syncer_module.os, "fsync", fsync)
        self.assertRaises(OSError, h.flush)
        h.close()
        self.assertEqual(self.openFiles(), [])
        self.assertRaises(ValueError, h.append, 3, event(3))
        self.assertEqual(list(h.read_since(0)), [(1, event(1)), (2, event(2))])

    def test_flushSyncsNow(self) -> None:
        """flush fsyncs immediately, whatever the policy, and makes what waited visible."""
        calls = self.countFsyncs()
        h = self.open(fsync="every", syncer=HeldSyncer())
        fill(h, 2)
        h.flush()
        self.assertEqual(len(calls), 1)
        self.assertEqual(h.last_seq, 2)


class LiveReaderTests(HistoryTestCase):
    def test_generatorSeesAppendsBetweenSteps(self) -> None:
        """A reader consumed over several turns picks up events appended meanwhile."""
        h = self.open(rotate_bytes=3 * LINE)
        fill(h, 2)
        reader = h.read_since(0)
        self.assertEqual(next(reader)[0], 1)
        fill(h, 8)  # rotates twice meanwhile
        self.assertEqual(seqs(reader), list(range(2, 9)))

    def test_generatorWithUptoStopsThere(self) -> None:
        """An explicit upto bounds a reader even as the history grows."""
        h = self.open()
        fill(h, 3)
        reader = h.read_since(0, 4)
        self.assertEqual(next(reader)[0], 1)
        fill(h, 6)
        self.assertEqual(seqs(reader), [2, 3, 4])

    def test_generatorSurvivesRetirement(self) -> None:
        """A file retired under a reader: it continues with what is still stored."""
        h = self.open(rotate_bytes=3 * LINE, max_bytes=7 * LINE)
        fill(h, 6)
        reader = h.read_since(0)
        self.assertEqual(next(reader)[0], 1)
        fill(h, 12)
        self.assertEqual(h.first_seq, 7)
        # 2 and 3 come from the handle it already had open; 4-6 are gone.
        self.assertEqual(seqs(reader), [2, 3] + list(range(7, 13)))

    def test_generatorBeforeItsFirstStep(self) -> None:
        """A reader not started yet before its file is retired starts at first_seq."""
        h = self.open(rotate_bytes=3 * LINE, max_bytes=7 * LINE)
        fill(h, 6)
        reader = h.read_since(0)
        fill(h, 12)
        self.assertEqual(seqs(reader), list(range(7, 13)))


class ChunkedReadTests(HistoryTestCase):
    """
    read_since reads its files a chunk at a time: lines straddling chunks,
    longer than chunks, or ending right at a chunk's end come whole, once,
    in order, byte for byte.
    """

    def varied(self, h: History, upto: int) -> list[tuple[int, bytes]]:
        # Lengths from a little under LINE to several of them, in an order
        # that puts line ends everywhere relative to small chunks.
        stored = []
        for seq in range(h.written_seq + 1, upto + 1):
            line = event(seq, pad=(seq * 37) % 150)
            h.append(seq, line)
            stored.append((seq, line))
        return stored

    def test_everyChunkSizeEverySince(self) -> None:
        """Whatever the chunk size, from every since, exactly the stored lines come."""
        h = self.open(rotate_bytes=40 * LINE)
        stored = self.varied(h, 60)
        self.assertGreater(len(messages(self.dir)), 2)
        for chunk in (1, 2, LINE - 1, LINE, LINE + 1, 64, 100, 1000, 2**16):
            self.patch(history_module, "READ_CHUNK", chunk)
            for since in range(0, 61):
                self.assertEqual(list(h.read_since(since)), stored[since:], (chunk, since))
            self.assertEqual(list(h.read_since(10, 30)), stored[10:30], chunk)
        self.assertEqual(self.warnings(), [])

    def test_lineEndsAtAChunkEnd(self) -> None:
        """A newline that is a chunk's last byte, or the next chunk's first, splits nothing."""
        chunk = history_module.READ_CHUNK
        base = len(event(1))
        for first in (chunk - 2, chunk - 1, chunk, chunk + 1):
            shutil.rmtree(self.dir, ignore_errors=True)
            h = self.open()
            # Event 2 starts at `first`: event 1's newline is its byte before.
            lines = [event(1, pad=first - base - 1), event(2), event(3, pad=chunk), event(4)]
            for seq, line in enumerate(lines, 1):
                h.append(seq, line)
            self.assertEqual(len(lines[0]) + 1, first)
            self.assertEqual(list(h.read_since(0)), list(enumerate(lines, 1)))
            self.assertEqual(list(h.read_since(2)), [(3, lines[2]), (4, lines[3])])
            h.close()

    def test_aLineOfManyChunksAtTheWritersEnd(self) -> None:
        """The newest line, many chunks long, comes whole; then what is appended after it."""
        self.patch(history_module, "READ_CHUNK", 100)
        h = self.open()
        fill(h, 2)
        big = event(3, pad=1234)
        h.append(3, big)
        reader = h.read_since(1)
        self.assertEqual(next(reader), (2, event(2)))
        self.assertEqual(next(reader), (3, big))
        h.append(4, event(4, pad=250))
        self.assertEqual(list(reader), [(4, event(4, pad=250))])

    def test_corruptLinesAcrossChunks(self) -> None:
        """Garbage lines straddling chunks are skipped, each once, and nothing else is."""
        h = self.open()
        stored = self.varied(h, 5)
        h.close()
        with open(self.path(LATEST), "ab") as f:
            f.write(b"x" * 150 + b"\n" + b'{"seq": 6, "torn' + b"\n")
        h = self.open()
        stored += self.varied(h, 12)
        for chunk in (7, 64, 2**16):
            self.patch(history_module, "READ_CHUNK", chunk)
            del self.logged[:]
            self.assertEqual(list(h.read_since(0)), stored, chunk)
            self.assertEqual(len(self.warnings()), 2, chunk)

    def test_onlyWhatTheWriterStored(self) -> None:
        """
        Whole lines a failed write left past the stored size (its cut back
        failed too) are not read, even in a chunk read before the retry
        writes other bytes there.
        """
        h = self.open()
        fill(h, 2)
        real_write, real_truncate = os.write, os.ftruncate

        calls = []

        def write(fd, data):
            # Event 3's whole line, then the disk is full.
            calls.append(len(data))
            if len(calls) == 1:
                return real_write(fd, bytes(data[:LINE]))
            raise OSError(errno.ENOSPC, "No space left on device")

        def ftruncate(fd, size):
            raise OSError(errno.EIO, "I/O error")

        self.patch(history_module.os, "write", write)
        self.patch(history_module.os, "ftruncate", ftruncate)
        self.assertRaises(OSError, h.append_many, 3, [event(3), event(4)])
        history_module.os.write, history_module.os.ftruncate = real_write, real_truncate
        reader = h.read_since(0)
        self.assertEqual(next(reader), (1, event(1)))
        h.append(3, event(3, pad=5))
        self.assertEqual(list(reader), [(2, event(2)), (3, event(3, pad=5))])


class IndexTests(HistoryTestCase):
    def test_lookupsEverywhereInABigFile(self) -> None:
        """Reads and pages start right at any seq, cold (after reopen) and warm."""
        h = self.open(rotate_bytes=2**20)
        fill(h, 12000)
        h.close()
        for _ in range(2):
            h = self.open(rotate_bytes=2**20)
            for since in (0, 1, 999, 1000, 1001, 4321, 7777, 9998, 11999, 12000):
                got = seqs(h.read_since(since, since + 3))
                self.assertEqual(got, list(range(since + 1, min(since + 3, 12000) + 1)))
            for before in (2, 1000, 5001, 12001):
                lines, more = h.page(before, 5)
                self.assertEqual(lines, [event(s) for s in range(max(before - 5, 1), before)])
                self.assertEqual(more, before > 6)
            h.close()
        self.assertEqual(self.warnings(), [])

    def test_bigLinesFoundByBisection(self) -> None:
        """With lines of tens of KB, lookups still land on the right event."""
        h = self.open(rotate_bytes=64 * 2**20)
        for seq in range(1, 201):
            h.append(seq, event(seq, pad=20000 + seq))
        h.close()
        h = self.open()
        self.assertEqual(h.last_seq, 200)
        self.assertEqual(seqs(h.read_since(150, 152)), [151, 152])
        self.assertEqual(h.page(100, 2), ([event(98, 20098), event(99, 20099)], True))
        self.assertEqual(self.warnings(), [])

    def test_indexMemoryIsSparse(self) -> None:
        """The index keeps about one entry per 1000 events."""
        h = self.open(rotate_bytes=2**30)
        fill(h, 20000)
        self.assertEqual(seqs(h.read_since(0))[-1], 20000)
        self.assertEqual(len(messages(self.dir)), 1)
        self.assertLessEqual(h.index_size, 20)
        self.assertGreaterEqual(h.index_size, 10)


class RemoveTests(HistoryTestCase):
    def test_removeDeletesDirectory(self) -> None:
        """remove closes the history and deletes the logs directory."""
        h = self.open(rotate_bytes=2 * LINE)
        fill(h, 5)
        h.remove()
        self.assertFalse(os.path.exists(self.dir))
        self.assertRaises(ValueError, h.append, 6, event(6))
        self.assertEqual(list(h.read_since(0)), [])


class LinesBackwardsTests(HistoryTestCase):
    def test_newestFirstAcrossFiles(self) -> None:
        """Every stored line comes back newest first, across rotations."""
        h = self.open(rotate_bytes=3 * LINE)
        fill(h, 8)
        self.assertGreater(len(messages(self.dir)), 2)
        self.assertEqual(list(h.lines_backwards()), [event(s) for s in range(8, 0, -1)])

    def test_aLineLongerThanAChunkComesWhole(self) -> None:
        """A line spanning many read chunks is joined exactly, its neighbours intact."""
        h = self.open()
        h.append(1, event(1))
        big = event(2, pad=5 * jsonlfile.CHUNK + 7)
        h.append(2, big)
        h.append(3, event(3))
        self.assertEqual(list(h.lines_backwards()), [event(3), big, event(1)])

    def test_corruptLinesComeAsTheyAre(self) -> None:
        """The caller parses: junk lines are not hidden, empty ones are."""
        h = self.open()
        fill(h, 2)
        h.close()
        with open(self.path(LATEST), "ab") as f:
            f.write(b"junk\n\n")
        h = self.open()
        self.assertEqual(list(h.lines_backwards()), [b"junk", event(2), event(1)])

    def test_emptyHistoryHasNoLines(self) -> None:
        """Nothing stored, nothing read."""
        self.assertEqual(list(self.open().lines_backwards()), [])
