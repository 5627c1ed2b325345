"""
One project's event history: rotating JSON-lines files and a replay reader.

A project's C{logs/} directory, which people read too::

    messages_2026-11-26_10-27-06.jsonl   one file per rotation, named by the
    messages_2026-11-26_11-02-40.jsonl   UTC time it was started ("-1", "-2"
    latest.jsonl -> messages_...         on a clash); the link is relative

Each line is one event exactly as sent on the wire: a JSON object whose
integer C{seq} runs 1, 2, 3... without gaps across files.  Files are ordered
by the seq of their first line, never by name, so a clock stepping backwards
cannot reorder history.

Finding an event: a bisect over each file's first seq picks the file; inside
it a sparse seq -> offset index brackets the seq.  The index is built lazily
(by appends, by reads passing by, and by probes) and keeps entries at least
L{_INDEX_EVERY} seqs apart, so its memory is O(events / 1000).  Where the
bracket is still wide, a bisection over byte offsets narrows it (seq grows
with offset), so a cold file costs a dozen short reads, not a scan.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import time
from bisect import bisect_left, bisect_right
from typing import IO, Any, Callable, Iterator

from attrs import define, field
from twisted.logger import Logger
from twisted.python.logfile import BaseLogFile

_log = Logger()

LATEST = "latest.jsonl"
_LATEST_TMP = ".latest.jsonl.tmp"
_NAME = re.compile(r"^messages_\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d(?:-\d+)?\.jsonl$")
_INDEX_EVERY = 1000
# A bracket this small is read line by line rather than bisected.
_SCAN_BYTES = 16 * 1024
_CHUNK = 64 * 1024
#: When appends reach the disk: each one before it returns, each reactor
#: turn's together on the next turn, or when the OS sees fit.
FSYNC_POLICIES = ("every", "batch", "none")


def _parse_seq(line: bytes) -> int | None:
    """
    The seq of a stored line, or C{None} when it is not an event we wrote.
    """
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    seq = obj.get("seq")
    if type(seq) is not int or seq < 1:
        return None
    return seq


def _fresh_name(directory: str, when: float) -> str:
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S", time.gmtime(when))
    name = "messages_%s.jsonl" % (stamp,)
    n = 0
    while os.path.lexists(os.path.join(directory, name)):
        n += 1
        name = "messages_%s-%d.jsonl" % (stamp, n)
    return name


def _fsync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _lines_backwards(f: IO[bytes], end: int) -> Iterator[bytes]:
    """
    The lines of C{f} before C{end}, newest first, a chunk at a time.

    A line longer than a chunk is gathered in pieces and joined once, so a
    line of many MB costs its own size, not a copy per chunk.
    """
    pos = end
    # The pieces of the line being gathered, newest piece first.
    parts: list[bytes] = []
    while pos > 0:
        n = min(_CHUNK, pos)
        pos -= n
        f.seek(pos)
        pieces = f.read(n).split(b"\n")
        if len(pieces) == 1:
            parts.append(pieces[0])
            continue
        parts.append(pieces[-1])
        yield b"".join(reversed(parts))
        yield from reversed(pieces[1:-1])
        parts = [pieces[0]]
    yield b"".join(reversed(parts))


def _truncate_torn_tail(path: str, size: int) -> int:
    """
    Cut a last line that has no newline (a crash mid-write); the new size.
    """
    if size == 0:
        return 0
    with open(path, "rb+") as f:
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return size
        keep, pos = 0, size
        while pos > 0:
            n = min(_CHUNK, pos)
            pos -= n
            f.seek(pos)
            i = f.read(n).rfind(b"\n")
            if i >= 0:
                keep = pos + i + 1
                break
        f.truncate(keep)
    _log.warn("Truncated a torn last line of {path} ({cut} bytes)", path=path, cut=size - keep)
    return keep


def _probe(f: IO[bytes], start: int, end: int) -> tuple[int, int] | None:
    """
    The offset and seq of the first valid line starting in C{[start, end)}.
    """
    pos = start
    if start > 0:
        # Finish the line that byte start-1 belongs to, in bounded pieces.
        f.seek(start - 1)
        pos = start - 1
        while True:
            part = f.readline(_CHUNK)
            if not part:
                return None
            pos += len(part)
            if part.endswith(b"\n"):
                break
    else:
        f.seek(0)
    while pos < end:
        line = f.readline()
        if not line.endswith(b"\n"):
            return None
        seq = _parse_seq(line)
        if seq is not None:
            return pos, seq
        pos += len(line)
    return None


@define(eq=False)
class _Segment:
    """
    One messages file: where it starts, how big it is, and its sparse index.
    """

    name: str
    path: str
    first_seq: int
    size: int
    _seqs: list[int] = field(factory=list, init=False)
    _offsets: list[int] = field(factory=list, init=False)

    def remember(self, seq: int, offset: int) -> None:
        # Entries stay _INDEX_EVERY seqs apart whoever adds them (appends,
        # reads, probes), which is what bounds the index's memory.
        if seq <= self.first_seq:
            return
        seqs = self._seqs
        i = bisect_left(seqs, seq)
        if i < len(seqs) and seqs[i] - seq < _INDEX_EVERY:
            return
        if seq - (seqs[i - 1] if i else self.first_seq) < _INDEX_EVERY:
            return
        seqs.insert(i, seq)
        self._offsets.insert(i, offset)

    def bracket(self, seq: int) -> tuple[int, int, int]:
        """
        The nearest known line at or before C{seq} (its seq and offset), and
        an offset at or after the start of C{seq}'s line.
        """
        i = bisect_right(self._seqs, seq) - 1
        lo_seq, lo_off = (self._seqs[i], self._offsets[i]) if i >= 0 else (self.first_seq, 0)
        hi_off = self._offsets[i + 1] if i + 1 < len(self._offsets) else self.size
        return lo_seq, lo_off, hi_off

    @property
    def index_size(self) -> int:
        return len(self._seqs)


class _JsonlLogFile(BaseLogFile):
    """
    The file being written.

    L{BaseLogFile} gives the unbuffered binary handle and keeps the file mode;
    naming and rotation are ours, because its C{.1 .2} renaming would move
    files under readers and under the people reading them.
    """

    def __init__(self, directory: str, name: str, rotateLength: int, now: Callable[[], float]):
        self.rotateLength = rotateLength
        self._now = now
        self.needsRecovery = False
        BaseLogFile.__init__(self, name, directory)

    def _openFile(self) -> None:
        BaseLogFile._openFile(self)
        self.size = self._file.tell()

    def fileno(self) -> int:
        return self._file.fileno()

    def shouldRotate(self, incoming: int = 1) -> bool:
        return self.size > 0 and self.size + incoming > self.rotateLength

    def rotate(self) -> None:
        old = (self.name, self.path, self._file, self.size)
        self.name = _fresh_name(self.directory, self._now())
        self.path = os.path.join(self.directory, self.name)
        try:
            self._openFile()
        except BaseException:
            self.name, self.path, self._file, self.size = old
            raise
        try:
            old[2].close()
        except OSError:
            _log.failure("Closing {path} failed", path=old[1])

    def linkLatest(self) -> bool:
        """
        Point latest.jsonl at this file in one step, so a reader never finds
        it missing; C{False} (logged) when that failed.
        """
        link = os.path.join(self.directory, LATEST)
        tmp = os.path.join(self.directory, _LATEST_TMP)
        try:
            if os.path.islink(link) and os.readlink(link) == self.name:
                return True
            if os.path.lexists(tmp):
                os.unlink(tmp)
            os.symlink(self.name, tmp)
            os.replace(tmp, link)
        except OSError:
            _log.failure("Pointing {link} at {name} failed", link=link, name=self.name)
            return False
        return True

    def write(self, data: bytes, sync: bool = False) -> None:
        """
        Write all of C{data} (and fsync it if C{sync}), or leave the file as
        it was and raise; or, when even cutting the partial line off fails,
        set C{needsRecovery}: the caller calls L{recover} before its next
        write (L{History.append} does, before it decides to rotate).
        """
        fd = self._file.fileno()
        view = memoryview(data)
        done = 0
        try:
            # A full disk shows up as a short write first, ENOSPC after.
            while done < len(view):
                n = os.write(fd, view[done:])
                if not n:
                    raise OSError(errno.EIO, "write made no progress", self.path)
                done += n
            if sync:
                os.fsync(fd)
        except BaseException:
            if done:
                self._cut_back()
            raise
        self.size += len(data)

    def _cut_back(self) -> None:
        try:
            os.ftruncate(self._file.fileno(), self.size)
            os.lseek(self._file.fileno(), self.size, os.SEEK_SET)
        except OSError:
            self.needsRecovery = True
            _log.failure("Cutting a partial line off {path} failed; retrying before the next append", path=self.path)

    def recover(self) -> None:
        os.ftruncate(self._file.fileno(), self.size)
        os.lseek(self._file.fileno(), self.size, os.SEEK_SET)
        self.needsRecovery = False
        _log.info("Cut a partial line off {path}", path=self.path)


class History:
    """
    The stored events of one project; see the module docstring.

    @ivar last_seq: seq of the newest stored event; 0 when empty.
    """

    def __init__(
        self,
        directory: str,
        *,
        rotate_bytes: int = 64 * 2**20,
        max_bytes: int = 2**30,
        fsync: str = "batch",
        reactor: Any = None,
        now: Callable[[], float] | None = None,
    ) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError("fsync must be one of %s" % (", ".join(FSYNC_POLICIES),))
        if rotate_bytes < 1 or max_bytes < 1:
            raise ValueError("rotate_bytes and max_bytes must be positive")
        self._directory = directory
        self._max_bytes = max_bytes
        self._fsync = fsync
        self._reactor = reactor
        self._now = now if now is not None else time.time
        self._segments: list[_Segment] = []
        self._firsts: list[int] = []
        self._total = 0
        self._dirty = False
        self._pending_sync: Any = None
        self._link_stale = False
        self.last_seq = 0
        os.makedirs(directory, exist_ok=True)
        self._scan()
        if self._segments:
            current = self._segments[-1]
        else:
            name = _fresh_name(directory, self._now())
            current = self._add_segment(name, self.last_seq + 1)
        self._writer: _JsonlLogFile | None = _JsonlLogFile(directory, current.name, rotate_bytes, self._now)
        self._current: _Segment | None = current
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

    def _add_segment(self, name: str, first_seq: int, size: int = 0) -> _Segment:
        seg = _Segment(name, os.path.join(self._directory, name), first_seq, size)
        self._segments.append(seg)
        self._firsts.append(first_seq)
        self._total += size
        return seg

    def _scan(self) -> None:
        """
        Find the files, order them, and recover from a crash mid-write.
        """
        found = []
        for name in os.listdir(self._directory):
            path = os.path.join(self._directory, name)
            if name == _LATEST_TMP:
                os.unlink(path)
                continue
            if not _NAME.match(name):
                continue
            first, lines = None, 0
            with open(path, "rb") as f:
                for line in iter(f.readline, b""):
                    if not line.endswith(b"\n"):
                        break
                    lines += 1
                    first = _parse_seq(line)
                    if first is not None:
                        break
                    _log.warn("Skipping a corrupt line in {path}", path=path)
                size = f.seek(0, os.SEEK_END)
            if first is not None:
                found.append((first, name, size))
            elif not lines:
                # Created by a rotation, or torn in its first line, by a crash.
                _log.warn("Removing {path}: it holds no complete event", path=path)
                os.unlink(path)
            else:
                _log.warn("Ignoring {path}: it holds no event", path=path)
        found.sort()
        for first, name, size in found:
            self._add_segment(name, first, size)
        if not found:
            return
        newest = self._segments[-1]
        size = _truncate_torn_tail(newest.path, newest.size)
        self._total -= newest.size - size
        newest.size = size
        with open(newest.path, "rb") as f:
            for line in _lines_backwards(f, size):
                seq = _parse_seq(line) if line else None
                if seq is not None:
                    self.last_seq = seq
                    break

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
        current = self._current
        assert current is not None
        offset = writer.size
        writer.write(data, sync=self._fsync == "every")
        current.size = writer.size
        self._total += len(data)
        current.remember(seq, offset)
        self.last_seq = seq
        if self._link_stale:
            self._link_stale = not writer.linkLatest()
        if self._fsync == "batch":
            self._dirty = True
            if self._pending_sync is None:
                self._pending_sync = self._get_reactor().callLater(0, self._sync_batch)
        if self._total > self._max_bytes:
            self._retire()

    def _rotate(self, writer: _JsonlLogFile, seq: int) -> None:
        if self._dirty:
            # Its data must reach the disk before the handle is gone.
            os.fsync(writer.fileno())
            self._dirty = False
        writer.rotate()
        self._current = self._add_segment(writer.name, seq)
        self._link_stale = not writer.linkLatest()
        if self._fsync != "none":
            try:
                _fsync_directory(self._directory)
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

    def _get_reactor(self) -> Any:
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

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

    def _segment_for(self, seq: int) -> _Segment | None:
        if not self._segments:
            return None
        return self._segments[max(bisect_right(self._firsts, seq) - 1, 0)]

    def _segment_after(self, seg: _Segment) -> _Segment | None:
        # By seq, not by position: seg may have been retired meanwhile.
        i = bisect_right(self._firsts, seg.first_seq)
        return self._segments[i] if i < len(self._segments) else None

    def _locate(self, seg: _Segment, f: IO[bytes], seq: int) -> int:
        """
        The offset of a line at or before C{seq}'s line in C{seg}, close to it.
        """
        if seq <= seg.first_seq:
            return 0
        lo_seq, lo_off, hi_off = seg.bracket(seq)
        if lo_seq == seq:
            return lo_off
        while hi_off - lo_off > _SCAN_BYTES:
            mid = (lo_off + hi_off) // 2
            found = _probe(f, mid, hi_off)
            if found is None:
                hi_off = mid
                continue
            offset, probed = found
            seg.remember(probed, offset)
            if probed == seq:
                return offset
            if probed < seq:
                lo_off = offset
            else:
                hi_off = mid
        return lo_off

    def read_since(self, since: int, upto: int | None = None) -> Iterator[tuple[int, bytes]]:
        """
        Yield C{(seq, line)} for every stored event with C{since < seq <=
        upto}, in order, one line in memory at a time.  Without C{upto} it
        reads up to C{last_seq} as it is at each step, so appends between
        steps are included.  Events retired before they are reached are
        skipped.
        """
        want = max(since, 0) + 1
        seg: _Segment | None = None
        f: IO[bytes] | None = None
        pos = 0
        try:
            while True:
                limit = self.last_seq if upto is None else upto
                if want > limit:
                    return
                if f is None or seg is None:
                    want = max(want, self.first_seq)
                    seg = self._segment_for(want)
                    if seg is None:
                        return
                    try:
                        f = open(seg.path, "rb")
                    except FileNotFoundError:
                        _log.warn("{path} vanished", path=seg.path)
                        f = None
                        seg = self._segment_after(seg)
                        if seg is None:
                            return
                        want = max(want, seg.first_seq)
                        continue
                    pos = self._locate(seg, f, want)
                    f.seek(pos)
                line = f.readline()
                if line.endswith(b"\n"):
                    start = pos
                    pos += len(line)
                    seq = _parse_seq(line)
                    if seq is None:
                        _log.warn("Skipping a corrupt line in {path} at {offset}", path=seg.path, offset=start)
                        continue
                    seg.remember(seq, start)
                    if seq < want:
                        continue
                    if seq > limit:
                        return
                    yield seq, line[:-1]
                    want = seq + 1
                    continue
                if seg is self._current:
                    # Caught up with the writer (a partial line is one whose
                    # failed write is yet to be cut off).
                    return
                if line:
                    _log.warn("Skipping a torn line at the end of {path}", path=seg.path)
                f.close()
                f = None
                after = self._segment_after(seg)
                if after is None:
                    return
                want = max(want, after.first_seq)
        finally:
            if f is not None:
                f.close()

    def lines_backwards(self) -> Iterator[bytes]:
        """
        Every stored line, newest first, with one line and one chunk of a
        file in memory at a time: for recovery, which looks for the newest
        events of some kinds. Lines are not parsed (the caller parses the
        few it wants); a corrupt or torn line comes as it is.
        """
        for seg in reversed(list(self._segments)):
            try:
                f = open(seg.path, "rb")
            except FileNotFoundError:
                continue
            with f:
                for line in _lines_backwards(f, seg.size):
                    if line:
                        yield line

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
