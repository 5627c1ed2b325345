"""
Edge cases end to end: a real twistd process, the fake CLI (its behaviour
chosen by directives in the prompt text) and real WebSocket clients.

Each test asserts what a user of the server would notice: what arrives
on the wire, what the history replays, and which processes are left.
"""

import glob
import os
import signal
import socket
import threading
import time

import psutil
import pytest
import websocket

from tests.harness import DEADLINE, Client, alive, is_tool_use, read_pids
from tests.harness import submit as prompt

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


# -- helpers


def config(tmp_path, **settings):
    """
    A TOML --config file with C{settings} (underscores become dashes);
    returns the command-line arguments that load it.
    """
    path = os.path.join(str(tmp_path), "claudews.toml")
    with open(path, "w") as f:
        for key, value in settings.items():
            f.write("%s = %r\n" % (key.replace("_", "-"), value))
    return ["--config", path]


def clis(server):
    """The live (non-zombie) CLI processes the server runs now."""
    try:
        children = psutil.Process(server.process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for child in children:
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
            argv = child.cmdline()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        # The streaming CLI, not the start-up "--version" probe or a tool.
        if "--input-format" in argv:
            found.append(child)
    return found


def wait_gone(pids, timeout=15):
    """Wait (bounded) for C{pids} to end; return those still alive."""
    procs = []
    for pid in alive(pids):
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=timeout)
    return alive(pids)


def results(client, prompt_id):
    """The C{result} texts the CLI printed for C{prompt_id}."""
    return [
        e["message"].get("result")
        for e in client.of(prompt_id, "claude")
        if e["message"].get("type") == "result"
    ]


def is_init(message):
    return (
        message.get("event") == "claude"
        and message["message"].get("type") == "system"
        and message["message"].get("subtype") == "init"
    )


def replay_all(server, path, **fields):
    """A new client's replay of the whole history of C{path}."""
    c = server.connect()
    state = c.ok("subscribe", path=path, since=0, **fields)
    last = state["last_seq"]
    c.wait_event(lambda m: m.get("seq") == last)
    return c, state


def new_project(server, name="app"):
    c = server.connect()
    path = server.project_dir(name)
    c.ok("project.create", path=path)
    c.ok("subscribe", path=path)
    return c, path


# -- big and odd output


def test_a_five_megabyte_reply_line_arrives_whole_live_and_in_replay(make_server):
    """A 5 MB CLI line is one claude event, live and when replayed."""
    server = make_server()
    c, path = new_project(server)
    pid = prompt(c, path, "huge:5000000")
    done = c.finished(pid)
    assert done["status"] == "completed", done
    (assistant,) = [
        e for e in c.of(pid, "claude") if e["message"]["type"] == "assistant"
    ]
    text = assistant["message"]["message"]["content"][0]["text"]
    assert len(text) == 5000000
    assert text.startswith("turn 1: huge:5000000xxx")
    assert set(text[len("turn 1: huge:5000000"):]) == {"x"}
    assert results(c, pid) == [text]

    replay, _ = replay_all(server, path)
    (again,) = [e for e in replay.events if e.get("seq") == assistant["seq"]]
    assert again == assistant


def test_a_non_json_stdout_line_becomes_an_output_event(make_server):
    """Plain text on stdout is kept as output; the prompt still completes."""
    server = make_server()
    c, path = new_project(server)
    pid = prompt(c, path, "nonjson")
    assert c.finished(pid)["status"] == "completed"
    outputs = [(e["stream"], e["text"]) for e in c.of(pid, "output")]
    assert outputs == [("stdout", "this line is not JSON")]
    assert results(c, pid) == ["turn 1: nonjson"]


def test_a_stderr_flood_neither_blocks_the_cli_nor_fills_the_history(make_server):
    """5 MB of stderr: the prompt completes; about 1 MiB of it is kept."""
    server = make_server()
    c, path = new_project(server)
    pid = prompt(c, path, "stderr:5000000")
    assert c.finished(pid)["status"] == "completed"
    stderr = [e["text"] for e in c.of(pid, "output") if e["stream"] == "stderr"]
    notices = [t for t in stderr if t.startswith("[claudews:")]
    kept = sum(len(t) for t in stderr if not t.startswith("[claudews:"))
    assert len(notices) == 1, notices
    assert "stderr" in notices[0]
    # What was kept is the start of the flood, bounded.
    assert 512 * 1024 <= kept <= MiB
    assert results(c, pid) == ["turn 1: stderr:5000000"]


# -- stopping a prompt


def test_cancel_kills_a_hung_cli_that_ignores_sigterm_and_the_interrupt(
    tmp_path, make_server
):
    """A CLI deaf to the interrupt and to SIGTERM is killed; cancel completes."""
    server = make_server(*config(tmp_path, kill_grace=1))
    c, path = new_project(server)
    pid = prompt(c, path, "ignore-term")
    # The fake ignores SIGTERM before it prints its init message.
    c.wait_event(is_init)
    (cli,) = clis(server)
    # A stopped process cannot answer the interrupt either: a hung CLI.
    cli.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        assert c.ok("cancel", path=path) == {"cancelled": [pid]}
        done = c.finished(pid, timeout=15)
        assert done["status"] == "cancelled", done
        assert alive([cli.pid]) == []
        # Interrupt grace, then SIGTERM grace, then SIGKILL: seconds, not more.
        assert time.monotonic() - started < 10
    finally:
        if alive([cli.pid]):
            cli.kill()
    # The conversation goes on in a new process.
    after = prompt(c, path, "after")
    assert c.finished(after)["status"] == "completed"
    assert results(c, after) == ["turn 2: after"]


def test_a_prompt_over_its_timeout_is_stopped_and_the_next_one_runs(make_server):
    """--timeout stops a slow prompt with status timeout; the next one works."""
    server = make_server("--timeout", "2")
    c, path = new_project(server)
    slow = prompt(c, path, "slow:600")
    started = time.monotonic()
    done = c.finished(slow, timeout=15)
    assert done["status"] == "timeout", done
    assert 1.5 < time.monotonic() - started < 10
    after = prompt(c, path, "after")
    assert c.finished(after)["status"] == "completed"
    assert results(c, after) == ["turn 2: after"]


def test_a_crashing_cli_fails_its_prompt_and_the_next_prompt_resumes(make_server):
    """exit 3 mid-prompt: failed with the exit in the error; the session goes on."""
    server = make_server()
    c, path = new_project(server)
    crash = prompt(c, path, "crash")
    done = c.finished(crash)
    assert done["status"] == "failed", done
    assert done["exit_code"] == 3
    assert "exited" in done["error"] and "3" in done["error"], done["error"]
    session = c.wait_event(is_init)["message"]["session_id"]
    assert done["session_id"] == session

    after = prompt(c, path, "after")
    started = c.wait_event(
        lambda m: m.get("event") == "prompt.started" and m["prompt_id"] == after
    )
    assert started["session_id"] == session
    assert c.finished(after)["status"] == "completed"
    # "turn 2": the new process resumed the conversation the crash left.
    assert results(c, after) == ["turn 2: after"]


def test_an_error_result_fails_the_prompt_with_the_cli_text(make_server):
    """An is_error result makes the prompt failed, its text as the error."""
    server = make_server()
    c, path = new_project(server)
    pid = prompt(c, path, "error")
    done = c.finished(pid)
    assert done["status"] == "failed"
    assert done["error"] == "API Error: 500 fake failure"
    assert c.finished(prompt(c, path, "again"))["status"] == "completed"


# -- leftovers


def test_shutdown_leaves_no_grandchild_of_cancelled_or_finished_prompts(
    tmp_path, make_server
):
    """Processes a CLI left in their own sessions end with the server."""
    pidfile = str(tmp_path / "pids")
    server = make_server(
        *config(tmp_path, kill_grace=1), env={"FAKE_CLAUDE_PIDFILE": pidfile}
    )
    c, a = new_project(server, "a")
    b = server.project_dir("b")
    c.ok("project.create", path=b)
    c.ok("subscribe", path=b)
    # a: a grandchild, then a prompt that is cancelled.
    assert c.finished(prompt(c, a, "grandchild"))["status"] == "completed"
    cancelled = prompt(c, a, "tool-sleep:600")
    c.wait_event(lambda m: is_tool_use(m) and m["prompt_id"] == cancelled)
    c.ok("cancel", path=a)
    assert c.finished(cancelled)["status"] == "cancelled"
    # b: a grandchild of a prompt that finished normally.
    assert c.finished(prompt(c, b, "grandchild"))["status"] == "completed"
    started = read_pids(pidfile)
    assert len(started) == 3
    grandchildren, tool = [started[0], started[2]], started[1]
    # Cancelling ends the prompt's tool; the grandchildren live on meanwhile.
    assert wait_gone([tool]) == []
    assert alive(grandchildren) == grandchildren
    cli_pids = [p.pid for p in clis(server)]
    assert len(cli_pids) == 2
    c.close()
    server.stop_cleanly()
    assert alive(started + cli_pids) == []


@pytest.mark.parametrize(
    "text, settings",
    [("grandchild", {"idle_timeout": 1}), ("grandchild crash", {})],
    ids=["idle-closed", "crashed"],
)
def test_shutdown_leaves_no_grandchild_of_a_cli_that_exited_by_itself(
    tmp_path, make_server, text, settings
):
    """What a CLI left behind when it exited still ends with the server."""
    pidfile = str(tmp_path / "pids")
    server = make_server(
        *config(tmp_path, kill_grace=1, **settings),
        env={"FAKE_CLAUDE_PIDFILE": pidfile},
    )
    c, path = new_project(server)
    try:
        c.finished(prompt(c, path, text))
        assert wait_gone([p.pid for p in clis(server)], timeout=10) == []
        c.close()
        server.stop_cleanly()
        assert alive(read_pids(pidfile)) == []
    finally:
        for pid in alive(read_pids(pidfile)):
            os.kill(pid, signal.SIGKILL)


def test_a_killed_server_records_the_prompt_interrupted_and_ends_its_tool(
    tmp_path, make_server
):
    """After SIGKILL, a restart says interrupted and ends the leftover tool."""
    pidfile = str(tmp_path / "pids")
    server = make_server(env={"FAKE_CLAUDE_PIDFILE": pidfile})
    c, path = new_project(server)
    running = prompt(c, path, "tool-sleep:600")
    c.wait_event(is_tool_use)
    (tool,) = read_pids(pidfile)
    seen = max(e["seq"] for e in c.events if e.get("type") == "event")
    try:
        server.kill()
        assert alive([tool]) == [tool]
        server.start()
        assert wait_gone([tool]) == []
        c, state = replay_all(server, path)
        seqs = [e["seq"] for e in c.events if e.get("type") == "event"]
        assert seqs == list(range(1, state["last_seq"] + 1))
        assert state["last_seq"] > seen
        (finished,) = c.of(running, "prompt.finished")
        assert finished["status"] == "interrupted"
        assert not state["running"]
        # New events continue the numbering.
        after = prompt(c, path, "after")
        queued = c.wait_event(
            lambda m: m.get("event") == "prompt.queued" and m["prompt_id"] == after
        )
        assert queued["seq"] == state["last_seq"] + 1
        assert c.finished(after)["status"] == "completed"
    finally:
        for pid in alive([tool]):
            os.kill(pid, signal.SIGKILL)


def test_a_conversation_the_cli_lost_fails_once_then_starts_afresh(make_server):
    """A failed --resume fails the prompt, resets the session, and recovers."""
    server = make_server()
    c, path = new_project(server)
    first = c.finished(prompt(c, path, "hello"))
    session = first["session_id"]
    assert session
    c.close()
    server.stop_cleanly()
    files = glob.glob(os.path.join(server.home, ".fake-claude", "sessions", "*.json"))
    assert [os.path.basename(f) for f in files] == [session + ".json"]
    os.remove(files[0])
    server.start()

    c = server.connect()
    c.ok("subscribe", path=path)
    lost = prompt(c, path, "again")
    done = c.finished(lost)
    assert done["status"] == "failed", done
    assert "could not resume" in done["error"] and session in done["error"]
    assert [e for e in c.events if e.get("event") == "session.reset"]
    assert c.ok("project.get", path=path)["project"]["session_id"] is None
    fresh = prompt(c, path, "fresh")
    done = c.finished(fresh)
    assert done["status"] == "completed"
    assert results(c, fresh) == ["turn 1: fresh"]
    assert done["session_id"] not in (None, session)


# -- process slots


def test_an_idle_cli_exits_and_the_next_prompt_resumes_in_a_new_one(
    tmp_path, make_server
):
    """With idle-timeout 1 the CLI goes away; the next prompt resumes."""
    server = make_server(*config(tmp_path, idle_timeout=1, kill_grace=1))
    c, path = new_project(server)
    first = c.finished(prompt(c, path, "hello"))
    (cli,) = clis(server)
    assert "--resume" not in cli.cmdline()
    assert wait_gone([cli.pid], timeout=10) == []
    assert clis(server) == []

    again = prompt(c, path, "again")
    c.finished(again)
    (second,) = clis(server)
    assert second.pid != cli.pid
    argv = second.cmdline()
    assert argv[argv.index("--resume") + 1] == first["session_id"]
    assert results(c, again) == ["turn 2: again"]


def test_max_running_one_runs_two_projects_one_process_at_a_time(
    tmp_path, make_server
):
    """--max-running 1: both projects' prompts complete, never two CLIs alive."""
    server = make_server("--max-running", "1")
    c, a = new_project(server, "a")
    b = server.project_dir("b")
    c.ok("project.create", path=b)
    c.ok("subscribe", path=b)
    pending = {prompt(c, a, "slow:0.5"), prompt(c, b, "slow:0.5"), prompt(c, a, "x")}
    statuses = {}
    most = 0
    samples = 0
    deadline = time.monotonic() + DEADLINE
    while pending - set(statuses):
        assert time.monotonic() < deadline, statuses
        # Sample on every event, and between events on a short receive timeout.
        most = max(most, len(clis(server)))
        samples += 1
        try:
            message = c.receive(0.02)
        except websocket.WebSocketTimeoutException:
            continue
        c.events.append(message)
        if message.get("event") == "prompt.finished":
            statuses[message["prompt_id"]] = message["status"]
    assert set(statuses.values()) == {"completed"}
    assert most == 1, samples


# -- projects


def test_deleting_a_busy_project_ends_it_and_a_new_one_starts_over(
    tmp_path, make_server
):
    """project.delete ends the CLI and removes the data; re-creating starts at seq 1."""
    pidfile = str(tmp_path / "pids")
    server = make_server(env={"FAKE_CLAUDE_PIDFILE": pidfile})
    c, path = new_project(server)
    old = c.ok("project.get", path=path)["project"]
    pid = prompt(c, path, "tool-sleep:600")
    c.wait_event(is_tool_use)
    cli_pids = [p.pid for p in clis(server)]
    assert len(cli_pids) == 1
    tools = read_pids(pidfile)
    try:
        assert c.ok("project.delete", path=path) == {}
        assert alive(cli_pids + tools) == []
        assert path not in [p["path"] for p in c.ok("project.list")["projects"]]
        projects = os.path.join(server.data, "projects")
        assert [n for n in os.listdir(projects) if n.startswith(old["id"])] == []
        cancelled = [
            e for e in c.events
            if e.get("event") == "prompt.finished" and e["prompt_id"] == pid
        ]
        assert [e["status"] for e in cancelled] == ["cancelled"]

        new = c.ok("project.create", path=path)["project"]
        assert new["epoch"] != old["epoch"]
        assert new["last_seq"] == 0
        c.ok("subscribe", path=path)
        fresh = prompt(c, path, "fresh")
        done = c.finished(fresh)
        assert done["status"] == "completed"
        # A new conversation too: the history went with the project.
        assert results(c, fresh) == ["turn 1: fresh"]
        first = [e for e in c.events if e.get("prompt_id") == fresh][0]
        assert first["seq"] == 1

        # A client back from the old history, holding its since and epoch.
        back = server.connect()
        state = back.ok("subscribe", path=path, since=1, epoch=old["epoch"])
        assert state["epoch"] == new["epoch"]
        back.wait_event(lambda m: m.get("seq") == state["last_seq"])
        assert [e["seq"] for e in back.events] == list(range(1, state["last_seq"] + 1))
    finally:
        for p in alive(cli_pids + tools):
            os.kill(p, signal.SIGKILL)


def test_two_subscribers_see_the_same_events_in_the_same_order(make_server):
    """Every subscriber of a project receives the identical sequence."""
    server = make_server()
    one, path = new_project(server)
    two = server.connect()
    two.ok("subscribe", path=path)
    ids = [
        prompt(one, path, "nonjson stderr:300"),
        prompt(two, path, "permission:Write"),
        prompt(one, path, "huge:100000"),
    ]
    request = two.wait_event(lambda m: m.get("event") == "permission.request")
    one.ok("permission.respond", path=path, request_id=request["request_id"],
           behavior="deny", message="no")
    for client in (one, two):
        client.finished(ids[-1])
    last = max(e["seq"] for e in one.events)
    two.wait_event(lambda m: m.get("seq") == last)
    assert one.events == two.events
    assert [e["seq"] for e in one.events] == list(range(1, last + 1))


def test_a_client_that_never_reads_is_closed_while_others_get_everything(
    tmp_path, make_server
):
    """A stalled subscriber is closed with 1008; a reading one misses nothing."""
    server = make_server(
        *config(
            tmp_path,
            send_backlog_bytes=MiB,
            send_backlog_grace=1,
            send_backlog_cap=8 * MiB,
        )
    )
    reader, path = new_project(server)
    stalled = Client(
        server.url(), sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),)
    )
    stalled.ok("subscribe", path=path)

    def drain():
        # The close frame comes after what was queued before it. Read at
        # once, with a receive window that no longer stalls: a closed
        # client has the close handshake's few seconds to take its backlog
        # before it is dropped.
        stalled.ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        stalled.ws.settimeout(10)
        count = 0
        while True:
            opcode, data = stalled.ws.recv_data()
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return count, data
            count += 1

    # The stalled client reads once the server says it closed it, in a
    # thread of its own, while the prompts go on: the server's log is read
    # by that thread alone meanwhile.
    closed = []
    watcher = threading.Thread(
        target=lambda: closed.append((server.wait_log(r"slow client", timeout=60), drain()))
    )
    watcher.start()
    for _ in range(4):
        # One at a time, so that the reader keeps up.
        pid = prompt(reader, path, "huge:2000000")
        assert reader.finished(pid)["status"] == "completed"
    watcher.join(60)
    [(_, (received, data))] = closed
    assert int.from_bytes(data[:2], "big") == 1008, data
    last = max(e["seq"] for e in reader.events)
    assert received < last
    assert [e["seq"] for e in reader.events] == list(range(1, last + 1))
    assert len([e for e in reader.events if e.get("event") == "claude"
                and len(str(e["message"])) > 2000000]) == 8
