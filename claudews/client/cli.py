"""
C{claudews-client}: arguments, the token, the exit statuses, and C{main}.

Every error ends the client with one line on standard error and an exit
status of its own (L{errors.EXIT_STATUSES}), never with a traceback.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from typing import Any, Sequence
from urllib.parse import urlsplit

from rich.console import Console
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import react
from twisted.python.failure import Failure

from claudews.client import commands, errors
from claudews.client.commands import Command, Context
from claudews.client.once import race
from claudews.client.connection import Connection
from claudews.client.follow import View
from claudews.client.prompt import prompt
from claudews.client.render import Renderer
from claudews.client.terminal import CtrlC

DEFAULT_URL = "ws://127.0.0.1:8765/ws"

COMMANDS: dict[str, Command] = {
    "projects": commands.projects,
    "create": commands.create,
    "delete": commands.delete,
    "prompt": prompt,
    "tail": commands.tail,
    "history": commands.history,
    "cancel": commands.cancel,
    "reset": commands.reset,
    "allow": commands.allow,
    "deny": commands.deny,
    "status": commands.status,
}


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit status 2."""

    def error(self, message: str) -> Any:
        self.exit(errors.USAGE, "%s: %s (see --help)\n" % (self.prog, message))


def global_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """--url, --token, --data, --json: before or after the command."""
    def default(value: Any) -> Any:
        # On a command's parser, an option not given must not hide the
        # value given before the command.
        return value if defaults else argparse.SUPPRESS

    parser.add_argument("--url", default=default(DEFAULT_URL),
                        help="the server's WebSocket URL (default %s)" % DEFAULT_URL)
    parser.add_argument("--token", default=default(None), help="the access token (default:"
                        " $CLAUDEWS_TOKEN, else, for a loopback URL, DATA/auth_token)")
    parser.add_argument("--data", default=default("data"), metavar="DIR",
                        help="a local server's data directory, for its token (default ./data)")
    parser.add_argument("--json", action="store_true", default=default(False),
                        help="print raw JSON frames, one per line")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="claudews-client",
        description="A terminal client for a claudews server.",
        epilog="exit statuses:\n" + errors.exit_status_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    global_options(parser, defaults=True)
    common = argparse.ArgumentParser(add_help=False)
    global_options(common, defaults=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=Parser)
    add_commands(sub, common)
    return parser


PROMPT_HELP = """\
Send TEXT to the project's Claude, show the reply as it comes and end with
one summary line (status, duration, cost, turns). Exits 0 only when the
prompt completed. On a terminal, permission requests are asked in place.
Ctrl-C cancels the prompt on the server; a second Ctrl-C exits without
waiting for it to end."""


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    def command(name: str, text: str, description: str | None = None) -> Any:
        return sub.add_parser(name, help=text, description=description or text,
                              parents=[common])

    command("projects", "list the projects")
    command("status", "the server and every project's state")
    for name, text in (("create", "make a directory a project"),
                       ("delete", "forget a project (its directory is untouched)"),
                       ("reset", "start a new conversation with the next prompt")):
        command(name, text).add_argument("path")
    p = command("prompt", "send a prompt and follow it to its end", PROMPT_HELP)
    p.add_argument("path")
    p.add_argument("text", help="the prompt, or - to read it from standard input")
    p = command("tail", "follow a project live (Ctrl-C stops)")
    p.add_argument("path")
    p.add_argument("--since", type=int, metavar="N", help="replay events after seq N first")
    p = command("history", "stored events of a project")
    p.add_argument("path")
    p.add_argument("--before", type=int, metavar="N", help="only events before seq N")
    p.add_argument("--limit", type=int, default=100, metavar="K", help="at most K events")
    p = command("cancel", "cancel the running (or the given) prompt")
    p.add_argument("path")
    p.add_argument("prompt_id", nargs="?")
    for name in ("allow", "deny"):
        p = command(name, "%s a permission request" % name)
        p.add_argument("path")
        p.add_argument("request_id")
    p.add_argument("--message", help="the reason given to Claude")


def is_loopback(url: str) -> bool:
    """Whether the URL names this machine (so its token file may be read)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_token(args: argparse.Namespace, environ: dict[str, str]) -> str | None:
    """--token, else $CLAUDEWS_TOKEN, else a loopback server's token file."""
    if args.token:
        return str(args.token)
    if environ.get("CLAUDEWS_TOKEN"):
        return environ["CLAUDEWS_TOKEN"]
    if not is_loopback(args.url):
        return None
    try:
        with open(os.path.join(args.data, "auth_token")) as f:
            return f.read().strip() or None
    except OSError:
        return None


def make_view(json_mode: bool, console: Console | None = None) -> View:
    """A rich console on standard output, or raw JSON lines with --json."""
    if console is None:
        # Piped output is not wrapped: lines stay whole for grep and friends.
        console = Console(highlight=False, soft_wrap=not sys.stdout.isatty())
    if json_mode:
        return View(console, None)
    return View(console, Renderer(console, markdown=console.is_terminal))


async def run(reactor: Any, args: argparse.Namespace, token: str | None) -> int:
    """Connect, run the command, close; errors propagate as L{ClientError}."""
    view = make_view(args.json)
    interactive = sys.stdin.isatty() and not args.json
    conn = Connection(args.url, token, reactor, on_status=lambda text: view.note(text, "yellow"))
    try:
        await conn.open()
    except errors.HandshakeRefused as e:
        if e.http_status == 401 and token is None:
            raise errors.HandshakeRefused(401, errors.NO_TOKEN_HINT) from None
        raise
    ctx = Context(reactor=reactor, view=view, interactive=interactive)
    try:
        return await COMMANDS[args.command](ctx, conn, args)
    finally:
        await conn.close()


def until_interrupted(reactor: Any, work: Deferred[int]) -> Deferred[int]:
    """C{work}, or an L{errors.Interrupted} failure at Ctrl-C (for commands
    that do not handle Ctrl-C themselves)."""
    stop: Deferred[int] = Deferred()

    def pressed(presses: int) -> None:
        if not stop.called:
            stop.errback(errors.Interrupted("interrupted"))

    ctrl_c = CtrlC(reactor, pressed).install()
    outcome: Deferred[int] = race(work, stop)

    def restore(result: Any) -> Any:
        ctrl_c.restore()
        return result

    return outcome.addBoth(restore)


def exit_with(outcome: int | Failure) -> None:
    """End the client: one line on stderr for an error, then its status."""
    if isinstance(outcome, Failure):
        error = outcome.value
        if isinstance(error, BrokenPipeError):
            # Piped into head or less that quit: end quietly, as cat does.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise SystemExit(errors.OUTPUT_CLOSED)
        if isinstance(error, errors.ClientError):
            message, status = error.message, error.status
        else:
            message = "internal error: %s" % (outcome.getErrorMessage(),)
            status = errors.INTERNAL
        sys.stderr.write("claudews-client: %s\n" % (message,))
        sys.stderr.flush()
        raise SystemExit(status)
    if outcome:
        raise SystemExit(outcome)


def _main(reactor: Any, args: argparse.Namespace, token: str | None) -> Deferred[None]:
    done: Deferred[None] = Deferred()

    def go() -> None:
        # After the reactor installed its signal handlers: ours replace them.
        work = ensureDeferred(run(reactor, args, token))
        until_interrupted(reactor, work).addBoth(exit_with).chainDeferred(done)

    reactor.callWhenRunning(go)
    return done


def read_prompt(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """C{prompt PATH -} takes its text from standard input."""
    if args.command != "prompt":
        return
    if args.text == "-":
        try:
            args.text = sys.stdin.read()
        except KeyboardInterrupt:
            sys.stderr.write("claudews-client: interrupted\n")
            raise SystemExit(errors.INTERRUPTED)
    if not args.text.strip():
        parser.error("the prompt is empty")


def main(argv: Sequence[str] | None = None) -> None:
    """The C{claudews-client} console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    read_prompt(args, parser)
    token = resolve_token(args, dict(os.environ))
    react(_main, (args, token))
