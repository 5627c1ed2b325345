"""
The main path end to end: a real twistd process, the fake CLI, and a
real WebSocket client.
"""

import os

import psutil
import pytest
import websocket

from tests.harness import Closed, alive, is_tool_use, read_pids
from tests.harness import submit as prompt

pytestmark = pytest.mark.integration


@pytest.fixture
def server(make_server):
    return make_server("--timeout", "20", "--permission-timeout", "20")


def test_second_prompt_resumes_the_first_conversation(server):
    """Two prompts in one project continue one conversation."""
    c = server.connect()
    path = server.project_dir("app")
    project = c.ok("project.create", path=path)["project"]
    assert project["path"] == path and project["status"] == "idle"
    c.ok("subscribe", path=path)
    first = prompt(c, path, "hello")
    done = c.finished(first)
    assert done["status"] == "completed", done
    session = done["session_id"]
    assert session
    second = prompt(c, path, "again")
    done = c.finished(second)
    assert done["status"] == "completed"
    assert done["session_id"] == session
    results = [
        e["message"]["result"]
        for e in c.of(second, "claude")
        if e["message"]["type"] == "result"
    ]
    assert results == ["turn 2: again"]
    assert c.ok("project.get", path=path)["project"]["session_id"] == session


def test_prompts_of_a_project_run_in_order_and_projects_side_by_side(server):
    """One project's prompts queue; another project runs meanwhile."""
    c = server.connect()
    a, b = server.project_dir("a"), server.project_dir("b")
    for path in (a, b):
        c.ok("project.create", path=path)
        c.ok("subscribe", path=path)
    slow = c.ok("prompt", path=a, prompt="slow:3")
    queued = c.ok("prompt", path=a, prompt="next")
    assert (slow["position"], queued["position"]) == (0, 1)
    other = prompt(c, b, "quick")
    assert c.finished(other)["status"] == "completed"
    # b finished while a's first prompt still runs and its second waits.
    assert not c.of(slow["prompt_id"], "prompt.finished")
    assert not c.of(queued["prompt_id"], "prompt.started")
    c.finished(queued["prompt_id"])
    order = [
        (e["event"], e["prompt_id"])
        for e in c.events
        if e.get("path") == a and e["event"] in ("prompt.started", "prompt.finished")
    ]
    assert order == [
        ("prompt.started", slow["prompt_id"]),
        ("prompt.finished", slow["prompt_id"]),
        ("prompt.started", queued["prompt_id"]),
        ("prompt.finished", queued["prompt_id"]),
    ]


def test_cancel_stops_a_running_tool_and_leaves_no_process(tool_server):
    """Cancel during a long tool command ends the command too."""
    server, c, path, pidfile = tool_server
    pid = prompt(c, path, "tool-sleep:600")
    c.wait_event(is_tool_use)
    assert c.ok("cancel", path=path) == {"cancelled": [pid]}
    assert c.finished(pid)["status"] == "cancelled"
    tools = read_pids(pidfile)
    assert tools
    gone, living = psutil.wait_procs(
        [psutil.Process(p) for p in alive(tools)], timeout=15
    )
    assert not living
    # The conversation goes on in the same project.
    assert c.finished(prompt(c, path, "after"))["status"] == "completed"


def test_late_subscriber_answers_a_permission_request(server):
    """A client that subscribes after the request was made can answer it."""
    first = server.connect()
    path = server.project_dir("app")
    first.ok("project.create", path=path)
    first.ok("subscribe", path=path)
    pid = prompt(first, path, "permission:Write")
    request = first.wait_event(lambda m: m.get("event") == "permission.request")
    assert request["tool_name"] == "Write"

    late = server.connect()
    state = late.ok("subscribe", path=path)
    assert [p["request_id"] for p in state["pending_permissions"]] == [request["request_id"]]
    late.ok(
        "permission.respond",
        path=path,
        request_id=request["request_id"],
        behavior="allow",
    )
    assert first.finished(pid)["status"] == "completed"
    resolved = first.wait_event(lambda m: m.get("event") == "permission.resolved")
    assert (resolved["behavior"], resolved["by"]) == ("allow", "client")
    with open(os.path.join(path, "out.txt")) as f:
        assert f.read() == "hello"
    again = late.request(
        "permission.respond", path=path, request_id=request["request_id"], behavior="deny"
    )
    assert again["error"]["code"] == "not_found"


def test_restart_replays_the_whole_history_and_continues_the_session(server):
    """After a restart, since=0 replays every event and the session goes on."""
    c = server.connect()
    path = server.project_dir("app")
    c.ok("project.create", path=path)
    c.ok("subscribe", path=path)
    first = c.finished(prompt(c, path, "hello"))
    c.close()
    server.stop_cleanly()
    server.start()

    c = server.connect()
    state = c.ok("subscribe", path=path, since=0)
    assert state["first_seq"] == 1
    last = state["last_seq"]
    c.wait_event(lambda m: m.get("seq") == last)
    seqs = [e["seq"] for e in c.events if e.get("type") == "event"]
    assert seqs == list(range(1, last + 1))
    second = c.finished(prompt(c, path, "again"))
    assert second["session_id"] == first["session_id"]
    text = [
        e["message"]["result"]
        for e in c.events
        if e.get("event") == "claude" and e["message"].get("type") == "result"
    ]
    assert text[-1] == "turn 2: again"


def test_since_replays_exactly_what_was_missed(server):
    """A client that reconnects with since gets exactly the missed events."""
    c = server.connect()
    path = server.project_dir("app")
    c.ok("project.create", path=path)
    c.ok("subscribe", path=path)
    c.finished(prompt(c, path, "one"))
    seen = max(e["seq"] for e in c.events if e.get("type") == "event")
    c.close()

    other = server.connect()
    other.ok("subscribe", path=path)
    other.finished(prompt(other, path, "two"))
    last = max(e["seq"] for e in other.events if e.get("type") == "event")

    back = server.connect()
    back.ok("subscribe", path=path, since=seen)
    back.wait_event(lambda m: m.get("seq") == last)
    assert [e["seq"] for e in back.events] == list(range(seen + 1, last + 1))


def test_shutdown_interrupts_running_and_queued_prompts(tool_server):
    """SIGTERM records interrupted prompts and leaves no CLI behind."""
    server, c, path, pidfile = tool_server
    running = prompt(c, path, "tool-sleep:600")
    queued = prompt(c, path, "later")
    c.wait_event(lambda m: m.get("event") == "prompt.started")
    c.wait_event(is_tool_use)
    clis = [p.pid for p in psutil.Process(server.process.pid).children(recursive=True)]
    server.stop_cleanly()
    statuses = {}
    closed = None
    try:
        while True:
            m = c.receive(5)
            if m.get("event") == "prompt.finished":
                statuses[m["prompt_id"]] = m["status"]
    except Closed as e:
        closed = e
    except (websocket.WebSocketException, OSError):
        pass
    assert statuses == {running: "interrupted", queued: "interrupted"}
    # The connection was closed with 1001, going away.
    assert closed is not None and closed.code == 1001
    assert alive(clis + read_pids(pidfile)) == []

    server.start()
    c = server.connect()
    last = c.ok("subscribe", path=path, since=0)["last_seq"]
    c.wait_event(lambda m: m.get("seq") == last)
    finished = [e for e in c.events if e.get("event") == "prompt.finished"]
    assert sorted(e["prompt_id"] for e in finished) == sorted([running, queued])


def test_a_prompt_without_a_cli_to_run_says_how_to_install_it(make_server, tmp_path):
    """The CLI cannot be started: the prompt fails saying how to install it; the server serves on."""
    server = make_server(claude_bin=str(tmp_path / "no-such" / "claude"))
    c = server.connect()
    path = server.project_dir("app")
    c.ok("project.create", path=path)
    c.ok("subscribe", path=path)
    done = c.finished(prompt(c, path, "hello"))
    assert done["status"] == "failed", done
    assert "cannot start the CLI: the Claude Code CLI cannot be run" in done["error"]
    assert "does not exist" in done["error"]
    assert c.ok("project.get", path=path)["project"]["status"] == "idle"
