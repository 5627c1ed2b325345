"""
What the CLI's messages say about its conversation and about how a prompt
ended: pure functions over the CLI's JSON, shared by the prompt's
lifecycle, the project and crash recovery.
"""

import hashlib
import re
from typing import Any, Mapping

import attrs

from claudews.events import COMPLETED, FAILED

#: What the CLI says when --resume names a conversation it does not have.
RESUME_FAILED = "No conversation found"

_SESSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


def valid_session(value: object) -> bool:
    """
    Whether C{value} can be a session id: it becomes an argument of
    C{--resume}, so it must never look like an option or hold anything
    but the characters of the CLI's UUIDs.
    """
    return isinstance(value, str) and _SESSION.fullmatch(value) is not None


def lost_session(result: Mapping[str, Any]) -> bool:
    """
    Whether a C{result} says the conversation to resume does not exist.
    """
    texts = [result.get("result")] + list(result.get("errors") or ())
    return any(isinstance(t, str) and RESUME_FAILED in t for t in texts)


def session_named(message: Mapping[str, Any]) -> str | None:
    """
    The conversation a CLI message says the process is in: its
    C{system/init} and its C{result}s name it (a result that says the
    conversation was not found names the lost one, which does not count).
    """
    kind = message.get("type")
    session = message.get("session_id")
    if kind == "system" and message.get("subtype") != "init":
        return None
    if kind not in ("system", "result") or not valid_session(session):
        return None
    if kind == "result" and lost_session(message):
        return None
    return session if isinstance(session, str) else None


def marker_prefix(directory: str) -> str:
    """
    What the process markers of the project stored in C{directory} start
    with: derived from that directory, so a successor finds what a dead
    server left running even when the metadata listing the markers is lost.
    """
    digest = hashlib.sha256(directory.encode("utf-8", "surrogateescape"))
    return "cw%s-" % (digest.hexdigest()[:16],)


@attrs.frozen
class Outcome:
    """
    How a prompt ended, as far as the CLI's C{result} tells.

    @ivar resume_failed: the error is the CLI's "no conversation found".
    """

    status: str
    error: str | None = None
    cost_total: float | None = None
    duration_ms: int | None = None
    num_turns: int | None = None
    resume_failed: bool = False


def outcome(result: Mapping[str, Any]) -> Outcome:
    """
    Read a C{result} message: completed or failed, why, and its figures.
    """
    total = result.get("total_cost_usd")
    figures: dict[str, Any] = {
        "cost_total": float(total) if isinstance(total, (int, float)) else None,
        "duration_ms": result.get("duration_ms"),
        "num_turns": result.get("num_turns"),
    }
    if not result.get("is_error") and result.get("subtype") == "success":
        return Outcome(COMPLETED, **figures)
    text = result.get("result")
    error = text if isinstance(text, str) and text else None
    if error is None:
        errors = result.get("errors")
        error = "; ".join(map(str, errors)) if errors else result.get("subtype")
    error = str(error)
    return Outcome(FAILED, error, resume_failed=RESUME_FAILED in error, **figures)


def exit_error(exit_code: int | None, signal: int | None, stderr_tail: str) -> str:
    """
    Why a prompt failed when its CLI exited before finishing it.
    """
    how = "signal %s" % (signal,) if signal else "code %s" % (exit_code,)
    error = "the CLI exited with %s before finishing the prompt" % (how,)
    if stderr_tail:
        error += ": " + stderr_tail.splitlines()[-1][:500]
    return error
