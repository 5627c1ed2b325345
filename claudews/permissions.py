"""
Pending permission requests of one project.

The CLI, started with C{--permission-prompt-tool stdio}, asks before using a
tool::

    {"type": "control_request", "request_id": R,
     "request": {"subtype": "can_use_tool", "tool_name": ..., "input": {...}, ...}}

and blocks until it reads a C{control_response} for C{R}. The broker
publishes each request as a C{permission.request} event, takes the first
client answer, and denies on its own when nobody answers in time, when the
prompt is cancelled, or (without answering: nobody is listening) when the
process died. Every request ends with exactly one C{permission.resolved}
event, so clients know to stop showing it.
"""

from __future__ import annotations

from typing import Any, Callable

from attrs import define, frozen
from twisted.logger import Logger

from claudews import events
from claudews.errors import RequestError
from claudews.events import Event
from claudews.interfaces import DelayedCall, ReactorTime

_log = Logger()

Publish = Callable[[Event], object]
#: C{answer(response)}: what it returns (whether the CLI got it) is not used.
Answer = Callable[[dict[str, Any]], object]

CANCELLED_MESSAGE = "The prompt was cancelled"
DENIED_MESSAGE = "Denied by a claudews client"


@frozen
class PermissionAnswer:
    """
    A client's answer to a permission request, as C{permission.respond}
    carries it; its fields are checked by L{PermissionBroker.respond}.
    """

    request_id: str
    behavior: str
    message: str | None = None
    updated_input: dict[str, Any] | None = None
    updated_permissions: list[dict[str, Any]] | None = None


@define
class _Pending:
    prompt_id: str
    request_id: str
    fields: dict[str, Any]
    answer: Answer
    timer: DelayedCall | None = None


class PermissionBroker:
    """
    Publishes the CLI's permission requests and routes the first answer back.

    @param publish: records and fans out a project event.
    @param timeout: seconds after which an unanswered request is denied.
    """

    def __init__(self, publish: Publish, *, timeout: float, reactor: ReactorTime) -> None:
        self._reactor = reactor
        self._publish = publish
        self._timeout = timeout
        # Insertion order is arrival order, which pending() reports.
        self._pending: dict[str, _Pending] = {}

    def request(
        self, prompt_id: str, request_id: str, request: dict[str, Any], answer: Answer
    ) -> None:
        """
        A C{can_use_tool} request arrived from the CLI.

        @param request: the control_request's C{"request"} object.
        @param answer: sends the C{control_response} payload to the CLI;
            called exactly once for this request (unless L{forget} drops it).
        """
        if request_id in self._pending:
            # Replacing the first would leave the CLI waiting on it forever;
            # the duplicate is the one we cannot route an answer to.
            _log.warn(
                "duplicate permission request {request_id} denied",
                request_id=request_id,
            )
            self._answer(
                request_id,
                answer,
                {
                    "behavior": "deny",
                    "message": "Duplicate permission request id "
                    + repr(request_id),
                },
            )
            return
        event = events.permission_request(prompt_id, request_id, request)
        pending = _Pending(prompt_id, request_id, dict(event.fields), answer)
        # Remembered before publishing: a client may answer synchronously
        # from inside the fan-out.
        self._pending[request_id] = pending
        pending.timer = self._reactor.callLater(
            self._timeout, self._expire, request_id
        )
        self._publish(event)

    def respond(self, answer: PermissionAnswer) -> None:
        """
        A client's answer; the first one wins. An allow may change the
        tool's input (C{updated_input}: how AskUserQuestion and
        ExitPlanMode are answered) and add permission rules
        (C{updated_permissions}, the CLI's "always allow").

        @raise RequestError: C{bad_request} for a malformed answer,
            C{not_found} when the request is unknown or already resolved.
        """
        _check_answer(answer)
        request_id, behavior = answer.request_id, answer.behavior
        pending = self._pending.pop(request_id, None)
        if pending is None:
            raise RequestError(
                "not_found",
                "no pending permission request " + repr(request_id),
            )
        _cancel(pending)
        response: dict[str, Any]
        if behavior == "allow":
            response = {
                "behavior": "allow",
                "updatedInput": pending.fields["input"]
                if answer.updated_input is None
                else answer.updated_input,
            }
            if answer.updated_permissions is not None:
                response["updatedPermissions"] = answer.updated_permissions
        else:
            response = {"behavior": "deny", "message": answer.message or DENIED_MESSAGE}
        self._answer(request_id, pending.answer, response)
        self._resolved(request_id, behavior, "client")

    def cancel(self, prompt_id: str | None = None) -> None:
        """
        Deny every pending request of C{prompt_id} (or all of them): the
        prompt is being cancelled, and a CLI blocked on a permission would
        never see the interrupt.
        """
        for pending in self._take(prompt_id):
            self._answer(
                pending.request_id,
                pending.answer,
                {"behavior": "deny", "message": CANCELLED_MESSAGE},
            )
            self._resolved(pending.request_id, "deny", "cancel")

    def forget(self, prompt_id: str | None = None) -> None:
        """
        Drop pending requests of C{prompt_id} (or all) without answering:
        the CLI process died, so nobody is left to answer. Clients still get
        a C{permission.resolved} so they stop showing them.
        """
        for pending in self._take(prompt_id):
            self._resolved(pending.request_id, "deny", "cancel")

    @property
    def count(self) -> int:
        """How many requests wait for an answer."""
        return len(self._pending)

    def pending(self) -> list[dict[str, Any]]:
        """
        The pending requests in arrival order, each shaped like the fields
        of its C{permission.request} event.
        """
        return [dict(p.fields) for p in self._pending.values()]

    def _take(self, prompt_id: str | None) -> list[_Pending]:
        taken = [
            p
            for p in self._pending.values()
            if prompt_id is None or p.prompt_id == prompt_id
        ]
        for p in taken:
            del self._pending[p.request_id]
            _cancel(p)
        return taken

    def _expire(self, request_id: str) -> None:
        pending = self._pending.pop(request_id, None)
        if pending is None:
            return
        pending.timer = None
        _log.info(
            "permission request {request_id} timed out after {timeout}s",
            request_id=request_id,
            timeout=self._timeout,
        )
        self._answer(
            request_id,
            pending.answer,
            {
                "behavior": "deny",
                "message": "No claudews client answered the permission request"
                " within %g seconds" % (self._timeout,),
            },
        )
        self._resolved(request_id, "deny", "timeout")

    def _answer(self, request_id: str, answer: Answer, response: dict[str, Any]) -> None:
        try:
            answer(response)
        except Exception:
            # The process is probably gone; the request is resolved all the
            # same, and the client that answered must not see an error.
            _log.failure(
                "answering permission request {request_id} failed",
                request_id=request_id,
            )

    def _resolved(self, request_id: str, behavior: str, by: str) -> None:
        self._publish(events.permission_resolved(request_id, behavior, by))


def _cancel(pending: _Pending) -> None:
    if pending.timer is not None:
        if pending.timer.active():
            pending.timer.cancel()
        pending.timer = None


def _check_answer(answer: PermissionAnswer) -> None:
    """
    Raise L{RequestError} C{bad_request} unless the answer's fields have
    their types (clients send anything).
    """
    request_id, behavior = answer.request_id, answer.behavior
    message, updated_input = answer.message, answer.updated_input
    updated_permissions = answer.updated_permissions
    if not isinstance(request_id, str):
        raise RequestError("bad_request", "request_id must be a string")
    if behavior not in ("allow", "deny"):
        raise RequestError("bad_request", 'behavior must be "allow" or "deny"')
    if message is not None and not isinstance(message, str):
        raise RequestError("bad_request", "message must be a string")
    if updated_input is not None and not isinstance(updated_input, dict):
        raise RequestError("bad_request", "updated_input must be an object")
    if updated_permissions is None:
        return
    if behavior != "allow":
        raise RequestError("bad_request", "updated_permissions go with an allow")
    if not isinstance(updated_permissions, list) or not all(
        isinstance(rule, dict) for rule in updated_permissions
    ):
        raise RequestError("bad_request", "updated_permissions must be a list of objects")
