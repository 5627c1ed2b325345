"""
Bad input never hurts: property-based tests of the request parser and
dispatcher (in memory, L{tests.wsmemory}), and a fuzz run against a real
twistd over raw sockets.

The rule under test (docs/protocol.rst): every text frame gets exactly one
C{result}, whose error code (if any) is a documented one, or the
connection is closed with a documented close code; the server never
raises, and no request touches anything outside DATA and the projects.

Hypothesis runs derandomized (the same examples every run) and the fuzz
uses a fixed seed, so a failure is reproducible; the whole module stays
well under the two minutes CI allows it.
"""

import json
import os
import random
import socket
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from claudews.errors import CODES
from claudews.websocket import HANDLERS
from tests import wsmemory
from tests.test_websocket import ServerTestCase
from tests.rawclient import Raw
from tests.wsmemory import CLOSE, TEXT

#: Error codes a request may get. C{internal} is documented too, but only
#: for server faults and shutdown: bad input must never cause it.
EXPECTED_CODES = CODES - {"internal", "unauthorized"}

#: Close codes the server may send after a frame that breaks the rules:
#: 1002 (RFC 6455 violations, from Autobahn), 1003, 1007, 1008, 1009.
CLOSE_CODES = {1002, 1003, 1007, 1008, 1009}

HANDLERS_TYPES = sorted(HANDLERS)

FUZZ_SETTINGS = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=10,
)


class PropertyTests(ServerTestCase):
    """
    One server for all the examples of a test (projects and history build
    up as they go); each example gets a connection of its own.
    """

    def setUp(self) -> None:
        super().setUp()
        self.serve(max_message_bytes=64 * 1024)
        os.symlink(self.outside, self.path("escape"))
        c = self.client()
        self.project = self.create(c, "app")
        c.lose()
        self.paths = [
            self.project,
            self.project + "/",
            self.project + "/../app",
            self.path("lib"),
            self.path("app/sub"),
            self.path("escape"),
            self.path("nope"),
            self.root,
            self.outside,
            "/",
            "",
            ".",
            "..",
            "app",
            self.project + "\x00",
            self.project + "\ud800",
            "/" + "x" * 5000,
        ]

    def exchange(self, payload: bytes) -> tuple[list[dict], list[wsmemory.Frame]]:
        """
        Send one text frame on a new connection: the replies it got and
        the close frames.
        """
        c = self.client()
        try:
            c.send(wsmemory.encode_frame(TEXT, payload))
            frames = c.new_frames()
        finally:
            c.lose()
        replies = []
        for frame in frames:
            if frame.opcode == TEXT:
                message = json.loads(frame.payload)
                if message.get("type") == "result":
                    replies.append(message)
        self.assertEqual(self.flushLoggedErrors(), [])
        return replies, [f for f in frames if f.opcode == CLOSE]

    def assertOneReply(self, payload: bytes, request_id: object) -> dict:
        replies, closes = self.exchange(payload)
        self.assertEqual(closes, [])
        self.assertEqual(len(replies), 1, replies)
        [reply] = replies
        self.assertEqual(reply["id"], request_id)
        self.assertIsInstance(reply["ok"], bool)
        if not reply["ok"]:
            self.assertIn(reply["error"]["code"], EXPECTED_CODES, reply)
            self.assertIsInstance(reply["error"]["message"], str)
        return reply

    @FUZZ_SETTINGS
    @given(value=json_values)
    def test_any_json_value_gets_exactly_one_reply(self, value: object) -> None:
        """Any JSON value as a frame gets one reply, with a documented code if it fails."""
        request_id = value.get("id") if isinstance(value, dict) else None
        self.assertOneReply(json.dumps(value).encode("utf-8"), request_id)

    @FUZZ_SETTINGS
    @given(data=st.data())
    def test_any_request_gets_exactly_one_reply(self, data: st.DataObject) -> None:
        """A request of any type, with fields of any shape and tricky paths, gets one reply."""
        path = st.sampled_from(self.paths) | json_values
        fields = data.draw(st.fixed_dictionaries(
            {"type": st.sampled_from(HANDLERS_TYPES) | st.text(max_size=12)},
            optional={
                "id": json_values,
                "path": path,
                "since": st.integers(-2, 10) | json_values,
                "before": st.integers(-2, 10) | json_values,
                "limit": st.integers(-1, 1002) | json_values,
                "epoch": st.integers() | json_values,
                "prompt": st.text(max_size=200) | json_values,
                "options": st.dictionaries(
                    st.sampled_from(["model", "permission_mode", "effort", "allowed_tools",
                                     "max_budget_usd", "colour"]),
                    json_values | st.sampled_from(["bypassPermissions", "--x", "high"]),
                    max_size=3,
                ) | json_values,
                "prompt_id": st.text(max_size=10) | json_values,
                "request_id": st.text(max_size=10) | json_values,
                "behavior": st.sampled_from(["allow", "deny"]) | json_values,
                "message": json_values,
                "updated_input": json_values,
            },
        ))
        reply = self.assertOneReply(json.dumps(fields).encode("utf-8"), fields.get("id"))
        if fields["type"] not in HANDLERS_TYPES:
            self.assertEqual(reply["error"]["code"], "unknown_type" if isinstance(
                fields["type"], str) else "bad_request")
        # Nothing the fuzz sends may create a project outside the roots.
        for project in self.registry.list():
            self.assertTrue(project.path.startswith(self.root + os.sep), project.path)

    @FUZZ_SETTINGS
    @given(payload=st.binary(max_size=200))
    def test_any_bytes_get_one_reply_or_close_1007(self, payload: bytes) -> None:
        """Any bytes in a text frame: valid UTF-8 gets one reply, anything else a 1007 close."""
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError:
            replies, closes = self.exchange(payload)
            self.assertEqual(replies, [])
            self.assertEqual([f.close_code for f in closes], [1007])
        else:
            request_id = None
            try:
                message = json.loads(payload)
                if isinstance(message, dict):
                    request_id = message.get("id")
            except ValueError:
                pass
            self.assertOneReply(payload, request_id)


# -- a real server


def opened(server):
    """A raw connection whose handshake went through."""
    raw = Raw(server)
    status = raw.status()
    assert status == 101, status
    return raw


def probe_frame():
    return wsmemory.text_frame(json.dumps({"type": "server.info", "id": "probe"}))


def is_probe_reply(frame):
    return frame.opcode == TEXT and json.loads(frame.payload).get("id") == "probe"


def random_frame(rng):
    """
    One frame of random shape, with as many payload bytes as its header
    announces (so the probe after it is read as a frame of its own), and
    its opcode.
    """
    opcode = rng.choice([0x0, 0x1, 0x2, 0x3, 0x7, 0x8, 0x9, 0xA, 0xB, 0xF, 0x1, 0x1])
    size = rng.choice([0, 1, 2, 5, 125, 126, 127, 200, 70000])
    kind = rng.random()
    if kind < 0.3:
        payload = bytes(rng.getrandbits(8) for _ in range(min(size, 300)))
    elif kind < 0.6:
        payload = json.dumps({"type": rng.choice(["server.info", "x", "prompt"]),
                              "id": rng.random()}).encode()
    else:
        payload = ("é" * size).encode()[:size]
    fin = rng.random() < 0.8
    mask = rng.random() < 0.9
    frame = bytearray(wsmemory.encode_frame(opcode, payload, fin=fin, mask=mask))
    if rng.random() < 0.1:
        frame[0] |= rng.choice([0x40, 0x20, 0x10])
    return bytes(frame), opcode


@pytest.fixture
def fuzz_server(make_server, tmp_path):
    config = tmp_path / "fuzz.toml"
    # Many refused handshakes and short-lived connections come from one
    # address here: the limits on those have their own tests. Thousands of
    # requests at once are paced at the request rate: a faster one keeps
    # the run short.
    config.write_text(
        "max-failed-handshakes = 100000\nmax-connections-per-address = 1000\n"
        "max-connections = 1000\nrequest-rate = 1000.0\n"
    )
    return make_server("--config", str(config))


def snapshot(top, skip):
    """
    Every file and directory under C{top} (not following symlinks) with
    its size and modification time, except under the paths in C{skip}.
    """
    seen = {}
    for directory, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if os.path.join(directory, d) not in skip]
        for name in dirs + files:
            path = os.path.join(directory, name)
            st_ = os.lstat(path)
            seen[path] = (st_.st_mode, st_.st_size, st_.st_mtime_ns)
    return seen


@pytest.mark.integration
def test_fuzz_a_real_server(fuzz_server):
    """Random, malformed, huge and hostile input leaves the server up and the disk untouched."""
    server = fuzz_server
    rng = random.Random(20261126)
    c = server.connect()
    target = server.project_dir("target")
    bystander = server.project_dir("bystander")
    c.ok("project.create", path=target)
    by = c.ok("project.create", path=bystander)["project"]
    # A little history for the bystander, that must not change.
    c.ok("subscribe", path=bystander)
    c.finished(c.ok("prompt", path=bystander, prompt="hello")["prompt_id"])
    by_seq = c.ok("project.get", path=bystander)["project"]["last_seq"]
    outside = os.path.join(server.tmp, "outside")
    os.makedirs(outside)
    os.symlink(outside, os.path.join(server.root, "escape"))
    os.symlink(target, os.path.join(server.root, "alias"))
    os.symlink(os.path.join(server.root, "loop"), os.path.join(server.root, "loop"))
    os.mkdir(os.path.join(server.root.encode(), b"bad-\xff-name"))
    by_dir = os.path.join(server.data, "projects", by["id"])
    # The CLI keeps its sessions in HOME; the target's prompts may run it.
    skip = {server.data, target, os.path.join(server.home, ".fake-claude")}
    before = snapshot(server.tmp, skip)
    by_before = snapshot(by_dir, set())
    c.close()

    # Frames of every shape, one connection each, each followed by a
    # probe: the server answers the probe or closes with a known code.
    for _ in range(300):
        raw = opened(server)
        frame, opcode = random_frame(rng)
        raw.send(frame + probe_frame())
        end = raw.read_until(is_probe_reply)
        # A client's own close frame is answered whatever its code.
        if end is not None and end.opcode == CLOSE and opcode != 0x8:
            assert end.close_code in CLOSE_CODES, (end, frame[:40])
        raw.close()
        # The server logs to a pipe: a full pipe would stall it.
        server.drain_log()

    def closed_with(code, data):
        raw = opened(server)
        raw.send(data)
        end = raw.read_until(lambda f: False)
        raw.close()
        assert end is not None and end.opcode == CLOSE and end.close_code == code, end

    closed_with(1007, wsmemory.text_frame(b'{"type": "\xff\xfe"}'))
    closed_with(1007, wsmemory.text_frame(b'{"type": "\xed\xa0\x80"}'))
    closed_with(1003, wsmemory.binary_frame(b'{"type": "server.info"}'))
    closed_with(1009, wsmemory.text_frame(b"x" * (1024 * 1024 + 1)))
    # A header announcing a terabyte: refused before any of it arrives.
    closed_with(1009, b"\x81\xff" + struct.pack("!Q", 1 << 40) + b"mask" + b"x" * 1000)
    closed_with(1002, wsmemory.encode_frame(0x1, b"{}", mask=False))
    closed_with(1002, wsmemory.encode_frame(0x9, b"x" * 126))

    # Truncated frames and handshakes, then the peer goes away.
    for data in (b"\x81", b"\x81\xfe\x01", b"\x81\x85abcd\x00", b"\x81\xff" + b"\x00" * 4):
        raw = opened(server)
        raw.send(data)
        raw.close()
    garbage = bytes(rng.getrandbits(8) for _ in range(500))
    for data in (b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1", garbage):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.sendall(data)
        sock.close()

    # Thousands of requests at once: paced, never refused, every one
    # answered in order, and the connection stays open.
    raw = opened(server)
    raw.send(b"".join(
        wsmemory.text_frame(json.dumps({"type": "project.list", "id": i})) for i in range(3000)
    ))
    end = raw.read_until(lambda f: f.opcode == TEXT and json.loads(f.payload)["id"] == 2999)
    raw.close()
    assert end is not None and end.opcode == TEXT, end
    replies = [json.loads(f.payload) for f in raw.frames if f.opcode == TEXT]
    assert [r["id"] for r in replies] == list(range(3000))
    assert all(r["ok"] for r in replies)

    # Hostile paths and prompts, a connection per path.
    hostile = [
        "/", "", ".", "..", "target", server.root, server.root + "/..",
        server.root + "/../outside", target + "/..", target + "/../../outside",
        os.path.join(server.root, "escape"), os.path.join(server.root, "escape") + "/",
        os.path.join(server.root, "alias"), os.path.join(server.root, "loop"),
        os.path.join(server.root, "bad-\udcff-name"), target + "\x00/etc", "\x00",
        "/" + "a" * 300000, target + "/" + "x" * 5000, "//" + target, "/etc", "/proc/self/cwd",
        bystander + "/../target/./../target", os.path.join(server.tmp, "data"),
    ]
    for path in hostile:
        c = server.connect()
        for kind in ("project.create", "project.get", "subscribe", "history", "prompt",
                     "cancel", "session.reset", "unsubscribe", "project.delete"):
            reply = c.request(kind, path=path, prompt="x")
            if not reply["ok"]:
                assert reply["error"]["code"] in EXPECTED_CODES, (kind, path, reply)
                continue
            # Only another spelling of the target may name a project.
            assert kind != "project.create", (path, reply)
            assert os.path.realpath(path) == target, (kind, path, reply)
            if kind == "prompt":
                c.request("cancel", path=target, prompt_id=reply["result"]["prompt_id"])
            if kind == "project.delete":
                c.ok("project.create", path=target)
        c.close()
        server.drain_log()
    c = server.connect()
    for text, options in (
        ("$(touch %s/PWNED) `id` ; rm -rf ~ | --model x" % (server.tmp,), None),
        ("--dangerously-skip-permissions", None),
        ("hi", {"permission_mode": "bypassPermissions"}),
        ("hi", {"model": "--settings=/etc/passwd"}),
        ("hi", {"allowed_tools": ["Bash", "--add-dir", "/"]}),
        ("hi", {"append_system_prompt": "x\x00y"}),
    ):
        reply = c.request("prompt", path=target, prompt=text, options=options or {})
        if reply["ok"]:
            c.ok("subscribe", path=target)
            finished = c.finished(reply["result"]["prompt_id"])
            # The fake CLI fails on any argument it does not know.
            assert finished["status"] == "completed", finished
        else:
            assert reply["error"]["code"] == "bad_request", reply
    assert not os.path.exists(os.path.join(server.tmp, "PWNED"))

    # Still up, still answering, nothing written where it should not be.
    c.close()
    c = server.connect()
    assert c.ok("server.info")["protocol"] == 1
    projects = {p["path"] for p in c.ok("project.list")["projects"]}
    assert projects == {target, bystander}
    assert c.ok("project.get", path=bystander)["project"]["last_seq"] == by_seq
    c.close()
    assert snapshot(server.tmp, skip) == before
    assert snapshot(by_dir, set()) == by_before
    server.stop_cleanly()
    log = "".join(server.log)
    assert "Unhandled" not in log and "Traceback" not in log, log[-3000:]
