"""
Tests for claudews.runner: framing of the CLI's output and the control
protocol, over an in-memory process transport.
"""

import json
from contextlib import contextmanager

from twisted.internet import error
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from claudews import proctree, runner
from claudews.proctree import SystemTrees
from claudews.runner import ClaudeProcess


class Recorder:
    def __init__(self):
        self.messages = []
        self.raws = []
        self.outputs = []
        self.permissions = []
        self.exits = []
        #: The messages of each cli_lines context, one list per read.
        self.reads = []
        self._read = None

    def cli_message(self, process, message, raw=None):
        self.messages.append(message)
        self.raws.append(raw)
        if self._read is not None:
            self._read.append(message)

    @contextmanager
    def cli_lines(self, process):
        self._read = []
        yield
        self.reads.append(self._read)
        self._read = None

    def cli_output(self, process, stream, text):
        self.outputs.append((stream, text))

    def cli_permission(self, process, request_id, request):
        self.permissions.append((request_id, request))

    def cli_exited(self, process, exit_code, signal):
        self.exits.append((exit_code, signal))


class ProcessTransport(StringTransport):
    pid = 4242

    def __init__(self):
        super().__init__()
        self.stdin_closed = False

    def closeStdin(self):
        self.stdin_closed = True


def connected(max_line_bytes=1024 * 1024):
    listener = Recorder()
    clock = Clock()
    process = ClaudeProcess(
        listener, trees=SystemTrees(clock), reactor=clock, max_line_bytes=max_line_bytes
    )
    transport = ProcessTransport()
    process.makeConnection(transport)
    return process, listener, transport


def sent(transport):
    return [json.loads(line) for line in transport.value().splitlines()]


class ArgvTests(SynchronousTestCase):
    def test_argv_has_the_stream_json_flags_and_resume(self):
        """The CLI gets the protocol's fixed flags, --resume, then option flags."""
        argv = runner.build_argv("claude", "abc", ("--model", "opus"))
        self.assertEqual(
            argv,
            [
                "claude", "-p", "--input-format", "stream-json", "--output-format",
                "stream-json", "--verbose", "--permission-prompt-tool", "stdio",
                "--resume", "abc", "--model", "opus",
            ],
        )

    def test_no_resume_without_a_session(self):
        """A new conversation starts without --resume."""
        self.assertNotIn("--resume", runner.build_argv("claude", None, ()))

    def test_env_drops_nested_session_variables_and_adds_the_marker(self):
        """A nested-CLI variable is removed; operator env and the marker are added."""
        env = runner.build_env({"CLAUDECODE": "1", "PATH": "/bin"}, {"X": "y"}, "m1")
        self.assertEqual(env, {"PATH": "/bin", "X": "y", proctree.MARKER_ENV: "m1"})

    def test_env_holds_neither_the_servers_token_nor_its_settings(self):
        """CLAUDEWS_TOKEN and every other CLAUDEWS_* of the server stay out; the marker is set."""
        base = {
            "PATH": "/bin",
            "CLAUDEWS_TOKEN": "secret",
            "CLAUDEWS_CONFIG": "/etc/claudews.toml",
            proctree.MARKER_ENV: "the server's own marker",
            "NOT_CLAUDEWS_TOKEN": "kept",
        }
        env = runner.build_env(base, {}, "m1")
        self.assertEqual(
            env, {"PATH": "/bin", "NOT_CLAUDEWS_TOKEN": "kept", proctree.MARKER_ENV: "m1"}
        )
        self.assertNotIn("secret", env.values())


class FramingTests(SynchronousTestCase):
    def test_lines_split_across_chunks_are_joined(self):
        """A JSON line that arrives in pieces is one message."""
        process, listener, _ = connected()
        process.outReceived(b'{"type":"sys')
        process.outReceived(b'tem","a":1}\n{"type":"x"}\n{"ty')
        self.assertEqual(listener.messages, [{"type": "system", "a": 1}, {"type": "x"}])
        process.outReceived(b'pe":"y"}\n')
        self.assertEqual(listener.messages[-1], {"type": "y"})

    def test_the_lines_of_one_read_come_together(self):
        """
        The messages of one read are handed up inside one cli_lines context
        (their events are stored with one write); a read with no newline
        opens none.
        """
        process, listener, _ = connected()
        process.outReceived(b'{"type":"a"}\n{"type":"b"}\n{"type":"c"')
        process.outReceived(b',"x":1')
        process.outReceived(b'}\n')
        self.assertEqual(
            listener.reads,
            [[{"type": "a"}, {"type": "b"}], [{"type": "c", "x": 1}]],
        )

    def test_strict_json_lines_come_with_their_bytes(self):
        """
        A line that is strict JSON is handed up with its bytes (stripped),
        to be embedded in its event as it came; one that only the standard
        library takes (NaN, a lone surrogate) is not.
        """
        process, listener, _ = connected()
        process.outReceived(b'  {"type":"a","t":"\xc3\xa9"}\r\n')
        process.outReceived(b'{"type":"b","n":NaN}\n{"type":"c","s":"\\ud800"}\n')
        self.assertEqual(listener.raws, [b'{"type":"a","t":"\xc3\xa9"}', None, None])
        self.assertEqual(listener.messages[0], {"type": "a", "t": "\u00e9"})
        self.assertEqual(listener.messages[2], {"type": "c", "s": "\ud800"})

    def test_deeply_nested_json_is_output(self):
        """A line nested past what the parsers take is plain output, not a crash."""
        process, listener, _ = connected()
        process.outReceived(b"[" * 100000 + b"\n")
        self.assertEqual(listener.messages, [])
        self.assertEqual(len(listener.outputs), 1)

    def test_a_line_of_many_megabytes_is_one_message(self):
        """The CLI can print single lines of several MB."""
        process, listener, _ = connected(max_line_bytes=64 * 1024 * 1024)
        text = "x" * (5 * 1024 * 1024)
        line = json.dumps({"type": "assistant", "text": text}).encode() + b"\n"
        for i in range(0, len(line), 65536):
            process.outReceived(line[i : i + 65536])
        self.assertEqual(len(listener.messages), 1)
        self.assertEqual(len(listener.messages[0]["text"]), len(text))

    def test_a_line_over_the_bound_is_dropped_with_a_notice(self):
        """An over-long line becomes an output notice; the next line is fine."""
        process, listener, _ = connected(max_line_bytes=100)
        process.outReceived(b"{" + b"x" * 150)
        process.outReceived(b"y" * 150 + b'}\n{"type":"ok"}\n')
        self.assertEqual(listener.messages, [{"type": "ok"}])
        self.assertEqual(len(listener.outputs), 1)
        self.assertIn("dropped a stdout line of 302 bytes", listener.outputs[0][1])

    def test_non_json_lines_become_output(self):
        """Plain text and JSON that is not an object are output, not messages."""
        process, listener, _ = connected()
        process.outReceived(b"Error: refusing to run as root\n[1,2]\n\n")
        self.assertEqual(listener.messages, [])
        self.assertEqual(
            listener.outputs,
            [("stdout", "Error: refusing to run as root"), ("stdout", "[1,2]")],
        )

    def test_a_last_line_without_newline_is_delivered_at_exit(self):
        """Output cut off by the process's end is not lost."""
        process, listener, _ = connected()
        process.outReceived(b'{"type":"result"}')
        process.processEnded(Failure(error.ProcessDone(0)))
        self.assertEqual(listener.messages, [{"type": "result"}])

    def test_stderr_is_surfaced_then_capped(self):
        """stderr becomes output events until the cap, then is drained silently."""
        process, listener, _ = connected()
        process.errReceived(b"warning\n")
        self.assertEqual(listener.outputs, [("stderr", "warning\n")])
        for _ in range(40):
            process.errReceived(b"z" * 65536)
        texts = [t for s, t in listener.outputs]
        self.assertEqual(sum(len(t) for t in texts[1:-1]), runner.MAX_STDERR - 8)
        self.assertIn("not kept", texts[-1])
        count = len(listener.outputs)
        process.errReceived(b"more")
        self.assertEqual(len(listener.outputs), count)


class ControlTests(SynchronousTestCase):
    def test_prompt_is_a_stream_json_user_line(self):
        """A prompt goes to stdin as one user message line, never an argument."""
        process, _, transport = connected()
        process.send_prompt("--help me\nplease")
        self.assertEqual(
            sent(transport),
            [
                {
                    "type": "user",
                    "message": {"role": "user", "content": "--help me\nplease"},
                    "parent_tool_use_id": None,
                    "session_id": "",
                }
            ],
        )

    def test_interrupt_is_a_control_request(self):
        """Cancel sends the interrupt control request."""
        process, _, transport = connected()
        process.interrupt()
        [request] = sent(transport)
        self.assertEqual(request["type"], "control_request")
        self.assertEqual(request["request"], {"subtype": "interrupt"})

    def test_can_use_tool_is_reported_and_answered(self):
        """A permission request reaches the listener; the answer is a control_response."""
        process, listener, transport = connected()
        request = {"subtype": "can_use_tool", "tool_name": "Write", "input": {"a": 1}}
        process.outReceived(
            json.dumps({"type": "control_request", "request_id": "r1", "request": request}).encode()
            + b"\n"
        )
        self.assertEqual(listener.permissions, [("r1", request)])
        process.answer("r1", {"behavior": "allow", "updatedInput": {"a": 1}})
        self.assertEqual(
            sent(transport),
            [
                {
                    "type": "control_response",
                    "response": {
                        "subtype": "success",
                        "request_id": "r1",
                        "response": {"behavior": "allow", "updatedInput": {"a": 1}},
                    },
                }
            ],
        )

    def test_unknown_control_requests_are_refused(self):
        """A control request claudews does not handle gets an error response."""
        process, listener, transport = connected()
        process.outReceived(
            b'{"type":"control_request","request_id":"r2","request":{"subtype":"hook_callback"}}\n'
        )
        [answer] = sent(transport)
        self.assertEqual(answer["response"]["subtype"], "error")
        self.assertEqual(answer["response"]["request_id"], "r2")
        self.assertEqual(listener.permissions, [])

    def test_running_total_cost_is_kept(self):
        """total_cost_usd of each result is remembered for the next prompt's cost."""
        process, _, _ = connected()
        process.outReceived(b'{"type":"result","total_cost_usd":0.25}\n')
        self.assertEqual(process.total_cost, 0.25)

    def test_nothing_is_written_after_stdin_is_closed(self):
        """Writing to a process whose input is closed is refused, not an error."""
        process, _, transport = connected()
        process.close_stdin()
        self.assertTrue(transport.stdin_closed)
        self.assertFalse(process.send_prompt("late"))
        self.assertEqual(transport.value(), b"")

    def test_exit_code_is_reported(self):
        """The listener learns the exit code of a process that failed."""
        process, listener, _ = connected()
        reason = Failure(error.ProcessTerminated(exitCode=3))
        process.processExited(reason)
        process.processEnded(reason)
        self.assertEqual(listener.exits, [(3, None)])
        self.assertTrue(process.ended)
