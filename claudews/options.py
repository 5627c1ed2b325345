"""
A prompt's C{options}: which exist, what values they take, and the CLI
flag each maps to.

Every value ends up as one argument of the CLI's command line, so each is
checked here before it gets there: no value may start with "-" (it would
be read as an option), none may hold NUL, and each has a size bound. The
server's settings say which options a client may set and their defaults.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping

from claudews.errors import RequestError

if TYPE_CHECKING:
    # Settings are built from these checks, so config imports this module;
    # the name is needed for the annotation only.
    from claudews.config import Settings

#: Every prompt option, in the protocol's order: the default
#: C{client_options}, which C{server.info} lists as they are.  Messages that
#: list them sort them, as L{option_flags} does.
OPTION_NAMES = (
    "model",
    "permission_mode",
    "allowed_tools",
    "disallowed_tools",
    "append_system_prompt",
    "max_budget_usd",
    "effort",
    "include_partial_messages",
)
PERMISSION_MODES = ("default", "acceptEdits", "plan", "bypassPermissions")
EFFORTS = ("low", "medium", "high", "xhigh", "max")

# Bounds on option values.  Each value becomes one argv string and Linux
# refuses a single argument over 128 KiB (MAX_ARG_STRLEN); these stay well
# under it, the tool list included once joined with commas.
_MAX_WORD_BYTES = 256
_MAX_TEXT_BYTES = 64 * 1024
_MAX_TOOL_CHARS = 512
_MAX_TOOLS = 100


# -- value checks: each takes a parsed value and returns the stored one, or
# -- raises ValueError with a message that does not name the setting.


def string(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string, not {!r}".format(value))
    return value


def _safestring(value: object, max_bytes: int, newlines: bool) -> str:
    value = string(value)
    if not value:
        raise ValueError("must not be empty")
    # A value that starts with "-" could be read by the CLI as an option.
    if value.startswith("-"):
        raise ValueError("must not start with '-'")
    if "\x00" in value:
        raise ValueError("must not contain NUL")
    if not newlines and ("\n" in value or "\r" in value):
        raise ValueError("must not contain line breaks")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    if size > max_bytes:
        raise ValueError("must be at most {} bytes".format(max_bytes))
    return value


def one_of(value: object, choices: tuple[str, ...]) -> str:
    if value not in choices or not isinstance(value, str):
        raise ValueError("must be one of {}, not {!r}".format(", ".join(choices), value))
    return value


def boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false, not {!r}".format(value))
    return value


def number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("must be a number, not {!r}".format(value))
    try:
        # JSON and TOML integers are unbounded; float() of a huge one raises.
        finite = math.isfinite(float(value))
    except OverflowError:
        finite = False
    if not finite:
        raise ValueError("must be a finite number, not {!r}".format(value))
    return value


def positive(value: object) -> float:
    """
    A finite number above 0, returned as given (an integer stays one, so
    its flag reads C{3}, not C{3.0}).
    """
    checked = number(value)
    if checked <= 0:
        raise ValueError("must be greater than 0, not {!r}".format(value))
    return checked


def check_option(name: str, value: object) -> object:
    """
    Check one prompt option's value, whoever gave it.

    @return: the value to use (tool lists come back as lists).
    @raise ValueError: with a message for the client or operator.
    """
    if name == "model":
        value = _safestring(value, _MAX_WORD_BYTES, newlines=False)
        if any(c.isspace() or not c.isprintable() for c in value):
            raise ValueError("must not contain spaces or control characters")
        return value
    if name == "append_system_prompt":
        return _safestring(value, _MAX_TEXT_BYTES, newlines=True)
    if name == "effort":
        return one_of(value, EFFORTS)
    if name == "permission_mode":
        return one_of(value, PERMISSION_MODES)
    if name == "include_partial_messages":
        return boolean(value)
    if name == "max_budget_usd":
        return positive(value)
    if name in ("allowed_tools", "disallowed_tools"):
        return _tools(value)
    raise ValueError("unknown option {!r}".format(name[:100]))


def _tools(value: object) -> list[str]:
    if not isinstance(value, list) and not isinstance(value, tuple):
        raise ValueError("must be a list of tool names, not {!r}".format(value))
    if len(value) > _MAX_TOOLS:
        raise ValueError("must name at most {} tools".format(_MAX_TOOLS))
    for tool in value:
        tool = _safestring(tool, _MAX_TOOL_CHARS * 4, newlines=False)
        if len(tool) > _MAX_TOOL_CHARS or not tool.isprintable() or not tool.strip():
            raise ValueError("{!r} is not a tool name".format(tool[:100]))
        # The list is passed as one comma-joined argument.
        if "," in tool:
            raise ValueError("tool {!r} must not contain ','".format(tool[:100]))
    return list(value)


def validate_prompt_options(options: object, settings: Settings) -> dict[str, Any]:
    """
    Check a client's prompt C{options} and merge them over the defaults.

    @param options: the request's C{options} value; C{None} (absent) means
        no options.
    @return: the options to run with, tool lists as lists.
    @raise RequestError: C{bad_request} for anything that is not a JSON
        object of known, allowed, well-formed options.
    """
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise RequestError("bad_request", "options must be a JSON object")
    merged = {
        name: list(value) if isinstance(value, tuple) else value
        for name, value in settings.prompt_defaults
    }
    for name in sorted(options):
        merged[name] = _client_option(name, options[name], settings)
    return merged


def _client_option(name: str, given: object, settings: Settings) -> object:
    """
    One option a client set: known, allowed by C{settings}, well-formed.

    @raise RequestError: C{bad_request}, saying which of these it is not.
    """
    if name not in OPTION_NAMES:
        raise RequestError("bad_request", "unknown option {!r}".format(name[:100]))
    if name not in settings.client_options:
        raise RequestError(
            "bad_request", "option {} is not allowed by this server".format(name)
        )
    try:
        value = check_option(name, given)
    except ValueError as e:
        raise RequestError("bad_request", "option {} {}".format(name, e)) from None
    if name == "permission_mode" and value not in settings.permission_modes:
        raise RequestError(
            "bad_request",
            "permission_mode {!r} is not allowed by this server (allowed: {})".format(
                value, ", ".join(settings.permission_modes)
            ),
        )
    return value


def option_flags(options: Mapping[str, Any]) -> list[str]:
    """
    The CLI flags for validated C{options}, in option-name order, so equal
    option sets give equal lists.
    """
    flags: list[str] = []
    for name in sorted(options):
        value = options[name]
        if name in ("allowed_tools", "disallowed_tools"):
            if value:
                flag = "--allowedTools" if name == "allowed_tools" else "--disallowedTools"
                flags += [flag, ",".join(value)]
        elif name == "include_partial_messages":
            if value:
                flags.append("--include-partial-messages")
        elif name == "max_budget_usd":
            flags += ["--max-budget-usd", str(value)]
        elif name in OPTION_NAMES:
            flags += ["--" + name.replace("_", "-"), value]
        else:
            raise ValueError("unknown option {!r}".format(name))
    return flags
