"""
Ending a CLI's whole process tree.

The CLI runs as the leader of its own session and process group, but its
Bash tool starts every command in a new session of its own: killing the
CLI's process group leaves those running, and once the CLI dies they are
reparented to init and stop being its descendants. So every CLI we spawn
carries an environment marker, C{CLAUDEWS_PROCESS=<unique token>}, that all
its descendants inherit, and ending a tree means ending the CLI's group,
every descendant, and every process carrying the marker.

Processes are handled as L{psutil.Process} objects after the first look:
they remember their creation time, so a pid reused by an unrelated process
is never signalled.

Looking at the process table reads every process (its environment
included): milliseconds, more on a busy machine. L{SystemTrees} does it
off the reactor thread, through an injected L{InThread}, so that the
streams of every other project do not wait for it.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Collection, Iterable
from typing import Any, Protocol, TypeVar, cast

import psutil  # type: ignore[import-untyped]
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from claudews.interfaces import DelayedCall, ReactorTime

_log = Logger()

_T = TypeVar("_T")

MARKER_ENV = "CLAUDEWS_PROCESS"

#: A CLI is handed the directory it must work in as this descriptor, named
#: in this variable: the trampoline changes into it, closes it and removes
#: the variable before the CLI runs.
CWD_FD = 3
CWD_FD_ENV = "CLAUDEWS_CWD_FD"

# Python ignores SIGPIPE and SIGXFSZ at startup, and ignored signals survive
# exec: without restoring them the CLI would inherit dispositions it never
# asked for.  setsid fails only when we already lead a process group, in
# which case pid == pgid holds anyway.  Note that the interpreter's locale
# coercion (PEP 538) may add LC_CTYPE=C.UTF-8 to the environment under a C
# locale; a UTF-8 locale is what the CLI wants in any case.
_TRAMPOLINE = """\
import os, signal, sys
for name in ("SIGPIPE", "SIGXFSZ"):
    if hasattr(signal, name):
        signal.signal(getattr(signal, name), signal.SIG_DFL)
try:
    os.setsid()
except OSError:
    pass
cwd_fd = os.environ.pop("CLAUDEWS_CWD_FD", None)
if cwd_fd is not None:
    try:
        os.fchdir(int(cwd_fd))
        os.close(int(cwd_fd))
    except (OSError, ValueError) as e:
        sys.stderr.write("claudews: cannot enter the project directory: %s\\n" % (e,))
        sys.stderr.flush()
        os._exit(127)
try:
    os.execvp(sys.argv[1], sys.argv[1:])
except OSError as e:
    sys.stderr.write("claudews: cannot run %s: %s\\n" % (sys.argv[1], e.strerror))
    sys.stderr.flush()
    os._exit(127)
"""


def new_session_argv(argv: list[str]) -> list[str]:
    """
    An argv that runs C{argv} as the leader of a new session.

    No shell and no extra fork: the Python trampoline calls C{setsid} and
    then execs C{argv[0]} in place, so the pid the caller spawns is the
    program's pid and its process group id (Twisted's C{spawnProcess} has no
    pre-exec hook).  If C{argv[0]} cannot be executed, it prints one line to
    stderr and exits 127, like a shell would.
    """
    if not argv:
        raise ValueError("argv must name a program")
    # -I -S: the trampoline needs no site packages and must not be steered
    # by PYTHON* variables meant for someone else; os.environ, which the
    # exec passes on unchanged, is not affected.
    return [sys.executable, "-I", "-S", "-c", _TRAMPOLINE, *argv]


class ProcessTable(Protocol):
    """
    How L{end_tree} looks at and signals processes.  The real one is
    L{SystemProcessTable}; tests substitute a fake.
    """

    def lookup(self, pid: int) -> Any | None:
        """The live (or zombie) process C{pid}, or None."""

    def pids(self) -> Collection[int]:
        """The pids there are now; cheap: no process is looked at."""

    def now(self) -> float | None:
        """
        The time in the clock L{scan}'s C{born_by} is in, or None where
        process start times cannot be compared with it.
        """

    def scan(
        self,
        roots: Iterable[Any],
        group: int | None,
        marker: str | None,
        among: Collection[int] | None = None,
        born_by: float | None = None,
        marked_by: float | None = None,
        skip: Collection[Any] = (),
    ) -> list[Any]:
        """
        Live, non-zombie processes among C{roots}, the members of process
        group C{group}, those carrying C{MARKER_ENV=marker}, and all their
        descendants; never the calling process.  Only the processes of
        C{among} (L{pids} taken earlier) are looked at, when given, and
        of those only the ones started by C{born_by} (a L{now} taken with
        them): a pid of C{among} reused since is someone else.  With
        C{marked_by} (a L{now}), a member of the group or a carrier of the
        marker started after it is found only as a descendant.  The
        processes of C{skip} are neither found nor looked through: their
        descendants count only if found otherwise.
        """

    def signal(self, process: Any, signum: int) -> None:
        """Send C{signum}; a process that is gone or out of reach is ignored."""

    def killpg(self, pgid: int, signum: int) -> None:
        """Signal a process group; a group that is gone is ignored."""

    def pgid(self, process: Any) -> int | None:
        """The process group of C{process}, or None if it is gone."""


def _marker_of(process: psutil.Process) -> str | None:
    try:
        marker: str | None = process.environ().get(MARKER_ENV)
        return marker
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        # ZombieProcess is a NoSuchProcess.
        return None


class SystemProcessTable:
    """L{ProcessTable} over the real system, through psutil."""

    def lookup(self, pid: int) -> psutil.Process | None:
        try:
            return psutil.Process(pid)
        except psutil.NoSuchProcess:
            return None

    def pids(self) -> list[int]:
        pids: list[int] = psutil.pids()
        return pids

    def now(self) -> float | None:
        # Linux gives a process's start in clock ticks since boot (psutil
        # adds the boot time to it): the clock to compare it with is
        # CLOCK_BOOTTIME, which time namespaces offset alike.
        clock = getattr(time, "CLOCK_BOOTTIME", None)
        if clock is None or not sys.platform.startswith("linux"):
            return None
        return time.clock_gettime(clock)

    def scan(
        self,
        roots: Iterable[psutil.Process],
        group: int | None,
        marker: str | None,
        among: Collection[int] | None = None,
        born_by: float | None = None,
        marked_by: float | None = None,
        skip: Collection[psutil.Process] = (),
    ) -> list[psutil.Process]:
        me = os.getpid()
        boot = psutil.boot_time() if born_by is not None or marked_by is not None else 0.0
        live: dict[int, psutil.Process] = {}
        children: dict[int, list[psutil.Process]] = {}
        found: dict[int, psutil.Process] = {}
        # Fresh Process objects rather than process_iter's cache: a cached
        # object can outlive its process and describe whoever reused the pid.
        for pid in psutil.pids() if among is None else among:
            try:
                process = psutil.Process(pid)
                with process.oneshot():
                    if process.status() == psutil.STATUS_ZOMBIE:
                        continue
                    # Start times come in clock ticks: the margin keeps one
                    # started just before C{born_by} from counting as new.
                    if born_by is not None and _started(process, boot) > born_by + _TICKS:
                        continue
                    ppid = process.ppid()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            live[pid] = process
            children.setdefault(ppid, []).append(process)
            if marked_by is not None and _started(process, boot) > marked_by + _TICKS:
                continue
            if group is not None and _getpgid(pid) == group:
                found[pid] = process
            elif marker is not None and _marker_of(process) == marker:
                found[pid] = process
        for root in roots:
            current = live.get(root.pid)
            if current is not None and current == root:
                found[root.pid] = current
        for process in skip:
            if found.get(process.pid) == process:
                del found[process.pid]
        pending = list(found.values())
        while pending:
            for child in children.get(pending.pop().pid, ()):
                if child.pid not in found and child not in skip:
                    found[child.pid] = child
                    pending.append(child)
        found.pop(me, None)
        return list(found.values())

    def signal(self, process: psutil.Process, signum: int) -> None:
        try:
            # send_signal refuses a process whose pid has been reused.
            process.send_signal(signum)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass

    def killpg(self, pgid: int, signum: int) -> None:
        try:
            os.killpg(pgid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def pgid(self, process: psutil.Process) -> int | None:
        return _getpgid(process.pid)


#: More than one clock tick (1/100 s on Linux), in seconds.
_TICKS = 0.05


def _started(process: psutil.Process, boot: float) -> float:
    """When C{process} started, in seconds since boot (L{SystemProcessTable.now}'s clock)."""
    started: float = process.create_time() - boot
    return started


def _getpgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def tree(pid: int | None, marker: str | None) -> list[psutil.Process]:
    """
    Every process that belongs to the tree of C{pid} and C{marker}.

    That is C{pid} itself (unless it is gone or a zombie), the members of
    its process group, every process whose environment has
    C{MARKER_ENV=marker}, and all descendants of those; deduplicated, never
    the calling process.  Zombies count as gone.
    """
    table = SystemProcessTable()
    root = table.lookup(pid) if pid is not None else None
    return table.scan([root] if root is not None else [], pid, marker)


def find_marked(
    markers: Iterable[str] = (), *, prefix: str | None = None
) -> list[psutil.Process]:
    """
    Live processes whose C{MARKER_ENV} is one of C{markers}, or starts with
    C{prefix}: after a crash, what the dead server left running.  Pass each
    distinct L{marker_of} value to L{end_tree} to end them.
    """
    wanted = frozenset(markers)
    me = os.getpid()
    result = []
    for pid in psutil.pids():
        if pid == me:
            continue
        try:
            process = psutil.Process(pid)
        except psutil.NoSuchProcess:
            continue
        value = _marker_of(process)
        if value is None:
            continue
        if value in wanted or (prefix is not None and value.startswith(prefix)):
            result.append(process)
    return result


def marker_of(process: psutil.Process) -> str | None:
    """The C{MARKER_ENV} value of C{process}, or None if unreadable or unset."""
    return _marker_of(process)


class InThread(Protocol):
    """
    Somewhere to run a call that blocks (a look at the process table)
    without keeping the reactor thread waiting: C{in_thread(f)} calls
    C{f()} there and fires, on the reactor thread, with what it returned
    or raised.  L{reactor_threads} in production, L{at_once} in tests.
    """

    def __call__(self, f: Callable[[], _T], /) -> Deferred[_T]:
        """Call C{f}; its result or failure."""


def at_once(f: Callable[[], _T]) -> Deferred[_T]:
    """
    The L{InThread} that calls C{f} right away on the caller's thread:
    for tests on a L{twisted.internet.task.Clock}, whose fake process
    tables answer at once and whose results are wanted synchronously.
    """
    return defer.maybeDeferred(f)


def reactor_threads(reactor: object) -> InThread:
    """
    The L{InThread} of C{reactor}'s thread pool, one call at a time, or
    L{at_once} for a reactor without threads (a
    L{twisted.internet.task.Clock} in tests).

    One at a time: a look at the process table holds the GIL for most of
    its time, and the more threads hold it the longer the reactor thread
    waits for it (ten looks at once stalled it for longer than the same
    looks on it did); one thread also leaves the pool's others to its
    other users.

    Calls made before the reactor runs (ending a dead server's leftovers
    at start) wait in the pool's queue until it does.  At shutdown the
    services stop in the reactor's "before shutdown" phase and its pool
    only stops "during" it, once every Deferred the services returned has
    fired: ending the process trees at shutdown runs in threads like at
    any other time, and needs no synchronous path.
    """
    if not IReactorThreads.providedBy(reactor):
        return at_once
    threads = cast(Any, reactor)
    one_at_a_time = defer.DeferredSemaphore(1)

    def in_pool(f: Callable[[], _T]) -> Deferred[_T]:
        # The pool is asked for at each call: a reactor makes it on first use.
        return one_at_a_time.run(
            lambda: deferToThreadPool(threads, threads.getThreadPool(), f)
        )

    return in_pool


def end_tree(
    pid: int | None,
    marker: str | None,
    *,
    grace: float = 5.0,
    reactor: ReactorTime,
    exclude: Iterable[Any] = (),
    kill_timeout: float = 5.0,
    interval: float = 0.1,
    table: ProcessTable | None = None,
    in_thread: InThread | None = None,
    only_older: bool = False,
) -> Deferred[list[Any]]:
    """
    End the process tree of C{pid} and C{marker} (see L{tree}).

    SIGTERM goes to process group C{pid} and to every process of a snapshot
    taken before any signal (children are reparented once their parent
    dies).  Every C{interval} seconds the tree is looked at again, which
    also finds processes started meanwhile (they get SIGTERM too); whatever
    is still alive after C{grace} seconds gets SIGKILL, repeated on each
    look until nothing is left.  Processes in C{exclude} are never
    signalled, and the process group is not signalled if one of them is in
    it.  The looks run through C{in_thread} (by default
    L{reactor_threads}); the signals are sent from the reactor thread.

    C{pid} must not have been reaped yet (a zombie is fine), or the group
    signal could reach whoever reused the number.

    With C{only_older}, a process that started after the call is found
    only as a descendant of one being ended, never by the group or the
    marker alone, nor as a descendant of one in C{exclude}: ending what a
    stopped prompt's tools left while the CLI lives on, whose next
    prompt's tools carry the same marker.

    @return: a Deferred that always fires, with the list of processes that
        had to be sent SIGKILL.  If some survive SIGKILL for
        C{kill_timeout} seconds (uninterruptible sleep), an error is logged
        and it fires anyway.  Cancelling it stops the polling.
    """
    ending = _Ending(
        pid,
        marker,
        grace=grace,
        reactor=reactor,
        exclude=list(exclude),
        kill_timeout=kill_timeout,
        interval=interval,
        table=SystemProcessTable() if table is None else table,
        in_thread=reactor_threads(reactor) if in_thread is None else in_thread,
        only_older=only_older,
    )
    return ending.start()


class SystemTrees:
    """
    The process trees of this machine, for a project on C{reactor}: what
    L{claudews.interfaces.ProcessTrees} asks, on the real process table,
    looked at through C{in_thread} (by default L{reactor_threads}).
    """

    def __init__(
        self,
        reactor: ReactorTime,
        table: ProcessTable | None = None,
        in_thread: InThread | None = None,
    ) -> None:
        self._reactor = reactor
        self._table = SystemProcessTable() if table is None else table
        self._in_thread = reactor_threads(reactor) if in_thread is None else in_thread

    def tree(self, pid: int | None, marker: str | None) -> Deferred[list[Any]]:
        return self.baseline(pid, marker)()

    def baseline(
        self, pid: int | None, marker: str | None
    ) -> Callable[[], Deferred[list[Any]]]:
        # The root, the pids and the time are taken now, on the reactor
        # thread (one stat, one listing of /proc), and only looked at when
        # asked, in the thread: a process started after this call, say a
        # tool of the prompt this is the baseline of, is never taken for
        # one that was there before, however late the look comes.
        table = self._table
        try:
            root = table.lookup(pid) if pid is not None else None
            among = table.pids()
            born_by = table.now()
        except Exception as e:
            error = e
            return lambda: defer.fail(error)
        roots = [root] if root is not None else []
        return lambda: self._in_thread(lambda: table.scan(roots, pid, marker, among, born_by))

    def end(
        self, pid: int | None, marker: str | None, *, grace: float, exclude: Iterable[Any] = (),
        only_older: bool = False,
    ) -> Deferred[list[Any]]:
        return end_tree(
            pid,
            marker,
            grace=grace,
            reactor=self._reactor,
            exclude=exclude,
            table=self._table,
            in_thread=self._in_thread,
            only_older=only_older,
        )

    def session_of(self, process: Any) -> int | None:
        try:
            return os.getsid(process.pid)
        except OSError:
            return None


class _Ending:
    """One run of L{end_tree}: the polling state between two looks."""

    def __init__(
        self, pid: int | None, marker: str | None, *, grace: float, reactor: ReactorTime,
        exclude: list[Any], kill_timeout: float, interval: float, table: ProcessTable,
        in_thread: InThread, only_older: bool = False,
    ) -> None:
        self._only_older = only_older
        self._marked_by: float | None = None
        self._pid = pid
        self._marker = marker
        self._grace = grace
        self._reactor = reactor
        self._exclude = exclude
        self._kill_timeout = kill_timeout
        self._interval = interval
        self._table = table
        self._in_thread = in_thread
        self._termed: set[Any] = set()
        self._killed: list[Any] = []
        self._call: DelayedCall | None = None
        #: No look has come back yet: the group is still to be signalled.
        self._first = True
        self._done = False

    def start(self) -> Deferred[list[Any]]:
        self._deferred: Deferred[list[Any]] = Deferred(self._cancel)
        self._started = self._reactor.seconds()
        if self._only_older:
            self._marked_by = self._table.now()
        # Twisted reaps on this thread: here the pid is still the root's
        # (see end_tree), and the root remembers its creation time.
        self._root = self._table.lookup(self._pid) if self._pid is not None else None
        self._rootAlive = self._root is not None
        # Snapshot first: once the root dies its children move to init and
        # can only be found by marker.
        self._look()
        return self._deferred

    def _look(self) -> None:
        self._call = None
        roots = list(self._termed)
        if self._root is not None:
            roots.append(self._root)
        # New members of the group can only come from live members, so once
        # the root is gone (and its pid reusable) the descendants of what
        # we already track cover them.
        group = self._pid if self._rootAlive else None
        table, marker, marked_by = self._table, self._marker, self._marked_by
        # With only_older, what is spared is not looked through either: the
        # live CLI's children of later are its next prompt's tools.
        skip = self._exclude if self._only_older else ()
        looking = self._in_thread(
            lambda: table.scan(roots, group, marker, marked_by=marked_by, skip=skip)
        )
        # A failure to look, or to act on what was found, is one failure.
        looking.addCallback(self._looked).addErrback(self._failed)

    def _looked(self, found: list[Any]) -> None:
        if self._done:
            # Cancelled while the thread looked.
            return
        self._rootAlive = self._root is not None and self._root in found
        found = [p for p in found if p not in self._exclude]
        if self._first:
            self._first = False
            self._begin(found)
        else:
            self._step(found)
        self._next()

    def _failed(self, failure: Failure) -> None:
        if self._done:
            return
        _log.failure("looking for processes of {pid} (marker {marker})", failure,
                     pid=self._pid, marker=self._marker)
        if self._first:
            # The group signal needs no look.
            self._first = False
            try:
                self._signal_group()
            except Exception:
                _log.failure("signalling process group {pid}", pid=self._pid)
        if self._elapsed() >= self._grace + self._kill_timeout:
            self._finish()
        self._next()

    def _next(self) -> None:
        if not self._done:
            self._call = self._reactor.callLater(self._interval, self._look)

    def _begin(self, found: list[Any]) -> None:
        self._signal_group()
        self._terminate(found)
        if not found:
            self._finish()

    def _signal_group(self) -> None:
        if self._pid is None or self._root is None:
            return
        if any(self._table.pgid(p) == self._pid for p in self._exclude):
            return
        # The thread took its time: a root that is no longer the process
        # looked up at the start was reaped meanwhile, and its number may
        # name someone else's group now. Not reaped now, it cannot be
        # before the signal: that too would happen on this thread.
        if self._table.lookup(self._pid) != self._root:
            return
        self._table.killpg(self._pid, signal.SIGTERM)

    def _terminate(self, processes: list[Any]) -> None:
        for process in processes:
            if process not in self._termed:
                self._termed.add(process)
                self._table.signal(process, signal.SIGTERM)

    def _elapsed(self) -> float:
        return self._reactor.seconds() - self._started

    def _step(self, found: list[Any]) -> None:
        if not found:
            self._finish()
            return
        elapsed = self._elapsed()
        if elapsed < self._grace:
            self._terminate(found)
        elif elapsed < self._grace + self._kill_timeout:
            for process in found:
                if process not in self._killed:
                    _log.warn("process {pid} still alive {grace}s after SIGTERM; killing it",
                              pid=process.pid, grace=self._grace)
                    self._killed.append(process)
                self._termed.add(process)
                self._table.signal(process, signal.SIGKILL)
        else:
            _log.error("processes {pids} survived SIGKILL for {timeout}s "
                       "(uninterruptible sleep?); giving up on them",
                       pids=sorted(p.pid for p in found), timeout=self._kill_timeout)
            self._finish()

    def _finish(self) -> None:
        self._done = True
        self._deferred.callback(list(self._killed))

    def _cancel(self, deferred: Deferred[list[Any]]) -> None:
        self._done = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
