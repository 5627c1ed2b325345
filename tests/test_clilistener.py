"""
Tests for L{claudews.clilistener}: what a project's CLI processes say
becomes events of the right prompt, permission requests, and ends.
"""

from contextlib import contextmanager
from typing import Any, Callable, Iterator

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from claudews import events
from claudews.clilistener import NO_PROMPT, CliListener
from claudews.promptqueue import PromptQueue
from tests.test_promptqueue import FakePrompt

SESSION = "0b3c6a52-3f0e-4f7e-9d7c-5a1f2e3d4c5b"
INIT = {"type": "system", "subtype": "init", "session_id": SESSION}
RESULT = {"type": "result", "subtype": "success", "is_error": False, "session_id": SESSION}
ASSISTANT = {"type": "assistant", "message": {"content": []}}
BASH = {"subtype": "can_use_tool", "tool_name": "Bash", "input": {"command": "ls"}}


class FakeProcess:
    """A CLI process as the listener sees it: answers sent to it, its stderr."""

    def __init__(self) -> None:
        self.answers: list[tuple[str, dict[str, Any]]] = []
        self.stderr_tail = "last words"

    def answer(self, request_id: str, response: dict[str, Any]) -> None:
        self.answers.append((request_id, response))


class FakeBroker:
    """A permission broker that keeps the requests it is given."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, Any], Callable[[dict[str, Any]], None]]] = []

    def request(
        self,
        prompt_id: str,
        request_id: str,
        request: dict[str, Any],
        answer: Callable[[dict[str, Any]], None],
    ) -> None:
        self.requests.append((prompt_id, request_id, request, answer))


class ListenerTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.queue = PromptQueue(
            reactor=self.clock, max_waiting=10, may_start=lambda: True, changed=lambda: None
        )
        self.broker = FakeBroker()
        self.published: list[events.Event] = []
        self.sessions: list[tuple[Any, str]] = []
        #: What the project was told, in order, across callables.
        self.told: list[tuple[Any, ...]] = []
        self.listener = CliListener(
            queue=self.queue,
            permissions=self.broker,  # type: ignore[arg-type]
            publish=self.published.append,
            session_seen=lambda prompt, session: self.sessions.append((prompt, session)),
            process_gone=lambda process: self.told.append(("gone", process)),
            save=lambda: self.told.append(("save",)),
            batch=self.batch,
        )
        self.process = FakeProcess()

    @contextmanager
    def batch(self) -> Iterator[None]:
        self.told.append(("batch",))
        yield
        self.told.append(("batch done",))

    def running(self, prompt_id: str, process: object) -> FakePrompt:
        """A prompt that runs in C{process}."""
        prompt = FakePrompt(prompt_id, process, log=self.told)
        self.queue.add(prompt)  # type: ignore[arg-type]
        self.clock.advance(0)
        self.assertIs(self.queue.current, prompt)
        del prompt.calls[:]
        del self.told[:]
        return prompt

    def finished(self, prompt_id: str, process: object) -> FakePrompt:
        """A prompt that ran in C{process}, the last started, now done."""
        prompt = self.running(prompt_id, process)
        prompt.finish()
        self.assertIsNone(self.queue.current)
        return prompt


class MessageTests(ListenerTestCase):
    def test_a_message_is_a_claude_event_of_the_running_prompt(self) -> None:
        """A JSON line of the running prompt's process is a claude event of it."""
        prompt = self.running("p-1", self.process)
        self.listener.cli_message(self.process, ASSISTANT)  # type: ignore[arg-type]
        self.assertEqual(self.published, [events.claude("p-1", ASSISTANT)])
        self.assertEqual(prompt.calls, [])
        self.assertEqual(self.sessions, [])

    def test_a_message_of_another_process_belongs_to_the_last_started(self) -> None:
        """A process that outlived its prompt still speaks for the last started."""
        prompt = self.finished("p-1", FakeProcess())
        self.listener.cli_message(self.process, RESULT)  # type: ignore[arg-type]
        self.assertEqual(self.published, [events.claude("p-1", RESULT)])
        self.assertEqual(prompt.calls, [])
        self.assertEqual(self.sessions, [])

    def test_a_message_while_another_process_runs_belongs_to_that_prompt(self) -> None:
        """The last started prompt, though its process is another, owns the line."""
        old = FakeProcess()
        prompt = self.running("p-2", FakeProcess())
        self.listener.cli_message(old, RESULT)  # type: ignore[arg-type]
        self.assertEqual(self.published, [events.claude("p-2", RESULT)])
        self.assertEqual(prompt.calls, [])

    def test_a_message_before_any_prompt_has_no_prompt(self) -> None:
        """With no prompt ever started, the event's prompt_id is None."""
        self.listener.cli_message(self.process, ASSISTANT)  # type: ignore[arg-type]
        self.assertEqual(self.published, [events.claude(None, ASSISTANT)])

    def test_a_named_session_is_seen_for_the_prompt(self) -> None:
        """A system/init naming a conversation: session_seen of the prompt."""
        prompt = self.running("p-1", self.process)
        self.listener.cli_message(self.process, INIT)  # type: ignore[arg-type]
        self.assertEqual(self.sessions, [(prompt, SESSION)])
        self.assertEqual(prompt.calls, [])

    def test_a_result_ends_the_prompt(self) -> None:
        """The prompt's result is published, its session seen, then given to it."""
        prompt = self.running("p-1", self.process)
        self.listener.cli_message(self.process, RESULT)  # type: ignore[arg-type]
        self.assertEqual(self.published, [events.claude("p-1", RESULT)])
        self.assertEqual(self.sessions, [(prompt, SESSION)])
        self.assertEqual(prompt.calls, [("result", RESULT)])


class OutputTests(ListenerTestCase):
    def test_output_is_an_output_event_of_the_running_prompt(self) -> None:
        """Non-JSON output of the prompt's process is an output event of it."""
        self.running("p-1", self.process)
        self.listener.cli_output(self.process, "stderr", "warning\n")  # type: ignore[arg-type]
        self.assertEqual(self.published, [events.output("p-1", "stderr", "warning\n")])

    def test_output_of_a_stray_process_belongs_to_the_last_started(self) -> None:
        """Output of a process with no prompt running goes to the last started."""
        self.finished("p-1", self.process)
        self.listener.cli_output(self.process, "stdout", "junk")  # type: ignore[arg-type]
        self.assertEqual(self.published, [events.output("p-1", "stdout", "junk")])

    def test_output_before_any_prompt_has_no_prompt(self) -> None:
        """With no prompt ever started, output's prompt_id is None."""
        self.listener.cli_output(self.process, "stderr", "x")  # type: ignore[arg-type]
        self.assertEqual(self.published, [events.output(None, "stderr", "x")])


class PermissionTests(ListenerTestCase):
    def test_can_use_tool_goes_to_the_broker(self) -> None:
        """A permission request of the running prompt goes to the broker."""
        self.running("p-1", self.process)
        self.listener.cli_permission(self.process, "r-1", BASH)  # type: ignore[arg-type]
        [(prompt_id, request_id, request, _)] = self.broker.requests
        self.assertEqual((prompt_id, request_id, request), ("p-1", "r-1", BASH))
        self.assertEqual(self.process.answers, [])

    def test_the_brokers_answer_reaches_the_asking_process(self) -> None:
        """The broker's answer goes to the process that asked, for that request."""
        self.running("p-1", self.process)
        self.listener.cli_permission(self.process, "r-1", BASH)  # type: ignore[arg-type]
        answer = self.broker.requests[0][3]
        answer({"behavior": "allow", "updatedInput": {}})
        self.assertEqual(self.process.answers, [("r-1", {"behavior": "allow", "updatedInput": {}})])

    def test_a_request_with_no_prompt_running_is_denied_at_once(self) -> None:
        """A process with no prompt of its own running is denied, not asked about."""
        self.finished("p-1", self.process)
        self.listener.cli_permission(self.process, "r-1", BASH)  # type: ignore[arg-type]
        self.assertEqual(self.process.answers, [("r-1", {"behavior": "deny", "message": NO_PROMPT})])
        self.assertEqual(self.broker.requests, [])

    def test_a_request_of_another_process_is_denied(self) -> None:
        """A process that is not the running prompt's is denied."""
        self.running("p-1", FakeProcess())
        self.listener.cli_permission(self.process, "r-1", BASH)  # type: ignore[arg-type]
        self.assertEqual(self.process.answers, [("r-1", {"behavior": "deny", "message": NO_PROMPT})])
        self.assertEqual(self.broker.requests, [])

    def test_a_request_of_a_finished_prompt_is_denied(self) -> None:
        """A prompt that finished but is not yet done asks nobody."""
        prompt = self.running("p-1", self.process)
        prompt.finished = True
        self.listener.cli_permission(self.process, "r-1", BASH)  # type: ignore[arg-type]
        self.assertEqual(self.process.answers, [("r-1", {"behavior": "deny", "message": NO_PROMPT})])
        self.assertEqual(self.broker.requests, [])


class ExitTests(ListenerTestCase):
    def test_exit_tells_the_project_then_the_prompt(self) -> None:
        """The process is gone first; then its prompt hears how it exited."""
        self.running("p-1", self.process)
        self.listener.cli_exited(self.process, 1, None)  # type: ignore[arg-type]
        self.assertEqual(
            self.told, [("gone", self.process), ("p-1", "exited", 1, None, "last words")]
        )

    def test_exit_with_no_prompt_running_saves(self) -> None:
        """A process whose prompt already finished: gone, then the record saved."""
        prompt = self.finished("p-1", self.process)
        del self.told[:]
        self.listener.cli_exited(self.process, None, 9)  # type: ignore[arg-type]
        self.assertEqual(self.told, [("gone", self.process), ("save",)])
        self.assertEqual(prompt.calls, [])

    def test_exit_of_another_process_does_not_end_the_running_prompt(self) -> None:
        """The running prompt is not told of a process that was not its own."""
        prompt = self.running("p-1", FakeProcess())
        self.listener.cli_exited(self.process, 0, None)  # type: ignore[arg-type]
        self.assertEqual(self.told, [("gone", self.process), ("save",)])
        self.assertEqual(prompt.calls, [])

    def test_exit_publishes_nothing(self) -> None:
        """The prompt, not the listener, says how it ended."""
        self.running("p-1", self.process)
        self.listener.cli_exited(self.process, 0, None)  # type: ignore[arg-type]
        self.assertEqual(self.published, [])
