"""
Tests for L{claudews.supervisor}.
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from claudews.interfaces import ProcessSlots
from claudews.supervisor import Supervisor


class FakeOwner:
    """
    A project that records close requests; the test decides when the
    process really exits, unless C{exit_after} schedules it on the clock.
    """

    def __init__(self, name, supervisor=None, clock=None, exit_after=None):
        self.name = name
        self.closes = 0
        self._supervisor = supervisor
        self._clock = clock
        self._exit_after = exit_after

    def close_process(self):
        self.closes += 1
        if self._exit_after is not None:
            self._clock.callLater(self._exit_after, self._supervisor.exited, self)

    def __repr__(self):
        return "<FakeOwner %s>" % (self.name,)


def fired(d):
    """
    Whether C{d} has succeeded (not failed) already.
    """
    results = []
    d.addCallback(results.append)
    return results == [None]


class GrantTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.sup = Supervisor(max_running=2, idle_timeout=60, reactor=self.clock)
        self.a, self.b, self.c = (FakeOwner(n) for n in "abc")

    def test_acquire_below_cap_fires_at_once(self):
        """Owners get a slot immediately while fewer than max_running live."""
        self.assertTrue(fired(self.sup.acquire(self.a)))
        self.assertTrue(fired(self.sup.acquire(self.b)))
        self.assertEqual((self.sup.live, self.sup.waiting), (2, 0))
        self.assertTrue(self.sup.holds(self.a))
        self.assertEqual(self.sup.state(self.a), "busy")

    def test_acquire_when_all_busy_waits(self):
        """A third owner waits while two are busy, and nobody is closed."""
        self.sup.acquire(self.a)
        self.sup.acquire(self.b)
        d = self.sup.acquire(self.c)
        self.assertNoResult(d)
        self.assertEqual((self.sup.live, self.sup.waiting), (2, 1))
        self.assertFalse(self.sup.holds(self.c))
        self.assertEqual((self.a.closes, self.b.closes), (0, 0))

    def test_reacquire_idle_slot_reuses_process_and_cancels_timer(self):
        """An idle owner acquiring again keeps its process and its idle timer stops."""
        self.sup.acquire(self.a)
        self.sup.release(self.a)
        self.assertEqual(self.sup.state(self.a), "idle")
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.assertTrue(fired(self.sup.acquire(self.a)))
        self.assertEqual(self.sup.state(self.a), "busy")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(1000)
        self.assertEqual(self.a.closes, 0)
        self.assertEqual(self.sup.live, 1)

    def test_acquire_twice_while_waiting_raises(self):
        """A second acquire by an owner already in line is a caller bug."""
        self.sup.acquire(self.a)
        self.sup.acquire(self.b)
        self.sup.acquire(self.c)
        self.assertRaises(RuntimeError, self.sup.acquire, self.c)
        self.assertEqual(self.sup.waiting, 1)

    def test_release_without_slot_is_noop(self):
        """Releasing an owner that holds nothing changes nothing."""
        self.sup.release(self.a)
        self.assertEqual(self.sup.live, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_release_of_idle_slot_does_not_restart_timer(self):
        """A second release keeps the first idle timer: idle time is not extended."""
        self.sup.acquire(self.a)
        self.sup.release(self.a)
        self.clock.advance(30)
        self.sup.release(self.a)
        self.clock.advance(30)
        self.assertEqual(self.a.closes, 1)

    def test_exited_unknown_owner_is_noop(self):
        """exited() for an owner without a slot changes nothing."""
        self.sup.acquire(self.a)
        self.sup.exited(self.b)
        self.assertEqual(self.sup.live, 1)

    def test_invalid_max_running_rejected(self):
        """A cap below one would deadlock every project."""
        self.assertRaises(ValueError, Supervisor, 0, 60, self.clock)


class EvictionTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.sup = Supervisor(max_running=2, idle_timeout=60, reactor=self.clock)
        self.a, self.b, self.c, self.d = (FakeOwner(n) for n in "abcd")

    def test_waiter_evicts_longest_idle(self):
        """A new owner at the cap closes the process idle the longest, not the other."""
        self.sup.acquire(self.a)
        self.sup.acquire(self.b)
        self.sup.release(self.b)
        self.clock.advance(5)
        self.sup.release(self.a)
        d = self.sup.acquire(self.c)
        self.assertEqual((self.a.closes, self.b.closes), (0, 1))
        self.assertEqual(self.sup.state(self.b), "closing")
        self.assertNoResult(d)

    def test_grant_waits_for_evicted_process_to_exit(self):
        """The evicted slot goes to the waiter only once the process is gone."""
        self.sup.acquire(self.a)
        self.sup.acquire(self.b)
        self.sup.release(self.a)
        self.sup.release(self.b)
        d = self.sup.acquire(self.c)
        self.assertEqual(self.sup.live, 2)
        self.assertNoResult(d)
        self.sup.exited(self.a)
        self.assertTrue(fired(d))
        self.assertEqual(self.sup.live, 2)
        self.assertFalse(self.sup.holds(self.a))
        self.assertEqual(self.sup.state(self.b), "idle")

    def test_one_eviction_per_waiter(self):
        """Two waiters close two idle processes; one waiter closes only one."""
        self.sup.acquire(self.a)
        self.sup.acquire(self.b)
        self.sup.release(self.a)
        self.sup.release(self.b)
        self.sup.acquire(self.c)
        self.assertEqual(self.a.closes + self.b.closes, 1)
        self.sup.acquire(self.d)
        self.assertEqual((self.a.closes, self.b.closes), (1, 1))

    def test_release_with_waiter_evicts_releaser(self):
        """A release while someone waits closes that process for the waiter."""
        self.sup.acquire(self.a)
        self.sup.acquire(self.b)
        d = self.sup.acquire(self.c)
        self.sup.release(self.a)
        self.assertEqual(self.a.closes, 1)
        self.assertEqual(self.sup.state(self.a), "closing")
        # The releaser's next prompt goes behind the waiter.
        da = self.sup.acquire(self.a)
        self.assertNoResult(da)
        self.sup.exited(self.a)
        self.assertTrue(fired(d))
        self.assertNoResult(da)
        self.sup.release(self.b)
        self.sup.exited(self.b)
        self.assertTrue(fired(da))

    def test_release_does_not_evict_when_waiter_is_already_served(self):
        """A waiter with a process already closing for it costs no second eviction."""
        self.sup.acquire(self.a)
        self.sup.acquire(self.b)
        self.sup.acquire(self.c)
        self.sup.release(self.a)
        self.sup.release(self.b)
        self.assertEqual((self.a.closes, self.b.closes), (1, 0))
        self.assertEqual(self.sup.state(self.b), "idle")

    def test_busy_slots_are_never_evicted(self):
        """With every slot busy a waiter just waits; nothing is closed."""
        self.sup.acquire(self.a)
        self.sup.acquire(self.b)
        self.sup.acquire(self.c)
        self.clock.advance(1000)
        self.assertEqual((self.a.closes, self.b.closes), (0, 0))

    def test_exited_of_closing_slot_grants_next_waiter(self):
        """A process closed by its idle timeout hands its slot to the first waiter."""
        self.sup.acquire(self.a)
        self.sup.acquire(self.b)
        self.sup.release(self.a)
        self.clock.advance(60)
        self.assertEqual(self.sup.state(self.a), "closing")
        # The closing process already covers this waiter: b stays idle.
        d = self.sup.acquire(self.c)
        self.sup.release(self.b)
        self.assertEqual(self.b.closes, 0)
        self.sup.exited(self.a)
        self.assertTrue(fired(d))

    def test_exited_while_busy_frees_slot_for_waiter(self):
        """A process that crashes mid-prompt frees its slot for the line."""
        self.sup.acquire(self.a)
        self.sup.acquire(self.b)
        d = self.sup.acquire(self.c)
        self.sup.exited(self.a)
        self.assertTrue(fired(d))
        self.assertFalse(self.sup.holds(self.a))
        self.assertEqual(self.sup.live, 2)

    def test_owner_whose_process_is_closing_waits_for_its_exit(self):
        """An owner cannot start a second process while its first is closing."""
        self.sup.acquire(self.a)
        self.sup.release(self.a)
        self.clock.advance(60)
        d = self.sup.acquire(self.a)
        self.assertNoResult(d)
        self.assertEqual(self.sup.live, 1)
        # Room elsewhere is not blocked by it.
        self.assertTrue(fired(self.sup.acquire(self.b)))
        self.sup.exited(self.a)
        self.assertTrue(fired(d))
        self.assertEqual(self.sup.state(self.a), "busy")

    def test_closing_owner_keeps_its_place_in_line(self):
        """A waiter held back by its own closing process is served before later waiters."""
        sup = Supervisor(max_running=1, idle_timeout=60, reactor=self.clock)
        sup.acquire(self.a)
        sup.release(self.a)
        self.clock.advance(60)
        da = sup.acquire(self.a)
        db = sup.acquire(self.b)
        self.assertEqual(self.a.closes, 1)
        sup.exited(self.a)
        self.assertTrue(fired(da))
        self.assertNoResult(db)

    def test_reentrant_close_process_grants_at_once(self):
        """An owner whose close_process() reports exited() synchronously is handled."""
        sup = Supervisor(max_running=1, idle_timeout=60, reactor=self.clock)
        a = FakeOwner("a", sup, self.clock, exit_after=None)
        a.close_process = lambda: sup.exited(a)
        sup.acquire(a)
        sup.release(a)
        d = sup.acquire(self.b)
        self.assertTrue(fired(d))
        self.assertEqual(sup.live, 1)
        self.assertFalse(sup.holds(a))

    def test_close_process_raising_keeps_slot_counted(self):
        """If close_process() fails the slot stays closing, so the cap still holds."""
        sup = Supervisor(max_running=1, idle_timeout=60, reactor=self.clock)

        def broken():
            raise OSError("boom")

        self.a.close_process = broken
        sup.acquire(self.a)
        sup.release(self.a)
        d = sup.acquire(self.b)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertEqual(sup.state(self.a), "closing")
        self.assertNoResult(d)


class IdleTimeoutTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.sup = Supervisor(max_running=2, idle_timeout=60, reactor=self.clock)
        self.a = FakeOwner("a")

    def test_idle_timeout_closes_process(self):
        """An idle process is closed exactly idle_timeout seconds after release."""
        self.sup.acquire(self.a)
        self.sup.release(self.a)
        self.clock.advance(59.999)
        self.assertEqual(self.a.closes, 0)
        self.clock.advance(0.001)
        self.assertEqual(self.a.closes, 1)
        self.assertEqual(self.sup.state(self.a), "closing")
        self.assertEqual(self.sup.live, 1)
        self.sup.exited(self.a)
        self.assertEqual(self.sup.live, 0)

    def test_busy_process_is_not_timed_out(self):
        """The idle clock only runs between prompts."""
        self.sup.acquire(self.a)
        self.clock.advance(1000)
        self.assertEqual(self.a.closes, 0)

    def test_exited_while_idle_cancels_timer(self):
        """A process that dies while idle leaves no timer behind."""
        self.sup.acquire(self.a)
        self.sup.release(self.a)
        self.sup.exited(self.a)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(1000)
        self.assertEqual(self.a.closes, 0)


class CancelForgetStopTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.sup = Supervisor(max_running=1, idle_timeout=60, reactor=self.clock)
        self.a, self.b, self.c = (FakeOwner(n) for n in "abc")

    def test_cancel_waiting_acquire_leaves_line(self):
        """A cancelled wait fails with CancelledError and the slot skips it."""
        self.sup.acquire(self.a)
        db = self.sup.acquire(self.b)
        dc = self.sup.acquire(self.c)
        db.cancel()
        self.failureResultOf(db, CancelledError)
        self.assertEqual(self.sup.waiting, 1)
        self.sup.exited(self.a)
        self.assertTrue(fired(dc))
        self.assertFalse(self.sup.holds(self.b))

    def test_cancelled_owner_may_acquire_again(self):
        """After cancelling, the same owner can queue again (at the back)."""
        self.sup.acquire(self.a)
        db = self.sup.acquire(self.b)
        db.cancel()
        self.failureResultOf(db, CancelledError)
        dc = self.sup.acquire(self.c)
        db2 = self.sup.acquire(self.b)
        self.sup.exited(self.a)
        self.assertTrue(fired(dc))
        self.assertNoResult(db2)

    def test_forget_fails_waiter(self):
        """A deleted project's wait fails with CancelledError."""
        self.sup.acquire(self.a)
        db = self.sup.acquire(self.b)
        self.sup.forget(self.b)
        self.failureResultOf(db, CancelledError)
        self.assertEqual(self.sup.waiting, 0)

    def test_forget_keeps_slot_until_exited(self):
        """forget() leaves a held slot counted until the owner reports exited()."""
        self.sup.acquire(self.a)
        self.sup.forget(self.a)
        self.assertTrue(self.sup.holds(self.a))
        self.sup.exited(self.a)
        self.assertEqual(self.sup.live, 0)

    def test_stop_fails_waiters_and_cancels_timers(self):
        """stop() fails every waiter, cancels idle timers and grants nothing after."""
        sup = Supervisor(max_running=2, idle_timeout=60, reactor=self.clock)
        sup.acquire(self.a)
        sup.acquire(self.b)
        sup.release(self.a)
        d = FakeOwner("d")
        sup.release(self.b)
        sup.acquire(self.b)  # b busy again, a idle with a timer
        dc = sup.acquire(self.c)  # evicts a
        dd = sup.acquire(d)
        sup.stop()
        self.failureResultOf(dc, CancelledError)
        self.failureResultOf(dd, CancelledError)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.failureResultOf(sup.acquire(FakeOwner("e")), CancelledError)
        sup.exited(self.a)
        sup.release(self.b)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(sup.waiting, 0)

    def test_stop_cancels_idle_timer(self):
        """An idle process is not closed by a timer after stop()."""
        self.sup.acquire(self.a)
        self.sup.release(self.a)
        self.sup.stop()
        self.clock.advance(1000)
        self.assertEqual(self.a.closes, 0)


class FairnessTests(SynchronousTestCase):
    """
    Projects with several prompts each, simulated on the clock: each prompt
    runs 10 seconds, a closed process takes 1 second to exit, and a project
    asks again right after each release while it has prompts left.
    """

    def simulate(self, max_running, prompts):
        clock = Clock()
        sup = Supervisor(max_running=max_running, idle_timeout=600, reactor=clock)
        grants = []
        peak = [0]
        left = dict(prompts)

        def run(owner):
            sup.acquire(owner).addCallback(started, owner)

        def started(_, owner):
            grants.append(owner.name)
            peak[0] = max(peak[0], sup.live)
            clock.callLater(10, finished, owner)

        def finished(owner):
            left[owner.name] -= 1
            sup.release(owner)
            if left[owner.name]:
                run(owner)

        owners = [FakeOwner(name, sup, clock, exit_after=1) for name in prompts]
        for owner in owners:
            run(owner)
        clock.advance(0)
        for _ in range(1000):
            clock.advance(1)
        return grants, peak[0]

    def test_three_projects_one_slot_take_turns(self):
        """With one slot, three busy projects run strictly round-robin."""
        grants, peak = self.simulate(1, {"a": 3, "b": 3, "c": 3})
        self.assertEqual("".join(grants), "abcabcabc")
        self.assertEqual(peak, 1)

    def test_three_projects_two_slots_take_turns(self):
        """With two slots, no project runs twice before a waiting one runs."""
        grants, peak = self.simulate(2, {"a": 3, "b": 3, "c": 3})
        self.assertEqual(sorted(grants), sorted("abcabcabc"))
        self.assertEqual(peak, 2)
        # Every window of three consecutive grants names three projects.
        for i in range(len(grants) - 2):
            self.assertEqual(len(set(grants[i : i + 3])), 3, grants)

    def test_lone_project_keeps_its_process(self):
        """Without competition a project reuses one process for all its prompts."""
        clock = Clock()
        sup = Supervisor(max_running=1, idle_timeout=600, reactor=clock)
        a = FakeOwner("a", sup, clock, exit_after=1)
        for _ in range(3):
            self.assertTrue(fired(sup.acquire(a)))
            sup.release(a)
        self.assertEqual(a.closes, 0)


class InterfaceTests(SynchronousTestCase):
    def test_supervisor_is_the_process_slots(self) -> None:
        """Supervisor offers what ProcessSlots declares (mypy checks the annotation)."""
        slots: ProcessSlots = Supervisor(max_running=1, idle_timeout=60, reactor=Clock())
        owner = FakeOwner("a")
        self.assertTrue(fired(slots.acquire(owner)))
        slots.release(owner)
        slots.exited(owner)
        slots.forget(owner)
        self.assertEqual(slots.acquire(owner).called, True)
