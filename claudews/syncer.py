"""
fsync off the reactor thread.

An fsync can take milliseconds, or seconds on a busy disk; on the reactor
thread every connection and every CLI stream would wait for it. A
L{Syncer} runs them in threads of a small pool of its own (so that slow
disks do not hold up the reactor's own pool, which resolves names and
scans processes) and fires its Deferred back on the reactor thread.

The history hands it duplicates of its file descriptors (C{os.dup}): a
file can be rotated and closed while its fsync still runs, and fsync of a
duplicate reaches the same file.
"""

import os
from typing import Any, Callable, Protocol, Sequence, cast

from twisted.internet import defer, threads
from twisted.internet.interfaces import IReactorFromThreads
from twisted.python.threadpool import ThreadPool

#: Threads fsyncing at once: projects' files are independent, and one slow
#: file must not hold up the others; more would only queue in the disk.
THREADS = 4


class FileSyncer(Protocol):
    """
    Where a history's fsyncs run. Implemented by L{Syncer} (threads) and
    L{InlineSyncer} (at once, on the calling thread).
    """

    def sync(self, fds: Sequence[int], directory: str | None) -> defer.Deferred[None]:
        """
        fsync each of C{fds}, then C{directory} when given. The syncer owns
        the descriptors: it closes them, whatever happens. Fails with the
        first L{OSError}.
        """


def fsync_directory(directory: str) -> None:
    """
    Make the entries of C{directory} (a new file, a rename) durable.
    Raises L{OSError}.
    """
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_now(fds: Sequence[int], directory: str | None) -> None:
    """
    fsync C{fds} and then C{directory}, closing the descriptors; raises the
    first L{OSError} once every descriptor is closed.
    """
    error: OSError | None = None
    for fd in fds:
        try:
            os.fsync(fd)
        except OSError as e:
            error = error or e
        finally:
            os.close(fd)
    if error is not None:
        raise error
    if directory is not None:
        try:
            fsync_directory(directory)
        except FileNotFoundError:
            # Removed meanwhile (a deleted project): nothing in it is
            # worth making durable any more.
            pass


class ThreadsReactor(Protocol):
    """What a L{Syncer} needs of the reactor (Twisted's are zope interfaces)."""

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Call C{f} on the reactor thread."""

    def addSystemEventTrigger(
        self, phase: str, eventType: str, callable: Callable[..., Any], *args: Any
    ) -> Any:
        """Call C{callable} at C{phase} of C{eventType} (shutdown)."""


class InlineSyncer:
    """
    fsync at once on the calling thread: for tools that write histories
    outside a running server (benches, tests that want no threads).
    """

    def sync(self, fds: Sequence[int], directory: str | None) -> defer.Deferred[None]:
        return defer.maybeDeferred(sync_now, fds, directory)


class Syncer:
    """
    fsync in a pool of L{THREADS} threads, started on first use and stopped
    after the reactor shuts down (its last fsyncs finish first: stopping a
    pool waits for the work it holds).
    """

    def __init__(self, reactor: ThreadsReactor, threads: int = THREADS) -> None:
        self._reactor = reactor
        self._pool: ThreadPool | None = None
        self._threads = threads

    def _started(self) -> ThreadPool:
        if self._pool is None:
            self._pool = ThreadPool(minthreads=0, maxthreads=self._threads, name="claudews-fsync")
            self._pool.start()
            self._reactor.addSystemEventTrigger(
                "after", "shutdown", self.stop
            )
        return self._pool

    def sync(self, fds: Sequence[int], directory: str | None) -> defer.Deferred[None]:
        return threads.deferToThreadPool(
            cast(IReactorFromThreads, self._reactor), self._started(), sync_now, list(fds), directory
        )

    def stop(self) -> None:
        """Stop the threads, once their work is done."""
        if self._pool is not None:
            self._pool.stop()
            self._pool = None
