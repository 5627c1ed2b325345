"""
One messages file read back: where it starts, where a seq lies in it,
and what a directory of them holds.

Each line is one event: a JSON object whose integer C{seq} grows with the
line's offset.  A sparse seq -> offset index (L{Segment}) brackets a seq;
it is built lazily (by appends, by reads passing by, and by probes) and
keeps entries at least L{INDEX_EVERY} seqs apart, so its memory is
O(events / 1000).  Where the bracket is still wide, a bisection over byte
offsets narrows it, so a cold file costs a dozen short reads, not a scan.
"""

from __future__ import annotations

import json
import os
from bisect import bisect_left, bisect_right
from typing import IO, Iterator

import orjson
from attrs import define, field
from twisted.logger import Logger

from claudews.jsonlfile import CHUNK, LATEST_TMP, NAME, truncate_torn_tail

_log = Logger()

INDEX_EVERY = 1000
# A bracket this small is read line by line rather than bisected.
_SCAN_BYTES = 16 * 1024


def parse_seq(line: bytes) -> int | None:
    """
    The seq of a stored line, or C{None} when it is not an event we wrote.

    The whole line is parsed, so a damaged line has none. orjson parses it
    (a replay parses every line it sends: the standard library's parser
    was half of a replay's CPU); what orjson refuses or reads otherwise
    (NaN, lone surrogates, integers past 64 bits, which it reads as
    floats) is parsed again by the standard library, which decides.
    """
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        obj = None
    if isinstance(obj, dict):
        seq = obj.get("seq")
        if type(seq) is int and seq >= 1:
            return seq
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


def lines_backwards(f: IO[bytes], end: int) -> Iterator[bytes]:
    """
    The lines of C{f} before C{end}, newest first, a chunk at a time.

    A line longer than a chunk is gathered in pieces and joined once, so a
    line of many MB costs its own size, not a copy per chunk.
    """
    pos = end
    # The pieces of the line being gathered, newest piece first.
    parts: list[bytes] = []
    while pos > 0:
        n = min(CHUNK, pos)
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


def _next_line_start(f: IO[bytes], start: int) -> int | None:
    """
    The offset of the first line that starts at or after C{start}, read in
    bounded pieces; C{None} past the end.
    """
    if start == 0:
        f.seek(0)
        return 0
    # Finish the line that byte start-1 belongs to.
    f.seek(start - 1)
    pos = start - 1
    while True:
        part = f.readline(CHUNK)
        if not part:
            return None
        pos += len(part)
        if part.endswith(b"\n"):
            return pos


def _probe(f: IO[bytes], start: int, end: int) -> tuple[int, int] | None:
    """
    The offset and seq of the first valid line starting in C{[start, end)}.
    """
    pos = _next_line_start(f, start)
    if pos is None:
        return None
    while pos < end:
        line = f.readline()
        if not line.endswith(b"\n"):
            return None
        seq = parse_seq(line)
        if seq is not None:
            return pos, seq
        pos += len(line)
    return None


@define(eq=False)
class Segment:
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
        """
        Note that C{seq}'s line starts at C{offset}, if the index wants it.
        """
        # Entries stay INDEX_EVERY seqs apart whoever adds them (appends,
        # reads, probes), which is what bounds the index's memory.
        if seq <= self.first_seq:
            return
        seqs = self._seqs
        i = bisect_left(seqs, seq)
        if i < len(seqs) and seqs[i] - seq < INDEX_EVERY:
            return
        if seq - (seqs[i - 1] if i else self.first_seq) < INDEX_EVERY:
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

    def locate(self, f: IO[bytes], seq: int) -> int:
        """
        The offset of a line at or before C{seq}'s line in C{f} (this
        segment's file), close to it.
        """
        if seq <= self.first_seq:
            return 0
        lo_seq, lo_off, hi_off = self.bracket(seq)
        if lo_seq == seq:
            return lo_off
        while hi_off - lo_off > _SCAN_BYTES:
            mid = (lo_off + hi_off) // 2
            found = _probe(f, mid, hi_off)
            if found is None:
                hi_off = mid
                continue
            offset, probed = found
            self.remember(probed, offset)
            if probed == seq:
                return offset
            if probed < seq:
                lo_off = offset
            else:
                hi_off = mid
        return lo_off

    def last_seq(self) -> int | None:
        """
        The seq of the newest valid line, read from the end.
        """
        with open(self.path, "rb") as f:
            for line in lines_backwards(f, self.size):
                seq = parse_seq(line) if line else None
                if seq is not None:
                    return seq
        return None

    @property
    def index_size(self) -> int:
        """How many entries the index holds: what its memory grows with."""
        return len(self._seqs)


def _first_seq(path: str) -> tuple[int | None, int, int]:
    """
    The first seq in a file, how many complete lines were read to find
    it, and the file's size.
    """
    first, lines = None, 0
    with open(path, "rb") as f:
        for line in iter(f.readline, b""):
            if not line.endswith(b"\n"):
                break
            lines += 1
            first = parse_seq(line)
            if first is not None:
                break
            _log.warn("Skipping a corrupt line in {path}", path=path)
        size = f.seek(0, os.SEEK_END)
    return first, lines, size


def find_segments(directory: str) -> list[Segment]:
    """
    The messages files in C{directory}, ordered by their first seq, never
    by name (a clock stepping backwards cannot reorder history); what a
    crash left half-made is removed, and the newest file's torn last line
    cut.
    """
    found = []
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if name == LATEST_TMP:
            os.unlink(path)
            continue
        if not NAME.match(name):
            continue
        first, lines, size = _first_seq(path)
        if first is not None:
            found.append(Segment(name, path, first, size))
        elif not lines:
            # Created by a rotation, or torn in its first line, by a crash.
            _log.warn("Removing {path}: it holds no complete event", path=path)
            os.unlink(path)
        else:
            _log.warn("Ignoring {path}: it holds no event", path=path)
    found.sort(key=lambda segment: (segment.first_seq, segment.name, segment.size))
    if found:
        newest = found[-1]
        newest.size = truncate_torn_tail(newest.path, newest.size)
    return found
