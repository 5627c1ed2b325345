"""
The errors a user of claudews-client sees: one line each, and an exit status.

The statuses are part of the client's interface (scripts test them); the
README and C{--help} list them from L{EXIT_STATUSES}.
"""

from __future__ import annotations

import re

OK = 0
PROMPT_NOT_COMPLETED = 1
USAGE = 2
CANNOT_CONNECT = 3
UNAUTHORIZED = 4
FORBIDDEN = 5
TOO_MANY = 6
REFUSED = 7
PROTOCOL_ERROR = 8
INTERRUPTED = 130
INTERNAL = 70
OUTPUT_CLOSED = 141

EXIT_STATUSES: tuple[tuple[int, str], ...] = (
    (OK, "success (for prompt: the prompt completed)"),
    (PROMPT_NOT_COMPLETED, "the prompt failed, was cancelled, timed out or was interrupted"),
    (USAGE, "bad command-line arguments"),
    (CANNOT_CONNECT, "cannot connect, or the connection was lost and could not be resumed"),
    (UNAUTHORIZED, "HTTP 401: the token is missing or wrong"),
    (FORBIDDEN, "HTTP 403: the server refused this Host or Origin"),
    (TOO_MANY, "HTTP 429: the server refused for load (claudews itself never blocks addresses)"),
    (REFUSED, "any other refused handshake (404 wrong path, 503 too many connections...)"),
    (PROTOCOL_ERROR, "the server refused a request (e.g. project_not_found: /x)"),
    (INTERNAL, "a bug in claudews-client (please report it)"),
    (INTERRUPTED, "interrupted with Ctrl-C"),
    (OUTPUT_CLOSED, "standard output was closed (piped into head, say)"),
)


class ClientError(Exception):
    """
    Something that ends the client with one line on stderr.

    @ivar status: the exit status.
    """

    status: int = CANNOT_CONNECT

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status

    def __str__(self) -> str:
        return self.message


class ConnectFailed(ClientError):
    """The server cannot be reached, or the connection was lost for good."""

    status = CANNOT_CONNECT


class HandshakeRefused(ClientError):
    """The server answered the opening handshake with an HTTP error."""

    def __init__(self, http_status: int, hint: str | None = None) -> None:
        self.http_status = http_status
        status, text, default_hint = _HANDSHAKE.get(
            http_status, (REFUSED, "the server refused the connection", ""))
        hint = default_hint if hint is None else hint
        super().__init__(
            "%s (HTTP %d)%s" % (text, http_status, "; " + hint if hint else ""), status)


_HANDSHAKE: dict[int, tuple[int, str, str]] = {
    401: (UNAUTHORIZED, "unauthorized: the token is missing or wrong",
          "check --token or CLAUDEWS_TOKEN"),
    403: (FORBIDDEN, "forbidden: the server refuses this Host or Origin",
          "see --allowed-host on the server"),
    429: (TOO_MANY, "refused for load by the server (or a proxy in front of it)",
          "try again later"),
    503: (REFUSED, "the server has too many connections", "try again later"),
    404: (REFUSED, "no WebSocket endpoint at this URL", "the path is /ws"),
}

NO_TOKEN_HINT = (
    "no token was given: use --token or CLAUDEWS_TOKEN, or run from the directory"
    " that holds the server's data/ (or give --data DIR)"
)

_STATUS_IN_REASON = re.compile(r"upgrade failed \[(\d{3})\]")


def handshake_status(status_line: str | None, reason: str | None) -> int | None:
    """
    The HTTP status of a failed opening handshake, from the response's
    status line (C{HTTP/1.1 401 Unauthorized}) or, failing that, from the
    reason Autobahn gives (C{WebSocket connection upgrade failed [401]: ...}).
    """
    if status_line:
        parts = status_line.split()
        if len(parts) >= 2 and parts[1].isdigit() and parts[1] != "101":
            return int(parts[1])
    match = _STATUS_IN_REASON.search(reason or "")
    return int(match.group(1)) if match else None


class RequestFailed(ClientError):
    """The server answered a request with C{ok: false}."""

    status = PROTOCOL_ERROR

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__("%s: %s" % (code, message) if message else code)


class Interrupted(ClientError):
    """The user pressed Ctrl-C; the message says what was done about it."""

    status = INTERRUPTED


def exit_status_help() -> str:
    """The exit statuses as lines for C{--help} and the README."""
    return "\n".join("  %3d  %s" % (status, text) for status, text in EXIT_STATUSES)
