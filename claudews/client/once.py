"""
Waiting on things that happen once (a prompt finished, the connection lost
for good, Ctrl-C pressed), from several places, and on the first of many.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

T = TypeVar("T")


def fire(d: Deferred[Any], result: Any) -> None:
    """Fire C{d} with a result or a L{Failure}, unless it already fired."""
    if d.called:
        return
    if isinstance(result, (Failure, BaseException)):
        d.errback(result)
    else:
        d.callback(result)


class Once(Generic[T]):
    """
    Something that happens at most once. Each L{when} is a Deferred of its
    own, so one waiter's callbacks never change what another one gets.
    """

    def __init__(self) -> None:
        self._waiting: list[Deferred[T]] = []
        self._result: T | Failure | BaseException | None = None
        self.called = False

    def when(self) -> Deferred[T]:
        d: Deferred[T] = Deferred()
        if self.called:
            fire(d, self._result)
        else:
            self._waiting.append(d)
        return d

    def fire(self, result: T | Failure | BaseException) -> None:
        """It happened (a failure is fine); later calls are ignored."""
        if self.called:
            return
        self.called = True
        self._result = result
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            fire(d, self._result)


def race(*ds: Deferred[Any]) -> Deferred[Any]:
    """The first of C{ds} to fire, success or failure; the others are dropped."""
    out: Deferred[Any] = Deferred()

    def first(result: Any) -> None:
        fire(out, result)

    for d in ds:
        d.addBoth(first)
    return out
