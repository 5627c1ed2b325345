"""
claudews-client end to end: the client as a process (piped, or in a
pseudo-terminal) against a real twistd server and the fake CLI.

Nothing sleeps to wait: each step waits for the line that says it
happened, with a deadline so a bug fails the test instead of hanging it.
"""

import fcntl
import json
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import time

import pytest
import websocket

from tests.harness import DEADLINE, ROOT
from tests.harness import submit as send_prompt

pytestmark = pytest.mark.integration

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")


def client_command(server, *args, token=True):
    argv = [sys.executable, "-m", "claudews.client", "--url", server.url(token=False)]
    if token:
        argv += ["--token", server.token if token is True else token]
    return argv + list(args)


def client_env():
    env = dict(os.environ, PYTHONUNBUFFERED="1", TERM="xterm-256color", COLUMNS="120")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))
    env.pop("CLAUDEWS_TOKEN", None)
    env.pop("NO_COLOR", None)
    return env


def run_client(server, *args, token=True, cwd=None, stdin=None):
    """Run the client to its end; its exit status, stdout and stderr."""
    return subprocess.run(
        client_command(server, *args, token=token), env=client_env(), cwd=cwd or server.tmp,
        input=stdin, capture_output=True, text=True, timeout=DEADLINE,
        stdin=None if stdin is not None else subprocess.DEVNULL)


class Running:
    """
    A client process that is still running: its output read line by line
    as it comes, from pipes or from a pseudo-terminal.
    """

    def __init__(self, server, *args, tty=False):
        self.buffers = {}
        self.lines = {"stdout": [], "stderr": []}
        self.tty = tty
        if tty:
            master, slave = os.openpty()
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
            self.process = subprocess.Popen(
                client_command(server, *args), env=client_env(), cwd=server.tmp,
                stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
            os.close(slave)
            self.fds = {"stdout": master, "stderr": master}
        else:
            self.process = subprocess.Popen(
                client_command(server, *args), env=client_env(), cwd=server.tmp,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            self.fds = {"stdout": self.process.stdout.fileno(),
                        "stderr": self.process.stderr.fileno()}

    def _read(self, stream, deadline):
        fd = self.fds[stream]
        ready, _, _ = select.select([fd], [], [], max(0, deadline - time.monotonic()))
        if not ready:
            return False
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            chunk = b""
        if not chunk:
            return None
        data = self.buffers.get(stream, b"") + chunk
        *complete, self.buffers[stream] = data.split(b"\n")
        self.lines[stream].extend(ANSI.sub("", line.decode("utf-8", "replace"))
                                  for line in complete)
        return True

    def wait_for(self, pattern, stream="stdout", partial=False):
        """The first line (or, with partial, unfinished line) matching C{pattern}."""
        deadline = time.monotonic() + DEADLINE
        seen = 0
        while True:
            for line in self.lines[stream][seen:]:
                if re.search(pattern, line):
                    return line
            seen = len(self.lines[stream])
            rest = ANSI.sub("", self.buffers.get(stream, b"").decode("utf-8", "replace"))
            if partial and re.search(pattern, rest):
                return rest
            got = self._read(stream, deadline)
            if not got:
                raise AssertionError("no line matched %r (%s); %s got:\n%s" % (
                    pattern, "timed out" if got is False else "output ended", stream,
                    "\n".join(self.lines[stream][-30:]) + rest))

    def type(self, text):
        os.write(self.fds["stdout"], text.encode())

    def interrupt(self):
        self.process.send_signal(signal.SIGINT)

    def finish(self):
        """Wait for the end; the exit status (all output is then in C{lines})."""
        deadline = time.monotonic() + DEADLINE
        for stream in set(self.fds):
            while self._read(stream, deadline):
                pass
        return self.process.wait(timeout=DEADLINE)

    def kill(self):
        """Make sure the client is gone (test teardown), and close its output."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=DEADLINE)
        if self.tty:
            os.close(self.fds["stdout"])
        else:
            self.process.stdout.close()
            self.process.stderr.close()


@pytest.fixture
def clients():
    """Start client processes that are killed after the test, whatever happens."""
    running = []

    def start(server, *args, tty=False):
        client = Running(server, *args, tty=tty)
        running.append(client)
        return client

    yield start
    for client in running:
        client.kill()


@pytest.fixture
def server(make_server):
    return make_server("--timeout", "30", "--permission-timeout", "30")


@pytest.fixture
def project(server):
    path = server.project_dir("app")
    result = run_client(server, "create", path)
    assert (result.returncode, result.stdout) == (0, "created %s\n" % path), result
    return path


def test_prompt_streams_the_reply_and_exits_0(server, project):
    """A prompt's reply is shown and a summary line ends it; status 0."""
    result = run_client(server, "prompt", project, "hello there")
    assert result.returncode == 0, result
    lines = result.stdout.splitlines()
    assert "turn 1: hello there" in lines
    assert re.match(r"✓ completed · [\d.]+s · \$0\.0100 · 1 turn$", lines[-1]), lines
    assert result.stderr == ""


def test_prompt_text_from_stdin(server, project):
    """'-' reads the prompt from standard input."""
    result = run_client(server, "prompt", project, "-", stdin="from stdin\n")
    assert result.returncode == 0, result
    assert "turn 1: from stdin" in result.stdout


def test_failed_prompt_exits_non_zero(server, project):
    """A prompt that fails ends with a failed summary and status 1."""
    result = run_client(server, "prompt", project, "error")
    assert result.returncode == 1, result
    assert result.stdout.splitlines()[-1].startswith("✗ failed")
    assert "API Error: 500 fake failure" in result.stdout


def test_status_history_and_projects_show_the_project(server, project):
    """The read-only commands report what happened."""
    assert run_client(server, "prompt", project, "one").returncode == 0
    status = run_client(server, "status")
    assert status.returncode == 0, status
    assert status.stdout.startswith("claudews ")
    assert re.search(r"^%s  idle  queue 0 · seq \d+" % re.escape(project), status.stdout, re.M)
    listing = run_client(server, "projects")
    assert listing.stdout.startswith(project + "  idle")
    history = run_client(server, "history", project, "--limit", "3")
    assert history.returncode == 0, history
    assert "✓ completed" in history.stdout
    assert history.stderr == "" and "older events: --before" in history.stdout


def test_tail_sees_a_prompt_another_client_sends(server, project, clients):
    """tail follows the project live: another client's prompt shows up."""
    tail = clients(server, "tail", project)
    tail.wait_for(r"^following %s" % re.escape(project))
    other = server.connect()
    send_prompt(other, project, "from elsewhere")
    tail.wait_for(r"^› from elsewhere")
    tail.wait_for(r"^turn 1: from elsewhere$")
    tail.wait_for(r"^✓ completed")
    tail.interrupt()
    assert tail.finish() == 0


def test_permission_is_answered_in_place_in_a_terminal(server, project, clients):
    """On a terminal, prompt asks allow/deny itself; 'a' lets the Write happen."""
    client = clients(server, "prompt", project, "permission:Write", tty=True)
    client.wait_for(r"Permission requested: Write  %s" % re.escape(project))
    client.wait_for(r"\[a\]llow / \[d\]eny / deny with \[m\]essage: $", partial=True)
    client.type("a\n")
    client.wait_for(r"✓ permission allowed \(by client\)")
    client.wait_for(r"✓ completed")
    assert client.finish() == 0
    with open(os.path.join(project, "out.txt")) as f:
        assert f.read() == "hello"


def test_permission_denied_with_a_message_in_place(server, project, clients):
    """'m' and a reason deny the request; Claude is told the reason."""
    client = clients(server, "prompt", project, "permission:Write", tty=True)
    client.wait_for(r"deny with \[m\]essage: $", partial=True)
    client.type("m\n")
    client.wait_for(r"Message for Claude: $", partial=True)
    client.type("not that file\n")
    client.wait_for(r"✗ permission denied \(by client\)")
    client.wait_for(r"denied: not that file")
    assert client.finish() == 0
    assert not os.path.exists(os.path.join(project, "out.txt"))


def test_ctrl_c_cancels_the_running_prompt(tool_server, clients):
    """SIGINT to prompt cancels the prompt on the server and says so; status 130."""
    server, watcher, path, pidfile = tool_server
    client = clients(server, "prompt", path, "tool-sleep:600")
    client.wait_for(r"^● Bash  python3 -c 'import time; time.sleep\(600")
    client.interrupt()
    client.wait_for(r"^Ctrl-C: cancelling p-\w+ on the server")
    assert client.finish() == 130
    assert client.lines["stdout"][-1].startswith("✗ cancelled")
    assert re.fullmatch(r"claudews-client: cancelled p-\w+ on the server",
                        "\n".join(client.lines["stderr"]))
    done = watcher.wait_event(lambda m: m.get("event") == "prompt.finished")
    assert done["status"] == "cancelled"


def test_json_prints_event_frames_one_per_line(server, project):
    """--json output parses line by line: the prompt's events, in seq order."""
    result = run_client(server, "--json", "prompt", project, "hello")
    assert result.returncode == 0, result
    frames = [json.loads(line) for line in result.stdout.splitlines()]
    assert {f["type"] for f in frames} == {"event"}
    seqs = [f["seq"] for f in frames]
    assert seqs == sorted(set(seqs))
    assert frames[0]["event"] == "prompt.queued"
    assert (frames[-1]["event"], frames[-1]["status"]) == ("prompt.finished", "completed")


def test_wrong_token_is_one_line_and_its_own_status(server):
    """A refused token: one line on stderr, status 4, and the token never shown."""
    result = run_client(server, "projects", token="not-the-token")
    assert result.returncode == 4, result
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert "401" in result.stderr and "not-the-token" not in result.stderr


def test_token_is_read_from_the_local_data_directory(make_server):
    """Without --token, a loopback server's ./data/auth_token is used."""
    server = make_server(token=None)
    result = run_client(server, "projects", token=False, cwd=server.tmp)
    assert result.returncode == 0, result
    missing = run_client(server, "projects", token=False, cwd=server.root)
    assert missing.returncode == 4, missing
    assert "no token was given" in missing.stderr


def test_wrong_tokens_from_this_address_do_not_block_a_correct_client(server):
    """After ten refused handshakes from loopback the client still connects (no 429 any more)."""
    for _ in range(10):
        with pytest.raises(websocket.WebSocketBadStatusException):
            websocket.create_connection(
                server.url(token=False) + "?token=wrong", suppress_origin=True,
                timeout=DEADLINE)
    result = run_client(server, "projects")
    assert result.returncode == 0, result


def test_cannot_connect_is_one_line_and_its_own_status(server):
    """Nothing listening: one line, status 3."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = subprocess.run(
        [sys.executable, "-m", "claudews.client", "--url", "ws://127.0.0.1:%d/ws" % port,
         "projects"], env=client_env(), capture_output=True, text=True, timeout=DEADLINE)
    assert result.returncode == 3, result
    assert result.stderr.startswith("claudews-client: cannot connect to ws://127.0.0.1:")
    assert len(result.stderr.splitlines()) == 1


def test_protocol_error_names_its_code(server):
    """A refused request: its code and message on one line, status 8."""
    result = run_client(server, "cancel", "/no/such/project")
    assert result.returncode == 8, result
    assert result.stderr.startswith("claudews-client: project_not_found: ")
    assert len(result.stderr.splitlines()) == 1


def test_server_restart_under_tail_loses_nothing(server, project, clients):
    """tail resumes after a restart with since: every seq once, in order."""
    tail = clients(server, "--json", "tail", project, "--since", "0")
    tail.wait_for(r"^following ", stream="stderr")
    first = server.connect()
    first.ok("subscribe", path=project)
    first.finished(send_prompt(first, project, "one"))
    tail.wait_for(r'"event":"prompt.finished"')
    first.close()
    # The same port again, so the client can find the server back.
    listen = server.args.index("--listen") + 1
    server.args[listen] = "tcp:%d:interface=127.0.0.1" % server.port
    server.stop_cleanly()
    server.start()
    second = server.connect()
    second.ok("subscribe", path=project)
    last = second.finished(send_prompt(second, project, "two"))["seq"]
    tail.wait_for(r'"seq":%d,' % last)
    tail.interrupt()
    assert tail.finish() == 0
    seqs = [json.loads(line)["seq"] for line in tail.lines["stdout"]]
    assert seqs == list(range(1, last + 1))
    assert any("reconnecting" in line for line in tail.lines["stderr"])
