"""
Server settings: one frozen value object, built from defaults, a TOML file
and the command line.

Precedence, highest first: a command-line flag, the C{--config} file, the
environment (C{CLAUDEWS_TOKEN}, the token only), the built-in default.  A
repeatable flag (C{--project-root}) given on the command line replaces the
file's whole list rather than adding to it, so the command line alone says
what the list is.

The rules for a prompt's C{options} are in L{claudews.options}; the
settings say which of them a client may set and what their defaults are.
"""

from __future__ import annotations

import difflib
import os
import pwd
import re
import tomllib
from typing import Any, Callable, Mapping

from attrs import Factory, field, fields, frozen
from twisted.internet.endpoints import serverFromString
from twisted.python import usage

from claudews import options
from claudews.history import FSYNC_POLICIES
from claudews.options import (
    DEFAULT_CLIENT_OPTIONS,
    OPTION_NAMES,
    PERMISSION_MODES,
    check_option,
)

MiB = 1024 * 1024

def _home(environ: Mapping[str, str]) -> str:
    return environ.get("HOME") or pwd.getpwuid(os.getuid()).pw_dir


# -- value checks: each takes a parsed value and returns the stored one, or
# -- raises ValueError with a message that does not name the setting.


def _positive_float(value: object) -> float:
    if options.number(value) <= 0:
        raise ValueError("must be greater than 0, not {!r}".format(value))
    return float(value)


def _positive_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be an integer, not {!r}".format(value))
    if value < 1:
        raise ValueError("must be at least 1, not {!r}".format(value))
    return value


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
        serverFromString(object(), value)
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


def _origins(value: object) -> tuple[str, ...]:
    result = []
    for origin in _string_list(value):
        # Browsers send the origin lowercased and without a default port;
        # normalizing here lets the handshake compare exactly.
        match = _ORIGIN.fullmatch(origin.lower())
        if match is None or not 0 < int(match.group(3) or 1) < 65536:
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
        match = _HOST_HEADER.fullmatch(host.lower())
        if match is None or not 0 < int(match.group(2) or 1) < 65536:
            raise ValueError("{!r} is not a Host value like host[:port]".format(host))
        result.append(host.lower())
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
                "unknown option {!r} (known: {})".format(name, ", ".join(OPTION_NAMES))
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
    as L{settings_from}, except that project roots are not required to exist.
    """

    listen: str = _setting("listen", "tcp:8765:interface=127.0.0.1", _endpoint)
    data: str = _setting("data", "./data", lambda v: os.path.abspath(_plain(v)))
    claude_bin: str = _setting("claude_bin", "claude", _plain)
    token: str | None = _setting("token", None, _token)
    no_auth: bool = _setting("no_auth", False, options.boolean)
    project_roots: tuple[str, ...] = _setting(
        "project_roots", Factory(lambda: (_home(os.environ),)), _roots
    )
    allowed_origins: tuple[str, ...] = _setting("allowed_origins", (), _origins)
    allowed_hosts: tuple[str, ...] = _setting("allowed_hosts", (), _hosts)
    timeout: float = _setting("timeout", 300.0, _positive_float)
    max_running: int = _setting("max_running", 4, _positive_int)
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
    request_rate: float = _setting("request_rate", 100.0, _positive_float)
    request_burst: int = _setting("request_burst", 200, _positive_int)
    max_failed_handshakes: int = _setting("max_failed_handshakes", 10, _positive_int)
    failed_handshake_window: float = _setting(
        "failed_handshake_window", 60.0, _positive_float
    )
    failed_handshake_block: float = _setting(
        "failed_handshake_block", 60.0, _positive_float
    )
    history_rotate_bytes: int = _setting("history_rotate_bytes", 64 * MiB, _positive_int)
    history_max_bytes: int = _setting("history_max_bytes", 1024 * MiB, _positive_int)
    fsync: str = _setting("fsync", "batch", lambda v: options.one_of(v, FSYNC_POLICIES))
    client_options: tuple[str, ...] = _setting(
        "client_options", DEFAULT_CLIENT_OPTIONS, _names(OPTION_NAMES)
    )
    prompt_defaults: tuple[tuple[str, Any], ...] = _setting(
        "prompt_defaults", (), _prompt_defaults
    )
    permission_modes: tuple[str, ...] = _setting(
        "permission_modes", ("default", "acceptEdits", "plan"), _names(PERMISSION_MODES)
    )
    env: tuple[tuple[str, str], ...] = _setting("env", (), _env)

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


# -- merging the sources


#: Extra spellings: the repeatable flags are singular, the fields plural.
_ALIASES = {
    "project_root": "project_roots",
    "allowed_origin": "allowed_origins",
    "allowed_host": "allowed_hosts",
}
_FIELDS = {f.name: f for f in fields(Settings)}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _field_name(key: str) -> str | None:
    name = key.replace("-", "_")
    name = _ALIASES.get(name, name)
    return name if name in _FIELDS else None


def _from_text(name: str, text: str) -> object:
    """
    Parse a command-line or environment string for the field C{name}.
    """
    # The annotation text (PEP 563 keeps annotations as strings).
    kind = _FIELDS[name].type
    if kind == "tuple[str, ...]":
        return [text]
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
    except ValueError:
        raise ValueError("must be a{} number, not {!r}".format(
            "n integer" if kind == "int" else "", text
        )) from None
    if kind == "bool":
        if text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        raise ValueError("must be true or false, not {!r}".format(text))
    return text


def _load_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise usage.UsageError(
            "cannot read config file {}: {}".format(path, e.strerror or e)
        ) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise usage.UsageError(
            "config file {} is not valid TOML: {}".format(path, e)
        ) from None


def _unknown(key: str) -> str:
    close = difflib.get_close_matches(key.replace("_", "-"), _KEYS, n=1)
    return " (did you mean {}?)".format(close[0]) if close else ""


def settings_from(
    flags: Mapping[str, Any],
    file_path: str | None,
    environ: Mapping[str, str] = os.environ,
) -> Settings:
    """
    Merge the command line, a TOML file and the environment into Settings.

    Precedence: C{flags} > the file > C{environ} (C{CLAUDEWS_TOKEN}) >
    defaults.

    @param flags: long option names (dashes or underscores, singular
        aliases allowed) to values; C{None}, an empty list or a false flag
        means not given.  Strings are parsed for the field's type.
        C{"config"} is ignored (it is C{file_path}).
    @param file_path: the TOML file, or C{None}.
    @param environ: where C{CLAUDEWS_TOKEN} and C{HOME} (the default
        project root) are read.
    @raise usage.UsageError: naming the flag or file key at fault.
    """
    given: dict[str, tuple[object, str]] = {}
    token = environ.get("CLAUDEWS_TOKEN")
    if token:
        given["token"] = (token, "CLAUDEWS_TOKEN")
    if file_path is not None:
        spelled: dict[str, str] = {}
        for key, value in _load_toml(file_path).items():
            label = "config file {}: {}".format(file_path, key)
            name = _field_name(key)
            if name is None:
                raise usage.UsageError(
                    "config file {}: unknown key {!r}{}".format(
                        file_path, key, _unknown(key)
                    )
                )
            if name in spelled:
                raise usage.UsageError(
                    "config file {}: {!r} and {!r} set the same thing".format(
                        file_path, spelled[name], key
                    )
                )
            spelled[name] = key
            given[name] = (value, label)
    for key, value in flags.items():
        if key == "config" or value is None or value is False or value == []:
            continue
        label = "--" + key.replace("_", "-")
        name = _field_name(key)
        if name is None:
            raise usage.UsageError("unknown option {}".format(label))
        if _FIELDS[name].type == "bool" and not isinstance(value, str):
            # A Twisted flag is 0 when absent: then the file decides.
            if not value:
                continue
            value = True
        if isinstance(value, str):
            try:
                value = _from_text(name, value)
            except ValueError as e:
                raise usage.UsageError("{}: {}".format(label, e)) from None
        given[name] = (value, label)

    if "project_roots" not in given:
        given["project_roots"] = (
            [_home(environ)], "default project root (your home directory)"
        )
    kwargs: dict[str, Any] = {}
    for name, (value, label) in given.items():
        try:
            kwargs[name] = _FIELDS[name].metadata["check"](value)
        except ValueError as e:
            raise usage.UsageError("{}: {}".format(label, e)) from None
    root_label = given["project_roots"][1]
    for root in kwargs["project_roots"]:
        if not os.path.isdir(root):
            raise usage.UsageError(
                "{}: project root {!r} is not an existing directory".format(
                    root_label, root
                )
            )
    try:
        return Settings(**kwargs)
    except ValueError as e:
        raise usage.UsageError(str(e)) from None


def _default(name: str) -> str:
    default = _FIELDS[name].default
    return "[default: {}]".format(
        ", ".join(default) if isinstance(default, tuple) else default
    )


class Options(usage.Options):
    """
    C{twistd claudews} command-line options.  After parsing, C{settings}
    holds the merged L{Settings}.
    """

    synopsis = "[--config FILE] [options]"
    longdesc = """Serve the Claude Code CLI over one WebSocket.

Settings come from, highest first: these options, the --config TOML file
(keys are the option names; every setting has a key, see
data/claudews.example.toml), the CLAUDEWS_TOKEN environment variable (the token
only), and the defaults. A repeatable option given here replaces the file's
list. Without a configured token one is generated on first start, stored in
DATA/auth_token and logged."""

    optFlags = [
        ["no-auth", None, "Accept clients without a token. Only behind a "
         "layer that authenticates them."],
    ]
    optParameters = [
        ["config", None, None, "TOML settings file; options here win over it."],
        ["listen", None, None, "Twisted endpoint to listen on. " + _default("listen")],
        ["data", None, None, "Directory for projects, histories and the "
         "generated token. " + _default("data")],
        ["claude-bin", None, None, "The Claude Code CLI executable. "
         + _default("claude_bin")],
        ["token", None, None, "Token clients must present (other local users "
         "can read it from the process list; prefer the file or CLAUDEWS_TOKEN)."],
        ["timeout", None, None, "Seconds a prompt may run. " + _default("timeout")],
        ["max-running", None, None, "CLI processes alive at once. "
         + _default("max_running")],
        ["idle-timeout", None, None, "Seconds before an idle CLI is closed. "
         + _default("idle_timeout")],
        ["permission-timeout", None, None, "Seconds before an unanswered "
         "permission request is denied. " + _default("permission_timeout")],
        ["fsync", None, None, "History durability: every, batch or none. "
         + _default("fsync")],
    ]
    compData = usage.Completions(
        optActions={
            "config": usage.CompleteFiles("*.toml"),
            "data": usage.CompleteDirs(),
            "project-root": usage.CompleteDirs(),
        }
    )

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self._environ = os.environ if environ is None else environ
        self["project-root"] = []
        self["allowed-origin"] = []
        self["allowed-host"] = []

    def opt_project_root(self, directory: str) -> None:
        """Directory to create projects under (repeatable) [default: ~]."""
        self["project-root"].append(directory)

    def opt_allowed_origin(self, origin: str) -> None:
        """Browser origin allowed to connect: https://host[:port] (repeatable)."""
        self["allowed-origin"].append(origin)

    def opt_allowed_host(self, host: str) -> None:
        """Extra Host header value to accept: host[:port] (repeatable)."""
        self["allowed-host"].append(host)

    def postOptions(self) -> None:
        self.settings = settings_from(self, self["config"], self._environ)


_KEYS = sorted(
    {name.replace("_", "-") for name in _FIELDS}
    | {alias.replace("_", "-") for alias in _ALIASES}
)
