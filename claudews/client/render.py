"""
Events as a person reads them, on a rich console.

Assistant text is Markdown on a terminal and plain text when piped; each
tool call is one line with its shortened result under it; edits are
diffs; permission requests stand out; C{prompt.finished} becomes the
summary line. Model and tool text only ever reaches the console as
L{Text} (never as rich markup).
"""

from __future__ import annotations

from typing import Any, Callable

from rich.console import Console, RenderableType
from rich.markdown import Markdown
from rich.text import Text

from claudews.client.tools import EDIT_TOOLS, diff_text, result_lines, shorten, tool_line

JSON = dict[str, Any]


def short_id(identifier: Any) -> str:
    """A prompt or request id shortened for display."""
    text = str(identifier)
    return text[:10] + "…" if len(text) > 12 else text


def summary(frame: JSON) -> Text:
    """The one summary line of a finished prompt."""
    status = str(frame.get("status"))
    ok = status == "completed"
    line = Text("✓ " if ok else "✗ ", style="bold green" if ok else "bold red")
    line.append(status, style="bold green" if ok else "bold red")
    parts = []
    if isinstance(frame.get("duration_ms"), (int, float)):
        parts.append("%.1fs" % (frame["duration_ms"] / 1000.0))
    if isinstance(frame.get("cost_usd"), (int, float)):
        parts.append("$%.4f" % frame["cost_usd"])
    if isinstance(frame.get("num_turns"), int):
        turns = frame["num_turns"]
        parts.append("%d turn%s" % (turns, "" if turns == 1 else "s"))
    if parts:
        line.append(" · " + " · ".join(parts))
    if frame.get("error"):
        line.append(" — " + shorten(str(frame["error"])), style="red")
    return line


class Renderer:
    """
    Turns event frames into output on C{console}.

    @ivar echo_prompts: show each queued prompt's text (off for the
        C{prompt} command, whose user just typed it).
    """

    def __init__(self, console: Console, markdown: bool, echo_prompts: bool = True) -> None:
        self.console = console
        self.markdown = markdown
        self.echo_prompts = echo_prompts
        self._tools: dict[str, str] = {}
        self._diffs_shown: set[str] = set()
        self._messages: dict[str, set[str]] = {}

    def turns(self, prompt_id: str) -> int:
        """How many assistant messages the prompt has produced so far."""
        return len(self._messages.get(prompt_id, ()))

    def print(self, renderable: RenderableType) -> None:
        self.console.print(renderable, markup=False, highlight=False)

    def note(self, text: str, style: str = "dim") -> None:
        """A line of the client's own (not from the server)."""
        self.print(Text(text, style=style))

    def event(self, frame: JSON) -> None:
        """Render one C{event} frame."""
        kind = str(frame.get("event"))
        handler: Callable[[JSON], None] | None = getattr(
            self, "_on_" + kind.replace(".", "_"), None
        )
        if handler is None:
            self.note("event %s" % (kind,))
        else:
            handler(frame)

    def _on_prompt_queued(self, frame: JSON) -> None:
        position = frame.get("position")
        where = " (queued, %s ahead)" % (position,) if position else ""
        if self.echo_prompts:
            line = Text("› ", style="bold magenta")
            line.append(shorten(str(frame.get("prompt", "")), 400), style="bold")
            line.append("  %s%s" % (short_id(frame.get("prompt_id")), where), style="dim")
            self.print(line)
        elif where:
            self.note("prompt %s%s" % (frame.get("prompt_id"), where))

    def _on_prompt_started(self, frame: JSON) -> None:
        self.note("▸ prompt %s started" % (short_id(frame.get("prompt_id")),))

    def _on_prompt_finished(self, frame: JSON) -> None:
        self.print(summary(frame))

    def _on_session_reset(self, frame: JSON) -> None:
        self.note("session reset: the next prompt starts a new conversation", "yellow")

    def _on_output(self, frame: JSON) -> None:
        self.note("[%s] %s" % (frame.get("stream"), shorten(str(frame.get("text", "")))))

    def _on_permission_request(self, frame: JSON) -> None:
        self.permission(frame)

    def _on_permission_resolved(self, frame: JSON) -> None:
        allowed = frame.get("behavior") == "allow"
        self.print(Text(
            "%s permission %s (by %s)" % (
                "✓" if allowed else "✗", "allowed" if allowed else "denied", frame.get("by")),
            style="green" if allowed else "red",
        ))

    def permission(self, request: JSON) -> None:
        """A permission request: what the tool wants to do, and its id."""
        name = str(request.get("tool_name"))
        line = Text("? ", style="bold yellow")
        line.append("Permission requested: ", style="bold yellow")
        line.append_text(tool_line(name, request.get("input"), bullet=""))
        line.append("  [%s]" % (request.get("request_id"),), style="dim")
        self.print(line)
        tool_use_id = request.get("tool_use_id")
        if name in EDIT_TOOLS and tool_use_id not in self._diffs_shown:
            self.print(diff_text(name, request.get("input")))

    def _on_claude(self, frame: JSON) -> None:
        message = frame.get("message")
        if not isinstance(message, dict):
            return
        kind = str(message.get("type"))
        handler: Callable[[JSON, JSON], None] | None = getattr(self, "_claude_" + kind, None)
        if handler is not None:
            handler(frame, message)
        elif kind not in ("stream_event", "control_request", "control_response",
                          "control_cancel_request"):
            self.note("claude: %s" % (kind,))

    def _claude_system(self, frame: JSON, message: JSON) -> None:
        if message.get("subtype") != "init":
            self.note("system: %s" % (message.get("subtype"),))
            return
        self.note("session %s · model %s" % (message.get("session_id"), message.get("model")))

    def _claude_assistant(self, frame: JSON, message: JSON) -> None:
        body = message.get("message")
        if not isinstance(body, dict):
            return
        prompt_id = str(frame.get("prompt_id"))
        self._messages.setdefault(prompt_id, set()).add(str(body.get("id")))
        content = body.get("content")
        for block in content if isinstance(content, list) else []:
            if isinstance(block, dict):
                self._assistant_block(block)

    def _assistant_block(self, block: JSON) -> None:
        kind = block.get("type")
        if kind == "text":
            self.text(str(block.get("text", "")))
        elif kind == "thinking":
            self.note("✻ " + shorten(str(block.get("thinking", ""))), "dim italic")
        elif kind == "tool_use":
            name = str(block.get("name"))
            self._tools[str(block.get("id"))] = name
            self.print(tool_line(name, block.get("input")))
            if name in EDIT_TOOLS:
                self._diffs_shown.add(str(block.get("id")))
                self.print(diff_text(name, block.get("input")))

    def text(self, text: str) -> None:
        """Assistant text: Markdown on a terminal, as it is when piped."""
        if not text.strip():
            return
        self.print(Markdown(text) if self.markdown else Text(text))

    def _claude_user(self, frame: JSON, message: JSON) -> None:
        body = message.get("message")
        content = body.get("content") if isinstance(body, dict) else None
        for block in content if isinstance(content, list) else []:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                self.print(result_lines(block.get("content"), bool(block.get("is_error"))))

    def _claude_result(self, frame: JSON, message: JSON) -> None:
        if not message.get("is_error"):
            return
        errors = message.get("errors")
        for error in errors if isinstance(errors, list) else []:
            self.note(shorten(str(error)), "red")
