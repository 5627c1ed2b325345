"""
Tests for the security properties of claudews (docs/security.rst): the
Origin and Host allow-lists, the limits on connections, failed handshakes
and requests, what the log may hold, TCP_NODELAY, and the hygiene of the
CLI's argv and environment. The token file and the start-up log are in
L{tests.test_tap}; the limiters themselves in L{tests.test_limits}.

Most run in memory (L{tests.wsmemory}, a L{MemoryReactorClock}); a few
need a real socket (the real reactor, through pytest-twisted) or a real
twistd (L{tests.harness.Server}).
"""

import json
import os
import re
import socket

import pytest
import pytest_twisted
from twisted.internet import defer, endpoints, protocol
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from claudews import limits, runner, websocket, wsfactory
from claudews.config import Settings
from claudews.options import validate_prompt_options
from claudews.errors import RequestError
from tests import wsmemory
from tests.logcapture import LogCapture
from tests.test_websocket import TOKEN, ServerTestCase
from tests.wsmemory import PONG, Connection


class SecureServerTestCase(ServerTestCase):
    def connect_from(self, peer: str, **kwargs: object) -> Connection:
        """
        A connection from the IP address C{peer}.
        """
        original = wsmemory.PEER
        wsmemory.PEER = IPv4Address("TCP", peer, 40000)
        try:
            return self.connect(**kwargs)
        finally:
            wsmemory.PEER = original

    def refused(self, peer: str = "127.0.0.1", **kwargs: object) -> int:
        """
        A handshake from C{peer} that is refused, then the TCP connection
        closes as it would on a real socket; its HTTP status.
        """
        c = self.connect_from(peer, **kwargs)
        self.assertTrue(c.transport.disconnecting, c.response)
        c.lose()
        return c.status

    def half_open(self, peer: str = "127.0.0.1") -> wsmemory.MemoryTransport:
        """
        A TCP connection that has sent nothing yet; its C{protocol} is the
        server's end.
        """
        address = IPv4Address("TCP", peer, 40001)
        transport = wsmemory.MemoryTransport(peerAddress=address)
        transport.protocol = self.factory.buildProtocol(address)
        transport.protocol.makeConnection(transport)
        return transport


class HandshakeLogTests(SecureServerTestCase):
    def raw(self, request_line: str, *headers: str) -> Connection:
        lines = [request_line, "Host: 127.0.0.1:8765", "Upgrade: websocket",
                 "Connection: Upgrade", "Sec-WebSocket-Version: 13", *headers]
        if not any(h.startswith("Sec-WebSocket-Key") for h in headers):
            lines.append("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==")
        return Connection(self.factory, ("\r\n".join(lines) + "\r\n\r\n").encode())

    def test_refused_handshakes_never_log_or_echo_the_token(self) -> None:
        """Malformed handshakes quoting the token are refused without it in the log or the reply."""
        log = LogCapture(self)
        responses = [
            self.raw("GET /ws?token=%s HTTP/1.1 extra" % (TOKEN,)),
            self.raw("GET /ws?token=%s#frag HTTP/1.1" % (TOKEN,)),
            self.raw("GET /ws#token=%s HTTP/1.1" % (TOKEN,)),
            self.raw("GET /ws?token=%s HTTP/1.1" % (TOKEN,), "Sec-WebSocket-Key: " + TOKEN),
            self.raw("GET /other?token=%s HTTP/1.1" % (TOKEN,)),
            self.raw("GET /ws?token=%s HTTP/1.1" % (TOKEN,), "Origin: https://evil.example"),
        ]
        for c in responses:
            self.assertIn(c.status, (400, 403, 404), c.response)
            self.assertNotIn(TOKEN.encode(), c.response)
        self.assertEqual(len(log.lines("Refused")), len(responses))
        self.assertNotIn(TOKEN, log.text())

    def test_one_log_line_per_refusal_and_no_autobahn_warning(self) -> None:
        """A refused handshake is logged once, with peer and status, and not again by Autobahn."""
        log = LogCapture(self)
        self.refused(token="wrong")
        [line] = log.lines()
        self.assertIn("127.0.0.1", line)
        self.assertIn("401", line)
        self.assertEqual(log.lines("dropping connection|failing WebSocket"), [])

    def test_refusal_log_lines_are_bounded(self) -> None:
        """Refusals log at most LOG_LINES lines a period, then say how many were left out."""
        log = LogCapture(self)
        for i in range(500):
            self.refused("10.0.%d.%d" % (i // 250, i % 250), token="wrong")
        self.assertEqual(len(log.lines("^Refused")), limits.Gate.LOG_LINES)
        self.clock.advance(limits.Gate.LOG_PERIOD)
        self.refused("10.9.9.9", token="wrong")
        [line] = log.lines("not logged")
        self.assertIn("and %d more refusals" % (500 - limits.Gate.LOG_LINES,), line)

    def test_accepted_handshake_logs_only_the_peer(self) -> None:
        """An accepted handshake with ?token= logs one connect line: the peer, never the token."""
        log = LogCapture(self)
        self.client()
        [line] = log.lines()
        self.assertRegex(line, r"^Client \S+ connected$")
        self.assertNotIn(TOKEN, log.text())


# -- failed handshakes per address


class WrongTokenTests(SecureServerTestCase):
    """
    Defaults: 10 wrong tokens within 60 s are refused at once, later ones
    wait 0.1 s, doubled each time, at most 5 s. No address is ever blocked.
    """

    def wrong_tokens(self, times: int, peer: str = "127.0.0.1") -> None:
        for _ in range(times):
            self.assertEqual(self.refused(peer, token="wrong"), 401)

    def start(self, peer: str = "127.0.0.1", **kwargs: object) -> wsmemory.MemoryTransport:
        """
        A handshake from C{peer} whose answer may wait; its transport.
        """
        transport = self.half_open(peer)
        transport.protocol.dataReceived(wsmemory.handshake_request(**kwargs))
        return transport

    def answer(self, transport: wsmemory.MemoryTransport) -> tuple[float, int]:
        """
        How long C{transport}'s handshake waited for its answer, and its
        status; then its TCP connection closes.
        """
        start = self.clock.seconds()
        while not transport.value():
            self.clock.advance(min(c.getTime() for c in self.clock.getDelayedCalls()) - self.clock.seconds())
        status, _ = wsmemory.parse_status(transport.value())
        transport.protocol.connectionLost(Failure(ConnectionDone()))
        return round(self.clock.seconds() - start, 3), status

    def test_a_correct_token_gets_in_at_once_after_any_failures(self) -> None:
        """Fifty wrong tokens and a waiting refusal later, the right token is answered at once."""
        self.wrong_tokens(10)
        for _ in range(40):
            self.answer(self.start(token="wrong"))
        waiting = self.start(token="wrong")
        self.assertEqual(self.client().status, 101)
        self.assertEqual(waiting.value(), b"")

    def test_no_status_429_ever(self) -> None:
        """However many refusals of any kind, nobody is told to go away."""
        for _ in range(20):
            for kwargs in ({"origin": "https://evil.example"}, {"host": "evil.example:8765"}):
                self.assertEqual(self.refused(**kwargs), 403)
        self.wrong_tokens(10)
        for _ in range(10):
            self.assertEqual(self.answer(self.start(token="wrong"))[1], 401)

    def test_past_ten_refusals_wait_longer_each_time_up_to_the_cap(self) -> None:
        """The 11th wrong token waits 0.1 s, then 0.2, 0.4 ... at most failed_handshake_delay."""
        self.wrong_tokens(10)
        waits = [self.answer(self.start(token="wrong")) for _ in range(9)]
        self.assertEqual(waits, [(w, 401) for w in (0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0)])

    def test_only_wrong_tokens_count(self) -> None:
        """Origin, Host, path, malformed and unfinished handshakes never make a refusal wait."""
        for _ in range(20):
            for kwargs in ({"path": "/x"}, {"host": "evil.example:8765"},
                           {"origin": "https://evil.example"}):
                self.assertIn(self.refused(**kwargs), (403, 404))
            c = Connection(self.factory, b"POST /ws HTTP/1.1\r\nHost: x\r\n\r\n")
            self.assertEqual(c.status, 405)
            c.lose()
        transports = [self.half_open() for _ in range(20)]
        self.clock.advance(websocket.OPEN_HANDSHAKE_TIMEOUT)
        self.assertTrue(all(t.disconnecting for t in transports))
        self.wrong_tokens(10)

    def test_failures_spread_over_more_than_the_window_are_not_delayed(self) -> None:
        """Only wrong tokens within the window count."""
        self.wrong_tokens(10)
        self.clock.advance(61)
        self.wrong_tokens(10)

    def test_other_addresses_are_not_delayed(self) -> None:
        """The count is per address."""
        self.wrong_tokens(10, "10.0.0.1")
        self.wrong_tokens(10, "10.0.0.2")
        self.assertEqual(self.answer(self.start("10.0.0.1", token="wrong")), (0.1, 401))

    def test_at_most_a_quarter_of_an_address_connections_wait(self) -> None:
        """With 8 connections per address, 2 refusals wait; others are answered at once."""
        self.serve(max_connections_per_address=8)
        self.wrong_tokens(10)
        waiting = [self.start(token="wrong") for _ in range(2)]
        self.assertEqual([t.value() for t in waiting], [b"", b""])
        self.assertEqual(self.refused(token="wrong"), 401)
        self.assertEqual(self.client().status, 101)
        self.assertEqual([self.answer(t)[1] for t in waiting], [401, 401])
        self.assertEqual(self.answer(self.start(token="wrong"))[1], 401)

    def test_a_peer_that_leaves_while_its_refusal_waits_frees_its_place(self) -> None:
        """The waiting refusal is cancelled and no longer counts against the address."""
        self.serve(max_connections_per_address=4)
        self.wrong_tokens(10)
        transport = self.start(token="wrong")
        transport.protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(len(self.factory.gate.peers), 0)
        self.assertEqual(self.answer(self.start(token="wrong")), (0.2, 401))

    def test_data_while_a_refusal_waits_is_not_another_handshake(self) -> None:
        """A second request sent on a waiting connection is ignored, not counted."""
        self.wrong_tokens(10)
        transport = self.start(token="wrong")
        transport.protocol.dataReceived(wsmemory.handshake_request(token="wrong"))
        self.assertEqual(self.answer(transport), (0.1, 401))
        self.assertEqual(self.answer(self.start(token="wrong")), (0.2, 401))

    def test_configured_limits_are_used(self) -> None:
        """max_failed_handshakes, the window and the longest delay come from the settings."""
        self.serve(max_failed_handshakes=2, failed_handshake_window=5.0,
                   failed_handshake_delay=0.15)
        self.wrong_tokens(2)
        self.assertEqual(self.answer(self.start(token="wrong")), (0.1, 401))
        self.assertEqual(self.answer(self.start(token="wrong")), (0.15, 401))
        self.clock.advance(6)
        self.wrong_tokens(2)

    def test_delays_start_once_in_the_log(self) -> None:
        """The first waiting refusal of an address is logged; each refusal within the log budget."""
        log = LogCapture(self)
        self.wrong_tokens(10)
        for _ in range(5):
            self.answer(self.start(token="wrong"))
        [line] = log.lines("Delaying")
        self.assertIn("127.0.0.1", line)
        self.assertEqual(len(log.lines("^Refused")), 15)

    def test_endless_handshake_is_refused_with_431(self) -> None:
        """A request whose headers pass 64 KiB is refused with 431 before it ends."""
        transport = self.half_open()
        protocol = transport.protocol
        head = b"GET /ws HTTP/1.1\r\nX-Filler: " + b"x" * 1000
        protocol.dataReceived(head)
        while not transport.disconnecting and len(transport.value()) == 0:
            protocol.dataReceived(b"y" * 4096)
        status, _ = wsmemory.parse_status(transport.value())
        self.assertEqual(status, 431)
        self.assertTrue(transport.disconnecting)
        self.assertLess(len(protocol.data), websocket.MAX_HANDSHAKE_BYTES + 8192)


# -- connections


class ConnectionLimitTests(SecureServerTestCase):
    def test_connections_per_address_are_bounded_with_503(self) -> None:
        """Past max_connections_per_address, a handshake from that address gets 503."""
        self.serve(max_connections_per_address=2)
        first, second = self.client(), self.client()
        self.assertEqual(self.refused(), 503)
        self.assertEqual(self.connect_from("10.0.0.2").status, 101)
        first.lose()
        self.assertEqual(self.client().status, 101)
        self.assertEqual(second.request("server.info")["ok"], True)

    def test_unfinished_handshakes_count_against_the_address(self) -> None:
        """Connections still in their handshake count against their address."""
        self.serve(max_connections_per_address=2)
        self.half_open()
        self.half_open()
        self.assertEqual(self.refused(), 503)

    def test_far_too_many_connections_are_dropped_at_once(self) -> None:
        """Past twice a limit, a new TCP connection is dropped before it sends anything."""
        self.serve(max_connections_per_address=2, max_connections=3)
        held = [self.half_open() for _ in range(4)]
        self.assertFalse(any(t.disconnecting for t in held))
        extra = self.half_open()
        self.assertTrue(extra.disconnecting)
        extra.protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.factory.gate.peers.count("127.0.0.1"), 4)
        # Twice max_connections in all, whatever the addresses.
        held += [self.half_open("10.0.0.1"), self.half_open("10.0.0.2")]
        self.assertFalse(any(t.disconnecting for t in held))
        self.assertTrue(self.half_open("10.0.0.3").disconnecting)

    def test_total_connections_are_bounded_with_503(self) -> None:
        """Past max_connections in all, a handshake gets 503 whatever its address."""
        self.serve(max_connections=2)
        self.connect_from("10.0.0.1")
        self.connect_from("10.0.0.2")
        self.assertEqual(self.refused("10.0.0.3"), 503)

    def test_capacity_refusals_do_not_block(self) -> None:
        """503s are not the peer's fault: they never lead to a block."""
        self.serve(max_connections_per_address=1)
        self.client()
        for _ in range(20):
            self.assertEqual(self.refused(), 503)
        self.assertEqual(self.connect_from("10.0.0.2").status, 101)

    def test_addresses_without_connections_are_forgotten(self) -> None:
        """The per-address count holds no address once its connections are gone."""
        for i in range(50):
            self.connect_from("10.1.0.%d" % (i,)).lose()
        self.assertEqual(len(self.factory.gate.peers), 0)


# -- requests per connection


class RequestRateTests(SecureServerTestCase):
    """
    The request rate paces a connection (10 a second, bursts of 5): what is
    over it waits and is answered in order, and the connection is not read
    from meanwhile; nothing is refused or closed for it.
    """

    def setUp(self) -> None:
        super().setUp()
        self.serve(request_rate=10.0, request_burst=5)
        self.c = self.client()

    def pipeline(self, c: Connection, count: int, start: int = 0) -> None:
        """
        C{count} requests in one write, as a client that does not wait for
        replies sends them.
        """
        c.send(b"".join(
            wsmemory.text_frame(json.dumps({"type": "server.info", "id": i}))
            for i in range(start, start + count)
        ))

    def reading(self, c: Connection) -> bool:
        return bool(c.transport.producerState == "producing")

    def test_a_burst_is_served(self) -> None:
        """request_burst requests at once are all answered at once."""
        for i in range(5):
            self.assertIs(self.c.request("server.info", i)["ok"], True)

    def test_past_the_burst_requests_wait_and_are_all_answered_in_order(self) -> None:
        """A pipelined burst past the budget gets every answer, in order, at the rate; the connection stays open."""
        self.pipeline(self.c, 20)
        self.assertEqual([m["id"] for m in self.c.messages()], list(range(5)))
        self.assertFalse(self.reading(self.c))
        self.clock.pump([0.1] * 15)
        replies = self.c.messages()
        self.assertEqual([m["id"] for m in replies], list(range(5, 20)))
        self.assertTrue(all(m["ok"] for m in replies))
        self.assertOpen(self.c)
        self.clock.advance(0.1)
        self.assertTrue(self.reading(self.c))

    def test_requests_are_answered_at_once_again_after_a_pause(self) -> None:
        """After a pause that refills the budget, requests are answered at once again."""
        self.pipeline(self.c, 7)
        self.clock.pump([0.1] * 3)
        self.c.messages()
        self.clock.advance(0.4)
        self.assertTrue(self.reading(self.c))
        self.assertIs(self.c.request("server.info", "again")["ok"], True)

    def test_a_steady_client_at_the_rate_is_never_paused(self) -> None:
        """A client sending at request_rate is answered at once, and always read."""
        for i in range(100):
            self.clock.advance(0.1)
            self.assertIs(self.c.request("server.info", i)["ok"], True)
            self.assertTrue(self.reading(self.c))

    def test_invalid_frames_count_too(self) -> None:
        """Frames that are not requests use the budget as well."""
        for _ in range(5):
            self.c.send_text("not json")
        self.c.messages()
        self.c.send_json({"type": "server.info", "id": 1})
        self.assertEqual(self.c.messages(), [])
        self.clock.advance(0.1)
        self.assertEqual([m["id"] for m in self.c.messages()], [1])

    def test_pings_count_too(self) -> None:
        """Pings use the budget: a flood of them gets its pongs at the rate, all of them."""
        self.c.send(wsmemory.ping_frame(b"p") * 8)
        self.assertEqual([f.opcode for f in self.c.new_frames()], [PONG] * 5)
        self.assertFalse(self.reading(self.c))
        self.clock.pump([0.1] * 3)
        self.assertEqual([f.opcode for f in self.c.new_frames()], [PONG] * 3)
        self.clock.advance(0.1)
        self.assertTrue(self.reading(self.c))
        self.assertOpen(self.c)

    def fragments(self, text: bytes, size: int = 1) -> bytes:
        """
        C{text} as one text message in fragments of C{size} bytes.
        """
        pieces = [text[i:i + size] for i in range(0, len(text), size)]
        return b"".join(
            wsmemory.encode_frame(1 if i == 0 else 0, piece, fin=i == len(pieces) - 1)
            for i, piece in enumerate(pieces)
        )

    def test_every_fragment_spends_from_the_budget(self) -> None:
        """A message in five fragments is served, and spends the whole burst of five."""
        text = json.dumps({"type": "server.info", "id": 1}).encode()
        self.c.send(self.fragments(text, size=len(text) // 5 + 1))
        [reply] = self.c.messages()
        self.assertIs(reply["ok"], True)
        self.c.send_json({"type": "server.info", "id": 2})
        self.assertEqual(self.c.messages(), [])
        self.clock.advance(0.1)
        self.assertEqual([m["id"] for m in self.c.messages()], [2])

    def test_a_message_in_more_fragments_than_the_burst_is_served_and_paid_for(self) -> None:
        """A message whose fragments overdraw the budget is answered; the debt delays what follows."""
        text = json.dumps({"type": "server.info", "id": 1}).encode()
        self.c.send(self.fragments(text, size=len(text) // 7 + 1))
        [reply] = self.c.messages()
        self.assertIs(reply["ok"], True)
        self.assertOpen(self.c)
        self.assertFalse(self.reading(self.c))
        # Two in debt and one to earn.
        self.clock.advance(0.29)
        self.assertFalse(self.reading(self.c))
        self.clock.advance(0.01)
        self.assertTrue(self.reading(self.c))

    def test_a_fragment_flood_pauses_the_connection_for_what_it_cost(self) -> None:
        """A message in hundreds of 1-byte fragments is answered, then the connection is not read until they are paid for."""
        self.serve(request_rate=10.0, request_burst=5, max_message_frames=10000)
        c = self.client()
        text = json.dumps({"type": "server.info", "id": "flood", "x": "y" * 500}).encode()
        c.send(self.fragments(text))
        [reply] = c.messages()
        self.assertIs(reply["ok"], True)
        self.clock.advance((len(text) - 5) / 10.0 - 0.01)
        self.assertFalse(self.reading(c))
        self.clock.advance(0.2)
        self.assertTrue(self.reading(c))
        self.assertOpen(c)

    def test_fragments_at_the_rate_are_served(self) -> None:
        """Fragments that arrive no faster than the rate never use the budget up."""
        self.serve(request_rate=10.0, request_burst=5, max_message_frames=10000)
        c = self.client()
        text = json.dumps({"type": "server.info", "id": "slow"}).encode()
        for i in range(len(text)):
            self.clock.advance(0.1)
            c.send(wsmemory.encode_frame(1 if i == 0 else 0, text[i:i + 1], fin=i == len(text) - 1))
        [reply] = c.messages()
        self.assertIs(reply["ok"], True)

    def test_each_connection_has_its_own_budget(self) -> None:
        """One connection over the rate does not slow down another."""
        self.pipeline(self.c, 20)
        other = self.client()
        self.assertIs(other.request("server.info")["ok"], True)
        self.assertTrue(self.reading(other))

    def test_server_info_tells_the_rate(self) -> None:
        """server.info reports request_rate and request_burst."""
        limits_ = self.c.request("server.info")["result"]["limits"]
        self.assertEqual((limits_["request_rate"], limits_["request_burst"]), (10.0, 5))


# -- Origin and Host are compared exactly


class AllowListTests(SecureServerTestCase):
    def test_origins_that_merely_start_or_end_like_an_allowed_one_are_403(self) -> None:
        """No prefix, suffix, scheme or port games get past the Origin allow-list."""
        for origin in (
            "https://good.example.evil.com",
            "https://good.examplex",
            "https://xgood.example",
            "https://evil.com/https://good.example",
            "https://good.example/",
            "https://good.example.",
            "http://good.example",
            "https://good.example:8443",
            "https://good.example@evil.com",
            "https://user@good.example",
            "wss://good.example",
            "null",
            "",
        ):
            self.assertIn(self.refused(origin=origin), (400, 403), origin)
            self.clock.advance(60)

    def test_allowed_origin_with_port_is_exact(self) -> None:
        """An allowed origin with a port matches only that port."""
        self.serve(allowed_origins=("http://localhost:3000",))
        self.assertEqual(self.connect(origin="http://localhost:3000").status, 101)
        for origin in ("http://localhost:30001", "http://localhost:300", "http://localhost",
                       "https://localhost:3000"):
            self.assertEqual(self.refused(origin=origin), 403, origin)

    def test_hosts_that_merely_start_like_an_allowed_one_are_refused(self) -> None:
        """Hosts that embed an allowed one are refused (403, or 400 when malformed)."""
        for host in (
            "127.0.0.1:8765.evil.com",
            "127.0.0.1:87650",
            "127.0.0.1.evil.com:8765",
            "evil.com:8765",
            "localhost.evil.com:8765",
            "127.0.0.1:8765@evil.com",
            "127.0.0.1",
            "",
        ):
            self.assertIn(self.refused(host=host), (400, 403), host)
            self.clock.advance(60)


# -- TCP_NODELAY on a real socket


@pytest_twisted.inlineCallbacks
def test_tcp_nodelay_is_set_on_every_accepted_connection(tmp_path):
    """The server's end of a real TCP connection has TCP_NODELAY set."""
    from twisted.internet import reactor

    settings = Settings(data=str(tmp_path / "data"), project_roots=(str(tmp_path),))
    factory = wsfactory.ServerFactory(
        settings=settings, registry=None, token=TOKEN, validate_options=dict,
        option_flags=list, reactor=reactor,
    )
    port = yield endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
    try:
        factory.listening_on("127.0.0.1", port.getHost().port)
        received = defer.Deferred()

        class Client(protocol.Protocol):
            def connectionMade(self) -> None:
                self.transport.write(wsmemory.handshake_request(
                    token=TOKEN, host="127.0.0.1:%d" % (port.getHost().port,)
                ))

            def dataReceived(self, data: bytes) -> None:
                if not received.called:
                    received.callback(data)

        client = yield endpoints.connectProtocol(
            endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), Client()
        )
        response = yield received
        assert response.startswith(b"HTTP/1.1 101"), response
        [server] = factory.connections
        handle = server.transport.getHandle()
        assert handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        # The client's end is left as the kernel made it: the check can fail.
        assert client.transport.getHandle().getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        client.transport.loseConnection()
        yield server.is_closed
    finally:
        yield port.stopListening()


# -- process hygiene


class ProcessHygieneTests(SynchronousTestCase):
    def test_environment_drops_nested_session_variables(self) -> None:
        """The CLI's environment lacks CLAUDECODE and friends, has the operator's and a marker."""
        base = {"PATH": "/bin", "HOME": "/h", "CLAUDECODE": "1",
                "CLAUDE_CODE_ENTRYPOINT": "cli", "CLAUDE_CODE_SSE_PORT": "1234"}
        env = runner.build_env(base, {"ANTHROPIC_LOG": "debug"}, "m-1")
        for name in runner.SCRUBBED_ENV:
            self.assertNotIn(name, env)
        self.assertEqual((env["PATH"], env["HOME"], env["ANTHROPIC_LOG"]), ("/bin", "/h", "debug"))
        self.assertEqual(env[runner.proctree.MARKER_ENV], "m-1")
        self.assertIn("CLAUDECODE", base)

    def test_argv_is_a_list_with_no_prompt_in_it(self) -> None:
        """The CLI's argv: fixed flags, an optional --resume, option flags, one value per item."""
        argv = runner.build_argv("/bin/claude", "sid; rm -rf /", ("--model", "a b"))
        self.assertEqual(argv[0], "/bin/claude")
        self.assertEqual(argv[-4:], ["--resume", "sid; rm -rf /", "--model", "a b"])

    def test_bypass_permissions_is_refused_unless_listed(self) -> None:
        """A client cannot ask for bypassPermissions unless the operator lists it."""
        settings = Settings(project_roots=("/tmp",))
        e = self.assertRaises(
            RequestError,
            validate_prompt_options,
            {"permission_mode": "bypassPermissions"},
            settings,
        )
        self.assertEqual(e.code, "bad_request")
        listed = Settings(project_roots=("/tmp",),
                          permission_modes=("default", "bypassPermissions"))
        self.assertEqual(
            validate_prompt_options({"permission_mode": "bypassPermissions"}, listed),
            {"permission_mode": "bypassPermissions"},
        )

    def test_option_values_cannot_become_flags(self) -> None:
        """An option value that starts with '-' or holds NUL or a newline is refused."""
        settings = Settings(project_roots=("/tmp",))
        for options in (
            {"model": "--dangerously-skip-permissions"},
            {"model": "-x"},
            {"model": "a b"},
            {"append_system_prompt": "--settings=/etc/passwd"},
            {"allowed_tools": ["Read", "--add-dir=/"]},
            {"allowed_tools": ["Bash(a),Bash(b)"]},
            {"model": "x\x00y"},
            {"effort": "high --verbose"},
        ):
            self.assertRaises(RequestError, validate_prompt_options, options, settings)

    def test_options_not_given_to_clients_are_refused(self) -> None:
        """An option outside client_options is refused even with a valid value."""
        settings = Settings(project_roots=("/tmp",), client_options=("model",))
        self.assertRaises(
            RequestError, validate_prompt_options, {"effort": "high"}, settings
        )


class PromptHygieneTests(SecureServerTestCase):
    def test_bypass_permissions_prompt_is_refused_and_queues_nothing(self) -> None:
        """A prompt asking for bypassPermissions is a bad_request and queues nothing."""
        c = self.client()
        path = self.create(c, "app")
        reply = c.request(
            "prompt", 1, path=path, prompt="hi", options={"permission_mode": "bypassPermissions"}
        )
        self.assertError(reply, "bad_request", 1)
        self.assertIn("bypassPermissions", reply["error"]["message"])
        project = c.request("project.get", path=path)["result"]["project"]
        self.assertEqual((project["queue"], project["last_seq"]), (0, 0))


# -- a real server


@pytest.mark.integration
def test_real_server_log_never_shows_the_token_after_the_first_start_line(make_server):
    """Over connections, refusals and a restart, only the first-start line holds the token."""
    server = make_server(token=None)
    start = [line for line in server.log if "?token=" in line]
    assert len(start) == 1, server.log
    token = re.search(r"\?token=([A-Za-z0-9_-]+)", start[0]).group(1)
    server.token = token
    c = server.connect()
    assert c.ok("server.info")["protocol"] == 1
    c.close()
    header = "Authorization: Bearer %s\r\n" % (token,)
    for request_line, extra in (
        ("GET /ws?token=%s HTTP/1.1 extra" % (token,), ""),
        ("GET /ws?token=%s#frag HTTP/1.1" % (token,), ""),
        ("GET /ws#token=%s HTTP/1.1" % (token,), ""),
        ("GET /nope?token=%s HTTP/1.1" % (token,), ""),
        ("GET /ws?token=%s HTTP/1.1" % (token,), "Origin: https://evil.example\r\n"),
        ("GET /ws HTTP/1.1", header + "Origin: https://evil.example\r\n"),
        ("GET /ws?token=%s HTTP/1.0" % (token,), ""),
        ("GET /ws?token=wrong-%s HTTP/1.1" % (token,), ""),
    ):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.sendall((
            "%s\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n%s\r\n"
            % (request_line, server.port, extra)
        ).encode())
        response = sock.recv(4096)
        assert re.match(rb"HTTP/1\.[01] [45]\d\d ", response), response
        assert token.encode() not in response
        sock.close()
    server.stop_cleanly()
    log = "".join(server.log)
    # That one line names it twice: in the WebSocket's URL and the console's.
    assert [line for line in server.log if token in line] == start
    # Four reached the WebSocket's handshake checks and were refused there;
    # the HTTP layer answered the other four (a malformed request line, two
    # paths that are not /ws, HTTP/1.0), which are not handshakes at all.
    assert len(re.findall("Refused", log)) == 4
    # A restart reads the stored token and does not log it.
    server.start()
    c = server.connect()
    c.ok("server.info")
    c.close()
    server.stop_cleanly()
    assert token not in "".join(server.log)


@pytest.mark.integration
def test_real_server_prompt_text_reaches_the_cli_as_data_only(make_server):
    """Shell syntax in a prompt runs nothing: the CLI gets it on stdin, the reply echoes it."""
    server = make_server()
    c = server.connect()
    path = server.project_dir("app")
    c.ok("project.create", path=path)
    c.ok("subscribe", path=path)
    marker = os.path.join(server.tmp, "PWNED")
    text = "$(touch %s) `touch %s`; touch %s && --model x | touch %s" % ((marker,) * 4)
    prompt_id = c.ok("prompt", path=path, prompt=text)["prompt_id"]
    finished = c.finished(prompt_id)
    assert finished["status"] == "completed", finished
    replies = [
        block["text"]
        for m in c.of(prompt_id, "claude")
        if m["message"].get("type") == "assistant"
        for block in m["message"]["message"]["content"]
        if block.get("type") == "text"
    ]
    assert any(text in reply for reply in replies), replies
    assert not os.path.exists(marker)
    c.close()
    server.stop_cleanly()
