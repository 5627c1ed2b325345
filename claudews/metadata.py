"""
A project's metadata.json: written atomically, read forgivingly.

A crash must leave either the old file or the new one, never half of
either: write a temporary file, fsync it, put it in the old one's place,
and fsync the directory so the new name itself is durable.

A server that dies (rather than the machine) loses nothing the kernel was
given, fsynced or not: L{Writer} follows the history's fsync policy, so
that only C{every} pays two fsyncs on the reactor thread per change; under
C{interval} the fsyncs run in the syncer's threads within the interval
(one for all of a project's changes meanwhile), and a machine that stops
before then may leave a missing, empty or older file, which L{read} takes
as missing (or the history's tail brings up to date) and the registry
rebuilds from the history.

The new file takes the old one's place by exchanging their names (Linux's
C{renameat2} with C{RENAME_EXCHANGE}), and the old one is then removed:
a plain rename over an existing file has ext4 start writing the new one
back at once, before the rename returns (its C{auto_da_alloc}, for
programs that never fsync), which cost about 100 us of the reactor
thread's time at each write, twice a prompt; the fsyncs here are ours to
run. Where names cannot be exchanged (another system or file system, no
old file yet) it is a plain rename.
"""

import ctypes
import errno
import json
import os
from typing import Any, Callable, Literal, Protocol, overload

import orjson
from twisted.logger import Logger
from twisted.python.failure import Failure

from claudews.interfaces import DelayedCall
from claudews.syncer import FileSyncer, fsync_directory

_log = Logger()

FILENAME = "metadata.json"

# linux/fs.h and fcntl.h.
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100

#: What C{renameat2} answers when names cannot be exchanged here (no old
#: file, a file system or kernel without the flag, a stacked file system
#: that will not): then a plain rename, which says what it says.
_CANNOT_EXCHANGE = frozenset(
    {errno.ENOENT, errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV}
)


def _renameat2() -> Callable[..., int] | None:
    """glibc's C{renameat2}, or C{None} where the C library has none."""
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_exchange_names = _renameat2()


def _exchange(temp: str, target: str) -> bool:
    """
    Swap the names C{temp} and C{target} atomically; whether that could be
    done (see L{_CANNOT_EXCHANGE}). Raises L{OSError} for anything else.
    """
    if _exchange_names is None:
        return False
    if _exchange_names(
        _AT_FDCWD, os.fsencode(temp), _AT_FDCWD, os.fsencode(target), _RENAME_EXCHANGE
    ) == 0:
        return True
    code = ctypes.get_errno()
    if code in _CANNOT_EXCHANGE:
        return False
    raise OSError(code, os.strerror(code), target)


def _encode(data: dict[str, Any]) -> bytes:
    """
    C{data} as indented JSON with sorted keys and a final newline: what
    the standard library's C{json.dumps(data, indent=2, sort_keys=True)}
    wrote, but for characters outside ASCII, written as they are. What
    orjson refuses (a path with a lone surrogate, an integer past 64 bits)
    is written by the standard library, as before.
    """
    try:
        return orjson.dumps(
            data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE
        )
    except TypeError:
        return json.dumps(data, indent=2, sort_keys=True).encode("ascii") + b"\n"


@overload
def write(directory: str, data: dict[str, Any], sync: bool = ..., *, keep: Literal[False] = ...) -> None:
    ...


@overload
def write(directory: str, data: dict[str, Any], sync: bool = ..., *, keep: Literal[True]) -> int:
    ...


def write(directory: str, data: dict[str, Any], sync: bool = True, *, keep: bool = False) -> int | None:
    """
    Replace C{directory}/metadata.json with C{data}, fsyncing the file and
    the directory unless C{sync} is false. Raises L{OSError}.

    @param keep: return the new file's descriptor, still open, instead of
        closing it: the caller's to fsync (and close) later.
    """
    target = os.path.join(directory, FILENAME)
    temp = target + ".tmp"
    payload = _encode(data)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view) :]
        if sync:
            os.fsync(fd)
        exchanged = _exchange(temp, target)
        if not exchanged:
            os.replace(temp, target)
    except BaseException:
        os.close(fd)
        # A full disk: leave no half-written file taking space, the old
        # metadata stays in force.
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise
    if exchanged:
        try:
            # The old metadata, now under the temporary name. Should it
            # stay, the next write truncates it.
            os.unlink(temp)
        except OSError:
            pass
    if not keep:
        os.close(fd)
    if sync:
        try:
            fsync_directory(directory)
        except BaseException:
            if keep:
                os.close(fd)
            raise
    return fd if keep else None


class TimerReactor(Protocol):
    """What a L{Writer} needs of the reactor to time its fsyncs."""

    def callLater(
        self, delay: float, callable: Callable[..., object], *args: object, **kw: object
    ) -> DelayedCall:
        """Call C{callable(*args, **kw)} after C{delay} seconds."""

    def addSystemEventTrigger(
        self, phase: str, eventType: str, callable: Callable[..., Any], *args: Any
    ) -> Any:
        """Call C{callable} at C{phase} of C{eventType} (shutdown)."""


class Writer:
    """
    L{write} under an fsync policy (L{claudews.history.FSYNC_POLICIES}):
    C{every} fsyncs before it returns; C{interval} hands the fsyncs to
    C{syncer}; C{none} leaves them to the OS. Raises L{OSError} as
    L{write} does.

    Under C{interval}, without C{reactor} each write's fsyncs are handed
    over once the file is in place. With one, as the history's are: at
    most C{interval} seconds after a write, one fsync of each project's
    newest file (and its directory) for all its writes meanwhile, and
    those still waiting when the reactor stops are handed over then. An
    fsync in the syncer's threads while the reactor thread writes (twice
    a prompt) cost that thread about 0.5 ms a prompt, in waits for the
    file system's journal and for the GIL.
    """

    def __init__(
        self,
        fsync: str,
        syncer: FileSyncer,
        reactor: TimerReactor | None = None,
        interval: float = 1.0,
    ) -> None:
        self._fsync = fsync
        self._syncer = syncer
        self._reactor = reactor
        self._interval = interval
        #: The newest file of each directory not yet handed over, by its
        #: descriptor (written through).
        self._unsynced: dict[str, int] = {}
        self._call: DelayedCall | None = None
        self._watching_shutdown = False
        self._stopped = False

    def __call__(self, directory: str, data: dict[str, Any]) -> None:
        if self._fsync == "every":
            write(directory, data)
            return
        if self._fsync == "none":
            write(directory, data, sync=False)
            return
        # The descriptor written through is the one fsynced: opening the
        # file again would cost a path lookup, and could find a newer one.
        fd = write(directory, data, sync=False, keep=True)
        if self._reactor is None or self._stopped:
            self._sync(directory, fd)
            return
        replaced = self._unsynced.pop(directory, None)
        if replaced is not None:
            # No longer metadata.json: the new file's fsync, and the
            # directory's, make what counts durable.
            os.close(replaced)
        self._unsynced[directory] = fd
        if self._call is None:
            self._call = self._reactor.callLater(self._interval, self._sync_unsynced)
        if not self._watching_shutdown:
            self._watching_shutdown = True
            # After the services' stop (a clean close writes last), before
            # the syncer's threads finish their work ("after").
            self._reactor.addSystemEventTrigger("during", "shutdown", self.stop)

    def _sync(self, directory: str, fd: int) -> None:
        self._syncer.sync([fd], directory).addErrback(_sync_failed, directory)

    def _sync_unsynced(self) -> None:
        self._call = None
        unsynced, self._unsynced = self._unsynced, {}
        for directory, fd in unsynced.items():
            self._sync(directory, fd)

    def stop(self) -> None:
        """
        Hand over every fsync still waiting, and each later one at once:
        the reactor stops.
        """
        self._stopped = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._sync_unsynced()


def _sync_failed(failure: Failure, directory: str) -> None:
    _log.failure("fsync of the metadata in {dir} failed", failure, dir=directory)


def read(directory: str) -> dict[str, Any] | None:
    """
    The stored metadata, or L{None} when it is missing or damaged (the
    caller rebuilds what it can from the history).
    """
    target = os.path.join(directory, FILENAME)
    try:
        with open(target, "rb") as f:
            data = json.loads(f.read())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        _log.warn("Unreadable {file}: {error}", file=target, error=e)
        return None
    if not isinstance(data, dict):
        _log.warn("Damaged {file}: not a JSON object", file=target)
        return None
    return data
