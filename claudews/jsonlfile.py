"""
The JSON-lines file being written: names, rotation, the latest.jsonl link
and the repairs a crash or a full disk call for.

A project's C{logs/} directory, which people read too::

    messages_2026-11-26_10-27-06.jsonl   one file per rotation, named by the
    messages_2026-11-26_11-02-40.jsonl   UTC time it was started ("-1", "-2"
    latest.jsonl -> messages_...         on a clash); the link is relative

A line is either all on disk or not at all: a write that fails part-way is
cut back (L{JsonlFile.write}), and a torn last line that a crash left is
cut when the directory is opened again (L{truncate_torn_tail}).
"""

from __future__ import annotations

import errno
import os
import re
import time
from typing import BinaryIO, Callable, cast

from twisted.logger import Logger
from twisted.python.logfile import BaseLogFile

_log = Logger()

LATEST = "latest.jsonl"
LATEST_TMP = ".latest.jsonl.tmp"
#: The names L{fresh_name} gives; other files in the directory are not ours.
NAME = re.compile(r"^messages_\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d(?:-\d+)?\.jsonl$")
#: How much of a file is read at a time when reading it backwards.
CHUNK = 64 * 1024
#: A history file is its owner's alone, whatever the umask or the mode of
#: the directories above it.
FILE_MODE = 0o600


def fresh_name(directory: str, when: float) -> str:
    """
    A name for a file started at C{when} that no file in C{directory} has.
    """
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S", time.gmtime(when))
    name = "messages_%s.jsonl" % (stamp,)
    n = 0
    while os.path.lexists(os.path.join(directory, name)):
        n += 1
        name = "messages_%s-%d.jsonl" % (stamp, n)
    return name


def truncate_torn_tail(path: str, size: int) -> int:
    """
    Cut a last line that has no newline (a crash mid-write); the new size.
    """
    if size == 0:
        return 0
    with open(path, "rb+") as f:
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return size
        keep, pos = 0, size
        while pos > 0:
            n = min(CHUNK, pos)
            pos -= n
            f.seek(pos)
            i = f.read(n).rfind(b"\n")
            if i >= 0:
                keep = pos + i + 1
                break
        f.truncate(keep)
    _log.warn("Truncated a torn last line of {path} ({cut} bytes)", path=path, cut=size - keep)
    return keep


class JsonlFile(BaseLogFile):
    """
    The file being written.

    L{BaseLogFile} gives the unbuffered binary handle and keeps the file mode;
    naming and rotation are ours, because its C{.1 .2} renaming would move
    files under readers and under the people reading them.

    @ivar needsRecovery: a failed write left a partial line that could not
        be cut off; L{recover} before the next write.
    """

    def __init__(self, directory: str, name: str, rotateLength: int, now: Callable[[], float]):
        self.rotateLength = rotateLength
        self._now = now
        self.needsRecovery = False
        BaseLogFile.__init__(self, name, directory)

    # Twisted's logfile is not annotated: its two methods we call are
    # wrapped here, so mypy checks every other use.

    def _openFile(self) -> None:
        # Not BaseLogFile's way, which sets the process-wide umask to make
        # a file with its mode; a file an older server made is tightened.
        self.closed = False
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        try:
            os.fchmod(fd, FILE_MODE)
            self._file = cast(BinaryIO, os.fdopen(fd, "rb+", 0))
        except BaseException:
            os.close(fd)
            raise
        self._file.seek(0, os.SEEK_END)
        self.size = self._file.tell()

    def close(self) -> None:
        BaseLogFile.close(self)  # type: ignore[no-untyped-call]

    def fileno(self) -> int:
        return self._file.fileno()

    def shouldRotate(self, incoming: int = 1) -> bool:
        return self.size > 0 and self.size + incoming > self.rotateLength

    def rotate(self) -> None:
        """
        Go on in a new file; the old one stays as it is, under its name.
        """
        old = (self.name, self.path, self._file, self.size)
        self.name = fresh_name(self.directory, self._now())
        self.path = os.path.join(self.directory, self.name)
        try:
            self._openFile()
        except BaseException:
            self.name, self.path, self._file, self.size = old
            raise
        try:
            old[2].close()
        except OSError:
            _log.failure("Closing {path} failed", path=old[1])

    def linkLatest(self) -> bool:
        """
        Point latest.jsonl at this file in one step, so a reader never finds
        it missing; C{False} (logged) when that failed.
        """
        link = os.path.join(self.directory, LATEST)
        tmp = os.path.join(self.directory, LATEST_TMP)
        try:
            if os.path.islink(link) and os.readlink(link) == self.name:
                return True
            if os.path.lexists(tmp):
                os.unlink(tmp)
            os.symlink(self.name, tmp)
            os.replace(tmp, link)
        except OSError:
            _log.failure("Pointing {link} at {name} failed", link=link, name=self.name)
            return False
        return True

    def write(self, data: bytes) -> None:
        """
        Write all of C{data}, or leave the file as it was and raise; or, when even cutting the partial line off fails,
        set C{needsRecovery}: the caller calls L{recover} before its next
        write (L{claudews.history.History.append} does, before it decides
        to rotate).
        """
        fd = self.fileno()
        view = memoryview(data)
        done = 0
        try:
            # A full disk shows up as a short write first, ENOSPC after.
            while done < len(view):
                n = os.write(fd, view[done:])
                if not n:
                    raise OSError(errno.EIO, "write made no progress", self.path)
                done += n
        except BaseException:
            if done:
                self._cut_back()
            raise
        self.size += len(data)

    def _cut_back(self) -> None:
        try:
            self._truncate()
        except OSError:
            self.needsRecovery = True
            _log.failure("Cutting a partial line off {path} failed; retrying before the next append", path=self.path)

    def _truncate(self) -> None:
        os.ftruncate(self.fileno(), self.size)
        os.lseek(self.fileno(), self.size, os.SEEK_SET)

    def recover(self) -> None:
        """
        Cut off the partial line a failed write left; raises L{OSError}.
        """
        self._truncate()
        self.needsRecovery = False
        _log.info("Cut a partial line off {path}", path=self.path)
