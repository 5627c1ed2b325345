"""
The requests of protocol version 1, one method each.

A handler takes the decoded request and returns its C{result} (a dict, a
Deferred of one, or the already-encoded reply) or raises L{RequestError};
L{claudews.websocket} does the rest. Handlers run as methods of the
connection, for its C{factory} (settings, registry) and its subscriptions.
"""

from typing import Any, Callable

from twisted.internet import defer

from claudews.errors import RequestError
from claudews.events import history_reply


def _field(message: dict, name: str, kind: type, optional: bool = False) -> Any:
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


def _seq(message: dict, name: str) -> int | None:
    value = _field(message, name, int, optional=True)
    if value is not None and value < 0:
        raise RequestError("bad_request", "field %r must not be negative" % (name,))
    return value


class Requests:
    """
    Mixed into the WebSocket protocol: C{self.factory} and
    C{self._subscribed} come from there.
    """

    factory: Any
    _subscribed: dict

    def _project(self, message: dict) -> Any:
        return self.factory.registry.get(_field(message, "path", str))

    def handle_server_info(self, message: dict) -> dict:
        return self.factory.server_info()

    def handle_project_create(self, message: dict) -> dict:
        project = self.factory.registry.create(_field(message, "path", str))
        return {"project": project.describe()}

    def handle_project_list(self, message: dict) -> dict:
        return {"projects": [p.describe() for p in self.factory.registry.list()]}

    def handle_project_get(self, message: dict) -> dict:
        return {"project": self._project(message).describe()}

    def handle_project_delete(self, message: dict) -> defer.Deferred:
        project = self._project(message)
        d = self.factory.registry.delete(project)
        d.addCallback(lambda _: {})
        return d

    def handle_subscribe(self, message: dict) -> dict:
        project = self._project(message)
        since = _seq(message, "since")
        epoch = _field(message, "epoch", int, optional=True)
        self._subscribed[project.path] = project
        return project.subscribe(self, since, epoch)

    def handle_unsubscribe(self, message: dict) -> dict:
        project = self._project(message)
        self._subscribed.pop(project.path, None)
        project.unsubscribe(self)
        return {}

    def handle_history(self, message: dict) -> bytes:
        project = self._project(message)
        before = _seq(message, "before")
        limit = _field(message, "limit", int, optional=True)
        if limit is None:
            limit = 100
        if not 1 <= limit <= 1000:
            raise RequestError("bad_request", "limit must be between 1 and 1000")
        lines, has_more = project.history_page(before, limit)
        return history_reply(message.get("id"), lines, project.first_seq, has_more)

    def handle_prompt(self, message: dict) -> dict:
        project = self._project(message)
        text = _field(message, "prompt", str)
        limit = self.factory.settings.max_prompt_bytes
        if len(text.encode("utf-8", "surrogatepass")) > limit:
            raise RequestError("too_large", "the prompt is over %d bytes" % (limit,))
        if not text.strip():
            raise RequestError("bad_request", "the prompt is empty")
        options = self.factory.validate_options(message.get("options", {}))
        return project.submit(text, options, self.factory.option_flags(options))

    def handle_cancel(self, message: dict) -> dict:
        project = self._project(message)
        prompt_id = _field(message, "prompt_id", str, optional=True)
        return {"cancelled": project.cancel(prompt_id)}

    def handle_session_reset(self, message: dict) -> dict:
        self._project(message).reset_session()
        return {}

    def handle_permission_respond(self, message: dict) -> dict:
        project = self._project(message)
        project.respond_permission(
            _field(message, "request_id", str),
            _field(message, "behavior", str),
            _field(message, "message", str, optional=True),
            _field(message, "updated_input", dict, optional=True),
        )
        return {}


HANDLERS: dict[str, Callable[[Requests, dict], Any]] = {
    "server.info": Requests.handle_server_info,
    "project.create": Requests.handle_project_create,
    "project.list": Requests.handle_project_list,
    "project.get": Requests.handle_project_get,
    "project.delete": Requests.handle_project_delete,
    "subscribe": Requests.handle_subscribe,
    "unsubscribe": Requests.handle_unsubscribe,
    "history": Requests.handle_history,
    "prompt": Requests.handle_prompt,
    "cancel": Requests.handle_cancel,
    "session.reset": Requests.handle_session_reset,
    "permission.respond": Requests.handle_permission_respond,
}
