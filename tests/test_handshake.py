"""
Tests for L{claudews.handshake}: each refusal on its own, without a
connection. L{tests.test_websocket} and L{tests.test_security} test them
through a connection.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from claudews import handshake, limits
from claudews.config import Settings
from claudews.handshake import Refusal

TOKEN = "s3cret-Token"
HOSTS = frozenset({"127.0.0.1:8765"})
ORIGINS = frozenset({"https://good.example"})


class _Request:
    """
    The parts of Autobahn's C{ConnectionRequest} that the checks read.
    """

    def __init__(self, path: str = "/ws", params: dict | None = None, **headers: str) -> None:
        self.path = path
        self.params = params or {}
        self.headers = {"host": "127.0.0.1:8765", **headers}


def check(request: _Request, token: str | None = TOKEN) -> Refusal | None:
    return handshake.check_request(request, HOSTS, ORIGINS, token)


class CheckRequestTests(SynchronousTestCase):
    def test_a_good_request_passes(self) -> None:
        """Right path, host and token, no Origin: no refusal."""
        self.assertIsNone(check(_Request(params={"token": [TOKEN]})))
        self.assertIsNone(check(_Request(authorization="Bearer " + TOKEN)))

    def test_refusals_in_order(self) -> None:
        """Path (404), then Host (403), then Origin (403), then token (401)."""
        self.assertEqual(check(_Request("/x", host="evil")), Refusal(404, "Not Found"))
        self.assertEqual(
            check(_Request(host="Evil:1", origin="https://evil")),
            Refusal(403, "Host not allowed", "Host 'evil:1' not allowed"),
        )
        self.assertEqual(
            check(_Request(origin="https://evil")),
            Refusal(403, "Origin not allowed", "Origin 'https://evil' not allowed"),
        )
        self.assertEqual(
            check(_Request(origin=" HTTPS://GOOD.example ")),
            Refusal(401, "Unauthorized", "missing or wrong token"),
        )

    def test_a_page_of_the_server_itself_gets_in(self) -> None:
        """The console's own origin (the very Host asked for) needs no allow-listing."""
        token = {"token": [TOKEN]}
        self.assertIsNone(check(_Request(params=token, origin="http://127.0.0.1:8765")))
        self.assertIsNone(check(_Request(params=token, origin="https://127.0.0.1:8765")))

    def test_a_page_of_another_port_or_host_is_refused(self) -> None:
        """Same host name on another port, or another host: not our page."""
        token = {"token": [TOKEN]}
        for origin in ("http://127.0.0.1:8766", "http://localhost:8765", "http://127.0.0.1",
                       "null", "http://127.0.0.1:8765.evil.example"):
            refusal = check(_Request(params=token, origin=origin))
            self.assertEqual(refusal and refusal.code, 403, origin)

    def test_without_a_token_only_path_host_and_origin_count(self) -> None:
        """With authentication off, any token (or none) passes."""
        self.assertIsNone(check(_Request(), token=None))

    def test_quoted_values_are_bounded(self) -> None:
        """What is logged of a refused Host is at most 200 characters of it."""
        refusal = check(_Request(host="h" * 1000))
        assert refusal is not None and refusal.why is not None
        self.assertLess(len(refusal.why), 230)


class AuthorizedTests(SynchronousTestCase):
    def test_bearer_or_one_query_token(self) -> None:
        """The token as a Bearer header, or as exactly one ?token= parameter."""
        self.assertTrue(handshake.authorized(_Request(authorization="bearer  %s " % TOKEN), TOKEN))
        self.assertTrue(handshake.authorized(_Request(params={"token": [TOKEN]}), TOKEN))
        self.assertFalse(handshake.authorized(_Request(params={"token": [TOKEN, TOKEN]}), TOKEN))
        self.assertFalse(handshake.authorized(_Request(authorization="Basic " + TOKEN), TOKEN))
        self.assertFalse(handshake.authorized(_Request(), TOKEN))

    def test_a_header_wins_over_the_query(self) -> None:
        """A wrong Bearer token is refused even with the right one in the query."""
        request = _Request(params={"token": [TOKEN]}, authorization="Bearer wrong")
        self.assertFalse(handshake.authorized(request, TOKEN))

    def test_a_lone_surrogate_is_a_wrong_token_not_an_error(self) -> None:
        """A token that is not valid UTF-8 is just wrong."""
        self.assertFalse(handshake.authorized(_Request(params={"token": ["\udcff"]}), TOKEN))


class BeforeParsingTests(SynchronousTestCase):
    def setUp(self) -> None:
        settings = Settings(project_roots=("/tmp",), max_failed_handshakes=1)
        self.clock = Clock()
        self.gate = limits.Gate(settings, TOKEN, self.clock.seconds)
        self.request = b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n"

    def refusal(self, data: bytes, most: int = 2) -> Refusal | None:
        return handshake.before_parsing(data, "10.0.0.1", self.gate, most)

    def test_a_complete_request_from_a_good_address_goes_on(self) -> None:
        """Nothing to refuse before Autobahn parses the request."""
        self.assertIsNone(self.refusal(self.request))

    def test_an_endless_request_is_431_before_it_is_complete(self) -> None:
        """Over MAX_HANDSHAKE_BYTES of headers, complete or not, is 431."""
        big = b"GET /ws HTTP/1.1\r\nX: " + b"x" * handshake.MAX_HANDSHAKE_BYTES
        self.assertEqual(self.refusal(big).code, 431)  # type: ignore[union-attr]
        self.assertEqual(self.refusal(big + b"\r\n\r\n").code, 431)  # type: ignore[union-attr]

    def test_wrong_tokens_never_refuse_before_parsing(self) -> None:
        """However many wrong tokens an address sent, its next request goes on to be checked."""
        for _ in range(50):
            self.gate.wrong_token("10.0.0.1")
        self.assertIsNone(self.refusal(self.request))

    def test_only_a_401_waits_and_never_as_long_as_the_handshake_time(self) -> None:
        """refusal_delay: 0 but for wrong tokens past the free ones, capped below the handshake timeout."""
        gate = limits.Gate(
            Settings(project_roots=("/tmp",), max_failed_handshakes=1, failed_handshake_delay=60.0),
            TOKEN, self.clock.seconds,
        )
        for code in (403, 404, 431, 503):
            self.assertEqual(handshake.refusal_delay(Refusal(code, "x"), "10.0.0.1", gate), 0)
        wrong = Refusal(401, "Unauthorized")
        self.assertEqual(handshake.refusal_delay(wrong, "10.0.0.1", gate), 0)
        self.assertEqual(handshake.refusal_delay(wrong, "10.0.0.1", gate), 0.1)
        for _ in range(10):
            gate.tokens.released("10.0.0.1")
            delay = handshake.refusal_delay(wrong, "10.0.0.1", gate)
        self.assertEqual(delay, handshake.OPEN_HANDSHAKE_TIMEOUT / 2)
        self.assertEqual(handshake.refusal_delay(wrong, None, gate), 0)

    def test_too_many_from_one_address_is_503(self) -> None:
        """Past C{most} connections from the address, 503, and the log says why."""
        for _ in range(3):
            self.gate.peers.add("10.0.0.1")
        self.assertEqual(
            self.refusal(self.request),
            Refusal(503, "Service Unavailable", "over 2 connections from 10.0.0.1"),
        )


class FarTooManyTests(SynchronousTestCase):
    def test_twice_the_limits(self) -> None:
        """Past twice either connection limit, a connection is dropped at once."""
        settings = Settings(project_roots=("/tmp",), max_connections=10, max_connections_per_address=2)
        self.assertFalse(handshake.far_too_many(4, 20, settings))
        self.assertTrue(handshake.far_too_many(5, 1, settings))
        self.assertTrue(handshake.far_too_many(1, 21, settings))


class AllowedHostsTests(SynchronousTestCase):
    def test_loopback_and_the_listen_address_with_the_port(self) -> None:
        """The loopback names and the listen address, each with the port."""
        self.assertEqual(
            handshake.allowed_hosts("10.1.2.3", 8765, ()),
            {"localhost:8765", "127.0.0.1:8765", "[::1]:8765", "10.1.2.3:8765"},
        )

    def test_any_address_adds_nothing_and_ipv6_is_bracketed(self) -> None:
        """0.0.0.0 and :: are not names; an IPv6 listen address is bracketed."""
        self.assertNotIn("0.0.0.0:80", handshake.allowed_hosts("0.0.0.0", 80, ()))
        self.assertIn("[fe80::1]:80", handshake.allowed_hosts("fe80::1", 80, ()))

    def test_default_ports_may_be_left_out(self) -> None:
        """On 80 and 443 a Host without the port is allowed too."""
        self.assertIn("localhost", handshake.allowed_hosts(None, 443, ()))
        self.assertNotIn("localhost", handshake.allowed_hosts(None, 8443, ()))

    def test_configured_hosts_are_taken_as_written(self) -> None:
        """Configured hosts are lower-cased and get no port added."""
        hosts = handshake.allowed_hosts("127.0.0.1", 8765, ("Box.LAN",))
        self.assertIn("box.lan", hosts)
        self.assertNotIn("box.lan:8765", hosts)

    def test_a_unix_socket_has_the_names_without_a_port(self) -> None:
        """With no port (a UNIX socket), the loopback names alone."""
        self.assertEqual(
            handshake.allowed_hosts(None, None, ("box.lan",)),
            {"localhost", "127.0.0.1", "[::1]", "box.lan"},
        )
