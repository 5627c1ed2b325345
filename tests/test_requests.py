"""
Tests for L{claudews.requests}: parsing, dispatch, field checks and what
each handler asks of the projects, against fakes of the declared
L{claudews.interfaces.Server} and L{claudews.interfaces.Project}. The handlers
against a real registry are in L{tests.test_websocket}.
"""

import json
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from claudews import requests
from claudews.config import Settings
from claudews.errors import RequestError
from claudews.permissions import PermissionAnswer
from claudews.interfaces import Subscriber


class _Project:
    def __init__(self, path: str) -> None:
        self.path = path
        self.first_seq = 1
        self.calls: list[tuple[Any, ...]] = []

    def describe(self) -> dict[str, Any]:
        return {"path": self.path}

    def subscribe(self, subscriber: Subscriber, since: int | None, epoch: Any = None) -> dict[str, Any]:
        self.calls.append(("subscribe", subscriber, since, epoch))
        return {"last_seq": 0}

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.calls.append(("unsubscribe", subscriber))

    @property
    def history(self) -> "_Store":
        return _Store(self.calls)

    def submit(self, text: str, options: dict[str, Any], flags: Any) -> dict[str, Any]:
        self.calls.append(("submit", text, options, flags))
        return {"prompt_id": "p-1", "position": 0}

    def cancel(self, prompt_id: str | None) -> list[str]:
        return [prompt_id or "p-1"]

    def reset_session(self) -> None:
        self.calls.append(("reset",))

    def respond_permission(self, answer: PermissionAnswer) -> None:
        self.calls.append(
            ("respond", answer.request_id, answer.behavior, answer.message,
             answer.updated_input, answer.updated_permissions)
        )


class _Store:
    """
    Three stored events, seq 1 to 3, each 10 bytes.
    """

    first_seq = 1

    def __init__(self, calls: list[tuple[Any, ...]]) -> None:
        self.calls = calls
        self.lines = {seq: b'{"seq":%d}' % (seq,) + b" " * 1 for seq in (1, 2, 3)}

    def read_before(self, before: int | None) -> Any:
        self.calls.append(("history", before))
        end = 4 if before is None else before
        return ((seq, self.lines[seq]) for seq in range(end - 1, 0, -1))

    def read_since(self, since: int, upto: int | None = None) -> Any:
        return ((seq, self.lines[seq]) for seq in range(since + 1, (upto or 3) + 1))


class _Sink:
    """
    A connection that keeps what a page sends.
    """

    def __init__(self) -> None:
        self.data = b""
        self.ended = False

    def begin_page(self, stop: Any) -> bool:
        self.ended = False
        return True

    def send_fragment(self, data: bytes) -> bool:
        assert not self.ended
        self.data += data
        return True

    def end_page(self, complete: bool = True) -> None:
        self.ended = complete

    def backlogged(self) -> bool:
        return False


class _Projects:
    def __init__(self) -> None:
        self.projects: dict[str, _Project] = {}
        self.watchers: set[Any] = set()

    def get(self, path: str) -> _Project:
        try:
            return self.projects[path]
        except KeyError:
            raise RequestError("project_not_found", "no project at %s" % (path,))

    def create(self, path: str) -> _Project:
        project = self.projects[path] = _Project(path)
        return project

    def list(self) -> list[_Project]:
        return sorted(self.projects.values(), key=lambda p: p.path)

    def delete(self, project: Any) -> defer.Deferred[Any]:
        del self.projects[project.path]
        return defer.succeed(None)

    def watch(self, watcher: Any) -> Any:
        self.watchers.add(watcher)
        return self.list()

    def unwatch(self, watcher: Any) -> None:
        self.watchers.discard(watcher)


class _Server:
    def __init__(self) -> None:
        self.settings = Settings(project_roots=("/tmp",), max_prompt_bytes=10, history_page_bytes=25)
        self.registry = _Projects()
        self.reactor = Clock()

    def validate_options(self, given: object) -> dict[str, Any]:
        if given:
            raise RequestError("bad_request", "no options here")
        return {}

    def option_flags(self, options: dict[str, Any]) -> Any:
        return ["--flag"]

    def claude_version(self) -> str | None:
        return "2.0.1"


class ParseTests(SynchronousTestCase):
    def test_an_object_is_a_request(self) -> None:
        """A JSON object is returned as is."""
        self.assertEqual(requests.parse(b'{"type": "x", "id": [1]}'), {"type": "x", "id": [1]})

    def test_anything_else_is_bad_request(self) -> None:
        """Invalid or non-strict JSON, or a value that is not an object, is bad_request."""
        for payload in (b"{", b"[1]", b'"x"', b'{"a": NaN}', b"[" * 100000):
            e = self.assertRaises(RequestError, requests.parse, payload)
            self.assertEqual(e.code, "bad_request")


class RequestsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.server = _Server()
        self.connection: Any = _Sink()
        self.requests = requests.Requests(self.server, self.connection)
        self.project = self.server.registry.create("/w/app")

    def ask(self, kind: str, **fields: Any) -> Any:
        return self.requests.dispatch({"type": kind, **fields})

    def error(self, kind: str, **fields: Any) -> str:
        e = self.assertRaises(RequestError, self.ask, kind, **fields)
        return e.code

    def test_a_type_is_required_and_must_be_known(self) -> None:
        """Missing or non-string type is bad_request; an unknown one unknown_type."""
        self.assertEqual(self.error("x"), "unknown_type")
        self.assertRaises(RequestError, self.requests.dispatch, {"type": 7})
        e = self.assertRaises(RequestError, self.requests.dispatch, {})
        self.assertEqual(e.code, "bad_request")

    def test_every_handler_is_dispatched(self) -> None:
        """Each request type has its handler."""
        self.assertEqual(set(requests.HANDLERS), {
            "server.info", "project.create", "project.list", "project.get",
            "project.delete", "subscribe", "unsubscribe", "history", "prompt",
            "cancel", "session.reset", "permission.respond", "watch", "unwatch",
        })

    def test_server_info_says_the_version_and_limits(self) -> None:
        """server.info: protocol 1, the CLI's version, the limits of history pages."""
        info = self.ask("server.info")
        self.assertEqual(info["protocol"], requests.PROTOCOL_VERSION)
        self.assertEqual(info["claude"]["version"], "2.0.1")
        self.assertEqual(info["limits"]["history_limit"], requests.MAX_HISTORY_LIMIT)
        self.assertEqual(info["limits"]["max_prompt_bytes"], 10)

    def test_field_types_are_checked(self) -> None:
        """A path must be a string; seqs non-negative ints, never booleans."""
        self.assertEqual(self.error("project.get", path=1), "bad_request")
        self.assertEqual(self.error("project.get"), "bad_request")
        self.assertEqual(self.error("subscribe", path="/w/app", since=True), "bad_request")
        self.assertEqual(self.error("subscribe", path="/w/app", since=-1), "bad_request")

    def test_subscriptions_end_with_the_connection(self) -> None:
        """unsubscribe_all takes the connection out of every project it subscribed to, once."""
        self.ask("subscribe", path="/w/app", since=3, epoch=5)
        self.assertEqual(self.project.calls, [("subscribe", self.connection, 3, 5)])
        self.requests.unsubscribe_all()
        self.requests.unsubscribe_all()
        self.assertEqual(self.project.calls[1:], [("unsubscribe", self.connection)])

    def test_watching_ends_with_the_connection(self) -> None:
        """watch lists the projects and adds the connection to the feed; closing ends it."""
        reply = self.ask("watch")
        self.assertEqual([p["path"] for p in reply["projects"]], ["/w/app"])
        self.assertIn(self.connection, self.server.registry.watchers)
        self.requests.unsubscribe_all()
        self.assertNotIn(self.connection, self.server.registry.watchers)

    def test_history_limit_defaults_and_bounds(self) -> None:
        """limit must be within 1..1000; the reply is streamed to the connection."""
        self.assertIsNone(self.successResultOf(self.ask("history", path="/w/app", id=9, limit=1)))
        reply = json.loads(self.connection.data)
        self.assertEqual(reply["id"], 9)
        self.assertEqual(reply["result"], {"events": [{"seq": 3}], "first_seq": 1, "has_more": True})
        self.assertEqual(self.project.calls, [("history", None)])
        for limit in (0, 1001):
            self.assertEqual(self.error("history", path="/w/app", limit=limit), "bad_request")

    def test_a_history_page_is_bounded_by_history_page_bytes(self) -> None:
        """With 25 bytes a page, two 10-byte events fit, oldest first, and older ones remain."""
        self.ask("history", path="/w/app", id=1)
        reply = json.loads(self.connection.data)
        self.assertEqual(reply["result"], {"events": [{"seq": 2}, {"seq": 3}], "first_seq": 1, "has_more": True})
        self.connection.data = b""
        self.ask("history", path="/w/app", id=2, before=2)
        reply = json.loads(self.connection.data)
        self.assertEqual(reply["result"], {"events": [{"seq": 1}], "first_seq": 1, "has_more": False})

    def test_a_prompt_is_checked_then_submitted_with_its_flags(self) -> None:
        """Too long is too_large, blank is bad_request; a good one is submitted with its flags."""
        self.assertEqual(self.error("prompt", path="/w/app", prompt="x" * 11), "too_large")
        self.assertEqual(self.error("prompt", path="/w/app", prompt="  "), "bad_request")
        self.assertEqual(self.error("prompt", path="/w/app", prompt="hi", options={"a": 1}), "bad_request")
        self.assertEqual(self.ask("prompt", path="/w/app", prompt="hi")["prompt_id"], "p-1")
        self.assertEqual(self.project.calls, [("submit", "hi", {}, ["--flag"])])

    def test_delete_answers_once_done(self) -> None:
        """project.delete replies {} once the registry has deleted it."""
        self.assertEqual(self.successResultOf(self.ask("project.delete", path="/w/app")), {})
        self.assertEqual(self.error("project.get", path="/w/app"), "project_not_found")

    def test_permission_respond_passes_the_answer_on(self) -> None:
        """permission.respond hands request_id, behavior, message, updated_input and updated_permissions on."""
        rule = {"type": "addRules", "rules": [{"toolName": "Write"}], "behavior": "allow",
                "destination": "session"}
        self.ask("permission.respond", path="/w/app", request_id="r", behavior="allow",
                 updated_input={"a": 1}, updated_permissions=[rule])
        self.assertEqual(self.project.calls, [("respond", "r", "allow", None, {"a": 1}, [rule])])
