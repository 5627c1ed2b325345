"""
Tests for L{claudews.events}: the event shapes of PROTOCOL.md's table,
the envelope and reading stored lines back.
"""

import json
import time

from twisted.trial.unittest import SynchronousTestCase

from claudews import events

#: One of each kind, as its constructor builds it, with the fields the
#: protocol's event table gives that kind.
SAMPLES = [
    (
        events.prompt_queued("p-1", "hello", {"model": "x"}, 2),
        {"prompt_id", "prompt", "options", "position"},
    ),
    (events.prompt_started("p-1", "s-1"), {"prompt_id", "session_id"}),
    (events.claude("p-1", {"type": "assistant"}), {"prompt_id", "message"}),
    (events.output("p-1", "stderr", "oops"), {"prompt_id", "stream", "text"}),
    (
        events.prompt_finished("p-1", events.COMPLETED, session_id="s-1"),
        {
            "prompt_id",
            "status",
            "exit_code",
            "session_id",
            "cost_usd",
            "duration_ms",
            "num_turns",
            "error",
        },
    ),
    (events.session_reset(), set()),
    (
        events.permission_request("p-1", "r-1", {"tool_name": "Bash", "input": {"command": "ls"}}),
        {"prompt_id", "request_id", "tool_name", "input"},
    ),
    (events.permission_resolved("r-1", "allow", "client"), {"request_id", "behavior", "by"}),
]


def _line(event: events.Event, path: str = "/w/app", seq: int = 7) -> bytes:
    return events.encode_event(path, seq, "2026-11-26T10:27:06.106Z", event)


class ConstructorTests(SynchronousTestCase):
    """
    One constructor per kind, each giving the documented fields.
    """

    def test_every_kind_has_a_constructor(self) -> None:
        """The samples cover every kind the protocol names."""
        self.assertEqual({e.kind for e, _ in SAMPLES}, set(events.KINDS))

    def test_constructors_give_exactly_the_documented_fields(self) -> None:
        """Each constructor's event has the protocol table's fields, no more."""
        for event, fields in SAMPLES:
            self.assertEqual(set(event.fields), fields, event.kind)

    def test_prompt_queued_keeps_its_values(self) -> None:
        """prompt.queued carries the prompt, its options and its position."""
        event = events.prompt_queued("p-1", "hello", {"model": "x"}, 2)
        self.assertEqual(
            dict(event.fields),
            {"prompt_id": "p-1", "prompt": "hello", "options": {"model": "x"}, "position": 2},
        )
        self.assertEqual(event.prompt_id, "p-1")

    def test_prompt_finished_defaults_the_figures_to_null(self) -> None:
        """A finish without figures has them null, not missing."""
        event = events.prompt_finished("p-1", events.FAILED, session_id=None, error="boom")
        self.assertEqual(
            dict(event.fields),
            {
                "prompt_id": "p-1",
                "status": "failed",
                "exit_code": None,
                "session_id": None,
                "cost_usd": None,
                "duration_ms": None,
                "num_turns": None,
                "error": "boom",
            },
        )

    def test_prompt_finished_refuses_an_unknown_status(self) -> None:
        """Only the protocol's statuses can finish a prompt."""
        self.assertRaises(ValueError, events.prompt_finished, "p-1", "done", session_id=None)

    def test_permission_resolved_refuses_an_unknown_resolver(self) -> None:
        """C{by} is client, timeout or cancel."""
        self.assertRaises(ValueError, events.permission_resolved, "r-1", "allow", "someone")

    def test_permission_request_passes_the_cli_fields_under_ours(self) -> None:
        """The CLI's extra fields pass through; its subtype and our keys do not."""
        event = events.permission_request(
            "p-1",
            "r-1",
            {
                "subtype": "can_use_tool",
                "tool_name": "Bash",
                "request_id": "forged",
                "permission_suggestions": [1],
            },
        )
        self.assertEqual(
            dict(event.fields),
            {
                "prompt_id": "p-1",
                "request_id": "r-1",
                "tool_name": "Bash",
                "input": {},
                "permission_suggestions": [1],
            },
        )

    def test_an_event_refuses_an_unknown_kind(self) -> None:
        """An L{events.Event} is only of a protocol kind."""
        self.assertRaises(ValueError, events.Event, "prompt.exploded", {})


class EncodeTests(SynchronousTestCase):
    """
    L{events.encode_event} and L{events.decode}.
    """

    def test_envelope_comes_first(self) -> None:
        """type, path, seq, ts and event lead the line, in that order."""
        line = _line(events.prompt_started("p-1", None))
        self.assertTrue(
            line.startswith(
                b'{"type":"event","path":"/w/app","seq":7,'
                b'"ts":"2026-11-26T10:27:06.106Z","event":"prompt.started",'
            ),
            line,
        )
        self.assertEqual(list(json.loads(line))[:5], ["type", "path", "seq", "ts", "event"])

    def test_every_kind_round_trips_through_decode(self) -> None:
        """decode gives back the number, time, path and event that went in."""
        for event, _ in SAMPLES:
            stored = events.decode(_line(event))
            assert stored is not None, event.kind
            self.assertEqual(stored.seq, 7)
            self.assertEqual(stored.ts, "2026-11-26T10:27:06.106Z")
            self.assertEqual(stored.path, "/w/app")
            self.assertEqual(stored.event.kind, event.kind)
            self.assertEqual(dict(stored.event.fields), json.loads(json.dumps(event.fields)))

    def test_decode_refuses_what_is_not_an_event(self) -> None:
        """Broken JSON, non-objects, other types and unknown kinds decode to None."""
        for line in [
            b"not json",
            b"[1]",
            b'{"type":"result"}',
            b'{"type":"event","seq":"1","event":"claude"}',
            b'{"type":"event","seq":1,"event":"nope"}',
        ]:
            self.assertIsNone(events.decode(line), line)

    def test_lone_surrogates_fall_back_to_ascii_escapes(self) -> None:
        """A value UTF-8 cannot encode is escaped, so the line is valid text."""
        line = _line(events.output("p-1", "stdout", "a\ud800b"))
        line.decode("ascii")
        self.assertIn(b"\\ud800", line)
        stored = events.decode(line)
        assert stored is not None
        self.assertEqual(stored.event.fields["text"], "a\ud800b")

    def test_a_cli_line_is_embedded_as_it_came(self) -> None:
        """
        A claude event made with the CLI's line holds those bytes as its
        message, and is the same line as one encoded from the parsed message.
        """
        raw = b'{"type":"assistant","message":{"content":[{"type":"text","text":"caf\xc3\xa9"}]},"n":1.5}'
        message, strict = events.parse_line(raw)
        self.assertTrue(strict)
        embedded = _line(events.claude("p-1", message, raw))
        self.assertTrue(embedded.endswith(b',"message":' + raw + b"}"), embedded)
        self.assertEqual(embedded, _line(events.claude("p-1", message)))
        self.assertEqual(events.kind_of(embedded), events.CLAUDE)
        # Escapes the CLI chose stay as they were: the same JSON value.
        raw = b'{"type":"assistant","text":"\\u2028\\u00e9"}'
        message, _ = events.parse_line(raw)
        stored = events.decode(_line(events.claude("p-1", message, raw)))
        assert stored is not None
        self.assertEqual(stored.event.fields["message"], {"type": "assistant", "text": "\u2028\u00e9"})

    def test_parse_line_says_what_is_not_strict(self) -> None:
        """NaN and lone surrogates parse (as the standard library does) but are not strict JSON."""
        self.assertEqual(events.parse_line(b'{"a":NaN}')[1], False)
        self.assertEqual(events.parse_line(b'{"a":"\\ud800"}'), ({"a": "\ud800"}, False))
        self.assertRaises(ValueError, events.parse_line, b"not json")

    def test_timestamps_within_a_second_share_its_text(self) -> None:
        """The cached second is right across second and millisecond boundaries."""
        for now in (1_800_000_000.0, 1_800_000_000.9994, 1_800_000_000.9996, 1_800_000_001.5, 1_799_999_999.5):
            whole = int(now)
            millis = int(round((now - whole) * 1000))
            if millis == 1000:
                whole, millis = whole + 1, 0
            expected = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + ".%03dZ" % millis
            self.assertEqual(events.timestamp(now), expected)

    def test_other_text_stays_utf8(self) -> None:
        """Ordinary non-ASCII text is written as UTF-8, not escaped."""
        line = _line(events.output("p-1", "stdout", "caf\u00e9"))
        self.assertIn("caf\u00e9".encode("utf-8"), line)


class KindOfTests(SynchronousTestCase):
    """
    L{events.kind_of}: the kind from the envelope alone.
    """

    def test_agrees_with_decode_for_every_kind(self) -> None:
        """For every line the encoder writes, kind_of says what decode says."""
        for event, _ in SAMPLES:
            line = _line(event, path='/w/"quoted"\\app')
            stored = events.decode(line)
            assert stored is not None
            self.assertEqual(events.kind_of(line), stored.event.kind)

    def test_none_for_a_line_of_another_shape(self) -> None:
        """A line not in the envelope's layout gives None; decode then decides."""
        line = b'{"seq":3,"type":"event","event":"claude","path":"/w","ts":"x"}'
        self.assertIsNone(events.kind_of(line))
        stored = events.decode(line)
        assert stored is not None
        self.assertEqual(stored.event.kind, "claude")

    def test_ignores_a_kind_quoted_in_a_cli_message(self) -> None:
        """An envelope quoted inside a CLI message does not count."""
        quoted = _line(events.prompt_finished("p-0", events.COMPLETED, session_id=None))
        line = _line(events.claude("p-1", {"type": "assistant", "text": quoted.decode()}))
        self.assertEqual(events.kind_of(line), events.CLAUDE)
        self.assertIsNone(events.kind_of(b"garbage " + quoted))


class SeqOfTests(SynchronousTestCase):
    """
    L{events.seq_of}: an event's seq from the head of its stored line.
    """

    def test_agrees_with_decode_for_every_kind(self) -> None:
        """The envelope's seq, whatever the kind and however odd the path."""
        for seq, (event, _) in enumerate(SAMPLES, 1):
            line = events.encode_event('/w/"odd" \\path', seq * 1000, events.timestamp(0), event)
            self.assertEqual(events.seq_of(line), seq * 1000)

    def test_another_shape_is_none(self) -> None:
        """A line of another layout is left to decode."""
        for line in (b"", b"garbage", b'{"seq":3,"type":"event"}', b'{"type":"event","path":"/w","seq":0,'):
            self.assertIsNone(events.seq_of(line))
