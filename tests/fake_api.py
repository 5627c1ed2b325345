"""
A fake Anthropic Messages API on 127.0.0.1, for running the real Claude
Code CLI without an account.

``POST /v1/messages`` answers in the real shapes: server-sent events
(``message_start``, ``content_block_start``/``delta``/``stop``,
``message_delta``, ``message_stop``) when the request asks for a stream,
the JSON message otherwise. What it answers is decided per test by a
*script*: a callable that takes the request body (a dict) and returns a
L{Reply}. Every response gets a message id of its own: the CLI merges
assistant entries that share an id.

It runs in a thread of its own (the tests drive the server under test
from the outside, with a blocking client), and every request it served
is kept in C{requests} for the test to inspect.
"""

import itertools
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import attrs

MODEL = "claude-sonnet-4-5-20250929"


@attrs.frozen
class Reply:
    """
    One model turn.

    @ivar text: the text block, if any.
    @ivar tool: C{(name, input)} for a tool_use block, if any.
    @ivar delay: seconds to wait before answering (a slow model); the
        wait ends early when the client goes away.
    @ivar chunks: how many text deltas the text is split into.
    @ivar error: C{(status, type, message)}: answer with an API error.
    """

    text: str | None = None
    tool: tuple[str, dict] | None = None
    delay: float = 0.0
    chunks: int = 1
    error: tuple[int, str, str] | None = None


def text(value: str, **kwargs: Any) -> Reply:
    return Reply(text=value, **kwargs)


def tool(name: str, input: dict, **kwargs: Any) -> Reply:
    return Reply(tool=(name, input), **kwargs)


def user_turns(body: dict) -> int:
    """
    The number of user turns in a request that are the human's prompts
    (not tool results): proves how much of a conversation the CLI sent.
    """
    count = 0
    for message in body.get("messages", []):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            count += 1
        elif isinstance(content, list) and any(
            block.get("type") == "text" and not _is_reminder(block.get("text", ""))
            for block in content
        ):
            count += 1
    return count


def _is_reminder(text: str) -> bool:
    return text.lstrip().startswith("<system-reminder>")


def last_user_text(body: dict) -> str:
    """The text of the newest human prompt in a request."""
    for message in reversed(body.get("messages", [])):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        texts = [
            b.get("text", "")
            for b in content
            if b.get("type") == "text" and not _is_reminder(b.get("text", ""))
        ]
        if texts:
            return texts[-1]
    return ""


def tool_results(body: dict) -> list[dict]:
    """Every tool_result block the request carries, oldest first."""
    results = []
    for message in body.get("messages", []):
        content = message.get("content")
        if message.get("role") == "user" and isinstance(content, list):
            results += [b for b in content if b.get("type") == "tool_result"]
    return results


def turn_results(body: dict) -> list[dict]:
    """
    The tool_result blocks sent since the newest human prompt: how far the
    model got in the current prompt's turns.
    """
    results: list[dict] = []
    for message in body.get("messages", []):
        content = message.get("content")
        if message.get("role") != "user":
            continue
        if isinstance(content, str):
            results = []
            continue
        found = [b for b in content if b.get("type") == "tool_result"]
        if not found and any(
            b.get("type") == "text" and not _is_reminder(b.get("text", "")) for b in content
        ):
            results = []
        results += found
    return results


def result_text(result: dict) -> str:
    """The text of a tool_result block, whether a string or text blocks."""
    content = result.get("content")
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict))
    return str(content or "")


_PLAN_FILE = re.compile(r"(/[^\s\"'`]*/\.claude/plans/[^\s\"'`]+\.md)")


def plan_file(body: dict) -> str | None:
    """
    The plan file the CLI names in plan mode's reminder: where a model in
    plan mode writes its plan before it calls ExitPlanMode.
    """
    for message in body.get("messages", []):
        content = message.get("content")
        texts = [content] if isinstance(content, str) else [
            b.get("text", "") for b in content or [] if isinstance(b, dict)
        ]
        for value in texts:
            found = _PLAN_FILE.search(value)
            if found:
                return found.group(1)
    return None


def is_main_turn(body: dict) -> bool:
    """
    True for the requests of the conversation itself. The CLI also makes
    side requests (a title for the session, a check of a Bash command);
    those carry no tools.
    """
    return bool(body.get("tools"))


class FakeAPI:
    """
    @ivar requests: every request body, in arrival order.
    @ivar url: the base URL to give the CLI in ANTHROPIC_BASE_URL.
    """

    def __init__(self, script: Callable[[dict], Reply] | None = None) -> None:
        self.script = script or (lambda body: text("ok"))
        self.requests: list[dict] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._closing = threading.Event()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                api._handle(self)

            def do_HEAD(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_HEAD

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % (self._server.server_address[1],)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()

    def main_requests(self) -> list[dict]:
        with self._lock:
            return [r for r in self.requests if is_main_turn(r)]

    def wait_requests(self, count: int, timeout: float = 30.0) -> list[dict]:
        """
        Wait until at least C{count} conversation requests have arrived.
        """
        with self._changed:
            if not self._changed.wait_for(
                lambda: sum(map(is_main_turn, self.requests)) >= count, timeout
            ):
                raise AssertionError("the CLI made fewer than %d requests" % (count,))
            return [r for r in self.requests if is_main_turn(r)]

    # -- serving

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length)
        if not handler.path.startswith("/v1/messages") or handler.path.startswith(
            "/v1/messages/count_tokens"
        ):
            body = json.dumps({"input_tokens": 10}).encode()
            handler.send_response(200 if "count_tokens" in handler.path else 404)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
            return
        try:
            body = json.loads(raw)
        except ValueError:
            body = {}
        with self._lock:
            self.requests.append(body)
            message_id = "msg_fake_%06d" % (next(self._ids),)
            self._changed.notify_all()
        reply = self.script(body) if is_main_turn(body) else text("Fake title")
        if reply.delay and self._closing.wait(reply.delay):
            return
        if reply.error is not None:
            status, kind, message = reply.error
            payload = json.dumps(
                {"type": "error", "error": {"type": kind, "message": message}}
            ).encode()
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
            return
        model = body.get("model") or MODEL
        if body.get("stream"):
            self._stream(handler, message_id, model, reply)
        else:
            payload = json.dumps(_message(message_id, model, reply)).encode()
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)

    def _stream(self, handler: Any, message_id: str, model: str, reply: Reply) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Cache-Control", "no-cache")
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.close_connection = True

        def send(kind: str, data: dict) -> None:
            handler.wfile.write(
                ("event: %s\ndata: %s\n\n" % (kind, json.dumps(data))).encode()
            )
            handler.wfile.flush()

        start = _message(message_id, model, reply)
        start["content"] = []
        start["stop_reason"] = None
        start["usage"]["output_tokens"] = 1
        try:
            send("message_start", {"type": "message_start", "message": start})
            index = 0
            if reply.text is not None:
                send(
                    "content_block_start",
                    {"type": "content_block_start", "index": index,
                     "content_block": {"type": "text", "text": ""}},
                )
                for piece in _split(reply.text, reply.chunks):
                    send(
                        "content_block_delta",
                        {"type": "content_block_delta", "index": index,
                         "delta": {"type": "text_delta", "text": piece}},
                    )
                send("content_block_stop", {"type": "content_block_stop", "index": index})
                index += 1
            if reply.tool is not None:
                name, tool_input = reply.tool
                send(
                    "content_block_start",
                    {"type": "content_block_start", "index": index,
                     "content_block": {"type": "tool_use", "id": _tool_id(message_id),
                                       "name": name, "input": {}}},
                )
                send(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index,
                     "delta": {"type": "input_json_delta",
                               "partial_json": json.dumps(tool_input)}},
                )
                send("content_block_stop", {"type": "content_block_stop", "index": index})
            send(
                "message_delta",
                {"type": "message_delta",
                 "delta": {"stop_reason": _stop_reason(reply), "stop_sequence": None},
                 "usage": {"output_tokens": 10}},
            )
            send("message_stop", {"type": "message_stop"})
        except (BrokenPipeError, ConnectionResetError):
            pass


def _split(value: str, chunks: int) -> list[str]:
    if chunks <= 1 or len(value) <= 1:
        return [value]
    size = max(1, -(-len(value) // chunks))
    return [value[i : i + size] for i in range(0, len(value), size)]


def _tool_id(message_id: str) -> str:
    return "toolu_" + message_id.rsplit("_", 1)[-1] + "abcdef"


def _stop_reason(reply: Reply) -> str:
    return "tool_use" if reply.tool is not None else "end_turn"


def _message(message_id: str, model: str, reply: Reply) -> dict:
    content: list[dict] = []
    if reply.text is not None:
        content.append({"type": "text", "text": reply.text})
    if reply.tool is not None:
        name, tool_input = reply.tool
        content.append(
            {"type": "tool_use", "id": _tool_id(message_id), "name": name, "input": tool_input}
        )
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _stop_reason(reply),
        "stop_sequence": None,
        "usage": {
            "input_tokens": 100,
            "output_tokens": 10,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }
