"""
The real Claude Code CLI, driven by the real server, against a fake
Messages API on loopback (tests/fake_api.py).

Only the real CLI proves that we drive it correctly: its flags and
message shapes change between versions. It is pinned in
tests/claude-code.version; without it these tests are skipped with a
message saying how to install it, except in CI, where they fail.
"""

import json
import os
import select
import shutil

import psutil
import pytest

from tests import fake_api, realcli
from tests.harness import Server, alive

pytestmark = [pytest.mark.integration, pytest.mark.realcli]

CLI = realcli.find()
if CLI is None:
    if os.environ.get("CI"):
        raise RuntimeError(realcli.install_hint())
    pytest.skip(realcli.install_hint(), allow_module_level=True)


#: What the fake model asks with AskUserQuestion, in the tool's real shape.
QUESTIONS = [
    {
        "question": "Which colour should the button be?",
        "header": "Colour",
        "options": [
            {"label": "Red", "description": "warm"},
            {"label": "Blue", "description": "cool"},
        ],
        "multiSelect": False,
    },
    {
        "question": "Which extras do you want?",
        "header": "Extras",
        "options": [
            {"label": "Shadow", "description": "a drop shadow"},
            {"label": "Icon", "description": "an icon"},
            {"label": "Round", "description": "round corners"},
        ],
        "multiSelect": True,
    },
]

#: The plan the fake model writes in plan mode.
PLAN = "# Plan\n\n1. Write hello.txt\n2. Say done\n"


def interactive(word, rest, body):
    """
    The prompts that take several turns of the model: the answer to each
    tool call decides the next. None for other prompts.
    """
    done = fake_api.turn_results(body)
    if word == "write2":
        # Two files in one prompt: "allow always" after the first.
        first, second = rest.split()
        if len(done) < 2:
            name, content = (first, "one") if not done else (second, "two")
            return fake_api.tool("Write", {"file_path": name, "content": content})
        return fake_api.text("wrote both")
    if word == "ask":
        if not done:
            return fake_api.tool("AskUserQuestion", {"questions": QUESTIONS})
        return fake_api.text("answered: " + fake_api.result_text(done[-1]))
    if word == "plan":
        # What a model in plan mode does: the plan goes to the plan file
        # the CLI names, then ExitPlanMode (which reads it from there).
        if not done:
            where = fake_api.plan_file(body)
            if where is None:
                return fake_api.text("no plan file named")
            return fake_api.tool("Write", {"file_path": where, "content": PLAN})
        if len(done) == 1:
            return fake_api.tool("ExitPlanMode", {})
        return fake_api.text("plan answered: " + fake_api.result_text(done[-1]))
    return None


def script(body):
    """
    The fake model. Each prompt says what it wants with its first word.
    """
    prompt = fake_api.last_user_text(body)
    word, _, rest = prompt.partition(" ")
    several = interactive(word, rest, body)
    if several is not None:
        return several
    results = fake_api.tool_results(body)
    last = body["messages"][-1]
    answering_tool = isinstance(last.get("content"), list) and any(
        b.get("type") == "tool_result" for b in last["content"]
    )
    if answering_tool:
        return fake_api.text("after tool: " + json.dumps(results[-1].get("content")))
    if word == "write":
        name, _, content = rest.partition(" ")
        return fake_api.tool("Write", {"file_path": name, "content": content})
    if word == "bash":
        return fake_api.tool("Bash", {"command": rest, "description": "run it"})
    if word == "slow":
        return fake_api.text("too late", delay=600)
    if word == "fail":
        return fake_api.Reply(error=(400, "invalid_request_error", "fake failure: " + rest))
    if word == "partial":
        return fake_api.text("one two three four five six", chunks=6)
    return fake_api.text("turn %d: %s" % (fake_api.user_turns(body), prompt))


@pytest.fixture(scope="module")
def api():
    server = fake_api.FakeAPI(script)
    yield server
    server.close()


def cli_env(api):
    return {
        "ANTHROPIC_BASE_URL": api.url,
        "ANTHROPIC_API_KEY": "sk-fake-key",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
    }


def start(tmp_path, api, *args):
    return Server(tmp_path, *args, claude_bin=CLI, env=cli_env(api)).start()


@pytest.fixture(scope="module")
def server(tmp_path_factory, api):
    """One server for the tests that need no special settings."""
    s = start(tmp_path_factory.mktemp("real"), api, "--permission-timeout", "5")
    yield s
    s.kill()


@pytest.fixture
def servers():
    started = []
    yield started
    for s in started:
        s.kill()


def project(server, client, name):
    path = server.project_dir(name)
    client.ok("project.create", path=path)
    client.ok("subscribe", path=path)
    return path


def run(client, path, text, **fields):
    prompt_id = client.ok("prompt", path=path, prompt=text, **fields)["prompt_id"]
    return prompt_id, client.finished(prompt_id, timeout=90)


def results_of(client, prompt_id):
    return [
        e["message"]
        for e in client.of(prompt_id, "claude")
        if e["message"].get("type") == "result"
    ]


def permission_request(client, timeout=60):
    """The next permission request (the prompt must not finish first)."""
    event = client.wait_event(
        lambda m: m.get("event") in ("permission.request", "prompt.finished"), timeout=timeout
    )
    assert event["event"] == "permission.request", event
    return event


def tool_result_sent(api, tool_use_id):
    """The tool_result the CLI sent the model for C{tool_use_id}."""
    for body in api.main_requests():
        for result in fake_api.tool_results(body):
            if result.get("tool_use_id") == tool_use_id:
                return result
    raise AssertionError("no tool_result for %s reached the model" % (tool_use_id,))


def fifo(tmp_path, name="tool.fifo"):
    path = str(tmp_path / name)
    os.mkfifo(path)
    return path


def read_fifo(path, timeout=60):
    """
    Wait for a tool command to write its pid into the FIFO at C{path}.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        data = b""
        while not data.endswith(b"\n"):
            ready, _, _ = select.select([fd], [], [], timeout)
            assert ready, "the tool never started"
            chunk = os.read(fd, 100)
            data += chunk
        return int(data)
    finally:
        os.close(fd)


def pid_tool(fifo_path):
    """A Bash command that reports its pid, then runs for ten minutes."""
    return (
        "python3 -c 'import os, time; f = open(\"%s\", \"w\"); "
        "f.write(str(os.getpid()) + \"\\n\"); f.close(); time.sleep(600)'" % (fifo_path,)
    )


def test_version_is_the_pinned_one(server):
    """server.info reports the pinned CLI version."""
    # server.info answers at once, with null until `claude --version` has
    # answered; the server logs the version when it knows it.
    if not any("Claude Code CLI: " in line for line in server.log):
        server.wait_log(r"Claude Code CLI: ")
    c = server.connect()
    info = c.ok("server.info")
    assert info["claude"]["version"].split()[0] == realcli.pinned_version()


def test_first_prompt_stores_the_session_and_second_resumes(server, api):
    """The session id is stored; the second prompt carries the first turn."""
    c = server.connect()
    path = project(server, c, "resume")
    first_id, first = run(c, path, "hello there")
    assert first["status"] == "completed", first
    session = first["session_id"]
    assert session and c.ok("project.get", path=path)["project"]["session_id"] == session
    init = [
        e["message"] for e in c.of(first_id, "claude")
        if e["message"].get("subtype") == "init"
    ]
    assert init and init[0]["session_id"] == session
    second_id, second = run(c, path, "and again")
    assert second["status"] == "completed"
    assert second["session_id"] == session
    assert results_of(c, second_id)[-1]["result"] == "turn 2: and again"


def test_prompt_starting_with_dashes_is_text_not_an_option(server):
    """A prompt like '--help' reaches the model as text."""
    c = server.connect()
    path = project(server, c, "dashes")
    prompt_id, done = run(c, path, "--version --help")
    assert done["status"] == "completed"
    assert results_of(c, prompt_id)[-1]["result"] == "turn 1: --version --help"


def test_cost_is_the_difference_of_running_totals(server):
    """cost_usd of each prompt is its share of the CLI's running total."""
    c = server.connect()
    path = project(server, c, "cost")
    one_id, one = run(c, path, "one")
    two_id, two = run(c, path, "two")
    total_one = results_of(c, one_id)[-1]["total_cost_usd"]
    total_two = results_of(c, two_id)[-1]["total_cost_usd"]
    assert total_two > total_one > 0
    assert one["cost_usd"] == pytest.approx(total_one)
    assert two["cost_usd"] == pytest.approx(total_two - total_one)


def test_include_partial_messages_streams_deltas(server):
    """With include_partial_messages the CLI's stream events are relayed."""
    c = server.connect()
    path = project(server, c, "partial")
    prompt_id, done = run(c, path, "partial", options={"include_partial_messages": True})
    assert done["status"] == "completed"
    deltas = [
        e["message"]["event"]["delta"]["text"]
        for e in c.of(prompt_id, "claude")
        if e["message"].get("type") == "stream_event"
        and e["message"]["event"].get("type") == "content_block_delta"
    ]
    assert "".join(deltas) == "one two three four five six"
    assert len(deltas) == 6


def test_cancel_during_a_slow_reply(server):
    """Cancel while the model is slow: cancelled, and the project goes on."""
    c = server.connect()
    path = project(server, c, "cancel-slow")
    prompt_id = c.ok("prompt", path=path, prompt="slow")["prompt_id"]
    c.wait_event(lambda m: m.get("event") == "prompt.started" and m["prompt_id"] == prompt_id)
    c.wait_event(lambda m: m.get("event") == "claude" and m["message"].get("subtype") == "init")
    assert c.ok("cancel", path=path) == {"cancelled": [prompt_id]}
    assert c.finished(prompt_id, timeout=60)["status"] == "cancelled"
    _, after = run(c, path, "after")
    assert after["status"] == "completed"


def test_cancel_during_a_bash_tool_ends_the_tool(server, tmp_path):
    """Cancel while a Bash command runs: the command's process is gone."""
    c = server.connect()
    path = project(server, c, "cancel-bash")
    pipe = fifo(tmp_path)
    prompt_id = c.ok(
        "prompt", path=path, prompt="bash " + pid_tool(pipe),
        options={"allowed_tools": ["Bash"]},
    )["prompt_id"]
    tool = read_fifo(pipe)
    assert alive([tool]) == [tool]
    c.ok("cancel", path=path)
    assert c.finished(prompt_id, timeout=60)["status"] == "cancelled"
    _, living = psutil.wait_procs([psutil.Process(p) for p in alive([tool])], timeout=30)
    assert not living


def test_api_error_fails_the_prompt_with_the_cli_message(server):
    """An API error is a failed prompt whose error carries the CLI's message."""
    c = server.connect()
    path = project(server, c, "api-error")
    _, done = run(c, path, "fail on purpose")
    assert done["status"] == "failed"
    assert "fake failure: on purpose" in done["error"]


def test_allowed_write_creates_the_file(server):
    """A Write a client allows creates the file."""
    c = server.connect()
    path = project(server, c, "allow")
    target = os.path.join(path, "allowed.txt")
    prompt_id = c.ok("prompt", path=path, prompt="write %s hello" % target)["prompt_id"]
    request = c.wait_event(lambda m: m.get("event") == "permission.request", timeout=60)
    assert (request["tool_name"], request["input"]["file_path"]) == ("Write", target)
    c.ok("permission.respond", path=path, request_id=request["request_id"], behavior="allow")
    assert c.finished(prompt_id, timeout=60)["status"] == "completed"
    with open(target) as f:
        assert f.read() == "hello"


def test_denied_write_creates_nothing_and_the_model_sees_why(server, api):
    """A denied Write creates nothing; the denial message reaches the model."""
    c = server.connect()
    path = project(server, c, "deny")
    target = os.path.join(path, "denied.txt")
    prompt_id = c.ok("prompt", path=path, prompt="write %s nope" % target)["prompt_id"]
    request = c.wait_event(lambda m: m.get("event") == "permission.request", timeout=60)
    c.ok(
        "permission.respond", path=path, request_id=request["request_id"],
        behavior="deny", message="not in this directory",
    )
    assert c.finished(prompt_id, timeout=60)["status"] == "completed"
    assert not os.path.exists(target)
    reply = results_of(c, prompt_id)[-1]["result"]
    assert "not in this directory" in reply


def test_unanswered_permission_is_denied_at_the_configured_time(server):
    """Nobody answers: denied by timeout, and the file is not written."""
    c = server.connect()
    path = project(server, c, "unanswered")
    target = os.path.join(path, "never.txt")
    prompt_id = c.ok("prompt", path=path, prompt="write %s x" % target)["prompt_id"]
    request = c.wait_event(lambda m: m.get("event") == "permission.request", timeout=60)
    resolved = c.wait_event(
        lambda m: m.get("event") == "permission.resolved"
        and m["request_id"] == request["request_id"],
        timeout=30,
    )
    assert (resolved["behavior"], resolved["by"]) == ("deny", "timeout")
    assert c.finished(prompt_id, timeout=60)["status"] == "completed"
    assert not os.path.exists(target)
    assert "No claudews client answered" in results_of(c, prompt_id)[-1]["result"]


def test_pending_permission_is_denied_when_the_prompt_is_cancelled(server):
    """Cancel while a permission request is pending: it is denied by cancel."""
    c = server.connect()
    path = project(server, c, "cancel-pending")
    target = os.path.join(path, "cancelled.txt")
    prompt_id = c.ok("prompt", path=path, prompt="write %s x" % target)["prompt_id"]
    request = c.wait_event(lambda m: m.get("event") == "permission.request", timeout=60)
    c.ok("cancel", path=path)
    resolved = c.wait_event(lambda m: m.get("event") == "permission.resolved")
    assert (resolved["request_id"], resolved["by"]) == (request["request_id"], "cancel")
    assert c.finished(prompt_id, timeout=60)["status"] == "cancelled"
    assert not os.path.exists(target)


def test_late_subscriber_answers_a_pending_permission(server):
    """A client that subscribes while a request is pending can answer it."""
    first = server.connect()
    path = project(server, first, "late")
    target = os.path.join(path, "late.txt")
    prompt_id = first.ok("prompt", path=path, prompt="write %s late" % target)["prompt_id"]
    first.wait_event(lambda m: m.get("event") == "permission.request", timeout=60)
    late = server.connect()
    pending = late.ok("subscribe", path=path)["pending_permissions"]
    assert [p["tool_name"] for p in pending] == ["Write"]
    late.ok("permission.respond", path=path, request_id=pending[0]["request_id"], behavior="allow")
    assert first.finished(prompt_id, timeout=60)["status"] == "completed"
    with open(target) as f:
        assert f.read() == "late"


def test_timeout(tmp_path, api, servers):
    """A prompt that outlives --timeout finishes as timeout; the next one works."""
    s = start(tmp_path, api, "--timeout", "3")
    servers.append(s)
    c = s.connect()
    path = project(s, c, "timeout")
    _, done = run(c, path, "slow")
    assert done["status"] == "timeout"
    _, after = run(c, path, "after")
    assert after["status"] == "completed"


def test_idle_process_is_closed_and_a_later_prompt_resumes(tmp_path, api, servers):
    """After the idle timeout the CLI exits; the next prompt resumes with --resume."""
    s = start(tmp_path, api, "--idle-timeout", "1")
    servers.append(s)
    c = s.connect()
    path = project(s, c, "idle")
    run(c, path, "first")
    clis = psutil.Process(s.process.pid).children(recursive=True)
    assert clis
    _, living = psutil.wait_procs(clis, timeout=30)
    assert not living
    second_id, second = run(c, path, "second")
    assert second["status"] == "completed"
    assert results_of(c, second_id)[-1]["result"] == "turn 2: second"


def test_forgotten_session_fails_clearly_then_starts_afresh(tmp_path, api, servers):
    """A session the CLI no longer has: failed, session reset, next prompt works."""
    s = start(tmp_path, api)
    servers.append(s)
    c = s.connect()
    path = project(s, c, "forgotten")
    run(c, path, "remember me")
    s.stop_cleanly()
    # The CLI keeps its conversations under ~/.claude/projects.
    shutil.rmtree(os.path.join(s.home, ".claude", "projects"))
    s.start()
    c = s.connect()
    c.ok("subscribe", path=path)
    prompt_id, done = run(c, path, "do you remember")
    assert done["status"] == "failed"
    assert "could not resume" in done["error"]
    assert done["session_id"] is None
    c.wait_event(lambda m: m.get("event") == "session.reset")
    assert c.ok("project.get", path=path)["project"]["session_id"] is None
    after_id, after = run(c, path, "fresh start")
    assert after["status"] == "completed"
    assert results_of(c, after_id)[-1]["result"] == "turn 1: fresh start"


def test_symlink_swapped_in_for_the_project_runs_no_cli_there(tmp_path, api, servers):
    """Issue 13: ROOT/p2 replaced by a symlink out of the roots: path_invalid, no CLI."""
    s = start(tmp_path, api)
    servers.append(s)
    c = s.connect()
    path = project(s, c, "p2")
    first_id, first = run(c, path, "first")
    assert first["status"] == "completed"
    [init] = [m for m in (e["message"] for e in c.of(first_id, "claude")) if m.get("subtype") == "init"]
    assert init["cwd"] == path
    clis = psutil.Process(s.process.pid).children(recursive=True)
    assert clis
    outside = tmp_path / "outside"
    outside.mkdir()
    os.rename(path, str(tmp_path / "p2-away"))
    os.symlink(str(outside), path)
    # The live CLI gets no prompt there and is ended; the next start would
    # be a --resume of the stored session, refused the same way.
    for text in ("write %s/out.txt escaped" % (path,), "write out.txt escaped"):
        prompt_id, done = run(c, path, text)
        assert done["status"] == "failed"
        assert done["error"].startswith("path_invalid: "), done
        assert c.of(prompt_id, "prompt.started") == []
        assert c.of(prompt_id, "claude") == []
    _, living = psutil.wait_procs(clis, timeout=30)
    assert not living
    assert psutil.Process(s.process.pid).children(recursive=True) == []
    assert list(outside.iterdir()) == []
    got = c.ok("project.get", path=path)["project"]
    assert "symlink" in got["problem"]
    assert got["session_id"] == first["session_id"]


def test_allow_always_lets_the_next_write_through_unasked(server):
    """An allow carrying the request's suggestion: the second Write is not asked."""
    c = server.connect()
    path = project(server, c, "always")
    first, second = (os.path.join(path, name) for name in ("first.txt", "second.txt"))
    prompt_id = c.ok("prompt", path=path, prompt="write2 %s %s" % (first, second))["prompt_id"]
    request = permission_request(c)
    assert request["input"]["file_path"] == first
    suggestion = {"type": "setMode", "mode": "acceptEdits", "destination": "session"}
    assert suggestion in request["permission_suggestions"]
    c.ok(
        "permission.respond", path=path, request_id=request["request_id"],
        behavior="allow", updated_permissions=[suggestion],
    )
    assert c.finished(prompt_id, timeout=60)["status"] == "completed"
    assert len(c.of(prompt_id, "permission.request")) == 1
    modes = [
        e["message"]["permissionMode"] for e in c.of(prompt_id, "claude")
        if e["message"].get("subtype") == "status"
    ]
    assert "acceptEdits" in modes
    for name, content in ((first, "one"), (second, "two")):
        with open(name) as f:
            assert f.read() == content


def test_ask_user_question_is_answered_with_updated_input(server, api):
    """AskUserQuestion arrives as a permission request; the answers reach the model."""
    c = server.connect()
    path = project(server, c, "ask")
    prompt_id = c.ok("prompt", path=path, prompt="ask")["prompt_id"]
    request = permission_request(c)
    assert (request["tool_name"], request["input"]) == ("AskUserQuestion", {"questions": QUESTIONS})
    # What the console sends: every question's text, to the chosen labels
    # (several joined with ", ").
    answers = {QUESTIONS[0]["question"]: "Blue", QUESTIONS[1]["question"]: "Shadow, Round"}
    c.ok(
        "permission.respond", path=path, request_id=request["request_id"],
        behavior="allow", updated_input=dict(request["input"], answers=answers),
    )
    assert c.finished(prompt_id, timeout=60)["status"] == "completed"
    said = fake_api.result_text(tool_result_sent(api, request["tool_use_id"]))
    assert said.startswith("Your questions have been answered:"), said
    assert '"Which colour should the button be?"="Blue"' in said
    assert '"Which extras do you want?"="Shadow, Round"' in said


def plan_request(server, c, name):
    path = project(server, c, name)
    prompt_id = c.ok(
        "prompt", path=path, prompt="plan", options={"permission_mode": "plan"}
    )["prompt_id"]
    request = permission_request(c)
    assert request["tool_name"] == "ExitPlanMode"
    # The CLI reads the plan from its plan file into the request's input;
    # writing that file in plan mode asks nothing.
    assert request["input"]["plan"] == PLAN
    assert request["input"]["planFilePath"].endswith(".md")
    assert len(c.of(prompt_id, "permission.request")) == 1
    return path, prompt_id, request


def test_exit_plan_mode_allowed_approves_the_plan(server, api):
    """ExitPlanMode in plan mode is relayed with its plan; an allow approves it."""
    c = server.connect()
    path, prompt_id, request = plan_request(server, c, "plan-allow")
    c.ok("permission.respond", path=path, request_id=request["request_id"], behavior="allow")
    assert c.finished(prompt_id, timeout=60)["status"] == "completed"
    said = fake_api.result_text(tool_result_sent(api, request["tool_use_id"]))
    assert said.startswith("User has approved your plan."), said
    assert PLAN in said


def test_exit_plan_mode_denied_tells_the_model_why(server, api):
    """A denied ExitPlanMode: the model sees the client's message."""
    c = server.connect()
    path, prompt_id, request = plan_request(server, c, "plan-deny")
    c.ok(
        "permission.respond", path=path, request_id=request["request_id"],
        behavior="deny", message="Keep the file name short",
    )
    assert c.finished(prompt_id, timeout=60)["status"] == "completed"
    result = tool_result_sent(api, request["tool_use_id"])
    assert (fake_api.result_text(result), result.get("is_error")) == ("Keep the file name short", True)
