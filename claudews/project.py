"""
One project: its conversation, its queue of prompts, its metadata, and
the rooms it is composed of.

- L{claudews.prompt}: each prompt's life (queued, waiting for a slot,
  starting, running, stopping, finished), which ends exactly once;
- L{claudews.liveprocess}: the project's one live CLI process;
- L{claudews.eventlog}: events stored, then sent; nothing unstored is
  ever sent (see docs/storage.rst);
- L{claudews.permissions}: the CLI's pending permission requests.

- L{claudews.promptqueue}: prompts one after another;
- L{claudews.clilistener}: what a CLI process prints becomes an event of
  its prompt, and its C{result} ends the prompt;
- L{claudews.record}: metadata.json, for whoever loads the project next.
"""

import os
import time
import uuid
from typing import Any, Callable

from twisted.internet import defer
from twisted.logger import Logger

from claudews import events
from claudews.config import ProjectConfig
from claudews.clilistener import CliListener
from claudews.clisession import marker_prefix, valid_session
from claudews.confinement import Confinement
from claudews.errors import RequestError
from claudews.eventlog import BATCHED, EventLog
from claudews.events import INTERRUPTED, Event
from claudews.interfaces import (
    EventStore,
    Fanout,
    ProcessReactor,
    ProcessSlots,
    ProcessTrees,
    Subscriber,
)
from claudews.liveprocess import LiveProcess, StartGate
from claudews.permissions import PermissionAnswer, PermissionBroker
from claudews.prompt import Prompt
from claudews.promptqueue import PromptQueue
from claudews.record import Record
from claudews.runner import ClaudeProcess


class Project:
    """
    @ivar path: the canonical absolute path of the project directory.
    @ivar id: its on-disk id, derived from C{path}.
    @ivar directory: where its metadata and history are stored.
    @ivar history: its stored events (for recovery; written through the
        event log only).
    """

    _log = Logger()

    def __init__(
        self,
        *,
        path: str,
        project_id: str,
        directory: str,
        meta: dict[str, Any],
        history: EventStore,
        supervisor: ProcessSlots,
        config: ProjectConfig,
        fanout: Fanout,
        trees: ProcessTrees,
        reactor: ProcessReactor,
        environ: dict[str, str] | None = None,
        on_change: Callable[["Project"], object] = lambda project: None,
        confinement: Confinement | None = None,
        observe: Callable[["Project", Event], object] = lambda project, event: None,
        write_failed: Callable[[OSError], object] = lambda error: None,
        write_metadata: Callable[[str, dict[str, Any]], None] | None = None,
        start_gate: StartGate | None = None,
    ) -> None:
        self._reactor = reactor
        #: Told of every stored event (the notifications).
        self._observe = observe
        self._write_failed = write_failed
        self.path = path
        # Checked before a CLI works in it (without roots unless given).
        self.confinement = confinement or Confinement.of(path, None, meta)
        self.id = project_id
        self.directory = directory
        self._config = config
        self.created_at: str = meta.get("created_at") or events.timestamp()
        self.epoch: int = int(meta.get("epoch") or int(time.time() * 1000))
        # It goes on the CLI's command line (--resume): only a well-formed id.
        stored = meta.get("session_id")
        self.session_id: str | None = stored if valid_session(stored) else None
        self.session_generation = 0
        self._closing = False
        self._on_change = on_change
        self._queue = PromptQueue(
            reactor=reactor,
            max_waiting=config.max_queue,
            # Not while the disk refuses events: the queue waits for it.
            may_start=lambda: not self._closing and not self._events.waiting,
            changed=self._changed,
        )
        self.history = history
        self._events = self._event_log(history, fanout)
        self.permissions = PermissionBroker(
            self.publish, timeout=config.permission_timeout, reactor=reactor
        )
        markers = list(meta.get("markers") or ())
        self._process = self._live_process(markers, supervisor, trees, environ, start_gate)
        self._record = Record(
            directory, self._fields, list(meta.get("open_prompts") or ()), markers,
            write=write_metadata,
        )
        self._summary = self._summary_now()

    def _event_log(self, history: EventStore, fanout: Fanout) -> EventLog:
        return EventLog(
            path=self.path,
            history=history,
            fanout=fanout,
            reactor=self._reactor,
            broken=self._storage_failed,
            works_again=self._storage_works,
            write_failed=self._write_failed,
            finish_stored=self.settled,
            # Every stored event, also one that waited for the disk.
            stored=lambda event: self._observe(self, event),
        )

    def _live_process(
        self,
        markers: list[str],
        supervisor: ProcessSlots,
        trees: ProcessTrees,
        environ: dict[str, str] | None,
        gate: StartGate | None,
    ) -> LiveProcess:
        listener = CliListener(
            queue=self._queue,
            permissions=self.permissions,
            publish=self.publish,
            session_seen=self._session_seen,
            process_gone=self._process_gone,
            save=self.save,
            batch=self._events.batch,
        )
        return LiveProcess(
            path=self.path,
            marker_prefix=marker_prefix(self.directory),
            owner=self,
            listener=listener,
            slots=supervisor,
            trees=trees,
            reactor=self._reactor,
            config=self._config,
            environ=dict(os.environ if environ is None else environ),
            markers=markers,
            save=self.save,
            session_id=lambda: self.session_id,
            confine=self._confine,
            gate=gate,
        )

    def __repr__(self) -> str:
        return "<Project %s>" % (self.path,)

    # -- state

    @property
    def last_seq(self) -> int:
        return self._events.last_seq

    @property
    def first_seq(self) -> int:
        return self._events.first_seq

    @property
    def _current(self) -> Prompt | None:
        return self._queue.current

    @property
    def running(self) -> bool:
        return self._current is not None

    @property
    def subscriber_count(self) -> int:
        return len(self._events.subscribers)

    def subscriber_list(self) -> list[Subscriber]:
        return list(self._events.subscribers)

    def describe(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "id": self.id,
            "session_id": self.session_id,
            "status": "running" if self._current else "idle",
            "queue": len(self._queue),
            "pending_permissions": self.permissions.count,
            "created_at": self.created_at,
            "last_seq": self.last_seq,
            "epoch": self.epoch,
            "problem": self.confinement.problem,
        }

    def _summary_now(self) -> tuple[object, ...]:
        return (
            self._current is not None,
            len(self._queue),
            self.permissions.count,
            self.session_id,
            self.confinement.problem,
        )

    def _changed(self) -> None:
        """
        Tell C{on_change} when what a list of projects shows changed:
        status, queue, pending permission requests or session; not before
        the events that changed it have been sent (under the C{every}
        fsync policy they wait for their fsync).
        """
        summary = self._summary_now()
        if summary != self._summary:
            self._summary = summary
            self._events.after_sent(self._announce)

    def _announce(self) -> None:
        self._on_change(self)

    def _fields(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "id": self.id,
            "session_id": self.session_id,
            "created_at": self.created_at,
            "epoch": self.epoch,
            "last_seq": self.last_seq,
            **self.confinement.fields(),
        }

    def save(self) -> bool:
        """Write metadata.json; whether that worked (a failure is logged)."""
        return self._record.save()

    def store(self) -> None:
        """Write metadata.json, or raise L{OSError} (a new project's first)."""
        self._record.write()

    def _confine(self) -> int:
        """
        Refuse to run a CLI in a directory that is no longer the project's;
        a descriptor of the checked one (the caller closes it).
        """
        try:
            return self.confinement.open()
        finally:
            self._changed()

    def moved_to(self, directory: str) -> None:
        """Its data was moved (set aside for deletion): save there from now on."""
        self.directory = self._record.directory = directory

    # -- events

    def publish(self, event: Event) -> bool:
        """
        Store an event in the history, then send it to every subscriber;
        whether it was stored (L{EventLog.publish}).
        """
        stored = self._events.publish(event)
        if event.kind not in BATCHED:
            # Permission requests come and go with their events; what
            # the CLI prints (most events, by far) changes no summary.
            self._changed()
        return stored

    def storage_problem(self) -> str | None:
        """Why events of this project cannot be stored now, or C{None}."""
        return self._events.problem()

    def _storage_failed(self, problem: str) -> None:
        """
        A write failed: the running prompt, if it already reached the CLI,
        fails with C{problem}.
        """
        if self._current is not None:
            self._current.storage_lost(problem)

    def _storage_works(self) -> None:
        """
        A write succeeds again: the metadata catches up, the queue moves.
        """
        self.save()
        self._reactor.callLater(0, self._queue.pump)

    def settled(self, prompt_id: str) -> None:
        """A prompt's C{prompt.finished} is on disk: it is no longer open."""
        self._record.settled(prompt_id)

    # -- subscribers and permissions

    def subscribe(self, subscriber: Subscriber, since: int | None, epoch: int | None = None) -> dict[str, Any]:
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

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._events.unsubscribe(subscriber)

    def respond_permission(self, answer: PermissionAnswer) -> None:
        """
        A client's answer to a pending permission request (the first wins).
        """
        self.permissions.respond(answer)

    # -- prompts

    def submit(self, text: str, options: dict[str, Any], flags: tuple[str, ...]) -> dict[str, Any]:
        if self._closing:
            raise RequestError("internal", "the server is shutting down")
        position = self._queue.position()
        prompt = self._new_prompt(text, options, tuple(flags))
        # On record as open before its first event: a server that dies
        # from here on leaves its successor a prompt to interrupt.
        stored = self._record.opened(prompt.id)
        if stored and not self.publish(events.prompt_queued(prompt.id, text, options, position)):
            self._record.settled(prompt.id)
            stored = False
        if not stored:
            raise RequestError(
                "internal",
                self.storage_problem()
                or "cannot store the project's metadata: %s" % (self._record.error,),
            )
        self._queue.add(prompt)
        return {"prompt_id": prompt.id, "position": position}

    def _new_prompt(self, text: str, options: dict[str, Any], flags: tuple[str, ...]) -> Prompt:
        return Prompt(
            id="p-" + uuid.uuid4().hex,
            text=text,
            options=options,
            flags=flags,
            host=self,
            room=self._process,
            reactor=self._reactor,
            timeout=self._config.timeout,
            kill_grace=self._config.kill_grace,
            session_generation=self.session_generation,
        )

    def cancel(self, prompt_id: str | None) -> list[str]:
        return self._queue.cancel(prompt_id)

    def cancel_permissions(self, prompt_id: str) -> None:
        self.permissions.cancel(prompt_id)

    # -- what the CLI's side reports (L{CliListener})

    def _session_seen(self, prompt: Prompt, session: str) -> None:
        # A prompt queued before a reset must not bring the old
        # conversation back.
        if session != self.session_id and prompt.session_generation == self.session_generation:
            self.session_id = session
            self.save()
            self._changed()

    def _process_gone(self, process: ClaudeProcess) -> None:
        if process is self._process.current:
            # Nobody is left to answer what it asked.
            self.permissions.forget()
        self._process.exited(process)

    def close_process(self) -> None:
        """The supervisor's request: close the idle process."""
        self._process.close_process()

    # -- session, recovery, shutdown

    def reset_session(self) -> None:
        self.session_id = None
        self.session_generation += 1
        self._process.abandon(idle=self._current is None)
        self.save()
        self.publish(events.session_reset())

    def resume_failed(self, detail: str) -> str:
        lost = self.session_id
        self.reset_session()
        return (
            "the CLI could not resume conversation %s (%s); the project's "
            "session was reset and the next prompt starts a new conversation"
            % (lost, detail.strip().splitlines()[-1][:300])
        )

    def recover(self) -> defer.Deferred[Any]:
        """
        Settle what a server that died left behind: prompts that never
        finished are recorded as interrupted, processes it ran are ended.
        """
        for prompt_id in list(self._record.open_prompts):
            interrupted = events.prompt_finished(
                prompt_id,
                INTERRUPTED,
                session_id=self.session_id,
                error="the server stopped before this prompt finished",
            )
            if self.publish(interrupted):
                self._record.open_prompts.remove(prompt_id)
        self.save()
        # Each marker stays on record until what carries it is gone, so a
        # server stopped (or killed) meanwhile leaves it to the next start.
        return self._process.recover()

    def shutdown(self, status: str = INTERRUPTED) -> defer.Deferred[None]:
        """
        Stop everything: record the prompts as C{status}, end the process.

        Used for server shutdown (C{interrupted}) and project deletion
        (C{cancelled}). The Deferred always fires.
        """
        self._closing = True
        error = "the server is shutting down" if status == INTERRUPTED else None
        self._queue.shutdown(status, error)
        return self._process.shutdown()

    def close(self) -> None:
        # A last chance for what waits; what is still refused stays open
        # in the metadata, and the next start interrupts it.
        self._record.clean = self._events.stop()
        self.save()
        self._events.close()
