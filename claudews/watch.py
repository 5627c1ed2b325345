"""
The server-wide feed (protocol v1.1, C{watch}): connections that watch
are told, without a seq, whenever a project is created or deleted or its
status, queue, pending permission requests or session change::

    {"type": "project", "change": "created" | "updated" | "deleted",
     "project": {...the project object...}}

A list of projects stays live without subscribing to every project. The
frames are not stored: a client that reconnects asks C{watch} again and
gets the whole list.
"""

from typing import Any, Iterable

from claudews.events import encode
from claudews.interfaces import Subscriber

CREATED = "created"
UPDATED = "updated"
DELETED = "deleted"


def change_frame(change: str, project: dict[str, Any]) -> bytes:
    return encode({"type": "project", "change": change, "project": project})


class Watchers:
    """
    The connections watching the server.
    """

    def __init__(self) -> None:
        # A dict keeps the order they came in, for a stable fan-out.
        self._watchers: dict[Subscriber, None] = {}

    def __len__(self) -> int:
        return len(self._watchers)

    def __contains__(self, watcher: Subscriber) -> bool:
        return watcher in self._watchers

    def add(self, watcher: Subscriber) -> None:
        self._watchers[watcher] = None

    def remove(self, watcher: Subscriber) -> None:
        self._watchers.pop(watcher, None)

    def send(self, change: str, project: dict[str, Any], also: Iterable[Subscriber] = ()) -> None:
        """
        Tell every watcher, and C{also} these (a deleted project's
        subscribers), once each.
        """
        line = change_frame(change, project)
        targets = dict(self._watchers)
        targets.update(dict.fromkeys(also))
        for watcher in targets:
            watcher.send_line(line)
