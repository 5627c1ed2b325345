"""
One project's event history: rotating JSON-lines files and a replay reader.

Each line is one event exactly as sent on the wire: a JSON object whose
integer C{seq} runs 1, 2, 3... without gaps across files (their names and
the latest.jsonl link: L{claudews.jsonlfile}).  Files are ordered by the
seq of their first line, never by name, so a clock stepping backwards
cannot reorder history.

Finding an event: a bisect over each file's first seq picks the file; inside
it the file's sparse index brackets the seq (L{claudews.segment}).
"""

from __future__ import annotations

import os
import shutil
import time
from bisect import bisect_right
from typing import IO, Callable, Generator, Iterator, Sequence

from twisted.logger import Logger
from twisted.python.failure import Failure

from claudews import events
from claudews.interfaces import DelayedCall, ReactorTime
from claudews.jsonlfile import JsonlFile, fresh_name
from claudews.segment import INDEX_EVERY, Segment, find_segments, lines_backwards, parse_seq
from claudews.syncer import FileSyncer, InlineSyncer, sync_now

_log = Logger()

#: When written events reach the disk (docs/storage.rst). Every event is
#: written to its file before anyone is sent it, so a server that dies
#: loses nothing it sent; these say what a machine that stops can lose:
#: C{every}: nothing sent (an event is visible, and sent, only once its
#: fsync is done; the events of one reactor turn share one fsync);
#: C{interval}: up to C{fsync_interval} seconds (an fsync at most that long
#: after a write); C{none}: what the OS had not written yet. fsyncs run in
#: threads (L{claudews.syncer}), never on the reactor thread.
FSYNC_POLICIES = ("every", "interval", "none")

#: Names older settings files may use: C{batch} fsynced every reactor
#: turn's events on the reactor thread; C{interval} replaces it.
FSYNC_ALIASES = {"batch": "interval"}

#: Seconds between an fsync that failed and the next attempt.
SYNC_RETRY = 1.0

#: How much of a file a forward read (L{History.read_since}) reads at a
#: time: a replay's lines are split off it in bulk.
READ_CHUNK = 64 * 1024

#: A forward read offers a file's index one line in this many.
_OFFER_EVERY = INDEX_EVERY // 20


def _ignore(seq: int) -> None:
    pass


class History:
    """
    The stored events of one project; see the module docstring.
    Implements L{claudews.interfaces.EventStore}.

    @ivar last_seq: seq of the newest visible event (what readers see);
        0 when empty.
    @ivar written_seq: seq of the newest written event.
    @param reactor: schedules the fsyncs.
    @param fsync: one of L{FSYNC_POLICIES} (or L{FSYNC_ALIASES}).
    @param fsync_interval: seconds an event may wait for its fsync under
        the C{interval} policy.
    @param syncer: where fsyncs run; threads in the server, at once on
        the calling thread when omitted.
    @param now: the wall clock, for naming files.
    """

    def __init__(
        self,
        directory: str,
        *,
        reactor: ReactorTime,
        rotate_bytes: int = 64 * 2**20,
        max_bytes: int = 2**30,
        fsync: str = "interval",
        fsync_interval: float = 1.0,
        syncer: FileSyncer | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        fsync = FSYNC_ALIASES.get(fsync, fsync)
        if fsync not in FSYNC_POLICIES:
            raise ValueError("fsync must be one of %s" % (", ".join(FSYNC_POLICIES),))
        if rotate_bytes < 1 or max_bytes < 1:
            raise ValueError("rotate_bytes and max_bytes must be positive")
        if fsync_interval <= 0:
            raise ValueError("fsync_interval must be positive")
        self._directory = directory
        self._max_bytes = max_bytes
        self._fsync = fsync
        self._interval = fsync_interval
        self._syncer: FileSyncer = syncer or InlineSyncer()
        self._reactor = reactor
        self._now = now
        self._segments: list[Segment] = []
        self._firsts: list[int] = []
        self._total = 0
        #: Written to the current file since its last fsync started.
        self._dirty = False
        #: Duplicates of rotated files' descriptors, to fsync and close.
        self._rotated: list[int] = []
        #: A rotation made a file (and moved the link) the directory's
        #: fsync has not covered yet.
        self._directory_dirty = False
        self._sync_call: DelayedCall | None = None
        self._syncing = False
        self._visible: Callable[[int], object] = _ignore
        self.last_seq = 0
        self.written_seq = 0
        os.makedirs(directory, exist_ok=True)
        current = self._open_segments()
        self._writer: JsonlFile | None = JsonlFile(directory, current.name, rotate_bytes, self._now)
        self._current: Segment | None = current
        self._link_stale = not self._writer.linkLatest()
        self._retire()

    @property
    def first_seq(self) -> int:
        """
        The seq of the oldest stored event; C{last_seq + 1} when empty.
        """
        if self._segments and self._segments[0].size:
            return self._segments[0].first_seq
        return self.last_seq + 1

    @property
    def index_size(self) -> int:
        """
        How many entries the files' sparse indexes hold: what their memory
        grows with.
        """
        return sum(segment.index_size for segment in self._segments)

    def _open_segments(self) -> Segment:
        """
        Find the files a previous run left (recovering from a crash
        mid-write) and return the one to write: the newest, or a new one.
        """
        for segment in find_segments(self._directory):
            self._add_segment(segment)
        if not self._segments:
            name = fresh_name(self._directory, self._now())
            return self._add_segment(Segment(name, os.path.join(self._directory, name), 1, 0))
        newest = self._segments[-1]
        self.last_seq = self.written_seq = newest.last_seq() or 0
        return newest

    def _add_segment(self, segment: Segment) -> Segment:
        self._segments.append(segment)
        self._firsts.append(segment.first_seq)
        self._total += segment.size
        return segment

    # -- writing

    def append(self, seq: int, line: bytes) -> None:
        """
        Store one event (C{line} without its newline).  When this raises
        C{OSError} nothing was stored: C{written_seq} is unchanged and no
        part of the line is left in the file.
        """
        self.append_many(seq, (line,))

    def append_many(self, seq: int, lines: Sequence[bytes]) -> None:
        """
        Store events C{seq}, C{seq + 1}... (C{lines}, without newlines) with
        one write: all of them, or, when this raises C{OSError}, none.
        """
        writer = self._writer
        if writer is None:
            raise ValueError("history is closed")
        if seq != self.written_seq + 1:
            raise ValueError("expected seq %d, got %d" % (self.written_seq + 1, seq))
        if not lines:
            return
        data = b"\n".join(lines) + b"\n"
        if data.count(b"\n") != len(lines):
            raise ValueError("an event line cannot contain a newline")
        if writer.needsRecovery:
            # Before rotating: a partial line must not stay in a file that
            # is no longer written.
            writer.recover()
        if len(lines) > 1 and writer.size + len(data) > writer.rotateLength:
            # Files rotate between lines: one line at a time, then.
            for i, line in enumerate(lines):
                self.append_many(seq + i, (line,))
            return
        if writer.shouldRotate(len(data)):
            self._rotate(writer, seq)
        self._write(writer, seq, lines, data)
        if self._link_stale:
            self._link_stale = not writer.linkLatest()
        self._written()
        if self._total > self._max_bytes:
            self._retire()

    def _write(self, writer: JsonlFile, seq: int, lines: Sequence[bytes], data: bytes) -> None:
        current = self._current
        assert current is not None
        offset = writer.size
        writer.write(data)
        current.size = writer.size
        self._total += len(data)
        for line in lines:
            current.remember(seq, offset)
            offset += len(line) + 1
            seq += 1
        self.written_seq = seq - 1
        self._dirty = True

    def _rotate(self, writer: JsonlFile, seq: int) -> None:
        if self._dirty and self._fsync != "none":
            # The old file's fsync runs with the next one, on a duplicate
            # of its descriptor: the file itself is closed now.
            self._rotated.append(os.dup(writer.fileno()))
        self._dirty = False
        writer.rotate()
        self._current = self._add_segment(Segment(writer.name, writer.path, seq, 0))
        self._link_stale = not writer.linkLatest()
        self._directory_dirty = self._fsync != "none"

    def _retire(self) -> None:
        while self._total > self._max_bytes and len(self._segments) > 1:
            oldest = self._segments[0]
            try:
                os.unlink(oldest.path)
            except FileNotFoundError:
                pass
            except OSError:
                _log.failure("Retiring {path} failed", path=oldest.path)
                return
            del self._segments[0], self._firsts[0]
            self._total -= oldest.size
            _log.info("Retired {path}", path=oldest.path)

    # -- fsync

    def when_visible(self, callback: Callable[[int], object]) -> None:
        """
        Call C{callback(last_seq)} whenever written events become visible
        after their write returned: under the C{every} policy, once their
        fsync is done. (Under the others, events are visible as they are
        written, and C{callback} is not called.)
        """
        self._visible = callback

    def _written(self) -> None:
        if self._fsync == "every":
            # The turn's other events share this fsync: it starts on the
            # next turn, or as soon as the one under way is done.
            if self._sync_call is None and not self._syncing:
                self._sync_call = self._reactor.callLater(0, self._start_sync)
            return
        self.last_seq = self.written_seq
        if self._fsync == "interval" and not self._syncing:
            self._sync_in(self._interval)

    def _sync_in(self, seconds: float) -> None:
        """Start the next fsync in C{seconds}, unless one is scheduled already."""
        if self._sync_call is None:
            self._sync_call = self._reactor.callLater(seconds, self._start_sync)

    def _start_sync(self) -> None:
        """
        fsync, in the syncer, what was written so far: the current file,
        the rotated ones and the directory.
        """
        self._sync_call = None
        writer = self._writer
        if writer is None or self._syncing:
            return
        rotated = list(self._rotated)
        fds, directory = self._take_unsynced(writer, self._dirty)
        upto = self.written_seq
        if not fds and directory is None:
            self._synced(None, upto)
            return
        self._syncing = True
        done = self._syncer.sync(fds, directory)
        done.addCallbacks(
            self._synced, self._sync_failed, callbackArgs=(upto, rotated),
            errbackArgs=(directory,),
        )

    def _synced(self, _: object, upto: int, rotated: Sequence[int] = ()) -> None:
        self._syncing = False
        self._rotated_synced(rotated)
        if self._writer is None:
            return
        if self._fsync == "every" and upto > self.last_seq:
            self.last_seq = upto
            self._visible(upto)
        if self.written_seq > upto or self._dirty or self._rotated:
            # Written while this fsync ran: theirs starts now (under
            # C{interval}, the next write's timer is this one).
            if self._fsync == "every":
                self._start_sync()
            else:
                self._sync_in(self._interval)

    def _sync_failed(self, failure: Failure, directory: str | None) -> None:
        self._syncing = False
        if self._writer is None:
            return
        _log.failure("fsync of {path} failed", failure, path=self._writer.path)
        # Try again: under C{every}, nothing is sent until it succeeds.
        self._unsynced_again(directory)
        self._sync_in(SYNC_RETRY)

    def _unsynced_again(self, directory: str | None) -> None:
        """
        An fsync failed: what it took off the books (the current file, the
        directory if it covered it) is back on them. The rotated files
        never left (L{_take_unsynced}).
        """
        self._dirty = True
        if directory is not None:
            self._directory_dirty = True

    def _take_unsynced(self, writer: JsonlFile, current: bool) -> tuple[list[int], str | None]:
        """
        What an fsync now must cover: duplicates of the rotated files'
        descriptors (theirs stay on the books until an fsync of them
        succeeds, L{_rotated_synced}), one of the current file if
        C{current}, and the directory if a rotation changed it (taken off
        the books, as the current file is: a failure puts them back).
        """
        fds = [os.dup(fd) for fd in self._rotated]
        if current:
            fds.append(os.dup(writer.fileno()))
        directory = self._directory if self._directory_dirty else None
        self._dirty = self._directory_dirty = False
        return fds, directory

    def _rotated_synced(self, rotated: Sequence[int]) -> None:
        """The rotated files of C{rotated} are fsynced: close ours."""
        for fd in rotated:
            # A flush meanwhile may have taken them already.
            if fd in self._rotated:
                self._rotated.remove(fd)
                os.close(fd)

    def flush(self) -> None:
        """
        fsync everything written, now, on the calling thread, whatever the
        policy; what waited for it becomes visible.
        """
        writer = self._writer
        if writer is None:
            return
        rotated = list(self._rotated)
        fds, directory = self._take_unsynced(writer, True)
        try:
            sync_now(fds, directory)
        except OSError:
            self._unsynced_again(directory)
            raise
        self._rotated_synced(rotated)
        if self.written_seq > self.last_seq:
            self.last_seq = self.written_seq
            self._visible(self.last_seq)

    def close(self) -> None:
        """
        fsync what is not yet, and close the file; never raises, so the
        file is closed even when the disk refuses (that is logged).
        """
        writer = self._writer
        if writer is None:
            return
        if self._sync_call is not None:
            self._sync_call.cancel()
            self._sync_call = None
        if self._dirty or self._rotated or self._directory_dirty:
            try:
                self.flush()
            except OSError as e:
                _log.error(
                    "fsync of {path} failed at close; its newest events may be lost"
                    " if the machine stops: {error}",
                    path=writer.path,
                    error=e,
                )
        for fd in self._rotated:
            # Not fsynced (that is logged above): closed all the same.
            os.close(fd)
        self._rotated = []
        self._writer = None
        self._current = None
        try:
            writer.close()
        except OSError as e:
            _log.error("Closing {path} failed: {error}", path=writer.path, error=e)

    def remove(self) -> None:
        """
        Close, and delete the whole directory: the project is gone.
        """
        self.close()
        self._segments, self._firsts, self._total = [], [], 0
        try:
            shutil.rmtree(self._directory)
        except FileNotFoundError:
            pass
        except OSError:
            _log.failure("Removing {dir} failed", dir=self._directory)

    # -- reading

    def _segment_for(self, seq: int) -> Segment | None:
        if not self._segments:
            return None
        return self._segments[max(bisect_right(self._firsts, seq) - 1, 0)]

    def _segment_after(self, segment: Segment) -> Segment | None:
        # By seq, not by position: the segment may have been retired meanwhile.
        i = bisect_right(self._firsts, segment.first_seq)
        return self._segments[i] if i < len(self._segments) else None

    def _limit(self, upto: int | None) -> int:
        return self.last_seq if upto is None else upto

    def read_since(self, since: int, upto: int | None = None) -> Iterator[tuple[int, bytes]]:
        """
        Yield C{(seq, line)} for every stored event with C{since < seq <=
        upto}, in order, with one chunk of a file (or one line longer than
        a chunk) in memory at a time.  Without C{upto} it reads up to
        C{last_seq} as it is at each step, so appends between steps are
        included.  Events retired before they are reached are skipped.
        """
        want: int | None = max(since, 0) + 1
        while want is not None and want <= self._limit(upto):
            want = max(want, self.first_seq)
            segment = self._segment_for(want)
            if segment is None:
                return
            want = yield from self._read_segment(segment, want, upto)
            if want is None:
                return
            after = self._segment_after(segment)
            if after is None:
                return
            want = max(want, after.first_seq)

    def _read_segment(
        self, segment: Segment, want: int, upto: int | None
    ) -> Generator[tuple[int, bytes], None, int | None]:
        """
        Yield the events from C{want} on that C{segment} holds; return the
        seq to look for in the next segment, or C{None} when the read is
        over (past C{upto}, or caught up with the writer).

        The file is read a chunk at a time and split into lines in bulk (a
        replay reads every line of it), no further than the size its writer
        has stored: bytes past it (a failed write's partial lines, not cut
        off yet) are not events and may be written over, and bytes before
        it do not change, so each line is what a read of it when it is
        reached would find.
        """
        try:
            f = open(segment.path, "rb")
        except FileNotFoundError:
            _log.warn("{path} vanished", path=segment.path)
            return want
        with f:
            pos = segment.locate(f, want)
            fd = f.fileno()
            # The index keeps entries INDEX_EVERY seqs apart: offering it
            # every line read would be a call per line for nothing.
            offer = 0
            while True:
                lines, tail = _read_lines(fd, pos, segment.size)
                for line in lines:
                    limit = self.last_seq if upto is None else upto
                    if want > limit:
                        return None
                    seq = parse_seq(line)
                    if seq is None:
                        _log.warn("Skipping a corrupt line in {path} at {offset}", path=segment.path, offset=pos)
                    elif seq >= offer:
                        segment.remember(seq, pos)
                        offer = seq + _OFFER_EVERY
                    pos += len(line) + 1
                    if seq is None or seq < want:
                        continue
                    if seq > limit:
                        return None
                    yield seq, line
                    want = seq + 1
                if tail is not None:
                    if want > self._limit(upto):
                        return None
                    return self._past_end(segment, tail, want)

    def _past_end(self, segment: Segment, line: bytes, want: int) -> int | None:
        """
        A reader reached the end of C{segment} (C{line} is what it found
        there): C{None} when that is where the writer is, else the seq to
        look for next.
        """
        if segment is self._current:
            # Caught up with the writer (a partial line is one whose
            # failed write is yet to be cut off).
            return None
        if line:
            _log.warn("Skipping a torn line at the end of {path}", path=segment.path)
        return want

    def lines_backwards(self) -> Iterator[bytes]:
        """
        Every stored line, newest first, with one line and one chunk of a
        file in memory at a time: for recovery, which looks for the newest
        events of some kinds. Lines are not parsed (the caller parses the
        few it wants); a corrupt or torn line comes as it is.
        """
        for segment in reversed(list(self._segments)):
            try:
                f = open(segment.path, "rb")
            except FileNotFoundError:
                continue
            with f:
                for line in lines_backwards(f, segment.size):
                    if line:
                        yield line

    def read_before(self, before: int | None) -> Iterator[tuple[int, bytes]]:
        """
        Yield C{(seq, line)} for the stored events with C{seq < before}
        (C{None}: all of them), newest first, one line in memory at a time:
        what a C{history} page reads to find where it starts, however large
        its events. Seqs are read from each line's head (L{events.seq_of}):
        a damaged line whose head is whole counts here and is skipped by
        L{read_since}. Files retired while this is read end it.
        """
        end = self.last_seq + 1 if before is None else min(before, self.last_seq + 1)
        if end <= self.first_seq:
            return
        segments = list(self._segments)
        start = max(bisect_right(self._firsts, end - 1) - 1, 0)
        for i in range(start, -1, -1):
            segment = segments[i]
            try:
                f = open(segment.path, "rb")
            except FileNotFoundError:
                return
            with f:
                stop = self._offset_of(segment, f, end) if i == start else segment.size
                for line in lines_backwards(f, stop):
                    # The head is enough: the page's first pass needs seqs
                    # and sizes; read_since, which it sends, checks lines.
                    seq = (events.seq_of(line) or parse_seq(line)) if line else None
                    if seq is not None and seq < end:
                        yield seq, line

    def _offset_of(self, segment: Segment, f: IO[bytes], seq: int) -> int:
        """
        Where the first line with a seq of C{seq} or more starts in
        C{segment} (its size if there is none), found through its index.
        """
        pos = segment.locate(f, seq)
        f.seek(pos)
        while pos < segment.size:
            line = f.readline()
            if not line.endswith(b"\n"):
                break
            found = parse_seq(line)
            if found is not None and found >= seq:
                return pos
            pos += len(line)
        return min(pos, segment.size)

    def page(self, before: int | None, limit: int) -> tuple[list[bytes], bool]:
        """
        The newest C{limit} events with C{seq < before} (C{None}: the newest
        of all), oldest first, and whether older stored events exist.
        """
        if limit < 0:
            raise ValueError("limit must not be negative")
        first = self.first_seq
        end = self.last_seq + 1 if before is None else min(before, self.last_seq + 1)
        got: list[tuple[int, bytes]] = []
        hi = end - 1
        # More than one round only when corrupt lines left holes.
        while len(got) < limit and hi >= first:
            lo = max(hi - (limit - len(got)), first - 1)
            got[:0] = list(self.read_since(lo, hi))
            hi = lo
        got = got[len(got) - limit :]
        oldest = got[0][0] if got else end
        return [line for _, line in got], oldest > first


def _read_lines(fd: int, pos: int, end: int) -> tuple[list[bytes], bytes | None]:
    """
    The whole lines (without their newlines) in the chunk of file C{fd}
    at C{pos}, before C{end}; when there is none, what is there up to
    C{end} (a partial line, or C{b""}) too, else C{None}.  A line longer
    than a chunk comes alone, gathered in pieces and joined once.
    """
    data = os.pread(fd, max(min(READ_CHUNK, end - pos), 0), pos)
    lines = data.split(b"\n")
    tail = lines.pop()
    if lines:
        # What follows the last newline is read again with the next chunk,
        # the end of the file too: it may have grown by then.
        return lines, None
    if len(data) < READ_CHUNK:
        return [], tail
    parts = [data]
    pos += len(data)
    while True:
        piece = os.pread(fd, max(min(READ_CHUNK, end - pos), 0), pos)
        newline = piece.find(b"\n")
        if newline >= 0:
            parts.append(piece[:newline])
            return [b"".join(parts)], None
        parts.append(piece)
        pos += len(piece)
        if len(piece) < READ_CHUNK:
            return [], b"".join(parts)
