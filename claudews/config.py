"""
Server settings: one frozen value object, every field checked and
normalized as it is set.

Where the values come from (defaults, a TOML file, the environment, the
command line) and which wins is L{claudews.cmdline}'s business.  The rules
for a prompt's C{options} are in L{claudews.options}; the settings say
which of them a client may set and what their defaults are.
"""

from __future__ import annotations

import os
import pwd
import re
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from attrs import Factory, field, frozen
from twisted.internet.endpoints import serverFromString

from claudews import events, options
from claudews.history import FSYNC_ALIASES, FSYNC_POLICIES
from claudews.options import OPTION_NAMES, PERMISSION_MODES, check_option

MiB = 1024 * 1024


def home(environ: Mapping[str, str]) -> str:
    """
    The home directory, the default project root: C{HOME}, else the
    password database's.
    """
    return environ.get("HOME") or pwd.getpwuid(os.getuid()).pw_dir


# -- value checks: each takes a parsed value and returns the stored one, or
# -- raises ValueError with a message that does not name the setting.


def _fsync_policy(value: object) -> str:
    """One of L{FSYNC_POLICIES}; older names (C{batch}) name their successor."""
    if isinstance(value, str) and value in FSYNC_ALIASES:
        return FSYNC_ALIASES[value]
    return options.one_of(value, FSYNC_POLICIES)


def _positive_float(value: object) -> float:
    return float(options.positive(value))


def _int_at_least(least: int) -> Callable[[object], int]:
    def check(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("must be an integer, not {!r}".format(value))
        if value < least:
            raise ValueError("must be at least {}, not {!r}".format(least, value))
        return value

    return check


_positive_int = _int_at_least(1)
#: An integer, 0 or more (0: chosen by the server).
_count = _int_at_least(0)


def _string_list(value: object) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(item, str) for item in value
    ):
        raise ValueError("must be a list of strings, not {!r}".format(value))
    return tuple(value)


def _names(choices: tuple[str, ...]) -> Callable[[object], tuple[str, ...]]:
    def check(value: object) -> tuple[str, ...]:
        names = _string_list(value)
        for name in names:
            options.one_of(name, choices)
        if len(set(names)) != len(names):
            raise ValueError("must not repeat a name")
        return names

    return check


def _pairs(value: object) -> tuple[tuple[Any, Any], ...]:
    # A TOML table arrives as a dict; a stored Settings field as pairs.
    if isinstance(value, Mapping):
        return tuple(value.items())
    if isinstance(value, tuple):
        return tuple(tuple(pair) for pair in value)
    raise ValueError("must be a table, not {!r}".format(value))


def _endpoint(value: object) -> str:
    value = options.string(value)
    try:
        # Parsing needs no reactor: the built-in parsers only store it.
        serverFromString(object(), value)  # type: ignore[no-untyped-call]
    except (ValueError, TypeError, KeyError, OSError) as e:
        raise ValueError("is not a valid endpoint ({}): {!r}".format(e, value)) from None
    except Exception:
        # A third-party parser that wants a real reactor: listening will
        # report a bad description soon enough.
        pass
    return value


def _plain(value: object) -> str:
    value = options.string(value)
    if not value or "\x00" in value:
        raise ValueError("must be a non-empty string without NUL")
    return value


def _token(value: object) -> str | None:
    if value is None:
        return None
    value = options.string(value)
    # It travels in an Authorization header, where only visible ASCII is
    # safe to compare byte for byte.
    if not re.fullmatch(r"[\x21-\x7e]+", value):
        raise ValueError("must be non-empty printable ASCII without spaces")
    return value


def _roots(value: object) -> tuple[str, ...]:
    roots: list[str] = []
    for root in _string_list(value):
        root = os.path.realpath(_plain(root))
        if root == "/":
            raise ValueError("'/' would allow every directory; name narrower roots")
        if root not in roots:
            roots.append(root)
    if not roots:
        raise ValueError("must name at least one directory")
    return tuple(roots)


_HOST = r"(\[[0-9a-f:.]+\]|[a-z0-9_](?:[a-z0-9_.-]*[a-z0-9_])?)"
_ORIGIN = re.compile(r"(https?)://" + _HOST + r"(?::([0-9]{1,5}))?")
_HOST_HEADER = re.compile(_HOST + r"(?::([0-9]{1,5}))?")
_DEFAULT_PORTS = {"http": "80", "https": "443"}


def _address(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    """
    C{pattern}'s match of all of C{text}, whose last group is the port:
    C{None} when it does not match or the port is out of range.
    """
    match = pattern.fullmatch(text)
    if match is None or not 0 < int(match.groups()[-1] or 1) < 65536:
        return None
    return match


def _origins(value: object) -> tuple[str, ...]:
    result = []
    for origin in _string_list(value):
        # Browsers send the origin lowercased and without a default port;
        # normalizing here lets the handshake compare exactly.
        match = _address(_ORIGIN, origin.lower())
        if match is None:
            raise ValueError(
                "{!r} is not an origin like https://host[:port]".format(origin)
            )
        scheme, host, port = match.groups()
        if port is not None and port != _DEFAULT_PORTS[scheme]:
            host += ":" + port
        result.append(scheme + "://" + host)
    return tuple(result)


def _hosts(value: object) -> tuple[str, ...]:
    result = []
    for host in _string_list(value):
        if _address(_HOST_HEADER, host.lower()) is None:
            raise ValueError("{!r} is not a Host value like host[:port]".format(host))
        result.append(host.lower())
    return tuple(result)


def _urls(value: object) -> tuple[str, ...]:
    result = []
    for url in _string_list(value):
        parts = urlsplit(url)
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or re.search(r"[\x00-\x20\x7f]", url)
        ):
            raise ValueError("{!r} is not an http:// or https:// URL".format(url))
        try:
            parts.port
        except ValueError:
            raise ValueError("{!r} is not a URL with a valid port".format(url)) from None
        if url not in result:
            result.append(url)
    return tuple(result)


def _env(value: object) -> tuple[tuple[str, str], ...]:
    pairs = _pairs(value)
    for name, text in pairs:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError("{!r} is not an environment variable name".format(name))
        if not isinstance(text, str) or "\x00" in text:
            raise ValueError("{} must be a string without NUL".format(name))
    return tuple(sorted(pairs))


def _prompt_defaults(value: object) -> tuple[tuple[str, Any], ...]:
    result = []
    for name, option in _pairs(value):
        if name not in OPTION_NAMES:
            raise ValueError(
                "unknown option {!r} (known: {})".format(
                    name, ", ".join(sorted(OPTION_NAMES))
                )
            )
        try:
            option = check_option(name, option)
        except ValueError as e:
            raise ValueError("{}: {}".format(name, e)) from None
        # Tuples keep the frozen Settings hashable.
        result.append((name, tuple(option) if isinstance(option, list) else option))
    return tuple(sorted(result))


def _setting(name: str, default: Any, check: Callable[[object], Any]) -> Any:
    """
    A Settings field whose converter runs C{check}, naming the field in
    its error.
    """

    def convert(value: object) -> Any:
        try:
            return check(value)
        except ValueError as e:
            raise ValueError("{}: {}".format(name, e)) from None

    return field(default=default, converter=convert, metadata={"check": check})


@frozen
class Settings:
    """
    Everything the operator configured, checked and normalized.

    Mappings (C{prompt_defaults}, C{env}) are stored as sorted tuples of
    C{(name, value)} pairs, and lists as tuples, so that a Settings is
    hashable and cannot change after it was checked; C{dict(settings.env)}
    gives a mapping back.  Constructing one directly runs the same checks
    as L{claudews.cmdline.settings_from}, except that project roots are not required to exist.
    """

    listen: str = _setting("listen", "tcp:8765:interface=127.0.0.1", _endpoint)
    data: str = _setting("data", "./data", lambda v: os.path.abspath(_plain(v)))
    claude_bin: str = _setting("claude_bin", "claude", _plain)
    token: str | None = _setting("token", None, _token)
    no_auth: bool = _setting("no_auth", False, options.boolean)
    project_roots: tuple[str, ...] = _setting(
        "project_roots", Factory(lambda: (home(os.environ),)), _roots
    )
    allowed_origins: tuple[str, ...] = _setting("allowed_origins", (), _origins)
    allowed_hosts: tuple[str, ...] = _setting("allowed_hosts", (), _hosts)
    timeout: float = _setting("timeout", 300.0, _positive_float)
    max_running: int = _setting("max_running", 4, _positive_int)
    #: CLIs loading at once (spawned, nothing printed yet); 0: the CPUs
    #: this server may use less one, one at least (L{liveprocess.StartGate}).
    max_booting: int = _setting("max_booting", 0, _count)
    idle_timeout: float = _setting("idle_timeout", 600.0, _positive_float)
    permission_timeout: float = _setting("permission_timeout", 120.0, _positive_float)
    kill_grace: float = _setting("kill_grace", 5.0, _positive_float)
    max_line_bytes: int = _setting("max_line_bytes", 256 * MiB, _positive_int)
    max_message_bytes: int = _setting("max_message_bytes", 1 * MiB, _positive_int)
    max_prompt_bytes: int = _setting("max_prompt_bytes", 256 * 1024, _positive_int)
    max_queue: int = _setting("max_queue", 64, _positive_int)
    max_projects: int = _setting("max_projects", 256, _positive_int)
    send_backlog_bytes: int = _setting("send_backlog_bytes", 4 * MiB, _positive_int)
    send_backlog_grace: float = _setting("send_backlog_grace", 10.0, _positive_float)
    send_backlog_cap: int = _setting("send_backlog_cap", 64 * MiB, _positive_int)
    ping_interval: float = _setting("ping_interval", 30.0, _positive_float)
    ping_timeout: float = _setting("ping_timeout", 30.0, _positive_float)
    max_connections: int = _setting("max_connections", 256, _positive_int)
    max_connections_per_address: int = _setting(
        "max_connections_per_address", 32, _positive_int
    )
    request_rate: float = _setting("request_rate", 500.0, _positive_float)
    request_burst: int = _setting("request_burst", 1000, _positive_int)
    max_failed_handshakes: int = _setting("max_failed_handshakes", 10, _positive_int)
    failed_handshake_window: float = _setting(
        "failed_handshake_window", 60.0, _positive_float
    )
    failed_handshake_block: float = _setting(
        "failed_handshake_block", 60.0, _positive_float
    )
    history_rotate_bytes: int = _setting("history_rotate_bytes", 64 * MiB, _positive_int)
    history_max_bytes: int = _setting("history_max_bytes", 1024 * MiB, _positive_int)
    fsync: str = _setting("fsync", "interval", lambda v: _fsync_policy(v))
    client_options: tuple[str, ...] = _setting(
        "client_options", OPTION_NAMES, _names(OPTION_NAMES)
    )
    prompt_defaults: tuple[tuple[str, Any], ...] = _setting(
        "prompt_defaults", (), _prompt_defaults
    )
    permission_modes: tuple[str, ...] = _setting(
        "permission_modes", ("default", "acceptEdits", "plan"), _names(PERMISSION_MODES)
    )
    env: tuple[tuple[str, str], ...] = _setting("env", (), _env)
    # Appended after the hardening of issue 13; failed_handshake_block above
    # is no longer used (wrong tokens are delayed, never blocked) and stays
    # so that older files load.
    failed_handshake_delay: float = _setting("failed_handshake_delay", 5.0, _positive_float)
    max_message_frames: int = _setting("max_message_frames", 128, _positive_int)
    history_page_bytes: int = _setting("history_page_bytes", 8 * MiB, _positive_int)
    fsync_interval: float = _setting("fsync_interval", 1.0, _positive_float)
    # Notifications (issue 12): where to POST them, and for which events.
    notify_url: tuple[str, ...] = _setting("notify_url", (), _urls)
    notify_on: tuple[str, ...] = _setting(
        "notify_on",
        (events.PERMISSION_REQUEST, events.PROMPT_FINISHED),
        _names(tuple(sorted(events.KINDS))),
    )
    # Metrics (issue 12): GET /metrics without the token.
    metrics_public: bool = _setting("metrics_public", False, options.boolean)

    def __attrs_post_init__(self) -> None:
        if self.send_backlog_cap < self.send_backlog_bytes:
            raise ValueError("send_backlog_cap must be at least send_backlog_bytes")
        if self.history_max_bytes < self.history_rotate_bytes:
            raise ValueError("history_max_bytes must be at least history_rotate_bytes")
        mode = dict(self.prompt_defaults).get("permission_mode")
        if mode is not None and mode not in self.permission_modes:
            raise ValueError(
                "prompt_defaults: permission_mode {!r} is not in permission_modes"
                " ({})".format(mode, ", ".join(self.permission_modes))
            )


@frozen
class ProjectConfig:
    """
    The settings a project needs (a slice of L{claudews.config.Settings}).
    """

    claude_bin: str = "claude"
    timeout: float = 300.0
    kill_grace: float = 5.0
    max_line_bytes: int = 256 * 1024 * 1024
    max_queue: int = 64
    permission_timeout: float = 120.0
    env: dict[str, str] = Factory(dict)

    @classmethod
    def of(cls, settings: Settings) -> ProjectConfig:
        return cls(
            claude_bin=settings.claude_bin,
            timeout=settings.timeout,
            kill_grace=settings.kill_grace,
            max_line_bytes=settings.max_line_bytes,
            max_queue=settings.max_queue,
            permission_timeout=settings.permission_timeout,
            env=dict(settings.env),
        )
