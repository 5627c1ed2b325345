"""
A project's one live CLI process: its slot under the global cap, starting
it, replacing it, closing it when idle, and ending what it leaves behind.

Never two processes of one project at once: a process being replaced (its
prompt needs other start-up flags, or the conversation was reset) is ended
first, and the next one starts once it is gone, keeping the slot.

Every process carries an environment marker (L{proctree.MARKER_ENV})
that its tools inherit. The markers of processes that may still have
something running are on record in the project's metadata, so a server
that dies leaves its successor a way to end them.
"""

import os
from collections import deque
from typing import Any, Callable

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from claudews.config import ProjectConfig
from claudews.errors import RequestError
from claudews.interfaces import (
    DelayedCall,
    ProcessReactor,
    ProcessSlots,
    ProcessTrees,
    ReactorTime,
    SlotOwner,
)
from claudews.runner import ClaudeProcess, Listener, build_argv, build_env


class LiveProcess:
    """
    @param owner: the project, as the supervisor knows it.
    @param listener: what the processes report to (the project).
    @param markers: the markers on record (in the project's metadata);
        C{save} writes them.
    @param session_id: the conversation a new process resumes.
    @param confine: checks the project's directory is still the project's
        (L{claudews.confinement}), raising L{RequestError} when not; a
        descriptor of the checked directory, which the caller closes.
    @param gate: paces the starts of new processes (L{StartGate}, shared
        by every project); without one they start at once.
    """

    _log = Logger()

    def __init__(
        self,
        *,
        path: str,
        marker_prefix: str,
        owner: SlotOwner,
        listener: Listener,
        slots: ProcessSlots,
        trees: ProcessTrees,
        reactor: ProcessReactor,
        config: ProjectConfig,
        environ: dict[str, str],
        markers: list[str],
        save: Callable[[], object],
        session_id: Callable[[], str | None],
        confine: Callable[[], int],
        gate: "StartGate | None" = None,
    ) -> None:
        self._gate = gate
        self._path = path
        self._prefix = marker_prefix
        self._owner = owner
        self._listener = listener
        self._slots = slots
        self._trees = trees
        self._reactor = reactor
        self._config = config
        self._grace = config.kill_grace
        self._environ = environ
        self.markers = markers
        self._save = save
        self._session_id = session_id
        self._confine = confine
        self._proc: ClaudeProcess | None = None
        #: Fires when a process being replaced has ended.
        self._retiring: defer.Deferred[None] | None = None
        #: The live process runs an abandoned conversation.
        self._stale = False
        #: A prompt holds the slot.
        self._busy = False
        self._close_call: DelayedCall | None = None
        #: Endings of what processes that exited by themselves left.
        self._ending: set[defer.Deferred[Any]] = set()

    @property
    def current(self) -> ClaudeProcess | None:
        return self._proc

    # -- the slot and the process, for a prompt

    def acquire(self) -> defer.Deferred[None]:
        d = self._slots.acquire(self._owner)

        def granted(_: None) -> None:
            self._busy = True

        return d.addCallback(granted)

    def ready(self, flags: tuple[str, ...]) -> defer.Deferred[ClaudeProcess]:
        """
        A live process started with C{flags}: the one there is, or a new
        one once the one there is (other flags, abandoned conversation)
        has ended. Fails with L{OSError} when none can be started, and
        with L{RequestError} (C{path_invalid}) when the project's directory
        is no longer the project's (a live process is then ended: its
        tools would work on through the path, wherever it now leads).
        """
        proc = self._proc
        if proc is not None and (proc.flags != flags or self._stale):
            self._retire(proc)
        if self._retiring is not None:
            waiting: defer.Deferred[None] = defer.Deferred()
            self._retiring.addBoth(lambda _: None if waiting.called else waiting.callback(None))
            return waiting.addCallback(lambda _: self.ready(flags))
        if self._proc is None and self._gate is not None:
            return self._gate.turn().addCallback(self._ready_booting, flags)
        return self._ready_now(flags)

    def _ready_booting(
        self, booted: Callable[[], None], flags: tuple[str, ...]
    ) -> defer.Deferred[ClaudeProcess]:
        """L{_ready_now}, telling the gate once what it started has booted."""
        ready = self._ready_now(flags)

        def started(proc: ClaudeProcess) -> ClaudeProcess:
            proc.when_booted().addCallback(lambda _: booted())
            return proc

        def failed(failure: Failure) -> Failure:
            booted()
            return failure

        return ready.addCallbacks(started, failed)

    def _ready_now(self, flags: tuple[str, ...]) -> defer.Deferred[ClaudeProcess]:
        proc = self._proc
        if proc is None:
            return self._spawn(flags)
        try:
            os.close(self._confine())
        except RequestError as e:
            self._retire(proc)
            return defer.fail(e)
        except OSError as e:
            return defer.fail(e)
        return defer.succeed(proc)

    def _spawn(self, flags: tuple[str, ...]) -> defer.Deferred[ClaudeProcess]:
        proc = ClaudeProcess(
            self._listener,
            trees=self._trees,
            reactor=self._reactor,
            flags=flags,
            max_line_bytes=self._config.max_line_bytes,
        )
        proc.marker = self._prefix + proc.marker
        argv = build_argv(self._config.claude_bin, self._session_id(), flags)
        env = build_env(self._environ, self._config.env, proc.marker)
        # Record the marker first: a server that dies from here on leaves
        # its successor a way to find this process tree.
        self.markers.append(proc.marker)
        self._save()
        try:
            directory = self._confine()
        except (RequestError, OSError) as e:
            self._forget_marker(proc.marker)
            return defer.fail(e)
        try:
            # The CLI starts in the directory that passed the check, by its
            # descriptor: a swap of the path after the check changes nothing.
            started = proc.spawn(argv, self._path, env, directory=directory)
        finally:
            os.close(directory)
        # The live one already while it starts: a shutdown meanwhile ends it.
        self._proc = proc
        self._stale = False

        def failed(failure: Failure) -> Failure:
            if isinstance(failure.value, defer.CancelledError):
                # Given up while it starts (a cancel, the project deleted,
                # a shutdown): it may still come up, and is ended then,
                # as a replaced process is; its marker stays on record
                # until its exit says what it left.
                if self._proc is proc:
                    self._retire(proc)
                return failure
            # Nothing runs: no process holds the slot, no marker to keep.
            if self._proc is proc:
                self._proc = None
            self._forget_marker(proc.marker)
            return failure

        return started.addCallbacks(lambda _: proc, failed)

    def _forget_marker(self, marker: str) -> None:
        if marker in self.markers:
            self.markers.remove(marker)
            self._save()

    def _retire(self, proc: ClaudeProcess) -> None:
        self._proc = None
        retiring = self._retiring = proc.terminate(self._grace)

        def retired(_: object) -> None:
            if self._retiring is retiring:
                self._retiring = None
            if not self._busy:
                # Nobody took over the slot this process held.
                self._slots.exited(self._owner)

        retiring.addBoth(retired)

    def snapshot(self, process: ClaudeProcess) -> Callable[[], defer.Deferred[list[Any]]]:
        # Only noted now: the look itself (every process's environment) is
        # work for the thread that the GIL makes the reactor thread share,
        # and only a stopped prompt needs it.
        look = self._trees.baseline(process.pid, process.marker)

        def unknown(failure: Failure) -> list[Any]:
            # Nothing is spared then: a cancel must still end the tools.
            self._log.failure("Looking at the process tree of {pid} failed", failure,
                              pid=process.pid)
            return []

        return lambda: defer.maybeDeferred(look).addErrback(unknown)

    def end_tools(self, process: ClaudeProcess, spare: list[Any]) -> None:
        """
        End what a stopped prompt's tools started in sessions of their own;
        what runs in the CLI's own session (an MCP server, say) is the
        CLI's to keep, and so is what ran before the prompt (C{spare}).
        """
        marker, session = process.marker, process.pid

        def end(members: list[Any]) -> defer.Deferred[list[Any]]:
            keep = spare + [p for p in members if self._trees.session_of(p) == session]
            # The CLI lives on: the tools of its next prompt, which may
            # start while this ending polls, carry the same marker.
            return self._trees.end(
                None, marker, grace=self._grace, exclude=keep, only_older=True
            )

        tools = defer.maybeDeferred(self._trees.tree, None, marker).addCallback(end)
        tools.addErrback(lambda f: self._log.failure("Ending tools failed", f))

    def escalate(self, process: ClaudeProcess) -> None:
        if process is self._proc:
            # Detached like a replaced process: a result it prints while
            # dying must not hand it to the next prompt.
            self._retire(process)
        else:
            process.terminate(self._grace)

    def prompt_done(self, process: ClaudeProcess | None, held: bool) -> None:
        if process is not None and not process.ended and process is self._proc:
            self._slots.release(self._owner)
        elif held and self._busy and self._proc is None and self._retiring is None:
            # The slot was granted but no process is left to keep it.
            self._slots.exited(self._owner)
        if held:
            self._busy = False

    def abandon(self, idle: bool) -> None:
        """
        The conversation was reset: the live process must not serve
        another prompt; closed at once when C{idle}.
        """
        if self._proc is not None:
            if idle:
                self.close_process()
            self._stale = True

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
            self._grace, lambda: None if proc.ended else proc.terminate(self._grace)
        )

    # -- the end of a process

    def exited(self, process: ClaudeProcess) -> bool:
        """
        C{process} is gone: end what it left; whether it was the live one
        (whose slot is then free).
        """
        self.end_leftovers(process.marker)
        if process is not self._proc:
            return False
        # First forget the process: the slot's next holder must not be
        # handed a dead one.
        self._proc = None
        if self._close_call is not None and self._close_call.active():
            self._close_call.cancel()
        self._busy = False
        self._slots.exited(self._owner)
        return True

    def end_leftovers(self, marker: str) -> None:
        """
        A CLI that exits by itself (its input closed, a crash) leaves what
        its tools started in sessions of their own running: end it too.
        The marker stays on record until that is done, so that a server
        that dies meanwhile leaves its successor a way to find them.
        """
        ending = self._trees.end(None, marker, grace=self._grace)
        self._ending.add(ending)

        def ended(result: object) -> None:
            self._ending.discard(ending)
            self._forget_marker(marker)
            if isinstance(result, Failure):
                self._log.failure("Ending what a CLI left failed", result)

        ending.addBoth(ended)

    def recover(self) -> defer.Deferred[Any]:
        """
        End whatever carries a marker on record (a dead server's processes).
        """
        for marker in list(self.markers):
            self.end_leftovers(marker)
        return defer.DeferredList(list(self._ending), consumeErrors=True)

    def shutdown(self) -> defer.Deferred[None]:
        """
        End the live process, one being replaced, and what exited ones
        left; always fires.
        """
        self._slots.forget(self._owner)
        ends: list[defer.Deferred[Any]] = list(self._ending)
        if self._retiring is not None:
            ends.append(self._retiring)
        if self._proc is not None:
            ends.append(self._proc.terminate(self._grace))
        done = defer.DeferredList(ends, consumeErrors=True)
        # What processes that ended meanwhile left behind is ended too.
        done.addCallback(lambda _: defer.DeferredList(list(self._ending), consumeErrors=True))
        return done.addCallback(lambda _: None)

    def __repr__(self) -> str:
        return "<LiveProcess of %s>" % (self._path,)


def _usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, where known)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


#: A CLI counts as booting until it prints something, ends, or this many
#: seconds have passed (one that stays silent must not hold up the rest).
BOOT_LIMIT = 5.0


class StartGate:
    """
    New CLI processes start one per reactor turn, and at most C{booting}
    of them boot at once, whoever asks.

    A start costs the reactor thread something (metadata written, the
    directory checked); fifty prompts started at once did it fifty times
    in one turn, and every stream waited for all fifty. One a turn, the
    I/O of the turns between keeps flowing.

    Booting is what costs the machine: a CLI loads and compiles its code
    before it prints a line (a second of CPU for Claude Code's). Fifty
    booting at once on two cores left this server one share of fifty-one
    (each CLI is a session, so a scheduling group, of its own), and every
    stream fell behind by a hundred milliseconds and more. By default no
    more at once than there are CPUs less the one this server's reactor
    thread needs (one at least; the C{max-booting} setting says otherwise);
    the others wait for their turn, which
    they would mostly have waited for on the CPUs anyway. Two at once on
    two CPUs still left streams 10 to 35 ms behind at times (the bench's
    50 starts); one at a time, under 11 ms, and the 50th CLI starts
    about 0.4 s later.
    """

    def __init__(
        self, reactor: ReactorTime, booting: int | None = None, boot_limit: float = BOOT_LIMIT
    ) -> None:
        self._reactor = reactor
        self._most = booting if booting is not None else max(1, _usable_cpus() - 1)
        self._limit = boot_limit
        self._booting = 0
        self._waiting: deque[defer.Deferred[Callable[[], None]]] = deque()
        self._call: DelayedCall | None = None

    def turn(self) -> defer.Deferred[Callable[[], None]]:
        """
        Fires on a later turn when it is this caller's turn to start a
        process, with what to call once that process has booted (printed
        something, ended, or could not start); cancelling it leaves the
        line.
        """
        d: defer.Deferred[Callable[[], None]] = defer.Deferred(self._leave)
        self._waiting.append(d)
        self._schedule()
        return d

    def _schedule(self) -> None:
        if self._call is None and self._waiting and self._booting < self._most:
            self._call = self._reactor.callLater(0, self._next)

    def _leave(self, d: defer.Deferred[Callable[[], None]]) -> None:
        if d in self._waiting:
            self._waiting.remove(d)

    def _next(self) -> None:
        self._call = None
        if not self._waiting or self._booting >= self._most:
            return
        d = self._waiting.popleft()
        self._booting += 1
        # Scheduled during this turn's timed calls: it runs on a later turn.
        self._schedule()
        d.callback(self._ticket())

    def _ticket(self) -> Callable[[], None]:
        done = False

        def booted() -> None:
            nonlocal done
            if done:
                return
            done = True
            if limit.active():
                limit.cancel()
            self._booting -= 1
            self._schedule()

        limit = self._reactor.callLater(self._limit, booted)
        return booted
