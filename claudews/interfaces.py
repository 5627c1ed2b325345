"""
The contracts between rooms: what a collaborator that is passed in must
offer. Each is implemented once in production (named below) and faked in
the tests; code that takes one is typed against these, never against the
concrete class, so it can be swapped without reading its other users.
"""

from typing import TYPE_CHECKING, Any, Callable, Hashable, Iterator, Protocol, Sequence

from twisted.internet.defer import Deferred

if TYPE_CHECKING:
    # Settings are a value object; config imports the rooms that import this.
    from claudews.config import Settings
    from claudews.permissions import PermissionAnswer

from claudews.events import Event


class EventStore(Protocol):
    """
    One project's stored events, numbered from 1 with no gaps.
    Implemented by L{claudews.history.History}.

    An event is written before it is visible: readers (and subscribers)
    see events up to L{last_seq}, which trails L{written_seq} only under
    the C{every} fsync policy, until their fsync is done.
    """

    @property
    def last_seq(self) -> int:
        """The seq of the newest visible event; 0 when there is none."""

    @property
    def written_seq(self) -> int:
        """The seq of the newest written event; the next one is this plus one."""

    @property
    def first_seq(self) -> int:
        """The seq of the oldest stored event; C{last_seq + 1} when empty."""

    def append(self, seq: int, line: bytes) -> None:
        """Store event C{seq} (C{written_seq + 1}); raises L{OSError} when the disk refuses."""

    def append_many(self, seq: int, lines: Sequence[bytes]) -> None:
        """Store events C{seq}, C{seq + 1}... with one write; all or none (L{OSError})."""

    def when_visible(self, callback: Callable[[int], object]) -> None:
        """Call C{callback(last_seq)} whenever written events become visible later than written."""

    def read_since(self, since: int, upto: int | None = None) -> Iterator[tuple[int, bytes]]:
        """C{(seq, line)} for every visible event after C{since} (up to C{upto}), in order."""

    def read_before(self, before: int | None) -> Iterator[tuple[int, bytes]]:
        """C{(seq, line)} for the visible events before C{before} (C{None}: all), newest first."""

    def page(self, before: int | None, limit: int) -> tuple[list[bytes], bool]:
        """The newest C{limit} events before C{before}, oldest first, and whether older ones exist."""

    def lines_backwards(self) -> Iterator[bytes]:
        """Every stored line, newest first, unparsed."""

    def flush(self) -> None:
        """fsync what is written, on the calling thread; raises L{OSError}."""

    def close(self) -> None:
        """Flush and close; never raises."""


class Subscriber(Protocol):
    """
    One connection's view of a project.
    Implemented by L{claudews.websocket.ServerProtocol}.
    """

    def send_line(self, line: bytes) -> None:
        """Send one encoded event or reply."""

    def send_prepared(self, prepared: Any, size: int) -> None:
        """
        Send a frame the fan-out prepared once for every subscriber, or a
        replay's batch of frames (L{claudews.outbox.Frames}), C{size}
        bytes of messages in all.
        """

    def backlogged(self) -> bool:
        """True while the connection cannot take more without buffering."""

    def when_drained(self) -> Deferred[None]:
        """Fires when the connection can take more."""


#: C{fanout(line, subscribers)}: send one stored event to many subscribers,
#: framing it once. Implemented by L{claudews.wsfactory.fanout}.
Fanout = Callable[[bytes, Sequence[Subscriber]], None]


def send_each(line: bytes, subscribers: Sequence[Subscriber]) -> None:
    """
    The plainest fan-out, for tests and tools: one send per subscriber.
    """
    for subscriber in subscribers:
        subscriber.send_line(line)


class SlotOwner(Hashable, Protocol):
    """
    What the supervisor needs from a project.
    """

    def close_process(self) -> None:
        """End the live CLI process; call L{ProcessSlots.exited} once it is gone."""


class ProcessSlots(Protocol):
    """
    The global cap on live CLI processes.
    Implemented by L{claudews.supervisor.Supervisor}.
    """

    def acquire(self, owner: SlotOwner) -> Deferred[None]:
        """Fires when C{owner} may run its process for a prompt; cancellable."""

    def release(self, owner: SlotOwner) -> None:
        """C{owner}'s prompt finished; its process stays alive, idle."""

    def exited(self, owner: SlotOwner) -> None:
        """C{owner}'s process is gone: its slot is free."""

    def forget(self, owner: SlotOwner) -> None:
        """C{owner} is deleted: take it out of the line."""


class DelayedCall(Protocol):
    """
    A pending timed call, as C{callLater} returns it.  Twisted's own
    C{IDelayedCall} is a zope interface, which C{mypy} cannot check
    without a plugin; this is the part of it claudews uses.
    """

    def active(self) -> bool:
        """Whether the call is still to happen."""

    def cancel(self) -> None:
        """Stop the call from happening; only while L{active}."""


class ReactorTime(Protocol):
    """
    The reactor's clock, injected everywhere so tests can pass a
    L{twisted.internet.task.Clock}.  Implemented by the reactor.
    """

    def seconds(self) -> float:
        """The current time, in seconds."""

    def callLater(
        self, delay: float, callable: Callable[..., object], *args: object, **kw: object
    ) -> DelayedCall:
        """Call C{callable(*args, **kw)} after C{delay} seconds."""


class ProcessTrees(Protocol):
    """
    Looking at and ending the process trees of CLI processes (see
    L{claudews.proctree}). Implemented by L{claudews.proctree.SystemTrees}.
    """

    def tree(self, pid: int | None, marker: str | None) -> Deferred[list[Any]]:
        """
        Every live process of the tree of C{pid} and C{marker}, found off
        the reactor thread; never one started after the call.
        """

    def baseline(
        self, pid: int | None, marker: str | None
    ) -> Callable[[], Deferred[list[Any]]]:
        """
        L{tree} as it is now, looked at only when the returned function is
        called (cheap until then: nothing is read but the list of pids):
        the processes of the tree now that still run then.
        """

    def end(
        self, pid: int | None, marker: str | None, *, grace: float, exclude: Sequence[Any] = (),
        only_older: bool = False,
    ) -> Deferred[list[Any]]:
        """
        End that tree: TERM, then KILL after C{grace}; always fires. With
        C{only_older}, what starts meanwhile is ended only as a descendant
        of what is being ended (L{claudews.proctree.end_tree}).
        """

    def session_of(self, process: Any) -> int | None:
        """The session id of C{process}, C{None} once it is gone."""


class ProcessReactor(ReactorTime, Protocol):
    """
    The reactor's clock and its way to start processes (the part of
    C{IReactorProcess} claudews uses).
    """

    def addSystemEventTrigger(
        self, phase: str, eventType: str, callable: Callable[..., Any], *args: Any
    ) -> Any:
        """Call C{callable} at C{phase} of C{eventType} (shutdown)."""

    def spawnProcess(
        self,
        processProtocol: Any,
        executable: str,
        args: Sequence[str],
        env: dict[str, str] | None = None,
        path: str | None = None,
        uid: int | None = None,
        gid: int | None = None,
        usePTY: bool = False,
        childFDs: dict[int, object] | None = None,
    ) -> Any:
        """Start C{executable} with C{args}, connected to C{processProtocol}."""


class PromptHost(Protocol):
    """
    What a prompt needs from its project.
    """

    @property
    def session_id(self) -> str | None:
        """The conversation the project is in."""

    @property
    def session_generation(self) -> int:
        """How many times that conversation was reset: a result of an
        older one must not set the session."""

    def publish(self, event: Event) -> bool:
        """Store, then send, an event; whether it was stored."""

    def storage_problem(self) -> str | None:
        """Why events cannot be stored now, or C{None}."""

    def settled(self, prompt_id: str) -> None:
        """The prompt's C{prompt.finished} is stored: it is no longer open."""

    def resume_failed(self, detail: str) -> str:
        """The CLI lost the conversation: reset it; the error to report."""

    def cancel_permissions(self, prompt_id: str) -> None:
        """Deny what the prompt still waits on (L{PermissionBroker.cancel})."""


class ProcessRoom(Protocol):
    """
    What a prompt needs from the project's live CLI process
    (L{claudews.liveprocess.LiveProcess}); C{process} is a
    L{claudews.runner.ClaudeProcess}.
    """

    def acquire(self) -> Deferred[None]:
        """Fires when the project may run a process; cancellable."""

    def ready(self, flags: tuple[str, ...]) -> Deferred[Any]:
        """Fires with a live process started with C{flags}; cancellable."""

    def snapshot(self, process: Any) -> Callable[[], Deferred[list[Any]]]:
        """
        What runs in C{process}'s tree now (spared when tools are ended),
        found when the returned function is called, off the reactor
        thread; fires with C{[]} when it cannot be known.
        """

    def end_tools(self, process: Any, spare: list[Any]) -> None:
        """End what the prompt's tools left running, sparing C{spare}."""

    def escalate(self, process: Any) -> None:
        """C{process} ignored an interrupt: end it."""

    def prompt_done(self, process: Any | None, held: bool) -> None:
        """The prompt finished: the slot it C{held}, if it did, goes back."""


# -- what requests need (L{claudews.requests})


class Project(Protocol):
    """
    What requests do with one project.
    Implemented by L{claudews.project.Project}.
    """

    @property
    def path(self) -> str:
        """The canonical path, the project's name in requests."""

    @property
    def first_seq(self) -> int:
        """The oldest stored event."""

    def describe(self) -> dict[str, Any]:
        """The project object of the protocol."""

    def subscribe(self, subscriber: Subscriber, since: int | None, epoch: Any = None) -> dict[str, Any]:
        """Add C{subscriber}, replaying after C{since}; the reply."""

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Send C{subscriber} no more events."""

    @property
    def history(self) -> EventStore:
        """Its stored events, which C{history} pages are read from."""

    def submit(self, text: str, options: dict[str, Any], flags: Any) -> dict[str, Any]:
        """Queue a prompt; the reply."""

    def cancel(self, prompt_id: str | None) -> list[str]:
        """Cancel a prompt (the running one without C{prompt_id})."""

    def reset_session(self) -> None:
        """Start the next prompt in a new conversation."""

    def respond_permission(self, answer: "PermissionAnswer") -> None:
        """A client's answer to a pending permission request."""


class Projects(Protocol):
    """
    All projects. Implemented by L{claudews.registry.Registry}.
    """

    def get(self, path: str) -> Project:
        """The project at C{path}; raises L{RequestError} C{project_not_found}."""

    def create(self, path: str) -> Project:
        """A new project at C{path}; raises L{RequestError}."""

    def list(self) -> Sequence[Project]:
        """Every project, by path."""

    def watch(self, watcher: Subscriber) -> Sequence[Project]:
        """Tell C{watcher} of every change of the project list; the list now."""

    def unwatch(self, watcher: Subscriber) -> None:
        """Tell C{watcher} nothing more."""

    def delete(self, project: Any) -> Deferred[Any]:
        """
        Forget C{project} (one this registry gave) and its history; fires
        when done.
        """


class Server(Protocol):
    """
    What handlers need of the server. Implemented by
    L{claudews.wsfactory.ServerFactory}.
    """

    @property
    def settings(self) -> "Settings":
        """The server's settings."""

    @property
    def registry(self) -> Projects:
        """The projects."""

    @property
    def reactor(self) -> ReactorTime:
        """The reactor streamed replies take their turns on."""

    def validate_options(self, given: object) -> dict[str, Any]:
        """A prompt's checked options; raises L{RequestError}."""

    def option_flags(self, options: dict[str, Any]) -> Any:
        """The CLI flags for checked options."""

    def claude_version(self) -> str | None:
        """What C{claude --version} said, C{None} while unknown."""
