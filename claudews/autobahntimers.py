"""
Autobahn's timers on an injected reactor.

Autobahn builds its timers (the opening handshake, ping and close handshake
timeouts) with its factory's C{_batched_timer}, which txaio puts on its
global loop whatever reactor the factory was given. Replacing that one
attribute with L{ReactorTimers} is the only way to keep them off the global
reactor, and on a test's clock.
"""

from typing import Any, Callable

from claudews.interfaces import DelayedCall, ReactorTime


class _Call:
    """
    A timer as Autobahn cancels it.
    """

    def __init__(self, call: DelayedCall) -> None:
        self._call = call

    def cancel(self) -> None:
        # Autobahn may cancel a timer that has already fired.
        if self._call.active():
            self._call.cancel()


class ReactorTimers:
    """
    The part of txaio's batched timer that Autobahn uses (C{call_later},
    and C{cancel} on what it returns), on C{reactor}.
    """

    def __init__(self, reactor: ReactorTime) -> None:
        self._reactor = reactor

    def call_later(self, delay: float, func: Callable[..., object], *args: Any, **kwargs: Any) -> _Call:
        return _Call(self._reactor.callLater(delay, func, *args, **kwargs))
