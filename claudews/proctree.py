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
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterable
from typing import Any, Protocol

import psutil  # type: ignore[import-untyped]
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from claudews.interfaces import DelayedCall, ReactorTime

_log = Logger()

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

    def scan(self, roots: Iterable[Any], group: int | None, marker: str | None) -> list[Any]:
        """
        Live, non-zombie processes among C{roots}, the members of process
        group C{group}, those carrying C{MARKER_ENV=marker}, and all their
        descendants; never the calling process.
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

    def scan(
        self,
        roots: Iterable[psutil.Process],
        group: int | None,
        marker: str | None,
    ) -> list[psutil.Process]:
        me = os.getpid()
        live: dict[int, psutil.Process] = {}
        children: dict[int, list[psutil.Process]] = {}
        found: dict[int, psutil.Process] = {}
        # Fresh Process objects rather than process_iter's cache: a cached
        # object can outlive its process and describe whoever reused the pid.
        for pid in psutil.pids():
            try:
                process = psutil.Process(pid)
                with process.oneshot():
                    if process.status() == psutil.STATUS_ZOMBIE:
                        continue
                    ppid = process.ppid()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            live[pid] = process
            children.setdefault(ppid, []).append(process)
            if group is not None and _getpgid(pid) == group:
                found[pid] = process
            elif marker is not None and _marker_of(process) == marker:
                found[pid] = process
        for root in roots:
            current = live.get(root.pid)
            if current is not None and current == root:
                found[root.pid] = current
        pending = list(found.values())
        while pending:
            for child in children.get(pending.pop().pid, ()):
                if child.pid not in found:
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
    it.

    C{pid} must not have been reaped yet (a zombie is fine), or the group
    signal could reach whoever reused the number.

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
    )
    return ending.start()


class SystemTrees:
    """
    The process trees of this machine, for a project on C{reactor}: what
    L{claudews.interfaces.ProcessTrees} asks, on the real process table.
    """

    def __init__(self, reactor: ReactorTime, table: ProcessTable | None = None) -> None:
        self._reactor = reactor
        self._table = SystemProcessTable() if table is None else table

    def tree(self, pid: int | None, marker: str | None) -> list[Any]:
        root = self._table.lookup(pid) if pid is not None else None
        return self._table.scan([root] if root is not None else [], pid, marker)

    def end(
        self, pid: int | None, marker: str | None, *, grace: float, exclude: Iterable[Any] = ()
    ) -> Deferred[list[Any]]:
        return end_tree(
            pid, marker, grace=grace, reactor=self._reactor, exclude=exclude, table=self._table
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
    ) -> None:
        self._pid = pid
        self._marker = marker
        self._grace = grace
        self._reactor = reactor
        self._exclude = exclude
        self._kill_timeout = kill_timeout
        self._interval = interval
        self._table = table
        self._termed: set[Any] = set()
        self._killed: list[Any] = []
        self._call: DelayedCall | None = None
        self._done = False

    def start(self) -> Deferred[list[Any]]:
        self._deferred: Deferred[list[Any]] = Deferred(self._cancel)
        self._started = self._reactor.seconds()
        self._root = self._table.lookup(self._pid) if self._pid is not None else None
        # Snapshot first: once the root dies its children move to init and
        # can only be found by marker.
        found = self._look(group=self._pid)
        if self._pid is not None and not any(
            self._table.pgid(p) == self._pid for p in self._exclude
        ):
            self._table.killpg(self._pid, signal.SIGTERM)
        self._terminate(found)
        if found:
            self._schedule()
        else:
            self._finish()
        return self._deferred

    def _look(self, group: int | None) -> list[Any]:
        roots = list(self._termed)
        if self._root is not None:
            roots.append(self._root)
        found = self._table.scan(roots, group, self._marker)
        self._rootAlive = self._root is not None and self._root in found
        return [p for p in found if p not in self._exclude]

    def _terminate(self, processes: list[Any]) -> None:
        for process in processes:
            if process not in self._termed:
                self._termed.add(process)
                self._table.signal(process, signal.SIGTERM)

    def _schedule(self) -> None:
        self._call = self._reactor.callLater(self._interval, self._poll)

    def _poll(self) -> None:
        self._call = None
        try:
            self._step()
        except Exception:
            _log.failure("looking for processes of {pid} (marker {marker})",
                         pid=self._pid, marker=self._marker)
            if self._elapsed() >= self._grace + self._kill_timeout:
                self._finish()
        if not self._done and self._call is None:
            self._schedule()

    def _elapsed(self) -> float:
        return self._reactor.seconds() - self._started

    def _step(self) -> None:
        # New members of the group can only come from live members, so once
        # the root is gone (and its pid reusable) the descendants of what
        # we already track cover them.
        found = self._look(group=self._pid if self._rootAlive else None)
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
