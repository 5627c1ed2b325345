"""
Tests for L{claudews.backlog}: every rule of the slow-client bound, on a
L{Clock}, and the one read of Twisted's transport buffer.
"""

from twisted.internet import abstract
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from claudews.backlog import SendBacklog, unsent_in_twisted

BOUND = 1000
GRACE = 10.0
CAP = 100000


class SendBacklogTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.closed: list[str] = []
        self.measured: int | None = None
        self.backlog = SendBacklog(
            self.clock,
            bound=BOUND,
            grace=GRACE,
            cap=CAP,
            close=self.closed.append,
            measure=lambda: self.measured,
        )

    def test_is_a_push_producer(self) -> None:
        """The transport can drive it as a streaming producer."""
        self.assertTrue(verifyObject(IPushProducer, self.backlog))

    def test_nothing_counts_while_the_transport_takes_data(self) -> None:
        """Unpaused, every send is admitted and nothing is unsent."""
        for _ in range(10):
            self.assertTrue(self.backlog.admit(CAP))
        self.clock.advance(GRACE * 2)
        self.assertEqual((self.backlog.unsent(), self.closed), (0, []))

    def test_waiting_for_a_drain_over_the_bound_starts_the_grace_time(self) -> None:
        """A sender that waits for the drain while over the bound is closed after the grace time."""
        self.backlog.pauseProducing()
        self.measured = BOUND + 1
        self.backlog.when_drained()
        self.clock.advance(GRACE)
        self.assertEqual(len(self.closed), 1)

    def test_waiting_for_a_drain_under_the_bound_closes_nobody(self) -> None:
        """Waiting while under the bound is a client that keeps pace."""
        self.backlog.pauseProducing()
        self.measured = BOUND
        self.backlog.when_drained()
        self.clock.advance(GRACE * 2)
        self.assertEqual(self.closed, [])

    def test_over_the_bound_for_the_grace_time_closes(self) -> None:
        """Paused and over the bound for the whole grace time: closed, once."""
        self.backlog.pauseProducing()
        for _ in range(3):
            self.assertTrue(self.backlog.admit(400))
        self.clock.advance(GRACE - 0.1)
        self.assertEqual(self.closed, [])
        self.clock.advance(0.1)
        self.assertEqual(self.closed, ["over 1000 bytes unsent for 10 s"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_under_the_bound_is_never_closed(self) -> None:
        """Paused with less than the bound unsent: no timer, no close."""
        self.backlog.pauseProducing()
        self.assertTrue(self.backlog.admit(BOUND))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(GRACE * 10)
        self.assertEqual(self.closed, [])

    def test_a_resume_cancels_the_grace_time(self) -> None:
        """A resume within the grace time forgets the backlog and its timer."""
        self.backlog.pauseProducing()
        self.backlog.admit(BOUND + 1)
        self.clock.advance(GRACE / 2)
        self.backlog.resumeProducing()
        self.assertEqual(self.backlog.unsent(), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(GRACE * 2)
        self.assertEqual(self.closed, [])

    def test_the_grace_time_restarts_after_a_resume(self) -> None:
        """A new backlog after a resume gets a full grace time of its own."""
        self.backlog.pauseProducing()
        self.backlog.admit(BOUND + 1)
        self.clock.advance(GRACE - 1)
        self.backlog.resumeProducing()
        self.backlog.pauseProducing()
        self.backlog.admit(BOUND + 1)
        self.clock.advance(1)
        self.assertEqual(self.closed, [])
        self.clock.advance(GRACE - 1)
        self.assertEqual(len(self.closed), 1)

    def test_passing_the_cap_closes_at_the_next_send(self) -> None:
        """Past the cap, the next send is refused and the client closed at once."""
        self.backlog.pauseProducing()
        self.assertTrue(self.backlog.admit(60000))
        self.assertTrue(self.backlog.admit(60000))
        self.assertEqual(self.closed, [])
        self.assertFalse(self.backlog.admit(5))
        self.assertEqual(self.closed, ["over 100000 bytes unsent"])
        self.clock.advance(GRACE)
        self.assertEqual(len(self.closed), 1)

    def test_one_event_bigger_than_the_bound_is_not_fatal(self) -> None:
        """One message over the bound to a client that then takes it is not closed."""
        self.backlog.pauseProducing()
        self.assertTrue(self.backlog.admit(5 * BOUND))
        self.clock.advance(GRACE / 2)
        self.backlog.resumeProducing()
        self.clock.advance(GRACE * 2)
        self.assertEqual(self.closed, [])

    def test_one_event_bigger_than_the_cap_is_admitted(self) -> None:
        """A message over the cap is admitted when nothing was queued before it."""
        self.backlog.pauseProducing()
        self.assertTrue(self.backlog.admit(CAP * 2))
        self.assertEqual(self.closed, [])

    def test_a_client_that_keeps_pace_but_never_drains_is_not_closed(self) -> None:
        """
        Paused for good, yet the transport says little is unsent: the client
        takes data as fast as it is sent, and is kept.
        """
        self.backlog.pauseProducing()
        self.measured = 500
        for _ in range(100):
            self.assertTrue(self.backlog.admit(BOUND))
            self.clock.advance(1)
        self.assertEqual(self.closed, [])
        self.assertEqual(self.backlog.unsent(), 500)

    def test_the_transport_measure_closes_a_client_that_falls_behind(self) -> None:
        """Where the transport counts its unsent bytes, that count is the backlog."""
        self.backlog.pauseProducing()
        self.measured = BOUND + 1
        self.backlog.admit(1)
        self.clock.advance(GRACE)
        self.assertEqual(len(self.closed), 1)

    def test_when_drained_fires_on_resume(self) -> None:
        """when_drained fires at once when not paused, else at the next resume."""
        self.successResultOf(self.backlog.when_drained())
        self.backlog.pauseProducing()
        d = self.backlog.when_drained()
        self.assertNoResult(d)
        self.backlog.resumeProducing()
        self.successResultOf(d)

    def test_stop_forgets_waiters_and_the_timer(self) -> None:
        """Once the connection is gone, nobody is called back and nothing closes it."""
        self.backlog.pauseProducing()
        d = self.backlog.when_drained()
        self.backlog.admit(BOUND + 1)
        self.backlog.stopProducing()
        self.clock.advance(GRACE * 2)
        self.assertNoResult(d)
        self.assertEqual(self.closed, [])


class _Descriptor(abstract.FileDescriptor):
    """
    A socket transport whose socket takes C{accepts} bytes a write.
    """

    accepts = 0

    def writeSomeData(self, data: bytes) -> int:
        return min(len(data), self.accepts)


class UnsentInTwistedTests(SynchronousTestCase):
    def test_counts_what_a_socket_transport_has_not_written(self) -> None:
        """Twisted's own buffer, before and after part of it went out."""
        transport = _Descriptor(MemoryReactor())
        transport.connected = True
        self.assertEqual(unsent_in_twisted(transport), 0)
        transport.write(b"x" * 300)
        transport.write(b"y" * 200)
        self.assertEqual(unsent_in_twisted(transport), 500)
        transport.accepts = 120
        transport.doWrite()
        self.assertEqual(unsent_in_twisted(transport), 380)
        transport.write(b"z" * 20)
        self.assertEqual(unsent_in_twisted(transport), 400)

    def test_other_transports_have_no_count(self) -> None:
        """A transport that is not a Twisted socket gives None."""
        self.assertIsNone(unsent_in_twisted(StringTransport()))
