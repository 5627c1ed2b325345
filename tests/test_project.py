"""
Tests for L{claudews.project}: one project's queue of prompts, its CLI
process, session, events and permissions.

No process is ever started: the test reactor is a L{Clock} whose
C{spawnProcess} records the call and connects the L{ClaudeProcess} to an
in-memory transport, and each test plays the CLI by feeding stream-json
lines to the protocol. The fake pids are above any real pid, so the real
L{proctree} look-ups (kept in several tests) find nothing.
"""

import errno
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile

import attrs
from twisted.internet import defer, error
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from claudews import metadata, proctree
from claudews.errors import RequestError
from claudews.permissions import PermissionAnswer
from claudews.eventlog import STORAGE_RETRY
from claudews.history import History
from claudews.config import ProjectConfig
from claudews.project import Project
from claudews.interfaces import send_each
from claudews.proctree import SystemTrees
from claudews.supervisor import Supervisor

#: Above pid_max (at most 2**22 on Linux): no real process has these.
_PIDS = itertools.count(2**30 + 1)

PROTOCOL_FLAGS = [
    "-p",
    "--input-format",
    "stream-json",
    "--output-format",
    "stream-json",
    "--verbose",
    "--permission-prompt-tool",
    "stdio",
]

ENVIRON = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/home/someone",
    "CLAUDECODE": "1",
    "CLAUDE_CODE_ENTRYPOINT": "cli",
}

CONFIG = ProjectConfig(
    claude_bin="claude",
    timeout=300.0,
    kill_grace=5.0,
    permission_timeout=120.0,
    env={"CLAUDEWS_TEST_EXTRA": "yes"},
)

MODEL = ("--model", "opus")
EPSILON = 0.001


class FakeProcessTransport:
    """
    The parent's end of a child process: records what is written to its
    stdin and the signals it gets.
    """

    def __init__(self, pid):
        self.pid = pid
        self.data = b""
        self.stdin_closed = False
        self.signals = []

    def write(self, data):
        assert not self.stdin_closed, "write after closeStdin"
        self.data += data

    def writeSequence(self, seq):
        for data in seq:
            self.write(data)

    def closeStdin(self):
        self.stdin_closed = True

    def closeStdout(self):
        pass

    def closeStderr(self):
        pass

    def closeChildFD(self, fd):
        pass

    def signalProcess(self, signum):
        self.signals.append(signum)

    def loseConnection(self):
        self.closeStdin()


@attrs.define(eq=False)
class FakeCLI:
    """
    One recorded C{spawnProcess} call; the test speaks for the CLI.
    """

    reactor: "ProcessReactor"
    proto: object
    transport: FakeProcessTransport
    executable: str
    args: list
    env: dict
    path: str
    child_fds: dict
    ended: bool = False

    @property
    def argv(self):
        """The CLI's own argv, without the trampoline in front."""
        trampoline = proctree.new_session_argv(["x"])[:-1]
        assert self.args[: len(trampoline)] == trampoline
        return self.args[len(trampoline) :]

    @property
    def stdin(self):
        assert self.transport.data.endswith(b"\n") or not self.transport.data
        return [json.loads(line) for line in self.transport.data.splitlines()]

    @property
    def prompts(self):
        return [m["message"]["content"] for m in self.stdin if m["type"] == "user"]

    @property
    def interrupts(self):
        return [
            m
            for m in self.stdin
            if m["type"] == "control_request" and m["request"]["subtype"] == "interrupt"
        ]

    @property
    def control_responses(self):
        return [m["response"] for m in self.stdin if m["type"] == "control_response"]

    def send(self, message):
        self.proto.outReceived(json.dumps(message).encode("utf-8") + b"\n")
        return message

    def init(self, session_id):
        return self.send(
            {
                "type": "system",
                "subtype": "init",
                "cwd": self.path,
                "session_id": session_id,
                "tools": ["Bash", "Read", "Edit"],
                "mcp_servers": [],
                "model": "claude-sonnet-4-5",
                "permissionMode": "default",
                "apiKeySource": "none",
                "uuid": "u-init",
            }
        )

    def assistant(self, session_id, text="Hello!"):
        return self.send(
            {
                "type": "assistant",
                "message": {
                    "id": "msg_01",
                    "type": "message",
                    "role": "assistant",
                    "model": "claude-sonnet-4-5",
                    "content": [{"type": "text", "text": text}],
                    "stop_reason": None,
                    "usage": {"input_tokens": 3, "output_tokens": 5},
                },
                "parent_tool_use_id": None,
                "session_id": session_id,
                "uuid": "u-assistant",
            }
        )

    def result(
        self,
        session_id,
        total_cost_usd=0.03,
        *,
        subtype="success",
        is_error=False,
        text="Hello!",
        duration_ms=1234,
        num_turns=1,
        **extra,
    ):
        message = {
            "type": "result",
            "subtype": subtype,
            "is_error": is_error,
            "duration_ms": duration_ms,
            "duration_api_ms": 1000,
            "num_turns": num_turns,
            "session_id": session_id,
            "total_cost_usd": total_cost_usd,
            "usage": {"input_tokens": 3, "output_tokens": 5},
            "permission_denials": [],
            "uuid": "u-result",
        }
        if text is not None:
            message["result"] = text
        message.update(extra)
        return self.send(message)

    def ask_permission(self, request_id="req-1", tool_name="Bash", tool_input=None):
        return self.send(
            {
                "type": "control_request",
                "request_id": request_id,
                "request": {
                    "subtype": "can_use_tool",
                    "tool_name": tool_name,
                    "input": tool_input if tool_input is not None else {"command": "ls"},
                    "permission_suggestions": [{"type": "addRules"}],
                    "tool_use_id": "toolu_01",
                },
            }
        )

    def acknowledge_interrupt(self):
        request_id = self.interrupts[-1]["request_id"]
        return self.send(
            {
                "type": "control_response",
                "response": {"subtype": "success", "request_id": request_id},
            }
        )

    def stderr(self, text):
        self.proto.errReceived(text.encode("utf-8"))

    def exit(self, code=0, signum=None):
        """The process ends: exit status first, then its pipes close."""
        assert not self.ended, "the process already ended"
        if code == 0 and signum is None:
            reason = Failure(error.ProcessDone(0))
        else:
            reason = Failure(error.ProcessTerminated(exitCode=code, signal=signum))
        self.ended = True
        self.reactor.live.remove(self)
        self.proto.processExited(reason)
        self.proto.processEnded(reason)


class ProcessReactor(Clock):
    """
    A Clock that can "spawn" processes: nothing runs, every call is
    recorded and the protocol is connected to a L{FakeProcessTransport}.
    """

    #: Where its time starts: event timestamps are the reactor's time,
    #: which in production is the wall clock.
    START = 1_780_000_000.0

    def __init__(self):
        super().__init__()
        self.advance(self.START)
        self.spawned = []
        self.live = []
        self.max_live = 0

    def spawnProcess(
        self,
        processProtocol,
        executable,
        args=(),
        env=None,
        path=None,
        uid=None,
        gid=None,
        usePTY=False,
        childFDs=None,
    ):
        transport = FakeProcessTransport(next(_PIDS))
        cli = FakeCLI(
            self, processProtocol, transport, executable, list(args), dict(env or {}),
            path, childFDs,
        )
        self.spawned.append(cli)
        self.live.append(cli)
        self.max_live = max(self.max_live, len(self.live))
        # Like a real process transport, which connects in its constructor.
        processProtocol.makeConnection(transport)
        return transport


class Subscriber:
    """A connection that takes everything at once."""

    def __init__(self):
        self.lines = []

    def send_line(self, line):
        self.lines.append(line)

    def backlogged(self):
        return False

    def when_drained(self):
        return defer.succeed(None)


@attrs.define(eq=False)
class EndTreeCall:
    pid: object
    marker: str
    grace: float
    exclude: list


class EndTreeRecorder:
    """Stands in for ending process trees: records, signals nothing."""

    def __init__(self):
        self.calls = []


class Trees(SystemTrees):
    """
    The real process table (the fake pids are in none of its trees),
    whose endings a test may record instead of running.
    """

    recorder = None

    def end(self, pid, marker, *, grace, exclude=(), only_older=False):
        if self.recorder is None:
            return super().end(pid, marker, grace=grace, exclude=exclude, only_older=only_older)
        self.recorder.calls.append(EndTreeCall(pid, marker, grace, list(exclude)))
        return defer.succeed([])


@attrs.define(eq=False)
class Fixture:
    project: Project
    history: History
    subscriber: Subscriber
    directory: str
    workdir: str

    def events(self, kind=None):
        """Every stored event, checked to be what the subscriber got."""
        stored = list(self.history.read_since(0))
        lines = [line for _, line in stored]
        # Subscribed before the project's first event of this run: it got
        # every event stored since, in order.
        seen = self.subscriber.lines
        assert lines[len(lines) - len(seen) :] == seen
        decoded = [json.loads(line) for line in lines]
        for (seq, _), event in zip(stored, decoded):
            assert event["seq"] == seq
        if kind is None:
            return decoded
        return [e for e in decoded if e["event"] == kind]

    def kinds(self):
        return [e["event"] for e in self.events()]

    def finished(self, prompt_id):
        found = [e for e in self.events("prompt.finished") if e["prompt_id"] == prompt_id]
        assert len(found) <= 1, "prompt %s finished %d times" % (prompt_id, len(found))
        return found[0] if found else None

    def started(self, prompt_id):
        return [e for e in self.events("prompt.started") if e["prompt_id"] == prompt_id]

    def meta(self):
        return metadata.read(self.directory)


class ProjectTestCase(SynchronousTestCase):
    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="claudews-project-test-")
        self.addCleanup(shutil.rmtree, self.root, True)
        self.reactor = ProcessReactor()
        self.supervisor = Supervisor(max_running=4, idle_timeout=600.0, reactor=self.reactor)
        self.trees = Trees(self.reactor)

    def make(self, name="app", meta=None, config=CONFIG, supervisor=None, directory=None,
             **extra):
        workdir = os.path.join(self.root, name, "work")
        directory = directory or os.path.join(self.root, name, "data")
        os.makedirs(workdir, exist_ok=True)
        os.makedirs(directory, exist_ok=True)
        history = History(os.path.join(directory, "logs"), fsync="none", reactor=self.reactor)
        self.addCleanup(history.close)
        project = Project(
            path=workdir,
            project_id=name,
            directory=directory,
            meta=dict(meta or {}),
            history=history,
            supervisor=supervisor or self.supervisor,
            config=config,
            fanout=send_each,
            trees=self.trees,
            reactor=self.reactor,
            environ=ENVIRON,
            **extra,
        )
        subscriber = Subscriber()
        project.subscribe(subscriber, None)
        return Fixture(project, history, subscriber, directory, workdir)

    def submit(self, fixture, text="hello", flags=(), options=None):
        """Submit a prompt and let the reactor turn that starts it pass."""
        reply = fixture.project.submit(text, options or {}, flags)
        self.reactor.advance(0)
        return reply["prompt_id"]

    def end_tree(self):
        recorder = self.trees.recorder = EndTreeRecorder()
        return recorder

    def complete(self, cli, session_id="S-1", total=0.03):
        cli.init(session_id)
        cli.assistant(session_id)
        return cli.result(session_id, total)


class StartingTests(ProjectTestCase):
    def test_cli_runs_through_the_trampoline_with_exactly_the_protocol_flags(self):
        """A new project's CLI gets the fixed flags, no --resume, then the option flags."""
        fx = self.make()
        self.submit(fx, flags=MODEL)
        [cli] = self.reactor.spawned
        self.assertEqual(cli.args, proctree.new_session_argv(["claude", *PROTOCOL_FLAGS, *MODEL]))
        self.assertEqual(cli.executable, cli.args[0])
        self.assertEqual(cli.executable, sys.executable)
        self.assertEqual(cli.argv, ["claude", *PROTOCOL_FLAGS, "--model", "opus"])
        # Its working directory goes by descriptor, the one checked, and
        # only so: with no path, Twisted spawns rather than forks.
        self.assertIsNone(cli.path)
        directory = cli.child_fds.pop(proctree.CWD_FD)
        self.assertEqual(cli.child_fds, {0: "w", 1: "r", 2: "r"})
        self.assertEqual(cli.env[proctree.CWD_FD_ENV], str(proctree.CWD_FD))
        self.assertIsInstance(directory, int)

    def test_the_cli_starts_in_the_directory_that_was_checked(self):
        """A real trampoline handed the checked directory's descriptor works there, not where the path leads."""
        fx = self.make()
        elsewhere = tempfile.mkdtemp(prefix="claudews-elsewhere-")
        self.addCleanup(shutil.rmtree, elsewhere, True)
        fd = os.open(fx.workdir, os.O_RDONLY | os.O_DIRECTORY)
        self.addCleanup(os.close, fd)
        argv = proctree.new_session_argv(
            [sys.executable, "-c", "import os, sys; sys.stdout.write(os.getcwd())"]
        )
        env = dict(os.environ, **{proctree.CWD_FD_ENV: str(proctree.CWD_FD)})
        out = subprocess.run(
            argv, cwd=elsewhere, env=env, close_fds=False, capture_output=True, check=True,
            preexec_fn=lambda: os.dup2(fd, proctree.CWD_FD),
        )
        self.assertEqual(out.stdout.decode(), os.path.realpath(fx.workdir))

    def test_resume_comes_before_the_option_flags_when_the_project_has_a_session(self):
        """A project with a session resumes it: --resume SID after the fixed flags."""
        fx = self.make(meta={"session_id": "S-old"})
        self.submit(fx, flags=MODEL)
        [cli] = self.reactor.spawned
        self.assertEqual(
            cli.argv, ["claude", *PROTOCOL_FLAGS, "--resume", "S-old", "--model", "opus"]
        )
        self.assertEqual(fx.events("prompt.started")[0]["session_id"], "S-old")

    def test_a_session_id_that_could_be_an_option_never_reaches_the_command_line(self):
        """A stored or printed session id like '--x' is ignored: no --resume with it."""
        fx = self.make(meta={"session_id": "--dangerously-skip-permissions"})
        self.assertIsNone(fx.project.session_id)
        prompt = self.submit(fx)
        [cli] = self.reactor.spawned
        self.assertNotIn("--resume", cli.argv)
        cli.init("-evil")
        cli.result("-evil")
        self.assertIsNone(fx.project.session_id)
        self.assertEqual(fx.finished(prompt)["status"], "completed")

    def test_environment_has_the_process_marker_and_no_nested_session_variables(self):
        """The CLI's env carries CLAUDEWS_PROCESS (also in metadata) and not CLAUDECODE."""
        fx = self.make()
        self.submit(fx)
        [cli] = self.reactor.spawned
        self.assertEqual(cli.env[proctree.MARKER_ENV], cli.proto.marker)
        self.assertNotIn("CLAUDECODE", cli.env)
        self.assertNotIn("CLAUDE_CODE_ENTRYPOINT", cli.env)
        self.assertEqual(cli.env["PATH"], ENVIRON["PATH"])
        self.assertEqual(cli.env["CLAUDEWS_TEST_EXTRA"], "yes")
        self.assertEqual(fx.meta()["markers"], [cli.proto.marker])

    def test_prompt_text_goes_on_stdin_as_a_user_line_even_when_it_looks_like_a_flag(self):
        """A prompt starting with -- is one stream-json user line, never an argument."""
        fx = self.make()
        text = "--dangerously-skip-permissions\nand a second line"
        self.submit(fx, text)
        [cli] = self.reactor.spawned
        self.assertFalse(any(text in arg or "--dangerously" in arg for arg in cli.args))
        self.assertEqual(cli.transport.data.count(b"\n"), 1)
        [line] = cli.stdin
        self.assertEqual(line["type"], "user")
        self.assertEqual(line["message"], {"role": "user", "content": text})


class OnePromptTests(ProjectTestCase):
    def test_one_prompt_publishes_queued_started_claude_and_finished_in_order(self):
        """queued(0) -> started -> claude (verbatim) -> finished completed, seq 1..n."""
        fx = self.make()
        reply = fx.project.submit("hello", {"model": "opus"}, MODEL)
        self.assertEqual(reply["position"], 0)
        self.reactor.advance(0)
        [cli] = self.reactor.spawned
        sent = [cli.init("S-1"), cli.assistant("S-1")]
        cli.proto.outReceived(b"not json at all\n")
        sent.append(cli.result("S-1", 0.03, duration_ms=4321, num_turns=2))
        events = fx.events()
        self.assertEqual(
            [e["event"] for e in events],
            ["prompt.queued", "prompt.started", "claude", "claude", "output", "claude",
             "prompt.finished"],
        )
        self.assertEqual([e["seq"] for e in events], list(range(1, len(events) + 1)))
        self.assertEqual(fx.subscriber.lines, [l for _, l in fx.history.read_since(0)])
        queued, started, *claude, finished = events
        self.assertEqual(
            (queued["prompt_id"], queued["prompt"], queued["options"], queued["position"]),
            (reply["prompt_id"], "hello", {"model": "opus"}, 0),
        )
        self.assertEqual((started["prompt_id"], started["session_id"]), (reply["prompt_id"], None))
        self.assertEqual([e["message"] for e in claude if e["event"] == "claude"], sent)
        self.assertEqual(claude[2]["text"], "not json at all")
        self.assertTrue(all(e["prompt_id"] == reply["prompt_id"] for e in events))
        self.assertEqual(
            {k: finished[k] for k in ("status", "exit_code", "session_id", "cost_usd",
                                      "duration_ms", "num_turns", "error")},
            {"status": "completed", "exit_code": None, "session_id": "S-1",
             "cost_usd": 0.03, "duration_ms": 4321, "num_turns": 2, "error": None},
        )
        self.assertFalse(fx.project.running)
        self.assertEqual(fx.meta()["open_prompts"], [])

    def test_session_id_from_init_is_stored_and_written_to_metadata(self):
        """The init message's session id is the project's session, on disk at once."""
        fx = self.make()
        self.submit(fx)
        [cli] = self.reactor.spawned
        cli.init("S-init")
        self.assertEqual(fx.project.session_id, "S-init")
        self.assertEqual(fx.meta()["session_id"], "S-init")
        self.assertEqual(fx.project.describe()["session_id"], "S-init")

    def test_session_id_from_the_result_wins_over_the_init_one(self):
        """A result naming another session id (the CLI forked it) is the one stored."""
        fx = self.make()
        self.submit(fx)
        [cli] = self.reactor.spawned
        cli.init("S-init")
        cli.result("S-result")
        self.assertEqual(fx.project.session_id, "S-result")
        self.assertEqual(fx.meta()["session_id"], "S-result")

    def test_only_init_system_messages_set_the_session(self):
        """A system message of another subtype does not change the session."""
        fx = self.make()
        self.submit(fx)
        [cli] = self.reactor.spawned
        cli.init("S-1")
        cli.send({"type": "system", "subtype": "compact_boundary", "session_id": "S-other"})
        self.assertEqual(fx.project.session_id, "S-1")

    def test_the_prompt_is_open_in_metadata_until_it_finishes(self):
        """A crash mid-prompt leaves its id in metadata's open_prompts."""
        fx = self.make()
        prompt_id = self.submit(fx)
        self.assertEqual(fx.meta()["open_prompts"], [prompt_id])
        self.complete(self.reactor.spawned[0])
        self.assertEqual(fx.meta()["open_prompts"], [])


class QueueTests(ProjectTestCase):
    def test_second_prompt_waits_at_position_1_and_starts_after_the_first_result(self):
        """Prompts run one after another on the same process."""
        fx = self.make()
        first = fx.project.submit("one", {}, ())
        second = fx.project.submit("two", {}, ())
        self.assertEqual((first["position"], second["position"]), (0, 1))
        self.reactor.advance(0)
        [cli] = self.reactor.spawned
        self.assertEqual(cli.prompts, ["one"])
        self.assertEqual(fx.started(second["prompt_id"]), [])
        self.assertEqual(fx.project.describe()["queue"], 1)
        cli.init("S-1")
        cli.assistant("S-1")
        self.assertEqual(cli.prompts, ["one"])
        cli.result("S-1")
        self.assertEqual(fx.finished(first["prompt_id"])["status"], "completed")
        self.assertEqual(len(fx.started(second["prompt_id"])), 1)
        self.assertEqual(fx.started(second["prompt_id"])[0]["session_id"], "S-1")
        self.assertEqual(cli.prompts, ["one", "two"])
        cli.result("S-1", 0.05)
        self.assertEqual(fx.finished(second["prompt_id"])["status"], "completed")
        self.assertEqual(len(self.reactor.spawned), 1)
        self.assertEqual(
            fx.kinds(),
            ["prompt.queued", "prompt.queued", "prompt.started", "claude", "claude",
             "claude", "prompt.finished", "prompt.started", "claude", "prompt.finished"],
        )

    def test_a_prompt_submitted_while_one_runs_is_at_position_1(self):
        """Position counts the running prompt."""
        fx = self.make()
        self.submit(fx, "one")
        reply = fx.project.submit("two", {}, ())
        self.assertEqual(reply["position"], 1)
        self.assertEqual(fx.events("prompt.queued")[-1]["position"], 1)

    def test_other_option_flags_replace_the_process_which_resumes_the_session(self):
        """Different flags: the old process ends (real proctree path), the new one resumes."""
        fx = self.make()
        self.submit(fx, "one")
        [old] = self.reactor.spawned
        self.complete(old, "S-1")
        second = self.submit(fx, "two", flags=MODEL)
        self.assertTrue(old.transport.stdin_closed)
        self.assertEqual(len(self.reactor.spawned), 1, "started before the old one ended")
        self.assertEqual(fx.started(second), [])
        old.exit(0)
        [_, new] = self.reactor.spawned
        self.assertEqual(
            new.argv, ["claude", *PROTOCOL_FLAGS, "--resume", "S-1", "--model", "opus"]
        )
        self.assertEqual(new.prompts, ["two"])
        self.assertEqual(old.prompts, ["one"])
        self.assertEqual(self.supervisor.state(fx.project), "busy")
        self.assertEqual(self.reactor.max_live, 1)
        new.result("S-1", 0.01)
        self.assertEqual(fx.finished(second)["status"], "completed")
        self.assertEqual(fx.meta()["markers"], [new.proto.marker])

    def test_equal_flags_reuse_the_process(self):
        """The same option flags keep the live process."""
        fx = self.make()
        self.submit(fx, "one", flags=MODEL)
        self.complete(self.reactor.spawned[0])
        self.submit(fx, "two", flags=MODEL)
        self.assertEqual(len(self.reactor.spawned), 1)
        self.assertEqual(self.reactor.spawned[0].prompts, ["one", "two"])


class CostTests(ProjectTestCase):
    def test_cost_is_the_difference_of_the_running_totals(self):
        """total_cost_usd 0.03 then 0.05 on one process: costs 0.03 and 0.02."""
        fx = self.make()
        first = self.submit(fx, "one")
        [cli] = self.reactor.spawned
        cli.result("S-1", 0.03)
        second = self.submit(fx, "two")
        cli.result("S-1", 0.05)
        self.assertEqual(fx.finished(first)["cost_usd"], 0.03)
        self.assertAlmostEqual(fx.finished(second)["cost_usd"], 0.02)

    def test_cost_of_a_prompt_that_was_queued_is_the_difference_of_the_totals(self):
        """A prompt queued behind another is charged only its own share (0.02)."""
        fx = self.make()
        fx.project.submit("one", {}, ())
        second = fx.project.submit("two", {}, ())["prompt_id"]
        self.reactor.advance(0)
        [cli] = self.reactor.spawned
        cli.result("S-1", 0.03)
        cli.result("S-1", 0.05)
        self.assertAlmostEqual(fx.finished(second)["cost_usd"], 0.02)

    def test_a_new_process_restarts_the_running_total(self):
        """After a restart the first total is the whole cost, not a negative difference."""
        fx = self.make()
        self.submit(fx, "one")
        [old] = self.reactor.spawned
        old.result("S-1", 0.03)
        self.reactor.advance(600)  # idle timeout: the process is closed
        self.assertTrue(old.transport.stdin_closed)
        old.exit(0)
        second = self.submit(fx, "two")
        [_, new] = self.reactor.spawned
        self.assertIn("--resume", new.argv)
        new.result("S-1", 0.01)
        self.assertEqual(fx.finished(second)["cost_usd"], 0.01)

    def test_a_result_without_a_total_has_no_cost(self):
        """No total_cost_usd: cost_usd is null, duration from the result."""
        fx = self.make()
        prompt = self.submit(fx)
        self.reactor.spawned[0].result("S-1", None)
        self.assertIsNone(fx.finished(prompt)["cost_usd"])


class FailureTests(ProjectTestCase):
    def test_an_error_result_fails_the_prompt_with_the_cli_text(self):
        """is_error: failed, the CLI's result text as error; the queue moves on."""
        fx = self.make()
        first = fx.project.submit("one", {}, ())["prompt_id"]
        second = fx.project.submit("two", {}, ())["prompt_id"]
        self.reactor.advance(0)
        [cli] = self.reactor.spawned
        cli.init("S-1")
        cli.result("S-1", 0.01, is_error=True, text="Credit balance is too low")
        finished = fx.finished(first)
        self.assertEqual(finished["status"], "failed")
        self.assertEqual(finished["error"], "Credit balance is too low")
        self.assertEqual(finished["cost_usd"], 0.01)
        self.assertEqual(cli.prompts, ["one", "two"])
        cli.result("S-1", 0.02)
        self.assertEqual(fx.finished(second)["status"], "completed")
        self.assertEqual(len(self.reactor.spawned), 1)

    def test_an_error_result_without_text_reports_its_errors(self):
        """An error subtype without result text fails with the errors list."""
        fx = self.make()
        prompt = self.submit(fx)
        self.reactor.spawned[0].result(
            "S-1", subtype="error_during_execution", is_error=True, text=None,
            errors=["tool crashed", "then this"],
        )
        finished = fx.finished(prompt)
        self.assertEqual(finished["status"], "failed")
        self.assertEqual(finished["error"], "tool crashed; then this")

    def test_an_error_subtype_without_errors_reports_the_subtype(self):
        """error_max_turns without text or errors: the subtype is the error."""
        fx = self.make()
        prompt = self.submit(fx)
        self.reactor.spawned[0].result("S-1", subtype="error_max_turns", is_error=True, text=None)
        self.assertEqual(fx.finished(prompt)["error"], "error_max_turns")

    def test_exit_mid_prompt_fails_with_the_exit_code_and_the_last_stderr_line(self):
        """The process dies: failed, exit_code, the last stderr line in error."""
        fx = self.make()
        prompt = self.submit(fx)
        [cli] = self.reactor.spawned
        cli.init("S-1")
        cli.stderr("warming up\n")
        cli.stderr("fatal: the API went away\n")
        cli.exit(2)
        finished = fx.finished(prompt)
        self.assertEqual(finished["status"], "failed")
        self.assertEqual(finished["exit_code"], 2)
        self.assertIn("code 2", finished["error"])
        self.assertTrue(finished["error"].endswith(": fatal: the API went away"), finished["error"])
        self.assertNotIn("warming up", finished["error"])
        self.assertEqual(
            [e["text"] for e in fx.events("output")],
            ["warming up\n", "fatal: the API went away\n"],
        )
        self.assertFalse(self.supervisor.holds(fx.project))
        self.assertEqual(fx.meta()["markers"], [])

    def test_death_by_signal_is_named_in_the_error(self):
        """Killed by a signal: the error says which."""
        fx = self.make()
        prompt = self.submit(fx)
        self.reactor.spawned[0].exit(None, signal.SIGKILL)
        finished = fx.finished(prompt)
        self.assertEqual(finished["status"], "failed")
        self.assertIn("signal %d" % (signal.SIGKILL,), finished["error"])

    def test_a_prompt_after_a_crash_starts_a_new_process(self):
        """Once the dead process is gone, the next prompt gets a fresh one."""
        fx = self.make()
        self.submit(fx, "one")
        [old] = self.reactor.spawned
        old.init("S-1")
        old.exit(1)
        second = self.submit(fx, "two")
        [_, new] = self.reactor.spawned
        self.assertEqual(new.argv[-2:], ["--resume", "S-1"])
        new.result("S-1")
        self.assertEqual(fx.finished(second)["status"], "completed")

    def test_the_queue_moves_on_after_the_process_crashes(self):
        """A prompt queued behind a crashed one runs on a new process."""
        fx = self.make()
        first = fx.project.submit("one", {}, ())["prompt_id"]
        second = fx.project.submit("two", {}, ())["prompt_id"]
        self.reactor.advance(0)
        [old] = self.reactor.spawned
        old.init("S-1")
        old.exit(1)
        self.assertEqual(fx.finished(first)["status"], "failed")
        self.assertIsNone(fx.finished(second))
        self.assertEqual(len(self.reactor.spawned), 2)
        self.reactor.spawned[1].result("S-1")
        self.assertEqual(fx.finished(second)["status"], "completed")


NOT_FOUND = "No conversation found with session ID: S-gone"


class ResumeFailureTests(ProjectTestCase):
    def assert_reset(self, fx, prompt):
        finished = fx.finished(prompt)
        self.assertEqual(finished["status"], "failed")
        self.assertIn("could not resume conversation S-gone", finished["error"])
        self.assertIn(NOT_FOUND, finished["error"])
        self.assertIsNone(finished["session_id"])
        self.assertIsNone(fx.project.session_id)
        self.assertIsNone(fx.meta()["session_id"])
        kinds = fx.kinds()
        self.assertIn("session.reset", kinds)
        self.assertLess(kinds.index("session.reset"), kinds.index("prompt.finished"))

    def test_a_session_the_cli_cannot_resume_is_reset(self):
        """Exit with "No conversation found": failed, session reset, next prompt fresh."""
        fx = self.make(meta={"session_id": "S-gone"})
        prompt = self.submit(fx, "one")
        [old] = self.reactor.spawned
        self.assertEqual(old.argv[-2:], ["--resume", "S-gone"])
        old.stderr(NOT_FOUND + "\n")
        old.exit(1)
        self.assert_reset(fx, prompt)
        self.assertEqual(fx.finished(prompt)["exit_code"], 1)
        second = self.submit(fx, "two")
        [_, new] = self.reactor.spawned
        self.assertEqual(new.argv, ["claude", *PROTOCOL_FLAGS])
        self.assertIsNone(fx.started(second)[0]["session_id"])
        new.init("S-new")
        self.assertEqual(fx.project.session_id, "S-new")

    def test_a_queued_prompt_after_a_resume_failure_starts_without_resume(self):
        """The prompt queued behind the failed resume gets a new conversation."""
        fx = self.make(meta={"session_id": "S-gone"})
        first = fx.project.submit("one", {}, ())["prompt_id"]
        second = fx.project.submit("two", {}, ())["prompt_id"]
        self.reactor.advance(0)
        [old] = self.reactor.spawned
        old.stderr(NOT_FOUND + "\n")
        old.exit(1)
        self.assert_reset(fx, first)
        [_, new] = self.reactor.spawned
        self.assertNotIn("--resume", new.argv)
        self.assertEqual(new.prompts, ["two"])
        new.result("S-new")
        self.assertEqual(fx.finished(second)["status"], "completed")
        self.assertEqual(self.reactor.max_live, 1)

    def test_a_resume_failure_reported_in_a_result_also_resets(self):
        """An error result saying "No conversation found" resets; the process is replaced."""
        fx = self.make(meta={"session_id": "S-gone"})
        prompt = self.submit(fx, "one")
        [old] = self.reactor.spawned
        old.result("S-gone", 0, subtype="error_during_execution", is_error=True, text=NOT_FOUND)
        self.assert_reset(fx, prompt)
        self.submit(fx, "two")
        self.assertTrue(old.transport.stdin_closed)
        old.exit(0)
        [_, new] = self.reactor.spawned
        self.assertNotIn("--resume", new.argv)
        self.assertEqual(new.prompts, ["two"])


    def test_a_result_resume_failure_with_a_fresh_session_id_still_resets(self):
        """The failing result's new session id is not kept: the session is reset."""
        fx = self.make(meta={"session_id": "S-gone"})
        prompt = self.submit(fx, "one")
        [old] = self.reactor.spawned
        old.result("S-other", 0, subtype="error_during_execution", is_error=True, text=NOT_FOUND)
        self.assertIsNone(fx.project.session_id)
        self.assertIsNone(fx.meta()["session_id"])
        self.assertEqual(fx.finished(prompt)["status"], "failed")
        self.assertIn("session.reset", fx.kinds())

    def test_a_result_resume_failure_names_the_lost_session(self):
        """The error names the session that could not be resumed, not the CLI's new one."""
        fx = self.make(meta={"session_id": "S-gone"})
        prompt = self.submit(fx, "one")
        [old] = self.reactor.spawned
        old.result("S-other", 0, subtype="error_during_execution", is_error=True, text=NOT_FOUND)
        self.assertIn("could not resume conversation S-gone", fx.finished(prompt)["error"])


class CancelTests(ProjectTestCase):
    def test_cancel_interrupts_and_a_result_within_grace_keeps_the_process(self):
        """Interrupt on stdin; the CLI's result: cancelled, and the process is reused."""
        fx = self.make()
        prompt = self.submit(fx, "one")
        [cli] = self.reactor.spawned
        cli.init("S-1")
        self.assertEqual(fx.project.cancel(None), [prompt])
        [interrupt] = cli.interrupts
        self.assertEqual(interrupt["request"], {"subtype": "interrupt"})
        self.assertIsNone(fx.finished(prompt))
        self.reactor.advance(CONFIG.kill_grace - EPSILON)
        cli.acknowledge_interrupt()
        cli.result("S-1", 0.02, subtype="error_during_execution", is_error=True, text=None)
        finished = fx.finished(prompt)
        self.assertEqual(finished["status"], "cancelled")
        self.assertEqual(finished["cost_usd"], 0.02)
        self.assertIsNone(finished["error"])
        self.reactor.advance(CONFIG.kill_grace)
        self.assertFalse(cli.transport.stdin_closed)
        second = self.submit(fx, "two")
        self.assertEqual(len(self.reactor.spawned), 1)
        self.assertEqual(cli.prompts, ["one", "two"])
        cli.result("S-1", 0.03)
        self.assertEqual(fx.finished(second)["status"], "completed")

    def test_cancel_with_a_result_ends_only_the_tools_started_during_the_prompt(self):
        """After the interrupt's result, the marker's tree minus the baseline is ended."""
        ends = self.end_tree()
        fx = self.make()
        self.submit(fx)
        [cli] = self.reactor.spawned
        fx.project.cancel(None)
        self.assertEqual(ends.calls, [])
        cli.result("S-1", subtype="error_during_execution", is_error=True, text=None)
        [call] = ends.calls
        self.assertEqual((call.pid, call.marker, call.grace), (None, cli.proto.marker, 5.0))
        self.assertEqual(call.exclude, [])  # the baseline of a fake pid is empty

    def test_cancel_escalates_to_ending_the_tree_after_kill_grace(self):
        """No result within kill_grace: the tree is ended; on exit, cancelled."""
        ends = self.end_tree()
        fx = self.make()
        prompt = self.submit(fx, "one")
        [cli] = self.reactor.spawned
        cli.init("S-1")
        fx.project.cancel(prompt)
        self.reactor.advance(CONFIG.kill_grace - EPSILON)
        self.assertEqual(ends.calls, [])
        self.assertFalse(cli.transport.stdin_closed)
        self.reactor.advance(EPSILON)
        [call] = ends.calls
        self.assertEqual((call.pid, call.marker), (cli.transport.pid, cli.proto.marker))
        self.assertTrue(cli.transport.stdin_closed)
        self.assertIsNone(fx.finished(prompt))
        cli.exit(None, signal.SIGTERM)
        finished = fx.finished(prompt)
        self.assertEqual(finished["status"], "cancelled")
        self.assertIsNone(finished["error"])
        self.assertFalse(self.supervisor.holds(fx.project))
        second = self.submit(fx, "two")
        [_, new] = self.reactor.spawned
        self.assertEqual(new.argv[-2:], ["--resume", "S-1"])
        self.assertEqual(fx.started(second)[0]["session_id"], "S-1")

    def test_a_result_printed_while_dying_does_not_hand_the_process_on(self):
        """After escalation, a late result finishes the prompt; the next one gets a new CLI."""
        self.end_tree()
        fx = self.make()
        first = fx.project.submit("one", {}, ())["prompt_id"]
        second = fx.project.submit("two", {}, ())["prompt_id"]
        self.reactor.advance(0)
        [cli] = self.reactor.spawned
        cli.init("S-1")
        fx.project.cancel(first)
        self.reactor.advance(CONFIG.kill_grace)
        # The CLI answers the interrupt only now, with its input closed.
        cli.result("S-1", subtype="error_during_execution", is_error=True)
        self.assertEqual(fx.finished(first)["status"], "cancelled")
        self.assertEqual(cli.prompts, ["one"])
        self.assertEqual(fx.started(second), [])
        cli.exit(None, signal.SIGTERM)
        self.reactor.advance(0)
        [_, new] = self.reactor.spawned
        self.assertEqual(new.argv[-2:], ["--resume", "S-1"])
        self.assertEqual(new.prompts, ["two"])
        self.assertIsNone(fx.finished(second))

    def test_cancel_escalation_through_the_real_process_table(self):
        """With the real proctree, the escalation closes stdin and waits for the exit."""
        fx = self.make()
        prompt = self.submit(fx)
        [cli] = self.reactor.spawned
        fx.project.cancel(None)
        self.reactor.advance(CONFIG.kill_grace)
        self.assertTrue(cli.transport.stdin_closed)
        self.assertIsNone(fx.finished(prompt))
        cli.exit(None, signal.SIGKILL)
        self.assertEqual(fx.finished(prompt)["status"], "cancelled")

    def test_cancelling_a_queued_prompt_removes_it_before_it_starts(self):
        """A queued prompt is cancelled at once and never started."""
        fx = self.make()
        first = fx.project.submit("one", {}, ())["prompt_id"]
        second = fx.project.submit("two", {}, ())["prompt_id"]
        self.reactor.advance(0)
        self.assertEqual(fx.project.cancel(second), [second])
        self.assertEqual(fx.finished(second)["status"], "cancelled")
        [cli] = self.reactor.spawned
        self.assertEqual(cli.interrupts, [])
        cli.result("S-1")
        self.assertEqual(fx.finished(first)["status"], "completed")
        self.assertEqual(fx.started(second), [])
        self.assertEqual(cli.prompts, ["one"])
        self.assertEqual(fx.meta()["open_prompts"], [])

    def test_cancelling_the_only_prompt_before_it_starts_spawns_nothing(self):
        """Cancelled in the same reactor turn as submitted: no process."""
        fx = self.make()
        prompt = fx.project.submit("one", {}, ())["prompt_id"]
        fx.project.cancel(prompt)
        self.reactor.advance(0)
        self.assertEqual(self.reactor.spawned, [])
        self.assertEqual(fx.finished(prompt)["status"], "cancelled")

    def test_cancelling_an_unknown_prompt_is_not_found(self):
        """An id that is neither running nor queued: not_found."""
        fx = self.make()
        prompt = self.submit(fx)
        self.reactor.spawned[0].result("S-1")
        for prompt_id in ("p-nope", prompt):
            e = self.assertRaises(RequestError, fx.project.cancel, prompt_id)
            self.assertEqual(e.code, "not_found")

    def test_cancelling_with_nothing_running_is_not_running(self):
        """Cancel without an id on an idle project: not_running."""
        fx = self.make()
        e = self.assertRaises(RequestError, fx.project.cancel, None)
        self.assertEqual(e.code, "not_running")

    def test_cancelling_twice_finishes_once(self):
        """A second cancel of a stopping prompt neither errors nor interrupts again."""
        fx = self.make()
        prompt = self.submit(fx)
        [cli] = self.reactor.spawned
        fx.project.cancel(prompt)
        fx.project.cancel(prompt)
        self.assertEqual(len(cli.interrupts), 1)
        cli.result("S-1", subtype="error_during_execution", is_error=True, text=None)
        self.assertEqual(len(fx.events("prompt.finished")), 1)


class TimeoutTests(ProjectTestCase):
    config = attrs.evolve(CONFIG, timeout=30.0)

    def test_timeout_interrupts_and_the_result_finishes_with_status_timeout(self):
        """After config.timeout the prompt is interrupted; its result says timeout."""
        fx = self.make(config=self.config)
        prompt = self.submit(fx)
        [cli] = self.reactor.spawned
        self.reactor.advance(30.0 - EPSILON)
        self.assertEqual(cli.interrupts, [])
        self.reactor.advance(EPSILON)
        self.assertEqual(len(cli.interrupts), 1)
        cli.result("S-1", 0.5, subtype="error_during_execution", is_error=True, text=None)
        finished = fx.finished(prompt)
        self.assertEqual(finished["status"], "timeout")
        self.assertEqual(finished["cost_usd"], 0.5)
        self.assertFalse(cli.transport.stdin_closed)

    def test_timeout_escalates_when_the_cli_ignores_the_interrupt(self):
        """No result after the interrupt: the tree is ended and the prompt times out."""
        ends = self.end_tree()
        fx = self.make(config=self.config)
        prompt = self.submit(fx)
        [cli] = self.reactor.spawned
        self.reactor.advance(30.0)
        self.reactor.advance(CONFIG.kill_grace - EPSILON)
        self.assertEqual(ends.calls, [])
        self.reactor.advance(EPSILON)
        self.assertEqual([c.pid for c in ends.calls], [cli.transport.pid])
        cli.exit(None, signal.SIGTERM)
        self.assertEqual(fx.finished(prompt)["status"], "timeout")

    def test_a_prompt_that_finishes_in_time_is_never_interrupted(self):
        """The timeout is cancelled by the result."""
        fx = self.make(config=self.config)
        self.submit(fx)
        [cli] = self.reactor.spawned
        cli.result("S-1")
        self.reactor.advance(1000)
        self.assertEqual(cli.interrupts, [])


class PermissionTests(ProjectTestCase):
    def running(self):
        fx = self.make()
        prompt = self.submit(fx)
        [cli] = self.reactor.spawned
        cli.init("S-1")
        return fx, prompt, cli

    def test_can_use_tool_publishes_a_permission_request(self):
        """The request is an event with prompt_id, request_id, tool and the CLI's fields."""
        fx, prompt, cli = self.running()
        cli.ask_permission("req-1", "Bash", {"command": "rm -rf build"})
        [request] = fx.events("permission.request")
        self.assertEqual(request["prompt_id"], prompt)
        self.assertEqual(request["request_id"], "req-1")
        self.assertEqual(request["tool_name"], "Bash")
        self.assertEqual(request["input"], {"command": "rm -rf build"})
        self.assertEqual(request["tool_use_id"], "toolu_01")
        self.assertEqual(request["permission_suggestions"], [{"type": "addRules"}])
        self.assertEqual(cli.control_responses, [])
        pending = fx.project.subscribe(Subscriber(), None)["pending_permissions"]
        self.assertEqual([p["request_id"] for p in pending], ["req-1"])

    def test_allow_sends_a_control_response_with_the_updated_input(self):
        """respond allow: control_response success with updatedInput on stdin."""
        fx, prompt, cli = self.running()
        cli.ask_permission("req-1")
        fx.project.permissions.respond(
            PermissionAnswer("req-1", "allow", updated_input={"command": "ls -la"})
        )
        self.assertEqual(
            cli.stdin[-1],
            {
                "type": "control_response",
                "response": {
                    "subtype": "success",
                    "request_id": "req-1",
                    "response": {"behavior": "allow", "updatedInput": {"command": "ls -la"}},
                },
            },
        )
        [resolved] = fx.events("permission.resolved")
        self.assertEqual(
            (resolved["request_id"], resolved["behavior"], resolved["by"]),
            ("req-1", "allow", "client"),
        )

    def test_allow_without_updated_input_passes_the_original_input(self):
        """updatedInput defaults to the tool input the CLI asked about."""
        fx, prompt, cli = self.running()
        cli.ask_permission("req-1", tool_input={"file_path": "/x"})
        fx.project.permissions.respond(PermissionAnswer("req-1", "allow"))
        self.assertEqual(cli.control_responses[-1]["response"]["updatedInput"], {"file_path": "/x"})

    def test_an_unanswered_permission_request_is_denied_after_the_timeout(self):
        """permission_timeout: deny on stdin, resolved by timeout."""
        fx, prompt, cli = self.running()
        cli.ask_permission("req-1")
        self.reactor.advance(CONFIG.permission_timeout - EPSILON)
        self.assertEqual(cli.control_responses, [])
        self.reactor.advance(EPSILON)
        [response] = cli.control_responses
        self.assertEqual(response["request_id"], "req-1")
        self.assertEqual(response["response"]["behavior"], "deny")
        self.assertEqual(fx.events("permission.resolved")[0]["by"], "timeout")
        e = self.assertRaises(
            RequestError, fx.project.permissions.respond, PermissionAnswer("req-1", "allow")
        )
        self.assertEqual(e.code, "not_found")

    def test_cancelling_the_prompt_denies_its_pending_requests(self):
        """Cancel: pending requests denied (by cancel), then the interrupt."""
        fx, prompt, cli = self.running()
        cli.ask_permission("req-1")
        fx.project.cancel(prompt)
        deny, interrupt = cli.stdin[-2:]
        self.assertEqual(deny["type"], "control_response")
        self.assertEqual(deny["response"]["request_id"], "req-1")
        self.assertEqual(deny["response"]["response"]["behavior"], "deny")
        self.assertEqual(interrupt["request"], {"subtype": "interrupt"})
        [resolved] = fx.events("permission.resolved")
        self.assertEqual((resolved["behavior"], resolved["by"]), ("deny", "cancel"))
        self.assertEqual(fx.project.permissions.pending(), [])

    def test_a_permission_request_with_no_prompt_running_is_denied_at_once(self):
        """A stray can_use_tool between prompts gets an immediate deny, no event."""
        fx, prompt, cli = self.running()
        cli.result("S-1")
        cli.ask_permission("req-late")
        [response] = cli.control_responses
        self.assertEqual(response["request_id"], "req-late")
        self.assertEqual(response["response"]["behavior"], "deny")
        self.assertEqual(fx.events("permission.request"), [])

    def test_a_dying_process_resolves_its_pending_requests(self):
        """The process exits with a request pending: resolved, nothing written."""
        fx, prompt, cli = self.running()
        cli.ask_permission("req-1")
        cli.exit(1)
        [resolved] = fx.events("permission.resolved")
        self.assertEqual(resolved["request_id"], "req-1")
        self.assertEqual(fx.project.permissions.pending(), [])


class SessionResetTests(ProjectTestCase):
    def test_reset_while_idle_clears_the_session_and_closes_the_process(self):
        """Idle reset: session None, event, idle process closed, next prompt fresh."""
        fx = self.make()
        self.submit(fx, "one")
        [old] = self.reactor.spawned
        self.complete(old, "S-1")
        fx.project.reset_session()
        self.assertIsNone(fx.project.session_id)
        self.assertIsNone(fx.meta()["session_id"])
        self.assertEqual(fx.kinds()[-1], "session.reset")
        self.assertTrue(old.transport.stdin_closed)
        old.exit(0)
        self.assertFalse(self.supervisor.holds(fx.project))
        second = self.submit(fx, "two")
        [_, new] = self.reactor.spawned
        self.assertEqual(new.argv, ["claude", *PROTOCOL_FLAGS])
        self.assertIsNone(fx.started(second)[0]["session_id"])

    def test_a_prompt_right_after_an_idle_reset_waits_for_the_old_process(self):
        """The old process is still closing: the new one starts after it ends."""
        fx = self.make()
        self.submit(fx, "one")
        [old] = self.reactor.spawned
        self.complete(old, "S-1")
        fx.project.reset_session()
        self.submit(fx, "two")
        self.assertEqual(len(self.reactor.spawned), 1)
        self.assertEqual(old.prompts, ["one"])
        old.exit(0)
        [_, new] = self.reactor.spawned
        self.assertNotIn("--resume", new.argv)
        self.assertEqual(new.prompts, ["two"])

    def test_a_closed_process_that_lingers_is_ended_after_kill_grace(self):
        """reset_session's close escalates to ending the tree after kill_grace."""
        ends = self.end_tree()
        fx = self.make()
        self.submit(fx, "one")
        [old] = self.reactor.spawned
        self.complete(old, "S-1")
        fx.project.reset_session()
        self.reactor.advance(CONFIG.kill_grace - EPSILON)
        self.assertEqual(ends.calls, [])
        self.reactor.advance(EPSILON)
        self.assertEqual([c.pid for c in ends.calls], [old.transport.pid])

    def test_reset_while_running_ignores_the_running_prompts_session(self):
        """Reset mid-prompt: its later session id is not stored; the next prompt gets a new process."""
        fx = self.make(meta={"session_id": "S-old"})
        first = fx.project.submit("one", {}, ())["prompt_id"]
        second = fx.project.submit("two", {}, ())["prompt_id"]
        self.reactor.advance(0)
        [old] = self.reactor.spawned
        old.init("S-old")
        fx.project.reset_session()
        self.assertIsNone(fx.project.session_id)
        self.assertFalse(old.transport.stdin_closed)
        self.assertEqual(fx.project.describe()["status"], "running")
        old.result("S-old-2", 0.01)
        self.assertIsNone(fx.project.session_id)
        self.assertIsNone(fx.meta()["session_id"])
        finished = fx.finished(first)
        self.assertEqual(finished["status"], "completed")
        self.assertIsNone(finished["session_id"])
        self.assertTrue(old.transport.stdin_closed)
        self.assertEqual(old.prompts, ["one"])
        old.exit(0)
        [_, new] = self.reactor.spawned
        self.assertEqual(new.argv, ["claude", *PROTOCOL_FLAGS])
        self.assertEqual(new.prompts, ["two"])
        self.assertIsNone(fx.started(second)[0]["session_id"])

    def test_a_prompt_queued_before_a_reset_keeps_the_new_conversation(self):
        """The first prompt started after a reset records the new conversation's session id."""
        fx = self.make(meta={"session_id": "S-old"})
        fx.project.submit("one", {}, ())
        second = fx.project.submit("two", {}, ())["prompt_id"]
        self.reactor.advance(0)
        [old] = self.reactor.spawned
        fx.project.reset_session()
        old.result("S-old")
        old.exit(0)
        [_, new] = self.reactor.spawned
        new.init("S-new")
        new.result("S-new")
        self.assertEqual(fx.finished(second)["session_id"], "S-new")
        self.assertEqual(fx.project.session_id, "S-new")


class ShutdownTests(ProjectTestCase):
    def test_shutdown_interrupts_everything_and_fires_once_the_process_ends(self):
        """Running and queued prompts: interrupted; interrupt, end of tree; fires on exit."""
        fx = self.make()
        first = fx.project.submit("one", {}, ())["prompt_id"]
        second = fx.project.submit("two", {}, ())["prompt_id"]
        self.reactor.advance(0)
        [cli] = self.reactor.spawned
        cli.init("S-1")
        d = fx.project.shutdown()
        for prompt in (first, second):
            finished = fx.finished(prompt)
            self.assertEqual(finished["status"], "interrupted")
            self.assertEqual(finished["error"], "the server is shutting down")
        self.assertEqual(fx.started(second), [])
        self.assertEqual(len(cli.interrupts), 1)
        self.assertTrue(cli.transport.stdin_closed)
        self.assertNoResult(d)
        cli.exit(None, signal.SIGTERM)
        # Then what the exited CLI might have left behind is looked for.
        self.reactor.advance(1)
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(fx.meta()["open_prompts"], [])
        self.assertEqual(fx.meta()["markers"], [])
        self.assertEqual(len(self.reactor.spawned), 1)
        self.assertFalse(self.supervisor.holds(fx.project))
        e = self.assertRaises(RequestError, fx.project.submit, "three", {}, ())
        self.assertEqual(e.code, "internal")

    def test_shutdown_ends_the_process_tree(self):
        """shutdown() ends the CLI's tree by pid and marker."""
        ends = self.end_tree()
        fx = self.make()
        self.submit(fx)
        [cli] = self.reactor.spawned
        fx.project.shutdown()
        self.assertIn((cli.transport.pid, cli.proto.marker), [(c.pid, c.marker) for c in ends.calls])

    def test_shutdown_without_a_process_fires_at_once(self):
        """Nothing running: the Deferred has fired."""
        fx = self.make()
        self.assertIsNone(self.successResultOf(fx.project.shutdown()))

    def test_shutdown_with_cancelled_status_is_for_deletion(self):
        """Deletion records the prompts as cancelled, without an error."""
        fx = self.make()
        prompt = self.submit(fx)
        d = fx.project.shutdown("cancelled")
        self.reactor.spawned[0].exit(None, signal.SIGTERM)
        self.successResultOf(d)
        finished = fx.finished(prompt)
        self.assertEqual((finished["status"], finished["error"]), ("cancelled", None))


class RecoverTests(ProjectTestCase):
    def test_recover_finishes_the_open_prompts_as_interrupted(self):
        """Open prompts in metadata become prompt.finished interrupted; markers ended."""
        ends = self.end_tree()
        fx = self.make(meta={"session_id": "S-1", "open_prompts": ["p-a", "p-b"],
                             "markers": ["m-1"]})
        d = fx.project.recover()
        self.successResultOf(d)
        finished = fx.events("prompt.finished")
        self.assertEqual([e["prompt_id"] for e in finished], ["p-a", "p-b"])
        for e in finished:
            self.assertEqual(e["status"], "interrupted")
            self.assertEqual(e["session_id"], "S-1")
            self.assertTrue(e["error"])
        self.assertEqual(fx.meta()["open_prompts"], [])
        self.assertEqual(fx.meta()["markers"], [])
        self.assertEqual([(c.pid, c.marker) for c in ends.calls], [(None, "m-1")])

    def test_a_crashed_servers_prompts_are_interrupted_by_its_successor(self):
        """Crash mid-prompt; a Project from the stored metadata settles them (real proctree)."""
        fx = self.make()
        first = fx.project.submit("one", {}, ())["prompt_id"]
        second = fx.project.submit("two", {}, ())["prompt_id"]
        self.reactor.advance(0)
        self.reactor.spawned[0].init("S-1")
        meta = fx.meta()
        self.assertEqual(meta["open_prompts"], [first, second])
        last = fx.history.last_seq
        fx.history.close()  # the server died here
        self.reactor = ProcessReactor()
        again = self.make(meta=meta, directory=fx.directory,
                          supervisor=Supervisor(4, 600.0, reactor=self.reactor))
        d = again.project.recover()
        self.successResultOf(d)
        self.assertEqual(again.project.session_id, "S-1")
        finished = again.events("prompt.finished")
        self.assertEqual([(e["prompt_id"], e["status"]) for e in finished],
                         [(first, "interrupted"), (second, "interrupted")])
        self.assertEqual([e["seq"] for e in finished], [last + 1, last + 2])
        self.assertEqual(again.meta()["open_prompts"], [])
        self.assertEqual(self.reactor.spawned, [])


class SupervisorTests(ProjectTestCase):
    def setUp(self):
        super().setUp()
        self.supervisor = Supervisor(max_running=1, idle_timeout=600.0, reactor=self.reactor)

    def test_a_second_project_starts_only_after_the_first_process_is_gone(self):
        """max_running=1: B waits, A is evicted when idle, B spawns after A exits."""
        a, b = self.make("a"), self.make("b")
        self.submit(a, "for a")
        [cli_a] = self.reactor.spawned
        prompt_b = self.submit(b, "for b")
        self.assertEqual(b.events("prompt.queued")[0]["position"], 0)
        self.assertEqual(b.started(prompt_b), [])
        self.assertEqual(self.supervisor.waiting, 1)
        cli_a.init("S-a")
        cli_a.result("S-a")
        self.assertTrue(cli_a.transport.stdin_closed, "the idle process was not evicted")
        self.assertEqual(len(self.reactor.spawned), 1)
        cli_a.exit(0)
        [_, cli_b] = self.reactor.spawned
        self.assertEqual(cli_b.prompts, ["for b"])
        self.assertEqual(len(b.started(prompt_b)), 1)
        self.assertEqual(self.reactor.max_live, 1)

    def test_an_evicted_process_that_lingers_is_ended_after_kill_grace(self):
        """The evicted process ignores the closed stdin: its tree is ended."""
        ends = self.end_tree()
        a, b = self.make("a"), self.make("b")
        self.submit(a)
        [cli_a] = self.reactor.spawned
        self.submit(b)
        cli_a.result("S-a")
        self.reactor.advance(CONFIG.kill_grace - EPSILON)
        self.assertEqual(ends.calls, [])
        self.reactor.advance(EPSILON)
        self.assertEqual([c.pid for c in ends.calls], [cli_a.transport.pid])
        self.assertEqual(len(self.reactor.spawned), 1)
        cli_a.exit(None, signal.SIGTERM)
        self.assertEqual(len(self.reactor.spawned), 2)
        self.assertEqual(self.reactor.max_live, 1)

    def test_the_evicted_project_resumes_on_its_next_prompt(self):
        """A's next prompt waits for B, then starts with --resume."""
        a, b = self.make("a"), self.make("b")
        self.submit(a, "a1")
        [cli_a] = self.reactor.spawned
        self.submit(b, "b1")
        cli_a.result("S-a")
        cli_a.exit(0)
        [_, cli_b] = self.reactor.spawned
        second = self.submit(a, "a2")
        self.assertEqual(a.started(second), [])
        cli_b.result("S-b")
        cli_b.exit(0)
        [_, _, cli_a2] = self.reactor.spawned
        self.assertEqual(cli_a2.argv[-2:], ["--resume", "S-a"])
        self.assertEqual(self.reactor.max_live, 1)

    def test_cancelling_a_prompt_waiting_for_a_slot_leaves_the_line(self):
        """A prompt waiting for a process slot is cancelled without starting."""
        a, b = self.make("a"), self.make("b")
        self.submit(a)
        prompt_b = self.submit(b)
        self.assertEqual(b.project.cancel(None), [prompt_b])
        self.assertEqual(b.finished(prompt_b)["status"], "cancelled")
        self.assertEqual(self.supervisor.waiting, 0)
        self.reactor.spawned[0].result("S-a")
        self.assertFalse(self.reactor.spawned[0].transport.stdin_closed)
        self.assertEqual(len(self.reactor.spawned), 1)
        self.assertEqual(b.started(prompt_b), [])

    def test_cancel_during_a_process_replacement_does_not_leak_the_slot(self):
        """After cancelling a prompt whose process was being replaced, the project still runs prompts."""
        ends = self.end_tree()
        fx = self.make()
        self.submit(fx, "one")
        [old] = self.reactor.spawned
        old.result("S-1")
        second = self.submit(fx, "two", flags=MODEL)
        self.assertTrue(ends.calls)
        fx.project.cancel(second)
        self.assertEqual(fx.finished(second)["status"], "cancelled")
        old.exit(None, signal.SIGTERM)
        self.reactor.advance(600)  # idle timeout
        third = self.submit(fx, "three")
        self.assertEqual(len(fx.started(third)), 1)

    def test_cancel_during_a_process_replacement_never_runs_two_processes(self):
        """The next prompt waits for the old process to end even when the one that replaced it is cancelled."""
        self.end_tree()
        fx = self.make()
        self.submit(fx, "one")
        [old] = self.reactor.spawned
        old.result("S-1")
        second = fx.project.submit("two", {}, MODEL)["prompt_id"]
        fx.project.submit("three", {}, MODEL)
        self.reactor.advance(0)
        fx.project.cancel(second)
        self.assertEqual(self.reactor.max_live, 1)


class IdleTests(ProjectTestCase):
    def setUp(self):
        super().setUp()
        self.supervisor = Supervisor(max_running=4, idle_timeout=60.0, reactor=self.reactor)

    def test_an_idle_process_is_closed_after_the_idle_timeout(self):
        """idle_timeout without work: stdin closed; after exit the slot is free."""
        fx = self.make()
        self.submit(fx)
        [cli] = self.reactor.spawned
        self.complete(cli, "S-1")
        self.reactor.advance(60.0 - EPSILON)
        self.assertFalse(cli.transport.stdin_closed)
        self.reactor.advance(EPSILON)
        self.assertTrue(cli.transport.stdin_closed)
        self.assertEqual(self.supervisor.state(fx.project), "closing")
        cli.exit(0)
        self.assertFalse(self.supervisor.holds(fx.project))
        self.assertEqual(fx.meta()["markers"], [])
        self.submit(fx, "two")
        self.assertEqual(self.reactor.spawned[-1].argv[-2:], ["--resume", "S-1"])

    def test_an_idle_process_that_does_not_exit_is_ended_after_kill_grace(self):
        """Closed stdin ignored for kill_grace: the tree is ended."""
        ends = self.end_tree()
        fx = self.make()
        self.submit(fx)
        [cli] = self.reactor.spawned
        cli.result("S-1")
        self.reactor.advance(60.0)
        self.assertTrue(cli.transport.stdin_closed)
        self.reactor.advance(CONFIG.kill_grace - EPSILON)
        self.assertEqual(ends.calls, [])
        self.reactor.advance(EPSILON)
        self.assertEqual([(c.pid, c.marker) for c in ends.calls],
                         [(cli.transport.pid, cli.proto.marker)])
        cli.exit(None, signal.SIGTERM)
        self.assertFalse(self.supervisor.holds(fx.project))

    def test_a_process_that_exits_when_closed_is_not_ended_later(self):
        """A closed process that exits within kill_grace is not terminated afterwards."""
        ends = self.end_tree()
        fx = self.make()
        self.submit(fx)
        [cli] = self.reactor.spawned
        cli.result("S-1")
        self.reactor.advance(60.0)
        cli.exit(0)
        self.reactor.advance(CONFIG.kill_grace)
        # Only what its tools may have left is looked for, by marker.
        self.assertEqual([(c.pid, c.marker) for c in ends.calls], [(None, cli.proto.marker)])

    def test_what_an_exited_process_left_is_ended_and_its_marker_kept_until_then(self):
        """A CLI that exits by itself: its marker is ended, then forgotten."""
        fx = self.make()
        ending = defer.Deferred()
        calls = []

        def end(pid, marker, **kwargs):
            calls.append((pid, marker))
            return ending

        self.trees.end = end
        self.submit(fx)
        [cli] = self.reactor.spawned
        cli.result("S-1")
        marker = cli.proto.marker
        cli.exit(0)
        self.assertEqual(calls, [(None, marker)])
        self.assertEqual(fx.meta()["markers"], [marker])
        ending.callback([])
        self.assertEqual(fx.meta()["markers"], [])

    def test_a_busy_process_is_not_closed(self):
        """The idle timer does not run while a prompt runs."""
        fx = self.make()
        self.submit(fx)
        [cli] = self.reactor.spawned
        self.reactor.advance(120.0)
        self.assertFalse(cli.transport.stdin_closed)


class ObserveTests(ProjectTestCase):
    """The observe hook (the notifications): told of every stored event."""

    def observed(self):
        seen = []
        fx = self.make(observe=lambda project, event: seen.append((project, event)))
        return fx, seen

    def test_every_stored_event_is_observed_in_order(self):
        """Each stored event, with its project, in the order of the history."""
        fx, seen = self.observed()
        self.submit(fx)
        [cli] = self.reactor.spawned
        self.complete(cli)
        self.assertEqual([event.kind for _, event in seen], fx.kinds())
        self.assertTrue(all(project is fx.project for project, _ in seen))
        self.assertEqual(seen[-1][1].fields["status"], "completed")

    def test_an_event_that_was_not_stored_is_not_observed(self):
        """Nothing a client cannot be shown is notified either."""
        fx, seen = self.observed()

        def full(seq, line):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        # Metadata is written, the history refuses the prompt.queued event.
        self.patch(fx.history, "append", full)
        self.assertRaises(RequestError, fx.project.submit, "one", {}, ())
        self.assertEqual(fx.project.storage_problem(), NO_SPACE)
        self.assertEqual(seen, [])


class Disk:
    """
    Makes a project's storage fail like a full disk while C{full} is set:
    history appends and metadata writes raise ENOSPC, and store nothing.
    """

    def __init__(self, testcase, history, directory):
        self.full = False
        self.refused = 0
        append_many, write = history.append_many, metadata.write

        def failing_append(seq, lines):
            self._check()
            append_many(seq, lines)

        def failing_write(where, data):
            if where == directory:
                self._check()
            write(where, data)

        # append is append_many of one line.
        testcase.patch(history, "append_many", failing_append)
        testcase.patch(metadata, "write", failing_write)

    def _check(self):
        if self.full:
            self.refused += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


NO_SPACE = "cannot store events: [Errno 28] No space left on device"


class StorageFailureTests(ProjectTestCase):
    def broken_run(self, fx):
        """A prompt runs; the disk fills while it streams; its CLI obeys the interrupt."""
        disk = Disk(self, fx.history, fx.directory)
        prompt = self.submit(fx, "one")
        [cli] = self.reactor.spawned
        cli.init("S-1")
        disk.full = True
        cli.assistant("S-1", "lost")
        self.reactor.advance(0)
        return disk, prompt, cli

    def test_each_failed_write_is_reported(self):
        """write_failed hears of every write the disk refused (the metrics count them)."""
        failures = []
        fx = self.make(write_failed=failures.append)
        self.broken_run(fx)
        self.assertTrue(failures)
        self.assertTrue(all(isinstance(e, OSError) for e in failures))

    def test_a_failed_write_fails_the_running_prompt_and_stops_its_cli(self):
        """The CLI is interrupted; its prompt finishes failed, naming the cause."""
        fx = self.make()
        disk, prompt, cli = self.broken_run(fx)
        self.assertEqual(len(cli.interrupts), 1)
        cli.result("S-1", subtype="error_during_execution", is_error=True, text=None)
        self.assertFalse(fx.project.running)
        self.assertIsNone(fx.finished(prompt))  # not stored yet: not sent either
        disk.full = False
        self.reactor.advance(STORAGE_RETRY)
        finished = fx.finished(prompt)
        self.assertEqual((finished["status"], finished["error"]), ("failed", NO_SPACE))
        self.assertEqual(fx.meta()["open_prompts"], [])

    def test_events_that_could_not_be_stored_are_never_sent(self):
        """Subscribers get exactly the stored events, gap-free, nothing else."""
        fx = self.make()
        disk, prompt, cli = self.broken_run(fx)
        cli.result("S-1", subtype="error_during_execution", is_error=True, text=None)
        disk.full = False
        self.reactor.advance(STORAGE_RETRY)
        events = fx.events()
        self.assertEqual(fx.subscriber.lines, [line for _, line in fx.history.read_since(0)])
        self.assertEqual([e["seq"] for e in events], list(range(1, len(events) + 1)))
        self.assertEqual(
            [e["event"] for e in events],
            ["prompt.queued", "prompt.started", "claude", "prompt.finished"],
        )
        self.assertNotIn("lost", str(events))

    def test_new_prompts_are_refused_naming_the_cause_until_writes_work(self):
        """submit raises internal with the OS error; it is accepted once space is back."""
        fx = self.make()
        disk, prompt, cli = self.broken_run(fx)
        cli.result("S-1", subtype="error_during_execution", is_error=True, text=None)
        e = self.assertRaises(RequestError, fx.project.submit, "two", {}, ())
        self.assertEqual((e.code, e.message), ("internal", NO_SPACE))
        self.assertEqual(fx.meta()["open_prompts"], [prompt])
        disk.full = False
        second = self.submit(fx, "two")
        # What waited comes first, then the new prompt.
        self.assertEqual(
            [(e["event"], e["prompt_id"]) for e in fx.events()][-3:],
            [("prompt.finished", prompt), ("prompt.queued", second),
             ("prompt.started", second)],
        )
        self.assertEqual(cli.prompts, ["one", "two"])

    def test_a_refused_prompt_leaves_no_trace(self):
        """A prompt refused at submit is neither queued nor open, and never runs."""
        fx = self.make()
        fx.project.save()
        disk = Disk(self, fx.history, fx.directory)
        disk.full = True
        self.assertRaises(RequestError, fx.project.submit, "one", {}, ())
        self.reactor.advance(STORAGE_RETRY)
        disk.full = False
        self.reactor.advance(STORAGE_RETRY)
        self.assertEqual(self.reactor.spawned, [])
        self.assertEqual(fx.events(), [])
        self.assertEqual(fx.project.describe()["queue"], 0)
        self.assertEqual(fx.meta()["open_prompts"], [])

    def test_metadata_that_cannot_be_written_refuses_the_prompt(self):
        """An unrecorded open prompt could not be interrupted after a crash: refused."""
        fx = self.make()
        fails = [True]
        write = metadata.write

        def flaky(directory, data):
            if fails and data["open_prompts"]:
                raise OSError(errno.EIO, "Input/output error")
            write(directory, data)

        self.patch(metadata, "write", flaky)
        e = self.assertRaises(RequestError, fx.project.submit, "one", {}, ())
        self.assertEqual(e.code, "internal")
        self.assertEqual(fx.events(), [])

    def test_the_queue_waits_while_events_wait_and_resumes_on_its_own(self):
        """A queued prompt does not start on a broken disk; the retry timer resumes it."""
        fx = self.make()
        disk = Disk(self, fx.history, fx.directory)
        first = self.submit(fx, "one")
        second = self.submit(fx, "two")
        [cli] = self.reactor.spawned
        disk.full = True
        cli.init("S-1")
        self.reactor.advance(0)
        cli.result("S-1", subtype="error_during_execution", is_error=True, text=None)
        self.reactor.advance(STORAGE_RETRY * 3)
        self.assertEqual(cli.prompts, ["one"])
        self.assertFalse(fx.project.running)
        disk.full = False
        self.reactor.advance(STORAGE_RETRY)
        self.reactor.advance(0)
        self.assertEqual(fx.finished(first)["status"], "failed")
        self.assertEqual(cli.prompts, ["one", "two"])
        self.assertEqual(len(fx.started(second)), 1)
        self.complete(cli)
        self.assertEqual(fx.finished(second)["status"], "completed")
        self.assertEqual(fx.meta()["open_prompts"], [])

    def test_a_prompt_whose_start_cannot_be_stored_never_reaches_the_cli(self):
        """prompt.started refused: the prompt fails without running."""
        fx = self.make()
        disk = Disk(self, fx.history, fx.directory)
        fx.project.submit("one", {}, ())
        disk.full = True
        self.reactor.advance(0)
        [cli] = self.reactor.spawned
        self.assertEqual(cli.prompts, [])
        self.assertFalse(fx.project.running)
        disk.full = False
        self.reactor.advance(STORAGE_RETRY)
        [finished] = fx.events("prompt.finished")
        self.assertEqual((finished["status"], finished["error"]), ("failed", NO_SPACE))
        self.assertEqual(fx.started(finished["prompt_id"]), [])

    def test_a_cli_that_ignores_the_interrupt_is_ended(self):
        """No result within kill_grace: the tree is ended, the prompt fails all the same."""
        ends = self.end_tree()
        fx = self.make()
        disk, prompt, cli = self.broken_run(fx)
        self.reactor.advance(CONFIG.kill_grace)
        self.assertIn(cli.proto.marker, [c.marker for c in ends.calls])
        cli.exit(None, signal.SIGTERM)
        disk.full = False
        self.reactor.advance(STORAGE_RETRY)
        finished = fx.finished(prompt)
        self.assertEqual((finished["status"], finished["error"]), ("failed", NO_SPACE))

    def test_other_projects_keep_working(self):
        """One project's broken storage does not touch another's."""
        fx = self.make("a")
        other = self.make("b")
        disk, prompt, cli = self.broken_run(fx)
        second = self.submit(other, "hello")
        self.complete(self.reactor.spawned[-1])
        self.assertEqual(other.finished(second)["status"], "completed")
        self.assertIsNone(other.project.storage_problem())
        self.assertEqual(fx.project.storage_problem(), NO_SPACE)

    def test_a_crash_while_the_finish_waits_interrupts_the_prompt_exactly_once(self):
        """The unstored failure is lost with the server; the successor interrupts it once."""
        fx = self.make()
        disk, prompt, cli = self.broken_run(fx)
        cli.result("S-1", subtype="error_during_execution", is_error=True, text=None)
        disk.full = False
        meta = fx.meta()  # the server dies before any retry
        self.assertEqual(meta["open_prompts"], [prompt])
        fx.history.close()
        self.reactor = ProcessReactor()
        again = self.make(meta=meta, directory=fx.directory,
                          supervisor=Supervisor(4, 600.0, reactor=self.reactor))
        self.successResultOf(again.project.recover())
        [finished] = again.events("prompt.finished")
        self.assertEqual((finished["prompt_id"], finished["status"]), (prompt, "interrupted"))
        self.assertEqual(again.meta()["open_prompts"], [])

    def test_shutdown_on_a_broken_disk_leaves_the_prompts_open_on_record(self):
        """Interrupted events that cannot be stored keep the prompts open for the next start."""
        fx = self.make()
        first = fx.project.submit("one", {}, ())["prompt_id"]
        self.reactor.advance(0)
        disk = Disk(self, fx.history, fx.directory)
        disk.full = True
        fx.project.shutdown()
        fx.project.close()
        disk.full = False
        meta = fx.meta()
        self.assertEqual((meta["open_prompts"], meta["clean"]), ([first], False))
        self.assertEqual(fx.events("prompt.finished"), [])

    def test_a_prompt_that_lost_events_never_finishes_completed(self):
        """The CLI's success result right after a refused write: failed all the same."""
        fx = self.make()
        disk = Disk(self, fx.history, fx.directory)
        prompt = self.submit(fx, "one")
        [cli] = self.reactor.spawned
        cli.init("S-1")
        disk.full = True
        cli.assistant("S-1")
        cli.result("S-1")
        disk.full = False
        self.reactor.advance(STORAGE_RETRY)
        finished = fx.finished(prompt)
        self.assertEqual((finished["status"], finished["error"]), ("failed", NO_SPACE))
        self.assertEqual(cli.interrupts, [])


class ConfinementTests(ProjectTestCase):
    """
    The project's directory is checked again before a CLI starts there.
    """

    def swap(self, fx):
        """Issue 13's trick: the directory gone, a symlink out in its place."""
        outside = os.path.join(self.root, "outside")
        os.makedirs(outside, exist_ok=True)
        os.rename(fx.workdir, fx.workdir + ".away")
        os.symlink(outside, fx.workdir)
        return outside

    def test_a_symlink_swapped_in_fails_the_prompt_and_starts_nothing(self):
        """path_invalid in prompt.finished, no CLI, no prompt.started; the project says why."""
        fx = self.make()
        changes = []
        fx.project._on_change = changes.append
        outside = self.swap(fx)
        prompt = self.submit(fx)
        finished = fx.finished(prompt)
        self.assertEqual(finished["status"], "failed")
        self.assertTrue(finished["error"].startswith("path_invalid: "), finished["error"])
        self.assertIn(outside, finished["error"])
        self.assertEqual(self.reactor.spawned, [])
        self.assertEqual(fx.started(prompt), [])
        problem = fx.project.describe()["problem"]
        self.assertEqual("path_invalid: " + problem, finished["error"])
        self.assertIn(fx.project, changes)
        self.assertEqual(fx.meta()["markers"], [])
        self.assertEqual(fx.meta()["open_prompts"], [])

    def test_no_problem_while_the_directory_is_the_projects(self):
        """describe() carries problem: null for a sound project."""
        fx = self.make()
        self.assertIsNone(fx.project.describe()["problem"])
        self.complete(self.started_cli(fx))
        self.assertIsNone(fx.project.describe()["problem"])

    def started_cli(self, fx):
        self.submit(fx)
        [cli] = self.reactor.spawned
        return cli

    def test_an_older_projects_identity_is_recorded_at_its_first_start(self):
        """No device/inode in its metadata: taken, and saved, when the path checks out."""
        fx = self.make()
        self.assertNotIn("inode", fx.meta() or {})
        self.complete(self.started_cli(fx))
        st = os.stat(fx.workdir)
        self.assertEqual((fx.meta()["device"], fx.meta()["inode"]), (st.st_dev, st.st_ino))

    def test_a_recorded_identity_survives_in_metadata(self):
        """device and inode given at create stay in every later write."""
        st = self.workdir_stat()
        fx = self.make(meta={"device": st.st_dev, "inode": st.st_ino})
        fx.project.save()
        self.assertEqual((fx.meta()["device"], fx.meta()["inode"]), (st.st_dev, st.st_ino))

    def workdir_stat(self):
        """The stat of the directory L{make} will use, made beforehand."""
        workdir = os.path.join(self.root, "app", "work")
        os.makedirs(workdir)
        return os.stat(workdir)

    def test_a_directory_made_anew_under_the_same_name_is_refused(self):
        """Another inode than the one recorded: refused, the way out in the message."""
        st = self.workdir_stat()
        fx = self.make(meta={"device": st.st_dev, "inode": st.st_ino})
        os.rename(fx.workdir, fx.workdir + ".old")
        os.mkdir(fx.workdir)
        prompt = self.submit(fx)
        self.assertIn("create it again", fx.finished(prompt)["error"])
        self.assertEqual(self.reactor.spawned, [])
