"""
Following one project's events: shown as they come (rendered, or as JSON
lines), with a progress line while a prompt runs and permission requests
asked in place on a terminal.

The C{prompt} command follows only its own prompt; C{tail} follows
everything.
"""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from rich.console import Console
from twisted.internet.defer import Deferred

from claudews.client.connection import Connection
from claudews.client.once import Once
from claudews.client.render import Renderer
from claudews.client.terminal import Asker, Progress, started_at

JSON = dict[str, Any]


class View:
    """
    Where a command's output goes: a renderer on a rich console, or (with
    C{--json}) one raw JSON frame per line on standard output.
    """

    def __init__(self, console: Console, renderer: Renderer | None, out: TextIO | None = None) -> None:
        self.console = console
        self.renderer = renderer
        self.out = out if out is not None else sys.stdout

    @property
    def json(self) -> bool:
        return self.renderer is None

    def frame(self, frame: JSON) -> None:
        if self.renderer is None:
            self.out.write(json.dumps(frame, ensure_ascii=False, separators=(",", ":")) + "\n")
            self.out.flush()
        elif frame.get("type") == "event":
            self.renderer.event(frame)
        elif frame.get("type") == "project" and frame.get("change") == "deleted":
            self.renderer.note("the project was deleted", "yellow")

    def note(self, text: str, style: str = "dim") -> None:
        """A line of the client's own; on stderr with C{--json}."""
        if self.renderer is None:
            sys.stderr.write(text + "\n")
        else:
            self.renderer.note(text, style)


class Follower:
    """
    Takes a subscribed project's frames and shows them; fires C{finished}
    with the C{prompt.finished} event of the watched prompt, C{deleted}
    when the project goes away.
    """

    def __init__(
        self, reactor: Any, connection: Connection, path: str, view: View,
        interactive: bool, only_watched: bool,
    ) -> None:
        self.path = path
        self.view = view
        self.finished: Once[JSON] = Once()
        self.deleted: Once[None] = Once()
        self._reactor = reactor
        self._connection = connection
        self._only_watched = only_watched
        self._watched: str | None = None
        self._early: list[JSON] = []
        self._requests: set[str] = set()
        self._ask_after: int | None = None
        self.progress: Progress | None = None
        if view.renderer is not None and view.console.is_terminal:
            self.progress = Progress(reactor, view.console, view.renderer.turns)
        self.asker: Asker | None = None
        if interactive and not view.json:
            self.asker = Asker(reactor, view.console, self._respond, self.progress)

    def _respond(self, request_id: str, behavior: str, message: str | None) -> Deferred[JSON]:
        fields: JSON = {"path": self.path, "request_id": request_id, "behavior": behavior}
        if message:
            fields["message"] = message
        return self._connection.request("permission.respond", **fields)

    def watch(self, prompt_id: str) -> None:
        """Follow this prompt (the C{prompt} command's own)."""
        self._watched = prompt_id
        early, self._early = self._early, []
        for frame in early:
            self.frame(frame)

    def subscribed(self, result: JSON, since: int | None) -> None:
        """Take C{subscribe}'s reply: what runs, what waits for an answer."""
        last = result.get("last_seq")
        self._ask_after = last if isinstance(last, int) else 0
        if self._only_watched:
            return
        running = result.get("running")
        if isinstance(running, str) and self.progress is not None:
            self.progress.start(running, self._reactor.seconds())
        for request in result.get("pending_permissions") or []:
            if isinstance(request, dict):
                if since is None and self.view.renderer is not None:
                    self.view.renderer.permission(request)
                self._ask(request)

    def frame(self, frame: JSON) -> None:
        """One frame of the subscribed project."""
        if frame.get("type") == "project":
            self.view.frame(frame)
            if frame.get("change") == "deleted":
                self.deleted.fire(None)
            return
        if self._only_watched and not self._mine(frame):
            return
        self._before(frame)
        self.view.frame(frame)
        self._after(frame)

    def _mine(self, frame: JSON) -> bool:
        if self._watched is None:
            # The prompt's own events can come before its reply.
            self._early.append(frame)
            return False
        if frame.get("event") == "permission.resolved":
            return frame.get("request_id") in self._requests
        return frame.get("prompt_id") == self._watched

    def _before(self, frame: JSON) -> None:
        kind = frame.get("event")
        if kind == "prompt.finished" and self.progress is not None:
            self.progress.stop()
        elif kind == "permission.resolved" and self.asker is not None:
            self.asker.resolved(frame.get("request_id"))

    def _after(self, frame: JSON) -> None:
        kind = frame.get("event")
        now = self._reactor.seconds()
        if kind == "prompt.started" and self.progress is not None:
            self.progress.start(str(frame.get("prompt_id")), started_at(frame, now))
        elif kind == "permission.request":
            self._requests.add(str(frame.get("request_id")))
            seq = frame.get("seq")
            if self._ask_after is None or not isinstance(seq, int) or seq > self._ask_after:
                self._ask(frame)
        elif kind == "prompt.finished" and frame.get("prompt_id") == self._watched:
            self.finished.fire(frame)

    def _ask(self, request: JSON) -> None:
        if self.asker is not None:
            self.asker.ask(request)
        else:
            self.view.note(
                "answer with: claudews-client allow|deny %s %s"
                % (self.path, request.get("request_id")), "yellow")

    def stop(self) -> None:
        """Leave the terminal as it was: no progress line, no question."""
        if self.asker is not None:
            self.asker.stop()
        if self.progress is not None:
            self.progress.stop()
