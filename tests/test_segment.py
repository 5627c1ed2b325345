"""
Tests for L{claudews.segment}: one messages file read back, its sparse
index, and the files a directory holds.  How L{claudews.history.History}
uses them is in C{tests.test_history}.
"""

import io
import json
import os
import shutil
import tempfile

from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from claudews import segment as segment_module
from claudews.jsonlfile import CHUNK, LATEST_TMP
from claudews.segment import INDEX_EVERY, Segment, find_segments, lines_backwards, parse_seq


def event(seq, pad=0):
    return json.dumps({"type": "event", "seq": seq, "pad": "x" * pad}).encode()


def file_of(seqs, pad=0):
    return b"".join(event(seq, pad) + b"\n" for seq in seqs)


class ParseSeqTests(SynchronousTestCase):
    def test_the_seq_of_an_event_line(self):
        """A JSON object with a positive integer seq: that seq."""
        self.assertEqual(parse_seq(event(7)), 7)
        self.assertEqual(parse_seq(event(7) + b"\n"), 7)

    def test_lines_that_are_not_ours_have_none(self):
        """Not JSON, not an object, no seq, a seq that is not a positive int: None."""
        for line in (b"junk", b"[1]", b"{}", b'{"seq": "3"}', b'{"seq": 0}',
                     b'{"seq": true}', b'{"seq": 1.0}', b"[" * 100000):
            self.assertIsNone(parse_seq(line), line[:20])

    def test_what_orjson_refuses_or_reads_otherwise(self):
        """
        Lines orjson refuses (NaN, a lone surrogate) or reads otherwise (an
        integer past 64 bits, which it makes a float) have the seq the
        standard library reads.
        """
        self.assertEqual(parse_seq(b'{"seq": 5, "x": NaN}'), 5)
        self.assertEqual(parse_seq(b'{"seq": 5, "x": "\\ud800"}'), 5)
        self.assertEqual(parse_seq(b'{"seq": 5, "x": 99999999999999999999999}'), 5)
        self.assertEqual(parse_seq(b'{"seq": 99999999999999999999999}'), 99999999999999999999999)
        self.assertEqual(parse_seq(b'{"seq": 1, "seq": 2}'), 2)
        self.assertIsNone(parse_seq(b'{"seq": 5, "x": "\xff"}'))


class LinesBackwardsTests(SynchronousTestCase):
    def test_lines_newest_first_up_to_end(self):
        """Every line before end, newest first; the first piece is what precedes the first newline."""
        data = file_of(range(1, 4))
        got = list(lines_backwards(io.BytesIO(data), len(data)))
        self.assertEqual(got, [b"", event(3), event(2), event(1)])
        end = len(file_of(range(1, 3)))
        self.assertEqual(list(lines_backwards(io.BytesIO(data), end)), [b"", event(2), event(1)])

    def test_a_line_longer_than_a_chunk_comes_whole(self):
        """A line spanning chunks is joined exactly once."""
        big = event(2, pad=3 * CHUNK)
        data = event(1) + b"\n" + big + b"\n" + event(3) + b"\n"
        self.assertEqual(list(lines_backwards(io.BytesIO(data), len(data))),
                         [b"", event(3), big, event(1)])


class IndexTests(SynchronousTestCase):
    def test_entries_stay_index_every_apart(self):
        """Whoever adds them and in whatever order, entries are INDEX_EVERY seqs apart."""
        segment = Segment("f", "/nowhere", first_seq=1, size=10**9)
        for seq in list(range(1, 10001, 7)) + list(range(10001, 1, -13)):
            segment.remember(seq, seq * 100)
        self.assertLessEqual(segment.index_size, 10)
        self.assertGreaterEqual(segment.index_size, 5)
        lo_seq, lo_off, hi_off = segment.bracket(5555)
        self.assertLessEqual(lo_seq, 5555)
        self.assertEqual(lo_off, lo_seq * 100)
        self.assertGreater(hi_off, 5555 * 100)

    def test_a_bracket_without_entries_is_the_whole_file(self):
        """Nothing known: from the first seq at offset 0 to the file's end."""
        segment = Segment("f", "/nowhere", first_seq=40, size=1234)
        self.assertEqual(segment.bracket(100), (40, 0, 1234))
        segment.remember(40, 0)
        self.assertEqual(segment.index_size, 0)


class LocateTests(SynchronousTestCase):
    def test_every_seq_is_located_at_or_before_its_line(self):
        """A cold index bisects to an offset at or just before the line."""
        seqs = range(1, 3001)
        data = file_of(seqs, pad=30)
        offsets = {}
        pos = 0
        for seq in seqs:
            offsets[seq] = pos
            pos += len(event(seq, 30)) + 1
        segment = Segment("f", "/nowhere", first_seq=1, size=len(data))
        for seq in (1, 2, 999, 1000, 1001, 2500, 3000):
            located = segment.locate(io.BytesIO(data), seq)
            self.assertLessEqual(located, offsets[seq])
            self.assertLess(offsets[seq] - located, 16 * 1024 + len(event(seq, 30)) + 1)
        self.assertGreater(segment.index_size, 0)

    def test_corrupt_lines_are_probed_past(self):
        """Junk where a probe lands: the next valid line serves."""
        data = b"".join(event(seq, 5000) + b"\n" + b"junk\n" for seq in range(1, 40))
        segment = Segment("f", "/nowhere", first_seq=1, size=len(data))
        located = segment.locate(io.BytesIO(data), 30)
        self.assertLessEqual(located, data.index(event(30, 5000)))
        found = [seq for seq in map(parse_seq, data[located:].split(b"\n")) if seq is not None]
        self.assertLessEqual(found[0], 30)
        self.assertLessEqual(30 - found[0], 4)


class DirectoryTests(SynchronousTestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="claudews-segments-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.logged = []
        self.patch(segment_module, "_log", Logger(observer=self.logged.append))

    def put(self, name, data):
        with open(os.path.join(self.dir, name), "wb") as f:
            f.write(data)

    def test_files_are_ordered_by_first_seq_not_by_name(self):
        """A clock that stepped back named a newer file earlier: seq order wins."""
        self.put("messages_2026-11-26_10-00-00.jsonl", file_of([4, 5]))
        self.put("messages_2026-11-26_11-00-00.jsonl", file_of([1, 2, 3]))
        found = find_segments(self.dir)
        self.assertEqual([(s.name, s.first_seq, s.size) for s in found], [
            ("messages_2026-11-26_11-00-00.jsonl", 1, len(file_of([1, 2, 3]))),
            ("messages_2026-11-26_10-00-00.jsonl", 4, len(file_of([4, 5]))),
        ])
        self.assertEqual(found[-1].last_seq(), 5)

    def test_what_a_crash_left_half_made_is_removed_or_cut(self):
        """A file without a whole line and the link's temporary go; the newest's torn tail is cut."""
        self.put("messages_2026-11-26_10-00-00.jsonl", file_of([1, 2]))
        self.put("messages_2026-11-26_11-00-00.jsonl", file_of([3]) + b'{"seq": 4, "ty')
        self.put("messages_2026-11-26_12-00-00.jsonl", b'{"seq": 5')
        os.symlink("messages_2026-11-26_11-00-00.jsonl", os.path.join(self.dir, LATEST_TMP))
        found = find_segments(self.dir)
        self.assertEqual([s.first_seq for s in found], [1, 3])
        self.assertEqual(found[-1].size, len(file_of([3])))
        self.assertEqual(sorted(os.listdir(self.dir)), [
            "messages_2026-11-26_10-00-00.jsonl", "messages_2026-11-26_11-00-00.jsonl"])

    def test_files_that_are_not_ours_or_hold_no_event_are_left_alone(self):
        """Other names are not read; a messages file of junk is kept, unused, with a warning."""
        self.put("notes.txt", b"hello\n")
        self.put("messages_2026-11-26_10-00-00.jsonl", b"junk\n")
        self.assertEqual(find_segments(self.dir), [])
        self.assertEqual(len(os.listdir(self.dir)), 2)
        self.assertTrue(self.logged)

    def test_the_last_seq_is_the_newest_valid_line(self):
        """Junk after the last event does not hide it."""
        self.put("messages_2026-11-26_10-00-00.jsonl", file_of([1, 2]) + b"junk\n")
        [found] = find_segments(self.dir)
        self.assertEqual(found.last_seq(), 2)
