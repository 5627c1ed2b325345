"""
Tests for L{claudews.websocket}: the handshake checks, the framing rules,
every request against a real L{Registry} on a temporary directory, event
fan-out and replay, the slow-client rule and shutdown.

Everything runs in memory: the server protocol talks to a
L{StringTransport} (see L{tests.wsmemory}) and time is a
L{MemoryReactorClock}, so nothing listens, nothing is spawned and nothing
sleeps.
"""

import json
import os
import shutil
import tempfile

from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from claudews import options
from claudews.config import Settings
from claudews.registry import Registry
from claudews import clicheck, events
from claudews.wsfactory import ServerFactory, fanout
from tests import wsmemory
from tests.wsmemory import PONG


class Connection(wsmemory.Connection):
    """
    L{wsmemory.Connection}, reading a fragmented message (a history page)
    as one frame; control frames between its fragments come first.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        self._partial: wsmemory.Frame | None = None
        super().__init__(*args, **kwargs)

    def _receive(self) -> None:
        value = self.transport.value()
        self._buffer += value[self._seen :]
        self._seen = len(value)
        frames, self._buffer = wsmemory.decode_frames(self._buffer)
        for frame in frames:
            if frame.opcode >= wsmemory.CLOSE:
                self.frames.append(frame)
                continue
            if self._partial is not None:
                frame = wsmemory.Frame(
                    self._partial.opcode, self._partial.payload + frame.payload, frame.fin
                )
            self._partial = None if frame.fin else frame
            if frame.fin:
                self.frames.append(frame)

TOKEN = "s3cret-Token"
_DEFAULT = object()


class ServerTestCase(SynchronousTestCase):
    """
    A claudews server in memory: settings with small limits, a started
    Registry on a temporary data directory, and the WebSocket factory
    wired to it the way L{claudews.tap} wires them.
    """

    def setUp(self) -> None:
        base = os.path.realpath(tempfile.mkdtemp(prefix="claudews-ws-"))
        self.addCleanup(shutil.rmtree, base, True)
        self.base = base
        self.root = os.path.join(base, "projects")
        for name in ("app", "app/sub", "lib", "other"):
            os.makedirs(os.path.join(self.root, name))
        self.outside = os.path.join(base, "outside")
        os.makedirs(self.outside)
        self.serve()

    def serve(self, token: str | None = TOKEN, **overrides: object) -> None:
        """
        (Re)start the server with C{overrides} applied to the settings.
        """
        values = dict(
            data=os.path.join(self.base, "data"),
            project_roots=(self.root,),
            # Never run: a prompt test that started a process would fail.
            claude_bin=os.path.join(self.base, "no-claude-here"),
            allowed_origins=("https://good.example",),
            max_message_bytes=1024,
            max_prompt_bytes=100,
            send_backlog_bytes=1000,
            send_backlog_grace=10.0,
            send_backlog_cap=100000,
            fsync="none",
        )
        values.update(overrides)
        self.settings = settings = Settings(**values)
        # What server.info says `claude --version` printed.
        self.claude_version: str | None = "2.0.1 (Claude Code)"
        self.clock = MemoryReactorClock()
        self.registry = Registry(settings, self.clock, fanout)
        self.registry.startService()
        self.addCleanup(self._stop, self.registry)
        self.factory = ServerFactory(
            settings=settings,
            registry=self.registry,
            token=token,
            validate_options=lambda given: options.validate_prompt_options(
                given, settings
            ),
            option_flags=options.option_flags,
            claude_version=lambda: self.claude_version,
            reactor=self.clock,
        )
        self.factory.listening_on("127.0.0.1", 8765)
        self.token = token

    def _stop(self, registry: Registry) -> None:
        self.successResultOf(registry.stopService())

    def connect(self, token: object = _DEFAULT, **kwargs: object) -> Connection:
        """
        A client connection; with the server's token unless told otherwise.
        """
        if token is _DEFAULT:
            token = self.token
        return Connection(self.factory, token=token, **kwargs)

    def client(self) -> Connection:
        """
        A connection that passed the handshake.
        """
        c = self.connect()
        self.assertEqual(c.status, 101, c.response)
        return c

    def path(self, name: str) -> str:
        return os.path.join(self.root, name)

    def create(self, c: Connection, name: str) -> str:
        reply = c.request("project.create", path=self.path(name))
        self.assertTrue(reply["ok"], reply)
        return reply["result"]["project"]["path"]

    def publish(self, path: str, text: str) -> None:
        """
        The project emits an C{output} event, as if the CLI printed C{text}.
        """
        self.registry.get(path).publish(events.output(None, "stdout", text))

    def assertError(self, reply: dict, code: str, request_id: object = None) -> None:
        self.assertEqual(reply["type"], "result")
        self.assertIs(reply["ok"], False, reply)
        self.assertEqual(reply["error"]["code"], code, reply)
        self.assertIsInstance(reply["error"]["message"], str)
        self.assertEqual(reply["id"], request_id)

    def assertClosedWith(self, c: Connection, code: int) -> None:
        closes = c.close_frames()
        self.assertEqual(len(closes), 1, closes)
        self.assertEqual(closes[0].close_code, code, closes[0])

    def assertOpen(self, c: Connection) -> None:
        self.assertEqual(c.close_frames(), [])
        self.assertFalse(c.transport.disconnecting)


class HandshakeTests(ServerTestCase):
    def test_wrong_path_is_404(self) -> None:
        """A handshake for any path but /ws is refused with 404."""
        c = self.connect(path="/other")
        self.assertEqual(c.status, 404)
        self.assertTrue(c.transport.disconnecting)

    def test_missing_token_is_401(self) -> None:
        """Without a token the handshake is refused with 401."""
        c = self.connect(token=None)
        self.assertEqual(c.status, 401)
        self.assertTrue(c.transport.disconnecting)

    def test_wrong_token_is_401(self) -> None:
        """A wrong token in the URL is refused with 401."""
        self.assertEqual(self.connect(token="s3cret-Tokem").status, 401)

    def test_wrong_bearer_token_is_401(self) -> None:
        """A wrong token in the Authorization header is refused with 401."""
        c = self.connect(token=None, authorization="Bearer nope")
        self.assertEqual(c.status, 401)

    def test_token_in_query_is_accepted(self) -> None:
        """The right token in ?token= upgrades the connection."""
        self.assertEqual(self.connect().status, 101)

    def test_token_in_bearer_header_is_accepted(self) -> None:
        """The right token in Authorization: Bearer upgrades the connection."""
        c = self.connect(token=None, authorization="Bearer " + TOKEN)
        self.assertEqual(c.status, 101)

    def test_percent_encoded_token_is_accepted(self) -> None:
        """A token with URL-special characters works when percent-encoded."""
        self.serve(token="a+b/c=d%e")
        self.assertEqual(self.connect().status, 101)

    def test_token_twice_in_query_is_401(self) -> None:
        """Two ?token= values are ambiguous and refused."""
        request = wsmemory.handshake_request(path="/ws?token=%s&token=%s" % (TOKEN, TOKEN))
        self.assertEqual(Connection(self.factory, request).status, 401)

    def test_no_auth_accepts_without_token(self) -> None:
        """With authentication off, a handshake without a token upgrades."""
        self.serve(token=None)
        self.assertEqual(self.connect(token=None).status, 101)

    def test_foreign_origin_is_403(self) -> None:
        """An Origin not on the allow-list is refused with 403."""
        c = self.connect(origin="https://evil.example")
        self.assertEqual(c.status, 403)
        self.assertTrue(c.transport.disconnecting)

    def test_null_origin_is_403(self) -> None:
        """The opaque Origin "null" (sandboxed pages, file:) is refused."""
        self.assertEqual(self.connect(origin="null").status, 403)

    def test_allowed_origin_is_accepted(self) -> None:
        """An Origin on the allow-list upgrades, compared case-insensitively."""
        self.assertEqual(self.connect(origin="https://good.example").status, 101)
        self.assertEqual(self.connect(origin="https://Good.Example").status, 101)

    def test_no_origin_is_accepted(self) -> None:
        """A client that sends no Origin is not affected by the allow-list."""
        self.assertEqual(self.connect(origin=None).status, 101)

    def test_foreign_host_is_403(self) -> None:
        """A Host not on the allow-list (DNS rebinding) is refused with 403."""
        self.assertEqual(self.connect(host="evil.example:8765").status, 403)

    def test_host_with_other_port_is_403(self) -> None:
        """A loopback Host with another port than the listening one is refused."""
        self.assertEqual(self.connect(host="127.0.0.1:9999").status, 403)

    def test_host_check_comes_before_token(self) -> None:
        """A foreign Host is refused even with no token at all."""
        self.assertEqual(self.connect(token=None, host="evil.example:8765").status, 403)

    def test_loopback_host_names_are_accepted(self) -> None:
        """localhost, 127.0.0.1 and [::1] with the port are allowed Hosts."""
        for host in ("localhost:8765", "127.0.0.1:8765", "[::1]:8765", "LOCALHOST:8765"):
            self.assertEqual(self.connect(host=host).status, 101, host)

    def test_configured_extra_host_is_accepted(self) -> None:
        """A Host from settings.allowed_hosts is accepted."""
        self.serve(allowed_hosts=("box.lan:8765",))
        self.assertEqual(self.connect(host="box.lan:8765").status, 101)
        self.assertEqual(self.connect(host="box.lan:8766").status, 403)

    def test_listen_address_is_an_allowed_host(self) -> None:
        """The address the server listens on is an allowed Host."""
        self.factory.listening_on("10.1.2.3", 9000)
        self.assertEqual(self.connect(host="10.1.2.3:9000").status, 101)
        self.assertEqual(self.connect(host="10.1.2.3:8765").status, 403)

    def test_default_ws_port_may_be_left_out_of_host(self) -> None:
        """Listening on port 80, a Host without a port is allowed."""
        self.factory.listening_on("127.0.0.1", 80)
        self.assertEqual(self.connect(host="localhost").status, 101)
        self.assertEqual(self.connect(host="localhost:80").status, 101)

    def test_default_wss_port_may_be_left_out_of_host(self) -> None:
        """Listening on port 443 (wss), a Host without a port is allowed."""
        self.factory.listening_on("127.0.0.1", 443)
        self.assertEqual(self.connect(host="localhost:443").status, 101)
        self.assertEqual(self.connect(host="localhost").status, 101)

    def test_unix_socket_accepts_the_loopback_names_without_a_port(self) -> None:
        """On a UNIX socket (no port), localhost, 127.0.0.1 and [::1] are allowed Hosts."""
        self.factory.listening_on(None, None)
        for host in ("localhost", "127.0.0.1", "[::1]", "LocalHost"):
            self.assertEqual(self.connect(host=host).status, 101, host)

    def test_unix_socket_refuses_other_hosts_and_any_port(self) -> None:
        """On a UNIX socket, a port or another name in Host is refused with 403."""
        self.factory.listening_on(None, None)
        for host in ("localhost:8765", "127.0.0.1:80", "[::1]:1", "evil.example"):
            self.assertEqual(self.connect(host=host).status, 403, host)

    def test_unix_socket_accepts_a_configured_host(self) -> None:
        """On a UNIX socket, a Host from settings.allowed_hosts is accepted as listed."""
        self.serve(allowed_hosts=("box.lan",))
        self.factory.listening_on(None, None)
        self.assertEqual(self.connect(host="box.lan").status, 101)
        self.assertEqual(self.connect(host="box.lan:8765").status, 403)

    def test_open_handshake_timeout_runs_on_the_factory_reactor(self) -> None:
        """A client that never finishes its handshake is dropped on the factory's clock."""
        clock = MemoryReactorClock()
        factory = ServerFactory(
            settings=self.settings,
            registry=self.registry,
            token=TOKEN,
            validate_options=dict,
            option_flags=list,
            reactor=clock,
        )
        transport = wsmemory.MemoryTransport(peerAddress=wsmemory.PEER)
        protocol = factory.buildProtocol(wsmemory.PEER)
        protocol.makeConnection(transport)

        def cancel() -> None:
            # Whatever happens, leave nothing on the global reactor.
            if protocol.openHandshakeTimeoutCall is not None:
                protocol.openHandshakeTimeoutCall.cancel()

        self.addCleanup(cancel)
        clock.advance(11)
        self.assertTrue(transport.disconnecting)


class FrameTests(ServerTestCase):
    def test_binary_frame_closes_1003(self) -> None:
        """A binary frame closes the connection with 1003."""
        c = self.client()
        c.send(wsmemory.binary_frame(b'{"type":"server.info"}'))
        self.assertClosedWith(c, 1003)
        self.assertEqual(c.messages(), [])

    def test_requests_after_the_server_closed_are_not_served(self) -> None:
        """After the server's close frame, requests that still arrive are not run or answered."""
        c = self.client()
        c.send(wsmemory.binary_frame(b"x"))
        self.assertClosedWith(c, 1003)
        c.send_json({"type": "project.create", "id": 1, "path": self.path("app")})
        self.assertEqual(c.messages(), [])
        self.assertEqual(self.registry.list(), [])

    def test_message_over_the_limit_closes_1009(self) -> None:
        """A text message over max_message_bytes closes with 1009."""
        c = self.client()
        c.send_text(json.dumps({"type": "server.info", "id": "x" * 2000}))
        self.assertClosedWith(c, 1009)

    def test_message_with_64_bit_length_over_the_limit_closes_1009(self) -> None:
        """A frame using the 64-bit length form and over the limit closes with 1009."""
        c = self.client()
        c.send_text(json.dumps({"type": "server.info", "id": "x" * 70000}))
        self.assertClosedWith(c, 1009)

    def test_message_at_the_limit_is_answered(self) -> None:
        """A request of exactly max_message_bytes is accepted."""
        c = self.client()
        head = '{"type":"server.info","id":1,"padding":"'
        text = head + "x" * (1024 - len(head) - 2) + '"}'
        self.assertEqual(len(text), 1024)
        c.send_text(text)
        [reply] = c.messages()
        self.assertIs(reply["ok"], True)
        self.assertOpen(c)

    def test_reply_larger_than_the_inbound_limit_is_sent(self) -> None:
        """The inbound size limit does not stop a reply that is larger than it."""
        c = self.client()
        # The request fits the 1024-byte limit; the reply (server.info) does not.
        request_id = "x" * 900
        c.send_text(json.dumps({"type": "server.info", "id": request_id}))
        [reply] = c.messages()
        self.assertEqual(reply["id"], request_id)
        self.assertOpen(c)

    def fragmented(self, c: Connection, text: bytes, count: int) -> None:
        size = -(-len(text) // count)
        pieces = [text[i:i + size] for i in range(0, len(text), size)]
        self.assertEqual(len(pieces), count)
        for i, piece in enumerate(pieces):
            c.send(wsmemory.encode_frame(1 if i == 0 else 0, piece, fin=i == count - 1))

    def test_message_in_as_many_fragments_as_allowed_is_answered(self) -> None:
        """A message in max_message_frames fragments is one request, answered."""
        self.serve(max_message_frames=4)
        c = self.client()
        self.fragmented(c, json.dumps({"type": "server.info", "id": 1}).encode(), 4)
        [reply] = c.messages()
        self.assertEqual((reply["id"], reply["ok"]), (1, True))
        self.assertOpen(c)

    def test_message_in_too_many_fragments_closes_1008(self) -> None:
        """One fragment more than max_message_frames closes with 1008 and a reason."""
        self.serve(max_message_frames=4)
        c = self.client()
        self.fragmented(c, json.dumps({"type": "server.info", "id": 1}).encode(), 5)
        self.assertClosedWith(c, 1008)
        self.assertEqual(c.close_frames()[0].close_reason, "more than 4 frames in one message")
        self.assertEqual(c.messages(), [])

    def test_fragments_of_a_message_over_the_limit_close_1009(self) -> None:
        """Fragments that add up to more than max_message_bytes close with 1009."""
        c = self.client()
        self.fragmented(c, b"x" * 1200, 3)
        self.assertClosedWith(c, 1009)

    def test_autobahn_safety_options_are_set(self) -> None:
        """Frame and message sizes, no outbound fragments, no compression, masks and UTF-8 checked."""
        f = self.factory
        self.assertEqual((f.maxFramePayloadSize, f.maxMessagePayloadSize), (1024, 1024))
        self.assertEqual(f.autoFragmentSize, 0)
        self.assertIsNone(f.perMessageCompressionAccept([object()]))
        self.assertTrue(f.utf8validateIncoming and f.requireMaskedClientFrames and f.applyMask)
        self.assertFalse(f.maskServerFrames or f.echoCloseCodeReason or f.serveFlashSocketPolicy)
        self.assertEqual(f.trustXForwardedFor, 0)

    def test_ping_is_answered_with_pong(self) -> None:
        """A ping gets a pong with the same payload."""
        c = self.client()
        c.send(wsmemory.ping_frame(b"hello"))
        [pong] = c.new_frames()
        self.assertEqual((pong.opcode, pong.payload), (PONG, b"hello"))

    def test_invalid_json_is_bad_request_and_connection_stays_open(self) -> None:
        """Invalid JSON gets a bad_request with id null; later requests are served."""
        c = self.client()
        c.send_text('{"type": "server.info", "id": 1')
        [reply] = c.messages()
        self.assertError(reply, "bad_request", None)
        self.assertOpen(c)
        reply = c.request("server.info", 2)
        self.assertIs(reply["ok"], True)
        self.assertEqual(reply["id"], 2)

    def test_non_object_json_is_bad_request(self) -> None:
        """A JSON array, number, string or null is a bad_request with id null."""
        c = self.client()
        for text in ('[{"type": "server.info", "id": 1}]', "42", '"server.info"', "null"):
            c.send_text(text)
            [reply] = c.messages()
            self.assertError(reply, "bad_request", None)
        self.assertOpen(c)

    def test_missing_type_is_bad_request(self) -> None:
        """A request without a type is a bad_request, its id echoed."""
        c = self.client()
        c.send_json({"id": 5, "path": self.path("app")})
        [reply] = c.messages()
        self.assertError(reply, "bad_request", 5)

    def test_non_string_type_is_bad_request(self) -> None:
        """A type that is not a string is a bad_request."""
        c = self.client()
        c.send_json({"type": 3, "id": 6})
        [reply] = c.messages()
        self.assertError(reply, "bad_request", 6)

    def test_unknown_type_is_unknown_type(self) -> None:
        """An unknown type gets unknown_type with the id echoed."""
        c = self.client()
        self.assertError(c.request("project.rename", "r-1"), "unknown_type", "r-1")

    def test_id_of_any_json_type_is_echoed(self) -> None:
        """The id is echoed unchanged, whatever its JSON type."""
        c = self.client()
        for request_id in ("abc", 7, -1.5, {"a": [1, None]}, [1, "2"], True, "é✓"):
            reply = c.request("server.info", request_id)
            self.assertEqual(reply["id"], request_id)
            self.assertIs(reply["ok"], True)

    def test_lone_surrogate_id_is_echoed_as_valid_utf8(self) -> None:
        """An id holding a lone surrogate (legal JSON escape) comes back in a valid UTF-8 frame."""
        c = self.client()
        c.send_text('{"type": "server.info", "id": "a\\ud800b"}')
        [frame] = c.new_frames()
        self.assertEqual(json.loads(frame.payload.decode("utf-8"))["id"], "a\ud800b")

    def test_absent_or_null_id_is_echoed_as_null(self) -> None:
        """Without an id, or with id null, the reply carries id null."""
        c = self.client()
        c.send_json({"type": "server.info"})
        c.send_json({"type": "server.info", "id": None})
        replies = c.messages()
        self.assertEqual([r["id"] for r in replies], [None, None])
        self.assertTrue(all("id" in r for r in replies))

    def test_every_request_gets_exactly_one_reply(self) -> None:
        """Good and bad requests in a row get one reply each, in order."""
        c = self.client()
        c.send_json({"type": "server.info", "id": 1})
        c.send_json({"type": "nope", "id": 2})
        c.send_json({"type": "project.get", "id": 3, "path": self.path("app")})
        c.send_json({"type": "project.list", "id": 4})
        self.assertEqual([r["id"] for r in c.messages()], [1, 2, 3, 4])

    def test_deeply_nested_json_is_bad_request(self) -> None:
        """JSON nested too deep to parse is a bad_request, not a dropped connection."""
        c = self.client()
        c.send_text("[" * 1020)
        [reply] = c.messages()
        self.assertError(reply, "bad_request", None)
        self.assertOpen(c)

    def test_replies_are_always_strict_json(self) -> None:
        """A request carrying NaN never makes the server send invalid JSON."""
        c = self.client()
        c.send_text('{"type": "server.info", "id": NaN}')
        [frame] = c.new_frames()

        def refuse(constant: str) -> None:
            raise ValueError("not JSON: " + constant)

        reply = json.loads(frame.payload, parse_constant=refuse)
        self.assertError(reply, "bad_request", None)


class ServerInfoTests(ServerTestCase):
    def test_server_info_shape(self) -> None:
        """server.info reports version, protocol 1, the CLI and the limits."""
        c = self.client()
        reply = c.request("server.info", 1)
        self.assertIs(reply["ok"], True)
        info = reply["result"]
        self.assertEqual(set(info), {"version", "protocol", "claude", "project_roots", "limits"})
        self.assertEqual(info["project_roots"], list(self.settings.project_roots))
        self.assertIsInstance(info["version"], str)
        self.assertEqual(info["protocol"], 1)
        self.assertEqual(
            info["claude"],
            {"bin": self.settings.claude_bin, "version": "2.0.1 (Claude Code)",
             # The test's CLI path names nothing: server.info says so.
             "problem": clicheck.cli_problem(self.settings.claude_bin)},
        )
        self.assertIn("npm install -g @anthropic-ai/claude-code", info["claude"]["problem"])
        limits = info["limits"]
        self.assertEqual(limits["max_message_bytes"], 1024)
        self.assertEqual(limits["max_prompt_bytes"], 100)
        self.assertEqual(limits["max_queue"], self.settings.max_queue)
        self.assertEqual(limits["history_limit"], 1000)
        self.assertEqual(limits["client_options"], list(self.settings.client_options))


    def test_server_info_says_null_while_the_version_is_unknown(self) -> None:
        """Before `claude --version` has answered, server.info replies at once with version null."""
        self.claude_version = None
        c = self.client()
        self.assertIsNone(c.request("server.info", 1)["result"]["claude"]["version"])
        self.claude_version = "2.0.2 (Claude Code)"
        self.assertEqual(
            c.request("server.info", 2)["result"]["claude"]["version"], "2.0.2 (Claude Code)"
        )


class ProjectTests(ServerTestCase):
    def test_create_returns_the_project(self) -> None:
        """project.create answers with every field of the new project."""
        c = self.client()
        reply = c.request("project.create", 1, path=self.path("app"))
        self.assertIs(reply["ok"], True, reply)
        project = reply["result"]["project"]
        self.assertEqual(
            set(project),
            {"path", "id", "session_id", "status", "queue", "pending_permissions",
             "created_at", "last_seq", "epoch", "problem"},
        )
        self.assertEqual(project["path"], self.path("app"))
        self.assertRegex(project["id"], r"^[0-9a-f]+$")
        self.assertIsNone(project["session_id"])
        self.assertEqual(project["status"], "idle")
        self.assertEqual(project["queue"], 0)
        self.assertEqual(project["pending_permissions"], 0)
        self.assertRegex(project["created_at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        self.assertEqual(project["last_seq"], 0)
        self.assertIsInstance(project["epoch"], int)

    def test_create_canonicalizes_the_path(self) -> None:
        """A path spelled with .. and // is stored as its canonical form."""
        c = self.client()
        reply = c.request("project.create", path=self.root + "//lib/../app/")
        self.assertEqual(reply["result"]["project"]["path"], self.path("app"))

    def test_relative_path_is_path_invalid(self) -> None:
        """A relative path is path_invalid."""
        c = self.client()
        self.assertError(c.request("project.create", 1, path="projects/app"), "path_invalid", 1)

    def test_missing_directory_is_path_invalid(self) -> None:
        """A path that does not exist is path_invalid."""
        c = self.client()
        self.assertError(c.request("project.create", path=self.path("nope")), "path_invalid")

    def test_file_is_path_invalid(self) -> None:
        """A path naming a file, not a directory, is path_invalid."""
        with open(self.path("file.txt"), "w"):
            pass
        c = self.client()
        self.assertError(c.request("project.create", path=self.path("file.txt")), "path_invalid")

    def test_outside_roots_is_path_not_allowed(self) -> None:
        """A directory outside the project roots is path_not_allowed."""
        c = self.client()
        self.assertError(c.request("project.create", path=self.outside), "path_not_allowed")

    def test_root_itself_is_path_not_allowed(self) -> None:
        """A project root itself cannot be a project."""
        c = self.client()
        self.assertError(c.request("project.create", path=self.root), "path_not_allowed")

    def test_symlink_out_of_roots_is_path_not_allowed(self) -> None:
        """A symlink inside a root that leads outside it is path_not_allowed."""
        os.symlink(self.outside, self.path("escape"))
        c = self.client()
        self.assertError(c.request("project.create", path=self.path("escape")), "path_not_allowed")

    def test_inside_existing_project_is_path_nested(self) -> None:
        """A directory inside an existing project is path_nested."""
        c = self.client()
        self.create(c, "app")
        self.assertError(c.request("project.create", path=self.path("app/sub")), "path_nested")

    def test_around_existing_project_is_path_nested(self) -> None:
        """A directory containing an existing project is path_nested."""
        c = self.client()
        self.create(c, "app/sub")
        self.assertError(c.request("project.create", path=self.path("app")), "path_nested")

    def test_same_path_again_is_project_exists(self) -> None:
        """Creating the same project twice is project_exists."""
        c = self.client()
        self.create(c, "app")
        self.assertError(c.request("project.create", path=self.path("app")), "project_exists")

    def test_too_many_projects(self) -> None:
        """Past max_projects, project.create is too_many_projects."""
        self.serve(max_projects=1)
        c = self.client()
        self.create(c, "app")
        self.assertError(c.request("project.create", path=self.path("lib")), "too_many_projects")

    def test_path_of_wrong_type_is_bad_request(self) -> None:
        """A path that is not a string is a bad_request."""
        c = self.client()
        for kind in ("project.create", "project.get", "project.delete", "subscribe"):
            self.assertError(c.request(kind, 1, path=42), "bad_request", 1)
        self.assertError(c.request("project.create", 2, path=[self.path("app")]), "bad_request", 2)

    def test_missing_path_is_bad_request(self) -> None:
        """A request that needs a path and has none is a bad_request."""
        c = self.client()
        self.assertError(c.request("project.get", 1), "bad_request", 1)

    def test_failed_create_changes_nothing(self) -> None:
        """A refused project.create leaves the project list and the data directory as they were."""
        c = self.client()
        self.create(c, "app")
        before = c.request("project.list")["result"]
        on_disk = sorted(os.listdir(os.path.join(self.settings.data, "projects")))
        for path in (self.path("app/sub"), self.outside, "rel", self.path("nope"), 5):
            self.assertIs(c.request("project.create", path=path)["ok"], False)
        self.assertEqual(c.request("project.list")["result"], before)
        self.assertEqual(sorted(os.listdir(os.path.join(self.settings.data, "projects"))), on_disk)

    def test_hostile_paths_are_refused_cleanly(self) -> None:
        """Paths with NUL or of huge length get the path errors, never internal."""
        self.serve(max_message_bytes=64 * 1024)
        c = self.client()
        for path in (self.path("app") + "\x00x", "/" + "a" * 5000, "/" + "é/" * 3000):
            self.assertError(c.request("project.create", path=path), "path_invalid")
            self.assertError(c.request("project.get", path=path), "project_not_found")
        self.assertEqual(c.request("project.list")["result"], {"projects": []})

    def test_lone_surrogate_path_is_path_invalid(self) -> None:
        """project.create of a path with a lone surrogate is path_invalid."""
        c = self.client()
        self.assertError(c.request("project.create", path=self.path("\ud800")), "path_invalid")

    def test_lone_surrogate_path_is_project_not_found(self) -> None:
        """Looking up a path with a lone surrogate is project_not_found, not internal."""
        c = self.client()
        self.assertError(c.request("project.get", path=self.path("\ud800")), "project_not_found")

    def test_get_unknown_is_project_not_found(self) -> None:
        """project.get of a path that is no project is project_not_found."""
        c = self.client()
        self.assertError(c.request("project.get", 3, path=self.path("app")), "project_not_found", 3)

    def test_get_by_another_spelling_finds_the_project(self) -> None:
        """project.get accepts a non-canonical spelling of a project's path."""
        c = self.client()
        self.create(c, "app")
        reply = c.request("project.get", path=self.path("lib/../app"))
        self.assertEqual(reply["result"]["project"]["path"], self.path("app"))

    def test_delete_unknown_is_project_not_found(self) -> None:
        """project.delete of a path that is no project is project_not_found."""
        c = self.client()
        self.assertError(c.request("project.delete", path=self.path("app")), "project_not_found")

    def test_delete_forgets_the_project(self) -> None:
        """project.delete answers {} and the project is gone from get and list."""
        c = self.client()
        path = self.create(c, "app")
        reply = c.request("project.delete", 9, path=path)
        self.assertEqual(reply, {"type": "result", "id": 9, "ok": True, "result": {}})
        self.assertError(c.request("project.get", path=path), "project_not_found")
        self.assertEqual(c.request("project.list")["result"], {"projects": []})
        self.assertTrue(c.request("project.create", path=path)["ok"])

    def test_create_again_while_delete_finishes_keeps_the_new_project(self) -> None:
        """A project created again while the old one is still shutting down keeps its data."""
        c = self.client()
        path = self.create(c, "app")
        ending = Deferred()
        # As if its CLI were still taking the kill grace to end.
        self.registry.get(path).shutdown = lambda status="interrupted": ending
        c.send_json({"type": "project.delete", "id": "del", "path": path})
        self.assertEqual(c.messages(), [])
        # Refusing the create until the deletion is over would do as well.
        early = c.request("project.create", path=path)
        if early["ok"]:
            self.publish(path, "new history")
        ending.callback(None)
        self.assertEqual([m["id"] for m in c.messages()], ["del"])
        if not early["ok"]:
            self.assertError(early, "project_exists")
            self.create(c, "app")
            self.publish(path, "new history")
        self.publish(path, "more")
        events = c.request("history", path=path)["result"]["events"]
        self.assertEqual([e["text"] for e in events], ["new history", "more"])

    def test_list_is_sorted_by_path(self) -> None:
        """project.list returns every project, sorted by path."""
        c = self.client()
        for name in ("other", "app", "lib"):
            self.create(c, name)
        projects = c.request("project.list")["result"]["projects"]
        self.assertEqual(
            [p["path"] for p in projects], [self.path(n) for n in ("app", "lib", "other")]
        )


class HistoryTests(ServerTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.c = self.client()
        self.project = self.create(self.c, "app")

    def test_history_pages_oldest_to_newest(self) -> None:
        """history returns the newest page, oldest first, and says there is more."""
        for i in range(1, 4):
            self.publish(self.project, "line %d" % (i,))
        reply = self.c.request("history", "h", path=self.project, limit=2)
        self.assertEqual(reply["id"], "h")
        self.assertIs(reply["ok"], True)
        result = reply["result"]
        self.assertEqual([e["seq"] for e in result["events"]], [2, 3])
        self.assertEqual(result["events"][0]["text"], "line 2")
        self.assertEqual((result["first_seq"], result["has_more"]), (1, True))
        reply = self.c.request("history", path=self.project, before=2)
        self.assertEqual([e["seq"] for e in reply["result"]["events"]], [1])
        self.assertIs(reply["result"]["has_more"], False)

    def test_history_page_larger_than_the_inbound_limit_is_sent(self) -> None:
        """A history page of events larger than max_message_bytes still arrives."""
        for i in range(1, 4):
            self.publish(self.project, "%d" % (i,) * 600)
        reply = self.c.request("history", path=self.project)
        self.assertEqual([e["seq"] for e in reply["result"]["events"]], [1, 2, 3])
        self.assertOpen(self.c)

    def test_history_page_is_bounded_in_bytes_with_at_least_one_event(self) -> None:
        """Pages hold at most history_page_bytes of events, or one larger event; paging goes on with before."""
        self.serve(history_page_bytes=2000)
        self.c = self.client()
        self.project = self.create(self.c, "lib")
        for i in range(1, 5):
            self.publish(self.project, "%d" % (i,) * (2000 if i == 2 else 600))
        pages = []
        before = None
        while True:
            reply = self.c.request("history", path=self.project, before=before)
            seqs = [e["seq"] for e in reply["result"]["events"]]
            pages.append(seqs)
            if not reply["result"]["has_more"]:
                break
            before = seqs[0]
        self.assertEqual(pages, [[3, 4], [2], [1]])

    def test_a_stalled_client_page_waits_and_holds_nothing_more(self) -> None:
        """Paused, the page sends no further line (pings only); it goes on only when the client reads."""
        for i in range(1, 6):
            self.publish(self.project, "%d" % (i,) * 1500)
        self.c.transport.producer.pauseProducing()
        self.c.send_json({"type": "history", "id": 1, "path": self.project})
        sent = len(self.c.transport.value())
        self.clock.advance(100)
        later, rest = wsmemory.decode_frames(self.c.transport.value()[sent:])
        self.assertEqual(rest, b"")
        self.assertEqual({f.opcode for f in later} - {wsmemory.PING}, set())
        sent = len(self.c.transport.value())
        self.c.transport.producer.resumeProducing()
        self.clock.advance(0)
        self.assertGreater(len(self.c.transport.value()), sent + 1500)

    def test_pings_go_out_between_the_fragments_of_a_page(self) -> None:
        """A page is a fragmented message: the server's ping is not held until it ends."""
        for i in range(1, 4):
            self.publish(self.project, "%d" % (i,) * 1500)
        self.c.transport.producer.pauseProducing()
        self.c.send_json({"type": "history", "id": 1, "path": self.project})
        self.clock.advance(self.settings.ping_interval + 1)
        self.assertEqual([f.opcode for f in self.c.new_frames()], [wsmemory.PING])
        self.c.transport.producer.resumeProducing()
        self.clock.advance(0)
        [page] = self.c.messages()
        self.assertEqual([e["seq"] for e in page["result"]["events"]], [1, 2, 3])

    def test_a_client_too_slow_inside_a_page_is_closed_1008(self) -> None:
        """Over the bound for the grace time while a page waits: a close frame between its fragments."""
        self.serve(send_backlog_bytes=500)
        self.c = self.client()
        self.project = self.create(self.c, "lib")
        self.publish(self.project, "x" * 100)
        self.c.transport.producer.pauseProducing()
        # A reply head alone over send_backlog_bytes, unread.
        self.c.send_json({"type": "history", "id": "i" * 600, "path": self.project})
        self.clock.advance(self.settings.send_backlog_grace)
        self.assertClosedWith(self.c, 1008)
        self.assertIn("slow", self.c.close_frames()[0].close_reason)
        self.assertFalse(self.c.transport.disconnecting)

    def test_events_held_behind_a_page_over_the_cap_close_1008(self) -> None:
        """What waits behind a page is bounded by send_backlog_cap: past it, closed with 1008."""
        self.serve(send_backlog_cap=5000)
        self.c = self.client()
        self.project = self.create(self.c, "lib")
        self.c.request("subscribe", path=self.project)
        self.publish(self.project, "first")
        self.c.transport.producer.pauseProducing()
        self.c.send_json({"type": "history", "id": 1, "path": self.project})
        self.publish(self.project, "x" * 3000)
        self.assertEqual(self.c.close_frames(), [])
        self.publish(self.project, "y" * 3000)
        self.assertClosedWith(self.c, 1008)

    def test_a_page_that_drains_arrives_whole_and_what_waited_follows(self) -> None:
        """A paused client that resumes gets the whole page, then the replies sent meanwhile."""
        for i in range(1, 4):
            self.publish(self.project, "%d" % (i,) * 1500)
        self.c.transport.producer.pauseProducing()
        self.c.send_json({"type": "history", "id": 1, "path": self.project})
        self.c.send_json({"type": "server.info", "id": 2})
        for _ in range(5):
            self.c.transport.producer.resumeProducing()
            self.clock.advance(0)
        messages = self.c.messages()
        self.assertEqual([m["id"] for m in messages], [1, 2])
        self.assertEqual([e["seq"] for e in messages[0]["result"]["events"]], [1, 2, 3])

    def test_history_of_empty_project(self) -> None:
        """An empty history is an empty page."""
        reply = self.c.request("history", {"k": 1}, path=self.project)
        self.assertEqual(
            reply,
            {
                "type": "result",
                "id": {"k": 1},
                "ok": True,
                "result": {"events": [], "first_seq": 1, "has_more": False},
            },
        )

    def test_history_limit_out_of_range_is_bad_request(self) -> None:
        """A limit of 0, 1001 or a non-integer is a bad_request."""
        for limit in (0, 1001, -1, "5", 2.5, True):
            self.assertError(
                self.c.request("history", 1, path=self.project, limit=limit), "bad_request", 1
            )

    def test_negative_before_is_bad_request(self) -> None:
        """A negative before is a bad_request."""
        self.assertError(self.c.request("history", path=self.project, before=-1), "bad_request")

    def test_negative_since_is_bad_request(self) -> None:
        """subscribe with a negative since is a bad_request and subscribes nobody."""
        self.assertError(self.c.request("subscribe", path=self.project, since=-1), "bad_request")
        self.publish(self.project, "after")
        self.assertEqual(self.c.messages(), [])


class PromptTests(ServerTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.c = self.client()
        self.project = self.create(self.c, "app")

    def assertNothingQueued(self) -> None:
        project = self.c.request("project.get", path=self.project)["result"]["project"]
        self.assertEqual((project["last_seq"], project["queue"]), (0, 0))

    def test_empty_prompt_is_bad_request(self) -> None:
        """An empty or blank prompt is a bad_request and queues nothing."""
        for text in ("", "   \n\t"):
            reply = self.c.request("prompt", 1, path=self.project, prompt=text)
            self.assertError(reply, "bad_request", 1)
        self.assertNothingQueued()

    def test_missing_or_non_string_prompt_is_bad_request(self) -> None:
        """A prompt field that is absent or not a string is a bad_request."""
        self.assertError(self.c.request("prompt", path=self.project), "bad_request")
        self.assertError(self.c.request("prompt", path=self.project, prompt=["hi"]), "bad_request")
        self.assertNothingQueued()

    def test_prompt_over_the_limit_is_too_large(self) -> None:
        """A prompt over max_prompt_bytes (counted in UTF-8) is too_large."""
        self.assertError(
            self.c.request("prompt", path=self.project, prompt="x" * 101), "too_large"
        )
        # 34 three-byte characters: 34 characters, 102 bytes.
        self.assertError(
            self.c.request("prompt", path=self.project, prompt="✓" * 34), "too_large"
        )
        self.assertNothingQueued()

    def test_unknown_option_is_bad_request(self) -> None:
        """An unknown prompt option is a bad_request and queues nothing."""
        self.assertError(
            self.c.request("prompt", path=self.project, prompt="hi", options={"colour": "red"}),
            "bad_request",
        )
        self.assertError(
            self.c.request("prompt", path=self.project, prompt="hi", options=["model"]),
            "bad_request",
        )
        self.assertNothingQueued()

    def test_prompt_to_unknown_project_is_project_not_found(self) -> None:
        """A prompt for a path that is no project is project_not_found."""
        self.assertError(
            self.c.request("prompt", path=self.path("lib"), prompt="hi"), "project_not_found"
        )

    def test_full_queue_is_queue_full(self) -> None:
        """Past max_queue waiting prompts, a prompt is queue_full."""
        self.serve(max_queue=2)
        c = self.client()
        path = self.create(c, "lib")
        # The clock never turns, so no prompt leaves the queue (or starts a
        # CLI); the first is about to start, so it is not waiting.
        first = c.request("prompt", path=path, prompt="one")
        self.assertEqual(first["result"]["position"], 0)
        self.assertRegex(first["result"]["prompt_id"], r"^p-")
        self.assertEqual(c.request("prompt", path=path, prompt="two")["result"]["position"], 1)
        self.assertEqual(c.request("prompt", path=path, prompt="three")["result"]["position"], 2)
        self.assertError(c.request("prompt", path=path, prompt="four"), "queue_full")

    def test_cancel_with_nothing_running_is_not_running(self) -> None:
        """cancel without a prompt_id, with nothing running, is not_running."""
        self.assertError(self.c.request("cancel", 4, path=self.project), "not_running", 4)

    def test_cancel_unknown_prompt_is_not_found(self) -> None:
        """cancel of a prompt_id that is neither queued nor running is not_found."""
        self.assertError(
            self.c.request("cancel", path=self.project, prompt_id="p-nope"), "not_found"
        )

    def test_permission_respond_to_unknown_request_is_not_found(self) -> None:
        """Answering an unknown permission request is not_found."""
        reply = self.c.request(
            "permission.respond", 5, path=self.project, request_id="r-1", behavior="allow"
        )
        self.assertError(reply, "not_found", 5)

    def test_permission_respond_with_bad_behavior_is_bad_request(self) -> None:
        """A behavior other than allow or deny, or a missing one, is a bad_request."""
        for behavior in ("maybe", 1, None):
            reply = self.c.request(
                "permission.respond", path=self.project, request_id="r-1", behavior=behavior
            )
            self.assertError(reply, "bad_request")
        reply = self.c.request("permission.respond", path=self.project, behavior="deny")
        self.assertError(reply, "bad_request")

    def test_session_reset_publishes_an_event(self) -> None:
        """session.reset answers {} and subscribers get a session.reset event."""
        watcher = self.client()
        self.assertTrue(watcher.request("subscribe", path=self.project)["ok"])
        reply = self.c.request("session.reset", 8, path=self.project)
        self.assertEqual(reply, {"type": "result", "id": 8, "ok": True, "result": {}})
        [message] = watcher.messages()
        self.assertEqual(
            (message["type"], message["event"], message["path"], message["seq"]),
            ("event", "session.reset", self.project, 1),
        )
        project = self.c.request("project.get", path=self.project)["result"]["project"]
        self.assertIsNone(project["session_id"])


class SubscribeTests(ServerTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.c = self.client()
        self.project = self.create(self.c, "app")

    def test_subscribe_reply_shape(self) -> None:
        """subscribe answers with the project and its replay cursors."""
        reply = self.c.request("subscribe", 1, path=self.project)
        self.assertIs(reply["ok"], True, reply)
        result = reply["result"]
        self.assertEqual(
            set(result),
            {"project", "last_seq", "first_seq", "epoch", "running", "pending_permissions"},
        )
        self.assertEqual(result["project"]["path"], self.project)
        self.assertEqual((result["last_seq"], result["first_seq"]), (0, 1))
        self.assertEqual(result["epoch"], result["project"]["epoch"])
        self.assertIsNone(result["running"])
        self.assertEqual(result["pending_permissions"], [])

    def test_subscribe_unknown_is_project_not_found(self) -> None:
        """subscribe to a path that is no project is project_not_found."""
        self.assertError(self.c.request("subscribe", path=self.path("lib")), "project_not_found")

    def test_events_reach_subscribers_only(self) -> None:
        """A published event reaches every subscriber, byte for byte the same, and nobody else."""
        other = self.client()
        bystander = self.client()
        self.c.request("subscribe", path=self.project)
        other.request("subscribe", path=self.project)
        self.publish(self.project, "hello")
        [frame] = self.c.new_frames()
        [same] = other.new_frames()
        self.assertEqual(frame.payload, same.payload)
        message = frame.json()
        self.assertEqual(
            {k: message[k] for k in ("type", "path", "seq", "event", "stream", "text")},
            {
                "type": "event",
                "path": self.project,
                "seq": 1,
                "event": "output",
                "stream": "stdout",
                "text": "hello",
            },
        )
        self.assertEqual(bystander.new_frames(), [])

    def test_unsubscribe_stops_events(self) -> None:
        """After unsubscribe, events no longer arrive."""
        self.c.request("subscribe", path=self.project)
        reply = self.c.request("unsubscribe", 2, path=self.project)
        self.assertEqual(reply, {"type": "result", "id": 2, "ok": True, "result": {}})
        self.publish(self.project, "hello")
        self.assertEqual(self.c.new_frames(), [])

    def test_disconnect_unsubscribes(self) -> None:
        """A connection that goes away is no longer a subscriber."""
        self.c.request("subscribe", path=self.project)
        project = self.registry.get(self.project)
        self.assertEqual(project.subscriber_count, 1)
        self.c.lose()
        self.assertEqual(project.subscriber_count, 0)
        self.publish(self.project, "nobody listens")

    def test_subscribe_since_replays_before_live_events(self) -> None:
        """With since, stored events come after the reply, in order, then live ones, none twice."""
        for i in range(1, 4):
            self.publish(self.project, "old %d" % (i,))
        reply = self.c.request("subscribe", path=self.project, since=0)
        self.assertEqual(reply["result"]["last_seq"], 3)
        # The replay waits for the next reactor turn.
        self.assertEqual(self.c.messages(), [])
        self.publish(self.project, "during replay")
        self.clock.advance(0)
        self.publish(self.project, "live")
        messages = self.c.messages()
        self.assertEqual([m["seq"] for m in messages], [1, 2, 3, 4, 5])
        self.assertEqual(
            [m["text"] for m in messages],
            ["old 1", "old 2", "old 3", "during replay", "live"],
        )

    def test_subscribe_since_skips_what_the_client_has(self) -> None:
        """since=N replays only events after N."""
        for i in range(1, 5):
            self.publish(self.project, "old %d" % (i,))
        self.c.request("subscribe", path=self.project, since=2)
        self.clock.advance(0)
        self.assertEqual([m["seq"] for m in self.c.messages()], [3, 4])

    def test_subscribe_with_old_epoch_replays_from_the_start(self) -> None:
        """A since from another epoch replays everything."""
        for i in range(1, 4):
            self.publish(self.project, "old %d" % (i,))
        epoch = self.registry.get(self.project).epoch
        self.c.request("subscribe", path=self.project, since=2, epoch=epoch - 1)
        self.clock.advance(0)
        self.assertEqual([m["seq"] for m in self.c.messages()], [1, 2, 3])

    def test_live_event_larger_than_the_inbound_limit_is_sent(self) -> None:
        """An event larger than max_message_bytes reaches a live subscriber."""
        self.c.request("subscribe", path=self.project)
        self.publish(self.project, "x" * 5000)
        [message] = self.c.messages()
        self.assertEqual(len(message["text"]), 5000)

    def test_replay_of_an_event_larger_than_the_inbound_limit(self) -> None:
        """A replay sends stored events larger than max_message_bytes, and the ones after them."""
        self.publish(self.project, "x" * 5000)
        self.publish(self.project, "after")
        self.c.request("subscribe", path=self.project, since=0)
        self.clock.advance(0)
        self.assertEqual([m["seq"] for m in self.c.messages()], [1, 2])

    def test_replay_to_a_backlogged_client_waits_for_it(self) -> None:
        """A replay pauses while the client's transport is full and resumes when it drains."""
        for i in range(1, 4):
            self.publish(self.project, "old %d" % (i,))
        self.c.request("subscribe", path=self.project, since=0)
        self.c.transport.producer.pauseProducing()
        self.clock.advance(0)
        self.assertEqual([m["seq"] for m in self.c.messages()], [1])
        self.clock.advance(1)
        self.assertEqual(self.c.messages(), [])
        self.c.transport.producer.resumeProducing()
        self.assertEqual([m["seq"] for m in self.c.messages()], [2, 3])

    def test_leaving_during_a_paused_replay_logs_no_error(self) -> None:
        """A client that disconnects while its replay waits for it is not an error."""
        for i in range(1, 4):
            self.publish(self.project, "old %d" % (i,))
        self.c.request("subscribe", path=self.project, since=0)
        self.c.transport.producer.pauseProducing()
        self.clock.advance(0)
        self.c.lose()
        self.assertEqual(self.flushLoggedErrors(), [])


class SlowClientTests(ServerTestCase):
    """
    settings: send_backlog_bytes=1000, send_backlog_grace=10,
    send_backlog_cap=100000.
    """

    def setUp(self) -> None:
        super().setUp()
        self.c = self.client()
        self.project = self.create(self.c, "app")
        self.c.request("subscribe", path=self.project)
        self.c.new_frames()
        self.producer = self.c.transport.producer
        self.assertIsNotNone(self.producer)

    def fill(self, total: int, size: int = 400) -> None:
        """
        Publish events of about C{size} bytes each until C{total} is passed.
        """
        sent = 0
        while sent <= total:
            self.publish(self.project, "x" * size)
            sent += size

    def test_backlog_over_the_bound_for_the_grace_time_closes_1008(self) -> None:
        """A client that stays over send_backlog_bytes for the grace time is closed with 1008."""
        self.producer.pauseProducing()
        self.fill(1000)
        self.clock.advance(9.9)
        self.assertOpen(self.c)
        self.clock.advance(0.1)
        self.assertClosedWith(self.c, 1008)
        self.assertIn("slow", self.c.close_frames()[0].close_reason)

    def test_no_events_after_the_slow_close(self) -> None:
        """Once closed as slow, a client is sent no more events."""
        self.producer.pauseProducing()
        self.fill(1000)
        self.clock.advance(10)
        self.c.new_frames()
        self.publish(self.project, "more")
        self.assertEqual(self.c.new_frames(), [])

    def test_client_that_resumes_within_grace_stays(self) -> None:
        """A client that drains before the grace time ends is not closed."""
        self.producer.pauseProducing()
        self.fill(1000)
        self.clock.advance(5)
        self.producer.resumeProducing()
        self.clock.advance(20)
        self.assertOpen(self.c)
        self.c.new_frames()
        self.publish(self.project, "still here")
        [message] = self.c.messages()
        self.assertEqual(message["text"], "still here")

    def test_backlog_under_the_bound_is_never_closed(self) -> None:
        """A paused client with less than send_backlog_bytes unsent is not closed."""
        self.producer.pauseProducing()
        self.publish(self.project, "x" * 500)
        self.clock.advance(100)
        self.assertOpen(self.c)

    def test_one_event_bigger_than_the_bound_is_not_fatal(self) -> None:
        """A single event over send_backlog_bytes to a client that keeps up does not close it."""
        self.publish(self.project, "y" * 5000)
        self.producer.pauseProducing()
        self.publish(self.project, "z" * 5000)
        self.clock.advance(5)
        self.producer.resumeProducing()
        self.clock.advance(20)
        self.assertOpen(self.c)
        self.assertEqual(
            [len(m["text"]) for m in self.c.messages()], [5000, 5000]
        )

    def test_passing_the_cap_closes_on_the_next_send(self) -> None:
        """Once the backlog passes send_backlog_cap, the next send closes with 1008 at once."""
        self.producer.pauseProducing()
        self.publish(self.project, "x" * 60000)
        self.publish(self.project, "x" * 60000)
        self.assertOpen(self.c)
        self.publish(self.project, "small")
        self.assertClosedWith(self.c, 1008)

    def test_the_event_that_passes_the_cap_is_not_sent_after_the_close(self) -> None:
        """Closing as slow, the server sends no data frame after its close frame (RFC 6455 5.5.1)."""
        self.producer.pauseProducing()
        self.publish(self.project, "x" * 60000)
        self.publish(self.project, "x" * 60000)
        self.c.new_frames()
        self.publish(self.project, "small")
        frames = self.c.new_frames()
        self.assertEqual([f.opcode for f in frames], [wsmemory.CLOSE])
        self.assertEqual(frames[0].close_code, 1008)

    def test_a_reply_that_passes_the_cap_is_not_sent_after_the_close(self) -> None:
        """A reply hitting the cap closes the connection and is itself not sent."""
        self.producer.pauseProducing()
        self.publish(self.project, "x" * 60000)
        self.publish(self.project, "x" * 60000)
        self.c.new_frames()
        self.c.send_json({"type": "server.info", "id": 1})
        frames = self.c.new_frames()
        self.assertEqual([f.opcode for f in frames], [wsmemory.CLOSE])

    def test_one_event_bigger_than_the_cap_is_sent(self) -> None:
        """A single event over the hard cap is still sent to a client with no backlog."""
        self.producer.pauseProducing()
        self.publish(self.project, "x" * 150000)
        self.producer.resumeProducing()
        self.publish(self.project, "next")
        self.assertOpen(self.c)
        self.assertEqual([m["seq"] for m in self.c.messages()], [1, 2])

    def test_grace_time_restarts_after_a_resume(self) -> None:
        """A new backlog after the client caught up gets a full grace time of its own."""
        self.producer.pauseProducing()
        self.fill(1000)
        self.clock.advance(9)
        self.producer.resumeProducing()
        self.producer.pauseProducing()
        self.fill(1000)
        self.clock.advance(1)
        self.assertOpen(self.c)
        self.clock.advance(9)
        self.assertClosedWith(self.c, 1008)


class KeepaliveTests(ServerTestCase):
    def test_idle_client_that_answers_pings_stays(self) -> None:
        """The server pings an idle connection; one that answers is kept."""
        c = self.client()
        self.clock.advance(self.settings.ping_interval + 1)
        [ping] = c.new_frames()
        self.assertEqual(ping.opcode, wsmemory.PING)
        c.send(wsmemory.encode_frame(PONG, ping.payload))
        self.clock.advance(self.settings.ping_timeout - 1)
        self.assertOpen(c)

    def test_idle_client_that_does_not_answer_is_dropped(self) -> None:
        """A connection that does not answer a ping within the ping timeout is dropped."""
        c = self.client()
        self.clock.advance(self.settings.ping_interval + 1)
        self.assertEqual([f.opcode for f in c.new_frames()], [wsmemory.PING])
        self.clock.advance(self.settings.ping_timeout + 1)
        self.assertTrue(c.transport.disconnecting)

    def test_slow_client_that_ignores_the_close_is_dropped(self) -> None:
        """A client closed as slow that never answers the close is dropped soon after."""
        c = self.client()
        path = self.create(c, "app")
        c.request("subscribe", path=path)
        c.transport.producer.pauseProducing()
        self.publish(path, "x" * 2000)
        self.clock.advance(self.settings.send_backlog_grace)
        self.assertClosedWith(c, 1008)
        self.assertFalse(c.transport.disconnecting)
        self.clock.advance(6)
        self.assertTrue(c.transport.disconnecting)


class PacingTests(ServerTestCase):
    """
    A connection over its request rate (here 1 a second, bursts of 1) is
    paced (L{claudews.limits.Pacer}): its requests wait, it is not read
    from, and it still closes, pings and is closed as any other. The rate
    itself is tested in L{tests.test_security.RequestRateTests}.
    """

    def setUp(self) -> None:
        super().setUp()
        self.serve(request_rate=1.0, request_burst=1, ping_interval=5.0, ping_timeout=5.0)
        self.c = self.client()

    def pipeline(self, count: int, then: bytes = b"") -> None:
        self.c.send(b"".join(
            wsmemory.text_frame(json.dumps({"type": "server.info", "id": i}))
            for i in range(count)
        ) + then)

    def ids(self) -> list[object]:
        return [m["id"] for m in self.c.messages()]

    def reading(self) -> bool:
        return bool(self.c.transport.producerState == "producing")

    def pacer_calls(self) -> list[object]:
        pacer = self.c.protocol._pacer
        return [
            call for call in self.clock.getDelayedCalls()
            if getattr(call.func, "__self__", None) is pacer
        ]

    def test_a_server_close_drops_what_waits_and_reads_the_reply(self) -> None:
        """Closed by the server while requests wait: none of them is answered, and reading resumes for the close handshake."""
        self.pipeline(10)
        self.assertEqual(self.ids(), [0])
        self.assertFalse(self.reading())
        d = self.factory.close_all()
        self.assertClosedWith(self.c, 1001)
        self.assertTrue(self.reading())
        self.assertEqual(self.pacer_calls(), [])
        self.clock.advance(20)
        self.assertEqual(self.c.messages(), [])
        self.c.send(wsmemory.close_frame(1001))
        self.assertTrue(self.c.transport.disconnecting)
        self.c.lose()
        self.successResultOf(d)

    def test_a_close_reply_read_before_the_server_closed_is_found(self) -> None:
        """The client's close frame, read but not yet parsed when the server closes, completes the close handshake."""
        self.pipeline(10, then=wsmemory.close_frame(1000))
        self.factory.close_all()
        self.assertClosedWith(self.c, 1001)
        self.assertFalse(self.c.transport.disconnecting)
        self.clock.advance(0)
        self.assertTrue(self.c.transport.disconnecting)
        self.assertEqual(self.ids(), [0])

    def test_a_client_close_after_its_requests_is_answered_after_them(self) -> None:
        """A close frame read with requests that wait is answered after them, in order."""
        self.pipeline(5, then=wsmemory.close_frame(1000))
        self.assertEqual(self.ids(), [0])
        self.assertEqual(self.c.close_frames(), [])
        self.clock.pump([1.0] * 4)
        self.assertEqual(self.ids(), [1, 2, 3, 4])
        self.assertEqual(self.c.close_frames(), [])
        self.clock.advance(1.0)
        self.assertClosedWith(self.c, 1000)
        self.assertTrue(self.c.transport.disconnecting)

    def test_a_client_close_is_read_once_the_budget_allows(self) -> None:
        """A close frame that comes with requests which spent the budget is answered one refill later, as a request would be."""
        self.pipeline(1, then=wsmemory.close_frame(1000))
        self.assertEqual(self.ids(), [0])
        self.assertEqual(self.c.close_frames(), [])
        self.clock.advance(1.0)
        self.assertClosedWith(self.c, 1000)

    def test_what_is_read_while_paced_waits_unparsed(self) -> None:
        """Past the budget the rest of the read stays bytes until the budget allows, then is parsed and answered in order."""
        self.pipeline(10)
        self.assertEqual(self.ids(), [0])
        self.assertGreater(len(self.c.protocol.data), 0)
        self.clock.pump([1.0] * 9)
        self.assertEqual(self.ids(), list(range(1, 10)))
        self.assertEqual(self.c.protocol.data, b"")

    def test_a_connection_lost_while_paced_leaves_no_timer(self) -> None:
        """The TCP connection ends while requests wait: the pacer's timer is cancelled, nothing more is answered."""
        self.pipeline(10)
        self.assertNotEqual(self.pacer_calls(), [])
        self.c.lose()
        self.assertEqual(self.pacer_calls(), [])
        self.clock.advance(20)
        self.assertEqual(self.c.messages()[1:], [])

    def costly(self) -> None:
        """
        One request in 20 fragments: 19 seconds in debt, with nothing to
        parse meanwhile.
        """
        text = json.dumps({"type": "server.info", "id": "costly"}).encode()
        pieces = [text[i:i + 1] for i in range(19)] + [text[19:]]
        self.c.send(b"".join(
            wsmemory.encode_frame(1 if i == 0 else 0, piece, fin=i == 19)
            for i, piece in enumerate(pieces)
        ))
        self.assertEqual(self.ids(), ["costly"])

    def test_a_ping_timeout_while_paced_waits_for_reading_to_resume(self) -> None:
        """The pong of a paced client is unread, not missing: its ping timeout runs again once reading resumes."""
        self.costly()
        self.clock.pump([1.0] * 12)
        [ping] = self.c.new_frames()
        self.assertEqual(ping.opcode, wsmemory.PING)
        self.assertFalse(self.reading())
        self.assertFalse(self.c.transport.disconnecting)
        self.clock.pump([1.0] * 8)
        self.assertTrue(self.reading())
        self.assertFalse(self.c.transport.disconnecting)
        self.clock.advance(4.9)
        self.c.send(wsmemory.encode_frame(PONG, ping.payload))
        self.clock.advance(4.9)
        self.assertOpen(self.c)

    def test_a_paced_client_that_never_answers_the_ping_is_dropped_after_resuming(self) -> None:
        """A paced client that sends nothing once it is read again is dropped a ping timeout later."""
        self.costly()
        self.clock.pump([1.0] * 20)
        self.assertTrue(self.reading())
        self.assertFalse(self.c.transport.disconnecting)
        self.clock.advance(5.1)
        self.assertTrue(self.c.transport.disconnecting)

    def test_a_paced_client_that_does_not_read_is_closed_as_slow(self) -> None:
        """Paced and not reading what it is sent: closed 1008 as slow, what waits is dropped, its close is read."""
        self.c.transport.producer.pauseProducing()
        self.pipeline(20)
        self.clock.pump([1.0] * 12)
        self.assertClosedWith(self.c, 1008)
        self.assertTrue(self.reading())
        answered = self.ids()
        self.assertLess(len(answered), 20)
        self.clock.advance(20)
        self.assertEqual(self.ids(), [])


class ShutdownTests(ServerTestCase):
    def test_close_all_sends_1001(self) -> None:
        """close_all sends 1001 to every open connection and fires when they are gone."""
        first, second = self.client(), self.client()
        refused = self.connect(token="wrong")
        d = self.factory.close_all()
        for c in (first, second):
            self.assertClosedWith(c, 1001)
        self.assertEqual(refused.close_frames(), [])
        self.assertNoResult(d)
        first.send(wsmemory.close_frame(1001))
        first.lose()
        second.lose()
        self.successResultOf(d)
        self.assertEqual(self.factory.connections, set())

    def test_close_all_with_no_connections_fires_at_once(self) -> None:
        """close_all with nobody connected fires immediately."""
        self.successResultOf(self.factory.close_all())
