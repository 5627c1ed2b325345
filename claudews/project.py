"""
One project: its conversation, its queue of prompts, its CLI process, its
history and its subscribers.

Prompts run one after another. Each goes through::

    queued -> (waiting for a process slot) -> started -> finished

and C{finished} always happens exactly once, whatever goes wrong: the
queue moves on from a failed prompt like from a completed one.

Events are stored before they are sent (L{claudews.eventlog}). When the
disk refuses them (full, failing), nothing unstored is ever sent: the
running prompt fails, the events that settle state wait in memory, the
queue waits and new prompts are refused until a write succeeds again;
then the project goes on. See docs/storage.rst.
"""

import hashlib
import os
import re
import time
import uuid
from collections import deque
from typing import Any, Callable

import attrs
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from claudews import metadata, proctree
from claudews.errors import RequestError
from claudews.eventlog import EventLog
from claudews.events import Event, timestamp
from claudews.permissions import PermissionBroker
from claudews.runner import ClaudeProcess, build_argv, build_env
from claudews.subscribers import send_each

#: What the CLI says when --resume names a conversation it does not have.
RESUME_FAILED = "No conversation found"


@attrs.define(eq=False)
class Prompt:
    id: str
    text: str
    options: dict
    flags: tuple
    session_generation: int
    process: ClaudeProcess | None = None
    acquiring: defer.Deferred | None = None
    has_slot: bool = False
    started: float | None = None
    stop_status: str | None = None
    stop_error: str | None = None
    #: Why some of its events are not stored, if some are not.
    lost: str | None = None
    #: Whether its text went to the CLI.
    sent: bool = False
    finished: bool = False
    cost_base: float = 0.0
    baseline: list = attrs.Factory(list)
    timeout_call: Any = None
    escalate_call: Any = None
    done: defer.Deferred = attrs.Factory(defer.Deferred)


@attrs.frozen
class ProjectConfig:
    """
    The settings a project needs (a slice of L{claudews.config.Settings}).
    """

    claude_bin: str = "claude"
    timeout: float = 300.0
    kill_grace: float = 5.0
    max_line_bytes: int = 256 * 1024 * 1024
    max_queue: int = 64
    permission_timeout: float = 120.0
    env: dict = attrs.Factory(dict)


class Project:
    """
    @ivar path: the canonical absolute path of the project directory.
    @ivar id: its on-disk id, derived from C{path}.
    """

    _log = Logger()

    def __init__(
        self,
        *,
        path: str,
        project_id: str,
        directory: str,
        meta: dict,
        history: Any,
        supervisor: Any,
        config: ProjectConfig,
        fanout: Callable[[bytes, list], None] = send_each,
        reactor: Any = None,
        environ: dict | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self.path = path
        self.id = project_id
        self.directory = directory
        self._history = history
        self._supervisor = supervisor
        self._config = config
        self._environ = dict(os.environ if environ is None else environ)
        self.created_at: str = meta.get("created_at") or timestamp()
        self.epoch: int = int(meta.get("epoch") or int(time.time() * 1000))
        # It goes on the CLI's command line (--resume): only a well-formed id.
        stored = meta.get("session_id")
        self.session_id: str | None = stored if valid_session(stored) else None
        self._open_prompts: list[str] = list(meta.get("open_prompts") or ())
        self._markers: list[str] = list(meta.get("markers") or ())
        self._session_generation = 0
        self._queue: deque[Prompt] = deque()
        self._current: Prompt | None = None
        self._proc: ClaudeProcess | None = None
        #: Fires when a process being replaced has ended.
        self._retiring: defer.Deferred | None = None
        self._proc_stale = False
        self._close_call: Any = None
        #: end_tree calls for processes that exited by themselves.
        self._ending: set[defer.Deferred] = set()
        self._closing = False
        self._last_prompt_id: str | None = None
        self._events = EventLog(
            path=path,
            history=history,
            fanout=fanout,
            reactor=reactor,
            broken=self._storage_failed,
            works_again=self._storage_works,
            finish_stored=self._settled,
        )
        self.subscribers = self._events.subscribers
        self.permissions = PermissionBroker(
            self._publish_fields, config.permission_timeout, reactor
        )

    # -- state

    @property
    def last_seq(self) -> int:
        return self._events.last_seq

    @property
    def first_seq(self) -> int:
        return self._events.first_seq

    @property
    def running(self) -> bool:
        return self._current is not None

    def describe(self) -> dict:
        return {
            "path": self.path,
            "id": self.id,
            "session_id": self.session_id,
            "status": "running" if self._current else "idle",
            "queue": len(self._queue),
            "created_at": self.created_at,
            "last_seq": self.last_seq,
            "epoch": self.epoch,
        }

    def _meta(self) -> dict:
        return {
            "path": self.path,
            "id": self.id,
            "session_id": self.session_id,
            "created_at": self.created_at,
            "epoch": self.epoch,
            "last_seq": self.last_seq,
            "open_prompts": self._open_prompts,
            "markers": self._markers,
            # Only close() says True: a successor that finds False knows
            # this server died, and checks the history's tail.
            "clean": self._clean,
        }

    _clean = False
    _meta_error: OSError | None = None

    def save(self) -> bool:
        """
        Write metadata.json; whether that worked (a failure is logged).
        """
        try:
            metadata.write(self.directory, self._meta())
        except OSError as e:
            self._log.error(
                "Could not write metadata of {path}: {error}", path=self.path, error=e
            )
            self._meta_error = e
            return False
        self._meta_error = None
        return True

    @property
    def marker_prefix(self) -> str:
        return marker_prefix(self.directory)

    # -- events

    def publish(self, kind: str, fields: dict) -> bool:
        """
        Store an event in the history, then send it to every subscriber;
        whether it was stored (L{EventLog.publish}).
        """
        return self._events.publish(Event(kind, fields))

    def storage_problem(self) -> str | None:
        """
        Why events of this project cannot be stored now, or C{None}.
        """
        return self._events.problem()

    def _storage_failed(self, problem: str) -> None:
        """
        A write failed: the running prompt, if it already reached the CLI,
        fails with C{problem}.
        """
        prompt = self._current
        if prompt is not None and prompt.sent and not prompt.finished and prompt.lost is None:
            # Part of what it did is not on record: it must not go on, nor
            # finish as if nothing happened. Not stopped from inside the
            # write that failed: stopping publishes too.
            prompt.lost = problem
            self._reactor.callLater(0, self._stop, prompt, "failed", prompt.lost)

    def _storage_works(self) -> None:
        """
        A write succeeds again: the metadata catches up, the queue moves.
        """
        self.save()
        self._reactor.callLater(0, self._pump)

    def _settled(self, prompt_id: str) -> None:
        """
        A prompt's C{prompt.finished} is on disk: it is no longer open.
        """
        if prompt_id in self._open_prompts:
            self._open_prompts.remove(prompt_id)
        self.save()

    def _publish_fields(self, kind: str, fields: dict) -> None:
        self.publish(kind, fields)

    def subscribe(self, subscriber: Any, since: int | None, epoch: Any = None) -> dict:
        if since is not None and epoch is not None and epoch != self.epoch:
            # The client's seq belongs to an earlier history of this path.
            since = 0
        self._events.subscribe(subscriber, since)
        return {
            "project": self.describe(),
            "last_seq": self.last_seq,
            "first_seq": self.first_seq,
            "epoch": self.epoch,
            "running": self._current.id if self._current else None,
            "pending_permissions": self.permissions.pending(),
        }

    def unsubscribe(self, subscriber: Any) -> None:
        self.subscribers.remove(subscriber)

    def respond_permission(
        self,
        request_id: str,
        behavior: str,
        message: str | None = None,
        updated_input: dict | None = None,
    ) -> None:
        """
        A client's answer to a pending permission request (the first wins).
        """
        self.permissions.respond(request_id, behavior, message, updated_input)

    def history_page(self, before: int | None, limit: int) -> tuple[list[bytes], bool]:
        return self._events.page(before, limit)

    # -- prompts

    def submit(self, text: str, options: dict, flags: tuple) -> dict:
        if self._closing:
            raise RequestError("internal", "the server is shutting down")
        # The head of the queue is about to start (on the next reactor turn)
        # when nothing runs: it is not waiting.
        waiting = len(self._queue) - (0 if self._current else min(1, len(self._queue)))
        if waiting >= self._config.max_queue:
            raise RequestError(
                "queue_full",
                "%d prompts are already waiting in this project"
                % (self._config.max_queue,),
            )
        prompt = Prompt(
            id="p-" + uuid.uuid4().hex,
            text=text,
            options=options,
            flags=tuple(flags),
            session_generation=self._session_generation,
        )
        position = len(self._queue) + (1 if self._current else 0)
        # On record as open before its first event: a server that dies
        # from here on leaves its successor a prompt to interrupt.
        self._open_prompts.append(prompt.id)
        stored = self.save() and self.publish(
            "prompt.queued",
            {
                "prompt_id": prompt.id,
                "prompt": text,
                "options": options,
                "position": position,
            },
        )
        if not stored:
            self._open_prompts.remove(prompt.id)
            self.save()
            raise RequestError(
                "internal",
                self.storage_problem()
                or "cannot store the project's metadata: %s" % (self._meta_error,),
            )
        self._queue.append(prompt)
        self._reactor.callLater(0, self._pump)
        return {"prompt_id": prompt.id, "position": position}

    def _pump(self) -> None:
        if self._current is not None or not self._queue or self._closing:
            return
        if self._events.waiting:
            # The disk refuses events: the queue waits until it takes them.
            return
        prompt = self._current = self._queue.popleft()
        self._last_prompt_id = prompt.id
        prompt.done.addBoth(self._after_prompt)
        acquiring = prompt.acquiring = self._supervisor.acquire(self)
        acquiring.addCallbacks(
            lambda _: self._slot_granted(prompt), lambda f: f.trap(defer.CancelledError)
        )
        acquiring.addErrback(self._prompt_failed, prompt)

    def _slot_granted(self, prompt: Prompt) -> Any:
        prompt.has_slot = True
        return self._start(prompt)

    def _after_prompt(self, _: Any) -> None:
        self._current = None
        self._pump()

    def _prompt_failed(self, failure: Any, prompt: Prompt) -> None:
        self._log.failure("Prompt {id} failed", failure, id=prompt.id)
        self._finish(prompt, "failed", error="internal error: %s" % (failure.value,))

    def _start(self, prompt: Prompt) -> Any:
        prompt.acquiring = None
        if prompt.finished:
            return None
        proc = self._proc
        if proc is not None and (proc.flags != prompt.flags or self._proc_stale):
            # The live process runs with other fixed flags (or an abandoned
            # conversation): replace it, keeping the slot.
            self._retire(proc)
        if self._retiring is not None:
            # Wait, cancellably, for the old process to be gone: never two
            # processes of one project at once.
            waiting = prompt.acquiring = defer.Deferred()
            self._retiring.addBoth(lambda _: waiting.called or waiting.callback(None))
            waiting.addCallbacks(
                lambda _: self._start(prompt), lambda f: f.trap(defer.CancelledError)
            )
            waiting.addErrback(self._prompt_failed, prompt)
            return None
        if proc is None:
            try:
                proc = self._spawn(prompt.flags)
            except OSError as e:
                self._finish(prompt, "failed", error="cannot start the CLI: %s" % (e,))
                return None
        prompt.process = proc
        prompt.session_generation = self._session_generation
        prompt.cost_base = proc.total_cost
        prompt.started = self._reactor.seconds()
        prompt.baseline = proctree.tree(proc.pid, proc.marker)
        if not self.publish(
            "prompt.started",
            {"prompt_id": prompt.id, "session_id": self.session_id},
        ):
            # A prompt that would run off the record does not run.
            self._finish(prompt, "failed", error=self.storage_problem())
            return None
        prompt.sent = True
        if not proc.send_prompt(prompt.text):
            self._finish(prompt, "failed", error="the CLI process is gone")
            return None
        prompt.timeout_call = self._reactor.callLater(
            self._config.timeout, self._stop, prompt, "timeout"
        )
        return None

    def _retire(self, proc: ClaudeProcess) -> None:
        self._proc = None
        retiring = self._retiring = proc.terminate(self._config.kill_grace)

        def retired(_: Any) -> None:
            if self._retiring is retiring:
                self._retiring = None
            if self._current is None or not self._current.has_slot:
                # Nobody took over the slot this process held.
                self._supervisor.exited(self)

        retiring.addBoth(retired)

    def _spawn(self, flags: tuple) -> ClaudeProcess:
        proc = ClaudeProcess(
            self,
            flags=flags,
            max_line_bytes=self._config.max_line_bytes,
            reactor=self._reactor,
        )
        proc.marker = self.marker_prefix + proc.marker
        argv = build_argv(self._config.claude_bin, self.session_id, flags)
        env = build_env(self._environ, self._config.env, proc.marker)
        # Record the marker first: a server that dies from here on leaves
        # its successor a way to find this process tree.
        self._markers.append(proc.marker)
        self.save()
        proc.spawn(argv, self.path, env)
        self._proc = proc
        self._proc_stale = False
        return proc

    def cancel(self, prompt_id: str | None) -> list[str]:
        if prompt_id is None:
            if self._current is None or self._current.finished:
                raise RequestError("not_running", "no prompt is running")
            prompt_id = self._current.id
        for prompt in self._queue:
            if prompt.id == prompt_id:
                self._queue.remove(prompt)
                self._finish(prompt, "cancelled")
                return [prompt_id]
        current = self._current
        if current is not None and current.id == prompt_id and not current.finished:
            self._stop(current, "cancelled")
            return [prompt_id]
        raise RequestError("not_found", "no running or queued prompt %r" % (prompt_id,))

    def _stop(self, prompt: Prompt, status: str, error: str | None = None) -> None:
        """
        Cancel, time out or fail C{prompt}: interrupt, then end the process
        tree.
        """
        if prompt.finished or prompt.stop_status is not None:
            return
        prompt.stop_status = status
        prompt.stop_error = error
        self.permissions.cancel(prompt.id)
        if prompt.acquiring is not None:
            prompt.acquiring.cancel()
            self._finish(prompt, status, error=error)
            return
        proc = prompt.process
        if proc is None or not proc.interrupt():
            self._escalate(prompt)
            return
        prompt.escalate_call = self._reactor.callLater(
            self._config.kill_grace, self._escalate, prompt
        )

    def _escalate(self, prompt: Prompt) -> None:
        prompt.escalate_call = None
        if prompt.finished:
            return
        if prompt.process is None:
            self._finish(prompt, prompt.stop_status or "failed", error=prompt.stop_error)
            return
        self._log.info(
            "Prompt {id} did not stop when interrupted; ending its process",
            id=prompt.id,
        )
        proc = prompt.process
        if proc is self._proc:
            # Detached like a replaced process: a result it prints while
            # dying must not hand it to the next prompt.
            self._retire(proc)
        else:
            proc.terminate(self._config.kill_grace)

    def _finish(
        self,
        prompt: Prompt,
        status: str,
        *,
        result: dict | None = None,
        error: str | None = None,
        exit_code: int | None = None,
    ) -> None:
        if prompt.finished:
            return
        prompt.finished = True
        if prompt.lost is not None and status != "interrupted":
            status, error = "failed", prompt.lost
        for call in (prompt.timeout_call, prompt.escalate_call):
            if call is not None and call.active():
                call.cancel()
        self.permissions.cancel(prompt.id)
        cost = duration = turns = None
        if result is not None:
            total = result.get("total_cost_usd")
            if isinstance(total, (int, float)):
                cost = round(float(total) - prompt.cost_base, 10)
            duration = result.get("duration_ms")
            turns = result.get("num_turns")
        if duration is None and prompt.started is not None:
            duration = int((self._reactor.seconds() - prompt.started) * 1000)
        stored = self.publish(
            "prompt.finished",
            {
                "prompt_id": prompt.id,
                "status": status,
                "exit_code": exit_code,
                "session_id": self.session_id,
                "cost_usd": cost,
                "duration_ms": duration,
                "num_turns": turns,
                "error": error,
            },
        )
        if stored:
            self._settled(prompt.id)
        # Otherwise it stays open on record until its event is stored: a
        # server that dies meanwhile has it interrupted by its successor.
        proc = prompt.process
        stopped = status in ("cancelled", "timeout") or prompt.stop_status == status
        if stopped and proc is not None and not proc.ended:
            # The interrupt stops the CLI, not always what its tools started
            # in sessions of their own (the Bash tool does that). What runs
            # in the CLI's own session (an MCP server, say) is the CLI's to
            # keep.
            keep = prompt.baseline + [
                p for p in proctree.tree(None, proc.marker) if _session_of(p) == proc.pid
            ]
            tools = proctree.end_tree(
                None,
                proc.marker,
                grace=self._config.kill_grace,
                reactor=self._reactor,
                exclude=keep,
            )
            tools.addErrback(lambda f: self._log.failure("Ending tools failed", f))
        if proc is not None and not proc.ended and proc is self._proc:
            self._supervisor.release(self)
        elif prompt.has_slot and self._proc is None and self._retiring is None:
            # The slot was granted but no process is left to keep it.
            self._supervisor.exited(self)
        prompt.done.callback(None)

    # -- the CLI's side (runner.Listener)

    def cli_message(self, process: ClaudeProcess, message: dict) -> None:
        prompt = self._current if self._current and self._current.process is process else None
        self.publish(
            "claude",
            {
                "prompt_id": prompt.id if prompt else self._last_prompt_id,
                "message": message,
            },
        )
        kind = message.get("type")
        session = message.get("session_id")
        if kind == "result" and lost_session(message):
            # It names the conversation that could not be found.
            session = None
        if (
            kind in ("system", "result")
            and valid_session(session)
            and prompt is not None
            and prompt.session_generation == self._session_generation
            and (kind == "result" or message.get("subtype") == "init")
            and session != self.session_id
        ):
            self.session_id = session
            self.save()
        if kind == "result" and prompt is not None and not prompt.finished:
            self._finish_from_result(prompt, message)

    def _finish_from_result(self, prompt: Prompt, result: dict) -> None:
        text = result.get("result")
        if prompt.stop_status is not None:
            self._finish(prompt, prompt.stop_status, result=result, error=prompt.stop_error)
        elif result.get("is_error") or result.get("subtype") != "success":
            error = text if isinstance(text, str) and text else None
            if error is None:
                errors = result.get("errors")
                error = "; ".join(map(str, errors)) if errors else result.get("subtype")
            if error and RESUME_FAILED in error:
                error = self._resume_failed(error)
            self._finish(prompt, "failed", result=result, error=str(error))
        else:
            self._finish(prompt, "completed", result=result)

    def cli_output(self, process: ClaudeProcess, stream: str, text: str) -> None:
        prompt = self._current if self._current and self._current.process is process else None
        self.publish(
            "output",
            {
                "prompt_id": prompt.id if prompt else self._last_prompt_id,
                "stream": stream,
                "text": text,
            },
        )

    def cli_permission(self, process: ClaudeProcess, request_id: str, request: dict) -> None:
        prompt = self._current
        if prompt is None or prompt.process is not process or prompt.finished:
            process.answer(
                request_id,
                {"behavior": "deny", "message": "No prompt is running in claudews"},
            )
            return
        self.permissions.request(
            prompt.id,
            request_id,
            request,
            lambda response: process.answer(request_id, response),
        )

    def cli_exited(self, process: ClaudeProcess, exit_code: int | None, signal: int | None) -> None:
        self._end_leftovers(process.marker)
        was_live = process is self._proc
        if was_live:
            # First forget the process: finishing the prompt starts the
            # next one, which must not be handed a dead process.
            self._proc = None
            self.permissions.forget()
            if self._close_call is not None and self._close_call.active():
                self._close_call.cancel()
            self._supervisor.exited(self)
        prompt = self._current
        if prompt is not None and prompt.process is process and not prompt.finished:
            if was_live:
                # Its slot was given back just now.
                prompt.has_slot = False
            if prompt.stop_status is not None:
                self._finish(
                    prompt, prompt.stop_status, error=prompt.stop_error, exit_code=exit_code
                )
            else:
                tail = process.stderr_tail.strip()
                if RESUME_FAILED in tail:
                    error = self._resume_failed(tail)
                else:
                    how = "signal %s" % (signal,) if signal else "code %s" % (exit_code,)
                    error = "the CLI exited with %s before finishing the prompt" % (how,)
                    if tail:
                        error += ": " + tail.splitlines()[-1][:500]
                self._finish(prompt, "failed", error=error, exit_code=exit_code)
        else:
            self.save()

    def _end_leftovers(self, marker: str) -> None:
        """
        A CLI that exits by itself (its input closed, a crash) leaves what
        its tools started in sessions of their own running: end it too.
        The marker stays on record until that is done, so that a server
        that dies meanwhile leaves its successor a way to find them.
        """
        ending = proctree.end_tree(
            None, marker, grace=self._config.kill_grace, reactor=self._reactor
        )
        self._ending.add(ending)

        def ended(result: Any) -> None:
            self._ending.discard(ending)
            if marker in self._markers:
                self._markers.remove(marker)
                self.save()
            if isinstance(result, Failure):
                self._log.failure("Ending what a CLI left failed", result)

        ending.addBoth(ended)

    def _resume_failed(self, detail: str) -> str:
        lost = self.session_id
        self.reset_session()
        return (
            "the CLI could not resume conversation %s (%s); the project's "
            "session was reset and the next prompt starts a new conversation"
            % (lost, detail.strip().splitlines()[-1][:300])
        )

    # -- the supervisor's side

    def close_process(self) -> None:
        """
        Close the idle process: end its input, then escalate.
        """
        proc = self._proc
        if proc is None or proc.ended:
            return
        proc.close_stdin()
        self._close_call = self._reactor.callLater(
            self._config.kill_grace,
            lambda: None if proc.ended else proc.terminate(self._config.kill_grace),
        )

    # -- session, recovery, shutdown

    def reset_session(self) -> None:
        self.session_id = None
        self._session_generation += 1
        if self._proc is not None:
            if self._current is None:
                self.close_process()
            self._proc_stale = True
        self.save()
        self.publish("session.reset", {})

    def recover(self) -> defer.Deferred:
        """
        Settle what a server that died left behind: prompts that never
        finished are recorded as interrupted, processes it ran are ended.
        """
        for prompt_id in list(self._open_prompts):
            if self.publish(
                "prompt.finished",
                {
                    "prompt_id": prompt_id,
                    "status": "interrupted",
                    "exit_code": None,
                    "session_id": self.session_id,
                    "cost_usd": None,
                    "duration_ms": None,
                    "num_turns": None,
                    "error": "the server stopped before this prompt finished",
                },
            ):
                self._open_prompts.remove(prompt_id)
        self.save()
        # Each marker stays on record until what carries it is gone, so a
        # server stopped (or killed) meanwhile leaves it to the next start.
        for marker in list(self._markers):
            self._end_leftovers(marker)
        return defer.DeferredList(list(self._ending), consumeErrors=True)

    def shutdown(self, status: str = "interrupted") -> defer.Deferred:
        """
        Stop everything: record the prompts as C{status}, end the process.

        Used for server shutdown (C{interrupted}) and project deletion
        (C{cancelled}). The Deferred always fires.
        """
        self._closing = True
        error = "the server is shutting down" if status == "interrupted" else None
        while self._queue:
            self._finish(self._queue.popleft(), status, error=error)
        prompt = self._current
        if prompt is not None and not prompt.finished:
            proc = prompt.process
            if proc is not None:
                proc.interrupt()
            if prompt.acquiring is not None:
                prompt.acquiring.cancel()
            self._finish(prompt, status, error=error)
        self._supervisor.forget(self)
        proc = self._proc
        ends = list(self._ending)
        if self._retiring is not None:
            ends.append(self._retiring)
        if proc is not None:
            ends.append(proc.terminate(self._config.kill_grace))
        # What processes that already exited left behind is ended too.
        done = defer.DeferredList(ends, consumeErrors=True)
        done.addCallback(lambda _: defer.DeferredList(list(self._ending), consumeErrors=True))
        return done.addCallback(lambda _: None)

    def close(self) -> None:
        # A last chance for what waits; what is still refused stays open
        # in the metadata, and the next start interrupts it.
        self._clean = self._events.stop()
        self.save()
        self._events.close()


def marker_prefix(directory: str) -> str:
    """
    What the process markers of the project stored in C{directory} start
    with: derived from that directory, so a successor finds what a dead
    server left running even when the metadata listing the markers is lost.
    """
    digest = hashlib.sha256(directory.encode("utf-8", "surrogateescape"))
    return "cw%s-" % (digest.hexdigest()[:16],)


def lost_session(result: dict) -> bool:
    """
    Whether a C{result} says the conversation to resume does not exist.
    """
    texts = [result.get("result")] + list(result.get("errors") or ())
    return any(isinstance(t, str) and RESUME_FAILED in t for t in texts)


_SESSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


def valid_session(value: object) -> bool:
    """
    Whether C{value} can be a session id: it becomes an argument of
    C{--resume}, so it must never look like an option or hold anything
    but the characters of the CLI's UUIDs.
    """
    return isinstance(value, str) and _SESSION.fullmatch(value) is not None


def _session_of(process: Any) -> int | None:
    try:
        return os.getsid(process.pid)
    except OSError:
        return None
