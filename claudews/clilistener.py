"""
Where what a CLI process says goes (L{claudews.runner.Listener}).

Every JSON object the CLI prints becomes a C{claude} event, every other
output an C{output} event, of the prompt the process runs; the
conversation it names becomes the project's; a C{can_use_tool} request
goes to the permission broker; the prompt's C{result}, or the process's
end, ends the prompt. A process that outlives its prompt (one being
stopped) still prints: its lines belong to the prompt that started last.
"""

from typing import Any, Callable, ContextManager

from claudews import events
from claudews.clisession import session_named
from claudews.events import Event
from claudews.permissions import PermissionBroker
from claudews.prompt import Prompt
from claudews.promptqueue import PromptQueue
from claudews.runner import ClaudeProcess

#: What a process asking with no prompt of its own running is told.
NO_PROMPT = "No prompt is running in claudews"


class CliListener:
    """
    @param publish: stores and sends a project event.
    @param session_seen: the CLI named the conversation C{prompt} runs in.
    @param process_gone: the process ended (before its prompt is told).
    @param save: write the project's record.
    @param batch: a context in which published events are stored together
        (L{claudews.eventlog.EventLog.batch}).
    """

    def __init__(
        self,
        *,
        queue: PromptQueue,
        permissions: PermissionBroker,
        publish: Callable[[Event], object],
        session_seen: Callable[[Prompt, str], None],
        process_gone: Callable[[ClaudeProcess], None],
        save: Callable[[], object],
        batch: Callable[[], ContextManager[object]],
    ) -> None:
        self._queue = queue
        self._permissions = permissions
        self._publish = publish
        self._session_seen = session_seen
        self._process_gone = process_gone
        self._save = save
        self._batch = batch

    def _prompt_of(self, process: ClaudeProcess) -> Prompt | None:
        prompt = self._queue.current
        return prompt if prompt is not None and prompt.process is process else None

    def _prompt_id(self, prompt: Prompt | None) -> str | None:
        owner = prompt or self._queue.last
        return owner.id if owner else None

    def cli_lines(self, process: ClaudeProcess) -> ContextManager[object]:
        return self._batch()

    def cli_message(
        self, process: ClaudeProcess, message: dict[str, Any], raw: bytes | None = None
    ) -> None:
        prompt = self._prompt_of(process)
        self._publish(events.claude(self._prompt_id(prompt), message, raw))
        if prompt is None:
            return
        session = session_named(message)
        if session is not None:
            self._session_seen(prompt, session)
        if message.get("type") == "result":
            prompt.result(message)

    def cli_output(self, process: ClaudeProcess, stream: str, text: str) -> None:
        prompt = self._prompt_of(process)
        self._publish(events.output(self._prompt_id(prompt), stream, text))

    def cli_permission(self, process: ClaudeProcess, request_id: str, request: dict[str, Any]) -> None:
        prompt = self._prompt_of(process)
        if prompt is None or prompt.finished:
            process.answer(request_id, {"behavior": "deny", "message": NO_PROMPT})
            return
        self._permissions.request(
            prompt.id, request_id, request, lambda response: process.answer(request_id, response)
        )

    def cli_exited(self, process: ClaudeProcess, exit_code: int | None, signal: int | None) -> None:
        self._process_gone(process)
        prompt = self._prompt_of(process)
        if prompt is not None:
            prompt.exited(exit_code, signal, process.stderr_tail)
        else:
            self._save()
