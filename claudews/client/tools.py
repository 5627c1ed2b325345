"""
Tool calls as people read them: one line with the tool's name and its main
argument, a shortened result, and the edits (Edit, MultiEdit, Write) as a
coloured unified diff.
"""

from __future__ import annotations

import difflib
import json
from typing import Any

from rich.text import Text

#: Tool name to the input field that says what the call is about.
MAIN_ARGUMENT: dict[str, str] = {
    "Bash": "command",
    "BashOutput": "bash_id",
    "KillShell": "shell_id",
    "Read": "file_path",
    "Write": "file_path",
    "Edit": "file_path",
    "MultiEdit": "file_path",
    "NotebookEdit": "notebook_path",
    "NotebookRead": "notebook_path",
    "Glob": "pattern",
    "Grep": "pattern",
    "LS": "path",
    "WebFetch": "url",
    "WebSearch": "query",
    "Task": "description",
    "Agent": "description",
    "Skill": "skill",
}
EDIT_TOOLS = frozenset({"Edit", "MultiEdit", "Write"})

LINE_WIDTH = 160
RESULT_LINES = 3
DIFF_LINES = 40


def shorten(text: str, width: int = LINE_WIDTH) -> str:
    """The first line of C{text}, at most C{width} characters."""
    first, _, rest = text.strip().partition("\n")
    if len(first) > width:
        return first[: width - 1] + "…"
    return first + (" …" if rest.strip() else "")


def main_argument(name: str, tool_input: Any) -> str:
    """What a tool call is about: the command, the path, the pattern..."""
    if not isinstance(tool_input, dict):
        return ""
    key = MAIN_ARGUMENT.get(name)
    value = tool_input.get(key) if key else None
    if name == "Grep" and isinstance(tool_input.get("path"), str):
        return "%s in %s" % (tool_input.get("pattern"), tool_input["path"])
    if name == "TodoWrite" and isinstance(tool_input.get("todos"), list):
        return "%d todos" % len(tool_input["todos"])
    if value is None:
        value = next((v for v in tool_input.values() if isinstance(v, str)), None)
    if value is None:
        value = json.dumps(tool_input, ensure_ascii=False) if tool_input else ""
    return shorten(str(value))


def tool_line(name: str, tool_input: Any, bullet: str = "● ") -> Text:
    """One line for a tool call: C{● Bash  ls -la}."""
    line = Text(bullet, style="cyan")
    line.append(name, style="bold cyan")
    argument = main_argument(name, tool_input)
    if argument:
        line.append("  " + argument)
    return line


def result_text(content: Any) -> str:
    """The text of a C{tool_result}'s content (a string or text blocks)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            block.get("text", "")
            for block in content
            if isinstance(block, dict) and block.get("type") == "text"
        ]
        return "\n".join(p for p in parts if isinstance(p, str))
    return "" if content is None else json.dumps(content, ensure_ascii=False)


def result_lines(content: Any, is_error: bool) -> Text:
    """A tool's result, shortened to a few lines under its call."""
    lines = [line for line in result_text(content).splitlines() if line.strip()]
    shown = [shorten(line) for line in lines[:RESULT_LINES]] or ["(no output)"]
    out = Text()
    style = "red" if is_error else "dim"
    for index, line in enumerate(shown):
        prefix = "  ⎿ " if index == 0 else "    "
        out.append(prefix + line + "\n", style=style)
    if len(lines) > RESULT_LINES:
        out.append("    … %d more lines\n" % (len(lines) - RESULT_LINES), style="dim")
    out.rstrip()
    return out


def edit_pairs(name: str, tool_input: dict[str, Any]) -> list[tuple[str, str]]:
    """The (old, new) texts an edit tool replaces."""
    if name == "Write":
        return [("", str(tool_input.get("content", "")))]
    if name == "Edit":
        return [(str(tool_input.get("old_string", "")), str(tool_input.get("new_string", "")))]
    edits = tool_input.get("edits")
    return [
        (str(e.get("old_string", "")), str(e.get("new_string", "")))
        for e in (edits if isinstance(edits, list) else [])
        if isinstance(e, dict)
    ]


def diff_lines(name: str, tool_input: Any) -> list[str]:
    """The unified diff of an edit, without file headers."""
    if name not in EDIT_TOOLS or not isinstance(tool_input, dict):
        return []
    lines: list[str] = []
    for old, new in edit_pairs(name, tool_input):
        diff = difflib.unified_diff(
            old.splitlines(), new.splitlines(), lineterm="", n=2
        )
        lines.extend(line for line in diff if not line.startswith(("---", "+++")))
    return lines


def diff_text(name: str, tool_input: Any, limit: int = DIFF_LINES) -> Text:
    """An edit as a coloured diff: removed lines red, added lines green."""
    lines = diff_lines(name, tool_input)
    out = Text()
    for line in lines[:limit]:
        style = {"+": "green", "-": "red", "@": "cyan"}.get(line[:1], "dim")
        out.append("    " + line + "\n", style=style)
    if len(lines) > limit:
        out.append("    … %d more diff lines\n" % (len(lines) - limit), style="dim")
    out.rstrip()
    return out
