"""
A project's metadata.json: written atomically, read forgivingly.

A crash must leave either the old file or the new one, never half of
either: write a temporary file, fsync it, rename it over the old one, and
fsync the directory so the rename itself is durable.
"""

import json
import os
from typing import Any

from twisted.logger import Logger

_log = Logger()

FILENAME = "metadata.json"


def write(directory: str, data: dict[str, Any]) -> None:
    """
    Replace C{directory}/metadata.json with C{data}. Raises L{OSError}.
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
    dirfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


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
