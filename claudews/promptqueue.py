"""
The order of one project's prompts: one runs, the others wait their turn,
first come, first served.

A prompt leaves the queue when its turn comes (on a later reactor turn
than the one that queued it, so the reply to C{prompt} goes out first)
or when it is cancelled; the queue moves on when the running one has
finished, however it finished. The project says when nothing may start
(the server stops, the disk refuses events).
"""

from collections import deque
from typing import Callable, Iterator

from claudews.errors import RequestError
from claudews.events import CANCELLED
from claudews.interfaces import ReactorTime
from claudews.prompt import Prompt


class PromptQueue:
    """
    @param may_start: whether the next prompt may start now.
    @param changed: called after the queue or the running prompt changed.
    """

    def __init__(
        self,
        *,
        reactor: ReactorTime,
        max_waiting: int,
        may_start: Callable[[], bool],
        changed: Callable[[], object],
    ) -> None:
        self._reactor = reactor
        self._max = max_waiting
        self._may_start = may_start
        self._changed = changed
        self._waiting: deque[Prompt] = deque()
        #: The prompt whose turn it is, until it has finished.
        self.current: Prompt | None = None
        #: The prompt that started last (its process may still print).
        self.last: Prompt | None = None

    def __len__(self) -> int:
        """The prompts waiting, not the running one."""
        return len(self._waiting)

    def __iter__(self) -> Iterator[Prompt]:
        return iter(self._waiting)

    def position(self) -> int:
        """
        Where a prompt queued now would stand: 0 when it starts at once.
        Raises L{RequestError} C{queue_full} when it would wait beyond
        the bound.
        """
        # The head of the queue is about to start (on the next reactor turn)
        # when nothing runs: it is not waiting.
        waiting = len(self._waiting) - (0 if self.current else min(1, len(self._waiting)))
        if waiting >= self._max:
            raise RequestError(
                "queue_full", "%d prompts are already waiting in this project" % (self._max,)
            )
        return len(self._waiting) + (1 if self.current else 0)

    def add(self, prompt: Prompt) -> None:
        self._waiting.append(prompt)
        self._changed()
        self._reactor.callLater(0, self.pump)

    def pump(self) -> None:
        """
        Start the next prompt, if none runs and one may start.
        """
        if self.current is not None or not self._waiting or not self._may_start():
            return
        prompt = self.current = self.last = self._waiting.popleft()
        prompt.done.addBoth(self._finished)
        prompt.start()
        self._changed()

    def _finished(self, _: object) -> None:
        self.current = None
        self.pump()
        self._changed()

    def cancel(self, prompt_id: str | None) -> list[str]:
        """
        Cancel a waiting prompt, or the running one (without C{prompt_id},
        the running one); the ids cancelled.
        """
        current = self.current
        if prompt_id is None:
            if current is None or current.finished:
                raise RequestError("not_running", "no prompt is running")
            prompt_id = current.id
        for prompt in self._waiting:
            if prompt.id == prompt_id:
                self._waiting.remove(prompt)
                prompt.stop(CANCELLED)
                return [prompt_id]
        if current is not None and current.id == prompt_id and not current.finished:
            current.stop(CANCELLED)
            return [prompt_id]
        raise RequestError("not_found", "no running or queued prompt %r" % (prompt_id,))

    def shutdown(self, status: str, error: str | None) -> None:
        """
        End every prompt at once as C{status}: the waiting ones, then the
        running one.
        """
        while self._waiting:
            self._waiting.popleft().shutdown(status, error)
        if self.current is not None:
            self.current.shutdown(status, error)
