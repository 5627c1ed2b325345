"""
Starting a CLI without holding up the reactor thread.

C{posix_spawn} waits, in the calling thread, until the child has exec'd
(glibc's is a C{vfork}): on a machine busy with other starts that wait
is the child's turn on a CPU, tens of milliseconds at times, and on the
reactor thread every stream of every project waited for it. Python's
own C{os.posix_spawn} holds the GIL for it, and cannot change into a
directory (it has no C{fchdir} file action), which is why the CLI used
to start through a Python trampoline
(L{claudews.proctree.new_session_argv}), one more interpreter start per
CLI.

Here glibc's C{posix_spawn} is called through L{ctypes} (which lets go
of the GIL) in a thread of the reactor's pool, with the attributes the
trampoline applied: a session of its own (C{POSIX_SPAWN_SETSID}), the
project's directory entered by its descriptor
(C{posix_spawn_file_actions_addfchdir_np}), the signals this process
ignores set back to their defaults, and nothing but stdin, stdout and
stderr inherited. The child's pid and the parent's ends of its pipes
then become a Twisted process transport on the reactor thread
(L{_Spawned}), reaped like any other.

Where glibc lacks what this needs (or on another C library), or the
reactor has no threads (tests on fake reactors), L{available} says so
and the caller starts the CLI as before.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import shutil
import signal
import sys
from typing import Any, Mapping, Sequence

from twisted.internet import defer, process
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorProcess, IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

_log = Logger()

# glibc's values (spawn.h).
_POSIX_SPAWN_SETSIGDEF = 0x04
_POSIX_SPAWN_SETSIGMASK = 0x08
_POSIX_SPAWN_SETSID = 0x80

#: Room for glibc's posix_spawn_file_actions_t (80 bytes on x86_64),
#: posix_spawnattr_t (336) and sigset_t (128), with a wide margin: the
#: library writes only its own size.
_OPAQUE = 1024


class _Libc:
    """The glibc functions used, looked up once."""

    def __init__(self, libc: ctypes.CDLL) -> None:
        self.fa_init = libc.posix_spawn_file_actions_init
        self.fa_destroy = libc.posix_spawn_file_actions_destroy
        self.fa_dup2 = libc.posix_spawn_file_actions_adddup2
        self.fa_fchdir = libc.posix_spawn_file_actions_addfchdir_np
        self.fa_closefrom = libc.posix_spawn_file_actions_addclosefrom_np
        self.attr_init = libc.posix_spawnattr_init
        self.attr_destroy = libc.posix_spawnattr_destroy
        self.attr_setflags = libc.posix_spawnattr_setflags
        self.attr_setflags.argtypes = [ctypes.c_void_p, ctypes.c_short]
        self.attr_setsigdefault = libc.posix_spawnattr_setsigdefault
        self.attr_setsigmask = libc.posix_spawnattr_setsigmask
        self.sigemptyset = libc.sigemptyset
        self.sigaddset = libc.sigaddset
        self.spawn = libc.posix_spawn
        self.spawn.argtypes = [
            ctypes.POINTER(ctypes.c_int),
            ctypes.c_char_p,
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_char_p),
            ctypes.POINTER(ctypes.c_char_p),
        ]


def _load() -> _Libc | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        # By its soname: ctypes.util.find_library would run ldconfig.
        return _Libc(ctypes.CDLL("libc.so.6", use_errno=True))
    except (OSError, AttributeError):
        # Not glibc, or older than 2.34 (addclosefrom_np).
        return None


_libc = _load()


def available(reactor: object) -> bool:
    """
    Whether L{spawn} can start processes for C{reactor}: glibc has what it
    needs and the reactor has threads and reaps processes the way
    L{_Spawned} relies on.
    """
    return (
        _libc is not None
        and IReactorThreads.providedBy(reactor)
        and IReactorProcess.providedBy(reactor)
        and hasattr(reactor, "getThreadPool")
    )


def resolve(program: str, env: Mapping[str, str]) -> str | None:
    """
    C{program} as C{execvp} in C{env} would find it: a name with a slash
    as it is, any other on C{env}'s C{PATH}; None when there is none.

    Relative entries of C{PATH} (C{.}, an empty one) are skipped: they
    would name directories of the project the CLI starts in, which is
    the project's to fill, not the operator's.
    """
    if "/" in program:
        return program
    path = os.pathsep.join(
        entry for entry in env.get("PATH", os.defpath).split(os.pathsep) if os.path.isabs(entry)
    )
    return shutil.which(program, path=path) if path else None


class SpawnError(OSError):
    """The CLI could not be started; C{strerror} says why."""


def _spawn_in_thread(
    executable: bytes,
    argv: list[bytes],
    envp: list[bytes],
    stdio: tuple[int, int, int],
    directory: int | None,
    defaults: list[int],
) -> int:
    libc = _libc
    assert libc is not None
    actions = ctypes.create_string_buffer(_OPAQUE)
    attributes = ctypes.create_string_buffer(_OPAQUE)
    sigdefault = ctypes.create_string_buffer(_OPAQUE)
    sigmask = ctypes.create_string_buffer(_OPAQUE)
    _check(libc.fa_init(actions))
    try:
        _check(libc.attr_init(attributes))
        try:
            for target, fd in enumerate(stdio):
                _check(libc.fa_dup2(actions, fd, target))
            if directory is not None:
                _check(libc.fa_fchdir(actions, directory))
            # Whatever was opened without close-on-exec stays out too.
            _check(libc.fa_closefrom(actions, 3))
            libc.sigemptyset(sigmask)
            libc.sigemptyset(sigdefault)
            for signum in defaults:
                libc.sigaddset(sigdefault, signum)
            _check(libc.attr_setsigdefault(attributes, sigdefault))
            _check(libc.attr_setsigmask(attributes, sigmask))
            _check(libc.attr_setflags(
                attributes,
                _POSIX_SPAWN_SETSID | _POSIX_SPAWN_SETSIGDEF | _POSIX_SPAWN_SETSIGMASK,
            ))
            c_argv = (ctypes.c_char_p * (len(argv) + 1))(*argv, None)
            c_envp = (ctypes.c_char_p * (len(envp) + 1))(*envp, None)
            pid = ctypes.c_int(0)
            # ctypes lets go of the GIL for the call: the reactor thread
            # runs on while this one waits for the child's exec.
            _check(libc.spawn(ctypes.byref(pid), executable, actions, attributes, c_argv, c_envp))
            return pid.value
        finally:
            libc.attr_destroy(attributes)
    finally:
        libc.fa_destroy(actions)


def _check(code: int) -> None:
    if code != 0:
        raise SpawnError(code, os.strerror(code))


class _Spawned(process.Process):
    """
    Twisted's process transport for a child started elsewhere: what
    C{Process.__init__} does once it has forked, given the pid and the
    parent's ends of the pipes (C{{child fd: (parent fd, "r" or "w")}}).
    """

    def __init__(
        self, reactor: Any, pid: int, proto: Any, pipes: Mapping[int, tuple[int, str]]
    ) -> None:
        # Twisted's process module is untyped: through Any.
        twisted: Any = process
        self._reactor = reactor
        twisted._BaseProcess.__init__(self, proto)
        self.pipes: dict[int, Any] = {}
        self.pid = pid
        self.status = -1
        reader: Any = self.processReaderFactory
        writer: Any = self.processWriterFactory
        for child_fd, (parent_fd, mode) in pipes.items():
            if mode == "r":
                self.pipes[child_fd] = reader(reactor, self, child_fd, parent_fd)
            else:
                self.pipes[child_fd] = writer(
                    reactor, self, child_fd, parent_fd, forceReadHack=True
                )
        try:
            proto.makeConnection(self)
        except BaseException:
            _log.failure("makeConnection of a spawned process failed")
        # Reaps at once a child that is gone already, as spawnProcess does.
        twisted.registerReapProcessHandler(pid, self)


def spawn(
    reactor: Any,
    proto: Any,
    argv: Sequence[str],
    env: Mapping[str, str],
    directory: int | None,
) -> Deferred[None]:
    """
    Start C{argv} in C{env}, in a session of its own, in the directory
    whose descriptor is C{directory} (which the caller may close once
    this returns), connected to the process protocol C{proto}: its
    stdin, stdout and stderr are pipes, as C{spawnProcess} would make
    them. Only L{available} reactors.

    The Deferred fires once C{proto} is connected, or fails with
    L{SpawnError} (C{proto} never connected).
    """
    executable = resolve(argv[0], env)
    if executable is None:
        return defer.fail(SpawnError(errno.ENOENT, os.strerror(errno.ENOENT)))
    defaults = [
        signum
        for signum in range(1, signal.NSIG)
        if _ignored(signum)
    ]
    opened: list[int] = []

    def close(fds: list[int]) -> None:
        for fd in fds:
            os.close(fd)

    try:
        stdin_r, stdin_w = _pipe(opened)
        stdout_r, stdout_w = _pipe(opened)
        stderr_r, stderr_w = _pipe(opened)
        own_directory = _above_stdio(os.dup(directory), opened) if directory is not None else None
    except OSError as e:
        # Out of descriptors, say: nothing of this start is left open.
        close(opened)
        return defer.fail(SpawnError(e.errno or errno.EMFILE, e.strerror or str(e)))
    child_ends = [stdin_r, stdout_w, stderr_w]
    parent_ends = [stdin_w, stdout_r, stderr_r]

    def started(pid: int) -> None:
        close(child_ends)
        _Spawned(reactor, pid, proto, {0: (stdin_w, "w"), 1: (stdout_r, "r"), 2: (stderr_r, "r")})

    def failed(failure: Any) -> Any:
        close(child_ends + parent_ends)
        return failure

    def done(result: Any) -> Any:
        if own_directory is not None:
            os.close(own_directory)
        return result

    d = deferToThreadPool(
        reactor,
        reactor.getThreadPool(),
        _spawn_in_thread,
        os.fsencode(executable),
        [os.fsencode(a) for a in argv],
        [os.fsencode(k) + b"=" + os.fsencode(v) for k, v in env.items()],
        (stdin_r, stdout_w, stderr_w),
        own_directory,
        defaults,
    )
    d.addBoth(done)
    connected: Deferred[None] = d.addCallbacks(started, failed)
    return connected


def _above_stdio(fd: int, opened: list[int]) -> int:
    """
    C{fd}, or a close-on-exec copy of it numbered 3 or more: in a server
    whose stdin, stdout or stderr is closed a new descriptor can be 0, 1
    or 2, and the child's C{dup2}s onto those would then undo each other.
    """
    if fd > 2:
        opened.append(fd)
        return fd
    try:
        high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    finally:
        os.close(fd)
    opened.append(high)
    return high


def _pipe(opened: list[int]) -> tuple[int, int]:
    """A pipe (read end, write end), both above stdio, noted in C{opened}."""
    r, w = os.pipe()
    try:
        r = _above_stdio(r, opened)
    except OSError:
        os.close(w)
        raise
    return r, _above_stdio(w, opened)


def _ignored(signum: int) -> bool:
    try:
        return signal.getsignal(signum) == signal.SIG_IGN
    except (ValueError, OSError):
        return False
