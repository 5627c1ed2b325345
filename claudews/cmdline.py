"""
The command line of C{twistd claudews}, and the merge of its flags with a
TOML file and the environment into L{claudews.config.Settings}.

Precedence, highest first: a command-line flag, the environment
(C{CLAUDEWS_<OPTION>}: C{CLAUDEWS_MAX_RUNNING=8}), the C{--config} file,
the built-in default.  A repeatable option given on the command line (or
in the environment) replaces the whole list of the places below it rather
than adding to it, so the highest place alone says what the list is.

The environment is the usual way to configure a service (systemd's
C{Environment=}, a container's C{-e}), and outranks the file so that one
file can serve several servers that differ in a variable or two.
"""

from __future__ import annotations

import difflib
import os
import sys
import tomllib
from typing import Any, Mapping

from attrs import fields
from twisted.python import usage

from claudews import __version__
from claudews.config import Settings, home

#: Extra spellings: the repeatable flags are singular, the fields plural.
_ALIASES = {
    "project_root": "project_roots",
    "allowed_origin": "allowed_origins",
    "allowed_host": "allowed_hosts",
}
_FIELDS = {f.name: f for f in fields(Settings)}
_KEYS = sorted(
    {name.replace("_", "-") for name in _FIELDS}
    | {alias.replace("_", "-") for alias in _ALIASES}
)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

#: The prefix of the environment variables that configure claudews.
ENV_PREFIX = "CLAUDEWS_"


def environment_name(key: str) -> str:
    """
    The environment variable for the option C{key}: C{max-running} is
    C{CLAUDEWS_MAX_RUNNING}.
    """
    return ENV_PREFIX + key.upper().replace("-", "_")


#: Each setting's variable, named after its flag (the singular of a
#: repeatable one), or its file key where it has no flag.
_FLAG_NAMES = {field_name: alias for alias, field_name in _ALIASES.items()}
ENVIRONMENT = {
    environment_name(_FLAG_NAMES.get(name, name)): name for name in _FIELDS
}
CONFIG_VARIABLE = environment_name("config")

#: Each given value with the label an error about it names: the flag, the
#: file and key, or the environment variable.
_Given = dict[str, tuple[object, str]]


def _field_name(key: str) -> str | None:
    name = key.replace("-", "_")
    name = _ALIASES.get(name, name)
    return name if name in _FIELDS else None


def _kind(name: str) -> object:
    # The annotation text (PEP 563 keeps annotations as strings).
    return _FIELDS[name].type


def _from_text(name: str, text: str) -> object:
    """
    Parse a command-line or environment string for the field C{name}.
    """
    kind = _kind(name)
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


def _from_environ_text(name: str, text: str) -> object:
    """
    Parse an environment variable's value for the field C{name}: a list
    is separated by commas (project roots by C{os.pathsep}, as C{PATH}),
    a table is a TOML inline table.
    """
    kind = _kind(name)
    if kind == "tuple[str, ...]":
        separator = os.pathsep if name == "project_roots" else ","
        return [item.strip() for item in text.split(separator) if item.strip()]
    if str(kind).startswith("tuple[tuple["):
        try:
            return tomllib.loads("value = " + text)["value"]
        except tomllib.TOMLDecodeError:
            raise ValueError(
                'must be a TOML inline table like {{ NAME = "value" }}, not {!r}'.format(text)
            ) from None
    return _from_text(name, text)


def _from_environ(environ: Mapping[str, str]) -> _Given:
    """
    The settings C{CLAUDEWS_<OPTION>} variables give; an empty one is
    unset. Variables of the prefix that name no option are left alone
    (other tools, and claudews' tests, have their own).

    @raise usage.UsageError: a value that does not parse, naming the variable.
    """
    given: _Given = {}
    for variable, name in ENVIRONMENT.items():
        text = environ.get(variable)
        if not text:
            continue
        try:
            given[name] = (_from_environ_text(name, text), variable)
        except ValueError as e:
            raise usage.UsageError("{}: {}".format(variable, e)) from None
    return given


def _from_file(file_path: str) -> _Given:
    """
    The settings a TOML file gives, each key under its field's name.

    @raise usage.UsageError: an unknown key, or one set under two spellings.
    """
    given: _Given = {}
    spelled: dict[str, str] = {}
    for key, value in _load_toml(file_path).items():
        name = _field_name(key)
        if name is None:
            raise usage.UsageError(
                "config file {}: unknown key {!r}{}".format(file_path, key, _unknown(key))
            )
        if name in spelled:
            raise usage.UsageError(
                "config file {}: {!r} and {!r} set the same thing".format(
                    file_path, spelled[name], key
                )
            )
        spelled[name] = key
        given[name] = (value, "config file {}: {}".format(file_path, key))
    return given


def _from_flags(flags: Mapping[str, Any]) -> _Given:
    """
    The settings the command line gives; a flag not given is left out.

    @raise usage.UsageError: an unknown flag, or a value that does not parse.
    """
    given: _Given = {}
    for key, value in flags.items():
        if key == "config" or value is None or value is False or value == []:
            continue
        label = "--" + key.replace("_", "-")
        name = _field_name(key)
        if name is None:
            raise usage.UsageError("unknown option {}".format(label))
        if _kind(name) == "bool" and not isinstance(value, str):
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
    return given


def _checked(given: _Given) -> Settings:
    """
    Run each field's check on the given values, each error naming where the
    value came from; then the checks across fields.
    """
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


def settings_from(
    flags: Mapping[str, Any],
    file_path: str | None,
    environ: Mapping[str, str] = os.environ,
) -> Settings:
    """
    Merge the command line, the environment and a TOML file into Settings.

    Precedence: C{flags} > C{environ} (C{CLAUDEWS_<OPTION>}) > the file >
    defaults.

    @param flags: long option names (dashes or underscores, singular
        aliases allowed) to values; C{None}, an empty list or a false flag
        means not given.  Strings are parsed for the field's type.
        C{"config"} is ignored (it is C{file_path}).
    @param file_path: the TOML file, or C{None}: then C{CLAUDEWS_CONFIG}'s,
        if set.
    @param environ: where the C{CLAUDEWS_*} variables and C{HOME} (the
        default project root) are read.
    @raise usage.UsageError: naming the flag, variable or file key at fault.
    """
    given: _Given = {}
    if file_path is None:
        file_path = environ.get(CONFIG_VARIABLE) or None
    if file_path is not None:
        given.update(_from_file(file_path))
    given.update(_from_environ(environ))
    given.update(_from_flags(flags))
    if "project_roots" not in given:
        given["project_roots"] = (
            [home(environ)], "default project root (your home directory)"
        )
    return _checked(given)


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

Settings come from, highest first: these options, the environment
(CLAUDEWS_<OPTION>, e.g. CLAUDEWS_MAX_RUNNING=8 or CLAUDEWS_TOKEN; lists
separated by commas, project roots by colons), the --config TOML file (keys
are the option names; every setting has a key, see
data/claudews.example.toml), and the defaults. A repeatable option given
higher up replaces the list given lower down. Without a configured token one
is generated on first start and stored in DATA/auth_token."""

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
        ["max-booting", None, None, "CLI processes loading at once (started, "
         "nothing printed yet); 0: the CPUs less one. " + _default("max_booting")],
        ["idle-timeout", None, None, "Seconds before an idle CLI is closed. "
         + _default("idle_timeout")],
        ["permission-timeout", None, None, "Seconds before an unanswered "
         "permission request is denied. " + _default("permission_timeout")],
        ["fsync", None, None, "History durability: every, interval or none "
         "(docs/storage.rst). " + _default("fsync")],
        ["fsync-interval", None, None, "Seconds an event may wait for its fsync "
         "under the interval policy. " + _default("fsync_interval")],
    ]
    # Twisted's usage module is not annotated.
    compData = usage.Completions(  # type: ignore[no-untyped-call]
        optActions={
            "config": usage.CompleteFiles("*.toml"),  # type: ignore[no-untyped-call]
            "data": usage.CompleteDirs(),  # type: ignore[no-untyped-call]
            "project-root": usage.CompleteDirs(),  # type: ignore[no-untyped-call]
        }
    )

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
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

    def opt_version(self) -> None:
        """Print claudews' version and exit."""
        print(
            "claudews {} (Twisted {}, Python {})".format(
                __version__, _twisted_version(), sys.version.split()[0]
            )
        )
        sys.exit(0)

    def postOptions(self) -> None:
        self.settings = settings_from(self, self["config"], self._environ)


def _twisted_version() -> str:
    from twisted import __version__ as twisted_version

    return twisted_version
