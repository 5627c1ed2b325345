"""
Tests for L{claudews.wsfactory}: the factory's shared state and safety
options, and the fan-out. Connections through it are tested in
L{tests.test_websocket}.
"""

from typing import Any

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from claudews.config import Settings
from claudews.metrics import Metrics
from claudews.requests import HANDLERS
from claudews.wsfactory import ServerFactory, counted_fanout, fanout


class _Subscriber:
    def __init__(self) -> None:
        self.prepared: list[tuple[Any, int]] = []

    def send_prepared(self, prepared: Any, size: int) -> None:
        self.prepared.append((prepared, size))


def make(**overrides: Any) -> ServerFactory:
    settings = Settings(**dict({"max_message_bytes": 4096}, **overrides))
    return ServerFactory(
        settings=settings,
        registry=None,  # type: ignore[arg-type]
        token="t" * 43,
        validate_options=lambda given: {},
        option_flags=lambda options: [],
        reactor=MemoryReactorClock(),
    )


class FanoutTests(SynchronousTestCase):
    def test_an_event_is_framed_once_for_every_subscriber(self) -> None:
        """Each subscriber gets the very same prepared frame, and its size."""
        subscribers = [_Subscriber(), _Subscriber(), _Subscriber()]
        fanout(b'{"seq":1}', subscribers)
        frames = {id(s.prepared[0][0]) for s in subscribers}
        self.assertEqual(len(frames), 1)
        self.assertEqual([s.prepared[0][1] for s in subscribers], [9, 9, 9])

    def test_the_counted_fanout_counts_deliveries(self) -> None:
        """One event to three subscribers is three events sent."""
        metrics = Metrics(MemoryReactorClock(), HANDLERS)
        counted_fanout(metrics)(b"{}", [_Subscriber(), _Subscriber(), _Subscriber()])
        self.assertEqual(metrics.registry.get_sample_value("claudews_events_sent_total"), 3)


class FactoryTests(SynchronousTestCase):
    def test_autobahn_safety_options_are_set_not_left_unlimited(self) -> None:
        """Frame and message sizes come from the settings; no auto-fragmenting, no compression."""
        factory = make(max_message_bytes=4096)
        self.assertEqual(factory.maxFramePayloadSize, 4096)
        self.assertEqual(factory.maxMessagePayloadSize, 4096)
        self.assertEqual(factory.autoFragmentSize, 0)
        self.assertFalse(factory.perMessageCompressionAccept(None))
        self.assertTrue(factory.openHandshakeTimeout)

    def test_the_host_allow_list_follows_the_listening_address(self) -> None:
        """Loopback names with the port, and the listening address itself."""
        factory = make()
        factory.listening_on("10.1.2.3", 8765)
        hosts = factory.allowed_hosts()
        self.assertIn("127.0.0.1:8765", hosts)
        self.assertIn("10.1.2.3:8765", hosts)
        self.assertNotIn("10.1.2.3:8766", hosts)

    def test_closing_with_no_connections_fires_at_once(self) -> None:
        """Shutdown never waits on connections that are not there."""
        self.successResultOf(make().close_all())
