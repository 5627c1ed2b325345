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
import time
from typing import Any, Iterable

import attrs

from claudews import events, proctree
from claudews.events import Event, Stored, timestamp
from claudews.interfaces import EventStore
from claudews.clisession import lost_session, marker_prefix

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

    meta: dict[str, Any]
    done: list[str]
    missed: list[str]


#: The kinds that settle which prompts are open; and those that carry
#: the session the project was in.
_PROMPT_KINDS = frozenset({events.PROMPT_QUEUED, events.PROMPT_STARTED, events.PROMPT_FINISHED})
_CARRY_SESSION = frozenset({events.PROMPT_STARTED, events.PROMPT_FINISHED})


def _session_of(event: Event) -> tuple[bool, str | None]:
    """
    Whether C{event} says which conversation the project was in, and which.
    """
    if event.kind == events.SESSION_RESET:
        return True, None
    if event.kind in _CARRY_SESSION:
        # Both carry the project's session at that moment.
        session = event.fields.get("session_id")
        return True, session if isinstance(session, str) and session else None
    message = event.fields.get("message")
    if event.kind != events.CLAUDE or not isinstance(message, dict):
        return False, None
    session = message.get("session_id")
    if not isinstance(session, str) or not session:
        return False, None
    if message.get("type") == "system" and message.get("subtype") == "init":
        return True, session
    if message.get("type") == "result" and not lost_session(message):
        return True, session
    return False, None


def _decode_if(line: bytes, kinds: frozenset[str]) -> Stored | None:
    """
    C{line} decoded when it is an event of one of C{kinds}: most lines are
    told apart by their head alone, without decoding a line of many MB.
    """
    kind = events.kind_of(line)
    if kind is not None and kind not in kinds:
        return None
    # None: the head is not shaped as the encoder writes it; decode tells.
    stored = events.decode(line)
    if stored is None or stored.event.kind not in kinds:
        return None
    return stored


@attrs.define
class _Scan:
    """
    What a backwards scan has learnt so far; see L{scan_tail}.

    @ivar unresolved: prompts the caller asked about, neither seen queued
        nor finished yet.
    @ivar order: the open prompts, by the seq that gives their queue order.
    @ivar settled: every older prompt is known to have finished.
    """

    unresolved: set[str]
    tail: Tail = attrs.Factory(Tail)
    order: dict[str, int] = attrs.Factory(dict)
    newest_started: str | None = None
    settled: bool = False

    def kinds(self) -> frozenset[str]:
        """The kinds of event that can still tell something."""
        if self.tail.session_known:
            return _PROMPT_KINDS | {events.SESSION_RESET}
        return _PROMPT_KINDS | {events.SESSION_RESET, events.CLAUDE}

    def read(self, stored: Stored) -> None:
        """Learn what one event, older than all read so far, tells."""
        event = stored.event
        if not self.tail.session_known:
            self.tail.session_known, self.tail.session_id = _session_of(event)
        prompt_id = event.prompt_id
        if prompt_id is None:
            return
        if event.kind == events.PROMPT_FINISHED:
            self.tail.finished.add(prompt_id)
            self.unresolved.discard(prompt_id)
        elif event.kind in (events.PROMPT_QUEUED, events.PROMPT_STARTED):
            self._queued_or_started(event.kind, prompt_id, stored.seq)

    def _queued_or_started(self, kind: str, prompt_id: str, seq: int) -> None:
        self.unresolved.discard(prompt_id)
        if prompt_id not in self.tail.finished:
            # The queued event, the older, gives the queue order.
            self.order[prompt_id] = seq
        if kind == events.PROMPT_STARTED and self.newest_started is None:
            self.newest_started = prompt_id
        elif kind == events.PROMPT_QUEUED and prompt_id == self.newest_started:
            self.settled = True

    def result(self) -> Tail:
        self.tail.open_prompts = sorted(self.order, key=self.order.__getitem__)
        return self.tail


def scan_tail(history: EventStore, wanted: Iterable[str] = ()) -> Tail:
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
    scan = _Scan(set(wanted))
    beyond = 0
    for line in history.lines_backwards():
        if scan.settled:
            beyond += 1
            if not scan.unresolved or beyond > SCAN_BEYOND:
                break
        stored = _decode_if(line, scan.kinds())
        if stored is not None:
            scan.read(stored)
    return scan.result()


def left_running(directory: str) -> list[str]:
    """
    The markers of processes that a server which kept its data in
    C{directory} started and left running.
    """
    markers = {proctree.marker_of(p) for p in proctree.find_marked(prefix=marker_prefix(directory))}
    return sorted(m for m in markers if m)


def millis(ts: str | None) -> int | None:
    """
    An event's C{ts} ("2026-11-26T10:27:06.106Z") in ms since the epoch;
    C{None} when it is not a time as L{timestamp} writes it.
    """
    if ts is None:
        return None
    try:
        whole = calendar.timegm(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S"))
        return whole * 1000 + int(ts[20:23])
    except ValueError:
        return None


def settle(directory: str, history: EventStore, meta: dict[str, Any]) -> Settled:
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


def rebuild(directory: str, history: EventStore) -> dict[str, Any] | None:
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
    newest, oldest = _newest_and_oldest(history)
    if newest is None or oldest is None or newest.path is None:
        return None
    tail = scan_tail(history)
    return {
        "path": newest.path,
        "created_at": oldest.ts or timestamp(),
        "epoch": millis(oldest.ts) or int(time.time() * 1000),
        "session_id": tail.session_id,
        "open_prompts": tail.open_prompts,
        "markers": left_running(directory),
    }


def _newest_and_oldest(history: EventStore) -> tuple[Stored | None, Stored | None]:
    """
    The newest and the oldest stored events, read back.
    """
    lines, _ = history.page(None, 1)
    reader = history.read_since(0)
    first = next(reader, None)
    close = getattr(reader, "close", None)
    if close is not None:
        close()
    if not lines or first is None:
        return None, None
    return events.decode(lines[-1]), events.decode(first[1])
