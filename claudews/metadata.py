"""
A project's metadata.json: written atomically, read forgivingly.

A crash must leave either the old file or the new one, never half of
either: write a temporary file, fsync it, rename it over the old one, and
fsync the directory so the rename itself is durable.

A server that dies (rather than the machine) loses nothing the kernel was
given, fsynced or not: L{Writer} follows the history's fsync policy, so
that only C{every} pays two fsyncs on the reactor thread per change; under
C{interval} the fsyncs run in the syncer's threads just after, and a
machine that stops at that moment may leave a missing or empty file, which
L{read} takes as missing and the registry rebuilds from the history.
"""

import json
import os
from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure

from claudews.syncer import FileSyncer, fsync_directory

_log = Logger()

FILENAME = "metadata.json"


def write(directory: str, data: dict[str, Any], sync: bool = True) -> None:
    """
    Replace C{directory}/metadata.json with C{data}, fsyncing the file and
    the directory unless C{sync} is false. Raises L{OSError}.
    """
    target = os.path.join(directory, FILENAME)
    temp = target + ".tmp"
    payload = json.dumps(data, indent=2, sort_keys=True).encode("utf-8") + b"\n"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, target)
    except BaseException:
        # A full disk: leave no half-written file taking space, the old
        # metadata stays in force.
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise
    if sync:
        fsync_directory(directory)


class Writer:
    """
    L{write} under an fsync policy (L{claudews.history.FSYNC_POLICIES}):
    C{every} fsyncs before it returns; C{interval} hands the fsyncs to
    C{syncer} once the file is in place; C{none} leaves them to the OS.
    Raises L{OSError} as L{write} does.
    """

    def __init__(self, fsync: str, syncer: FileSyncer) -> None:
        self._fsync = fsync
        self._syncer = syncer

    def __call__(self, directory: str, data: dict[str, Any]) -> None:
        if self._fsync == "every":
            write(directory, data)
            return
        write(directory, data, sync=False)
        if self._fsync == "none":
            return
        try:
            fd = os.open(os.path.join(directory, FILENAME), os.O_RDONLY)
        except OSError:
            # Replaced or removed meanwhile (a deleted project): whoever
            # did it has its own durability.
            return
        done = self._syncer.sync([fd], directory)
        done.addErrback(_sync_failed, directory)


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
