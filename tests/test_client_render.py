"""
The terminal client's renderer, on recorded events: the whole exchange
captured from the real CLI in docs/protocol.rst, and a few other shapes.
"""

import io
import json
import os
import re

import pytest
from rich.console import Console

from claudews.client.render import Renderer, summary
from claudews.client.tools import diff_lines, main_argument, result_lines, shorten

HERE = os.path.dirname(os.path.abspath(__file__))
PROTOCOL = os.path.join(os.path.dirname(HERE), "docs", "protocol.rst")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def captured_events():
    """The event frames of docs/protocol.rst's captured exchange, in order."""
    with open(PROTOCOL, encoding="utf-8") as f:
        text = f.read()
    text = text[text.index("\nA whole exchange\n"):]
    events = []
    for block in re.split(r"\n\.\. code:: json\n", text)[1:]:
        lines = []
        for line in block.split("\n")[1:]:
            if line and not line.startswith("    "):
                break
            lines.append(line)
        try:
            frame = json.loads("\n".join(lines))
        except ValueError:
            continue
        if isinstance(frame, dict) and frame.get("type") == "event":
            events.append(frame)
    return events


def render(frames, terminal=False, width=200):
    out = io.StringIO()
    console = Console(file=out, force_terminal=terminal, width=width, soft_wrap=not terminal,
                      color_system="standard" if terminal else None, highlight=False)
    renderer = Renderer(console, markdown=terminal)
    for frame in frames:
        renderer.event(frame)
    return out.getvalue(), renderer


def plain_lines(text):
    return [line.rstrip() for line in ANSI.sub("", text).splitlines() if line.strip()]


def test_the_captured_exchange_is_there():
    """The recorded events exist: prompt to finish, seq 1 to 11."""
    events = captured_events()
    assert [e["seq"] for e in events] == list(range(1, 12))
    assert events[-1]["event"] == "prompt.finished"


def test_captured_exchange_reads_as_a_conversation():
    """Each event of the real exchange becomes a readable line, in order, no JSON."""
    out, renderer = render(captured_events())
    lines = plain_lines(out)
    expected = [
        "› write /home/me/app/hello.txt Hello, world",
        "▸ prompt p-9c793108… started",
        "session 297f8908-03f5-4508-8fef-49627b76cbfe · model claude-opus-5-5",
        "● Write  /home/me/app/hello.txt",
        "+Hello, world",
        "? Permission requested: Write  /home/me/app/hello.txt",
        "✓ permission allowed (by client)",
        "⎿ File created successfully at: /home/me/app/hello.txt",
        'after tool: "File created successfully',
        "✓ completed · 0.2s · $0.0012 · 2 turns",
    ]
    position = 0
    for want in expected:
        found = [i for i, line in enumerate(lines) if want in line and i >= position]
        assert found, (want, lines)
        position = found[0] + 1
    assert not any(line.lstrip().startswith("{") for line in lines), lines
    assert "control_request" not in out
    assert renderer.turns("p-9c7931087b12484686f04a9422f9e610") == 2


def test_permission_request_names_the_request_id():
    """The request id is shown in full, so allow/deny can be typed from it."""
    out, _ = render(captured_events())
    assert "[3c8c7675-07df-4b3e-8707-08511f32ee23]" in out


def test_edit_diff_is_not_repeated_by_its_permission_request():
    """A diff shown with the tool call is not shown again when permission is asked."""
    out, _ = render(captured_events())
    assert [line.strip() for line in plain_lines(out)].count("+Hello, world") == 1


def test_permission_request_alone_shows_its_diff():
    """A client that missed the tool call (joined late) sees the diff in the request."""
    request = [e for e in captured_events() if e["event"] == "permission.request"]
    out, _ = render(request)
    assert "+Hello, world" in [line.strip() for line in plain_lines(out)]


def test_edit_is_a_coloured_diff_on_a_terminal():
    """Edit's old and new strings become red and green lines."""
    frame = assistant_tool("Edit", {"file_path": "/w/a.py", "old_string": "x = 1\ny = 2",
                                    "new_string": "x = 1\ny = 3"})
    out, _ = render([frame], terminal=True)
    assert "\x1b[31m    -y = 2" in out
    assert "\x1b[32m    +y = 3" in out
    assert "● Edit  /w/a.py" in ANSI.sub("", out)


def test_multiedit_shows_every_edit():
    """MultiEdit's edits each contribute to the diff."""
    lines = diff_lines("MultiEdit", {"file_path": "/w/a", "edits": [
        {"old_string": "a", "new_string": "b"}, {"old_string": "c", "new_string": "d"}]})
    assert [line for line in lines if line[:1] in "+-"] == ["-a", "+b", "-c", "+d"]


def test_long_diff_is_cut_with_a_count():
    """A huge Write shows the first lines and says how many more there are."""
    content = "\n".join("line %d" % i for i in range(100))
    out, _ = render([assistant_tool("Write", {"file_path": "/w/big", "content": content})])
    assert "+line 0" in out and "+line 99" not in out
    assert re.search(r"… \d+ more diff lines", out)


@pytest.mark.parametrize("name, tool_input, shown", [
    ("Bash", {"command": "ls -la", "description": "List"}, "ls -la"),
    ("Read", {"file_path": "/w/x.py"}, "/w/x.py"),
    ("Glob", {"pattern": "**/*.py"}, "**/*.py"),
    ("Grep", {"pattern": "def main", "path": "/w"}, "def main in /w"),
    ("WebFetch", {"url": "https://example.org", "prompt": "summarise"}, "https://example.org"),
    ("TodoWrite", {"todos": [{}, {}]}, "2 todos"),
    ("SomethingNew", {"target": "thing"}, "thing"),
])
def test_tool_call_is_one_line_with_its_main_argument(name, tool_input, shown):
    """Each tool call shows its name and what it is about."""
    assert main_argument(name, tool_input) == shown
    out, _ = render([assistant_tool(name, tool_input)])
    assert plain_lines(out) == ["● %s  %s" % (name, shown)]


def test_multiline_command_is_shortened_to_its_first_line():
    """A multi-line command stays one line, marked as cut."""
    assert shorten("echo a\necho b") == "echo a …"
    assert len(shorten("x" * 1000)) == 160


def test_tool_result_is_shortened():
    """A long tool result shows a few lines and how many were left out."""
    text = result_lines("\n".join("row %d" % i for i in range(50)), is_error=False).plain
    assert text.splitlines() == ["  ⎿ row 0", "    row 1", "    row 2", "    … 47 more lines"]


def test_tool_result_blocks_and_errors():
    """Text blocks are joined; an error result is marked red."""
    frame = claude({"type": "user", "message": {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t", "is_error": True,
         "content": [{"type": "text", "text": "permission denied"}]}]}})
    out, _ = render([frame], terminal=True)
    assert "\x1b[31m  ⎿ permission denied" in out


def test_markdown_is_rendered_on_a_terminal_and_plain_when_piped():
    """Assistant Markdown is formatted on a terminal, left as written in a pipe."""
    text = "# Title\n\nSome **bold** text."
    frame = claude({"type": "assistant", "message": {
        "id": "m1", "content": [{"type": "text", "text": text}]}})
    piped, _ = render([frame])
    assert piped == text + "\n"
    terminal, _ = render([frame], terminal=True)
    assert "**" not in terminal and "# Title" not in terminal
    assert "Title" in terminal and "bold" in terminal


def test_model_text_is_never_rich_markup():
    """Square brackets in model output are printed, not interpreted."""
    frame = claude({"type": "assistant", "message": {
        "id": "m1", "content": [{"type": "text", "text": "[bold red]x[/bold red] [link=y]"}]}})
    out, _ = render([frame])
    assert out == "[bold red]x[/bold red] [link=y]\n"


def test_failed_prompt_summary_says_why():
    """The summary line of a failed prompt carries its status and error."""
    line = summary({"status": "failed", "duration_ms": 1500, "cost_usd": 0.01,
                    "num_turns": 1, "error": "API Error: 500 fake failure"}).plain
    assert line == "✗ failed · 1.5s · $0.0100 · 1 turn — API Error: 500 fake failure"


def test_error_result_shows_its_errors():
    """An is_error result's error list is shown (a lost session, for instance)."""
    frame = claude({"type": "result", "is_error": True,
                    "errors": ["No conversation found with session ID: abc"]})
    out, _ = render([frame])
    assert plain_lines(out) == ["No conversation found with session ID: abc"]


def test_quiet_messages_and_unknown_events():
    """Partial stream events are skipped; unknown events get a short line."""
    frames = [claude({"type": "stream_event", "event": {}}),
              {"type": "event", "event": "something.new", "seq": 1},
              {"type": "event", "event": "output", "stream": "stderr", "text": "warn\n"},
              {"type": "event", "event": "session.reset"}]
    out, _ = render(frames)
    assert plain_lines(out) == [
        "event something.new", "[stderr] warn",
        "session reset: the next prompt starts a new conversation"]


def claude(message, prompt_id="p-1"):
    return {"type": "event", "path": "/w", "seq": 1, "event": "claude",
            "prompt_id": prompt_id, "message": message}


def assistant_tool(name, tool_input):
    return claude({"type": "assistant", "message": {"id": "m", "content": [
        {"type": "tool_use", "id": "toolu_1", "name": name, "input": tool_input}]}})
