"""
Tests for L{claudews.autobahntimers}: Autobahn's timers on a L{Clock}.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from claudews.autobahntimers import ReactorTimers


class ReactorTimersTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.timers = ReactorTimers(self.clock)
        self.calls: list[tuple[object, ...]] = []

    def test_a_timer_runs_on_the_given_reactor(self) -> None:
        """call_later calls back with its arguments after the delay, on the given clock."""
        self.timers.call_later(5, lambda *a, **kw: self.calls.append((a, kw)), 1, x=2)
        self.clock.advance(4.9)
        self.assertEqual(self.calls, [])
        self.clock.advance(0.1)
        self.assertEqual(self.calls, [((1,), {"x": 2})])

    def test_cancel_stops_it_and_may_come_after_it_ran(self) -> None:
        """A cancelled timer never runs; cancelling one that ran is harmless."""
        self.timers.call_later(1, self.calls.append, "early").cancel()
        ran = self.timers.call_later(1, self.calls.append, "ran")
        self.clock.advance(1)
        ran.cancel()
        ran.cancel()
        self.assertEqual(self.calls, ["ran"])
        self.assertEqual(self.clock.getDelayedCalls(), [])
