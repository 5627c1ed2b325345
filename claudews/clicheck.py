"""
Whether the configured Claude Code CLI can be run at all, and the one line
that says how to install it when not.

The same line is logged at start, shown in C{server.info} and given as the
error of a prompt whose CLI could not be run, so that a new user meets one
message, with the command that fixes it, wherever they look.
"""

import os
import shutil
from typing import Mapping

#: The command that installs the CLI.
INSTALL_COMMAND = "npm install -g @anthropic-ai/claude-code"


def search_path(
    extra_env: Mapping[str, str] | None = None, environ: Mapping[str, str] | None = None
) -> str:
    """
    The C{PATH} the CLI is looked up on: the one the operator set for the
    CLI (C{env} in the configuration), else the server's own.
    """
    if extra_env and "PATH" in extra_env:
        return extra_env["PATH"]
    return (os.environ if environ is None else environ).get("PATH", os.defpath)


def cli_problem(claude_bin: str, path: str | None = None) -> str | None:
    """
    C{None} when C{claude_bin} names an executable file (looked up on
    C{path}, a C{PATH} string, when it holds no slash); otherwise one line
    saying what is wrong and how to install the CLI.
    """
    if os.sep not in claude_bin:
        if shutil.which(claude_bin, path=search_path() if path is None else path):
            return None
        what = "no {} on PATH".format(claude_bin)
    elif os.path.isdir(claude_bin):
        what = "{} is a directory".format(claude_bin)
    elif not os.path.exists(claude_bin):
        what = "{} does not exist".format(claude_bin)
    elif not os.access(claude_bin, os.X_OK):
        what = "{} is not executable".format(claude_bin)
    else:
        return None
    return (
        "the Claude Code CLI cannot be run ({}): install it with `{}`"
        " and log in once with `claude`, or give its path with --claude-bin".format(
            what, INSTALL_COMMAND
        )
    )
