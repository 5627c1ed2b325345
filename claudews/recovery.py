"""
What a server that died left behind, read back from its files.

A server that died leaves metadata that may be behind its history (or
none at all, or a damaged one): at start, the newest events of such a
project's history settle which prompts are still open (L{scan_tail}),
and rebuild what the metadata lost (L{rebuild}); the processes it left
running are found by the marker prefix of its data directory
(L{left_running}). Everything here reads and returns plain data: the
registry decides what to log and the project settles the rest.
"""

import calendar
import json
import time
from typing import Any, Iterable

import attrs

from claudews import proctree
from claudews.events import timestamp
from claudews.history import History
from claudews.project import lost_session, marker_prefix

#: After the point where the history settles every earlier prompt, at most
#: this many more lines are read looking for prompts the metadata names.
SCAN_BEYOND = 10000


@attrs.define
class Tail:
    """
    What the newest events of a history tell about the state they leave.

    @ivar session_id: the conversation the project was in, if C{session_known}.
    @ivar open_prompts: prompts queued or started whose C{prompt.finished}
        is not stored, oldest first.
    @ivar finished: the prompts whose C{prompt.finished} was seen.
    """

    session_id: str | None = None
    session_known: bool = False
    open_prompts: list[str] = attrs.Factory(list)
    finished: set[str] = attrs.Factory(set)


@attrs.frozen
class Settled:
    """
    Metadata of a server that died, brought up to date with its history.

    @ivar meta: the metadata to load the project with.
    @ivar done: prompts open in the old metadata whose finish is stored.
    @ivar missed: prompts open in the history that the old metadata missed.
    """

    meta: dict
    done: list[str]
    missed: list[str]


_KINDS = (b'"event":"prompt.', b'"event":"session.reset"')


def _session_of(event: dict) -> tuple[bool, str | None]:
    """
    Whether C{event} says which conversation the project was in, and which.
    """
    kind = event.get("event")
    if kind == "session.reset":
        return True, None
    if kind in ("prompt.started", "prompt.finished"):
        # Both carry the project's session at that moment.
        session = event.get("session_id")
        return True, session if isinstance(session, str) and session else None
    message = event.get("message")
    if kind != "claude" or not isinstance(message, dict):
        return False, None
    session = message.get("session_id")
    if not isinstance(session, str) or not session:
        return False, None
    if message.get("type") == "system" and message.get("subtype") == "init":
        return True, session
    if message.get("type") == "result" and not lost_session(message):
        return True, session
    return False, None


def scan_tail(history: History, wanted: Iterable[str] = ()) -> Tail:
    """
    Read C{history} backwards as far as it takes to know its open prompts
    and its session, with one line in memory at a time.

    Prompts run in the order they were queued, one at a time, so every
    prompt queued before the newest started one has finished before it
    started: the scan stops at the C{prompt.queued} of the newest started
    prompt, or, while some of the C{wanted} prompts (the metadata's open
    ones) are neither seen queued nor finished, L{SCAN_BEYOND} lines later.
    A history without any started prompt is read to its start.
    """
    tail = Tail()
    unresolved = set(wanted)
    order: dict[str, int] = {}
    newest_started: str | None = None
    settled = False
    beyond = 0
    for line in history.lines_backwards():
        if settled:
            beyond += 1
            if not unresolved or beyond > SCAN_BEYOND:
                break
        # The envelope comes first: its kind is near the start of the line.
        head = line[:8192]
        relevant = any(k in head for k in _KINDS) or (
            not tail.session_known and b'"event":"claude"' in head and b'"session_id"' in line
        )
        if not relevant:
            continue
        try:
            event = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if not isinstance(event, dict) or type(event.get("seq")) is not int:
            continue
        if not tail.session_known:
            tail.session_known, tail.session_id = _session_of(event)
        kind, prompt_id = event.get("event"), event.get("prompt_id")
        if not isinstance(prompt_id, str):
            continue
        if kind == "prompt.finished":
            tail.finished.add(prompt_id)
            unresolved.discard(prompt_id)
        elif kind in ("prompt.queued", "prompt.started"):
            unresolved.discard(prompt_id)
            if prompt_id not in tail.finished:
                # The queued event, the older, gives the queue order.
                order[prompt_id] = event["seq"]
            if kind == "prompt.started" and newest_started is None:
                newest_started = prompt_id
            elif kind == "prompt.queued" and prompt_id == newest_started:
                settled = True
    tail.open_prompts = sorted(order, key=order.__getitem__)
    return tail


def left_running(directory: str) -> list[str]:
    """
    The markers of processes that a server which kept its data in
    C{directory} started and left running.
    """
    markers = {proctree.marker_of(p) for p in proctree.find_marked(prefix=marker_prefix(directory))}
    return sorted(m for m in markers if m)


def _millis(ts: Any) -> int | None:
    """
    An event's C{ts} ("2026-11-26T10:27:06.106Z") in ms since the epoch.
    """
    try:
        whole = calendar.timegm(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S"))
        return whole * 1000 + int(ts[20:23])
    except (TypeError, ValueError):
        return None


def settle(directory: str, history: History, meta: dict) -> Settled:
    """
    The server that wrote C{meta} died: its metadata may be behind its
    history. A prompt open in it whose C{prompt.finished} is stored is
    not open; one open in the history that it missed is. The processes
    it left running are added to its markers.
    """
    listed = [p for p in meta.get("open_prompts") or () if isinstance(p, str)]
    tail = scan_tail(history, listed)
    done = [p for p in listed if p in tail.finished]
    missed = [p for p in tail.open_prompts if p not in listed]
    markers = list(meta.get("markers") or ())
    markers += [m for m in left_running(directory) if m not in markers]
    return Settled(
        meta=dict(
            meta,
            open_prompts=[p for p in listed if p not in done] + missed,
            markers=markers,
        ),
        done=done,
        missed=missed,
    )


def rebuild(directory: str, history: History) -> dict | None:
    """
    Metadata lost or damaged: rebuild it from the history, or C{None} when
    the history has no usable event.

    The path comes from the newest event; C{created_at} and the epoch
    from the oldest stored one (its time in ms: stable, and unlike any
    epoch an earlier history of the path had, so clients replay this
    history from its start, which costs a replay and loses nothing);
    the session and the open prompts from the newest events
    (L{scan_tail}); the processes to end from their markers.
    """
    lines, _ = history.page(None, 1)
    reader = history.read_since(0)
    first = next(reader, None)
    reader.close()
    if not lines or first is None:
        return None
    try:
        newest, oldest = json.loads(lines[-1]), json.loads(first[1])
    except ValueError:
        return None
    path = newest.get("path")
    if not isinstance(path, str):
        return None
    tail = scan_tail(history)
    epoch = _millis(oldest.get("ts")) or int(time.time() * 1000)
    return {
        "path": path,
        "created_at": oldest.get("ts") or timestamp(),
        "epoch": epoch,
        "session_id": tail.session_id,
        "open_prompts": tail.open_prompts,
        "markers": left_running(directory),
    }
