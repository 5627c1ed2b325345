"""
The requests of protocol version 1, one method each.

A handler takes the decoded request and returns its C{result} (a dict, a
Deferred of one, or the already-encoded reply) or raises L{RequestError};
L{Requests.receive} sends the reply. Handlers run on one connection's
L{Requests}, which holds what they need: the L{Server} (settings, the
projects) and the connection's subscriptions.
"""

import json
from typing import Any, Callable

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

import claudews
from claudews.clicheck import cli_problem, search_path
from claudews.config import Settings
from claudews.errors import RequestError
from claudews.events import encode, error_reply, reply
from claudews.interfaces import Project, Server
from claudews.pages import Page, PageSink
from claudews.permissions import PermissionAnswer

PROTOCOL_VERSION = 1

#: The most events one C{history} page may ask for.
MAX_HISTORY_LIMIT = 1000

DEFAULT_HISTORY_LIMIT = 100


def server_info(settings: Settings, claude_version: str | None) -> dict[str, Any]:
    """
    The reply to server.info, at once: the CLI's version is what is known
    now (C{None} while C{claude --version} still runs), so a slow or hung
    CLI never holds up this reply or those queued behind it.
    """
    s = settings
    return {
        "version": claudews.__version__,
        "protocol": PROTOCOL_VERSION,
        "claude": {
            "bin": s.claude_bin,
            "version": claude_version,
            # Asked again each time: a CLI installed since start counts.
            "problem": cli_problem(s.claude_bin, search_path(dict(s.env))),
        },
        "project_roots": list(s.project_roots),
        "limits": {
            "max_message_bytes": s.max_message_bytes,
            "max_prompt_bytes": s.max_prompt_bytes,
            "max_queue": s.max_queue,
            "max_projects": s.max_projects,
            "max_running": s.max_running,
            "timeout": s.timeout,
            "idle_timeout": s.idle_timeout,
            "permission_timeout": s.permission_timeout,
            "request_rate": s.request_rate,
            "request_burst": s.request_burst,
            "history_limit": MAX_HISTORY_LIMIT,
            "history_page_bytes": settings.history_page_bytes,
            "client_options": list(s.client_options),
        },
    }


def _no_constant(name: str) -> None:
    # NaN and Infinity are Python's extensions, not JSON.
    raise ValueError("not JSON: " + name)


def parse(payload: bytes) -> dict[str, Any]:
    """
    The request in a text frame; raises L{RequestError} C{bad_request} when
    it is not strict JSON, or not an object.
    """
    try:
        message = json.loads(payload, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise RequestError("bad_request", "not valid JSON")
    if not isinstance(message, dict):
        raise RequestError("bad_request", "a request must be a JSON object")
    return message


def _field(message: dict[str, Any], name: str, kind: type, optional: bool = False) -> Any:
    value = message.get(name)
    if value is None:
        if optional:
            return None
        raise RequestError("bad_request", "missing field %r" % (name,))
    # bool is an int in Python, never in JSON.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise RequestError(
            "bad_request", "field %r must be of type %s" % (name, kind.__name__)
        )
    return value


def _seq(message: dict[str, Any], name: str) -> int | None:
    value: int | None = _field(message, name, int, optional=True)
    if value is not None and value < 0:
        raise RequestError("bad_request", "field %r must not be negative" % (name,))
    return value


def _error_code(failure: Failure) -> str:
    error = failure.value
    return error.code if isinstance(error, RequestError) else "internal"


class Requests:
    """
    One connection's requests: C{server} answers them, C{connection}
    receives the events of the projects it subscribes to.
    """

    def __init__(
        self,
        server: Server,
        connection: PageSink,
        count: Callable[[object, str | None], object] = lambda kind, code: None,
    ) -> None:
        """
        @param count: told of every request answered: its C{type} as sent,
            and its error code, C{None} when it succeeded (the metrics).
        """
        self._server = server
        self._count = count
        self._connection = connection
        self._subscribed: dict[str, Project] = {}
        # One history page at a time is read and sent on a connection.
        self._pages = defer.DeferredLock()

    def unsubscribe_all(self) -> None:
        """
        The connection is closed: it leaves every project it subscribed to,
        and the server-wide feed.
        """
        for project in self._subscribed.values():
            project.unsubscribe(self._connection)
        self._subscribed.clear()
        self._server.registry.unwatch(self._connection)

    _log = Logger()

    def receive(self, payload: bytes) -> None:
        """
        Answer the request in C{payload}, exactly once.
        """
        try:
            message = parse(payload)
        except RequestError as e:
            self._count(None, e.code)
            self._error(None, e)
            return
        request_id = message.get("id")
        kind = message.get("type")
        try:
            result = self.dispatch(message)
        except RequestError as e:
            self._count(kind, e.code)
            self._error(request_id, e)
            return
        except Exception:
            self._log.failure("Request {type!r} failed", type=kind)
            self._count(kind, "internal")
            self._error(request_id, RequestError("internal", "internal error"))
            return
        if isinstance(result, defer.Deferred):

            def answered(value: Any) -> None:
                self._count(kind, None)
                self._answer(request_id, value)

            def failed(failure: Failure) -> None:
                self._count(kind, _error_code(failure))
                self._failed(request_id, failure)

            result.addCallbacks(answered, failed)
        else:
            self._count(kind, None)
            self._answer(request_id, result)

    def _answer(self, request_id: Any, result: Any) -> None:
        if result is None:
            # Streamed already (a history page).
            return
        if isinstance(result, bytes):
            self._connection.send_line(result)
        else:
            self._connection.send_line(encode(reply(request_id, result)))

    def _failed(self, request_id: Any, failure: Failure) -> None:
        error = failure.value
        if not isinstance(error, RequestError):
            self._log.failure("Request failed", failure)
            error = RequestError("internal", "internal error")
        self._error(request_id, error)

    def _error(self, request_id: Any, error: RequestError) -> None:
        self._connection.send_line(encode(error_reply(request_id, error.code, error.message)))

    def dispatch(self, message: dict[str, Any]) -> Any:
        """
        Run the handler of C{message}'s type: its result, or a Deferred of
        it; raises L{RequestError}.
        """
        kind = message.get("type")
        if not isinstance(kind, str):
            raise RequestError("bad_request", "missing field 'type'")
        handler = HANDLERS.get(kind)
        if handler is None:
            raise RequestError("unknown_type", "unknown request type %r" % (kind[:100],))
        return handler(self, message)

    def _project(self, message: dict[str, Any]) -> Project:
        return self._server.registry.get(_field(message, "path", str))

    def handle_server_info(self, message: dict[str, Any]) -> dict[str, Any]:
        server = self._server
        return server_info(server.settings, server.claude_version())

    def handle_project_create(self, message: dict[str, Any]) -> dict[str, Any]:
        project = self._server.registry.create(_field(message, "path", str))
        return {"project": project.describe()}

    def handle_project_list(self, message: dict[str, Any]) -> dict[str, Any]:
        return {"projects": [p.describe() for p in self._server.registry.list()]}

    def handle_watch(self, message: dict[str, Any]) -> dict[str, Any]:
        projects = self._server.registry.watch(self._connection)
        return {"projects": [p.describe() for p in projects]}

    def handle_unwatch(self, message: dict[str, Any]) -> dict[str, Any]:
        self._server.registry.unwatch(self._connection)
        return {}

    def handle_project_get(self, message: dict[str, Any]) -> dict[str, Any]:
        return {"project": self._project(message).describe()}

    def handle_project_delete(self, message: dict[str, Any]) -> defer.Deferred[Any]:
        project = self._project(message)
        d = self._server.registry.delete(project)
        d.addCallback(lambda _: {})
        return d

    def handle_subscribe(self, message: dict[str, Any]) -> dict[str, Any]:
        project = self._project(message)
        since = _seq(message, "since")
        epoch = _field(message, "epoch", int, optional=True)
        self._subscribed[project.path] = project
        return project.subscribe(self._connection, since, epoch)

    def handle_unsubscribe(self, message: dict[str, Any]) -> dict[str, Any]:
        project = self._project(message)
        self._subscribed.pop(project.path, None)
        project.unsubscribe(self._connection)
        return {}

    def handle_history(self, message: dict[str, Any]) -> defer.Deferred[None]:
        project = self._project(message)
        before = _seq(message, "before")
        limit = _field(message, "limit", int, optional=True)
        if limit is None:
            limit = DEFAULT_HISTORY_LIMIT
        if not 1 <= limit <= MAX_HISTORY_LIMIT:
            raise RequestError(
                "bad_request", "limit must be between 1 and %d" % (MAX_HISTORY_LIMIT,)
            )
        page = Page(
            project.history,
            self._connection,
            self._server.reactor,
            request_id=message.get("id"),
            before=before,
            limit=limit,
            max_bytes=self._server.settings.history_page_bytes,
        )
        # The reply is streamed by the page itself: the result is None.
        return self._pages.run(page.run)

    def handle_prompt(self, message: dict[str, Any]) -> dict[str, Any]:
        project = self._project(message)
        text: str = _field(message, "prompt", str)
        limit = self._server.settings.max_prompt_bytes
        if len(text.encode("utf-8", "surrogatepass")) > limit:
            raise RequestError("too_large", "the prompt is over %d bytes" % (limit,))
        if not text.strip():
            raise RequestError("bad_request", "the prompt is empty")
        options = self._server.validate_options(message.get("options", {}))
        return project.submit(text, options, self._server.option_flags(options))

    def handle_cancel(self, message: dict[str, Any]) -> dict[str, Any]:
        project = self._project(message)
        prompt_id = _field(message, "prompt_id", str, optional=True)
        return {"cancelled": project.cancel(prompt_id)}

    def handle_session_reset(self, message: dict[str, Any]) -> dict[str, Any]:
        self._project(message).reset_session()
        return {}

    def handle_permission_respond(self, message: dict[str, Any]) -> dict[str, Any]:
        project = self._project(message)
        project.respond_permission(
            PermissionAnswer(
                _field(message, "request_id", str),
                _field(message, "behavior", str),
                _field(message, "message", str, optional=True),
                _field(message, "updated_input", dict, optional=True),
                _field(message, "updated_permissions", list, optional=True),
            )
        )
        return {}


HANDLERS: dict[str, Callable[[Requests, dict[str, Any]], Any]] = {
    "server.info": Requests.handle_server_info,
    "project.create": Requests.handle_project_create,
    "project.list": Requests.handle_project_list,
    "project.get": Requests.handle_project_get,
    "watch": Requests.handle_watch,
    "unwatch": Requests.handle_unwatch,
    "project.delete": Requests.handle_project_delete,
    "subscribe": Requests.handle_subscribe,
    "unsubscribe": Requests.handle_unsubscribe,
    "history": Requests.handle_history,
    "prompt": Requests.handle_prompt,
    "cancel": Requests.handle_cancel,
    "session.reset": Requests.handle_session_reset,
    "permission.respond": Requests.handle_permission_respond,
}
