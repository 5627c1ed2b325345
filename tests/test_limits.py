"""
Tests for L{claudews.limits}: redaction, the per-address counter, the
wrong-token throttle, the request budget, the pacer and the log budget,
on a L{Clock}.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from claudews import limits


class RedactTests(SynchronousTestCase):
    def test_token_and_its_encodings_are_replaced(self) -> None:
        """The token, raw or percent-encoded, is replaced wherever it appears."""
        token = "a+b/c=d"
        for text in ("GET /x?a=%s HTTP/1.1" % (token,), "key a%2Bb%2Fc%3Dd", "x a%2Bb%2Fc%3Dd"):
            redacted = limits.redact(text, token)
            self.assertNotIn(token, redacted)
            self.assertNotIn("a%2Bb%2Fc%3Dd", redacted)
            self.assertIn(limits.REDACTED, redacted)

    def test_any_token_parameter_or_bearer_value_is_replaced(self) -> None:
        """token= and Bearer values are replaced even when they are not the token."""
        text = 'GET /ws?x=1&TOKEN=guess1&token=guess2#token=g3 "Bearer guess4"'
        redacted = limits.redact(text, None)
        for guess in ("guess1", "guess2", "g3", "guess4"):
            self.assertNotIn(guess, redacted)
        self.assertIn("/ws?x=1&TOKEN=", redacted)

    def test_other_text_is_left_alone(self) -> None:
        """Text without a token is unchanged."""
        text = 'Bad HTTP request status line "GET /ws HTTP/1.1 x"'
        self.assertEqual(limits.redact(text, "s3cret"), text)


class RequestBudgetTests(SynchronousTestCase):
    def test_a_burst_then_one_request_per_refill(self) -> None:
        """A full bucket serves a burst; then one request per 1/rate seconds."""
        budget = limits.RequestBudget(rate=2.0, burst=3, now=0.0)
        for _ in range(3):
            self.assertTrue(budget.ready(0.0))
            budget.spend(0.0)
        self.assertFalse(budget.ready(0.0))
        self.assertEqual(budget.wait(0.0), 0.5)
        self.assertFalse(budget.ready(0.49))
        self.assertTrue(budget.ready(0.5))

    def test_debt_is_worked_off_at_the_rate(self) -> None:
        """Spending past empty goes into debt, paid back at the rate before the next request."""
        budget = limits.RequestBudget(rate=2.0, burst=2, now=0.0)
        budget.spend(0.0, cost=5)
        # Three in debt and one to earn: two seconds.
        self.assertEqual(budget.wait(0.0), 2.0)
        self.assertFalse(budget.ready(1.9))
        self.assertTrue(budget.ready(2.0))

    def test_a_refill_never_passes_the_burst(self) -> None:
        """A long quiet time refills the bucket to the burst, no more."""
        budget = limits.RequestBudget(rate=10.0, burst=2, now=0.0)
        budget.spend(1000.0, cost=2)
        self.assertFalse(budget.ready(1000.0))

    def test_a_clock_going_back_refills_nothing(self) -> None:
        """A clock that goes backwards gives no extra requests."""
        budget = limits.RequestBudget(rate=1.0, burst=1, now=100.0)
        budget.spend(100.0)
        self.assertFalse(budget.ready(50.0))

    def test_the_moment_it_is_ready_is_found_ready(self) -> None:
        """After waiting what wait() said, the budget is ready, whatever the rounding."""
        budget = limits.RequestBudget(rate=3.0, burst=1, now=0.1)
        now = 0.1
        for _ in range(1000):
            budget.spend(now)
            now += budget.wait(now)
            self.assertTrue(budget.ready(now))


class PacerTests(SynchronousTestCase):
    """
    L{limits.Pacer} at 10 requests a second in bursts of 3.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.calls: list[str] = []
        self.pacer = limits.Pacer(
            self.clock, 10.0, 3,
            pause=lambda: self.calls.append("pause"),
            resume=self.resumed,
        )
        # What the resume reads (frames read before the pause): each spends.
        self.on_resume: list[int] = []

    def resumed(self) -> None:
        self.calls.append("resume")
        while self.on_resume and not self.pacer.paused:
            self.pacer.spend(self.on_resume.pop(0))

    def test_under_the_rate_reading_never_pauses(self) -> None:
        """Requests no faster than the rate never pause reading."""
        for _ in range(50):
            self.pacer.spend()
            self.clock.advance(0.1)
        self.assertEqual(self.calls, [])

    def test_reading_pauses_when_a_burst_has_spent_the_budget(self) -> None:
        """A burst passes; reading pauses as it spends the budget, and resumes once one request is earned."""
        self.pacer.spend()
        self.pacer.spend()
        self.assertEqual(self.calls, [])
        self.pacer.spend()
        self.assertEqual(self.calls, ["pause"])
        self.assertTrue(self.pacer.paused)
        self.clock.advance(0.05)
        self.assertEqual(self.calls, ["pause"])
        self.clock.advance(0.05)
        self.assertEqual(self.calls, ["pause", "resume"])
        self.assertFalse(self.pacer.paused)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_what_was_read_before_the_pause_is_paced_too(self) -> None:
        """Frames read before the pause spend as they are handled on resume, one refill each."""
        for _ in range(3):
            self.pacer.spend()
        self.on_resume = [1] * 5
        self.clock.advance(0.1)
        self.assertEqual(self.on_resume, [1] * 4)
        self.clock.pump([0.1] * 4)
        self.assertEqual(self.on_resume, [])
        self.assertEqual(self.calls, ["pause"] + ["resume", "pause"] * 5)
        self.clock.advance(0.1)
        self.assertEqual(self.calls[-1], "resume")

    def test_a_costly_request_pauses_until_its_debt_is_paid(self) -> None:
        """A request of many frames (a fragmented message) pauses reading until all of them are paid for."""
        self.pacer.spend(8)
        self.assertEqual(self.calls, ["pause"])
        # Five in debt and one to earn at 10 a second.
        self.clock.advance(0.59)
        self.assertEqual(self.calls, ["pause"])
        self.clock.advance(0.01)
        self.assertEqual(self.calls, ["pause", "resume"])

    def test_a_late_timer_resumes_at_once(self) -> None:
        """A timer that fires late finds the budget ready and resumes."""
        self.pacer.spend(3)
        self.clock.advance(5)
        self.assertEqual(self.calls, ["pause", "resume"])

    def test_stop_cancels_the_timer_and_says_reading_was_paused(self) -> None:
        """Stopped while paused: no timer is left, nothing resumes, and it says reading was paused."""
        self.pacer.spend(10)
        self.assertTrue(self.pacer.stop())
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.pacer.spend(10)
        self.clock.advance(10)
        self.assertEqual(self.calls, ["pause"])

    def test_stop_when_not_paused(self) -> None:
        """Stopping a pacer that did not pause says so."""
        self.assertFalse(self.pacer.stop())


class TokenThrottleTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.throttle = limits.TokenThrottle(self.clock.seconds, 3, 60.0, 1.0, held=2)

    def test_remembered_addresses_are_bounded(self) -> None:
        """Failures from many addresses keep at most max_addresses records."""
        throttle = limits.TokenThrottle(self.clock.seconds, 1, 60.0, 5.0, max_addresses=100)
        for i in range(1000):
            throttle.failed("10.0.%d.%d" % (i // 256, i % 256))
        self.assertEqual(len(throttle), 100)
        self.assertEqual(throttle.failed("10.0.3.231"), 0.1)

    def test_free_failures_then_delays_doubling_up_to_the_cap(self) -> None:
        """Three refusals at once, then 0.1, 0.2, 0.4, 0.8, 1.0, 1.0 s (each released)."""
        delays = []
        for _ in range(9):
            delays.append(self.throttle.failed("a"))
            self.throttle.released("a")
        self.assertEqual(delays, [0, 0, 0, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
        self.assertEqual(self.throttle.failed("b"), 0)

    def test_failures_spread_over_more_than_the_window_are_not_delayed(self) -> None:
        """Failures older than the window are not counted."""
        for _ in range(10):
            self.assertEqual(self.throttle.failed("a"), 0)
            self.clock.advance(31)

    def test_at_most_held_refusals_wait_at_once(self) -> None:
        """Past C{held} waiting refusals, the next is answered at once until one is released."""
        for _ in range(3):
            self.throttle.failed("a")
        self.assertEqual([self.throttle.failed("a") for _ in range(3)], [0.1, 0.2, 0])
        self.throttle.released("a")
        self.assertEqual(self.throttle.failed("a"), 0.8)

    def test_releasing_a_forgotten_address_is_harmless(self) -> None:
        """A release for an address no longer remembered changes nothing."""
        self.throttle.released("nobody")
        self.assertEqual(len(self.throttle), 0)


class PeerAddressTests(SynchronousTestCase):
    def test_an_ip_peer_counts_by_its_address(self) -> None:
        """Connections from one IP address count together, whatever their port."""
        from twisted.internet.address import IPv4Address, UNIXAddress

        self.assertEqual(limits.peer_address(IPv4Address("TCP", "10.0.0.1", 4000)), "10.0.0.1")
        self.assertEqual(limits.peer_address(UNIXAddress(None)), "UNIXAddress")


class AddressCounterTests(SynchronousTestCase):
    def test_counts_per_address_and_forgets_those_with_none(self) -> None:
        """Each address is counted on its own; one with no connection left is forgotten."""
        counter = limits.AddressCounter()
        self.assertEqual([counter.add("a"), counter.add("a"), counter.add("b")], [1, 2, 1])
        self.assertEqual((counter.count("a"), counter.count("b"), len(counter)), (2, 1, 2))
        counter.remove("a")
        counter.remove("b")
        self.assertEqual((counter.count("a"), counter.count("b"), len(counter)), (1, 0, 1))
        counter.remove("a")
        counter.remove("a")
        self.assertEqual((counter.count("a"), len(counter)), (0, 0))


class LogBudgetTests(SynchronousTestCase):
    def test_lines_per_period_then_the_count_of_those_suppressed(self) -> None:
        """Past the lines of a period, lines are suppressed; the next allowed one says how many."""
        clock = Clock()
        budget = limits.LogBudget(clock.seconds, 2, 60.0)
        self.assertEqual([budget.allow() for _ in range(5)], [0, 0, None, None, None])
        clock.advance(60)
        self.assertEqual([budget.allow(), budget.allow()], [3, 0])
