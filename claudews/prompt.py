"""
One prompt's life, as an explicit state machine::

    queued --start--> waiting --granted--> starting --launched--> running
                         (a process slot)     (the process)         |
                                                            stop    |
                                               stopping <-----------+
                                                  |                 |
                                   result/exited  v    result/exited|
                                               finished <-----------+

Every state goes to C{finished} on C{stop} (before the CLI has the
prompt), C{shutdown} or C{crashed}, and C{finished} is reached exactly
once: that is where the C{prompt.finished} event is published, the
timers are cancelled and the process slot is handed back. Inputs that
can arrive late (a result after a cancel finished the prompt, a second
cancel) are named as ignored in the states where they mean nothing, so
an input no state expects fails loudly instead of being lost.
"""

from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Protocol

import attrs
from automat import TypeMachineBuilder
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from claudews import events
from claudews.clisession import RESUME_FAILED, exit_error, outcome
from claudews.errors import RequestError
from claudews.events import CANCELLED, FAILED, TIMEOUT, Event
from claudews.interfaces import DelayedCall, ProcessRoom, PromptHost, ReactorTime
from claudews.runner import ClaudeProcess

_log = Logger()


class Lifecycle(Protocol):
    """
    What can happen to a prompt: the inputs of its state machine.
    """

    def start(self) -> None:
        "Its turn came: wait for a process slot."

    def granted(self) -> None:
        "The project may run a process."

    def launched(self, process: ClaudeProcess) -> None:
        "A live process with the prompt's flags is there."

    def cannot_start(self, error: str) -> None:
        "No process could be started for it."

    def result(self, message: dict[str, Any]) -> None:
        "The CLI printed the C{result} that ends the prompt."

    def exited(self, exit_code: int | None, signal: int | None, stderr_tail: str) -> None:
        "Its process is gone before a C{result}."

    def stop(self, status: str, error: str | None) -> None:
        "Cancel, time out or fail it."

    def escalate(self) -> None:
        "The CLI did not answer the interrupt in time."

    def storage_lost(self, problem: str) -> None:
        "Some of its events could not be stored."

    def shutdown(self, status: str, error: str | None) -> None:
        "The project goes away: it ends as C{status} at once."

    def crashed(self, failure: Failure) -> None:
        "A bug: it fails rather than hang the queue."


@attrs.define(eq=False)
class Run:
    """
    The data of one prompt, and what its transitions do with it.
    """

    id: str
    text: str
    options: dict[str, Any]
    flags: tuple[str, ...]
    host: PromptHost
    room: ProcessRoom
    reactor: ReactorTime
    timeout: float
    kill_grace: float
    #: The session generation of the project when it was queued or started.
    session_generation: int
    machine: Lifecycle | None = None
    process: ClaudeProcess | None = None
    #: What it waits on (a slot, a process), cancelled when it stops.
    pending: defer.Deferred[Any] | None = None
    #: Whether it was granted the project's process slot.
    held: bool = False
    started: float | None = None
    stop_status: str | None = None
    stop_error: str | None = None
    #: Why some of its events are not stored, if some are not.
    lost: str | None = None
    finished: bool = False
    cost_base: float = 0.0
    #: What ran in its process's tree before it: found in a thread.
    baseline: Callable[[], defer.Deferred[list[Any]]] | None = None
    timeout_call: DelayedCall | None = None
    escalate_call: DelayedCall | None = None
    done: defer.Deferred[None] = attrs.Factory(defer.Deferred)

    @property
    def inputs(self) -> Lifecycle:
        assert self.machine is not None
        return self.machine

    def wait_for(self, d: defer.Deferred[Any], then: Callable[[Any], None]) -> None:
        """
        Wait, cancellably, for C{d}; a cancel is the prompt's own doing and
        ends nothing, an L{OSError} means no process could be started, a
        L{RequestError} that none may be (its text is the prompt's error),
        any other failure fails the prompt.
        """
        self.pending = d
        d.addCallbacks(then, self._not_there)

    def _not_there(self, failure: Failure) -> None:
        if isinstance(failure.value, defer.CancelledError):
            return
        if isinstance(failure.value, OSError):
            self.inputs.cannot_start("cannot start the CLI: %s" % (failure.value,))
            return
        if isinstance(failure.value, RequestError):
            # "path_invalid: ...": the project's directory is not its own.
            self.inputs.cannot_start(str(failure.value))
            return
        self.inputs.crashed(failure)

    def cancel_pending(self) -> None:
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.cancel()

    # -- what the transitions do

    def acquire(self) -> None:
        self.wait_for(self.room.acquire(), lambda _: self.inputs.granted())

    def get_process(self) -> None:
        self.held = True
        self.wait_for(self.room.ready(self.flags), self.inputs.launched)

    def launch(self, process: ClaudeProcess) -> None:
        """
        Bind C{process}, tell the clients, hand the CLI the text.
        """
        self.pending = None
        self.process = process
        self.session_generation = self.host.session_generation
        self.cost_base = process.total_cost
        self.started = self.reactor.seconds()
        # Taken before the CLI has the text, so nothing its tools start
        # can be taken for what ran before; looked at only if a stop
        # needs it.
        self.baseline = self.room.snapshot(process)
        if not self.host.publish(events.prompt_started(self.id, self.host.session_id)):
            # A prompt that would run off the record does not run.
            self.inputs.cannot_start(self.host.storage_problem() or "cannot store events")
            return
        if not process.send_prompt(self.text):
            self.inputs.cannot_start("the CLI process is gone")
            return
        self.timeout_call = self.reactor.callLater(
            self.timeout, self.inputs.stop, TIMEOUT, None
        )

    def interrupt(self, status: str, error: str | None) -> None:
        """
        Ask the CLI to stop; end its process if it does not answer.
        """
        self.stop_status, self.stop_error = status, error
        self.host.cancel_permissions(self.id)
        assert self.process is not None
        if not self.process.interrupt():
            self.inputs.escalate()
            return
        self.escalate_call = self.reactor.callLater(self.kill_grace, self.inputs.escalate)

    def escalate(self) -> None:
        self.escalate_call = None
        _log.info("Prompt {id} did not stop when interrupted; ending its process", id=self.id)
        assert self.process is not None
        self.room.escalate(self.process)

    def finish_from_result(self, result: dict[str, Any]) -> None:
        ended = outcome(result)
        cost = None
        if ended.cost_total is not None:
            cost = round(ended.cost_total - self.cost_base, 10)
        if self.stop_status is not None:
            status, error = self.stop_status, self.stop_error
        else:
            status, error = ended.status, ended.error
            if ended.resume_failed and error is not None:
                error = self.host.resume_failed(error)
        self.finish(
            status,
            error,
            cost_usd=cost,
            duration_ms=ended.duration_ms,
            num_turns=ended.num_turns,
        )

    def finish_from_exit(self, exit_code: int | None, signal: int | None, tail: str) -> None:
        if self.stop_status is not None:
            self.finish(self.stop_status, self.stop_error, exit_code=exit_code)
            return
        tail = tail.strip()
        if RESUME_FAILED in tail:
            error = self.host.resume_failed(tail)
        else:
            error = exit_error(exit_code, signal, tail)
        self.finish(FAILED, error, exit_code=exit_code)

    def finish(
        self,
        status: str,
        error: str | None,
        *,
        exit_code: int | None = None,
        cost_usd: float | None = None,
        duration_ms: int | None = None,
        num_turns: int | None = None,
    ) -> None:
        """
        The one end of every prompt: publish C{prompt.finished}, end what
        its tools left when it was stopped, hand the slot back.
        """
        self.finished = True
        if self.lost is not None and status != events.INTERRUPTED:
            status, error = FAILED, self.lost
        for call in (self.timeout_call, self.escalate_call):
            if call is not None and call.active():
                call.cancel()
        self.cancel_pending()
        self.host.cancel_permissions(self.id)
        if duration_ms is None and self.started is not None:
            duration_ms = int((self.reactor.seconds() - self.started) * 1000)
        finished = events.prompt_finished(
            self.id,
            status,
            session_id=self.host.session_id,
            exit_code=exit_code,
            cost_usd=cost_usd,
            duration_ms=duration_ms,
            num_turns=num_turns,
            error=error,
        )
        if self.host.publish(finished):
            self.host.settled(self.id)
        # Otherwise it stays open on record until its event is stored: a
        # server that dies meanwhile has it interrupted by its successor.
        process = self.process
        stopped = status in (CANCELLED, TIMEOUT) or self.stop_status == status
        if stopped and process is not None and not process.ended:
            # The interrupt stops the CLI, not always what its tools
            # started in sessions of their own (the Bash tool does that).
            self.end_tools(process)
        self.room.prompt_done(process, self.held)
        self.done.callback(None)

    def end_tools(self, process: ClaudeProcess) -> None:
        """
        End what the stopped prompt's tools left, sparing what ran before
        it: once that is known, if it is not yet.
        """
        baseline = self.baseline() if self.baseline is not None else defer.succeed([])

        def end(spare: list[Any]) -> None:
            if not process.ended:
                self.room.end_tools(process, spare)

        baseline.addCallback(end).addErrback(
            lambda f: _log.failure("Ending the tools of prompt {id} failed", f, id=self.id)
        )


if TYPE_CHECKING:
    # Automat's state type, for the type checker only (not exported).
    from automat._typed import TypedState

    _State = TypedState[Lifecycle, Run]
else:
    _State = Any


class _States(NamedTuple):
    queued: _State
    waiting: _State
    starting: _State
    running: _State
    stopping: _State
    finished: _State


def _build() -> Callable[[Run], Lifecycle]:
    builder = TypeMachineBuilder(Lifecycle, Run)
    states = _States(*(builder.state(name) for name in _States._fields))
    _starting(states)
    _stopping(states)
    _ending(states)
    _ignoring(states)
    return builder.build()


def _starting(s: _States) -> None:
    """Queued, then a slot, then a process, then running."""

    @s.queued.upon(Lifecycle.start).to(s.waiting)
    def _acquire(inputs: Lifecycle, run: Run) -> None:
        run.acquire()

    @s.waiting.upon(Lifecycle.granted).to(s.starting)
    def _get_process(inputs: Lifecycle, run: Run) -> None:
        run.get_process()

    @s.starting.upon(Lifecycle.launched).to(s.running)
    def _launch(inputs: Lifecycle, run: Run, process: ClaudeProcess) -> None:
        run.launch(process)

    @s.starting.upon(Lifecycle.cannot_start).to(s.finished)
    @s.running.upon(Lifecycle.cannot_start).to(s.finished)
    def _cannot_start(inputs: Lifecycle, run: Run, error: str) -> None:
        run.finish(FAILED, error)


def _stopping(s: _States) -> None:
    """Stopped before the CLI has it: at once; after: interrupt, then escalate."""
    for state in (s.queued, s.waiting, s.starting):

        @state.upon(Lifecycle.stop).to(s.finished)
        def _never_ran(inputs: Lifecycle, run: Run, status: str, error: str | None) -> None:
            run.finish(status, error)

    @s.running.upon(Lifecycle.stop).to(s.stopping)
    def _interrupt(inputs: Lifecycle, run: Run, status: str, error: str | None) -> None:
        run.interrupt(status, error)

    @s.stopping.upon(Lifecycle.escalate).to(s.stopping)
    def _escalate(inputs: Lifecycle, run: Run) -> None:
        run.escalate()

    @s.running.upon(Lifecycle.storage_lost).to(s.running)
    def _lost(inputs: Lifecycle, run: Run, problem: str) -> None:
        # Part of what it did is not on record: it must not go on, nor
        # finish as if nothing happened. Not stopped from inside the write
        # that failed: stopping publishes too.
        if run.lost is None:
            run.lost = problem
            run.reactor.callLater(0, inputs.stop, FAILED, problem)


def _ending(s: _States) -> None:
    """What the CLI says ends a running prompt; shutdown and bugs end any."""
    for state in (s.running, s.stopping):

        @state.upon(Lifecycle.result).to(s.finished)
        def _result(inputs: Lifecycle, run: Run, message: dict[str, Any]) -> None:
            run.finish_from_result(message)

        @state.upon(Lifecycle.exited).to(s.finished)
        def _exited(
            inputs: Lifecycle, run: Run, exit_code: int | None, signal: int | None, stderr_tail: str
        ) -> None:
            run.finish_from_exit(exit_code, signal, stderr_tail)

    for state in (s.queued, s.waiting, s.starting, s.running, s.stopping):

        @state.upon(Lifecycle.shutdown).to(s.finished)
        def _shutdown(inputs: Lifecycle, run: Run, status: str, error: str | None) -> None:
            if run.process is not None:
                run.process.interrupt()
            run.finish(status, error)

        @state.upon(Lifecycle.crashed).to(s.finished)
        def _crashed(inputs: Lifecycle, run: Run, failure: Failure) -> None:
            _log.failure("Prompt {id} failed", failure, id=run.id)
            run.finish(FAILED, "internal error: %s" % (failure.value,))


def _ignoring(s: _States) -> None:
    """What may still arrive once it no longer matters."""
    s.stopping.upon(Lifecycle.stop).loop().returns(None)
    s.stopping.upon(Lifecycle.storage_lost).loop().returns(None)
    for state in (s.queued, s.waiting, s.starting):
        state.upon(Lifecycle.storage_lost).loop().returns(None)
    for name in ("stop", "escalate", "result", "exited", "storage_lost", "shutdown", "crashed"):
        s.finished.upon(getattr(Lifecycle, name)).loop().returns(None)


_machine = _build()


class Prompt:
    """
    One prompt of a project: its data and its state machine.
    """

    def __init__(self, **data: Any) -> None:
        self._run = run = Run(**data)
        run.machine = self._inputs = _machine(run)

    @property
    def id(self) -> str:
        return self._run.id

    @property
    def finished(self) -> bool:
        return self._run.finished

    @property
    def process(self) -> ClaudeProcess | None:
        return self._run.process

    @property
    def session_generation(self) -> int:
        return self._run.session_generation

    @property
    def done(self) -> defer.Deferred[None]:
        """Fires once it has finished."""
        return self._run.done

    def start(self) -> None:
        self._inputs.start()

    def stop(self, status: str, error: str | None = None) -> None:
        self._inputs.stop(status, error)

    def result(self, message: dict[str, Any]) -> None:
        self._inputs.result(message)

    def exited(self, exit_code: int | None, signal: int | None, stderr_tail: str) -> None:
        self._inputs.exited(exit_code, signal, stderr_tail)

    def storage_lost(self, problem: str) -> None:
        self._inputs.storage_lost(problem)

    def shutdown(self, status: str, error: str | None) -> None:
        self._inputs.shutdown(status, error)
