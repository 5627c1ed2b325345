"""
One server per data directory: an exclusive lock on C{DATA/claudews.lock},
held for the server's life.

Two servers on one directory would hand out the same event numbers and
overwrite each other's histories, so the second one must not start.

The lock is C{flock(2)}, not a lock file whose existence is the lock:
the kernel releases it when the last descriptor on it closes, so a
server killed with SIGKILL (or a crashed machine) leaves nothing stale
behind, and the next start takes it without guessing whether a recorded
pid still means anything. The descriptor survives twistd's daemonizing
fork (a duplicate of it holds the same lock) and is close-on-exec, so a
CLI left running by a killed server does not keep the directory locked.
The file holds the owner's pid, only so that the refusal can name it.
"""

from __future__ import annotations

import errno
import fcntl
import os

LOCK_FILE = "claudews.lock"


class DataDirectoryLocked(Exception):
    """
    Another live process holds the data directory's lock.

    @ivar pid: the holder's pid as it recorded it, or C{None} when unknown.
    """

    def __init__(self, path: str, pid: int | None) -> None:
        self.path = path
        self.pid = pid
        holder = "process %d" % (pid,) if pid is not None else "another process"
        super().__init__(
            "the data directory {} is in use by {} (another claudews server;"
            " lock {}): stop it, or give this one its own --data".format(
                os.path.dirname(path), holder, path
            )
        )


def _recorded_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text)
    except (OSError, ValueError):
        return None


class DataLock:
    """
    The held lock on one data directory; L{acquire} makes one.
    """

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, data: str) -> DataLock:
        """
        Lock C{data} (an existing directory) for this process.

        @raise DataDirectoryLocked: another process holds it.
        @raise OSError: the lock file cannot be opened.
        """
        path = os.path.join(data, LOCK_FILE)
        # Not O_TRUNC: the holder's pid must still be readable when we lose.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            pid = _recorded_pid(fd)
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise DataDirectoryLocked(path, pid) from None
            raise
        lock = cls(path, fd)
        lock.record_pid()
        return lock

    def record_pid(self) -> None:
        """
        Write this process's pid into the lock file: again after twistd
        has daemonized, since the pid changes with the fork.
        """
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, b"%d\n" % (os.getpid(),), 0)

    def release(self) -> None:
        """
        Give the directory up. The file stays: removing it would let a
        third server lock a new file while a second waits on the old one.
        """
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    @property
    def held(self) -> bool:
        """Whether this object still holds the lock."""
        return self._fd is not None
