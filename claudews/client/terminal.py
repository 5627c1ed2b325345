"""
The interactive parts, for a person at a terminal: a progress line while a
prompt runs, and permission requests asked in place.

Everything runs in the reactor: standard input is read as a reader of the
reactor (never in a thread, never with a blocking C{input()}), so events
keep arriving while a question waits for its answer.
"""

from __future__ import annotations

import os
import signal
from datetime import datetime
from typing import Any, Callable, Optional

from rich.console import Console
from rich.live import Live
from rich.text import Text
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReadDescriptor
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure
from zope.interface import implementer  # type: ignore[import-untyped]

JSON = dict[str, Any]
Respond = Callable[[str, str, Optional[str]], Deferred[JSON]]


@implementer(IReadDescriptor)
class LineReader:
    """
    Lines of a file descriptor (standard input) delivered inside the
    reactor. Only the descriptor it reads is touched: C{StandardIO} would
    make standard output non-blocking too, under rich's feet.
    """

    def __init__(self, reactor: Any, on_line: Callable[[str], None], fd: int = 0) -> None:
        self._reactor = reactor
        self._on_line = on_line
        self._fd = fd
        self._buffer = b""
        self._reading = False

    def start(self) -> None:
        if not self._reading:
            self._reading = True
            self._reactor.addReader(self)

    def stop(self) -> None:
        if self._reading:
            self._reading = False
            self._reactor.removeReader(self)

    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return "stdin"

    def connectionLost(self, reason: Failure) -> None:
        self._reading = False

    def doRead(self) -> None:
        data = os.read(self._fd, 4096)
        if not data:
            self.stop()
            return
        self._buffer += data
        while b"\n" in self._buffer:
            line, _, self._buffer = self._buffer.partition(b"\n")
            self._on_line(line.decode("utf-8", "replace").strip())


def started_at(frame: JSON, now: float) -> float:
    """When an event happened (its C{ts}), as seconds since the epoch."""
    try:
        return datetime.fromisoformat(str(frame.get("ts"))).timestamp()
    except ValueError:
        return now


class Progress:
    """A transient line under the output: elapsed time and turns so far."""

    def __init__(self, reactor: Any, console: Console, turns: Callable[[str], int]) -> None:
        self._reactor = reactor
        self._turns = turns
        self._live = Live(console=console, transient=True, auto_refresh=False)
        self._loop = LoopingCall(self._refresh)
        self._loop.clock = reactor
        self._prompt_id: str | None = None
        self._since = 0.0
        self._paused = False

    def start(self, prompt_id: str, since: float) -> None:
        self._prompt_id, self._since = prompt_id, since
        if not self._paused:
            self._show()

    def _show(self) -> None:
        if self._prompt_id is None or self._loop.running:
            return
        self._live.start()
        self._loop.start(1.0, now=True)

    def _hide(self) -> None:
        if self._loop.running:
            self._loop.stop()
            self._live.stop()

    def _refresh(self) -> None:
        prompt_id = self._prompt_id or ""
        elapsed = max(0, int(self._reactor.seconds() - self._since))
        turns = self._turns(prompt_id)
        line = Text("⠿ running %dm%02ds · %d turn%s so far" % (
            elapsed // 60, elapsed % 60, turns, "" if turns == 1 else "s"), style="dim")
        self._live.update(line, refresh=True)

    def stop(self) -> None:
        """The prompt ended: the line goes away."""
        self._prompt_id = None
        self._hide()

    def pause(self) -> None:
        self._paused = True
        self._hide()

    def resume(self) -> None:
        self._paused = False
        self._show()


class Asker:
    """
    Asks a person at the terminal to allow or deny each permission request,
    one at a time, and sends the answer. A request answered elsewhere (or
    denied by the server's timeout) stops being asked.
    """

    def __init__(
        self,
        reactor: Any,
        console: Console,
        respond: Respond,
        progress: Progress | None,
        fd: int = 0,
    ) -> None:
        self._console = console
        self._respond = respond
        self._progress = progress
        self._reader = LineReader(reactor, self._line, fd)
        self._queue: list[JSON] = []
        self._current: JSON | None = None
        self._wants_message = False

    def ask(self, request: JSON) -> None:
        """Queue a permission request to be asked."""
        if any(r.get("request_id") == request.get("request_id")
               for r in self._queue + ([self._current] if self._current else [])):
            return
        self._queue.append(request)
        self._next()

    def resolved(self, request_id: Any) -> None:
        """A request was answered (here, elsewhere, or by a timeout)."""
        self._queue = [r for r in self._queue if r.get("request_id") != request_id]
        if self._current is not None and self._current.get("request_id") == request_id:
            self._console.print()
            self._done()

    def stop(self) -> None:
        self._queue = []
        if self._current is not None:
            self._console.print()
        self._current = None
        self._reader.stop()

    def _next(self) -> None:
        if self._current is not None or not self._queue:
            return
        self._current = self._queue.pop(0)
        self._wants_message = False
        if self._progress is not None:
            self._progress.pause()
        self._question()
        self._reader.start()

    def _question(self) -> None:
        request = self._current or {}
        text = Text("Allow %s? " % (request.get("tool_name"),), style="bold yellow")
        text.append("[a]llow / [d]eny / deny with [m]essage: ")
        self._console.print(text, end="", markup=False, highlight=False)

    def _line(self, line: str) -> None:
        request = self._current
        if request is None:
            return
        if self._wants_message:
            self._answer(request, "deny", line or None)
            return
        choice = line.lower()
        if choice in ("a", "allow", "y", "yes"):
            self._answer(request, "allow", None)
        elif choice in ("d", "deny", "n", "no"):
            self._answer(request, "deny", None)
        elif choice in ("m", "message"):
            self._wants_message = True
            self._console.print("Message for Claude: ", end="", markup=False)
        else:
            self._question()

    def _answer(self, request: JSON, behavior: str, message: str | None) -> None:
        d = self._respond(str(request.get("request_id")), behavior, message)
        d.addErrback(self._failed)
        self._done()

    def _failed(self, failure: Failure) -> None:
        self._console.print(Text("answer not taken: %s" % (failure.value,), style="red"))

    def _done(self) -> None:
        self._current = None
        self._reader.stop()
        if self._progress is not None:
            self._progress.resume()
        self._next()


class CtrlC:
    """
    Ctrl-C (SIGINT) handled inside the reactor: C{on_press} gets how many
    times it was pressed. The previous handler comes back with L{restore}.
    """

    def __init__(self, reactor: Any, on_press: Callable[[int], None]) -> None:
        self._reactor = reactor
        self._on_press = on_press
        self._presses = 0
        self._previous: Any = None

    def install(self) -> "CtrlC":
        self._previous = signal.signal(signal.SIGINT, self._signalled)
        return self

    def _signalled(self, signum: int, frame: Any) -> None:
        # A signal can arrive in the middle of anything: act from the reactor.
        self._reactor.callFromThread(self._pressed)

    def _pressed(self) -> None:
        self._presses += 1
        self._on_press(self._presses)

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
