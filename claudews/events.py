"""
Shapes shared by every room: wire encoding, replies and events.

Events are encoded once, stored as that exact line in the project's
history and sent as that exact frame to every subscriber, so a replayed
event is byte-for-byte the one that went out live.
"""

import json
import time
from typing import Any

#: Every value of an event's ``event`` field (PROTOCOL.md, "Events").
KINDS = frozenset(
    {
        "prompt.queued",
        "prompt.started",
        "claude",
        "output",
        "prompt.finished",
        "session.reset",
        "permission.request",
        "permission.resolved",
    }
)

#: Values of ``status`` in ``prompt.finished``.
STATUSES = frozenset({"completed", "failed", "cancelled", "timeout", "interrupted"})


def encode(obj: Any) -> bytes:
    """
    JSON-encode C{obj} compactly as UTF-8.

    The CLI's output can carry lone surrogates (JSON allows C{"\\ud800"}),
    which UTF-8 cannot encode; such a value falls back to ASCII escapes so
    the frame is always valid text.
    """
    try:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode(
            "utf-8"
        )
    except UnicodeEncodeError:
        return json.dumps(obj, separators=(",", ":")).encode("ascii")


def timestamp(now: float | None = None) -> str:
    """
    An RFC 3339 UTC timestamp with milliseconds, as events carry in C{ts}.
    """
    if now is None:
        now = time.time()
    whole = int(now)
    millis = int(round((now - whole) * 1000))
    if millis == 1000:
        whole, millis = whole + 1, 0
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + ".%03dZ" % (
        millis,
    )


def event(path: str, seq: int, ts: str, kind: str, fields: dict) -> dict:
    """
    The wire form of one project event.
    """
    message = {"type": "event", "path": path, "seq": seq, "ts": ts, "event": kind}
    message.update(fields)
    return message


def reply(request_id: Any, result: dict) -> dict:
    return {"type": "result", "id": request_id, "ok": True, "result": result}


def error_reply(request_id: Any, code: str, message: str) -> dict:
    return {
        "type": "result",
        "id": request_id,
        "ok": False,
        "error": {"code": code, "message": message},
    }
