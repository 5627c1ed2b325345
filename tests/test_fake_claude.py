"""
Tests for tests/fake_claude.py, the fake CLI the integration tests drive:
it must speak the real CLI's stream-json shapes.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time

import psutil
from twisted.trial.unittest import SynchronousTestCase

FAKE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_claude.py")
STREAM_ARGS = [
    "-p", "--input-format", "stream-json", "--output-format", "stream-json",
    "--verbose", "--permission-prompt-tool", "stdio",
]
TIMEOUT = 10.0


def user(text):
    return {"type": "user", "message": {"role": "user", "content": text},
            "parent_tool_use_id": None, "session_id": ""}


def interrupt(request_id):
    return {"type": "control_request", "request_id": request_id,
            "request": {"subtype": "interrupt"}}


class FakeCLI:
    """One fake CLI process, read with timeouts so a bug cannot hang the suite."""

    def __init__(self, case, *args, home, stderr=subprocess.PIPE):
        self.home = home
        self.pidfile = os.path.join(home, "pids")
        self.popen = subprocess.Popen(
            [FAKE, *STREAM_ARGS, *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, cwd=home,
            env=dict(os.environ, HOME=home, FAKE_CLAUDE_PIDFILE=self.pidfile),
        )
        self.buffer = b""
        case.addCleanup(self.close)

    def send(self, message):
        self.popen.stdin.write(json.dumps(message).encode() + b"\n")
        self.popen.stdin.flush()

    def line(self):
        fd = self.popen.stdout.fileno()
        deadline = time.monotonic() + TIMEOUT
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise AssertionError("no output line within {}s".format(TIMEOUT))
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                raise AssertionError("stdout closed; got {!r}".format(self.buffer[:200]))
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line

    def message(self):
        return json.loads(self.line())

    def until(self, kind):
        """Messages up to and including the first one of type C{kind}."""
        messages = []
        while not messages or messages[-1]["type"] != kind:
            messages.append(self.message())
        return messages

    def finish(self):
        """Close stdin; return (exit code, rest of stdout, stderr)."""
        out, err = self.popen.communicate(timeout=TIMEOUT)
        return self.popen.returncode, self.buffer + out, err

    def tools(self):
        """The tool processes the fake recorded, still running."""
        try:
            with open(self.pidfile) as f:
                pids = [int(line) for line in f]
        except OSError:
            return []
        running = []
        for pid in pids:
            try:
                process = psutil.Process(pid)
                # Guard against a reused pid: ours carry this HOME.
                if process.environ().get("HOME") == self.home:
                    running.append(process)
            except psutil.Error:
                pass
        return running

    def close(self):
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.communicate(timeout=TIMEOUT)
        for process in self.tools():
            process.kill()


class FakeClaudeTests(SynchronousTestCase):
    """The fake CLI's behaviour, as the server sees it."""

    def setUp(self):
        # Not mktemp(): that is relative to the working directory, the repo.
        self.home = os.path.realpath(tempfile.mkdtemp(prefix="fake-claude-"))
        self.addCleanup(shutil.rmtree, self.home, True)

    def start(self, *args, **kw):
        return FakeCLI(self, *args, home=self.home, **kw)

    def test_version(self):
        """--version prints a version line and exits 0."""
        out = subprocess.run([FAKE, "--version"], capture_output=True, timeout=TIMEOUT)
        self.assertEqual((out.returncode, out.stdout), (0, b"2.1.0 (Claude Code)\n"))

    def test_unknown_flag_exits_1(self):
        """An unknown flag is an error on stderr and exit status 1."""
        out = subprocess.run([FAKE, *STREAM_ARGS, "--frobnicate"], capture_output=True,
                             timeout=TIMEOUT)
        self.assertEqual((out.returncode, out.stdout), (1, b""))
        self.assertIn(b"--frobnicate", out.stderr)

    def test_init_with_every_prompt_and_running_cost(self):
        """Init comes with every prompt, like the real CLI's; cost is a running total."""
        cli = self.start("--model", "m-test")
        cli.send(user("hello"))
        first = cli.until("result")
        cli.send(user("again"))
        second = cli.until("result")
        self.assertEqual([m["type"] for m in first], ["system", "assistant", "result"])
        self.assertEqual([m["type"] for m in second], ["system", "assistant", "result"])
        init = first[0]
        self.assertEqual((init["subtype"], init["model"], init["cwd"]),
                         ("init", "m-test", self.home))
        self.assertEqual(first[1]["message"]["content"],
                         [{"type": "text", "text": "turn 1: hello"}])
        self.assertEqual(second[-1]["result"], "turn 2: again")
        self.assertEqual([first[-1]["total_cost_usd"], second[-1]["total_cost_usd"]],
                         [0.01, 0.02])
        self.assertEqual({m["session_id"] for m in first + second}, {init["session_id"]})
        self.assertEqual(cli.finish()[0], 0)

    def test_resume_continues_turn_count(self):
        """A new process resuming a session continues its turn count."""
        cli = self.start()
        cli.send(user("one"))
        sid = cli.until("result")[-1]["session_id"]
        self.assertEqual(cli.finish()[0], 0)
        resumed = self.start("--resume", sid)
        resumed.send(user("two"))
        messages = resumed.until("result")
        self.assertEqual(messages[0]["session_id"], sid)
        self.assertEqual(messages[-1]["result"], "turn 2: two")
        self.assertEqual(messages[-1]["total_cost_usd"], 0.01)

    def test_resume_unknown_session_exits_1(self):
        """Resuming a session that does not exist fails like the real CLI."""
        cli = self.start("--resume", "0b7c6c4e-0000-4000-8000-000000000000")
        code, out, err = cli.finish()
        self.assertEqual(code, 1)
        [result] = [json.loads(line) for line in out.splitlines()]
        self.assertEqual((result["type"], result["subtype"], result["is_error"]),
                         ("result", "error_during_execution", True))
        self.assertEqual(result["errors"], [
            "No conversation found with session ID: 0b7c6c4e-0000-4000-8000-000000000000"])
        self.assertIn(b"No conversation found with session ID: 0b7c6c4e", err)

    def test_interrupt_fails_the_prompt_and_keeps_the_session(self):
        """An interrupt is answered, fails the running prompt, and the next prompt works."""
        cli = self.start()
        cli.send(user("slow:30"))
        self.assertEqual(cli.message()["subtype"], "init")
        cli.send(interrupt("int-1"))
        self.assertEqual(cli.message(), {"type": "control_response", "response": {
            "subtype": "success", "request_id": "int-1"}})
        result = cli.message()
        self.assertEqual((result["type"], result["subtype"], result["is_error"]),
                         ("result", "error_during_execution", True))
        cli.send(user("next"))
        self.assertEqual(cli.until("result")[-1]["result"], "turn 2: next")

    def test_interrupt_when_idle_only_answers(self):
        """An interrupt with nothing running gets just its control_response."""
        cli = self.start()
        cli.send(interrupt("int-2"))
        self.assertEqual(cli.message()["response"]["request_id"], "int-2")
        code, out, _ = cli.finish()
        self.assertEqual((code, out), (0, b""))

    def test_interrupt_kills_the_tool_process(self):
        """Interrupting a running tool ends the tool's process, started in its own session."""
        cli = self.start()
        cli.send(user("tool-sleep:30"))
        messages = cli.until("assistant")
        tool_use = messages[-1]["message"]["content"][0]
        self.assertEqual((tool_use["type"], tool_use["name"]), ("tool_use", "Bash"))
        [tool] = cli.tools()
        self.assertEqual(os.getsid(tool.pid), tool.pid)
        cli.send(interrupt("int-3"))
        self.assertEqual(cli.message()["type"], "control_response")
        self.assertEqual(cli.message()["subtype"], "error_during_execution")
        self.assertFalse(tool.is_running())

    def test_tool_sleep_completes_with_a_tool_result(self):
        """A short tool runs to completion and its result precedes the reply."""
        cli = self.start()
        cli.send(user("tool-sleep:0"))
        kinds = [(m["type"], m.get("subtype")) for m in cli.until("result")]
        self.assertEqual(kinds, [("system", "init"), ("assistant", None), ("user", None),
                                 ("assistant", None), ("result", "success")])

    def permission(self, answer):
        cli = self.start()
        cli.send(user("permission:Write"))
        request = cli.until("control_request")[-1]
        self.assertEqual(request["request"]["subtype"], "can_use_tool")
        self.assertEqual(request["request"]["tool_name"], "Write")
        cli.send({"type": "control_response", "response": {
            "subtype": "success", "request_id": request["request_id"], "response": answer}})
        return cli.until("result")[-1]

    def test_permission_allow_writes_the_file(self):
        """An allow answer applies updatedInput: the file is written."""
        target = os.path.join(self.home, "allowed.txt")
        result = self.permission({"behavior": "allow",
                                  "updatedInput": {"file_path": target, "content": "hi"}})
        self.assertEqual(result["result"], "allowed")
        with open(target) as f:
            self.assertEqual(f.read(), "hi")

    def test_permission_deny_reports_the_message(self):
        """A deny answer writes nothing and the reply carries the message."""
        result = self.permission({"behavior": "deny", "message": "not today"})
        self.assertEqual(result["result"], "denied: not today")
        self.assertFalse(os.path.exists(os.path.join(self.home, "out.txt")))

    def test_huge_crash_and_bad_lines(self):
        """A huge reply is one line; bad input is survived; crash exits 3 without a result."""
        cli = self.start()
        cli.send(user("huge:3000000"))
        assistant = cli.until("assistant")[-1]
        self.assertEqual(len(assistant["message"]["content"][0]["text"]), 3000000)
        cli.until("result")
        cli.popen.stdin.write(b"not json\n[1, 2]\n\n")
        cli.send(user("crash"))
        self.assertEqual(cli.until("assistant")[-1]["type"], "assistant")
        code, out, err = cli.finish()
        self.assertEqual((code, out), (3, b""))
        self.assertNotIn(b"Traceback", err)

    def test_sigterm_exits_143(self):
        """SIGTERM ends the fake with status 143."""
        cli = self.start()
        cli.send(user("slow:30"))
        cli.message()
        cli.popen.send_signal(signal.SIGTERM)
        self.assertEqual(cli.popen.wait(timeout=TIMEOUT), 143)

    def test_stderr_is_written(self):
        """stderr:BYTES writes that many bytes to stderr, in lines."""
        path = os.path.join(self.home, "stderr")
        with open(path, "wb") as stderr:
            cli = self.start(stderr=stderr)
        cli.send(user("stderr:250000"))
        cli.until("result")
        self.assertEqual(cli.finish()[0], 0)
        with open(path, "rb") as f:
            err = f.read()
        self.assertEqual(len(err), 250000)
        self.assertEqual(err.count(b"\n"), 2500)

    def test_grandchild_outlives_the_prompt_and_stdin(self):
        """A grandchild is left running in its own session after the result and after exit."""
        cli = self.start()
        cli.send(user("grandchild"))
        self.assertEqual(cli.until("result")[-1]["subtype"], "success")
        self.assertEqual(cli.finish()[0], 0)
        [leaked] = cli.tools()
        self.assertEqual(os.getsid(leaked.pid), leaked.pid)

    def test_ignore_term_survives_sigterm(self):
        """With ignore-term, SIGTERM is ignored and only SIGKILL ends the fake."""
        cli = self.start()
        cli.send(user("ignore-term"))
        cli.message()
        cli.popen.send_signal(signal.SIGTERM)
        # Answering after the signal was sent proves it was ignored.
        cli.send(interrupt("int-4"))
        self.assertEqual(cli.message()["type"], "control_response")
        self.assertEqual(cli.message()["subtype"], "error_during_execution")
        cli.popen.kill()
        self.assertEqual(cli.popen.wait(timeout=TIMEOUT), -signal.SIGKILL)

    def asked(self, prompt, answer):
        """
        Send C{prompt}, answer its can_use_tool with C{answer}: the request,
        the messages up to the result, and the answers the fake recorded.
        """
        cli = self.start()
        cli.send(user(prompt))
        request = cli.until("control_request")[-1]
        cli.send({"type": "control_response", "response": {
            "subtype": "success", "request_id": request["request_id"], "response": answer}})
        messages = cli.until("result")
        with open(os.path.join(self.home, ".fake-claude", "answers.jsonl")) as f:
            recorded = [json.loads(line) for line in f]
        return request["request"], messages, recorded

    def test_suggest_asks_like_the_real_cli_and_records_the_answer(self):
        """suggest:Write asks with the real CLI's fields; the answer is recorded verbatim."""
        rule = {"type": "setMode", "mode": "acceptEdits", "destination": "session"}
        answer = {"behavior": "allow", "updatedInput": {
            "file_path": os.path.join(self.home, "out.txt"), "content": "hello"},
            "updatedPermissions": [rule]}
        request, messages, recorded = self.asked("suggest:Write", answer)
        tool_result = messages[0]["message"]["content"][0]
        self.assertEqual(list(request), ["subtype", "tool_name", "display_name", "input",
                                         "description", "permission_suggestions", "tool_use_id"])
        self.assertEqual((request["tool_name"], request["display_name"], request["description"]),
                         ("Write", "Write", "out.txt"))
        self.assertEqual(request["permission_suggestions"], [rule])
        self.assertEqual(request["tool_use_id"], tool_result["tool_use_id"])
        self.assertEqual(messages[-1]["result"], "allowed always")
        self.assertEqual(recorded, [{"subtype": "success", "request_id": recorded[0]["request_id"],
                                     "response": answer}])
        with open(os.path.join(self.home, "out.txt")) as f:
            self.assertEqual(f.read(), "hello")

    def test_suggest_bash_suggests_a_rule(self):
        """suggest:Bash suggests an addRules rule; a plain allow is just allowed."""
        request, messages, _ = self.asked("suggest:Bash", {"behavior": "allow"})
        [suggestion] = request["permission_suggestions"]
        self.assertEqual((suggestion["type"], suggestion["rules"]),
                         ("addRules", [{"toolName": "Bash", "ruleContent": "echo hello"}]))
        self.assertEqual(messages[-1]["result"], "allowed")

    def test_ask_user_answers_come_back_in_the_tool_result(self):
        """ask-user asks AskUserQuestion; the answers in updatedInput reach the model."""
        def answer_for(questions):
            return {"behavior": "allow", "updatedInput": {"questions": questions, "answers": {
                questions[0]["question"]: "SQLite",
                questions[1]["question"]: "Migrations, Backups"}}}

        cli = self.start()
        cli.send(user("ask-user"))
        request = cli.until("control_request")[-1]
        self.assertEqual(request["request"]["tool_name"], "AskUserQuestion")
        self.assertIs(request["request"]["requires_user_interaction"], True)
        questions = request["request"]["input"]["questions"]
        self.assertEqual([q["multiSelect"] for q in questions], [False, True])
        self.assertEqual([o["label"] for o in questions[0]["options"]], ["SQLite", "PostgreSQL"])
        cli.send({"type": "control_response", "response": {
            "subtype": "success", "request_id": request["request_id"],
            "response": answer_for(questions)}})
        messages = cli.until("result")
        self.assertEqual(messages[-1]["result"], 'answered: "Which database should the app use?"='
                         '"SQLite" "What should come with it?"="Migrations, Backups"')
        self.assertIn('"SQLite"', messages[-3]["message"]["content"][0]["content"])

    def test_exit_plan_asks_with_the_plan(self):
        """exit-plan asks ExitPlanMode with the Markdown plan; an allow approves it."""
        request, messages, recorded = self.asked("exit-plan", {"behavior": "allow"})
        self.assertEqual(request["tool_name"], "ExitPlanMode")
        self.assertTrue(request["input"]["plan"].startswith("# Plan: a healthcheck\n"))
        self.assertTrue(request["input"]["planFilePath"].endswith(".md"))
        self.assertEqual(messages[-1]["result"], "plan approved")
        self.assertEqual(recorded[0]["response"], {"behavior": "allow"})

    def test_exit_plan_deny_reports_the_message(self):
        """A denied plan is a tool error carrying the message."""
        _, messages, _ = self.asked("exit-plan", {"behavior": "deny", "message": "smaller"})
        self.assertEqual(messages[-1]["result"], "denied: smaller")
        self.assertIs(messages[-3]["message"]["content"][0]["is_error"], True)
