"""
Errors that reach a client.

Each carries a stable ``code`` from PROTOCOL.md's list; the WebSocket layer
turns any of them into ``{"ok": false, "error": {"code", "message"}}``.
Anything else that escapes a handler is reported as ``internal`` and logged.
"""

CODES = frozenset(
    {
        "bad_request",
        "unknown_type",
        "unauthorized",
        "path_invalid",
        "path_not_allowed",
        "path_nested",
        "project_exists",
        "project_not_found",
        "queue_full",
        "too_large",
        "too_many_projects",
        "not_running",
        "not_found",
        "storage_error",
        "internal",
    }
)


class RequestError(Exception):
    """
    A request failed in a way the client should be told about.

    @ivar code: one of L{CODES}.
    @ivar message: human-readable detail; never contains secrets.
    """

    def __init__(self, code: str, message: str) -> None:
        if code not in CODES:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"
