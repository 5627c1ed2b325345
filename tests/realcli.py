"""
Finding the real Claude Code CLI for the real-CLI tests.

The version is pinned in ``tests/claude-code.version``; ``.ci/run``
installs exactly that version with npm into ``.cli/`` (ignored by git).
``CLAUDEWS_TEST_CLAUDE_BIN`` names another binary.
"""

import os
import subprocess

from tests.harness import ROOT

VERSION_FILE = os.path.join(ROOT, "tests", "claude-code.version")
PREFIX = os.path.join(ROOT, ".cli")


def pinned_version():
    with open(VERSION_FILE) as f:
        return f.read().strip()


def install_hint():
    return (
        "the real Claude Code CLI is not installed; install it with "
        "`npm install --prefix .cli --no-save @anthropic-ai/claude-code@%s` "
        "(or set CLAUDEWS_TEST_CLAUDE_BIN)" % (pinned_version(),)
    )


def candidates():
    named = os.environ.get("CLAUDEWS_TEST_CLAUDE_BIN")
    if named:
        return [named]
    modules = os.path.join(PREFIX, "node_modules", "@anthropic-ai")
    # The wrapper's postinstall (which puts the native binary in place)
    # may not run under npm's install-script policy: the platform package
    # holds the binary itself.
    return [
        os.path.join(modules, "claude-code-linux-x64", "claude"),
        os.path.join(modules, "claude-code", "bin", "claude.exe"),
    ]


def find():
    """
    The path of the pinned CLI, or None.
    """
    for path in candidates():
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def version_of(path, env):
    out = subprocess.run(
        [path, "--version"], env=env, capture_output=True, timeout=60, check=True
    )
    return out.stdout.decode().split()[0]
