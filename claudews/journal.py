"""
The log's account of prompts: a line at info when one is queued, starts
and finishes (project path, prompt id; at the end its status, duration and
cost), read from the project's stored events, as the notifications and
the metrics are (L{claudews.registry} passes every stored event to each).

Never the prompt's text, its options or any tool input: a log file may be
read by more people than the project.
"""

from twisted.logger import Logger

from claudews.events import PROMPT_FINISHED, PROMPT_QUEUED, PROMPT_STARTED, Event
from claudews.interfaces import ReactorTime


def _cost(value: object) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "$%.4f" % (value,)
    return "unknown"


class Journal:
    """
    Logs the life of every prompt.

    @param reactor: times a prompt from its start to its end (the CLI's own
        C{duration_ms} is missing when it never answered).
    """

    _log = Logger()

    def __init__(self, reactor: ReactorTime) -> None:
        self._reactor = reactor
        self._started: dict[tuple[str, str], float] = {}

    def observe(self, path: str, event: Event) -> None:
        """An event of the project at C{path} was stored."""
        prompt_id = event.prompt_id
        if prompt_id is None:
            return
        if event.kind == PROMPT_QUEUED:
            self._log.info(
                "Prompt {prompt_id} queued in {path} (position {position})",
                path=path, prompt_id=prompt_id, position=event.fields.get("position"),
            )
        elif event.kind == PROMPT_STARTED:
            self._started[(path, prompt_id)] = self._reactor.seconds()
            self._log.info("Prompt {prompt_id} started in {path}", path=path, prompt_id=prompt_id)
        elif event.kind == PROMPT_FINISHED:
            self._finished(path, prompt_id, event)

    def _finished(self, path: str, prompt_id: str, event: Event) -> None:
        started = self._started.pop((path, prompt_id), None)
        duration = None if started is None else self._reactor.seconds() - started
        self._log.info(
            "Prompt {prompt_id} finished in {path}: {status}, {duration_text}, cost {cost}",
            path=path,
            prompt_id=prompt_id,
            status=event.fields.get("status"),
            duration=duration,
            duration_text="never started" if duration is None else "took %.1f s" % (duration,),
            cost=_cost(event.fields.get("cost_usd")),
            cost_usd=event.fields.get("cost_usd"),
        )
