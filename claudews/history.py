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
from typing import IO, Callable, Generator, Iterator

from twisted.logger import Logger

from claudews import events
from claudews.interfaces import DelayedCall, ReactorTime
from claudews.jsonlfile import JsonlFile, fresh_name, fsync_directory
from claudews.segment import Segment, find_segments, lines_backwards, parse_seq

_log = Logger()

#: When appends reach the disk: each one before it returns, each reactor
#: turn's together on the next turn, or when the OS sees fit.
FSYNC_POLICIES = ("every", "batch", "none")


class History:
    """
    The stored events of one project; see the module docstring.
    Implements L{claudews.interfaces.EventStore}.

    @ivar last_seq: seq of the newest stored event; 0 when empty.
    @param reactor: runs the batched fsync (policy C{"batch"}).
    @param now: the wall clock, for naming files.
    """

    def __init__(
        self,
        directory: str,
        *,
        reactor: ReactorTime,
        rotate_bytes: int = 64 * 2**20,
        max_bytes: int = 2**30,
        fsync: str = "batch",
        now: Callable[[], float] = time.time,
    ) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError("fsync must be one of %s" % (", ".join(FSYNC_POLICIES),))
        if rotate_bytes < 1 or max_bytes < 1:
            raise ValueError("rotate_bytes and max_bytes must be positive")
        self._directory = directory
        self._max_bytes = max_bytes
        self._fsync = fsync
        self._reactor = reactor
        self._now = now
        self._segments: list[Segment] = []
        self._firsts: list[int] = []
        self._total = 0
        self._dirty = False
        self._pending_sync: DelayedCall | None = None
        self.last_seq = 0
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
        self.last_seq = newest.last_seq() or 0
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
        C{OSError} nothing was stored: C{last_seq} is unchanged and no part
        of the line is left in the file.
        """
        writer = self._writer
        if writer is None:
            raise ValueError("history is closed")
        if seq != self.last_seq + 1:
            raise ValueError("expected seq %d, got %d" % (self.last_seq + 1, seq))
        if b"\n" in line:
            raise ValueError("an event line cannot contain a newline")
        data = line + b"\n"
        if writer.needsRecovery:
            # Before rotating: a partial line must not stay in a file that
            # is no longer written.
            writer.recover()
        if writer.shouldRotate(len(data)):
            self._rotate(writer, seq)
        self._write(writer, seq, data)
        if self._link_stale:
            self._link_stale = not writer.linkLatest()
        if self._fsync == "batch":
            self._sync_next_turn()
        if self._total > self._max_bytes:
            self._retire()

    def _write(self, writer: JsonlFile, seq: int, data: bytes) -> None:
        current = self._current
        assert current is not None
        offset = writer.size
        writer.write(data, sync=self._fsync == "every")
        current.size = writer.size
        self._total += len(data)
        current.remember(seq, offset)
        self.last_seq = seq

    def _rotate(self, writer: JsonlFile, seq: int) -> None:
        if self._dirty:
            # Its data must reach the disk before the handle is gone.
            os.fsync(writer.fileno())
            self._dirty = False
        writer.rotate()
        self._current = self._add_segment(Segment(writer.name, writer.path, seq, 0))
        self._link_stale = not writer.linkLatest()
        if self._fsync != "none":
            try:
                fsync_directory(self._directory)
            except OSError:
                _log.failure("fsync of {dir} failed", dir=self._directory)

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

    def _sync_next_turn(self) -> None:
        self._dirty = True
        if self._pending_sync is None:
            self._pending_sync = self._reactor.callLater(0, self._sync_batch)

    def _sync_batch(self) -> None:
        self._pending_sync = None
        if self._writer is None or not self._dirty:
            return
        try:
            self.flush()
        except OSError:
            _log.failure("fsync of {path} failed", path=self._writer.path)

    def flush(self) -> None:
        """
        fsync the file being written now, whatever the policy.
        """
        if self._writer is not None:
            os.fsync(self._writer.fileno())
            self._dirty = False

    def close(self) -> None:
        """
        fsync what is not yet, and close the file; never raises, so the
        file is closed even when the disk refuses (that is logged).
        """
        writer = self._writer
        if writer is None:
            return
        if self._pending_sync is not None:
            self._pending_sync.cancel()
            self._pending_sync = None
        self._writer = None
        self._current = None
        if self._dirty:
            try:
                os.fsync(writer.fileno())
                self._dirty = False
            except OSError as e:
                _log.error(
                    "fsync of {path} failed at close; its newest events may be lost"
                    " if the machine stops: {error}",
                    path=writer.path,
                    error=e,
                )
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
        upto}, in order, one line in memory at a time.  Without C{upto} it
        reads up to C{last_seq} as it is at each step, so appends between
        steps are included.  Events retired before they are reached are
        skipped.
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
        """
        try:
            f = open(segment.path, "rb")
        except FileNotFoundError:
            _log.warn("{path} vanished", path=segment.path)
            return want
        with f:
            pos = segment.locate(f, want)
            f.seek(pos)
            while want <= self._limit(upto):
                line = f.readline()
                if not line.endswith(b"\n"):
                    return self._past_end(segment, line, want)
                seq = self._seq_at(segment, line, pos)
                pos += len(line)
                if seq is None or seq < want:
                    continue
                if seq > self._limit(upto):
                    return None
                yield seq, line[:-1]
                want = seq + 1
        return None

    def _seq_at(self, segment: Segment, line: bytes, offset: int) -> int | None:
        """
        The seq of C{line}, found at C{offset} of C{segment}; C{None}
        (logged) for a corrupt line.
        """
        seq = parse_seq(line)
        if seq is None:
            _log.warn("Skipping a corrupt line in {path} at {offset}", path=segment.path, offset=offset)
        else:
            segment.remember(seq, offset)
        return seq

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
