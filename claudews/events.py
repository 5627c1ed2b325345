"""
Shapes shared by every room: wire encoding, replies and events.

Every project event is built here, by one constructor per kind, so the
fields of an event are written down once. Events are encoded once,
stored as that exact line in the project's history and sent as that
exact frame to every subscriber, so a replayed event is byte-for-byte the
one that went out live. Reading a stored line back (L{decode},
L{kind_of}) lives here too, beside the encoder whose layout it knows.
"""

import json
import re
import time
from typing import Any, Mapping

import attrs
import orjson

PROMPT_QUEUED = "prompt.queued"
PROMPT_STARTED = "prompt.started"
CLAUDE = "claude"
OUTPUT = "output"
PROMPT_FINISHED = "prompt.finished"
SESSION_RESET = "session.reset"
PERMISSION_REQUEST = "permission.request"
PERMISSION_RESOLVED = "permission.resolved"

#: Every value of an event's ``event`` field (PROTOCOL.md, "Events").
KINDS = frozenset(
    {
        PROMPT_QUEUED,
        PROMPT_STARTED,
        CLAUDE,
        OUTPUT,
        PROMPT_FINISHED,
        SESSION_RESET,
        PERMISSION_REQUEST,
        PERMISSION_RESOLVED,
    }
)

COMPLETED = "completed"
FAILED = "failed"
CANCELLED = "cancelled"
TIMEOUT = "timeout"
INTERRUPTED = "interrupted"

#: Values of ``status`` in ``prompt.finished``.
STATUSES = frozenset({COMPLETED, FAILED, CANCELLED, TIMEOUT, INTERRUPTED})

#: Who settled a permission request (``by`` in ``permission.resolved``).
RESOLVERS = frozenset({"client", "timeout", "cancel"})


@attrs.frozen
class Event:
    """
    One project event before it is numbered: its kind and its fields.
    """

    kind: str = attrs.field(validator=attrs.validators.in_(KINDS))
    fields: Mapping[str, Any] = attrs.field(factory=dict)
    #: The CLI's line the C{message} field was parsed from, when it is
    #: strict JSON: L{encode_event} embeds it as it came instead of
    #: encoding the parsed message again (a line can be many MB).
    raw_message: bytes | None = attrs.field(default=None, eq=False, repr=False)

    @property
    def prompt_id(self) -> str | None:
        value = self.fields.get("prompt_id")
        return value if isinstance(value, str) else None


def prompt_queued(prompt_id: str, prompt: str, options: Mapping[str, Any], position: int) -> Event:
    return Event(
        PROMPT_QUEUED,
        {"prompt_id": prompt_id, "prompt": prompt, "options": options, "position": position},
    )


def prompt_started(prompt_id: str, session_id: str | None) -> Event:
    return Event(PROMPT_STARTED, {"prompt_id": prompt_id, "session_id": session_id})


def claude(prompt_id: str | None, message: Mapping[str, Any], raw: bytes | None = None) -> Event:
    """
    A message the CLI printed; C{raw}, when given, is the line it was
    parsed from (see L{parse_line}), stored and sent as it is.
    """
    return Event(CLAUDE, {"prompt_id": prompt_id, "message": message}, raw)


def output(prompt_id: str | None, stream: str, text: str) -> Event:
    return Event(OUTPUT, {"prompt_id": prompt_id, "stream": stream, "text": text})


def prompt_finished(
    prompt_id: str,
    status: str,
    *,
    session_id: str | None,
    exit_code: int | None = None,
    cost_usd: float | None = None,
    duration_ms: int | None = None,
    num_turns: int | None = None,
    error: str | None = None,
) -> Event:
    if status not in STATUSES:
        raise ValueError("not a prompt status: %r" % (status,))
    return Event(
        PROMPT_FINISHED,
        {
            "prompt_id": prompt_id,
            "status": status,
            "exit_code": exit_code,
            "session_id": session_id,
            "cost_usd": cost_usd,
            "duration_ms": duration_ms,
            "num_turns": num_turns,
            "error": error,
        },
    )


def session_reset() -> Event:
    return Event(SESSION_RESET, {})


def permission_request(prompt_id: str, request_id: str, request: Mapping[str, Any]) -> Event:
    """
    The CLI's C{can_use_tool} request: its own fields (tool_name, input,
    display_name, permission_suggestions, ...) pass through, under ours.
    """
    fields: dict[str, Any] = {
        "prompt_id": prompt_id,
        "request_id": request_id,
        "tool_name": request.get("tool_name"),
        "input": request.get("input", {}),
    }
    for key, value in request.items():
        # Our own keys win: a CLI field named like one of them must not
        # redirect the answer to another request.
        if key != "subtype" and key not in fields:
            fields[key] = value
    return Event(PERMISSION_REQUEST, fields)


def permission_resolved(request_id: str, behavior: str, by: str) -> Event:
    if by not in RESOLVERS:
        raise ValueError("not a resolver: %r" % (by,))
    return Event(PERMISSION_RESOLVED, {"request_id": request_id, "behavior": behavior, "by": by})


# -- encoding


def encode(obj: Any) -> bytes:
    """
    JSON-encode C{obj} compactly as UTF-8.

    orjson does it (about fifteen times faster than the standard library
    on events, and byte-for-byte the same on them: compact, non-ASCII
    characters as they are). What it refuses falls back to the standard
    library: the CLI's output can carry lone surrogates (JSON allows
    C{"\\ud800"}), which UTF-8 cannot encode, so such a value is written
    with ASCII escapes and the frame is always valid text; integers past
    64 bits likewise.
    """
    try:
        return orjson.dumps(obj)
    except TypeError:
        pass
    try:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(obj, separators=(",", ":")).encode("ascii")


def parse_line(line: bytes) -> tuple[Any, bool]:
    """
    Parse one line of JSON: the value, and whether the line is strict
    JSON (valid UTF-8, no lone surrogates, no NaN), which can be embedded
    in an event as it is. Raises C{ValueError} when it is not JSON at all.
    """
    try:
        return orjson.loads(line), True
    except orjson.JSONDecodeError:
        # What the standard library still takes (NaN, lone surrogates)
        # is parsed, and encoded again by L{encode} when stored.
        return json.loads(line), False


class _Clock:
    """
    RFC 3339 times for a stream of events: the formatted second is kept,
    as events come many to a second.
    """

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, now: float | None = None) -> str:
        if now is None:
            now = time.time()
        whole = int(now)
        millis = int(round((now - whole) * 1000))
        if millis == 1000:
            whole, millis = whole + 1, 0
        if whole != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
            self._second = whole
        return "%s.%03dZ" % (self._prefix, millis)


#: An RFC 3339 UTC timestamp with milliseconds, as events carry in C{ts}:
#: C{timestamp(now)} (the wall clock when C{now} is omitted).
timestamp = _Clock()


def encode_event(path: str, seq: int, ts: str, event: Event) -> bytes:
    """
    The wire (and stored) form of one numbered project event. The envelope
    comes first, which L{kind_of} relies on; a C{claude} event's message
    parsed from a strict JSON line is that line, embedded last.
    """
    message: dict[str, Any] = {"type": "event", "path": path, "seq": seq, "ts": ts, "event": event.kind}
    message.update(event.fields)
    raw = event.raw_message
    if raw is None:
        return encode(message)
    del message["message"]
    head = encode(message)
    return b"".join((head[:-1], b',"message":', raw, b"}"))


@attrs.frozen
class Stored:
    """
    A stored event read back: its number, its time, its path and the event.
    """

    seq: int
    ts: str | None
    path: str | None
    event: Event


def decode(line: bytes) -> Stored | None:
    """
    A stored line read back, or C{None} when it is not an event of ours.
    """
    try:
        message, _ = parse_line(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(message, dict) or message.get("type") != "event":
        return None
    seq, kind = message.pop("seq", None), message.pop("event", None)
    if type(seq) is not int or kind not in KINDS:
        return None
    ts, path = message.pop("ts", None), message.pop("path", None)
    del message["type"]
    return Stored(
        seq=seq,
        ts=ts if isinstance(ts, str) else None,
        path=path if isinstance(path, str) else None,
        event=Event(kind, message),
    )


#: The envelope L{encode_event} writes, up to the kind. Only the head of a
#: line is searched: a CLI message can quote anything further on.
_KIND = re.compile(rb'\{"type":"event","path":"[^"\\]*(?:\\.[^"\\]*)*","seq":\d+,"ts":"[^"]*","event":"([a-z.]+)"')
_HEAD = 8192


def kind_of(line: bytes) -> str | None:
    """
    The kind of a stored event without decoding the whole line (which can
    be many MB): for scans that look for a few kinds among many lines.
    C{None} when the head does not have the envelope's shape; L{decode}
    then tells for sure.
    """
    match = _KIND.match(line, 0, _HEAD)
    if match is None:
        return None
    kind = match.group(1).decode("ascii")
    return kind if kind in KINDS else None


_SEQ = re.compile(rb'\{"type":"event","path":"[^"\\]*(?:\\.[^"\\]*)*","seq":([1-9]\d{0,18}),')


def seq_of(line: bytes) -> int | None:
    """
    The seq of a stored event read from the head of its line, without
    decoding the rest (for scans that only need seqs and sizes); C{None}
    when the head does not have the envelope's shape. Unlike L{decode} it
    does not tell a whole line from a damaged one.
    """
    match = _SEQ.match(line, 0, _HEAD)
    return None if match is None else int(match.group(1))


# -- replies


def reply(request_id: Any, result: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "result", "id": request_id, "ok": True, "result": result}


def error_reply(request_id: Any, code: str, message: str) -> dict[str, Any]:
    return {
        "type": "result",
        "id": request_id,
        "ok": False,
        "error": {"code": code, "message": message},
    }
