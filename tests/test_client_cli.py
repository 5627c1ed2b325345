"""
The terminal client without a server: arguments and token, handshake
refusals mapped to exit statuses, the connection's resume with since on
a fake clock, in-place permission answers, the prompt flow and Ctrl-C.
"""

import io
import os

import pytest
from rich.console import Console
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from claudews.client import errors
from claudews.client.cli import build_parser, exit_with, is_loopback, resolve_token
from claudews.client.commands import Context
from claudews.client.connection import Connection, Subscription, make_factory
from claudews.client.follow import Follower, View
from claudews.client.once import Once
from claudews.client.prompt import PromptRun
from claudews.client.render import Renderer
from claudews.client.terminal import Asker


class FakeReactor(Clock):
    """A clock that also takes readers, triggers and calls from threads."""

    def __init__(self):
        super().__init__()
        self.readers = []

    def addSystemEventTrigger(self, *args, **kwargs):
        pass

    def callFromThread(self, f, *args):
        f(*args)

    def addReader(self, reader):
        self.readers.append(reader)

    def removeReader(self, reader):
        self.readers.remove(reader)


def parse(*argv):
    return build_parser().parse_args(list(argv))


# -- arguments and token


def test_help_lists_every_exit_status(capsys):
    """--help documents the exit statuses."""
    with pytest.raises(SystemExit) as exit:
        parse("--help")
    assert exit.value.code == 0
    out = capsys.readouterr().out
    for status, _ in errors.EXIT_STATUSES:
        assert "\n  %3d  " % status in out


def test_usage_error_is_one_line_and_status_2(capsys):
    """A bad command line says so in one line, exit status 2."""
    with pytest.raises(SystemExit) as exit:
        parse("prompt")
    assert exit.value.code == errors.USAGE
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_token_option_wins_over_environment_and_file(tmp_path):
    """--token, then CLAUDEWS_TOKEN, then the local token file."""
    (tmp_path / "auth_token").write_text("from-file\n")
    data = ["--data", str(tmp_path)]
    assert resolve_token(parse(*data, "--token", "opt", "projects"), {"CLAUDEWS_TOKEN": "env"}) == "opt"
    assert resolve_token(parse(*data, "projects"), {"CLAUDEWS_TOKEN": "env"}) == "env"
    assert resolve_token(parse(*data, "projects"), {}) == "from-file"


def test_token_file_is_read_only_for_a_loopback_server(tmp_path):
    """The local token is never sent to another machine."""
    (tmp_path / "auth_token").write_text("secret")
    args = parse("--data", str(tmp_path), "--url", "wss://example.org/ws", "projects")
    assert resolve_token(args, {}) is None
    assert resolve_token(parse("--data", str(tmp_path / "none"), "projects"), {}) is None


@pytest.mark.parametrize("url, loopback", [
    ("ws://127.0.0.1:8765/ws", True), ("ws://localhost:1/ws", True),
    ("ws://[::1]:8765/ws", True), ("ws://127.1.2.3/ws", True),
    ("wss://example.org/ws", False), ("ws://10.0.0.1:8765/ws", False),
])
def test_loopback_urls(url, loopback):
    assert is_loopback(url) is loopback


# -- handshake refusals


class ClientTransport(StringTransport):
    """A TCP transport as Autobahn's client uses it (it unregisters freely)."""

    def unregisterProducer(self):
        self.producer = None


def handshake(response, token="tok"):
    """Run Autobahn's client protocol against a canned HTTP response."""
    factory = make_factory("ws://127.0.0.1:8765/ws", token, FakeReactor())
    protocol = factory.buildProtocol(None)
    transport = ClientTransport()
    protocol.makeConnection(transport)
    request = transport.value()
    outcome = []
    protocol.opened.addBoth(outcome.append)
    protocol.dataReceived(response)
    protocol.connectionLost(Failure(ConnectionDone()))
    return request, outcome[0]


def test_handshake_sends_the_token_and_no_origin():
    """The token goes in a Bearer header; no Origin header is sent."""
    request, _ = handshake(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
    assert b"\r\nAuthorization: Bearer tok\r\n" in request
    assert b"origin:" not in request.lower()


@pytest.mark.parametrize("status, reason, exit_status", [
    (401, b"Unauthorized", errors.UNAUTHORIZED),
    (403, b"Forbidden", errors.FORBIDDEN),
    (429, b"Too Many Requests", errors.TOO_MANY),
    (503, b"Service Unavailable", errors.REFUSED),
    (404, b"Not Found", errors.REFUSED),
])
def test_refused_handshake_maps_to_its_exit_status(status, reason, exit_status):
    """Each HTTP refusal of the handshake has its own exit status and message."""
    _, outcome = handshake(b"HTTP/1.1 %d %s\r\nContent-Length: 0\r\n\r\n" % (status, reason))
    assert isinstance(outcome, Failure)
    error = outcome.value
    assert isinstance(error, errors.HandshakeRefused)
    assert (error.http_status, error.status) == (status, exit_status)
    assert "HTTP %d" % status in error.message


def test_429_from_a_server_ends_the_client_with_status_6_in_one_line(capsys):
    """A 429 (claudews no longer sends one; a proxy in front may): status 6, one line on stderr."""
    _, outcome = handshake(b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(SystemExit) as exit:
        exit_with(outcome)
    assert exit.value.code == errors.TOO_MANY == 6
    err = capsys.readouterr().err
    assert err.startswith("claudews-client: ") and "HTTP 429" in err
    assert len(err.splitlines()) == 1


def test_status_is_also_read_from_autobahns_reason():
    """Without a status line, Autobahn's failure text still gives the status."""
    reason = "WebSocket connection upgrade failed [403]: Forbidden"
    assert errors.handshake_status(None, reason) == 403
    assert errors.handshake_status("HTTP/1.1 101 Switching Protocols", "other") is None


def test_error_is_one_line_on_stderr_with_its_status(capsys):
    """A client error ends the client with its line and status, never a traceback."""
    with pytest.raises(SystemExit) as exit:
        exit_with(Failure(errors.RequestFailed("project_not_found", "no project at '/x'")))
    assert exit.value.code == errors.PROTOCOL_ERROR
    assert capsys.readouterr().err == "claudews-client: project_not_found: no project at '/x'\n"
    with pytest.raises(SystemExit) as exit:
        exit_with(Failure(ZeroDivisionError("boom")))
    assert exit.value.code == errors.INTERNAL
    assert len(capsys.readouterr().err.splitlines()) == 1


def test_success_exits_with_the_commands_status():
    """0 ends normally; a prompt that did not complete exits 1."""
    exit_with(0)
    with pytest.raises(SystemExit) as exit:
        exit_with(errors.PROMPT_NOT_COMPLETED)
    assert exit.value.code == 1


# -- the connection: requests, resume with since


class FakeProtocol:
    def __init__(self):
        self.opened = succeed(None)
        self.closed = Deferred()
        self.sent = []
        self.on_frame = None

    def send_frame(self, frame):
        self.sent.append(frame)

    def sendClose(self, code):
        self.closed.callback(errors.ConnectFailed("closed"))

    def reply(self, result, ok=True):
        request = self.sent[-1]
        frame = {"type": "result", "id": request["id"], "ok": ok}
        frame["result" if ok else "error"] = result
        self.on_frame(frame)


class FakeConnection(Connection):
    """A Connection whose attempts to connect are scripted."""

    def __init__(self, outcomes, **kwargs):
        super().__init__("ws://127.0.0.1:8765/ws", "tok", FakeReactor(), **kwargs)
        self.clock = self._reactor
        self.outcomes = outcomes

    def _attempt(self):
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            d = Deferred()
            d.errback(outcome)
            return d
        outcome.on_frame = self._received
        return succeed(outcome)


def event(seq, **fields):
    return dict({"type": "event", "path": "/w", "seq": seq, "event": "output"}, **fields)


def test_request_reply_by_id_and_error():
    """Replies find their request by id; ok false fails with the error code."""
    first = FakeProtocol()
    conn = FakeConnection([first])
    conn.open()
    results = []
    conn.request("project.list").addCallback(results.append)
    failed = conn.request("project.get", path="/x")
    failed.addErrback(results.append)
    first.on_frame({"type": "result", "id": 1, "ok": True, "result": {"projects": []}})
    first.on_frame({"type": "result", "id": 2, "ok": False,
                    "error": {"code": "project_not_found", "message": "no project at '/x'"}})
    assert results[0] == {"projects": []}
    assert results[1].value.message == "project_not_found: no project at '/x'"


def test_dropped_connection_resumes_with_since_nothing_missed_nothing_doubled():
    """After a drop, subscribe comes again with since and epoch; repeats are dropped."""
    first, second = FakeProtocol(), FakeProtocol()
    notes = []
    conn = FakeConnection([first, second], on_status=notes.append)
    conn.open()
    seen = []
    conn.subscribe("/w", seen.append)
    assert first.sent[-1] == {"type": "subscribe", "path": "/w", "id": 1}
    first.reply({"last_seq": 2, "epoch": 7})
    for seq in (3, 4):
        first.on_frame(event(seq))
    first.closed.callback(errors.ConnectFailed("connection lost (x)"))
    assert notes == ["connection lost (x); reconnecting"]
    conn.clock.advance(0.25)
    assert second.sent[-1] == {"type": "subscribe", "path": "/w", "since": 4, "epoch": 7, "id": 2}
    second.reply({"last_seq": 5, "epoch": 7})
    for seq in (4, 5):
        second.on_frame(event(seq))
    assert [e["seq"] for e in seen] == [3, 4, 5]
    assert notes[-1] == "reconnected"


def test_new_epoch_replays_the_new_history_from_its_start():
    """A project deleted and created again meanwhile: its new events all come."""
    first, second = FakeProtocol(), FakeProtocol()
    conn = FakeConnection([first, second])
    conn.open()
    seen = []
    conn.subscribe("/w", seen.append)
    first.reply({"last_seq": 9, "epoch": 7})
    first.closed.callback(errors.ConnectFailed("lost"))
    conn.clock.advance(0.25)
    second.reply({"last_seq": 2, "epoch": 8})
    second.on_frame(event(1))
    second.on_frame(event(2))
    assert [e["seq"] for e in seen] == [1, 2]


def test_reconnect_gives_up_after_its_attempts():
    """A server that stays away: a few attempts with backoff, then one error."""
    first = FakeProtocol()
    conn = FakeConnection([first] + [errors.ConnectFailed("cannot connect")] * 6,
                          delays=(1, 2, 4, 8, 16, 32))
    conn.open()
    conn.subscribe("/w", lambda frame: None)
    first.reply({"last_seq": 0, "epoch": 1})
    lost = conn.lost.when()
    outcome = []
    lost.addErrback(outcome.append)
    first.closed.callback(errors.ConnectFailed("lost"))
    for delay in (1, 2, 4, 8, 16):
        conn.clock.advance(delay)
        assert not outcome
    conn.clock.advance(32)
    assert "gave up after 6 attempts" in outcome[0].value.message
    assert outcome[0].value.status == errors.CANNOT_CONNECT


def test_reconnect_stops_at_a_refused_token():
    """A token refused on reconnect is not retried."""
    first = FakeProtocol()
    conn = FakeConnection([first, errors.HandshakeRefused(401)])
    conn.open()
    conn.subscribe("/w", lambda frame: None)
    first.reply({"last_seq": 0, "epoch": 1})
    outcome = []
    conn.lost.when().addErrback(outcome.append)
    first.closed.callback(errors.ConnectFailed("lost"))
    conn.clock.advance(0.25)
    assert outcome[0].value.status == errors.UNAUTHORIZED


def test_requests_in_flight_fail_when_the_connection_drops():
    """A request whose reply cannot come fails instead of hanging."""
    first = FakeProtocol()
    conn = FakeConnection([first])
    conn.open()
    outcome = []
    conn.request("project.list").addErrback(outcome.append)
    first.closed.callback(errors.ConnectFailed("lost"))
    assert outcome[0].value.status == errors.CANNOT_CONNECT


def test_subscription_without_since_starts_at_the_reply():
    """Subscribing without since takes only events after the reply's last_seq."""
    subscription = Subscription("/w", lambda frame: None)
    subscription.subscribed({"last_seq": 5, "epoch": 1})
    assert not subscription.accept(event(5))
    assert subscription.accept(event(6))
    assert subscription.request() == {"type": "subscribe", "path": "/w", "since": 6, "epoch": 1}


# -- permissions asked in place


def console():
    out = io.StringIO()
    return Console(file=out, force_terminal=False, width=200, soft_wrap=True), out


def asker():
    reactor = FakeReactor()
    read, write = os.pipe()
    answers = []

    def respond(request_id, behavior, message):
        answers.append((request_id, behavior, message))
        return succeed({})

    shown, out = console()
    return Asker(reactor, shown, respond, None, fd=read), reactor, write, answers, out


def type_line(reactor, write, text):
    os.write(write, text.encode() + b"\n")
    reactor.readers[0].doRead()


def test_permission_is_asked_and_allowed_in_place():
    """A person types 'a': the request is allowed."""
    ask, reactor, write, answers, out = asker()
    ask.ask({"request_id": "r1", "tool_name": "Write"})
    assert "Allow Write? [a]llow / [d]eny / deny with [m]essage:" in out.getvalue()
    type_line(reactor, write, "a")
    assert answers == [("r1", "allow", None)]
    assert reactor.readers == []


def test_permission_denied_with_a_message_then_the_next_is_asked():
    """'m' asks for the reason; queued requests are asked one after another."""
    ask, reactor, write, answers, out = asker()
    ask.ask({"request_id": "r1", "tool_name": "Write"})
    ask.ask({"request_id": "r2", "tool_name": "Bash"})
    type_line(reactor, write, "m")
    type_line(reactor, write, "not that file")
    assert answers == [("r1", "deny", "not that file")]
    assert "Allow Bash?" in out.getvalue()
    type_line(reactor, write, "what")
    type_line(reactor, write, "d")
    assert answers[-1] == ("r2", "deny", None)


def test_request_answered_elsewhere_stops_being_asked():
    """permission.resolved from another client ends the question."""
    ask, reactor, write, answers, out = asker()
    ask.ask({"request_id": "r1", "tool_name": "Write"})
    ask.resolved("r1")
    assert reactor.readers == []
    assert answers == []


# -- the prompt flow


class ScriptedConnection:
    """Just enough of a Connection for PromptRun: replies by hand."""

    def __init__(self):
        self.lost = Once()
        self.requests = []
        self.on_frame = None

    def subscribe(self, path, on_frame, since=None):
        self.on_frame = on_frame
        return succeed({"last_seq": 0, "epoch": 1, "pending_permissions": []})

    def request(self, type, **fields):
        d = Deferred()
        self.requests.append((type, fields, d))
        return d


def prompt_run():
    shown, out = console()
    reactor = FakeReactor()
    view = View(shown, Renderer(shown, markdown=False, echo_prompts=False))
    conn = ScriptedConnection()
    run = PromptRun(Context(reactor=reactor, view=view, interactive=False), conn, "/w", "hi")
    outcome = []
    ensureDeferred(run.run()).addBoth(outcome.append)
    return run, conn, outcome, out


def finished(status, prompt_id="p-1"):
    return {"type": "event", "path": "/w", "seq": 9, "event": "prompt.finished",
            "prompt_id": prompt_id, "status": status, "duration_ms": 10, "cost_usd": 0,
            "num_turns": 1, "error": None}


def test_prompt_follows_only_its_own_prompt_and_exits_0_when_completed():
    """Events of other prompts are not shown; completed exits 0."""
    run, conn, outcome, out = prompt_run()
    conn.on_frame({"type": "event", "seq": 1, "event": "output", "prompt_id": "p-1",
                   "stream": "stderr", "text": "mine, before the reply"})
    conn.on_frame({"type": "event", "seq": 2, "event": "output", "prompt_id": "p-0",
                   "stream": "stderr", "text": "someone else's"})
    conn.requests[0][2].callback({"prompt_id": "p-1", "position": 0})
    conn.on_frame(finished("completed"))
    assert outcome == [errors.OK]
    assert "mine, before the reply" in out.getvalue()
    assert "someone else's" not in out.getvalue()
    assert "✓ completed" in out.getvalue()


def test_failed_prompt_exits_1():
    run, conn, outcome, out = prompt_run()
    conn.requests[0][2].callback({"prompt_id": "p-1", "position": 0})
    conn.on_frame(finished("failed"))
    assert outcome == [errors.PROMPT_NOT_COMPLETED]


def test_ctrl_c_cancels_the_prompt_on_the_server():
    """The first Ctrl-C sends cancel and waits for the prompt to end."""
    run, conn, outcome, out = prompt_run()
    conn.requests[0][2].callback({"prompt_id": "p-1", "position": 0})
    run.pressed(1)
    assert conn.requests[-1][:2] == ("cancel", {"path": "/w", "prompt_id": "p-1"})
    assert "(Ctrl-C again: exit without waiting)" in out.getvalue()
    assert outcome == []
    conn.on_frame(finished("cancelled"))
    error = outcome[0].value
    assert error.status == errors.INTERRUPTED
    assert error.message == "cancelled p-1 on the server"


def test_ctrl_c_before_the_prompt_id_is_known_cancels_once_it_is():
    run, conn, outcome, out = prompt_run()
    run.pressed(1)
    conn.requests[0][2].callback({"prompt_id": "p-1", "position": 0})
    assert conn.requests[-1][:2] == ("cancel", {"path": "/w", "prompt_id": "p-1"})


def test_second_ctrl_c_exits_without_waiting():
    """The second Ctrl-C leaves the prompt to the server and says so."""
    run, conn, outcome, out = prompt_run()
    conn.requests[0][2].callback({"prompt_id": "p-1", "position": 0})
    run.pressed(1)
    run.pressed(2)
    error = outcome[0].value
    assert error.status == errors.INTERRUPTED
    assert "p-1 is left to the server" in error.message
    assert "claudews-client tail /w" in error.message


def test_second_ctrl_c_before_the_reply_leaves_it_running():
    run, conn, outcome, out = prompt_run()
    run.pressed(1)
    run.pressed(2)
    assert outcome[0].value.message.startswith("left the prompt running on the server")


def test_lost_connection_ends_the_prompt_with_its_error():
    run, conn, outcome, out = prompt_run()
    conn.requests[0][2].callback({"prompt_id": "p-1", "position": 0})
    conn.lost.fire(errors.ConnectFailed("connection lost; gave up"))
    assert outcome[0].value.status == errors.CANNOT_CONNECT


def test_tail_asks_pending_permissions_only_when_live():
    """Replayed requests are not asked again; the pending ones and new ones are."""
    shown, out = console()
    view = View(shown, Renderer(shown, markdown=False))
    follower = Follower(FakeReactor(), ScriptedConnection(), "/w", view,
                        interactive=False, only_watched=False)
    pending = {"request_id": "r-old", "tool_name": "Bash", "input": {"command": "ls"}}
    follower.subscribed({"last_seq": 3, "pending_permissions": [pending]}, since=None)
    follower.frame({"type": "event", "seq": 4, "event": "permission.request",
                    "request_id": "r-new", "tool_name": "Bash", "input": {"command": "pwd"}})
    hints = [line for line in out.getvalue().splitlines() if line.startswith("answer with")]
    assert hints == ["answer with: claudews-client allow|deny /w r-old",
                     "answer with: claudews-client allow|deny /w r-new"]
